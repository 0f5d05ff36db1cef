//! Records of the grants an accessor keeps mapped, so that the pins of an accessor that died
//! can be released, as Linux's gntdev releases a dead process's mappings at exit.
//!
//! Each accessor of a domain owns `DIR/domain/N/grants-<id>.pins`, `flock`ed for as long as it
//! lives: a table of slots, one per pinned ref of a live mapping (ref @0, state @4: free,
//! read or write). A pins file that can be locked belongs to a dead accessor; reaping swaps
//! each slot to free before releasing its pin, so two reapers never release a pin twice.

use super::grant_table::GrantTable;
use super::run_dir::{lock_file, random_id, try_lock_file, FileLock, RunDir};
use super::shm::SharedFile;
use super::SimError;
use crate::platform::{DomId, GrantRef};
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Slots per accessor and domain: more pinned refs than that are not recorded (their pins
/// would then survive a crash). The file is sparse: untouched slots cost nothing.
const SLOTS: u32 = 1 << 16;
const SLOT_SIZE: usize = 8;
const SLOT_FREE: u32 = 0;
const SLOT_READ: u32 = 1;
const SLOT_WRITE: u32 = 2;

/// One accessor's pin records in one granting domain; the lock says the accessor is alive.
#[derive(Debug)]
pub(crate) struct MapRecords {
    slots: SharedFile,
    /// Slots never used yet start at `.0`; `.1` holds released ones.
    free: Mutex<(u32, Vec<u32>)>,
    path: PathBuf,
    _lock: FileLock,
}

impl MapRecords {
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
        Ok(MapRecords {
            slots,
            free: Mutex::new((0, Vec::new())),
            path,
            _lock: lock,
        })
    }

    /// Records the refs of a mapping whose pins are taken; returns the slots to release at
    /// unmap (fewer than the refs if the table is full).
    pub(crate) fn record(&self, refs: &[GrantRef], writable: bool) -> Vec<u32> {
        let mut taken = Vec::with_capacity(refs.len());
        let Ok(mut free) = self.free.lock() else {
            return taken;
        };
        for gref in refs {
            let slot = match free.1.pop() {
                Some(slot) => slot,
                None if free.0 < SLOTS => {
                    free.0 += 1;
                    free.0 - 1
                }
                None => break,
            };
            let Some((gref_word, state)) = slot_words(&self.slots, slot) else {
                break;
            };
            gref_word.store(gref.0, Ordering::Relaxed);
            state.store(
                if writable { SLOT_WRITE } else { SLOT_READ },
                Ordering::Release,
            );
            taken.push(slot);
        }
        taken
    }

    /// Clears the slots of a mapping about to release its pins.
    pub(crate) fn release(&self, slots: &[u32]) {
        for &slot in slots {
            if let Some((_, state)) = slot_words(&self.slots, slot) {
                state.store(SLOT_FREE, Ordering::Release);
            }
        }
        if let Ok(mut free) = self.free.lock() {
            free.1.extend_from_slice(slots);
        }
    }
}

impl Drop for MapRecords {
    fn drop(&mut self) {
        // Every mapping holds its granter, hence these records: none is left when this drops.
        let _ = fs::remove_file(&self.path);
    }
}

fn slot_words(slots: &SharedFile, slot: u32) -> Option<(&AtomicU32, &AtomicU32)> {
    let base = usize::try_from(slot).ok()? * SLOT_SIZE;
    Some((slots.u32_at(base)?, slots.u32_at(base + 4)?))
}

/// Releases the pins of every dead accessor of `domid` (see the module doc).
pub(crate) fn reap_dead(run: &RunDir, domid: DomId, table: &GrantTable) {
    let Ok(entries) = fs::read_dir(run.domain_dir(domid)) else {
        return;
    };
    for entry in entries.flatten() {
        let is_pins = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("grants-") && n.ends_with(".pins"));
        if !is_pins {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let Ok(Some(_dead)) = try_lock_file(file, &path) else {
            continue; // alive (or unusable): leave it alone
        };
        let Ok(slots) = SharedFile::open(&path) else {
            continue;
        };
        let count = u32::try_from(slots.len() / SLOT_SIZE).unwrap_or(SLOTS);
        for slot in 0..count {
            let Some((gref, state)) = slot_words(&slots, slot) else {
                break;
            };
            match state.swap(SLOT_FREE, Ordering::AcqRel) {
                SLOT_READ => table.unpin(GrantRef(gref.load(Ordering::Relaxed)), false),
                SLOT_WRITE => table.unpin(GrantRef(gref.load(Ordering::Relaxed)), true),
                _ => {}
            }
        }
        let _ = fs::remove_file(&path);
    }
}
