//! Grant access: copying into and out of a guest's granted pages, and mapping them.

use super::shared_mem::{copy_from_shared, copy_to_shared};
use super::{gntst, DomId, GrantRef, PAGE_SIZE};
use std::io;
use std::ptr::NonNull;

/// Why a grant access failed. Each variant carries the values that identify the access; a
/// failure of one copy segment or one map never affects another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The ref lies outside the granting domain's grant table.
    #[error("{gref} of {domid} is outside its grant table")]
    BadRef { domid: DomId, gref: GrantRef },
    /// The entry does not permit access (never granted, or revoked).
    #[error("{gref} of {domid} is not granted")]
    NotGranted { domid: DomId, gref: GrantRef },
    /// The entry grants access to another domain.
    #[error("{gref} of {domid} is granted to {granted_to}, not to {caller}")]
    WrongDomain {
        domid: DomId,
        gref: GrantRef,
        granted_to: DomId,
        caller: DomId,
    },
    /// A write through a read-only grant.
    #[error("{gref} of {domid} is read-only")]
    ReadOnly { domid: DomId, gref: GrantRef },
    /// The entry names a frame the granting domain does not have.
    #[error("{gref} of {domid} names frame {frame}, outside its memory")]
    BadFrame {
        domid: DomId,
        gref: GrantRef,
        frame: u32,
    },
    /// A copy segment that does not fit inside one page.
    #[error("copy of {len} bytes at offset {offset} crosses the page of {gref} of {domid}")]
    BadCopyArg {
        domid: DomId,
        gref: GrantRef,
        offset: u16,
        len: usize,
    },
    /// A map of no pages, or of more than the platform allows at once.
    #[error("cannot map {count} grants at once")]
    BadMapCount { count: usize },
    /// The granting domain does not exist.
    #[error("{domid} does not exist")]
    BadDomain { domid: DomId },
    /// The hypervisor refused with a status this crate does not break down further (Linux
    /// reports Xen's `GNTST_general_error` for several of the reasons above).
    #[error("{gref} of {domid} refused by the hypervisor with status {status}")]
    Refused {
        domid: DomId,
        gref: GrantRef,
        status: i16,
    },
    /// The segment has not been through a copy yet.
    #[error("segment not submitted to a grant copy")]
    NotSubmitted,
    /// The operating system refused the operation as a whole.
    #[error("{op} failed: {}", io::Error::from_raw_os_error(*errno))]
    Os { op: &'static str, errno: i32 },
}

impl GrantError {
    /// The `GNTST_*` code Xen would report for this failure.
    pub fn status(&self) -> i16 {
        match self {
            GrantError::BadRef { .. } => gntst::BAD_GNTREF,
            GrantError::NotGranted { .. }
            | GrantError::WrongDomain { .. }
            | GrantError::ReadOnly { .. }
            | GrantError::BadMapCount { .. }
            | GrantError::NotSubmitted
            | GrantError::Os { .. } => gntst::GENERAL_ERROR,
            GrantError::BadFrame { .. } => gntst::BAD_PAGE,
            GrantError::BadCopyArg { .. } => gntst::BAD_COPY_ARG,
            GrantError::BadDomain { .. } => gntst::BAD_DOMAIN,
            GrantError::Refused { status, .. } => *status,
        }
    }

    /// The error for the last OS call, captured at once.
    pub(crate) fn last_os(op: &'static str) -> Self {
        GrantError::Os {
            op,
            errno: io::Error::last_os_error().raw_os_error().unwrap_or(0),
        }
    }
}

/// The guest side of one copy segment: bytes at `offset` in the page granted by `gref`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestRange {
    pub domid: DomId,
    pub gref: GrantRef,
    pub offset: u16,
}

/// The local side of one copy segment; its length is the segment's length.
#[derive(Debug)]
pub enum LocalBuf<'a> {
    /// Copy from the guest's page into this buffer.
    FromGuest(&'a mut [u8]),
    /// Copy this buffer into the guest's page.
    ToGuest(&'a [u8]),
}

/// One segment of a batched grant copy, with its own result.
#[derive(Debug)]
pub struct CopyOp<'a> {
    guest: GuestRange,
    local: LocalBuf<'a>,
    status: Result<(), GrantError>,
}

impl<'a> CopyOp<'a> {
    /// Copies `dst.len()` bytes from the guest's granted page into `dst`.
    pub fn from_guest(guest: GuestRange, dst: &'a mut [u8]) -> Self {
        Self::new(guest, LocalBuf::FromGuest(dst))
    }

    /// Copies `src` into the guest's granted page.
    pub fn to_guest(src: &'a [u8], guest: GuestRange) -> Self {
        Self::new(guest, LocalBuf::ToGuest(src))
    }

    fn new(guest: GuestRange, local: LocalBuf<'a>) -> Self {
        CopyOp {
            guest,
            local,
            // Reading the status of an op never submitted must not look like success.
            status: Err(GrantError::NotSubmitted),
        }
    }

    /// The guest side.
    pub fn guest(&self) -> GuestRange {
        self.guest
    }

    /// The local buffer.
    pub(crate) fn local(&mut self) -> &mut LocalBuf<'a> {
        &mut self.local
    }

    /// Whether the copy writes into the guest's page.
    pub fn writes_guest(&self) -> bool {
        matches!(self.local, LocalBuf::ToGuest(_))
    }

    /// Length of the segment in bytes.
    pub fn len(&self) -> usize {
        match &self.local {
            LocalBuf::FromGuest(b) => b.len(),
            LocalBuf::ToGuest(b) => b.len(),
        }
    }

    /// Whether the segment copies nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The result of the last copy that included this segment.
    pub fn status(&self) -> Result<(), GrantError> {
        self.status
    }

    pub(crate) fn set_status(&mut self, status: Result<(), GrantError>) {
        self.status = status;
    }

    /// Refuses a segment that leaves its page, as Xen does (`GNTST_bad_copy_arg`).
    pub(crate) fn check_bounds(&self) -> Result<(), GrantError> {
        if usize::from(self.guest.offset) + self.len() > PAGE_SIZE {
            return Err(GrantError::BadCopyArg {
                domid: self.guest.domid,
                gref: self.guest.gref,
                offset: self.guest.offset,
                len: self.len(),
            });
        }
        Ok(())
    }
}

/// Pages of a guest mapped into this process, contiguous and in the order of their refs.
/// Dropping the mapping unmaps the pages and releases the grants; it never panics.
///
/// The memory is shared with an untrusted guest that may change it at any time: it is exposed
/// only as a raw pointer, for the ring crate's volatile accessors.
pub trait GrantMapping: Send + 'static {
    /// Start of the mapped range; valid for `pages() * PAGE_SIZE` bytes while `self` lives.
    fn as_ptr(&self) -> NonNull<u8>;
    /// Number of pages mapped.
    fn pages(&self) -> usize;
    /// Whether the pages are mapped writable.
    fn is_writable(&self) -> bool;

    /// Copies the mapped bytes at `offset` into `dst`. The guest may write them meanwhile:
    /// each byte is read once, as whatever it held (copies the compiler cannot see into, never a
    /// plain `memcpy`).
    fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<(), MappedRangeError> {
        check_range(self, offset, dst.len(), false)?;
        // SAFETY: `offset + dst.len()` lies inside the mapping (checked above), which is
        // valid for reads while `self` lives; only raw pointers reach the shared bytes.
        unsafe { copy_from_shared(self.as_ptr().as_ptr().add(offset), dst) };
        Ok(())
    }

    /// Copies `src` into the mapped bytes at `offset`, each byte written once (see `read_at`).
    fn write_at(&self, offset: usize, src: &[u8]) -> Result<(), MappedRangeError> {
        check_range(self, offset, src.len(), true)?;
        // SAFETY: the range lies inside a writable mapping (checked above), valid while
        // `self` lives; only raw pointers reach the shared bytes.
        unsafe { copy_to_shared(src, self.as_ptr().as_ptr().add(offset)) };
        Ok(())
    }
}

/// Refuses a range outside the mapping, or a write to a read-only one.
fn check_range<M: GrantMapping + ?Sized>(
    mapping: &M,
    offset: usize,
    len: usize,
    write: bool,
) -> Result<(), MappedRangeError> {
    let size = mapping.pages() * PAGE_SIZE;
    if offset.checked_add(len).map_or(true, |end| end > size) {
        return Err(MappedRangeError::Outside { offset, len, size });
    }
    if write && !mapping.is_writable() {
        return Err(MappedRangeError::ReadOnly);
    }
    Ok(())
}

/// Why bytes of a mapping could not be copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MappedRangeError {
    #[error("{len} bytes at offset {offset} leave the {size}-byte mapping")]
    Outside {
        offset: usize,
        len: usize,
        size: usize,
    },
    #[error("the mapping is read-only")]
    ReadOnly,
}

/// Access to guests' granted pages, as a back end has it through `/dev/xen/gntdev`.
pub trait GrantAccess {
    /// What [`GrantAccess::map`] returns.
    type Mapping: GrantMapping;

    /// Runs a batch of copy segments. Each segment gets its own status (see
    /// [`CopyOp::status`]): one bad ref fails its segment alone. Returns the number of
    /// segments that failed.
    #[must_use]
    fn copy(&mut self, ops: &mut [CopyOp<'_>]) -> usize;

    /// Maps the pages granted by `refs` of `domid` contiguously, writable or read-only.
    /// All or nothing: if any ref is refused, nothing stays mapped.
    fn map(
        &mut self,
        domid: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<Self::Mapping, GrantError>;

    /// This handle serves nothing of `domid` any more (its last VBD here is gone): whatever it
    /// keeps of that domain may go now rather than at its next use. gntdev keeps nothing per
    /// domain, so by default this does nothing.
    fn forget(&mut self, _domid: DomId) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(offset: u16) -> GuestRange {
        GuestRange {
            domid: DomId(1),
            gref: GrantRef(9),
            offset,
        }
    }

    #[test]
    fn segments_must_stay_inside_their_page() {
        let mut buf = [0u8; 512];
        assert!(CopyOp::from_guest(range(3584), &mut buf)
            .check_bounds()
            .is_ok());
        let err = CopyOp::from_guest(range(3585), &mut buf)
            .check_bounds()
            .unwrap_err();
        assert_eq!(err.status(), gntst::BAD_COPY_ARG);
    }

    #[test]
    fn an_unsubmitted_segment_is_not_a_success() {
        let src = [1u8; 8];
        assert!(CopyOp::to_guest(&src, range(0)).status().is_err());
    }

    #[test]
    fn statuses_follow_xen() {
        let (domid, gref) = (DomId(3), GrantRef(4));
        assert_eq!(GrantError::BadRef { domid, gref }.status(), -3);
        assert_eq!(GrantError::ReadOnly { domid, gref }.status(), -1);
        assert_eq!(
            GrantError::BadFrame {
                domid,
                gref,
                frame: 1
            }
            .status(),
            -9
        );
    }
}
