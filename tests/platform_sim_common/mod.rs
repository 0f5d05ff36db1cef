//! Helpers shared by the simulated-host tests.
// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use tokenback::platform::sim::RunDir;

/// A fresh run directory, removed on drop. Kept short: it holds unix sockets.
pub struct TempRun {
    path: PathBuf,
    run: RunDir,
}

impl TempRun {
    pub fn new() -> Self {
        let base = std::env::temp_dir();
        let mut n = 0u32;
        let path = loop {
            let candidate = base.join(format!("tb{}-{n}", std::process::id()));
            if std::fs::create_dir(&candidate).is_ok() {
                break candidate;
            }
            n += 1;
        };
        let run = RunDir::create(&path).unwrap();
        TempRun { path, run }
    }

    pub fn dir(&self) -> &RunDir {
        &self.run
    }
}

impl Drop for TempRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Whether `fd` is readable now (`wait_ms` = 0) or becomes so within `wait_ms`.
pub fn readable(fd: impl std::os::fd::AsFd, wait_ms: u64) -> bool {
    tokenback::platform::wait_readable(fd, Some(std::time::Duration::from_millis(wait_ms)))
        .expect("poll")
}
