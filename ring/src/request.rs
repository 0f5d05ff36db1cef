//! Validation of a copied request into an owned [`Request`] whose every field is in range, and
//! the typed reasons a request is refused.
//!
//! Only a [`RawRequest`] (a private copy) is validated, and only a validated `Request` reaches
//! the caller, so the guest cannot change a request between its check and its use.

use crate::abi::{
    BLKIF_DISCARD_SECURE, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST,
    BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE,
    BLKIF_OP_WRITE_BARRIER, INDIRECT_SEGMENTS_ABI_CEILING, SECTORS_PER_PAGE,
    SEGMENTS_PER_INDIRECT_PAGE,
};
use crate::page::IndirectPage;
use crate::raw::{RawDirect, RawDiscard, RawIndirect, RawRequest};
use crate::response::{Response, Status};
use crate::segment::{DataSegment, Segments};
use thiserror::Error;

/// What the back end accepts beyond the fixed ABI limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    max_indirect_segments: u16,
}

/// A [`Limits`] value the ABI cannot express.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LimitsError {
    /// More segments than 8 indirect pages can describe.
    #[error("max indirect segments {0} needs more than 8 indirect pages (at most {INDIRECT_SEGMENTS_ABI_CEILING})")]
    TooManyIndirectSegments(u32),
}

impl Limits {
    /// No indirect requests: for a back end that does not publish
    /// `feature-max-indirect-segments`.
    pub const DIRECT_ONLY: Limits = Limits {
        max_indirect_segments: 0,
    };

    /// Accept indirect requests of up to `max_indirect_segments` segments (the value published
    /// as `feature-max-indirect-segments`; Linux uses 256). 0 refuses indirect requests.
    pub fn new(max_indirect_segments: u32) -> Result<Self, LimitsError> {
        match u16::try_from(max_indirect_segments) {
            Ok(max) if usize::from(max) <= INDIRECT_SEGMENTS_ABI_CEILING => Ok(Limits {
                max_indirect_segments: max,
            }),
            _ => Err(LimitsError::TooManyIndirectSegments(max_indirect_segments)),
        }
    }

    /// The cap on segments per indirect request.
    pub fn max_indirect_segments(&self) -> u16 {
        self.max_indirect_segments
    }
}

/// Why a request is refused. The request is answered, not the ring broken.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// `operation` is no `BLKIF_OP_*` we implement (including the reserved 4).
    #[error("unknown operation {0}")]
    UnknownOperation(u8),
    /// An indirect request reached a back end that offers none.
    #[error("indirect request, but indirect requests are not offered")]
    IndirectNotOffered,
    /// An indirect request's `indirect_op` is neither READ nor WRITE.
    #[error("indirect operation {0} is neither read nor write")]
    BadIndirectOperation(u8),
    /// A read, write or indirect request without segments.
    #[error("operation {operation} without segments")]
    NoSegments {
        /// The request's operation (`indirect_op` for indirect).
        operation: u8,
    },
    /// More segments than the form allows (11 direct, the back end's cap indirect).
    #[error("{nr_segments} segments, at most {max}")]
    TooManySegments {
        /// Claimed count.
        nr_segments: u16,
        /// The limit that applied.
        max: u16,
    },
    /// A segment whose first sector comes after its last.
    #[error("segment {index}: first_sect {first_sect} > last_sect {last_sect}")]
    SegmentReversed {
        /// Position in the request.
        index: u16,
        /// Claimed first sector.
        first_sect: u8,
        /// Claimed last sector.
        last_sect: u8,
    },
    /// A segment that reaches past its page's last sector (7).
    #[error("segment {index}: last_sect {last_sect} past the page's last sector")]
    SegmentPastPage {
        /// Position in the request.
        index: u16,
        /// Claimed last sector.
        last_sect: u8,
    },
    /// The indirect pages handed over are not the ones the request names.
    #[error("{mapped} indirect pages mapped, the request uses {expected}")]
    IndirectPagesMismatch {
        /// Pages the request's segment count needs.
        expected: usize,
        /// Pages provided.
        mapped: usize,
    },
    /// The sector range does not fit in 64 bits.
    #[error("{nr_sectors} sectors from sector {sector_number} overflow")]
    SectorOverflow {
        /// Start sector.
        sector_number: u64,
        /// Length (for indirect requests, the most its segments can cover).
        nr_sectors: u64,
    },
}

impl RequestError {
    /// The status that answers the request (blkback's choices).
    pub fn status(&self) -> Status {
        match self {
            RequestError::UnknownOperation(_) | RequestError::IndirectNotOffered => {
                Status::NotSupported
            }
            RequestError::BadIndirectOperation(_)
            | RequestError::NoSegments { .. }
            | RequestError::TooManySegments { .. }
            | RequestError::SegmentReversed { .. }
            | RequestError::SegmentPastPage { .. }
            | RequestError::IndirectPagesMismatch { .. }
            | RequestError::SectorOverflow { .. } => Status::Error,
        }
    }
}

/// A request that failed validation, with what is needed to answer it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("request {id:#x}: {error}")]
pub struct RejectedRequest {
    /// The request's `id`.
    pub id: u64,
    /// The operation the response must carry (an indirect request's `indirect_op`).
    pub operation: u8,
    /// Why it was refused.
    pub error: RequestError,
}

impl RejectedRequest {
    /// The response that refuses the request.
    pub fn response(&self) -> Response {
        Response {
            id: self.id,
            operation: self.operation,
            status: self.error.status().raw(),
        }
    }
}

/// A discard of a sector range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discard {
    sector_number: u64,
    nr_sectors: u64,
    secure: bool,
}

impl Discard {
    /// First sector.
    pub fn sector_number(&self) -> u64 {
        self.sector_number
    }

    /// Sectors to discard; `sector_number + nr_sectors` does not overflow.
    pub fn nr_sectors(&self) -> u64 {
        self.nr_sectors
    }

    /// The guest asked for `BLKIF_DISCARD_SECURE`; honour it only if `discard-secure` was offered.
    pub fn secure(&self) -> bool {
        self.secure
    }
}

/// Direction of an indirect request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Device to guest.
    Read,
    /// Guest to device.
    Write,
}

/// A read or write whose segments live in granted indirect pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Indirect {
    direction: Direction,
    sector_number: u64,
    nr_segments: u16,
    indirect_grefs: [u32; 8],
}

impl Indirect {
    /// Read or write.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// First disk sector.
    pub fn sector_number(&self) -> u64 {
        self.sector_number
    }

    /// Segments in the indirect pages (1..=the back end's cap).
    pub fn nr_segments(&self) -> u16 {
        self.nr_segments
    }

    /// Grant refs of the indirect pages in use: ceil(nr_segments / 512) of them.
    pub fn page_refs(&self) -> &[u32] {
        let pages = usize::from(self.nr_segments).div_ceil(SEGMENTS_PER_INDIRECT_PAGE);
        // At most 8 by validation; `min` lets the compiler see it too.
        &self.indirect_grefs[..pages.min(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST)]
    }
}

impl Indirect {
    /// Copies the segments out of the mapped indirect pages (`pages[i]` mapping
    /// `page_refs()[i]`), each entry once, validates them into `out` (cleared first; reuse it
    /// to avoid allocating per request) and returns their total sectors. The range from
    /// `sector_number` cannot overflow: validation bounded it by whole pages.
    pub fn read_segments(
        &self,
        pages: &[IndirectPage],
        out: &mut Vec<DataSegment>,
    ) -> Result<u64, RequestError> {
        let expected = self.page_refs().len();
        if pages.len() != expected {
            return Err(RequestError::IndirectPagesMismatch {
                expected,
                mapped: pages.len(),
            });
        }
        out.clear();
        let mut nr_sectors = 0u64;
        let mut left = usize::from(self.nr_segments);
        let mut index = 0u16;
        for page in pages {
            let count = left.min(SEGMENTS_PER_INDIRECT_PAGE);
            for entry in 0..count {
                let raw = page.read_segment(entry).unwrap_or_default();
                let segment = DataSegment::validate(index, &raw)?;
                nr_sectors += u64::from(segment.nr_sectors());
                out.push(segment);
                index += 1;
            }
            left -= count;
        }
        Ok(nr_sectors)
    }
}

/// What a validated request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Read into 1..=11 segments.
    Read(Segments),
    /// Write from 1..=11 segments.
    Write(Segments),
    /// Barrier, then write 0..=11 segments.
    WriteBarrier(Segments),
    /// Cache flush, then write 0..=11 segments.
    FlushDiskcache(Segments),
    /// Discard a range.
    Discard(Discard),
    /// Read or write with indirect segments.
    Indirect(Indirect),
}

/// A validated request, owned, with no tie to guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    id: u64,
    handle: Option<u16>,
    kind: RequestKind,
}

impl Request {
    /// Validates a copied request against the ABI and `limits`.
    #[inline]
    pub fn validate(raw: &RawRequest, limits: &Limits) -> Result<Request, RejectedRequest> {
        let mut request = Request::PLACEHOLDER;
        Self::validate_into(raw, limits, &mut request)?;
        Ok(request)
    }

    /// As [`validate`](Self::validate), but builds the request in `out` (left unspecified
    /// on error): inline segments are then written where the request is kept instead of
    /// being moved there, which matters on the hot path.
    #[inline]
    pub fn validate_into(
        raw: &RawRequest,
        limits: &Limits,
        out: &mut Request,
    ) -> Result<(), RejectedRequest> {
        let validated = match raw {
            RawRequest::Direct(r) => validate_direct(r, out),
            RawRequest::Discard(r) => validate_discard(r).map(|request| *out = request),
            RawRequest::Indirect(r) => validate_indirect(r, limits).map(|request| *out = request),
            RawRequest::Other { operation, .. } => Err(RequestError::UnknownOperation(*operation)),
        };
        validated.map_err(|error| RejectedRequest {
            id: raw.id(),
            operation: raw.response_operation(),
            error,
        })
    }

    /// A valid request to overwrite: a flush without data.
    pub const PLACEHOLDER: Request = Request {
        id: 0,
        handle: None,
        kind: RequestKind::FlushDiskcache(Segments::EMPTY),
    };

    /// The id to echo.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The virtual device the front end named in a read, write, flush, barrier or indirect
    /// request (Linux ignores it; so may we). `None` for a discard: Linux blkfront never sets
    /// a discard's `handle`, so the field holds whatever the reused shadow request held.
    pub fn handle(&self) -> Option<u16> {
        self.handle
    }

    /// What to do.
    pub fn kind(&self) -> &RequestKind {
        &self.kind
    }

    /// The slot's `BLKIF_OP_*`.
    pub fn operation(&self) -> u8 {
        match self.kind {
            RequestKind::Read(_) => BLKIF_OP_READ,
            RequestKind::Write(_) => BLKIF_OP_WRITE,
            RequestKind::WriteBarrier(_) => BLKIF_OP_WRITE_BARRIER,
            RequestKind::FlushDiskcache(_) => BLKIF_OP_FLUSH_DISKCACHE,
            RequestKind::Discard(_) => BLKIF_OP_DISCARD,
            RequestKind::Indirect(_) => BLKIF_OP_INDIRECT,
        }
    }

    /// The response that answers this request with `status`; it carries the request's
    /// operation, or for an indirect request its `indirect_op`, as blkfront checks.
    pub fn response(&self, status: Status) -> Response {
        let operation = match self.kind {
            RequestKind::Indirect(i) => match i.direction {
                Direction::Read => BLKIF_OP_READ,
                Direction::Write => BLKIF_OP_WRITE,
            },
            _ => self.operation(),
        };
        Response {
            id: self.id,
            operation,
            status: status.raw(),
        }
    }
}

#[inline]
fn validate_direct(r: &RawDirect, out: &mut Request) -> Result<(), RequestError> {
    // Only flushes and barriers may come without data (blkback's `nseg == 0` check). A
    // hand-built `RawDirect` may carry any operation, hence the catch-all.
    let data_required = match r.operation {
        BLKIF_OP_READ | BLKIF_OP_WRITE => true,
        BLKIF_OP_WRITE_BARRIER | BLKIF_OP_FLUSH_DISKCACHE => false,
        other => return Err(RequestError::UnknownOperation(other)),
    };
    let n = usize::from(r.nr_segments);
    if n == 0 && data_required {
        return Err(RequestError::NoSegments {
            operation: r.operation,
        });
    }
    if n > BLKIF_MAX_SEGMENTS_PER_REQUEST {
        return Err(RequestError::TooManySegments {
            nr_segments: r.nr_segments.into(),
            max: BLKIF_MAX_SEGMENTS_PER_REQUEST as u16,
        });
    }
    let segments = Segments {
        sector_number: r.sector_number,
        nr_sectors: 0,
        len: r.nr_segments,
        ..Segments::EMPTY
    };
    out.id = r.id;
    out.handle = Some(r.handle);
    out.kind = match r.operation {
        BLKIF_OP_READ => RequestKind::Read(segments),
        BLKIF_OP_WRITE => RequestKind::Write(segments),
        BLKIF_OP_WRITE_BARRIER => RequestKind::WriteBarrier(segments),
        _ => RequestKind::FlushDiskcache(segments),
    };
    // Fill the segments in place (see `validate_into`). `out.kind` is one of these four, set
    // just above; the `else` only satisfies the pattern.
    let (RequestKind::Read(s)
    | RequestKind::Write(s)
    | RequestKind::WriteBarrier(s)
    | RequestKind::FlushDiskcache(s)) = &mut out.kind
    else {
        return Err(RequestError::UnknownOperation(r.operation));
    };
    for (index, (seg, raw)) in (0u16..).zip(s.seg.iter_mut().zip(&r.seg[..n])) {
        *seg = DataSegment::validate(index, raw)?;
        s.nr_sectors += u64::from(seg.nr_sectors());
    }
    check_range(s.sector_number, s.nr_sectors)
}

fn validate_discard(r: &RawDiscard) -> Result<Request, RequestError> {
    check_range(r.sector_number, r.nr_sectors)?;
    // Undefined flag bits are ignored, as blkback does.
    let discard = Discard {
        sector_number: r.sector_number,
        nr_sectors: r.nr_sectors,
        secure: r.flag & BLKIF_DISCARD_SECURE != 0,
    };
    // `r.handle` is stale in a discard (see `Request::handle`): not part of the request.
    Ok(Request {
        id: r.id,
        handle: None,
        kind: RequestKind::Discard(discard),
    })
}

fn validate_indirect(r: &RawIndirect, limits: &Limits) -> Result<Request, RequestError> {
    let max = limits.max_indirect_segments;
    if max == 0 {
        return Err(RequestError::IndirectNotOffered);
    }
    let direction = match r.indirect_op {
        BLKIF_OP_READ => Direction::Read,
        BLKIF_OP_WRITE => Direction::Write,
        other => return Err(RequestError::BadIndirectOperation(other)),
    };
    if r.nr_segments == 0 {
        return Err(RequestError::NoSegments {
            operation: r.indirect_op,
        });
    }
    if r.nr_segments > max {
        return Err(RequestError::TooManySegments {
            nr_segments: r.nr_segments,
            max,
        });
    }
    // The segments are not known yet; bound the range by full pages so that any valid
    // segments found later fit too.
    check_range(
        r.sector_number,
        u64::from(r.nr_segments) * u64::from(SECTORS_PER_PAGE),
    )?;
    // Refs past the pages in use are not part of the request: keep them zero.
    let pages = usize::from(r.nr_segments).div_ceil(SEGMENTS_PER_INDIRECT_PAGE);
    let mut indirect_grefs = [0; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
    for (dst, src) in indirect_grefs.iter_mut().zip(&r.indirect_grefs).take(pages) {
        *dst = *src;
    }
    let indirect = Indirect {
        direction,
        sector_number: r.sector_number,
        nr_segments: r.nr_segments,
        indirect_grefs,
    };
    Ok(Request {
        id: r.id,
        handle: Some(r.handle),
        kind: RequestKind::Indirect(indirect),
    })
}

fn check_range(sector_number: u64, nr_sectors: u64) -> Result<(), RequestError> {
    match sector_number.checked_add(nr_sectors) {
        Some(_) => Ok(()),
        None => Err(RequestError::SectorOverflow {
            sector_number,
            nr_sectors,
        }),
    }
}
