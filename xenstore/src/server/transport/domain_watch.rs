//! The simulated host's VIRQ_DOM_EXC: inotify on the domain directory.
//!
//! C xenstored learns that domains died from a virtual interrupt and then asks the
//! hypervisor which ones (`check_domains`). Here the host creates and destroys domains as
//! directories `<dir>/<domid>/` and the files in them, so any change there is the signal;
//! the server then asks its existence predicate about every domain it knows.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Changes that may mean a domain came or went: entries created, deleted or renamed, and
/// the watched directory itself deleted.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_ONLYDIR;

/// An inotify instance watching the domain directory and the directories of domains.
#[derive(Debug)]
pub(super) struct DomainWatch {
    fd: OwnedFd,
}

impl DomainWatch {
    /// A non-blocking inotify instance watching `dir`.
    pub fn new(dir: &Path) -> io::Result<DomainWatch> {
        // SAFETY: inotify_init1 takes flags only; the result is checked before use.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let watch = DomainWatch { fd };
        watch.add(dir)?;
        Ok(watch)
    }

    /// Also watches `dir` (a domain's directory; the kernel drops the watch when it goes).
    pub fn add(&self, dir: &Path) -> io::Result<()> {
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `path` is a nul-terminated string that outlives the call; the fd is ours.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), MASK) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Discards the queued events (which domains changed does not matter: all are checked);
    /// returns whether there were any.
    pub fn drain(&self) -> io::Result<bool> {
        let mut buf = [0u8; 4096];
        let mut any = false;
        loop {
            // SAFETY: reads at most `buf.len()` bytes into `buf`, which lives across the call.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                any = true;
                continue;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => return Ok(any),
                io::ErrorKind::Interrupted => continue,
                _ if n == 0 => return Ok(any),
                _ => return Err(err),
            }
        }
    }
}

impl AsRawFd for DomainWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
