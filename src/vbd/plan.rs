//! What a validated ring request asks of the pipeline: its kind of work, where on the disk, the
//! segments that carry its data, how the order gate treats it and what the limiter charges.
//!
//! Validation bounds a request in sectors only; its byte range is computed here, checked, so
//! that a sector near `u64::MAX` is refused (BLKIF_RSP_ERROR) instead of overflowing later.

use blkif::abi::SECTOR_SIZE;
use blkif::{DataSegment, Direction, RequestKind};
use thiserror::Error;

use crate::limiter;
use crate::storage::Class;

/// The work of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Read,
    Write,
    /// A flush (or barrier): fdatasync; with data, as blkback's PREFLUSH write and as blkfront
    /// sends a FUA write: flush, write, flush, so the data is durable when answered.
    Flush {
        barrier: bool,
        data: bool,
    },
    /// Discard `len` bytes from the request's offset.
    Discard {
        len: u64,
        secure: bool,
    },
}

/// Why a request cannot be planned; it is answered BLKIF_RSP_ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PlanError {
    /// An indirect request handed to [`Plan::direct`].
    #[error("an indirect request has no inline segments")]
    Indirect,
    /// The byte range does not fit in 64 bits.
    #[error("{nr_sectors} sectors from sector {sector} pass 2^64 bytes")]
    ByteOverflow { sector: u64, nr_sectors: u64 },
}

/// A request planned: its work, where it starts and, for reads and writes, its segments (in
/// `segments`, kept by the caller to reuse their storage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub work: Work,
    /// Byte offset on the disk; `offset + bytes` (or a discard's `len`) fits in a u64.
    pub offset: u64,
    /// Bytes of data the segments carry.
    pub bytes: u64,
}

impl Plan {
    /// A plan to overwrite: reads nothing.
    pub const PLACEHOLDER: Plan = Plan {
        work: Work::Read,
        offset: 0,
        bytes: 0,
    };

    /// Plans a request whose segments are inline (everything but an indirect request, which
    /// [`Plan::indirect`] plans once its segments are read). Fills `segments`.
    pub fn direct(kind: &RequestKind, segments: &mut Vec<DataSegment>) -> Result<Plan, PlanError> {
        segments.clear();
        let (work, inline) = match kind {
            RequestKind::Read(s) => (Work::Read, s),
            RequestKind::Write(s) => (Work::Write, s),
            RequestKind::WriteBarrier(s) | RequestKind::FlushDiskcache(s) => {
                let barrier = matches!(kind, RequestKind::WriteBarrier(_));
                let data = !s.segments().is_empty();
                if !data {
                    // No data, no position: Linux's blkfront sends its empty flush with the
                    // sector of a request never positioned, (sector_t)-1, and blkback looks at
                    // no sector without segments. Refused, blkfront turns the cache off quietly.
                    return Ok(Plan {
                        work: Work::Flush { barrier, data },
                        offset: 0,
                        bytes: 0,
                    });
                }
                (Work::Flush { barrier, data }, s)
            }
            RequestKind::Discard(d) => {
                let (offset, len) = byte_range(d.sector_number(), d.nr_sectors())?;
                let secure = d.secure();
                return Ok(Plan {
                    work: Work::Discard { len, secure },
                    offset,
                    bytes: 0,
                });
            }
            RequestKind::Indirect(_) => return Err(PlanError::Indirect),
        };
        let (offset, bytes) = byte_range(inline.sector_number(), inline.nr_sectors())?;
        segments.extend_from_slice(inline.segments());
        Ok(Plan {
            work,
            offset,
            bytes,
        })
    }

    /// Plans an indirect read or write whose `nr_sectors` were read from its indirect pages.
    pub fn indirect(direction: Direction, sector: u64, nr_sectors: u64) -> Result<Plan, PlanError> {
        let work = match direction {
            Direction::Read => Work::Read,
            Direction::Write => Work::Write,
        };
        let (offset, bytes) = byte_range(sector, nr_sectors)?;
        Ok(Plan {
            work,
            offset,
            bytes,
        })
    }

    /// How the order gate treats it.
    pub fn class(&self) -> Class {
        match self.work {
            Work::Flush { barrier: true, .. } => Class::Barrier,
            Work::Flush { barrier: false, .. } => Class::Flush,
            _ => Class::Plain,
        }
    }

    /// The request as the limiter prices it, under the caller's `id`.
    pub fn limiter_request(&self, id: u64) -> limiter::Request {
        let (op, bytes) = match self.work {
            Work::Read => (limiter::Op::Read, self.bytes),
            Work::Write => (limiter::Op::Write, self.bytes),
            Work::Flush { .. } => (limiter::Op::Flush, self.bytes),
            Work::Discard { len, .. } => (limiter::Op::Discard, len),
        };
        limiter::Request { id, op, bytes }
    }
}

/// The byte offset and length of `nr_sectors` from `sector`, if the range ends below 2^64.
fn byte_range(sector: u64, nr_sectors: u64) -> Result<(u64, u64), PlanError> {
    let overflow = PlanError::ByteOverflow { sector, nr_sectors };
    let offset = sector.checked_mul(SECTOR_SIZE).ok_or(overflow)?;
    let len = nr_sectors.checked_mul(SECTOR_SIZE).ok_or(overflow)?;
    offset.checked_add(len).ok_or(overflow)?;
    Ok((offset, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use blkif::abi::{Segment, BLKIF_OP_READ, BLKIF_OP_WRITE};
    use blkif::abi::{BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_WRITE_BARRIER};
    use blkif::{Limits, RawDirect, RawDiscard, RawRequest, Request};

    fn direct(operation: u8, sector: u64, segs: &[(u8, u8)]) -> RequestKind {
        let mut seg = [Segment::default(); 11];
        for (i, &(first_sect, last_sect)) in segs.iter().enumerate() {
            seg[i] = Segment {
                gref: 7,
                first_sect,
                last_sect,
                ..Segment::default()
            };
        }
        let raw = RawRequest::Direct(RawDirect {
            operation,
            nr_segments: segs.len() as u8,
            handle: 0,
            id: 1,
            sector_number: sector,
            seg,
        });
        *Request::validate(&raw, &Limits::DIRECT_ONLY)
            .unwrap()
            .kind()
    }

    #[test]
    fn writes_carry_their_sectors_and_segments() {
        let mut segments = Vec::new();
        let kind = direct(BLKIF_OP_WRITE, 100, &[(1, 7), (0, 0)]);
        let plan = Plan::direct(&kind, &mut segments).unwrap();
        assert_eq!(plan.work, Work::Write);
        assert_eq!((plan.offset, plan.bytes), (100 * 512, 8 * 512));
        assert_eq!(segments.len(), 2);
        assert_eq!(plan.class(), Class::Plain);
        let charged = plan.limiter_request(9);
        assert_eq!(
            (charged.id, charged.op, charged.bytes),
            (9, limiter::Op::Write, 4096)
        );
    }

    #[test]
    fn flushes_and_barriers_are_ordered_and_charged_their_data() {
        let mut segments = Vec::new();
        let flush = Plan::direct(&direct(BLKIF_OP_FLUSH_DISKCACHE, 0, &[]), &mut segments);
        let flush = flush.unwrap();
        assert_eq!(
            flush.work,
            Work::Flush {
                barrier: false,
                data: false
            }
        );
        assert_eq!(flush.class(), Class::Flush);
        assert_eq!(flush.limiter_request(0).bytes, 0);
        let barrier = Plan::direct(&direct(BLKIF_OP_WRITE_BARRIER, 8, &[(0, 7)]), &mut segments);
        let barrier = barrier.unwrap();
        assert_eq!(
            barrier.work,
            Work::Flush {
                barrier: true,
                data: true
            }
        );
        assert_eq!(barrier.class(), Class::Barrier);
        assert_eq!(barrier.limiter_request(0).op, limiter::Op::Flush);
        assert_eq!(barrier.limiter_request(0).bytes, 4096);
    }

    /// Linux's blkfront positions an empty flush at sector (sector_t)-1 (seen under real Xen:
    /// refused, it turned the guest's write cache off).
    #[test]
    fn an_empty_flush_or_barrier_is_planned_whatever_its_sector() {
        let mut segments = Vec::new();
        for operation in [BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_WRITE_BARRIER] {
            let plan = Plan::direct(&direct(operation, u64::MAX, &[]), &mut segments)
                .unwrap_or_else(|e| panic!("operation {operation} at sector 2^64-1: {e:?}"));
            assert!(matches!(plan.work, Work::Flush { data: false, .. }));
            assert_eq!((plan.offset, plan.bytes), (0, 0));
            assert_eq!(plan.limiter_request(0).op, limiter::Op::Flush);
        }
    }

    /// Regression: `sector * 512` overflowed (a panic in debug builds, a wrapped offset in
    /// release builds) for a sector near `u64::MAX`, which validation lets through because the
    /// range fits in sectors.
    #[test]
    fn a_byte_range_past_two_to_the_64_is_refused_not_wrapped() {
        let mut segments = Vec::new();
        for sector in [u64::MAX - 8, u64::MAX / 512 + 1, u64::MAX / 512 - 3] {
            let kind = direct(BLKIF_OP_READ, sector, &[(0, 7)]);
            assert_eq!(
                Plan::direct(&kind, &mut segments),
                Err(PlanError::ByteOverflow {
                    sector,
                    nr_sectors: 8
                }),
                "read at sector {sector}"
            );
        }
        // A page that ends below 2^64 bytes still plans.
        let last = u64::MAX / 512 - 8;
        let plan = Plan::direct(&direct(BLKIF_OP_READ, last, &[(0, 7)]), &mut segments);
        assert_eq!(plan.unwrap().offset, last * 512);

        let discard = RawRequest::Discard(RawDiscard {
            flag: 0,
            handle: 0,
            id: 2,
            sector_number: u64::MAX / 512,
            nr_sectors: 1,
        });
        let discard = *Request::validate(&discard, &Limits::DIRECT_ONLY)
            .unwrap()
            .kind();
        assert!(matches!(
            Plan::direct(&discard, &mut segments),
            Err(PlanError::ByteOverflow { .. })
        ));
        assert_eq!(
            Plan::indirect(Direction::Write, u64::MAX / 512, 1),
            Err(PlanError::ByteOverflow {
                sector: u64::MAX / 512,
                nr_sectors: 1
            })
        );
        assert_eq!(
            Plan::indirect(Direction::Write, 8, 16).map(|p| (p.offset, p.bytes)),
            Ok((4096, 8192))
        );
    }
}
