//! A file of the run directory mapped shared into this process.

use super::SimError;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// A whole file mapped `MAP_SHARED` read-write: what other processes store into it, this one
/// sees, as between CPUs.
#[derive(Debug)]
pub(crate) struct SharedFile {
    file: File,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is shared memory owned by this value; it is only accessed through
// atomics or raw pointers whose users synchronise as between processes.
unsafe impl Send for SharedFile {}
// SAFETY: as above; `&SharedFile` hands out nothing but raw pointers and atomics.
unsafe impl Sync for SharedFile {}

impl SharedFile {
    /// Creates `path` (which must not exist) with `len` zero bytes, and maps it.
    pub(crate) fn create(path: &Path, len: usize) -> Result<Self, SimError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| SimError::io("create", path, e))?;
        file.set_len(len as u64)
            .map_err(|e| SimError::io("size", path, e))?;
        Self::map(file, path, len)
    }

    /// Maps an existing file whole.
    pub(crate) fn open(path: &Path) -> Result<Self, SimError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| SimError::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| SimError::io("stat", path, e))?
            .len();
        let len = usize::try_from(len).map_err(|_| SimError::Corrupt {
            path: path.to_path_buf(),
            what: "size",
        })?;
        Self::map(file, path, len)
    }

    fn map(file: File, path: &Path, len: usize) -> Result<Self, SimError> {
        if len == 0 {
            return Err(SimError::Corrupt {
                path: path.to_path_buf(),
                what: "empty file",
            });
        }
        // SAFETY: a new shared mapping of the whole file at an address the kernel picks; no
        // existing memory is affected.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(SimError::io("mmap", path, std::io::Error::last_os_error()));
        }
        let ptr = NonNull::new(addr.cast::<u8>()).ok_or(SimError::Corrupt {
            path: path.to_path_buf(),
            what: "mapped at null",
        })?;
        Ok(SharedFile { file, ptr, len })
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The 32-bit word at `offset`, or `None` when it does not fit or is misaligned.
    pub(crate) fn u32_at(&self, offset: usize) -> Option<&AtomicU32> {
        if offset % 4 != 0 || offset.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: in bounds and 4-aligned (the mapping is page-aligned); the memory lives as
        // long as `self`, and all processes access it only atomically.
        Some(unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(offset).cast()) })
    }

    /// The 64-bit word at `offset`, or `None` when it does not fit or is misaligned.
    pub(crate) fn u64_at(&self, offset: usize) -> Option<&AtomicU64> {
        if offset % 8 != 0 || offset.checked_add(8)? > self.len {
            return None;
        }
        // SAFETY: in bounds and 8-aligned; lives as long as `self`; accessed only atomically.
        Some(unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(offset).cast()) })
    }

    /// Copies `dst.len()` bytes from `offset` out of the file.
    pub(crate) fn read(&self, offset: usize, dst: &mut [u8]) -> Option<()> {
        if offset.checked_add(dst.len())? > self.len {
            return None;
        }
        // SAFETY: the source range is inside the mapping, which lives as long as `self`.
        unsafe { copy_from_shared(self.ptr.as_ptr().add(offset), dst) };
        Some(())
    }

    /// Copies `src` into the file at `offset`.
    pub(crate) fn write(&self, offset: usize, src: &[u8]) -> Option<()> {
        if offset.checked_add(src.len())? > self.len {
            return None;
        }
        // SAFETY: the destination range is inside the writable mapping, which lives as long
        // as `self`.
        unsafe { copy_to_shared(src, self.ptr.as_ptr().add(offset)) };
        Some(())
    }
}

impl Drop for SharedFile {
    fn drop(&mut self) {
        // SAFETY: exactly the range mmap returned; borrows of it cannot outlive `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

// Other processes write the shared files while we copy, which a plain copy (`memcpy`) may not
// race with in Rust's memory model. Volatile accesses may: the bytes are then whatever was
// there, each read or written once, as the ring crate reads guest memory. Bytes up to the
// first 8-aligned address of the shared side, then whole words, then the tail.

/// Copies `dst.len()` bytes from shared memory at `src` into `dst`.
///
/// # Safety
///
/// `src` must be valid for reads of `dst.len()` bytes.
unsafe fn copy_from_shared(src: *const u8, dst: &mut [u8]) {
    let head = src.align_offset(8).min(dst.len());
    let words = (dst.len() - head) / 8;
    for (i, byte) in dst[..head].iter_mut().enumerate() {
        // SAFETY: i < dst.len(): inside the source range.
        *byte = unsafe { src.add(i).read_volatile() };
    }
    let out = dst.as_mut_ptr();
    for w in 0..words {
        let at = head + w * 8;
        // SAFETY: `src + at` is 8-aligned and the word lies inside the source range; the
        // word at `out + at` lies inside `dst`, which may be unaligned.
        unsafe {
            let word = src.add(at).cast::<u64>().read_volatile();
            out.add(at).cast::<u64>().write_unaligned(word);
        }
    }
    for (i, byte) in dst.iter_mut().enumerate().skip(head + words * 8) {
        // SAFETY: i < dst.len(): inside the source range.
        *byte = unsafe { src.add(i).read_volatile() };
    }
}

/// Copies `src` into shared memory at `dst`.
///
/// # Safety
///
/// `dst` must be valid for writes of `src.len()` bytes.
unsafe fn copy_to_shared(src: &[u8], dst: *mut u8) {
    let head = dst.align_offset(8).min(src.len());
    let words = (src.len() - head) / 8;
    for (i, &byte) in src[..head].iter().enumerate() {
        // SAFETY: i < src.len(): inside the destination range.
        unsafe { dst.add(i).write_volatile(byte) };
    }
    let input = src.as_ptr();
    for w in 0..words {
        let at = head + w * 8;
        // SAFETY: the word at `input + at` lies inside `src` (maybe unaligned); `dst + at` is
        // 8-aligned and the word lies inside the destination range.
        unsafe {
            let word = input.add(at).cast::<u64>().read_unaligned();
            dst.add(at).cast::<u64>().write_volatile(word);
        }
    }
    for (i, &byte) in src.iter().enumerate().skip(head + words * 8) {
        // SAFETY: i < src.len(): inside the destination range.
        unsafe { dst.add(i).write_volatile(byte) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volatile_copies_move_every_byte_at_any_alignment() {
        // The word loop, the head and the tail must join exactly for each start and length.
        let shared: Vec<u8> = (0..64u8).collect();
        for start in 0..9 {
            for len in 0..40 {
                let mut out = vec![0u8; len];
                // SAFETY: start + len <= 48 < 64 bytes of `shared`.
                unsafe { copy_from_shared(shared.as_ptr().add(start), &mut out) };
                assert_eq!(out, shared[start..start + len], "read {start}+{len}");

                let mut target = vec![0xEEu8; 64];
                // SAFETY: as above, for `target`.
                unsafe { copy_to_shared(&shared[..len], target.as_mut_ptr().add(start)) };
                assert_eq!(
                    target[start..start + len],
                    shared[..len],
                    "write {start}+{len}"
                );
                assert!(target[..start].iter().all(|&b| b == 0xEE), "before {start}");
                assert!(target[start + len..].iter().all(|&b| b == 0xEE), "after");
            }
        }
    }
}
