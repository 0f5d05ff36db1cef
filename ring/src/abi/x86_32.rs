//! The `x86_32-abi` layout: i386 aligns `uint64_t` to 4, so there is no padding before `id`
//! and the response has no tail padding (Linux `blkif_x86_32_*`). `packed(4)` gives exactly
//! that alignment on any host.

use super::Segment;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Bytes per ring slot (`sizeof(union blkif_sring_entry)` on i386).
pub const SLOT_SIZE: usize = 108;

/// `blkif_request` with the `rw` member: READ, WRITE, WRITE_BARRIER, FLUSH_DISKCACHE.
/// Also the size of a ring slot, so a slot is copied out as one of these.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Request {
    /// `BLKIF_OP_*`.
    pub operation: u8,
    /// Number of valid entries in `seg`.
    pub nr_segments: u8,
    /// Virtual device (`blkif_vdev_t`).
    pub handle: u16,
    /// Echoed in the response.
    pub id: u64,
    /// Start sector (512-byte units).
    pub sector_number: u64,
    /// Inline segments.
    pub seg: [Segment; 11],
}

/// `blkif_request_discard` (operation 5).
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DiscardRequest {
    /// `BLKIF_OP_DISCARD`.
    pub operation: u8,
    /// `BLKIF_DISCARD_SECURE` or 0.
    pub flag: u8,
    /// Virtual device.
    pub handle: u16,
    /// Echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: u64,
    /// Sectors to discard.
    pub nr_sectors: u64,
}

/// `blkif_request_indirect` (operation 6).
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IndirectRequest {
    /// `BLKIF_OP_INDIRECT`.
    pub operation: u8,
    /// READ or WRITE.
    pub indirect_op: u8,
    /// Segments in the indirect pages (16-bit here, overlapping the direct `handle`).
    pub nr_segments: u16,
    /// Echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: u64,
    /// Virtual device.
    pub handle: u16,
    /// Padding before the grant refs.
    pub _pad2: [u8; 2],
    /// Grant refs of the pages holding the segments.
    pub indirect_grefs: [u32; 8],
    /// Tail padding to 64 bytes, as Linux's `blkif_x86_32_request_indirect` spells out.
    pub _pad3: [u8; 8],
}

/// `blkif_response`.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Response {
    /// The request's `id`.
    pub id: u64,
    /// The request's operation (`indirect_op` for an indirect request).
    pub operation: u8,
    /// Padding before `status`.
    pub _pad1: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
}

/// The head every request form shares: the first 20 bytes of the slot.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub(crate) struct RequestHead {
    pub(crate) operation: u8,
    /// `nr_segments` (direct), `flag` (discard) or `indirect_op` (indirect).
    pub(crate) arg8: u8,
    /// `handle`, or an indirect request's `nr_segments`.
    pub(crate) arg16: u16,
    pub(crate) id: u64,
    pub(crate) sector_number: u64,
}

super::slot_codec!();
