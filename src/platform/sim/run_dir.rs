//! The run directory: where each domain's files live, and who creates them.

use super::SimError;
use crate::platform::{DomId, DOMID_FIRST_RESERVED};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The run directory of one simulated host (docs/sim-host.md, "Run directory").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Creates the run directory (if missing) and dom0's files; what the toolstack does once
    /// before anything else starts.
    pub fn create(root: &Path) -> Result<Self, SimError> {
        let run = RunDir {
            root: root.to_path_buf(),
        };
        let dom0 = run.domain_dir(DomId(0));
        fs::create_dir_all(&dom0).map_err(|e| SimError::io("create", &dom0, e))?;
        match super::port_table::PortTable::create(&run, DomId(0)) {
            Ok(_) => Ok(run),
            Err(SimError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
                Ok(run)
            }
            Err(err) => Err(err),
        }
    }

    /// Uses an existing run directory.
    pub fn open(root: &Path) -> Result<Self, SimError> {
        let run = RunDir {
            root: root.to_path_buf(),
        };
        let table = run.evtchn_table(DomId(0));
        fs::metadata(&table).map_err(|e| SimError::io("find", &table, e))?;
        Ok(run)
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// xenstored's privileged socket, for dom0.
    pub fn xenstored_socket(&self) -> PathBuf {
        self.root.join("socket")
    }

    /// `DIR/domain/N`.
    pub fn domain_dir(&self, domid: DomId) -> PathBuf {
        self.root.join("domain").join(domid.0.to_string())
    }

    /// xenstored's socket for domain N (present between INTRODUCE and RELEASE).
    pub fn domain_xenstored_socket(&self, domid: DomId) -> PathBuf {
        self.domain_dir(domid).join("socket")
    }

    pub(super) fn memory(&self, domid: DomId) -> PathBuf {
        self.domain_dir(domid).join("memory")
    }

    pub(super) fn grant_table(&self, domid: DomId) -> PathBuf {
        self.domain_dir(domid).join("grant-table")
    }

    pub(super) fn grant_active(&self, domid: DomId) -> PathBuf {
        self.domain_dir(domid).join("grant-active")
    }

    pub(super) fn evtchn_table(&self, domid: DomId) -> PathBuf {
        self.domain_dir(domid).join("evtchn")
    }

    pub(super) fn evtchn_socket(&self, domid: DomId, handle: u64) -> PathBuf {
        self.domain_dir(domid)
            .join(format!("evtchn-{handle:016x}.sock"))
    }

    /// Whether domain N exists: dom0 always, a guest from the creation of its directory until
    /// the toolstack removes it. The rule tokenback-xenstored applies to owners in SET_PERMS.
    pub fn domain_exists(&self, domid: DomId) -> bool {
        domid.0 == 0 || self.domain_dir(domid).is_dir()
    }

    /// Whether domain N is alive: dom0 always, a guest from its creation until
    /// [`RunDir::destroy_domain`] removes its event-channel table. What Xen's xenstored asks
    /// the hypervisor on `VIRQ_DOM_EXC`; a domain that exists but is not alive is dying.
    pub fn domain_alive(&self, domid: DomId) -> bool {
        domid.0 == 0 || self.evtchn_table(domid).exists()
    }

    /// Takes the next free domid, as Xen allocates them: upwards from the last one handed
    /// out, wrapping below `DOMID_FIRST_RESERVED`, never 0. Atomic across processes (mkdir).
    pub(crate) fn allocate_domid(&self) -> Result<DomId, SimError> {
        let path = self.root.join("domid-next");
        let rover = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| SimError::io("open", &path, e))?;
        let mut lock = lock_file(rover, &path)?;
        let rover = &mut lock.file;
        let mut text = String::new();
        rover
            .read_to_string(&mut text)
            .map_err(|e| SimError::io("read", &path, e))?;
        let start = text.trim().parse::<u16>().unwrap_or(1);
        let last = DOMID_FIRST_RESERVED - 1;
        for i in 0..last {
            let candidate = (u32::from(start.max(1)) - 1 + u32::from(i)) % u32::from(last) + 1;
            let domid = DomId(candidate as u16);
            let dir = self.domain_dir(domid);
            match fs::create_dir(&dir) {
                Ok(()) => {
                    let next = (candidate % u32::from(last)) + 1;
                    rover
                        .set_len(0)
                        .and_then(|()| rover.rewind())
                        .and_then(|()| write!(rover, "{next}"))
                        .map_err(|e| SimError::io("write", &path, e))?;
                    return Ok(domid);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(SimError::io("create", &dir, e)),
            }
        }
        Err(SimError::NoFreeDomid)
    }
}

/// An exclusive `flock` on an open file, held until dropped.
#[derive(Debug)]
pub(crate) struct FileLock {
    file: File,
}

/// Takes an exclusive `flock` on `file`. Locks belong to the open file, so two opens exclude
/// each other even within one process.
pub(crate) fn lock_file(file: File, path: &Path) -> Result<FileLock, SimError> {
    loop {
        // SAFETY: flock on an fd that `file` keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(FileLock { file });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(SimError::io("lock", path, err));
        }
    }
}

/// Takes an exclusive `flock` on `file` if no one holds one; `None` if someone does.
pub(crate) fn try_lock_file(file: File, path: &Path) -> Result<Option<FileLock>, SimError> {
    // SAFETY: flock on an fd that `file` keeps open.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(Some(FileLock { file }));
    }
    let err = io::Error::last_os_error();
    match err.kind() {
        io::ErrorKind::WouldBlock => Ok(None),
        _ => Err(SimError::io("lock", path, err)),
    }
}

/// An id that no other handle of the host has, now or after a restart.
pub(crate) fn random_id() -> Result<u64, SimError> {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into `bytes`.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(SimError::Random(io::Error::last_os_error()));
    }
    Ok(u64::from_ne_bytes(bytes))
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking the fd locked in `lock_file`, still open through `file`.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}
