//! A file of the run directory mapped shared into this process.

use super::SimError;
use crate::platform::shared_mem::{copy_from_shared, copy_to_shared};
use std::fs::{File, OpenOptions};
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
        let ptr = crate::platform::shared_mem::map_shared(&file, len)
            .map_err(|e| SimError::io("mmap", path, e))?;
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
