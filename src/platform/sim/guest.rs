//! The guest's side of a simulated domain: its memory and its grant table, written as a
//! Linux guest writes them. The toolstack and the simulated blkfront build on this.

use super::grant_table::GrantTable;
use super::pin_records::reap_dead;
use super::port_table::PortTable;
use super::run_dir::RunDir;
use super::shm::SharedFile;
use super::SimError;
use crate::platform::{DomId, GrantRef, PAGE_SIZE};
use std::ptr::NonNull;

/// Most grant-table frames a domain may have: Xen's default `max_grant_frames`.
pub const MAX_GRANT_FRAMES: usize = 64;

/// Why a guest could not end access to a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EndAccessError {
    /// The grantee has the page mapped or is copying it (`GTF_reading`/`GTF_writing` set).
    #[error("grant ref {gref} is still in use by its grantee")]
    InUse { gref: u32 },
    /// The ref is outside the grant table.
    #[error("grant ref {gref} is outside the grant table")]
    BadRef { gref: u32 },
}

/// A simulated guest domain, seen from inside: its pages and its grant table.
#[derive(Debug)]
pub struct GuestDomain {
    run: RunDir,
    domid: DomId,
    memory: SharedFile,
    grants: GrantTable,
}

impl GuestDomain {
    /// Creates a new domain in the run directory: allocates its domid, its memory of `pages`
    /// zeroed pages, an empty grant table of `grant_frames` frames (at most
    /// [`MAX_GRANT_FRAMES`]) and its event-channel table. The domain exists from the moment
    /// its domid is taken (docs/sim-host.md).
    pub fn create(run: &RunDir, pages: usize, grant_frames: usize) -> Result<Self, SimError> {
        if grant_frames > MAX_GRANT_FRAMES {
            return Err(SimError::Limit {
                what: "grant-table frames",
                requested: grant_frames,
                max: MAX_GRANT_FRAMES,
            });
        }
        let bytes = pages.max(1).checked_mul(PAGE_SIZE).ok_or(SimError::Limit {
            what: "pages of memory",
            requested: pages,
            max: usize::MAX / PAGE_SIZE,
        })?;
        let domid = run.allocate_domid()?;
        let made = (|| {
            let grants = GrantTable::create(run, domid, grant_frames.max(1))?;
            PortTable::create(run, domid)?;
            let memory = SharedFile::create(&run.memory(domid), bytes)?;
            Ok((grants, memory))
        })();
        let (grants, memory) = made.inspect_err(|_| {
            // Half a domain is no domain: give the domid back.
            let _ = std::fs::remove_dir_all(run.domain_dir(domid));
        })?;
        Ok(GuestDomain {
            run: run.clone(),
            domid,
            memory,
            grants,
        })
    }

    /// Opens domain `domid` created earlier (by the toolstack, in another process).
    pub fn open(run: &RunDir, domid: DomId) -> Result<Self, SimError> {
        Ok(GuestDomain {
            run: run.clone(),
            domid,
            memory: SharedFile::open(&run.memory(domid))?,
            grants: GrantTable::open(run, domid)?,
        })
    }

    /// This domain's id.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Number of pages of memory.
    pub fn pages(&self) -> usize {
        self.memory.len() / PAGE_SIZE
    }

    /// Number of grant-table entries.
    pub fn grant_entries(&self) -> usize {
        self.grants.len()
    }

    /// Start of this domain's memory, for the ring front end's volatile accessors; valid for
    /// `pages() * PAGE_SIZE` bytes while `self` lives.
    pub fn memory_ptr(&self) -> NonNull<u8> {
        self.memory.as_ptr()
    }

    /// Copies `data` into memory at byte `offset` of page `frame`.
    pub fn write(&self, frame: u32, offset: usize, data: &[u8]) -> Result<(), SimError> {
        let at = self.memory_offset(frame, offset, data.len())?;
        self.memory
            .write(at, data)
            .ok_or(self.outside(at, data.len()))
    }

    /// Copies bytes at `offset` of page `frame` into `buf`.
    pub fn read(&self, frame: u32, offset: usize, buf: &mut [u8]) -> Result<(), SimError> {
        let at = self.memory_offset(frame, offset, buf.len())?;
        self.memory.read(at, buf).ok_or(self.outside(at, buf.len()))
    }

    fn memory_offset(&self, frame: u32, offset: usize, len: usize) -> Result<usize, SimError> {
        let at = usize::try_from(frame)
            .ok()
            .and_then(|f| f.checked_mul(PAGE_SIZE))
            .and_then(|base| base.checked_add(offset))
            .ok_or(self.outside(usize::MAX, len))?;
        Ok(at)
    }

    fn outside(&self, offset: usize, len: usize) -> SimError {
        SimError::OutsideMemory {
            offset,
            end: offset.saturating_add(len),
            len: self.memory.len(),
        }
    }

    /// Grants page `frame` to domain `to` through entry `gref`, read-only or writable. As on
    /// Xen, the frame is not checked here but at each access.
    pub fn grant(
        &self,
        gref: GrantRef,
        to: DomId,
        frame: u32,
        readonly: bool,
    ) -> Result<(), SimError> {
        self.grants.grant(gref.0, to, frame, readonly)
    }

    /// Ends access through `gref`; refused while the grantee maps or copies the page. Pins
    /// of grantee processes that died are released first, as Linux's gntdev would have
    /// released them when they exited.
    pub fn end_access(&self, gref: GrantRef) -> Result<(), EndAccessError> {
        match self.grants.end_access(gref.0) {
            Err(EndAccessError::InUse { .. }) => {
                reap_dead(&self.run, self.domid, &self.grants);
                // A grantee that died holding the entry's pin lock may have left its flags
                // set: taking the lock over puts them right.
                self.grants.recover(gref.0);
                self.grants.end_access(gref.0)
            }
            result => result,
        }
    }

    /// Whether the grantee maps or copies the page of `gref` now, as Linux's
    /// `gnttab_query_foreign_access` tells.
    pub fn in_use(&self, gref: GrantRef) -> Result<bool, EndAccessError> {
        self.grants.in_use(gref.0)
    }
}
