//! What a validated ring request asks of the pipeline: its kind of work, where on the disk, the
//! segments that carry its data, how the order gate treats it and what the limiter charges.

use blkif::abi::SECTOR_SIZE;
use blkif::{DataSegment, Direction, RequestKind};

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
    /// Discard `nr_sectors` from the request's sector.
    Discard {
        nr_sectors: u64,
        secure: bool,
    },
}

/// A request planned: its work, first sector and, for reads and writes, its segments (in
/// `segments`, kept by the caller to reuse their storage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub work: Work,
    pub sector: u64,
    /// Bytes of data the segments carry.
    pub bytes: u64,
}

impl Plan {
    /// Plans a request whose segments are inline (everything but an indirect request, which
    /// [`Plan::indirect`] plans once its segments are read). Fills `segments`.
    pub fn direct(kind: &RequestKind, segments: &mut Vec<DataSegment>) -> Option<Plan> {
        segments.clear();
        let (work, inline) = match kind {
            RequestKind::Read(s) => (Work::Read, s),
            RequestKind::Write(s) => (Work::Write, s),
            RequestKind::WriteBarrier(s) | RequestKind::FlushDiskcache(s) => {
                let barrier = matches!(kind, RequestKind::WriteBarrier(_));
                let data = !s.segments().is_empty();
                (Work::Flush { barrier, data }, s)
            }
            RequestKind::Discard(d) => {
                return Some(Plan {
                    work: Work::Discard {
                        nr_sectors: d.nr_sectors(),
                        secure: d.secure(),
                    },
                    sector: d.sector_number(),
                    bytes: 0,
                })
            }
            RequestKind::Indirect(_) => return None,
        };
        segments.extend_from_slice(inline.segments());
        Some(Plan {
            work,
            sector: inline.sector_number(),
            bytes: inline.nr_sectors() * SECTOR_SIZE,
        })
    }

    /// Plans an indirect read or write whose `nr_sectors` were read from its indirect pages.
    pub fn indirect(direction: Direction, sector: u64, nr_sectors: u64) -> Plan {
        let work = match direction {
            Direction::Read => Work::Read,
            Direction::Write => Work::Write,
        };
        Plan {
            work,
            sector,
            bytes: nr_sectors * SECTOR_SIZE,
        }
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
            Work::Discard { nr_sectors, .. } => {
                (limiter::Op::Discard, nr_sectors.saturating_mul(SECTOR_SIZE))
            }
        };
        limiter::Request { id, op, bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blkif::abi::{Segment, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER};
    use blkif::{Limits, RawDirect, RawRequest, Request};

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
        assert_eq!((plan.sector, plan.bytes), (100, 8 * 512));
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
}
