//! Grant copy and grant mapping through /dev/xen/gntdev.

use super::abi::{
    GntdevCopyForeign, GntdevCopyPtr, GntdevCopySegment, GntdevGrantCopy, GntdevGrantRef,
    GntdevMapGrantRefHead, GntdevUnmapGrantRef, GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF,
    IOCTL_GNTDEV_GRANT_COPY, IOCTL_GNTDEV_MAP_GRANT_REF, IOCTL_GNTDEV_UNMAP_GRANT_REF,
};
use super::{open_device, OpenError, GNTDEV_PATH};
use crate::platform::{
    gntst, CopyOp, DomId, GrantAccess, GrantError, GrantMapping, GrantRef, GuestRange, LocalBuf,
    PAGE_SIZE,
};
use std::mem::size_of;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

/// gntdev's default `limit` module parameter: the most grants one map may name.
const MAX_MAP_COUNT: usize = 65536;

/// An open /dev/xen/gntdev.
pub struct Gntdev {
    fd: Arc<OwnedFd>,
    /// Scratch for the copy ioctl, kept to avoid an allocation per batch.
    segments: Vec<GntdevCopySegment>,
    /// For each entry of `segments`, the index of its `CopyOp`.
    slots: Vec<usize>,
}

impl Gntdev {
    /// Opens /dev/xen/gntdev.
    pub fn open() -> Result<Self, OpenError> {
        Ok(Gntdev {
            fd: Arc::new(open_device(Path::new(GNTDEV_PATH), 0)?),
            segments: Vec::new(),
            slots: Vec::new(),
        })
    }
}

impl std::fmt::Debug for Gntdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gntdev")
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

/// Encodes one copy op as gntdev's segment; the op must have passed its bounds check.
fn encode_segment(op: &mut CopyOp<'_>) -> GntdevCopySegment {
    let guest = op.guest();
    let len = op.len() as u16; // bounded by PAGE_SIZE by the bounds check
    let foreign = GntdevCopyPtr {
        foreign: GntdevCopyForeign {
            gref: guest.gref.0,
            offset: guest.offset,
            domid: guest.domid.0,
        },
    };
    let (source, dest, flags) = match op.local() {
        LocalBuf::FromGuest(buf) => (
            foreign,
            GntdevCopyPtr {
                virt: buf.as_mut_ptr() as u64,
            },
            GNTCOPY_SOURCE_GREF,
        ),
        LocalBuf::ToGuest(buf) => (
            GntdevCopyPtr {
                virt: buf.as_ptr() as u64,
            },
            foreign,
            GNTCOPY_DEST_GREF,
        ),
    };
    GntdevCopySegment {
        source,
        dest,
        len,
        flags,
        status: gntst::GENERAL_ERROR,
        pad: 0,
    }
}

/// Turns a segment's `GNTST_*` into its result.
fn segment_result(status: i16, guest: GuestRange) -> Result<(), GrantError> {
    let (domid, gref) = (guest.domid, guest.gref);
    match status {
        gntst::OKAY => Ok(()),
        gntst::BAD_GNTREF => Err(GrantError::BadRef { domid, gref }),
        gntst::BAD_DOMAIN => Err(GrantError::BadDomain { domid }),
        status => Err(GrantError::Refused {
            domid,
            gref,
            status,
        }),
    }
}

impl GrantAccess for Gntdev {
    type Mapping = GntdevMapping;

    fn copy(&mut self, ops: &mut [CopyOp<'_>]) -> usize {
        self.segments.clear();
        self.slots.clear();
        for (i, op) in ops.iter_mut().enumerate() {
            // gntdev would fail the whole batch with EINVAL; fail the one segment instead.
            if let Err(err) = op.check_bounds() {
                op.set_status(Err(err));
                continue;
            }
            self.segments.push(encode_segment(op));
            self.slots.push(i);
        }
        if !self.segments.is_empty() {
            let mut arg = GntdevGrantCopy {
                count: self.segments.len() as u32,
                pad: 0,
                segments: self.segments.as_mut_ptr(),
            };
            // SAFETY: `arg` points at `count` initialised segments whose local addresses are
            // the borrowed buffers of `ops`, alive and unaliased for the whole call.
            let rc = unsafe {
                libc::ioctl(
                    self.fd.as_raw_fd(),
                    IOCTL_GNTDEV_GRANT_COPY as libc::Ioctl,
                    &mut arg,
                )
            };
            let batch = (rc < 0).then(|| GrantError::last_os("IOCTL_GNTDEV_GRANT_COPY"));
            for (seg, &i) in self.segments.iter().zip(&self.slots) {
                let result = match batch {
                    Some(err) => Err(err),
                    None => segment_result(seg.status, ops[i].guest()),
                };
                ops[i].set_status(result);
            }
        }
        ops.iter().filter(|op| op.status().is_err()).count()
    }

    fn map(
        &mut self,
        domid: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<GntdevMapping, GrantError> {
        if refs.is_empty() || refs.len() > MAX_MAP_COUNT {
            return Err(GrantError::BadMapCount { count: refs.len() });
        }
        let mut request = MapRequest::new(domid, refs);
        // SAFETY: the buffer holds the head and `count` refs, as the ioctl reads and writes.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                IOCTL_GNTDEV_MAP_GRANT_REF as libc::Ioctl,
                request.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(GrantError::last_os("IOCTL_GNTDEV_MAP_GRANT_REF"));
        }
        let index = request.index();
        let pages = refs.len();
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: a new mapping at an address the kernel picks, of the gntdev range just
        // registered at `index`; no existing memory is affected.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages * PAGE_SIZE,
                prot,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                index as libc::off_t,
            )
        };
        let ptr = match NonNull::new(addr.cast::<u8>()) {
            Some(ptr) if addr != libc::MAP_FAILED => ptr,
            _ => {
                let err = GrantError::last_os("mmap of granted pages");
                unmap_grant_refs(&self.fd, index, pages);
                return Err(err);
            }
        };
        Ok(GntdevMapping {
            fd: Arc::clone(&self.fd),
            ptr,
            pages,
            index,
            writable,
        })
    }
}

/// Releases refs registered by IOCTL_GNTDEV_MAP_GRANT_REF. Failure leaves them registered
/// until the fd closes, which is all that can be done about it.
fn unmap_grant_refs(fd: &OwnedFd, index: u64, pages: usize) {
    let mut arg = GntdevUnmapGrantRef {
        index,
        count: pages as u32,
        pad: 0,
    };
    // SAFETY: `arg` is the ioctl's argument struct, valid for the call.
    unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            IOCTL_GNTDEV_UNMAP_GRANT_REF as libc::Ioctl,
            &mut arg,
        )
    };
}

/// IOCTL_GNTDEV_MAP_GRANT_REF's argument: the head followed by `count` refs in one buffer,
/// aligned for both, as the kernel reads it.
struct MapRequest {
    words: Vec<u64>,
}

impl MapRequest {
    const HEAD_WORDS: usize = size_of::<GntdevMapGrantRefHead>() / size_of::<u64>();

    fn new(domid: DomId, refs: &[GrantRef]) -> Self {
        const _: () = assert!(size_of::<GntdevGrantRef>() == size_of::<u64>());
        let mut words = vec![0u64; Self::HEAD_WORDS + refs.len()];
        let head = GntdevMapGrantRefHead {
            count: refs.len() as u32,
            pad: 0,
            index: 0,
        };
        let base = words.as_mut_ptr();
        // SAFETY: `words` is 8-aligned (enough for both structs) and holds exactly the head
        // plus one 8-byte slot per ref, so every write below stays inside it.
        unsafe {
            base.cast::<GntdevMapGrantRefHead>().write(head);
            let slots = base.add(Self::HEAD_WORDS).cast::<GntdevGrantRef>();
            for (i, gref) in refs.iter().enumerate() {
                slots.add(i).write(GntdevGrantRef {
                    domid: u32::from(domid.0),
                    gref: gref.0,
                });
            }
        }
        MapRequest { words }
    }

    fn as_mut_ptr(&mut self) -> *mut u64 {
        self.words.as_mut_ptr()
    }

    /// The mmap offset the kernel wrote into the head.
    fn index(&self) -> u64 {
        // SAFETY: the buffer starts with an initialised, aligned head.
        unsafe { self.words.as_ptr().cast::<GntdevMapGrantRefHead>().read() }.index
    }
}

/// Granted pages mapped through gntdev; unmapped and released on drop.
#[derive(Debug)]
pub struct GntdevMapping {
    fd: Arc<OwnedFd>,
    ptr: NonNull<u8>,
    pages: usize,
    index: u64,
    writable: bool,
}

// SAFETY: the mapping is plain shared memory owned by this value; nothing ties it to the
// thread that created it, and the fd is shared through an Arc.
unsafe impl Send for GntdevMapping {}

impl GrantMapping for GntdevMapping {
    fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    fn pages(&self) -> usize {
        self.pages
    }

    fn is_writable(&self) -> bool {
        self.writable
    }
}

impl Drop for GntdevMapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and the length are exactly the range mmap returned; nothing borrows
        // it past `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.pages * PAGE_SIZE) };
        unmap_grant_refs(&self.fd, self.index, self.pages);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    #[test]
    fn map_request_is_head_then_refs() {
        let request = MapRequest::new(DomId(5), &[GrantRef(7), GrantRef(0x1234_5678)]);
        let b = bytes(&request.words);
        assert_eq!(b.len(), 16 + 2 * 8);
        assert_eq!(b[0..4], 2u32.to_ne_bytes(), "count @0");
        assert_eq!(b[8..16], 0u64.to_ne_bytes(), "index @8");
        assert_eq!(b[16..20], 5u32.to_ne_bytes(), "refs[0].domid @16");
        assert_eq!(b[20..24], 7u32.to_ne_bytes(), "refs[0].ref @20");
        assert_eq!(b[28..32], 0x1234_5678u32.to_ne_bytes(), "refs[1].ref @28");
    }

    #[test]
    fn map_request_reads_back_the_index() {
        let mut request = MapRequest::new(DomId(1), &[GrantRef(8)]);
        request.words[1] = 3 * PAGE_SIZE as u64;
        assert_eq!(request.index(), 3 * PAGE_SIZE as u64);
    }

    #[test]
    fn copy_segments_name_the_grant_side() {
        let guest = GuestRange {
            domid: DomId(9),
            gref: GrantRef(44),
            offset: 512,
        };
        let mut buf = [0u8; 1024];
        let buf_addr = buf.as_ptr() as u64;
        let mut op = CopyOp::from_guest(guest, &mut buf);
        let seg = encode_segment(&mut op);
        assert_eq!((seg.len, seg.flags), (1024, GNTCOPY_SOURCE_GREF));
        // SAFETY: reading the union members this test just wrote.
        let (src, dst) = unsafe { (seg.source.foreign, seg.dest.virt) };
        assert_eq!((src.gref, src.offset, src.domid), (44, 512, 9));
        assert_eq!(dst, buf_addr);

        let data = [1u8; 16];
        let seg = encode_segment(&mut CopyOp::to_guest(&data, guest));
        assert_eq!((seg.len, seg.flags), (16, GNTCOPY_DEST_GREF));
        // SAFETY: as above.
        let (src, dst) = unsafe { (seg.source.virt, seg.dest.foreign) };
        assert_eq!(src, data.as_ptr() as u64);
        assert_eq!(dst.gref, 44);
    }

    #[test]
    fn segment_statuses_become_typed_errors() {
        let guest = GuestRange {
            domid: DomId(2),
            gref: GrantRef(3),
            offset: 0,
        };
        assert_eq!(segment_result(0, guest), Ok(()));
        assert!(matches!(
            segment_result(-3, guest),
            Err(GrantError::BadRef { .. })
        ));
        assert!(matches!(
            segment_result(-2, guest),
            Err(GrantError::BadDomain { .. })
        ));
        assert_eq!(segment_result(-1, guest).unwrap_err().status(), -1);
    }
}
