//! A request as copied out of its ring slot and converted from its protocol's layout, not yet
//! validated: every field holds whatever the front end wrote.

use crate::abi::{Segment, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST};
use crate::abi::{BLKIF_OP_DISCARD, BLKIF_OP_INDIRECT};

/// One slot's request, in the union member its `operation` byte selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawRequest {
    /// READ, WRITE, WRITE_BARRIER or FLUSH_DISKCACHE (`blkif_request_rw`).
    Direct(RawDirect),
    /// DISCARD (`blkif_request_discard`).
    Discard(RawDiscard),
    /// INDIRECT (`blkif_request_indirect`).
    Indirect(RawIndirect),
    /// Any other operation: only `operation` and `id` mean anything.
    Other {
        /// The unknown `BLKIF_OP_*` value.
        operation: u8,
        /// Echoed in the response.
        id: u64,
    },
}

/// The fields of a direct (inline-segment) request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawDirect {
    /// READ, WRITE, WRITE_BARRIER or FLUSH_DISKCACHE.
    pub operation: u8,
    /// Claimed number of valid entries in `seg`.
    pub nr_segments: u8,
    /// Virtual device.
    pub handle: u16,
    /// Echoed in the response.
    pub id: u64,
    /// Start sector (512-byte units).
    pub sector_number: u64,
    /// All eleven inline entries, used or not.
    pub seg: [Segment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}

/// The fields of a discard request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawDiscard {
    /// `BLKIF_DISCARD_SECURE` and undefined bits.
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

/// The fields of an indirect request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawIndirect {
    /// Claimed READ or WRITE.
    pub indirect_op: u8,
    /// Claimed number of segments in the indirect pages.
    pub nr_segments: u16,
    /// Virtual device.
    pub handle: u16,
    /// Echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: u64,
    /// All eight page refs, used or not.
    pub indirect_grefs: [u32; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
}

impl RawRequest {
    /// The `id` to echo.
    pub fn id(&self) -> u64 {
        match self {
            RawRequest::Direct(r) => r.id,
            RawRequest::Discard(r) => r.id,
            RawRequest::Indirect(r) => r.id,
            RawRequest::Other { id, .. } => *id,
        }
    }

    /// The slot's `operation` byte.
    pub fn operation(&self) -> u8 {
        match self {
            RawRequest::Direct(r) => r.operation,
            RawRequest::Discard(_) => BLKIF_OP_DISCARD,
            RawRequest::Indirect(_) => BLKIF_OP_INDIRECT,
            RawRequest::Other { operation, .. } => *operation,
        }
    }

    /// The `operation` a response to this request carries: blkfront expects an indirect
    /// request's `indirect_op` back, not `BLKIF_OP_INDIRECT`.
    pub fn response_operation(&self) -> u8 {
        match self {
            RawRequest::Indirect(r) => r.indirect_op,
            other => other.operation(),
        }
    }
}
