//! Request builders and invariant checks shared by the integration tests.
#![allow(dead_code)] // each test file uses its own subset

use blkif::abi::{self, Segment};
use blkif::{RawDirect, RawDiscard, RawIndirect, RawRequest, Request, RequestKind};

pub const PROTOCOLS: [blkif::Protocol; 3] = [
    blkif::Protocol::Native,
    blkif::Protocol::X86_32,
    blkif::Protocol::X86_64,
];

/// A direct request with `segments` (at most 11) and every other slot entry zero.
pub fn direct(operation: u8, id: u64, sector_number: u64, segments: &[Segment]) -> RawRequest {
    let mut seg = [Segment::default(); abi::BLKIF_MAX_SEGMENTS_PER_REQUEST];
    seg[..segments.len()].copy_from_slice(segments);
    RawRequest::Direct(RawDirect {
        operation,
        nr_segments: segments.len() as u8,
        handle: 0x5100,
        id,
        sector_number,
        seg,
    })
}

/// `n` whole-page segments with grant refs from `first_gref`.
pub fn pages(n: usize, first_gref: u32) -> Vec<Segment> {
    (0..n as u32)
        .map(|i| Segment::new(first_gref + i, 0, 7))
        .collect()
}

pub fn discard(id: u64, sector_number: u64, nr_sectors: u64, flag: u8) -> RawRequest {
    RawRequest::Discard(RawDiscard {
        flag,
        handle: 0x5100,
        id,
        sector_number,
        nr_sectors,
    })
}

pub fn indirect(id: u64, indirect_op: u8, nr_segments: u16, sector_number: u64) -> RawRequest {
    RawRequest::Indirect(RawIndirect {
        indirect_op,
        nr_segments,
        handle: 0x5100,
        id,
        sector_number,
        indirect_grefs: [101, 102, 103, 104, 105, 106, 107, 108],
    })
}

/// Asserts that a validated request has every field in range.
pub fn assert_in_range(request: &Request, max_indirect: u16) {
    match request.kind() {
        RequestKind::Read(s) | RequestKind::Write(s) => {
            assert!((1..=11).contains(&s.segments().len()));
            assert_segments(s);
        }
        RequestKind::WriteBarrier(s) | RequestKind::FlushDiskcache(s) => {
            assert!(s.segments().len() <= 11);
            assert_segments(s);
        }
        RequestKind::Discard(d) => {
            assert!(d.sector_number().checked_add(d.nr_sectors()).is_some());
        }
        RequestKind::Indirect(i) => {
            assert!(i.nr_segments() >= 1 && i.nr_segments() <= max_indirect);
            assert_eq!(
                i.page_refs().len(),
                usize::from(i.nr_segments()).div_ceil(512)
            );
            assert!(i
                .sector_number()
                .checked_add(u64::from(i.nr_segments()) * 8)
                .is_some());
        }
    }
}

fn assert_segments(s: &blkif::Segments) {
    let mut total = 0u64;
    for seg in s.segments() {
        assert!(seg.first_sect() <= seg.last_sect() && seg.last_sect() <= 7);
        assert!(seg.offset() + seg.len() <= 4096);
        total += u64::from(seg.nr_sectors());
    }
    assert_eq!(total, s.nr_sectors());
    assert!(s.sector_number().checked_add(total).is_some());
}
