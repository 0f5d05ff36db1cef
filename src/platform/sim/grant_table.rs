//! One domain's grant table in the v1 layout, and Xen's per-access checks on it.
//!
//! `grant-table` is written by the guest exactly as Linux writes its table; `grant-active`
//! holds what Xen keeps private (pin counts, the frame recorded by the first pin) and is
//! written only by accessors.

use super::guest::EndAccessError;
use super::run_dir::RunDir;
use super::shm::SharedFile;
use super::SimError;
use crate::platform::{gntst, DomId, GrantError, GrantRef, PAGE_SIZE};
use std::sync::atomic::{AtomicU32, Ordering};

// xen/include/public/grant_table.h: GTF_* flags of grant_entry_v1.
pub(crate) const GTF_PERMIT_ACCESS: u16 = 1;
const GTF_TYPE_MASK: u16 = 3;
pub(crate) const GTF_READONLY: u16 = 1 << 2;
pub(crate) const GTF_READING: u16 = 1 << 3;
pub(crate) const GTF_WRITING: u16 = 1 << 4;
const GTF_SUB_PAGE: u16 = 1 << 8;

/// `sizeof(grant_entry_v1_t)`: flags u16 @0, domid u16 @2, frame u32 @4.
pub(crate) const ENTRY_SIZE: usize = 8;
const FRAME_OFFSET: usize = 4;

/// `grant-active`: a header (the dying flag at 0), then one 8-byte entry per grant: the pin
/// state word, then the frame recorded by the first pin.
const ACTIVE_HEADER: usize = 64;
const ACTIVE_ENTRY: usize = 8;
const PIN_TOTAL: u32 = 0xFFFF;
const PIN_WRITER_SHIFT: u32 = 16;
const PIN_WRITERS: u32 = 0x7FFF << PIN_WRITER_SHIFT;
const PIN_LOCK: u32 = 1 << 31;
/// Compare-and-swap attempts before an entry the guest keeps changing is refused (Xen: 4).
const MAX_PIN_RETRIES: u32 = 4;

/// Xen's combined view of flags and domid as one 32-bit word (`scombo` in grant_table.c),
/// so that both are checked and updated in a single compare-and-swap.
pub(crate) fn join(flags: u16, domid: u16) -> u32 {
    let (f, d) = (flags.to_ne_bytes(), domid.to_ne_bytes());
    u32::from_ne_bytes([f[0], f[1], d[0], d[1]])
}

pub(crate) fn split(word: u32) -> (u16, u16) {
    let b = word.to_ne_bytes();
    (
        u16::from_ne_bytes([b[0], b[1]]),
        u16::from_ne_bytes([b[2], b[3]]),
    )
}

/// A domain's grant table and its active (pin) state, mapped.
#[derive(Debug)]
pub(crate) struct GrantTable {
    entries: SharedFile,
    active: SharedFile,
}

impl GrantTable {
    /// Creates a zeroed table (every entry `GTF_invalid`) of `frames` pages.
    pub(crate) fn create(run: &RunDir, domid: DomId, frames: usize) -> Result<Self, SimError> {
        let count = frames * PAGE_SIZE / ENTRY_SIZE;
        Ok(GrantTable {
            entries: SharedFile::create(&run.grant_table(domid), frames * PAGE_SIZE)?,
            active: SharedFile::create(
                &run.grant_active(domid),
                ACTIVE_HEADER + count * ACTIVE_ENTRY,
            )?,
        })
    }

    pub(crate) fn open(run: &RunDir, domid: DomId) -> Result<Self, SimError> {
        let table = GrantTable {
            entries: SharedFile::open(&run.grant_table(domid))?,
            active: SharedFile::open(&run.grant_active(domid))?,
        };
        if table.active.len() < ACTIVE_HEADER + table.len() * ACTIVE_ENTRY {
            return Err(SimError::Corrupt {
                path: run.grant_active(domid),
                what: "smaller than its grant table",
            });
        }
        Ok(table)
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len() / ENTRY_SIZE
    }

    fn word(&self, gref: u32) -> Option<&AtomicU32> {
        self.entries
            .u32_at(usize::try_from(gref).ok()?.checked_mul(ENTRY_SIZE)?)
    }

    fn frame(&self, gref: u32) -> Option<&AtomicU32> {
        self.entries
            .u32_at(usize::try_from(gref).ok()? * ENTRY_SIZE + FRAME_OFFSET)
    }

    fn pin_word(&self, gref: u32) -> Option<&AtomicU32> {
        self.active
            .u32_at(ACTIVE_HEADER + usize::try_from(gref).ok()? * ACTIVE_ENTRY)
    }

    fn pinned_frame(&self, gref: u32) -> Option<&AtomicU32> {
        self.active
            .u32_at(ACTIVE_HEADER + usize::try_from(gref).ok()? * ACTIVE_ENTRY + 4)
    }

    /// Set by the toolstack when the domain is destroyed; accessors then forget it.
    pub(crate) fn is_dying(&self) -> bool {
        self.active
            .u32_at(0)
            .map_or(true, |w| w.load(Ordering::Acquire) != 0)
    }

    /// Marks the domain destroyed for every accessor.
    pub(crate) fn set_dying(&self) {
        if let Some(word) = self.active.u32_at(0) {
            word.store(1, Ordering::Release);
        }
    }

    /// Guest side: grants `frame` to `to`, as Linux's `gnttab_update_entry_v1` does (frame
    /// first, then domid and flags together, with release ordering).
    pub(crate) fn grant(
        &self,
        gref: u32,
        to: DomId,
        frame: u32,
        readonly: bool,
    ) -> Result<(), SimError> {
        let (Some(word), Some(frame_word)) = (self.word(gref), self.frame(gref)) else {
            return Err(SimError::BadRef {
                gref,
                entries: self.len(),
            });
        };
        frame_word.store(frame, Ordering::Relaxed);
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        word.store(join(flags, to.0), Ordering::Release);
        Ok(())
    }

    /// Guest side: ends access as Linux's `gnttab_end_foreign_access_ref_v1` does: clear the
    /// flags with compare-and-swap unless the grantee is reading or writing the page.
    pub(crate) fn end_access(&self, gref: u32) -> Result<(), EndAccessError> {
        let word = self.word(gref).ok_or(EndAccessError::BadRef { gref })?;
        let mut current = word.load(Ordering::Acquire);
        loop {
            let (flags, domid) = split(current);
            if flags & (GTF_READING | GTF_WRITING) != 0 {
                return Err(EndAccessError::InUse { gref });
            }
            match word.compare_exchange(
                current,
                join(0, domid),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => current = now,
            }
        }
    }

    /// Accessor side: checks entry `gref` for an access by `caller` and pins it, as Xen's
    /// `_set_status_v1` does; returns the granted frame. `owner` names this table's domain in
    /// errors, `pages` is the size of its memory.
    pub(crate) fn pin(
        &self,
        owner: DomId,
        gref: GrantRef,
        caller: DomId,
        write: bool,
        pages: usize,
    ) -> Result<u32, GrantError> {
        let bad_ref = GrantError::BadRef { domid: owner, gref };
        let (Some(word), Some(pin), Some(pinned_frame)) = (
            self.word(gref.0),
            self.pin_word(gref.0),
            self.pinned_frame(gref.0),
        ) else {
            return Err(bad_ref);
        };
        let mut lock = PinLock::acquire(pin);
        let total = lock.state & PIN_TOTAL;
        let writers = (lock.state & PIN_WRITERS) >> PIN_WRITER_SHIFT;
        if total == PIN_TOTAL || writers == PIN_WRITERS >> PIN_WRITER_SHIFT {
            return Err(GrantError::Refused {
                domid: owner,
                gref,
                status: gntst::NO_DEVICE_SPACE,
            });
        }
        let mut current = word.load(Ordering::Acquire);
        let mut retries = 0;
        loop {
            let (flags, domid) = split(current);
            if flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS || flags & GTF_SUB_PAGE != 0 {
                return Err(GrantError::NotGranted { domid: owner, gref });
            }
            if domid != caller.0 {
                return Err(GrantError::WrongDomain {
                    domid: owner,
                    gref,
                    granted_to: DomId(domid),
                    caller,
                });
            }
            if write && flags & GTF_READONLY != 0 {
                return Err(GrantError::ReadOnly { domid: owner, gref });
            }
            // Xen reads the frame only at the first pin; later pins reuse it.
            let frame = if total == 0 {
                self.frame(gref.0)
                    .map_or(u32::MAX, |f| f.load(Ordering::Relaxed))
            } else {
                pinned_frame.load(Ordering::Relaxed)
            };
            if usize::try_from(frame).map_or(true, |f| f >= pages) {
                return Err(GrantError::BadFrame {
                    domid: owner,
                    gref,
                    frame,
                });
            }
            let new_flags = flags | GTF_READING | if write { GTF_WRITING } else { 0 };
            match word.compare_exchange(
                current,
                join(new_flags, domid),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    pinned_frame.store(frame, Ordering::Relaxed);
                    lock.state += 1 + if write { 1 << PIN_WRITER_SHIFT } else { 0 };
                    return Ok(frame);
                }
                Err(now) => {
                    // A guest that keeps changing the entry cannot keep us here: Xen gives up
                    // after a few tries ("Shared grant entry is unstable").
                    retries += 1;
                    if retries > MAX_PIN_RETRIES {
                        return Err(GrantError::Refused {
                            domid: owner,
                            gref,
                            status: gntst::GENERAL_ERROR,
                        });
                    }
                    current = now;
                }
            }
        }
    }

    /// Accessor side: drops one pin taken by [`GrantTable::pin`]; the last writable pin
    /// clears `GTF_writing`, the last pin `GTF_reading` (Xen's `gnttab_clear_flags`).
    pub(crate) fn unpin(&self, gref: GrantRef, write: bool) {
        let (Some(word), Some(pin)) = (self.word(gref.0), self.pin_word(gref.0)) else {
            return;
        };
        let mut lock = PinLock::acquire(pin);
        if lock.state & PIN_TOTAL == 0 {
            return; // nothing pinned: a caller bug, but never worth corrupting the entry
        }
        lock.state -= 1;
        let mut clear = 0;
        if write && lock.state & PIN_WRITERS != 0 {
            lock.state -= 1 << PIN_WRITER_SHIFT;
            if lock.state & PIN_WRITERS == 0 {
                clear |= GTF_WRITING;
            }
        }
        if lock.state & PIN_TOTAL == 0 {
            clear |= GTF_READING | GTF_WRITING;
        }
        if clear != 0 {
            word.fetch_and(!join(clear, 0), Ordering::AcqRel);
        }
    }
}

/// The pin lock of one active entry: a spin bit, held for a few atomic operations and never
/// across a system call, standing in for Xen's per-entry active lock.
struct PinLock<'a> {
    word: &'a AtomicU32,
    /// The pin state (without the lock bit) to publish on release.
    state: u32,
}

impl<'a> PinLock<'a> {
    fn acquire(word: &'a AtomicU32) -> Self {
        let mut spins = 0u32;
        loop {
            let current = word.load(Ordering::Relaxed);
            if current & PIN_LOCK == 0
                && word
                    .compare_exchange_weak(
                        current,
                        current | PIN_LOCK,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                return PinLock {
                    word,
                    state: current,
                };
            }
            spins += 1;
            if spins % 64 == 0 {
                std::thread::yield_now(); // the holder may be a descheduled process
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

impl Drop for PinLock<'_> {
    fn drop(&mut self) {
        self.word.store(self.state, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_domid_share_one_word_as_in_the_entry() {
        let word = join(GTF_PERMIT_ACCESS | GTF_READONLY, 0x1234);
        let bytes = word.to_ne_bytes();
        assert_eq!(u16::from_ne_bytes([bytes[0], bytes[1]]), 5, "flags @0");
        assert_eq!(u16::from_ne_bytes([bytes[2], bytes[3]]), 0x1234, "domid @2");
        assert_eq!(split(word), (5, 0x1234));
    }

    #[test]
    fn gtf_values_follow_grant_table_h() {
        assert_eq!(
            (GTF_PERMIT_ACCESS, GTF_READONLY, GTF_READING, GTF_WRITING),
            (1, 0x4, 0x8, 0x10)
        );
        assert_eq!(GTF_SUB_PAGE, 0x100);
        assert_eq!(PAGE_SIZE / ENTRY_SIZE, 512);
    }
}
