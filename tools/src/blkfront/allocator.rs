//! One guest's memory and grant-table allocation, shared by every front end (and any other
//! user) of that guest, as a Linux guest's page allocator and `gnttab` free list are: two
//! disks of one guest never get the same frame or grant ref.
//!
//! Frames come from the guest's memory file (page `p` at byte `p * 4096`) and are never
//! reused; grant refs come from its grant table, skipping the refs Linux reserves (0..8,
//! `GNTTAB_NR_RESERVED_ENTRIES`).

use std::sync::{Arc, Mutex, PoisonError};

use tokenback::platform::sim::{GuestDomain, RunDir};
use tokenback::platform::{DomId, GrantRef};

use super::error::Error;

/// Grant refs a Linux guest never hands out.
const RESERVED_GREFS: u32 = 8;

/// A guest's allocator; clones share it.
#[derive(Debug, Clone)]
pub struct GuestAllocator {
    guest: Arc<GuestDomain>,
    next: Arc<Mutex<Next>>,
}

#[derive(Debug)]
struct Next {
    frame: u32,
    gref: u32,
}

impl GuestAllocator {
    /// The allocator of guest `domid` of the simulated host `run`, nothing allocated yet.
    pub fn open(run: &RunDir, domid: DomId) -> Result<Self, Error> {
        let guest = GuestDomain::open(run, domid).map_err(Error::Sim)?;
        Ok(GuestAllocator {
            guest: Arc::new(guest),
            next: Arc::new(Mutex::new(Next {
                frame: 0,
                gref: RESERVED_GREFS,
            })),
        })
    }

    /// The guest's memory and grant table.
    pub fn guest(&self) -> &Arc<GuestDomain> {
        &self.guest
    }

    /// Frames handed out so far (they are never reused).
    pub fn frames_used(&self) -> u32 {
        self.lock().frame
    }

    /// Grant refs handed out so far, the reserved ones included.
    pub fn grefs_used(&self) -> u32 {
        self.lock().gref
    }

    /// `count` contiguous fresh frames; returns the first.
    pub fn frames(&self, count: u32) -> Result<u32, Error> {
        let pages = self.guest.pages();
        let mut next = self.lock();
        let first = next.frame;
        let end = first
            .checked_add(count)
            .filter(|&end| usize::try_from(end).is_ok_and(|end| end <= pages))
            .ok_or(Error::OutOfGuestMemory { pages })?;
        next.frame = end;
        Ok(first)
    }

    /// A fresh grant ref.
    pub fn gref(&self) -> Result<GrantRef, Error> {
        let entries = self.guest.grant_entries();
        let mut next = self.lock();
        let gref = next.gref;
        if usize::try_from(gref).map_or(true, |g| g >= entries) {
            return Err(Error::OutOfGrantRefs { entries });
        }
        next.gref += 1;
        Ok(GrantRef(gref))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Next> {
        // The counters are valid whatever a panicking holder did.
        self.next.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
