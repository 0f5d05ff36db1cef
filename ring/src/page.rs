//! A granted page that holds an indirect request's segments, mapped into this process. It
//! is guest memory like the ring, so it is read through the same view (a one-page
//! [`SharedRing`], whose constructor is where the mapping is vouched for): each entry copied
//! out once with volatile word loads, then validated.

use crate::abi::{Segment, SEGMENTS_PER_INDIRECT_PAGE};
use crate::shared::{copy_from_shared, copy_to_shared, SharedRing, SharedRingError};

/// One indirect page: up to 512 `blkif_request_segment` entries.
#[derive(Clone, Debug)]
pub struct IndirectPage(SharedRing);

impl IndirectPage {
    /// Uses a one-page view of guest memory (a grant mapping, viewed with
    /// [`SharedRing::new`] at order 0) as an indirect page. A larger view is refused: the
    /// page is exactly what one grant ref names.
    pub fn new(page: SharedRing) -> Result<Self, SharedRingError> {
        match page.order() {
            0 => Ok(IndirectPage(page)),
            order => Err(SharedRingError::NotOnePage(order)),
        }
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
