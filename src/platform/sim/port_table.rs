//! One domain's event-channel port table, shared by every process of the host.
//!
//! Ports are allocated and bound under an `flock` on the table; the event bits are only ever
//! changed with atomic operations, so sending and receiving take no lock.

use super::run_dir::{lock_file, FileLock, RunDir};
use super::shm::SharedFile;
use super::SimError;
use crate::platform::{DomId, Port};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Ports per domain (Xen's 2-level ABI on 64-bit guests); port 0 is never used.
pub(crate) const NR_PORTS: u32 = 4096;
const ENTRY_SIZE: usize = 32;

pub(crate) const STATE_FREE: u32 = 0;
pub(crate) const STATE_UNBOUND: u32 = 1;
pub(crate) const STATE_INTERDOMAIN: u32 = 2;

/// The port has an event not yet delivered.
pub(crate) const EV_PENDING: u32 = 1;
/// The port was delivered and not yet re-enabled (Linux evtchn's disabled irq).
pub(crate) const EV_MASKED: u32 = 2;

/// The fields of one port: state @0, remote domid @4, remote port @8, event bits @12, owning
/// handle @16; 8 bytes reserved.
pub(crate) struct PortEntry<'a> {
    pub(crate) state: &'a AtomicU32,
    pub(crate) remote_domid: &'a AtomicU32,
    pub(crate) remote_port: &'a AtomicU32,
    pub(crate) bits: &'a AtomicU32,
    pub(crate) owner: &'a AtomicU64,
}

impl PortEntry<'_> {
    /// Frees the port (its table must be locked).
    pub(crate) fn free(&self) {
        self.state.store(STATE_FREE, Ordering::Release);
        self.owner.store(0, Ordering::Relaxed);
        self.bits.store(0, Ordering::Relaxed);
        self.remote_domid.store(0, Ordering::Relaxed);
        self.remote_port.store(0, Ordering::Relaxed);
    }

    /// Whether this is an interdomain port connected to `port` of `domid`.
    pub(crate) fn is_connected_to(&self, domid: DomId, port: Port) -> bool {
        self.state.load(Ordering::Acquire) == STATE_INTERDOMAIN
            && self.remote_domid.load(Ordering::Relaxed) == u32::from(domid.0)
            && self.remote_port.load(Ordering::Relaxed) == port.0
    }
}

/// A domain's port table, mapped.
#[derive(Debug)]
pub(crate) struct PortTable {
    path: PathBuf,
    file: SharedFile,
}

impl PortTable {
    pub(crate) fn create(run: &RunDir, domid: DomId) -> Result<Self, SimError> {
        let path = run.evtchn_table(domid);
        let file = SharedFile::create(&path, NR_PORTS as usize * ENTRY_SIZE)?;
        Ok(PortTable { path, file })
    }

    pub(crate) fn open(run: &RunDir, domid: DomId) -> Result<Self, SimError> {
        let path = run.evtchn_table(domid);
        let file = SharedFile::open(&path)?;
        if file.len() < NR_PORTS as usize * ENTRY_SIZE {
            return Err(SimError::Corrupt {
                path,
                what: "smaller than the port table",
            });
        }
        Ok(PortTable { path, file })
    }

    /// Port `port`'s entry; `None` for port 0 and ports out of range.
    pub(crate) fn entry(&self, port: Port) -> Option<PortEntry<'_>> {
        if port.0 == 0 || port.0 >= NR_PORTS {
            return None;
        }
        let base = port.0 as usize * ENTRY_SIZE;
        Some(PortEntry {
            state: self.file.u32_at(base)?,
            remote_domid: self.file.u32_at(base + 4)?,
            remote_port: self.file.u32_at(base + 8)?,
            bits: self.file.u32_at(base + 12)?,
            owner: self.file.u64_at(base + 16)?,
        })
    }

    /// The lowest free port (the table must be locked).
    pub(crate) fn find_free(&self) -> Option<Port> {
        (1..NR_PORTS).map(Port).find(|&port| {
            self.entry(port)
                .is_some_and(|e| e.state.load(Ordering::Acquire) == STATE_FREE)
        })
    }

    /// Locks the table against other allocations and bindings, in any process.
    pub(crate) fn lock(&self) -> Result<FileLock, SimError> {
        let file = File::open(&self.path).map_err(|e| SimError::Io {
            op: "open",
            path: self.path.clone(),
            source: e,
        })?;
        lock_file(file, &self.path)
    }
}

/// Locks two domains' tables, the lower domid first so that no two lockers can deadlock;
/// one lock when both are the same domain.
pub(crate) fn lock_pair(
    a: (DomId, &PortTable),
    b: (DomId, &PortTable),
) -> Result<(FileLock, Option<FileLock>), SimError> {
    if a.0 == b.0 {
        return Ok((a.1.lock()?, None));
    }
    let (first, second) = if a.0 < b.0 { (a, b) } else { (b, a) };
    let first = first.1.lock()?;
    Ok((first, Some(second.1.lock()?)))
}
