//! One domain's grant table in the v1 layout, and Xen's per-access checks on it.
//!
//! `grant-table` is written by the guest exactly as Linux writes its table; `grant-active`
//! ([`ActiveTable`]) holds what Xen keeps private (pin counts, the frame and grantee recorded
//! by the first pin) and is written only by accessors.

use super::active::{
    ActiveEntry, ActiveTable, LockStuck, PinLock, PIN_TOTAL, PIN_WRITERS, PIN_WRITER_SHIFT,
};
use super::guest::EndAccessError;
use super::pin_records::{count_pins, Slot, SLOT_FREE, SLOT_READ, SLOT_WRITE};
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
    run: RunDir,
    domid: DomId,
    entries: SharedFile,
    active: ActiveTable,
}

impl GrantTable {
    /// Creates a zeroed table (every entry `GTF_invalid`) of `frames` pages.
    pub(crate) fn create(run: &RunDir, domid: DomId, frames: usize) -> Result<Self, SimError> {
        Ok(GrantTable {
            run: run.clone(),
            domid,
            entries: SharedFile::create(&run.grant_table(domid), frames * PAGE_SIZE)?,
            active: ActiveTable::create(&run.grant_active(domid), frames * PAGE_SIZE / ENTRY_SIZE)?,
        })
    }

    pub(crate) fn open(run: &RunDir, domid: DomId) -> Result<Self, SimError> {
        let entries = SharedFile::open(&run.grant_table(domid))?;
        let active = ActiveTable::open(&run.grant_active(domid), entries.len() / ENTRY_SIZE)?;
        Ok(GrantTable {
            run: run.clone(),
            domid,
            entries,
            active,
        })
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
        self.entries.u32_at(
            usize::try_from(gref)
                .ok()?
                .checked_mul(ENTRY_SIZE)?
                .checked_add(FRAME_OFFSET)?,
        )
    }

    /// Set by the toolstack when the domain is destroyed; accessors then forget it.
    pub(crate) fn is_dying(&self) -> bool {
        self.active.is_dying()
    }

    /// Marks the domain destroyed for every accessor.
    pub(crate) fn set_dying(&self) {
        self.active.set_dying();
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

    /// Guest side: whether the grantee maps or copies the page now (`GTF_reading` or
    /// `GTF_writing`), as Linux's `gnttab_query_foreign_access` tells.
    pub(crate) fn in_use(&self, gref: u32) -> Result<bool, EndAccessError> {
        let word = self.word(gref).ok_or(EndAccessError::BadRef { gref })?;
        let (flags, _) = split(word.load(Ordering::Acquire));
        Ok(flags & (GTF_READING | GTF_WRITING) != 0)
    }

    /// Takes entry `gref`'s pin lock and releases it at once, so that a lock left by a dead
    /// process is taken over and the entry's flags made to match its recorded pins.
    pub(crate) fn recover(&self, gref: u32) {
        if let Some(active) = self.active.entry(gref) {
            let _ = self.lock(gref, &active);
        }
    }

    /// Accessor side: checks entry `gref` for an access by `caller` and pins it, as Xen's
    /// `map_grant_ref` and `acquire_grant_for_copy` do; records the pin in `slot` (which holds
    /// `gref`) and returns the granted frame. `pages` is the size of this domain's memory.
    pub(crate) fn pin(
        &self,
        gref: GrantRef,
        caller: DomId,
        write: bool,
        pages: usize,
        slot: &Slot<'_>,
    ) -> Result<u32, GrantError> {
        self.pin_racing(gref, caller, write, pages, slot, || {})
    }

    /// [`GrantTable::pin`], calling `before_cas` just before each compare-and-swap on the
    /// guest's entry: where a test plays the guest racing the accessor.
    fn pin_racing(
        &self,
        gref: GrantRef,
        caller: DomId,
        write: bool,
        pages: usize,
        slot: &Slot<'_>,
        before_cas: impl FnMut(),
    ) -> Result<u32, GrantError> {
        let owner = self.domid;
        let (Some(word), Some(frame_word), Some(active)) = (
            self.word(gref.0),
            self.frame(gref.0),
            self.active.entry(gref.0),
        ) else {
            return Err(GrantError::BadRef { domid: owner, gref });
        };
        let mut lock = self
            .lock(gref.0, &active)
            .map_err(|LockStuck| GrantError::Refused {
                domid: owner,
                gref,
                status: gntst::EAGAIN,
            })?;
        let total = lock.pins & PIN_TOTAL;
        let writers = (lock.pins & PIN_WRITERS) >> PIN_WRITER_SHIFT;
        if total > 0 {
            // Once pinned, Xen checks the grantee it recorded, not the entry the guest may
            // have re-targeted meanwhile.
            let grantee = active.grantee.load(Ordering::Relaxed) as u16;
            if grantee != caller.0 {
                return Err(GrantError::WrongDomain {
                    domid: owner,
                    gref,
                    granted_to: DomId(grantee),
                    caller,
                });
            }
        }
        if total == PIN_TOTAL || writers == PIN_WRITERS >> PIN_WRITER_SHIFT {
            return Err(GrantError::Refused {
                domid: owner,
                gref,
                status: gntst::NO_DEVICE_SPACE,
            });
        }
        if total == 0 || (write && writers == 0) {
            self.set_status(gref, word, caller, write, total > 0, before_cas)?;
        }
        if total == 0 {
            // Read only now that the flags are set: before, the guest could end access and
            // grant the ref again for another frame (Xen reads it after `_set_status` too).
            let frame = frame_word.load(Ordering::Relaxed);
            if usize::try_from(frame).map_or(true, |f| f >= pages) {
                // Nobody else pins the entry: undo the flags just set.
                word.fetch_and(!join(GTF_READING | GTF_WRITING, 0), Ordering::AcqRel);
                return Err(GrantError::BadFrame {
                    domid: owner,
                    gref,
                    frame,
                });
            }
            active.frame.store(frame, Ordering::Relaxed);
            active.grantee.store(u32::from(caller.0), Ordering::Relaxed);
        }
        slot.set_state(if write { SLOT_WRITE } else { SLOT_READ });
        lock.pins += 1 + if write { 1 << PIN_WRITER_SHIFT } else { 0 };
        Ok(active.frame.load(Ordering::Relaxed))
    }

    /// Xen's `_set_status_v1`: sets `GTF_reading` (and `GTF_writing`) on the guest's entry
    /// with compare-and-swap, checking type and grantee unless the entry is already pinned.
    fn set_status(
        &self,
        gref: GrantRef,
        word: &AtomicU32,
        caller: DomId,
        write: bool,
        pinned: bool,
        mut before_cas: impl FnMut(),
    ) -> Result<(), GrantError> {
        let owner = self.domid;
        let mut current = word.load(Ordering::Acquire);
        let mut retries = 0;
        loop {
            let (flags, domid) = split(current);
            if !pinned {
                if flags & (GTF_TYPE_MASK | GTF_SUB_PAGE) != GTF_PERMIT_ACCESS {
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
            }
            if write && flags & GTF_READONLY != 0 {
                return Err(GrantError::ReadOnly { domid: owner, gref });
            }
            let new_flags = flags | GTF_READING | if write { GTF_WRITING } else { 0 };
            before_cas();
            match word.compare_exchange(
                current,
                join(new_flags, domid),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
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

    /// Accessor side: releases the pin recorded in `slot`; the last writable pin clears
    /// `GTF_writing`, the last pin `GTF_reading` (Xen's `gnttab_clear_flags`). A slot already
    /// free (released by a reaper) is left alone.
    pub(crate) fn release(&self, slot: &Slot<'_>) -> Result<(), LockStuck> {
        let gref = slot.gref();
        let (Some(word), Some(active)) = (self.word(gref), self.active.entry(gref)) else {
            return Ok(()); // never pinned: `pin` refuses refs outside the table
        };
        let mut lock = self.lock(gref, &active)?;
        let write = match slot.state() {
            SLOT_READ => false,
            SLOT_WRITE => true,
            _ => return Ok(()),
        };
        slot.set_state(SLOT_FREE);
        if lock.pins & PIN_TOTAL == 0 {
            return Ok(()); // counts a guest overwrote: never worth corrupting them further
        }
        lock.pins -= 1;
        let mut clear = 0;
        if write && lock.pins & PIN_WRITERS != 0 {
            lock.pins -= 1 << PIN_WRITER_SHIFT;
            if lock.pins & PIN_WRITERS == 0 {
                clear |= GTF_WRITING;
            }
        }
        if lock.pins & PIN_TOTAL == 0 {
            clear |= GTF_READING | GTF_WRITING;
        }
        if clear != 0 {
            word.fetch_and(!join(clear, 0), Ordering::AcqRel);
        }
        Ok(())
    }

    /// Takes the pin lock of entry `gref`. Taken over from a dead holder, the pin counts are
    /// rebuilt from the pin records, and flags no pin accounts for any more are cleared.
    fn lock<'a>(&self, gref: u32, active: &ActiveEntry<'a>) -> Result<PinLock<'a>, LockStuck> {
        let mut lock = PinLock::acquire(active)?;
        if lock.recovered {
            let (total, writers) = count_pins(&self.run, self.domid, gref);
            lock.pins = total.min(PIN_TOTAL)
                | (writers.min(PIN_WRITERS >> PIN_WRITER_SHIFT) << PIN_WRITER_SHIFT);
            let clear = match (total, writers) {
                (0, _) => GTF_READING | GTF_WRITING,
                (_, 0) => GTF_WRITING,
                _ => 0,
            };
            if let (Some(word), true) = (self.word(gref), clear != 0) {
                word.fetch_and(!join(clear, 0), Ordering::AcqRel);
            }
        }
        Ok(lock)
    }
}

#[cfg(test)]
mod tests {
    use super::super::guest::GuestDomain;
    use super::super::pin_records::PinRecords;
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicU64;
    use std::time::{Duration, Instant};

    const DOM0: DomId = DomId(0);
    const PAGES: usize = 4;

    /// A run directory with one guest of `PAGES` pages, removed on drop.
    struct Host {
        path: PathBuf,
        guest: GuestDomain,
        table: GrantTable,
    }

    impl Host {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!("tbu{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir(&path).unwrap();
            let run = RunDir::create(&path).unwrap();
            let guest = GuestDomain::create(&run, PAGES, 1).unwrap();
            let table = GrantTable::open(&run, guest.domid()).unwrap();
            Host { path, guest, table }
        }

        fn records(&self) -> PinRecords {
            PinRecords::create(&self.table.run, self.guest.domid()).unwrap()
        }

        fn lock_word(&self, gref: u32) -> &AtomicU64 {
            self.table.active.entry(gref).unwrap().lock_word()
        }

        /// Pins `gref` for dom0 with a new slot of `records`; returns the slot on success.
        fn pin(&self, records: &PinRecords, gref: u32, write: bool) -> Result<u32, GrantError> {
            let (slot, record) = records.take(gref).unwrap();
            self.table
                .pin(GrantRef(gref), DOM0, write, PAGES, &record)
                .map(|_| slot)
        }
    }

    impl Drop for Host {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }

    /// The pid of a process that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn the_frame_is_read_after_the_flags_are_set() {
        // Before: the frame was read before the compare-and-swap. A guest that ended access
        // and granted the ref again for another frame in between (the flags word comes back
        // the same) had the old frame copied.
        let host = Host::new("frame");
        let records = host.records();
        host.guest.grant(GrantRef(8), DOM0, 1, false).unwrap();
        for (regrant_to, expected) in [(2, Ok(2)), (999, Err(999))] {
            let (_, record) = records.take(8).unwrap();
            let mut raced = false;
            let pinned = host
                .table
                .pin_racing(GrantRef(8), DOM0, false, PAGES, &record, || {
                    if !raced {
                        raced = true;
                        host.guest.end_access(GrantRef(8)).unwrap();
                        host.guest
                            .grant(GrantRef(8), DOM0, regrant_to, false)
                            .unwrap();
                    }
                });
            assert!(raced, "the guest's steps ran between the accessor's");
            match expected {
                Ok(frame) => {
                    assert_eq!(pinned, Ok(frame));
                    host.table.release(&record).unwrap();
                }
                Err(frame) => {
                    assert!(
                        matches!(pinned, Err(GrantError::BadFrame { frame: f, .. }) if f == frame)
                    );
                    assert_eq!(record.state(), SLOT_FREE, "no pin recorded");
                }
            }
            // Either way nothing stays pinned: a bad frame's flags were undone.
            assert_eq!(host.guest.end_access(GrantRef(8)), Ok(()));
            host.guest.grant(GrantRef(8), DOM0, 1, false).unwrap();
        }
    }

    #[test]
    fn a_pinned_entry_is_checked_against_the_grantee_of_its_first_pin() {
        // Before: a guest that re-targeted a pinned entry to domain 7 had later accesses by
        // domain 7 allowed and those of the first grantee refused; Xen checks the grantee it
        // recorded at the first pin.
        let host = Host::new("grantee");
        let records = host.records();
        host.guest.grant(GrantRef(8), DOM0, 1, false).unwrap();
        let first = host.pin(&records, 8, false).unwrap();
        host.guest.grant(GrantRef(8), DomId(7), 2, false).unwrap();

        let (_, record) = records.take(8).unwrap();
        assert!(matches!(
            host.table.pin(GrantRef(8), DomId(7), false, PAGES, &record),
            Err(GrantError::WrongDomain {
                granted_to: DOM0,
                caller: DomId(7),
                ..
            })
        ));
        let (second, record) = records.take(8).unwrap();
        assert_eq!(
            host.table.pin(GrantRef(8), DOM0, false, PAGES, &record),
            Ok(1),
            "allowed for the first grantee, with the frame of the first pin"
        );
        for slot in [first, second] {
            host.table.release(&records.slot(slot).unwrap()).unwrap();
        }
        assert_eq!(
            host.lock_word(8).load(Ordering::Relaxed),
            0,
            "nothing pinned"
        );
    }

    #[test]
    fn a_pin_lock_left_by_a_dead_process_is_taken_over_and_the_counts_rebuilt() {
        // Before: a process killed while holding the lock left the entry locked for good and
        // every later access to it spun forever.
        let host = Host::new("dead-lock");
        host.guest.grant(GrantRef(8), DOM0, 1, false).unwrap();
        let (a, b) = (host.records(), host.records());
        let written = host.pin(&a, 8, true).unwrap();
        // A process dies holding the lock, its counts half-updated.
        host.lock_word(8)
            .store(u64::from(dead_pid()) << 32 | 5, Ordering::Relaxed);

        let read = host.pin(&b, 8, false).unwrap();
        assert_eq!(
            host.lock_word(8).load(Ordering::Relaxed),
            2 | 1 << PIN_WRITER_SHIFT,
            "rebuilt from the records: one writable pin and one read pin"
        );
        host.table.release(&a.slot(written).unwrap()).unwrap();
        assert!(host.guest.end_access(GrantRef(8)).is_err(), "still read");
        host.table.release(&b.slot(read).unwrap()).unwrap();
        assert_eq!(host.guest.end_access(GrantRef(8)), Ok(()));
    }

    #[test]
    fn a_pin_lock_a_live_process_keeps_fails_the_access_after_a_bound() {
        // Before: a guest that set the lock bit in its own active table made the back end
        // spin forever on that entry.
        let host = Host::new("live-lock");
        host.guest.grant(GrantRef(8), DOM0, 1, false).unwrap();
        let records = host.records();
        host.lock_word(8)
            .store(u64::from(std::process::id()) << 32, Ordering::Relaxed);
        let start = Instant::now();
        assert!(matches!(
            host.pin(&records, 8, false),
            Err(GrantError::Refused {
                status: gntst::EAGAIN,
                ..
            })
        ));
        assert!(start.elapsed() < Duration::from_secs(30), "bounded");
        assert_eq!(host.guest.end_access(GrantRef(8)), Ok(()), "nothing pinned");

        host.lock_word(8).store(0, Ordering::Relaxed);
        host.guest.grant(GrantRef(8), DOM0, 1, false).unwrap();
        assert!(host.pin(&records, 8, false).is_ok(), "usable once released");
    }

    #[test]
    fn the_guest_recovers_flags_left_by_a_grantee_that_died_holding_the_lock() {
        // A grantee dies releasing its pin: its record is freed, the lock still held and the
        // flags still set. Ending access takes the lock over and clears them.
        let host = Host::new("recover");
        host.guest.grant(GrantRef(8), DOM0, 1, false).unwrap();
        let records = host.records();
        let slot = host.pin(&records, 8, true).unwrap();
        records.slot(slot).unwrap().set_state(SLOT_FREE);
        host.lock_word(8).store(
            u64::from(dead_pid()) << 32 | 1 | 1 << PIN_WRITER_SHIFT,
            Ordering::Relaxed,
        );
        assert_eq!(host.guest.end_access(GrantRef(8)), Ok(()));
    }

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
