//! A tokenbackd process serving a simulated host, its log kept in the run directory.
//!
//! tokenbackd belongs to the root package, so its path is not among this crate's
//! `CARGO_BIN_EXE_*`: it is looked up beside the test binary's directory, where
//! `cargo test --workspace` (the README's test command) builds it.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokenback::platform::sim::RunDir;

use super::EVENTUALLY;

/// The daemon; killed on drop if still running.
pub struct Tokenbackd {
    child: Option<Child>,
    log: PathBuf,
}

/// target/<profile>/tokenbackd, beside target/<profile>/deps/ where test binaries live.
pub fn tokenbackd_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("tokenbackd");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --bin tokenbackd` (cargo test --workspace does)",
        path.display()
    );
    path
}

/// target/release/tokenbackd, for what is measured rather than checked (a debug build spends
/// several times the CPU). It must be built from the sources under test: the test script
/// builds it before the tests (cargo cannot: it belongs to another package and profile).
pub fn release_tokenbackd_path() -> PathBuf {
    let built = tokenbackd_path();
    let release = built
        .parent()
        .unwrap()
        .with_file_name("release")
        .join("tokenbackd");
    assert!(
        release.exists(),
        "{} is missing: build it with `cargo build --release --bin tokenbackd` (the test script does)",
        release.display()
    );
    release
}

impl Tokenbackd {
    /// Starts `tokenbackd --sim <run dir>` with `args`.
    pub fn start(run: &RunDir, args: &[&str]) -> Tokenbackd {
        Tokenbackd::start_logging_to(run, args, "tokenbackd.log")
    }

    /// As [`Tokenbackd::start`], logging to `log` in the run directory (a second daemon).
    pub fn start_logging_to(run: &RunDir, args: &[&str], log: &str) -> Tokenbackd {
        Tokenbackd::spawn(run, args, log, Command::new(tokenbackd_path()))
    }

    /// As [`Tokenbackd::start`], the release build ([`release_tokenbackd_path`]).
    pub fn start_release(run: &RunDir, args: &[&str]) -> Tokenbackd {
        let command = Command::new(release_tokenbackd_path());
        Tokenbackd::spawn(run, args, "tokenbackd.log", command)
    }

    /// As [`Tokenbackd::start`], but the daemon can write no file at or past `bytes`
    /// (RLIMIT_FSIZE, with SIGXFSZ ignored): such writes fail with EFBIG, as a storage fault
    /// that needs no privilege. Its log is written by the test's own process.
    pub fn start_with_file_size_limit(run: &RunDir, args: &[&str], bytes: u64) -> Tokenbackd {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(tokenbackd_path());
        // SAFETY: between fork and exec only async-signal-safe calls: signal(2), setrlimit(2).
        unsafe {
            command.pre_exec(move || {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let limit = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                match libc::setrlimit(libc::RLIMIT_FSIZE, &limit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
        Tokenbackd::spawn(run, args, "tokenbackd.log", command)
    }

    fn spawn(run: &RunDir, args: &[&str], log: &str, mut command: Command) -> Tokenbackd {
        let log = run.root().join(log);
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .arg("--sim")
            .arg(run.root())
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Tokenbackd {
            child: Some(child),
            log,
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.as_ref().expect("running").id()).unwrap()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Sends `signal` and waits for the exit.
    pub fn stop_with(&mut self, signal: libc::c_int) -> ExitStatus {
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
        self.exit()
    }

    /// Waits for it to exit by itself, at most [`EVENTUALLY`].
    pub fn exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tokenbackd did not exit; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Tokenbackd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the disk's hotplug script (block-tokenback) as libxl does, once the back end is in
/// InitWait: the QoS keys of the target, `physical-device-path`, then `hotplug-status`.
pub fn hotplug(host: &mut super::Host, paths: &tokenback_tools::toolstack::DiskPaths) {
    host.toolstack.hotplug_add(paths, EVENTUALLY).unwrap();
}

/// A disk on `storage` with the QoS keys `qos` in its target, for block-tokenback.
pub fn disk(
    storage: &std::path::Path,
    qos: &[(&str, &str)],
) -> tokenback_tools::toolstack::DiskSpec {
    let target = tokenback_tools::toolstack::xl_disk::target(&storage.display().to_string(), qos);
    tokenback_tools::toolstack::DiskSpec::xvda(&target)
}

/// A guest on `host` with one disk on `storage` (devid 51712 unless `tune` says otherwise),
/// served by the tokenbackd running there: the toolstack adds the disk with `qos` in its
/// target, the hotplug script runs, and the front end connects.
pub fn attach(
    host: &mut super::Host,
    storage: &std::path::Path,
    qos: &[(&str, &str)],
    tune: impl FnOnce(&mut tokenback_tools::blkfront::Options),
) -> (
    tokenback_tools::blkfront::Blkfront,
    tokenback_tools::toolstack::DiskPaths,
) {
    let domid = host.new_guest();
    attach_guest(host, domid, storage, qos, tune)
}

/// As [`attach`], for the guest `domid`.
pub fn attach_guest(
    host: &mut super::Host,
    domid: tokenback::platform::DomId,
    storage: &std::path::Path,
    qos: &[(&str, &str)],
    tune: impl FnOnce(&mut tokenback_tools::blkfront::Options),
) -> (
    tokenback_tools::blkfront::Blkfront,
    tokenback_tools::toolstack::DiskPaths,
) {
    let mut opts = host.options(domid);
    tune(&mut opts);
    let mut spec = disk(storage, qos);
    spec.devid = opts.devid;
    let paths = host.toolstack.add_disk(domid, &spec).unwrap();
    let front = std::thread::spawn(move || tokenback_tools::blkfront::Blkfront::connect(opts));
    hotplug(host, &paths);
    let front = front.join().unwrap().expect("the front end connects");
    (front, paths)
}
