//! One tokenbackd per backend tree: two daemons serving the same VBDs would both bind the
//! front end's event channel and write its backend state, which a real Linux blkfront does
//! not survive (it hits a BUG_ON in talk_to_blkback when the back end goes InitWait twice). The
//! lock is an `flock` on a file in the state directory, named after the tree, so that
//! `--backend-type vbd` and `vbd3` may run side by side; the kernel drops it when the process
//! ends, however it ends, so a restart never finds a stale lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why the lock was not taken.
#[derive(Debug, Error)]
pub enum InstanceLockError {
    /// Another process holds it.
    #[error("another tokenbackd serves this backend tree (it holds the lock {0}); stop it first")]
    Held(PathBuf),
    /// The lock file could not be opened or locked.
    #[error("locking {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// The lock, held until dropped.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes `<dir>/<name>.lock` (created if missing) without waiting.
    pub fn take(dir: &Path, name: &str) -> Result<InstanceLock, InstanceLockError> {
        let path = dir.join(format!("{name}.lock"));
        let io_err = |source| InstanceLockError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err)?;
        // SAFETY: flock on the descriptor `file` keeps open; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(InstanceLock { _file: file });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Err(InstanceLockError::Held(path))
        } else {
            Err(io_err(err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_refused_until_the_first_lets_go_and_other_names_are_free() {
        let dir = std::env::temp_dir().join(format!("tokenback-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = InstanceLock::take(&dir, "vbd").unwrap();
        let err = InstanceLock::take(&dir, "vbd").unwrap_err();
        assert!(
            matches!(&err, InstanceLockError::Held(p) if p == &dir.join("vbd.lock")),
            "{err}"
        );
        let other = InstanceLock::take(&dir, "vbd3").unwrap();
        drop(first);
        InstanceLock::take(&dir, "vbd").unwrap();
        drop(other);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
