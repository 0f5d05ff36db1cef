//! Indirect requests end to end: the request through the ring, then its segments copied out
//! of the indirect pages and validated.
#![cfg(test)]

mod common;

use blkif::abi::{Segment, BLKIF_OP_WRITE};
use blkif::mock::MockRing;
use blkif::{IndirectPage, Limits, RequestError, RequestKind, SharedRing, SharedRingError};
use common::{indirect, PROTOCOLS};

/// Pages holding `n` segments: entry i grants page 1000 + i, sectors (i % 8)..=7.
fn pages_with(n: usize) -> Vec<IndirectPage> {
    let pages: Vec<IndirectPage> = (0..n.div_ceil(512))
        .map(|_| IndirectPage::allocate())
        .collect();
    for i in 0..n {
        let segment = Segment::new(1000 + i as u32, (i % 8) as u8, 7);
        assert!(pages[i / 512].write_segment(i % 512, &segment));
    }
    pages
}

fn take(nr_segments: u16) -> blkif::Indirect {
    let mut ring = MockRing::new(0, PROTOCOLS[1], Limits::new(1024).unwrap()).unwrap();
    ring.front
        .push_request(&indirect(1, BLKIF_OP_WRITE, nr_segments, 64))
        .unwrap();
    ring.front.push_requests_and_check_notify();
    let request = ring.back.requests().unwrap().next().unwrap().unwrap();
    match request.kind() {
        RequestKind::Indirect(i) => *i,
        other => panic!("{other:?}"),
    }
}

#[test]
fn segments_are_read_from_every_page_in_order() {
    let request = take(600);
    let pages = pages_with(600);
    let mut out = Vec::new();
    let nr_sectors = request.read_segments(&pages, &mut out).unwrap();
    assert_eq!(out.len(), 600);
    assert_eq!(
        (out[0].gref(), out[513].gref(), out[599].gref()),
        (1000, 1513, 1599)
    );
    assert_eq!(out[513].first_sect(), 1);
    let expected: u64 = (0..600u64).map(|i| 8 - i % 8).sum();
    assert_eq!(nr_sectors, expected);
}

#[test]
fn a_bad_entry_in_a_later_page_is_reported_with_its_index() {
    let request = take(600);
    let pages = pages_with(600);
    pages[1].write_segment(555 - 512, &Segment::new(7, 6, 2));
    let mut out = Vec::new();
    assert_eq!(
        request.read_segments(&pages, &mut out),
        Err(RequestError::SegmentReversed {
            index: 555,
            first_sect: 6,
            last_sect: 2
        })
    );
}

#[test]
fn the_pages_must_be_the_ones_the_request_uses() {
    let request = take(600);
    let mut out = Vec::new();
    let err = request
        .read_segments(&pages_with(300), &mut out)
        .unwrap_err();
    assert_eq!(
        err,
        RequestError::IndirectPagesMismatch {
            expected: 2,
            mapped: 1
        }
    );
    assert_eq!(err.status(), blkif::Status::Error);
    // Entries past the request's count are never read, whatever they hold.
    let request = take(3);
    let pages = pages_with(3);
    pages[0].write_segment(3, &Segment::new(0, 9, 9));
    assert_eq!(request.read_segments(&pages, &mut out), Ok(8 + 7 + 6));
}

#[test]
fn entries_past_a_page_do_not_exist() {
    let page = IndirectPage::allocate();
    assert!(page.read_segment(511).is_some());
    assert!(page.read_segment(512).is_none());
    assert!(!page.write_segment(512, &Segment::default()));
}

#[test]
fn an_indirect_page_is_a_one_page_view_built_without_unsafe() {
    // Before, `IndirectPage::new` took a raw pointer and was a second `unsafe` entry; now
    // it takes a view and refuses one of more than a page.
    let ring = SharedRing::allocate(1).unwrap();
    assert_eq!(
        IndirectPage::new(ring).unwrap_err(),
        SharedRingError::NotOnePage(1)
    );
    let view = SharedRing::allocate(0).unwrap();
    let page = IndirectPage::new(view.clone()).unwrap();
    assert!(page.write_segment(5, &Segment::new(77, 1, 6)));
    // The entry went into the viewed page: 5 * 8 bytes in.
    let mut bytes = [0; 8];
    view.read_bytes(40, &mut bytes).unwrap();
    assert_eq!(bytes, [77, 0, 0, 0, 1, 6, 0, 0]);
    assert_eq!(page.read_segment(5), Some(Segment::new(77, 1, 6)));
}
