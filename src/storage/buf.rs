//! Page-aligned I/O buffers (O_DIRECT needs aligned memory) and a pool the pipeline reuses.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// The size and alignment of one buffer: one guest page, the unit of a blkif segment.
pub const PAGE_SIZE: usize = 4096;

/// One page-aligned page of memory with a window `[start, start + len)` that the I/O uses,
/// as a blkif segment uses the sectors `first_sect..=last_sect` of its page.
pub struct IoBuf {
    ptr: NonNull<u8>,
    start: usize,
    len: usize,
}

// SAFETY: IoBuf owns its allocation outright (no aliasing), like a Box<[u8]>.
unsafe impl Send for IoBuf {}

fn layout() -> Layout {
    // PAGE_SIZE is a non-zero power of two, so this cannot fail.
    Layout::from_size_align(PAGE_SIZE, PAGE_SIZE).expect("page layout")
}

impl IoBuf {
    /// A zeroed page whose window is the whole page.
    pub fn new() -> Self {
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout()) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout()));
        IoBuf {
            ptr,
            start: 0,
            len: PAGE_SIZE,
        }
    }

    /// Set the window; panics if it does not fit in the page (a pipeline bug, not guest input:
    /// blkif already bounds segment sectors to the page).
    pub fn set_window(&mut self, start: usize, len: usize) {
        assert!(
            start <= PAGE_SIZE && len <= PAGE_SIZE - start,
            "window {start}+{len} outside the page"
        );
        self.start = start;
        self.len = len;
    }

    /// Start of the window within the page.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Length of the window.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The window's bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the window lies inside our initialised allocation and we hold &self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(self.start), self.len) }
    }

    /// The window's bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the window lies inside our initialised allocation and we hold &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.start), self.len) }
    }

    /// The window as an iovec for the kernel. The memory stays valid while the IoBuf lives and
    /// does not move when the IoBuf does.
    pub(crate) fn iovec(&mut self) -> libc::iovec {
        libc::iovec {
            iov_base: self.as_mut_slice().as_mut_ptr().cast(),
            iov_len: self.len,
        }
    }
}

impl Default for IoBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout, freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout()) }
    }
}

/// A free list of pages, so the data path does not allocate per request.
#[derive(Default)]
pub struct BufPool {
    free: Vec<IoBuf>,
}

impl BufPool {
    /// A pool holding `n` pages ready for use.
    pub fn with_capacity(n: usize) -> Self {
        BufPool {
            free: (0..n).map(|_| IoBuf::new()).collect(),
        }
    }

    /// A page with its window reset to the whole page (allocated if the pool is empty).
    pub fn take(&mut self) -> IoBuf {
        let mut b = self.free.pop().unwrap_or_default();
        b.set_window(0, PAGE_SIZE);
        b
    }

    /// Give a page back for reuse.
    pub fn put(&mut self, buf: IoBuf) {
        self.free.push(buf);
    }

    /// Pages currently free.
    pub fn free(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::{BufPool, IoBuf, PAGE_SIZE};

    #[test]
    fn buffers_are_page_aligned_and_windows_address_their_part() {
        let mut b = IoBuf::new();
        assert_eq!(b.as_slice().as_ptr() as usize % PAGE_SIZE, 0);
        b.set_window(512, 1024);
        b.as_mut_slice().fill(7);
        assert_eq!((b.start(), b.len()), (512, 1024));
        b.set_window(0, PAGE_SIZE);
        let all = b.as_slice();
        assert!(all[..512].iter().all(|&x| x == 0) && all[512..1536].iter().all(|&x| x == 7));
        assert!(all[1536..].iter().all(|&x| x == 0));
    }

    #[test]
    #[should_panic(expected = "outside the page")]
    fn a_window_past_the_page_is_a_bug() {
        IoBuf::new().set_window(4096 - 512, 1024);
    }

    #[test]
    fn the_pool_reuses_pages_and_resets_their_window() {
        let mut pool = BufPool::with_capacity(2);
        let mut b = pool.take();
        b.set_window(512, 512);
        let addr = b.as_slice().as_ptr() as usize - 512;
        pool.put(b);
        let b = pool.take();
        assert_eq!(
            (b.as_slice().as_ptr() as usize, b.start(), b.len()),
            (addr, 0, PAGE_SIZE)
        );
        assert_eq!(pool.free(), 1);
        // Empty pool: a fresh page rather than a failure.
        let _c = pool.take();
        assert_eq!(pool.take().len(), PAGE_SIZE);
    }
}
