//! Copies between this process's memory and memory another domain or process writes at the
//! same time: guest pages seen through the simulated host's files or through a grant mapping.

// Another party writes the shared memory while we copy, which a plain copy (`memcpy`) may not
// race with in Rust's memory model. Accesses the compiler cannot see may: the bytes are then
// whatever was there, each read or written once, as the ring crate reads guest memory. On
// x86_64 that is one `rep movsb` in inline assembly (fast strings move whole cache lines, well
// above an 8-byte loop's rate on a 4 KiB page); elsewhere volatile accesses: bytes up to the
// first 8-aligned address of the shared side, then whole words, then the tail.

/// Copies `dst.len()` bytes from shared memory at `src` into `dst`.
///
/// # Safety
///
/// `src` must be valid for reads of `dst.len()` bytes.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn copy_from_shared(src: *const u8, dst: &mut [u8]) {
    // SAFETY: `src` is readable for `dst.len()` bytes (the caller's promise) and `dst`, ours,
    // does not overlap it.
    unsafe { rep_movsb(src, dst.as_mut_ptr(), dst.len()) }
}

/// Copies `src` into shared memory at `dst`.
///
/// # Safety
///
/// `dst` must be valid for writes of `src.len()` bytes.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn copy_to_shared(src: &[u8], dst: *mut u8) {
    // SAFETY: `dst` is writable for `src.len()` bytes (the caller's promise) and `src`, ours,
    // does not overlap it.
    unsafe { rep_movsb(src.as_ptr(), dst, src.len()) }
}

/// Copies `len` bytes from `src` to `dst` with one `rep movsb`.
///
/// # Safety
///
/// `src` must be valid for reads and `dst` for writes of `len` bytes; they do not overlap.
#[cfg(target_arch = "x86_64")]
unsafe fn rep_movsb(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller vouches for both ranges; the direction flag is clear at every call
    // boundary (System V ABI), so the copy runs forwards; no stack is used.
    unsafe {
        std::arch::asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rsi") src => _,
            inout("rdi") dst => _,
            options(nostack, preserves_flags)
        );
    }
}

/// Copies `dst.len()` bytes from shared memory at `src` into `dst`.
///
/// # Safety
///
/// `src` must be valid for reads of `dst.len()` bytes.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn copy_from_shared(src: *const u8, dst: &mut [u8]) {
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
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn copy_to_shared(src: &[u8], dst: *mut u8) {
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

/// Maps the first `len` bytes of `file` shared and read-write, at an address the kernel picks.
/// The caller unmaps it (`munmap`) when done.
pub(crate) fn map_shared(
    file: &std::fs::File,
    len: usize,
) -> std::io::Result<std::ptr::NonNull<u8>> {
    use std::os::fd::AsRawFd;
    // SAFETY: a new shared mapping at an address the kernel picks: no existing memory is
    // affected. A file shorter than `len` only makes touching the tail fault, which the
    // callers rule out by sizing the file first.
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
        return Err(std::io::Error::last_os_error());
    }
    std::ptr::NonNull::new(addr.cast()).ok_or_else(|| std::io::Error::other("mapped at null"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_copies_move_every_byte_at_any_alignment() {
        // Every byte in range moves and none outside, whatever the start and length (the volatile
        // loop's head, words and tail must join exactly).
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
