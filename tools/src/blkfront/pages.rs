//! The guest pages blkfront hands to its back end: ring pages, and a pool of granted data
//! and indirect pages that are reused as Linux blkfront reuses its `struct grant` list.
//! Frames and grant refs come from the guest's shared [`GuestAllocator`].

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::Arc;

use tokenback::platform::sim::{EndAccessError, GuestDomain};
use tokenback::platform::{DomId, GrantRef, PAGE_SIZE};

use super::allocator::GuestAllocator;
use super::error::Error;

/// A page of guest memory with a grant ref of its own; granted to the back end or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GrantedPage {
    pub(crate) frame: u32,
    pub(crate) gref: GrantRef,
    granted: bool,
}

/// One front end's pages, allocated from its guest's allocator, and its pool of data pages.
#[derive(Debug)]
pub(crate) struct GuestPages {
    guest: Arc<GuestDomain>,
    allocator: GuestAllocator,
    backend: DomId,
    /// Pages not in use by a request: still-granted (persistent) ones at the front, so
    /// that they are reused first, as Linux does.
    pool: VecDeque<GrantedPage>,
}

impl GuestPages {
    pub(crate) fn new(allocator: GuestAllocator, backend: DomId) -> Self {
        GuestPages {
            guest: Arc::clone(allocator.guest()),
            allocator,
            backend,
            pool: VecDeque::new(),
        }
    }

    pub(crate) fn guest(&self) -> &Arc<GuestDomain> {
        &self.guest
    }

    /// Allocates 2^order zeroed contiguous pages, grants each to the back end writable, and
    /// returns their refs in order with the address of the first page.
    pub(crate) fn ring(&mut self, order: u8) -> Result<(Vec<GrantRef>, NonNull<u8>), Error> {
        let count = 1u32 << order;
        // Contiguous, as Linux's `xenbus_setup_ring` allocates a multi-page ring.
        let first = self.allocator.frames(count)?;
        let mut refs = Vec::with_capacity(count as usize);
        for frame in first..first + count {
            let gref = self.allocator.gref()?;
            self.guest
                .grant(gref, self.backend, frame, false)
                .map_err(Error::Sim)?;
            refs.push(gref);
        }
        // In bounds: the allocator checked first + count <= pages.
        let base = self
            .guest
            .memory_ptr()
            .as_ptr()
            .wrapping_add(first as usize * PAGE_SIZE);
        let base = NonNull::new(base).ok_or(Error::OutOfGuestMemory {
            pages: self.guest.pages(),
        })?;
        Ok((refs, base))
    }

    /// A data or indirect page granted to the back end (writable, as Linux grants them):
    /// a still-granted one from the pool if any, else a pooled or new page granted now.
    pub(crate) fn take(&mut self) -> Result<GrantedPage, Error> {
        let mut page = match self.pool.pop_front() {
            Some(page) => page,
            None => GrantedPage {
                frame: self.allocator.frames(1)?,
                gref: self.allocator.gref()?,
                granted: false,
            },
        };
        if !page.granted {
            self.guest
                .grant(page.gref, self.backend, page.frame, false)
                .map_err(Error::Sim)?;
            page.granted = true;
        }
        Ok(page)
    }

    /// Returns a page after its request completed, as Linux's `blkif_completion`: ends
    /// access; a page the back end still maps is kept granted for reuse when persistent
    /// grants were negotiated, and is an error otherwise (the caller disables the device).
    pub(crate) fn give_back(
        &mut self,
        mut page: GrantedPage,
        persistent: bool,
    ) -> Result<(), EndAccessError> {
        // A page the back end keeps mapped stays granted: asked first, as Linux's
        // `gnttab_try_end_foreign_access` reads the flags, since ending access to a page in
        // use also looks for dead grantees, which is slow.
        if persistent && self.guest.in_use(page.gref)? {
            self.pool.push_front(page);
            return Ok(());
        }
        match self.guest.end_access(page.gref) {
            Ok(()) => {
                page.granted = false;
                self.pool.push_back(page);
                Ok(())
            }
            Err(EndAccessError::InUse { .. }) if persistent => {
                self.pool.push_front(page);
                Ok(())
            }
            Err(err) => {
                // Never reuse a page the back end may still write.
                Err(err)
            }
        }
    }

    /// Ends access to ring pages once the back end has unmapped them.
    pub(crate) fn end_ring(&self, refs: &[GrantRef]) -> Result<(), Error> {
        for &gref in refs {
            self.guest.end_access(gref).map_err(Error::EndAccess)?;
        }
        Ok(())
    }

    /// Pages of the pool the back end still maps (persistent grants in use).
    pub(crate) fn persistent_pages(&self) -> usize {
        self.pool.iter().filter(|p| p.granted).count()
    }

    /// Pages of the pool the back end maps at this moment (the grantee's flags, as
    /// `gnttab_query_foreign_access` reads them).
    pub(crate) fn backend_mapped(&self) -> Result<usize, Error> {
        let mut mapped = 0;
        for page in self.pool.iter().filter(|p| p.granted) {
            mapped += usize::from(self.guest.in_use(page.gref).map_err(Error::EndAccess)?);
        }
        Ok(mapped)
    }

    /// Ends access to every still-granted page of the pool, as Linux's `blkif_free` does
    /// with its persistent grants; returns how many. A page the back end still maps stays
    /// granted, and the first such one is the error.
    pub(crate) fn end_persistent(&mut self) -> Result<usize, Error> {
        let mut ended = 0;
        let mut first_error = None;
        for page in self.pool.iter_mut().filter(|p| p.granted) {
            match self.guest.end_access(page.gref) {
                Ok(()) => {
                    page.granted = false;
                    ended += 1;
                }
                Err(err) => {
                    first_error.get_or_insert(Error::EndAccess(err));
                }
            }
        }
        first_error.map_or(Ok(ended), Err)
    }

    /// Copies `data` into a page at `offset`.
    pub(crate) fn write(&self, frame: u32, offset: usize, data: &[u8]) -> Result<(), Error> {
        self.guest.write(frame, offset, data).map_err(Error::Sim)
    }

    /// Copies bytes of a page at `offset` into `buf`.
    pub(crate) fn read(&self, frame: u32, offset: usize, buf: &mut [u8]) -> Result<(), Error> {
        self.guest.read(frame, offset, buf).map_err(Error::Sim)
    }
}
