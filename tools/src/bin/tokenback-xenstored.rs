//! tokenback-xenstored: a xenstored for the simulated Xen host.
//!
//! `tokenback-xenstored --run-dir DIR` serves dom0 (privileged) on `DIR/socket`. When dom0
//! introduces domain N (XS_INTRODUCE, with a nonzero event-channel port), `DIR/domain/N/socket`
//! appears and its connections act as domain N, unprivileged; releasing N removes that
//! socket, drops N's connections, deletes N's nodes and fires @releaseDomain.
//!
//! Which domains exist: libxl gives nodes to a domain before introducing it, and xenstored
//! refuses an owner that does not exist. Here domain N exists while the run directory says it
//! is alive (`RunDir::domain_alive`: from its creation until the host's `destroy_domain`;
//! docs/sim-host.md, "Domain life"). Introducing a domain that does not exist is refused with EINVAL, as Xen's
//! xenstored cannot map its page. When the host changes `DIR/domain`, the server checks its
//! domains and ends those that are gone (their nodes deleted, @releaseDomain fired), as C
//! xenstored does on VIRQ_DOM_EXC.
//!
//! Refusals, dropped connections and domain sockets are logged through slog on stderr (text,
//! or JSON under systemd or with --log-json). SIGTERM or SIGINT stops it cleanly (exit 0,
//! sockets removed).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use slog::{error, info, o, warn, Logger};
use tokenback::logging::LogArgs;
use tokenback::platform::sim::RunDir;
use tokenback::platform::DomId;
use tokenback::stop_signals::StopSignals;
use xenstore_wire::server::transport::{Config, Report, Severity, SocketServer};
use xenstore_wire::server::Quotas;

/// A xenstored for the simulated Xen host.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "\
Sockets under DIR:
  DIR/socket               dom0's privileged connection (XENSTORED_PATH=DIR/socket for
                           the xenstore-* tools)
  DIR/domain/N/socket      domain N's unprivileged connection, from XS_INTRODUCE until the
                           domain is released or destroyed; relative paths resolve under
                           /local/domain/N
DIR must be a simulated host's run directory (dom0 made in it); domain N exists from its
creation by the simulated host until the host destroys it.
SIGTERM or SIGINT stops the server and removes its sockets."
)]
struct Args {
    /// The simulated host's run directory
    #[arg(long, value_name = "DIR")]
    run_dir: PathBuf,
    #[command(flatten)]
    log: LogArgs,
}

/// Logs a transport report at its severity, with the domain as a key.
fn log_report(log: &Logger, report: &Report) {
    let log = match report.domid() {
        Some(domid) => log.new(o!("domid" => domid)),
        None => log.clone(),
    };
    match report.severity() {
        Severity::Info => info!(log, "{report}"),
        Severity::Warning => warn!(log, "{report}"),
        Severity::Error => error!(log, "{report}"),
    }
}

fn serve(run_dir: &Path, signals: &StopSignals, log: &Logger) -> Result<(), String> {
    let run = RunDir::open(run_dir).map_err(|e| {
        format!(
            "{} is not a simulated host's run directory: {e}",
            run_dir.display()
        )
    })?;
    let config = Config {
        socket: run.xenstored_socket(),
        domain_dir: Some(run_dir.join("domain")),
        quotas: Quotas::default(),
        domain_exists: Box::new(move |domid| run.domain_alive(DomId(domid))),
    };
    let mut server = SocketServer::bind(config)
        .map_err(|e| format!("cannot listen on {}: {e}", run_dir.join("socket").display()))?;
    let report_log = log.clone();
    server.on_report(move |report| log_report(&report_log, &report));
    info!(log, "serving"; "socket" => %run_dir.join("socket").display());
    let stop = server.stop_handle();
    let loop_thread = std::thread::spawn(move || {
        let result = server.run();
        if result.is_err() {
            // Wake the main thread out of sigwait so the process ends with the error.
            StopSignals::raise();
        }
        result
    });
    let sig = signals.wait();
    info!(log, "stopping"; "signal" => sig);
    stop.stop().map_err(|e| format!("cannot stop: {e}"))?;
    match loop_thread.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("event loop failed: {e}")),
        Err(_) => Err("event loop panicked".into()),
    }
}

fn main() -> ExitCode {
    // clap prints usage errors and --help itself, with exit codes 2 and 0.
    let args = Args::parse();
    // Before any thread starts (the logger's writer is one): a thread that did not block
    // SIGTERM would take it with the default action and kill the process mid-shutdown.
    let signals = match StopSignals::block() {
        Ok(set) => set,
        Err(e) => {
            eprintln!("tokenback-xenstored: cannot block signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let logging = args.log.logger("tokenback-xenstored");
    match serve(&args.run_dir, &signals, &logging.logger) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!(logging.logger, "{message}");
            ExitCode::FAILURE
        }
    }
}
