//! A granted page that holds an indirect request's segments, mapped into this process. It
//! is guest memory like the ring, so it is read through the same view: each entry copied
//! out once with volatile word loads, then validated.

use std::ptr::NonNull;

use crate::abi::{Segment, SEGMENTS_PER_INDIRECT_PAGE};
use crate::shared::{copy_from_shared, copy_to_shared, SharedRing, SharedRingError};

/// One indirect page: up to 512 `blkif_request_segment` entries.
#[derive(Clone, Debug)]
pub struct IndirectPage(SharedRing);

impl IndirectPage {
    /// Views the 4096 bytes at `base` (a grant mapping) as an indirect page.
    ///
    /// # Safety
    ///
    /// As for [`SharedRing::new`] with order 0: the page stays mapped, readable and writable
    /// while any view of it exists, and this process touches it only through such views.
    pub unsafe fn new(base: NonNull<u8>) -> Result<Self, SharedRingError> {
        // SAFETY: the caller upholds `SharedRing::new`'s contract for one page.
        unsafe { SharedRing::new(base, 0) }.map(IndirectPage)
    }

    /// A zeroed page owned by this process (tests, simulated guests).
    pub fn allocate() -> Self {
        match SharedRing::allocate(0) {
            Ok(page) => IndirectPage(page),
            // Order 0 is always valid.
            Err(_) => unreachable!("order 0 refused"),
        }
    }

    /// Copies entry `i` out, or `None` past the 512 a page holds.
    pub fn read_segment(&self, i: usize) -> Option<Segment> {
        let ptr = self.entry_ptr(i)?;
        // SAFETY: `entry_ptr` keeps the 8-byte entry inside the live page, 4-aligned (page
        // base plus a multiple of 8), which is `Segment`'s alignment.
        Some(unsafe { copy_from_shared(ptr) })
    }

    /// Writes entry `i` (as a front end does); `false` past the 512 a page holds.
    pub fn write_segment(&self, i: usize, segment: &Segment) -> bool {
        let Some(ptr) = self.entry_ptr(i) else {
            return false;
        };
        // SAFETY: as in `read_segment`.
        unsafe { copy_to_shared(segment, ptr) };
        true
    }

    fn entry_ptr(&self, i: usize) -> Option<*mut u8> {
        (i < SEGMENTS_PER_INDIRECT_PAGE).then(|| {
            self.0
                .as_ptr()
                .as_ptr()
                .wrapping_add(i * core::mem::size_of::<Segment>())
        })
    }
}
