//! tokenback-xenstored: a xenstored for the simulated Xen host.
//!
//! `tokenback-xenstored --run-dir DIR` serves dom0 (privileged) on `DIR/socket`. When dom0
//! introduces domain N (XS_INTRODUCE, any frame and port), `DIR/domain/N/socket` appears and
//! its connections act as domain N, unprivileged; releasing N removes that socket, drops N's
//! connections and fires @releaseDomain.
//!
//! Which domains exist: libxl gives nodes to a domain before introducing it, and xenstored
//! refuses an owner that does not exist. Here domain N exists once the simulated host has
//! made the directory `DIR/domain/N/` with its event-channel table `evtchn` in it, and is
//! dying or gone once the host's `destroy_domain` has removed that table (docs/sim-host.md,
//! "Domain life"). Introducing a domain that does not exist is refused with EINVAL, as Xen's
//! xenstored cannot map its page. When the host changes `DIR/domain`, the server checks its
//! domains and ends those that are gone (their nodes deleted, @releaseDomain fired), as C
//! xenstored does on VIRQ_DOM_EXC.
//!
//! Refusals and dropped connections are logged on stderr. SIGTERM or SIGINT stops it cleanly
//! (exit 0, sockets removed).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use xenstore_wire::server::transport::{Config, SocketServer};
use xenstore_wire::server::Quotas;

const USAGE: &str = "usage: tokenback-xenstored --run-dir DIR";

fn parse_args() -> Result<PathBuf, String> {
    let mut args = std::env::args_os().skip(1);
    let mut run_dir = None;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--run-dir") => {
                run_dir = Some(PathBuf::from(args.next().ok_or("--run-dir needs a value")?))
            }
            Some("--help" | "-h") => return Err(USAGE.into()),
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        }
    }
    run_dir.ok_or_else(|| USAGE.into())
}

/// Blocks SIGTERM and SIGINT in this thread (and the threads it starts), so that they can be
/// taken with `sigwait` instead of interrupting anything.
fn block_stop_signals() -> std::io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data, fully initialised by sigemptyset below.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame; the calls only write to it.
    let r = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(std::io::Error::from_raw_os_error(r));
    }
    Ok(set)
}

fn wait_for_stop_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` and `sig` are valid for the duration of the call.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

fn serve(run_dir: &Path) -> Result<(), String> {
    let domain_dir = run_dir.join("domain");
    std::fs::create_dir_all(&domain_dir)
        .map_err(|e| format!("cannot create {}: {e}", domain_dir.display()))?;
    let exists_dir = domain_dir.clone();
    let config = Config {
        socket: run_dir.join("socket"),
        domain_dir: Some(domain_dir),
        quotas: Quotas::default(),
        domain_exists: Box::new(move |domid| {
            exists_dir.join(domid.to_string()).join("evtchn").exists()
        }),
    };
    let signals = block_stop_signals().map_err(|e| format!("cannot block signals: {e}"))?;
    let mut server = SocketServer::bind(config)
        .map_err(|e| format!("cannot listen on {}: {e}", run_dir.join("socket").display()))?;
    server.on_report(|report| eprintln!("tokenback-xenstored: {report}"));
    let stop = server.stop_handle();
    let loop_thread = std::thread::spawn(move || {
        let result = server.run();
        if result.is_err() {
            // Wake the main thread out of sigwait so the process ends with the error.
            // SAFETY: kill(2) on our own pid with a signal we block and wait for.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        }
        result
    });
    let sig = wait_for_stop_signal(&signals);
    eprintln!("tokenback-xenstored: signal {sig}, stopping");
    stop.stop().map_err(|e| format!("cannot stop: {e}"))?;
    match loop_thread.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("event loop failed: {e}")),
        Err(_) => Err("event loop panicked".into()),
    }
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|dir| serve(&dir));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tokenback-xenstored: {message}");
            ExitCode::FAILURE
        }
    }
}
