//! The simulated host of a run: its run directory, tokenback-xenstored on it (a process of
//! its own) and the toolstack.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokenback::platform::sim::RunDir;

use super::SimError;
use crate::toolstack::Toolstack;

/// How long xenstored may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The host; xenstored is killed on drop.
pub struct SimHost {
    pub run: RunDir,
    pub toolstack: Toolstack,
    xenstored: Child,
}

impl SimHost {
    /// Creates the run directory `dir` and starts xenstored (found beside this program) on
    /// it, its log in `xenstored.log`.
    pub fn start(dir: &Path) -> Result<SimHost, SimError> {
        let run = RunDir::create(dir).map_err(|e| SimError::Host(e.to_string()))?;
        // A socket left in a reused directory would be taken for our xenstored listening.
        let socket = run.xenstored_socket();
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(dir.join("xenstored.log"))?;
        let mut xenstored = Command::new(beside_me("tokenback-xenstored")?)
            .arg("--run-dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let deadline = Instant::now() + START_TIMEOUT;
        while !socket.exists() {
            if xenstored.try_wait()?.is_some() || Instant::now() > deadline {
                let _ = xenstored.kill();
                let _ = xenstored.wait();
                return Err(SimError::Host(format!(
                    "tokenback-xenstored did not start; see {}",
                    dir.join("xenstored.log").display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let toolstack = Toolstack::new(run.clone()).map_err(|e| SimError::Host(e.to_string()))?;
        Ok(SimHost {
            run,
            toolstack,
            xenstored,
        })
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        let _ = self.xenstored.kill();
        let _ = self.xenstored.wait();
    }
}

/// A program installed beside the running one (cargo puts every binary of the workspace in
/// one directory, and packages install them side by side); for a test or benchmark, which
/// cargo puts in `deps/` below that directory, the one above it.
pub fn beside_me(name: &str) -> Result<PathBuf, SimError> {
    let me = std::env::current_exe()?;
    let dir = me.parent().unwrap_or(Path::new("."));
    let path = dir.join(name);
    let in_deps = dir.file_name().is_some_and(|n| n == "deps");
    match dir.parent().map(|up| up.join(name)) {
        Some(above) if in_deps && !path.exists() && above.exists() => Ok(above),
        _ if path.exists() => Ok(path),
        _ => Err(SimError::Missing(path)),
    }
}
