//! The one place that touches guest-shared memory: a view of a shared ring's pages.
//!
//! Rules: the other side may change any byte at any moment, so nothing here hands out a Rust
//! reference to shared bytes except the four header indices, which are `AtomicU32` and only
//! ever accessed atomically. Slots are read and written with volatile copies of whole values
//! (see `slots`), and every offset is proven in bounds where it is computed.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::Arc;
use thiserror::Error;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::abi::XEN_PAGE_SIZE;

/// Bytes of the `blkif_sring` header before slot 0 (indices, `pvt`, padding).
pub const HEADER_SIZE: usize = 64;
/// Largest `ring-page-order` (Linux's XENBUS_MAX_RING_GRANT_ORDER).
pub const MAX_RING_ORDER: u8 = 4;

/// Why a region cannot be used as a shared ring.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SharedRingError {
    /// `ring-page-order` above 4.
    #[error("ring page order {0} is above the maximum {MAX_RING_ORDER}")]
    OrderTooLarge(u8),
    /// The region does not start on a page boundary.
    #[error("ring memory at {0:#x} is not page-aligned")]
    Unaligned(usize),
    /// An indirect page was built from a view of more than one page.
    #[error("an indirect page is one page, not 2^{0}")]
    NotOnePage(u8),
    /// A byte range outside the ring.
    #[error("bytes {offset}..{offset}+{len} lie outside the {size}-byte ring")]
    OutOfBounds {
        /// Start of the range.
        offset: usize,
        /// Length of the range.
        len: usize,
        /// Size of the ring.
        size: usize,
    },
}

/// A header index of `blkif_sring`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingIndex {
    /// Requests produced (front end writes).
    ReqProd = 0,
    /// Request index at which the back end wants an event (back end writes).
    ReqEvent = 4,
    /// Responses produced (back end writes).
    RspProd = 8,
    /// Response index at which the front end wants an event (front end writes).
    RspEvent = 12,
}

/// Entries in a ring of `order` pages whose slots are `slot_size` bytes: ring.h's
/// `__RING_SIZE`, the largest power of two not above the slots that fit after the header.
pub fn ring_size(order: u8, slot_size: usize) -> u32 {
    let fit = ((XEN_PAGE_SIZE << order) - HEADER_SIZE) / slot_size;
    // `fit` is at least 1 for every order and real slot size; the max keeps 0 out anyway.
    let fit = u32::try_from(fit.max(1)).unwrap_or(u32::MAX);
    1 << (31 - fit.leading_zeros())
}

/// A view of 2^order pages of shared-ring memory. Cloning gives another view of the same
/// pages (a front end and a back end over one region, in tests).
#[derive(Clone, Debug)]
pub struct SharedRing {
    base: NonNull<u8>,
    order: u8,
    /// Keeps an owned allocation alive as long as any view of it.
    _owner: Option<Arc<OwnedPages>>,
}

// SAFETY: `SharedRing` only reaches its memory through atomics and volatile copies, which are
// sound from any thread, and the memory's validity is the constructor's contract, not tied to
// a thread.
unsafe impl Send for SharedRing {}
// SAFETY: as for `Send`: `&SharedRing` allows nothing a concurrent writer could break.
unsafe impl Sync for SharedRing {}

impl SharedRing {
    /// Views `4096 << order` bytes at `base` as a shared ring.
    ///
    /// # Safety
    ///
    /// For as long as this value or any clone of it exists, `base..base + (4096 << order)`
    /// must stay mapped, readable and writable, and must not be deallocated or reused for
    /// anything else. Other processes (the guest) may write it concurrently; this process must
    /// not hold Rust references to it nor access it except through `SharedRing` values.
    pub unsafe fn new(base: NonNull<u8>, order: u8) -> Result<Self, SharedRingError> {
        check_order(order)?;
        if base.as_ptr() as usize % XEN_PAGE_SIZE != 0 {
            return Err(SharedRingError::Unaligned(base.as_ptr() as usize));
        }
        Ok(SharedRing {
            base,
            order,
            _owner: None,
        })
    }

    /// A zeroed, page-aligned ring of 2^order pages owned by this process (tests, mocks,
    /// simulated guests).
    pub fn allocate(order: u8) -> Result<Self, SharedRingError> {
        check_order(order)?;
        let pages = Arc::new(OwnedPages::new(XEN_PAGE_SIZE << order));
        Ok(SharedRing {
            base: pages.base,
            order,
            _owner: Some(pages),
        })
    }

    /// `ring-page-order`.
    pub fn order(&self) -> u8 {
        self.order
    }

    /// Bytes in the region.
    pub fn size(&self) -> usize {
        XEN_PAGE_SIZE << self.order
    }

    /// The base address (to hand to another mapping or for diagnostics).
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.base
    }

    /// One of the header's indices.
    pub fn header(&self, which: RingIndex) -> &AtomicU32 {
        let ptr = self
            .base
            .as_ptr()
            .wrapping_add(which as usize)
            .cast::<u32>();
        // SAFETY: the offset is 0..=12 inside the first page (in bounds, 4-aligned since the
        // base is page-aligned); the memory lives as long as `self` (constructor contract), and
        // both sides access these words only atomically (aligned u32 loads and stores).
        unsafe { AtomicU32::from_ptr(ptr) }
    }

    /// Publishes `new` as the producer index `prod` and decides, as ring.h's
    /// `RING_PUSH_{REQUESTS,RESPONSES}_AND_CHECK_NOTIFY` do, whether the peer asked (through
    /// its event index `event`) to be notified of an entry between the old index and `new`.
    #[inline]
    pub(crate) fn publish_and_check_notify(
        &self,
        prod: RingIndex,
        event: RingIndex,
        new: u32,
    ) -> bool {
        let old = self.header(prod).load(Ordering::Relaxed);
        // Release: the slots before the index (ring.h's wmb).
        self.header(prod).store(new, Ordering::Release);
        // The index before reading the peer's event index (ring.h's mb).
        fence(Ordering::SeqCst);
        let event = self.header(event).load(Ordering::Relaxed);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// Copies `out.len()` bytes from `offset`, one volatile read each.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<(), SharedRingError> {
        let base = self.range(offset, out.len())?;
        for (i, byte) in out.iter_mut().enumerate() {
            // SAFETY: `range` checked offset..offset+len lies inside the live region.
            *byte = unsafe { base.add(i).read_volatile() };
        }
        Ok(())
    }

    /// Writes `data` at `offset`, one volatile write each.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<(), SharedRingError> {
        let base = self.range(offset, data.len())?;
        for (i, byte) in data.iter().enumerate() {
            // SAFETY: `range` checked offset..offset+len lies inside the live region.
            unsafe { base.add(i).write_volatile(*byte) };
        }
        Ok(())
    }

    fn range(&self, offset: usize, len: usize) -> Result<*mut u8, SharedRingError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(self.base.as_ptr().wrapping_add(offset)),
            _ => Err(SharedRingError::OutOfBounds {
                offset,
                len,
                size: self.size(),
            }),
        }
    }
}

/// Copies a `T` out of shared memory, reading each byte exactly once with volatile word
/// loads: the guest may change the bytes meanwhile, and the copy is all we look at after.
/// (A volatile read of a whole struct compiles to one load per byte; words are 8 to 14 times
/// fewer.)
///
/// # Safety
///
/// `src` must be valid for reads of `size_of::<T>()` bytes and aligned to `align_of::<T>()`.
pub(crate) unsafe fn copy_from_shared<T: FromBytes + IntoBytes>(src: *const u8) -> T {
    let mut out = core::mem::MaybeUninit::<T>::uninit();
    let dst = out.as_mut_ptr().cast::<u8>();
    if const { wide_words::<T>() } {
        for i in 0..size_of::<T>() / 8 {
            // SAFETY: word i lies inside the `T` at `src` and inside `out`, both 8-aligned
            // because `T` is.
            unsafe {
                let value = src.cast::<u64>().add(i).read_volatile();
                dst.cast::<u64>().add(i).write(value);
            }
        }
    } else {
        for i in 0..size_of::<T>() / 4 {
            // SAFETY: word i lies inside the `T` at `src` and inside `out`, both 4-aligned
            // (`wide_words` checks it).
            unsafe {
                let value = src.cast::<u32>().add(i).read_volatile();
                dst.cast::<u32>().add(i).write(value);
            }
        }
    }
    // SAFETY: every byte of `out` was written above (size is a multiple of the word), and
    // any bytes are a valid `T` (FromBytes).
    unsafe { out.assume_init() }
}

/// Writes `value` into shared memory with volatile word stores.
///
/// # Safety
///
/// `dst` must be valid for writes of `size_of::<T>()` bytes and aligned to `align_of::<T>()`.
pub(crate) unsafe fn copy_to_shared<T: IntoBytes + Immutable>(value: &T, dst: *mut u8) {
    if const { wide_words::<T>() } {
        for (i, word) in value.as_bytes().chunks_exact(8).enumerate() {
            let word = u64::from_ne_bytes(word.try_into().unwrap_or_default());
            // SAFETY: word i lies inside the `T` at `dst`, 8-aligned because `T` is.
            unsafe { dst.cast::<u64>().add(i).write_volatile(word) };
        }
    } else {
        for (i, word) in value.as_bytes().chunks_exact(4).enumerate() {
            let word = u32::from_ne_bytes(word.try_into().unwrap_or_default());
            // SAFETY: word i lies inside the `T` at `dst`, 4-aligned (`wide_words` checks it).
            unsafe { dst.cast::<u32>().add(i).write_volatile(word) };
        }
    }
}

/// Whether `T` can be copied in 8-byte words; otherwise it is copied in 4-byte words, which
/// every layout type allows (checked at compile time).
const fn wide_words<T>() -> bool {
    let (size, align) = (core::mem::size_of::<T>(), core::mem::align_of::<T>());
    assert!(
        size % 4 == 0 && align >= 4,
        "slot types are copied in 4-byte words"
    );
    align >= 8 && size % 8 == 0
}

fn check_order(order: u8) -> Result<(), SharedRingError> {
    if order > MAX_RING_ORDER {
        return Err(SharedRingError::OrderTooLarge(order));
    }
    Ok(())
}

/// Zeroed page-aligned memory from the global allocator.
#[derive(Debug)]
struct OwnedPages {
    base: NonNull<u8>,
    layout: Layout,
}

// SAFETY: plain heap memory owned by this value; all access goes through `SharedRing`.
unsafe impl Send for OwnedPages {}
// SAFETY: `&OwnedPages` gives no access to the memory at all.
unsafe impl Sync for OwnedPages {}

impl OwnedPages {
    fn new(size: usize) -> Self {
        let layout = match Layout::from_size_align(size, XEN_PAGE_SIZE) {
            Ok(layout) => layout,
            // At most 64 KiB with a power-of-two alignment: always a valid layout.
            Err(_) => unreachable!("ring layout of {size} bytes"),
        };
        // SAFETY: the layout has a nonzero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        match NonNull::new(ptr) {
            Some(base) => OwnedPages { base, layout },
            None => std::alloc::handle_alloc_error(layout),
        }
    }
}

impl Drop for OwnedPages {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, and freed only here.
        unsafe { dealloc(self.base.as_ptr(), self.layout) }
    }
}
