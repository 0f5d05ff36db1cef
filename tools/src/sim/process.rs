//! tokenbackd as a separate process on the simulated host, its log in the run directory,
//! stopped with SIGTERM.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::pin::pin_current;
use super::SimError;

/// How long tokenbackd may take to drain and exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The running daemon; killed on drop if not stopped.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `exe --sim DIR --workers N --io-engine ENGINE`, its stderr in `tokenbackd.log`,
    /// pinned with all its threads to `cpu` if given.
    pub fn start(
        exe: &Path,
        dir: &Path,
        workers: u16,
        io_engine: &str,
        cpu: Option<usize>,
    ) -> Result<Daemon, SimError> {
        let log = dir.join("tokenbackd.log");
        let mut command = Command::new(exe);
        if let Some(cpu) = cpu {
            // SAFETY: the hook runs in the child between fork and exec and only makes the
            // sched_setaffinity system call, which is async-signal-safe.
            unsafe { command.pre_exec(move || pin_current(cpu)) };
        }
        let child = command
            .arg("--sim")
            .arg(dir)
            .args(["--workers", &workers.to_string(), "--io-engine", io_engine])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|source| SimError::Spawn {
                path: exe.to_owned(),
                source,
            })?;
        Ok(Daemon {
            child: Some(child),
            log,
        })
    }

    /// CPU time (user + system) it has used so far.
    pub fn cpu_seconds(&self) -> Result<f64, SimError> {
        let child = self.child.as_ref().ok_or(SimError::Stopped)?;
        Ok(cpu_seconds(child.id())?)
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// An error if the daemon has exited.
    pub fn check_alive(&mut self) -> Result<(), SimError> {
        let child = self.child.as_mut().ok_or(SimError::Stopped)?;
        match child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(self.died(status)),
        }
    }

    /// SIGTERM, then waits for the exit; an error unless it exits 0.
    pub fn stop(mut self) -> Result<(), SimError> {
        let mut child = self.child.take().ok_or(SimError::Stopped)?;
        if let Some(status) = child.try_wait()? {
            return Err(self.died(status));
        }
        let pid = libc::pid_t::try_from(child.id()).map_err(|_| SimError::Stopped)?;
        // SAFETY: kill(2) on the pid of our own child, not yet reaped (so not reused).
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(self.died(status))
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SimError::StopTimeout(self.log.clone()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn died(&self, status: ExitStatus) -> SimError {
        SimError::DaemonDied {
            status,
            log: self.log.clone(),
        }
    }
}

/// CPU time (user + system, all threads) process `pid` has used, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> std::io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "/proc/PID/stat: no times");
    // Fields after the command's closing parenthesis (the command may hold spaces and
    // parentheses); utime and stime are the 14th and 15th of the line.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or_else(bad)?
        .1
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(bad)
    };
    let ticks = field(11)? + field(12)?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks as f64 / hz.max(1) as f64)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
