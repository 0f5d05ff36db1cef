//! tokenbackd: the block backend daemon. It watches the backend tree in xenstore, runs each
//! VBD's handshake (src/xenbus) and serves connected VBDs on its workers (src/vbd), gating
//! every request through the VBD's token buckets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser};
use slog::{error, info, Logger};
use tokenback::instance_lock::InstanceLock;
use tokenback::logging::LogArgs;
use tokenback::platform::linux::{LinuxPlatform, EVTCHN_PATH, GNTDEV_PATH};
use tokenback::platform::sim::{RunDir, SimPlatform};
use tokenback::platform::{DomId, Platform};
use tokenback::stats::{Answerer, ControlSocket, Directory};
use tokenback::stop_signals::StopSignals;
use tokenback::storage::EngineKind;
use tokenback::vbd::{ReportSink, Workers};
use tokenback::xenbus::driver::{Driver, DriverConfig};
use tokenback::xenbus::{check_kernel_blkback, BackendTree, BackendType};
use xenstore_wire::client::Endpoint;

/// Userspace Xen block backend with token-bucket QoS per virtual disk.
#[derive(Debug, Parser)]
#[command(
    name = "tokenbackd",
    version,
    after_help = "\
On a Xen host tokenbackd serves every VBD under /local/domain/<domid>/backend/<type> once the
hotplug script has written physical-device-path, with the QoS keys of its backend directory
(tokens-refill, tokens-max, iops-*, bps-*; see docs/qos.md), which xenstore-write changes
while the guest runs; a refused set's reason is in qos-error beside them. Throttle groups
(a VBD's group and weight keys) are declared with the same keys in
/local/domain/<domid>/tokenback/groups/<name>/. On Xen 4.17 the kernel's
xen-blkback serves backend/vbd too and must be unloaded first; from Xen 4.19 --backend-type
vbd3 serves backendtype=tap disks beside it.

Without Xen, --sim DIR serves the simulated Xen host in DIR (tokenback-sim creates one).

What each disk is given (counters, rates, bucket balances, storage latency, the keys in force)
is read from the control socket, one JSON object a line each way, as tokentop does; see
docs/qos.md, \"Control socket\". It is removed at exit.

One tokenbackd serves a backend tree: a second one started on the same tree and state
directory exits at once, saying so (two back ends answering one front end crash Linux
blkfront).

SIGTERM or SIGINT: stop taking requests, finish those in flight, leave every VBD connected
with its state file for the next tokenbackd, which carries on where this one stopped, exit 0."
)]
struct Args {
    /// Serve the simulated Xen host whose run directory is DIR instead of Xen
    #[arg(long, value_name = "DIR")]
    sim: Option<PathBuf>,
    /// xenstored's socket or device (default: as libxenstore finds it: $XENSTORED_PATH,
    /// /run/xenstored/socket, /dev/xen/xenbus)
    #[arg(long, value_name = "PATH", conflicts_with = "sim")]
    xenstore: Option<PathBuf>,
    /// The backend tree to serve: vbd (xl's script= disks) or vbd3 (backendtype=tap, Xen 4.19+)
    #[arg(long, value_enum, default_value = "vbd")]
    backend_type: BackendType,
    /// Our domain id: 0 in dom0, else the driver domain's
    #[arg(long, value_name = "DOMID", default_value_t = 0)]
    domid: u16,
    /// Worker threads serving VBDs
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,
    /// Most queues (rings) a front end may use per VBD, advertised as
    /// multi-queue-max-queues [default: the number of CPUs, as Linux blkback]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    max_queues: Option<u32>,
    /// How storage I/O is done: io_uring (falling back to threads when the kernel refuses
    /// it), a thread pool, or null (no storage: benchmarks only)
    #[arg(long, value_enum, default_value = "uring")]
    io_engine: EngineKind,
    /// Where each VBD's state file is kept (tmpfs), for the next tokenbackd to resume it
    /// [default: /run/tokenback, or DIR/state under --sim DIR]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The control socket tokentop reads (docs/qos.md, "Control socket"), mode 0600
    /// [default: $RUNTIME_DIRECTORY/control.sock under systemd, else
    /// /run/tokenback/control.sock, or DIR/tokenbackd.sock under --sim DIR]
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,
    /// Print the manual page (roff) and exit; docs/tokenbackd.8 is its output
    #[arg(long, hide = true)]
    man_page: bool,
    #[command(flatten)]
    log: LogArgs,
}

/// Where we serve: the platform handles and the xenstore endpoint.
enum Host {
    Sim(SimPlatform, Endpoint),
    Xen(Endpoint),
}

impl Args {
    fn host(&self) -> Result<Host, String> {
        if let Some(dir) = &self.sim {
            let run = RunDir::open(dir).map_err(|e| {
                format!(
                    "{} is not a simulated host's run directory: {e}",
                    dir.display()
                )
            })?;
            let endpoint = Endpoint::Socket(run.xenstored_socket());
            return Ok(Host::Sim(
                SimPlatform::new(run, DomId(self.domid)),
                endpoint,
            ));
        }
        let devices = [GNTDEV_PATH, EVTCHN_PATH];
        if let Some(missing) = devices.iter().find(|d| !Path::new(d).exists()) {
            return Err(format!(
                "no Xen here: {missing} does not exist (tokenbackd needs a Xen dom0 or driver \
                 domain with the xen-gntdev and xen-evtchn modules loaded). To try tokenback \
                 without Xen, run `tokenback-sim demo`; to serve a simulated host, \
                 `tokenbackd --sim DIR`"
            ));
        }
        if self.backend_type == BackendType::Vbd {
            check_kernel_blkback(Path::new("/sys")).map_err(|e| e.to_string())?;
        }
        let endpoint = match &self.xenstore {
            Some(path) => Endpoint::for_path(path),
            None => Endpoint::discover().map_err(|e| {
                format!("cannot find xenstored ({e}); give its socket or device with --xenstore")
            })?,
        };
        Ok(Host::Xen(endpoint))
    }
}

impl Args {
    /// The state directory, created if missing (its parent, /run or the run directory, is
    /// tmpfs already).
    fn state_dir(&self) -> Result<PathBuf, String> {
        let dir = match (&self.state_dir, &self.sim) {
            (Some(dir), _) => dir.clone(),
            (None, Some(sim)) => sim.join("state"),
            (None, None) => PathBuf::from("/run/tokenback"),
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("creating the state directory {}: {e}", dir.display()))?;
        Ok(dir)
    }
}

impl Args {
    /// The control socket's path.
    fn control_socket(&self) -> PathBuf {
        if let Some(path) = &self.control_socket {
            return path.clone();
        }
        if let Some(sim) = &self.sim {
            return sim.join("tokenbackd.sock");
        }
        // systemd's RuntimeDirectory=; several directories are separated by ':'.
        let runtime = std::env::var_os("RUNTIME_DIRECTORY");
        let first = runtime
            .as_deref()
            .and_then(|dirs| dirs.to_str()?.split(':').next().map(PathBuf::from))
            .filter(|dir| !dir.as_os_str().is_empty());
        first
            .unwrap_or_else(|| PathBuf::from("/run/tokenback"))
            .join("control.sock")
    }
}

/// Runs the workers and the xenbus driver until a stop signal, then drains and stops.
fn serve<P: Platform>(
    platform: P,
    endpoint: Endpoint,
    args: &Args,
    signals: &StopSignals,
    log: &Logger,
) -> Result<(), String>
where
    P::Grants: 'static,
    P::Events: 'static,
{
    let tree = BackendTree::new(DomId(args.domid), args.backend_type);
    let state_dir = args.state_dir()?;
    // Held until we return: a second tokenbackd on this tree is refused rather than fighting
    // us over every VBD.
    let _lock =
        InstanceLock::take(&state_dir, args.backend_type.name()).map_err(|e| e.to_string())?;
    // Before any thread of ours starts: its mode comes from the process's umask.
    let control = ControlSocket::bind(&args.control_socket()).map_err(|e| e.to_string())?;
    let config = DriverConfig {
        endpoint,
        tree,
        max_queues: args
            .max_queues
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32)),
        state_dir,
    };
    let driver = Driver::new(config, log.clone()).map_err(|e| format!("xenstore: {e}"))?;
    let reports = ReportSink::new(driver.waker());
    let workers = Workers::start(
        &platform,
        args.workers.into(),
        args.io_engine,
        reports.0,
        log,
    )
    .map_err(|e| e.to_string())?;
    let directory = Arc::new(Directory::default());
    let answerer = Answerer::new(workers.links(), Arc::clone(&directory));
    let control = control
        .spawn(answerer, log.new(slog::o!("thread" => "control")))
        .map_err(|e| e.to_string())?;
    // A driver that ends by itself (xenstored gone) stops the daemon as a signal would.
    let running = driver
        .spawn(reports.1, workers, directory, StopSignals::raise)
        .map_err(|e| e.to_string())?;
    info!(log, "serving"; "tree" => running.root(), "workers" => args.workers,
        "io_engine" => ?args.io_engine, "control_socket" => %args.control_socket().display());
    let sig = signals.wait();
    info!(log, "stopping: finishing the requests in flight"; "signal" => sig);
    // First: it asks the workers, which are about to end.
    control.stop();
    let (workers, ended) = running.stop();
    if let Some(workers) = workers {
        workers.shutdown();
    }
    ended.map_err(|e| format!("xenbus thread: {e}"))?;
    info!(log, "stopped; every VBD left connected");
    Ok(())
}

fn main() -> ExitCode {
    // clap prints usage errors and --help itself, with exit codes 2 and 0.
    let args = Args::parse();
    if args.man_page {
        // Section 8: a system administration daemon (man-pages(7)).
        let man = clap_mangen::Man::new(Args::command()).section("8");
        return match man.render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tokenbackd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // Before any thread starts (the logger's writer is one).
    let signals = match StopSignals::block() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("tokenbackd: cannot block signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let logging = args.log.logger("tokenbackd");
    let log = &logging.logger;
    let result = args.host().and_then(|host| match host {
        Host::Sim(platform, endpoint) => serve(platform, endpoint, &args, &signals, log),
        Host::Xen(endpoint) => serve(LinuxPlatform, endpoint, &args, &signals, log),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!(log, "{message}");
            ExitCode::FAILURE
        }
    }
}
