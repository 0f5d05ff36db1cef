//! A tokenback-xenstored process serving its own simulated host's run directory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Instant;

use tokenback::platform::sim::RunDir;
use tokenback::platform::DomId;

use super::{eventually, EVENTUALLY};

/// The process and its run directory, both gone on drop (also when a test fails).
pub struct Xenstored {
    pub run: RunDir,
    child: Option<Child>,
}

/// How a stopped xenstored ended, and what it logged when its stderr was captured.
pub struct Stopped {
    pub status: ExitStatus,
    pub stderr: String,
}

impl Xenstored {
    /// A fresh run directory (dom0 made in it, as the toolstack does first) and xenstored on it.
    pub fn start(name: &str) -> Xenstored {
        Xenstored::start_with(name, &[], Stdio::inherit())
    }

    /// The same with extra arguments, and stderr where the test wants it.
    pub fn start_with(name: &str, args: &[&str], stderr: Stdio) -> Xenstored {
        // Short: unix socket paths below it must stay under 108 bytes.
        let dir = std::env::temp_dir().join(format!("tb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let run = RunDir::create(&dir).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tokenback-xenstored"))
            .arg("--run-dir")
            .arg(&dir)
            .args(args)
            .stderr(stderr)
            .spawn()
            .unwrap();
        let xenstored = Xenstored {
            run,
            child: Some(child),
        };
        // The socket is published under its name only once it listens.
        wait_for(&xenstored.socket());
        xenstored
    }

    pub fn dir(&self) -> &Path {
        self.run.root()
    }

    pub fn socket(&self) -> PathBuf {
        self.run.xenstored_socket()
    }

    pub fn domain_socket(&self, domid: u16) -> PathBuf {
        self.run.domain_xenstored_socket(DomId(domid))
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> Stopped {
        let mut child = self.child.take().expect("running");
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + EVENTUALLY;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "xenstored did not exit");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            pipe.read_to_string(&mut stderr).unwrap();
        }
        Stopped { status, stderr }
    }
}

impl Drop for Xenstored {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(self.dir());
    }
}

/// Waits until a file (a socket) exists.
pub fn wait_for(path: &Path) {
    eventually(&format!("{} appearing", path.display()), || path.exists());
}

/// Waits until a file (a socket) is gone.
pub fn wait_gone(path: &Path) {
    eventually(&format!("{} going away", path.display()), || !path.exists());
}
