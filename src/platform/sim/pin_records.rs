//! Records of the pins an accessor holds in one granting domain, so that the pins of an
//! accessor that died can be released, as Linux's gntdev releases a dead process's grants.
//!
//! Each accessor of a domain owns `DIR/domain/N/grants-<id>.pins`, `flock`ed for as long as it
//! lives. Slot 0 holds the number of slots ever used (scans stop there); every other slot is a
//! ref @0 and a state @4 (free, read or write). The accessor writes the ref into a free slot
//! before it pins (for a map, or for one copy), and a slot's state changes only under the
//! entry's pin lock, in the same critical section as the pin counts. So the slots in state
//! read or write for a ref are exactly its pins, whenever a process dies, and the pin counts
//! can be rebuilt from them. A pins file that can be locked belongs to a dead accessor.

use super::grant_table::GrantTable;
use super::run_dir::{lock_file, random_id, try_lock_file, FileLock, RunDir};
use super::shm::SharedFile;
use super::SimError;
use crate::platform::DomId;
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Slots per accessor and domain, slot 0 included: an accessor holding more pins than that
/// at once in one domain is refused further pins there. The file is sparse: slots never used
/// cost nothing.
const SLOTS: u32 = 1 << 16;
const SLOT_SIZE: usize = 8;
pub(crate) const SLOT_FREE: u32 = 0;
pub(crate) const SLOT_READ: u32 = 1;
pub(crate) const SLOT_WRITE: u32 = 2;

/// One slot of a pins file.
pub(crate) struct Slot<'a> {
    gref: &'a AtomicU32,
    state: &'a AtomicU32,
}

impl Slot<'_> {
    /// The ref this slot records.
    pub(crate) fn gref(&self) -> u32 {
        self.gref.load(Ordering::Relaxed)
    }

    /// Free, read or write; read and changed only under the ref's pin lock.
    pub(crate) fn state(&self) -> u32 {
        self.state.load(Ordering::Relaxed)
    }

    pub(crate) fn set_state(&self, state: u32) {
        self.state.store(state, Ordering::Relaxed);
    }
}

/// One accessor's pin records in one granting domain; the lock says the accessor is alive.
#[derive(Debug)]
pub(crate) struct PinRecords {
    slots: SharedFile,
    free: Mutex<Free>,
    path: PathBuf,
    _lock: FileLock,
}

#[derive(Debug)]
struct Free {
    /// Slots 1..used have been handed out at least once.
    used: u32,
    /// Slots given back.
    released: Vec<u32>,
}

impl PinRecords {
    pub(crate) fn create(run: &RunDir, domid: DomId) -> Result<Self, SimError> {
        let dir = run.domain_dir(domid);
        let id = random_id()?;
        // Locked under a temporary name first: a reaper must never see the file unlocked.
        let tmp = dir.join(format!("grants-{id:016x}.new"));
        let slots = SharedFile::create(&tmp, SLOTS as usize * SLOT_SIZE)?;
        let lock = lock_file(
            File::open(&tmp).map_err(|e| SimError::io("open", &tmp, e))?,
            &tmp,
        )?;
        let path = dir.join(format!("grants-{id:016x}.pins"));
        fs::rename(&tmp, &path).map_err(|e| SimError::io("rename", &tmp, e))?;
        Ok(PinRecords {
            slots,
            free: Mutex::new(Free {
                used: 1,
                released: Vec::new(),
            }),
            path,
            _lock: lock,
        })
    }

    /// Takes a free slot for a pin of `gref` about to be taken: its index and the slot;
    /// `None` when all are in use.
    pub(crate) fn take(&self, gref: u32) -> Option<(u32, Slot<'_>)> {
        let mut free = self.free.lock().ok()?;
        let index = match free.released.pop() {
            Some(index) => index,
            None if free.used < SLOTS => {
                free.used += 1;
                // Published before the slot is used: scans read up to here.
                self.slots.u32_at(0)?.store(free.used, Ordering::Release);
                free.used - 1
            }
            None => return None,
        };
        let Some(slot) = slot_at(&self.slots, index) else {
            free.released.push(index);
            return None;
        };
        slot.gref.store(gref, Ordering::Relaxed);
        Some((index, slot))
    }

    /// Slot `index` of this file.
    pub(crate) fn slot(&self, index: u32) -> Option<Slot<'_>> {
        slot_at(&self.slots, index)
    }

    /// Gives back a slot whose pin was released (its state is free).
    pub(crate) fn give_back(&self, index: u32) {
        if let Ok(mut free) = self.free.lock() {
            free.released.push(index);
        }
    }

    fn in_use(&self) -> bool {
        self.free
            .lock()
            .map_or(true, |free| free.released.len() + 1 < free.used as usize)
    }
}

impl Drop for PinRecords {
    fn drop(&mut self) {
        // Every mapping holds its granter, hence these records, so normally no pin is left.
        // One that could not be released (its lock stuck) stays recorded for a reaper.
        if !self.in_use() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn slot_at(slots: &SharedFile, index: u32) -> Option<Slot<'_>> {
    if index == 0 {
        return None;
    }
    let base = usize::try_from(index).ok()? * SLOT_SIZE;
    Some(Slot {
        gref: slots.u32_at(base)?,
        state: slots.u32_at(base + 4)?,
    })
}

/// Calls `each` with every slot ever used of a pins file.
fn for_each_slot(slots: &SharedFile, mut each: impl FnMut(Slot<'_>)) {
    let used = slots.u32_at(0).map_or(0, |w| w.load(Ordering::Acquire));
    for index in 1..used.min(SLOTS) {
        if let Some(slot) = slot_at(slots, index) {
            each(slot);
        }
    }
}

/// The pins files of `domid`'s accessors, dead or alive.
fn pins_files(run: &RunDir, domid: DomId) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(run.domain_dir(domid)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("grants-") && n.ends_with(".pins"))
        })
        .map(|entry| entry.path())
        .collect()
}

/// Counts the pins recorded for `gref` of `domid`: (all, writable). Call with the ref's pin
/// lock held, so that no slot of it changes meanwhile.
pub(crate) fn count_pins(run: &RunDir, domid: DomId, gref: u32) -> (u32, u32) {
    let (mut total, mut writers) = (0, 0);
    for path in pins_files(run, domid) {
        let Ok(slots) = SharedFile::open(&path) else {
            continue;
        };
        for_each_slot(&slots, |slot| {
            if slot.gref() == gref && slot.state() != SLOT_FREE {
                total += 1;
                writers += u32::from(slot.state() == SLOT_WRITE);
            }
        });
    }
    (total, writers)
}

/// Releases the pins of every dead accessor of `domid` (see the module doc).
pub(crate) fn reap_dead(run: &RunDir, domid: DomId, table: &GrantTable) {
    for path in pins_files(run, domid) {
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let Ok(Some(_dead)) = try_lock_file(file, &path) else {
            continue; // alive (or unusable): leave it alone
        };
        let Ok(slots) = SharedFile::open(&path) else {
            continue;
        };
        let mut left = false;
        for_each_slot(&slots, |slot| {
            // Only the dead owner took pins with these slots: a free one stays free.
            if slot.state() != SLOT_FREE {
                left |= table.release(&slot).is_err();
            }
        });
        if !left {
            let _ = fs::remove_file(&path);
        }
    }
}
