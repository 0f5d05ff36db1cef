//! A tokenback-xenstored process in its own run directory, for tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

/// Generous bound for things that happen "eventually" (process start-up, exit).
pub const EVENTUALLY: Duration = Duration::from_secs(20);

pub struct Daemon {
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    pub fn start(name: &str) -> Daemon {
        let dir =
            std::env::temp_dir().join(format!("tokenback-xenstored-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        tokenback::platform::sim::RunDir::create(&dir).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tokenback-xenstored"))
            .arg("--run-dir")
            .arg(&dir)
            .spawn()
            .unwrap();
        let daemon = Daemon {
            dir,
            child: Some(child),
        };
        wait_for(&daemon.socket());
        daemon
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("socket")
    }

    pub fn domain_socket(&self, domid: u16) -> PathBuf {
        self.dir.join(format!("domain/{domid}/socket"))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "daemon did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until a socket file exists.
pub fn wait_for(path: &Path) {
    let deadline = Instant::now() + EVENTUALLY;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs one of Debian's xenstore-utils against `socket`.
pub fn xs(socket: &Path, tool: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .env("XENSTORED_PATH", socket)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e} (is xenstore-utils installed?)"))
}

/// Its stdout, asserting it succeeded.
pub fn xs_ok(socket: &Path, tool: &str, args: &[&str]) -> String {
    let out = xs(socket, tool, args);
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
