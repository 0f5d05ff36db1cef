//! A stand-in for tokenbackd in tokenback-sim's tests, while tokenbackd's xenbus driver is
//! unfinished: tokenback's own workers serve every VBD of a simulated host, the xenbus side
//! played by a small polling loop (probe keys and InitWait; `physical-device-path`; the
//! front end's rings read and validated with tokenback's functions; QoS keys read at
//! connect; Closing drained to Closed; Initialising again back to InitWait). Not a back end
//! to use: it trusts the toolstack's keys and serves read-write.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use clap::Parser;
use mio::{Poll, Token, Waker};
use tokenback::limiter::{LimitConfig, VbdConfig};
use tokenback::platform::sim::{RunDir, SimPlatform};
use tokenback::platform::DomId;
use tokenback::stop_signals::StopSignals;
use tokenback::storage::{Backing, EngineKind, Mode};
use tokenback::vbd::{Connect, Dispatch, Report, ReportSink, Workers};
use tokenback::xenbus::keys::{connect_keys, probe_keys};
use tokenback::xenbus::{self, read_frontend_rings, DeviceConfig, DeviceId, Limits};
use xenstore_wire::client::blocking::Client;
use xenstore_wire::client::{Endpoint, TxId};

/// tokenbackd's command line, as far as tokenback-sim uses it.
#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    sim: PathBuf,
    #[arg(long, default_value_t = 2)]
    workers: u16,
    #[arg(long, value_enum, default_value = "threads")]
    io_engine: EngineKind,
}

const LIMITS: Limits = Limits {
    max_ring_page_order: 4,
    max_queues: 4,
};
const ROOT: &str = "/local/domain/0/backend/vbd";

enum Phase {
    WaitPath,
    WaitFront(PathBuf),
    Connected(PathBuf),
    Closed(PathBuf),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Ok(signals) = StopSignals::block() else {
        return ExitCode::FAILURE;
    };
    let served = std::thread::spawn(move || serve(&args));
    signals.wait();
    if served.is_finished() {
        eprintln!("stand-in: {:?}", served.join());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn serve(args: &Args) -> Result<(), String> {
    let run = RunDir::open(&args.sim).map_err(|e| e.to_string())?;
    let mut xs =
        Client::connect(Endpoint::Socket(run.xenstored_socket())).map_err(|e| e.to_string())?;
    let poll = Poll::new().map_err(|e| e.to_string())?;
    let waker = Arc::new(Waker::new(poll.registry(), Token(0)).map_err(|e| e.to_string())?);
    let (sink, reports) = ReportSink::new(waker);
    let platform = SimPlatform::new(run, DomId(0));
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let mut workers = Workers::start(&platform, args.workers.into(), args.io_engine, sink, &log)
        .map_err(|e| e.to_string())?;
    let mut devices: HashMap<String, Phase> = HashMap::new();
    loop {
        for fe in xs.directory(TxId::NONE, ROOT).unwrap_or_default() {
            for devid in xs
                .directory(TxId::NONE, &format!("{ROOT}/{fe}"))
                .unwrap_or_default()
            {
                let dir = format!("{ROOT}/{fe}/{devid}");
                let phase = devices.remove(&dir);
                let next = step(&mut xs, &mut workers, &reports, &dir, phase)?;
                devices.insert(dir, next);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn read(xs: &mut Client, path: &str) -> Option<String> {
    xs.read(TxId::NONE, path)
        .ok()
        .and_then(|v| String::from_utf8(v).ok())
}

fn write_keys(xs: &mut Client, dir: &str, keys: &[(&str, String)]) -> Result<(), String> {
    xs.transaction(|xs, tx| {
        keys.iter()
            .try_for_each(|(k, v)| xs.write(tx, &format!("{dir}/{k}"), v.as_bytes()))
    })
    .map_err(|e| e.to_string())
}

fn step(
    xs: &mut Client,
    workers: &mut Workers,
    reports: &mpsc::Receiver<Report>,
    dir: &str,
    phase: Option<Phase>,
) -> Result<Phase, String> {
    let frontend = read(xs, &format!("{dir}/frontend")).unwrap_or_default();
    let fe_state = read(xs, &format!("{frontend}/state")).unwrap_or_default();
    let id = device_id(dir).ok_or("bad backend path")?;
    Ok(match phase {
        None => {
            let mut keys = probe_keys(LIMITS);
            keys.push(("state", "2".into()));
            write_keys(xs, dir, &keys)?;
            Phase::WaitPath
        }
        Some(Phase::WaitPath) => match read(xs, &format!("{dir}/physical-device-path")) {
            Some(path) => Phase::WaitFront(path.into()),
            None => Phase::WaitPath,
        },
        Some(Phase::WaitFront(path)) if fe_state == "3" || fe_state == "4" => {
            connect(xs, workers, reports, dir, &frontend, id, &path)?;
            Phase::Connected(path)
        }
        Some(Phase::Connected(path)) if fe_state == "5" || fe_state == "6" => {
            workers.disconnect(id);
            wait_report(reports, Report::Drained(id))?;
            write_keys(xs, dir, &[("state", "6".into())])?;
            Phase::Closed(path)
        }
        Some(Phase::Closed(path)) if fe_state == "1" => {
            write_keys(xs, dir, &[("state", "2".into())])?;
            Phase::WaitFront(path)
        }
        Some(phase) => phase,
    })
}

fn device_id(dir: &str) -> Option<DeviceId> {
    let mut parts = dir.rsplit('/');
    let devid = parts.next()?.parse().ok()?;
    let fe = parts.next()?.parse().ok()?;
    Some(DeviceId {
        frontend_id: DomId(fe),
        devid,
    })
}

fn wait_report(reports: &mpsc::Receiver<Report>, want: Report) -> Result<(), String> {
    match reports.recv_timeout(Duration::from_secs(20)) {
        Ok(report) if report == want => Ok(()),
        other => Err(format!("wanted {want:?}, got {other:?}")),
    }
}

fn connect(
    xs: &mut Client,
    workers: &mut Workers,
    reports: &mpsc::Receiver<Report>,
    dir: &str,
    frontend: &str,
    id: DeviceId,
    path: &std::path::Path,
) -> Result<(), String> {
    let reader = std::cell::RefCell::new(&mut *xs);
    let rings = read_frontend_rings(LIMITS, |key| {
        read(&mut reader.borrow_mut(), &format!("{frontend}/{key}"))
    })
    .map_err(|e| e.to_string())?;
    let storage = Arc::new(Backing::open(path, Mode::ReadWrite).map_err(|e| e.to_string())?);
    let keys = LimitConfig::KEYS.iter().chain(&VbdConfig::EXTRA_KEYS);
    let qos_keys: Vec<(&str, String)> = keys
        .filter_map(|&k| read(xs, &format!("{dir}/{k}")).map(|v| (k, v)))
        .collect();
    let qos = VbdConfig::parse(qos_keys.iter().map(|(k, v)| (*k, v.as_str())))
        .map_err(|e| e.to_string())?;
    workers.connect(Connect {
        id,
        frontend_id: id.frontend_id,
        rings,
        storage: Arc::clone(&storage),
        qos,
        discard: storage.discard(),
        // Not advertised below.
        persistent: false,
        // The stand-in does not restart.
        state: None,
    });
    wait_report(reports, Report::Connected(id))?;
    let device = DeviceConfig {
        frontend: frontend.to_owned(),
        frontend_id: id.frontend_id,
        writable: true,
        cdrom: false,
        discard_enable: true,
    };
    let summary = xenbus::Backing {
        size_bytes: storage.size_bytes(),
        logical_sector_size: storage.logical_block_size(),
        physical_sector_size: storage.physical_block_size(),
        read_only: storage.read_only(),
        flush: true,
        discard: None,
    };
    let mut keys = connect_keys(&device, &summary, false);
    keys.push(("state", "4".into()));
    write_keys(xs, dir, &keys)
}
