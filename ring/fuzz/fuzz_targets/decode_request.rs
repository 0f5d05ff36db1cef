//! One request slot of arbitrary bytes, in a protocol and with an indirect cap chosen by the
//! input, taken by the back end: it never panics, a validated request is in range, and a
//! refused one is answered with the id found in the slot.
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;

use blkif::abi::Segment;
use blkif::mock::MockRing;
use blkif::{IndirectPage, Limits, Protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[selector, cap_lo, cap_hi], slot)) = data.split_first_chunk::<3>() else {
        return;
    };
    let protocol =
        [Protocol::Native, Protocol::X86_32, Protocol::X86_64][usize::from(selector % 3)];
    let cap = u32::from(u16::from_le_bytes([cap_lo, cap_hi])) % 4097;
    let limits = Limits::new(cap).unwrap();
    let mut ring = MockRing::new(0, protocol, limits).unwrap();
    // The front end produces one request, whose slot then holds the input.
    let placeholder = blkif::RawRequest::Other {
        operation: 0xff,
        id: 0,
    };
    ring.front.push_request(&placeholder).unwrap();
    ring.write_slot(0, slot).unwrap();
    ring.front.push_requests_and_check_notify();

    let mut requests = ring.back.requests().unwrap();
    let taken = requests.next().unwrap();
    assert!(requests.next().is_none());
    let response = match taken {
        Ok(request) => {
            common::assert_in_range(&request, limits.max_indirect_segments());
            if let blkif::RequestKind::Indirect(indirect) = request.kind() {
                read_indirect_pages(indirect, slot);
            }
            request.response(blkif::Status::Okay)
        }
        Err(rejected) => {
            assert_ne!(rejected.error.status(), blkif::Status::Okay);
            rejected.response()
        }
    };
    ring.back.push_response(&response).unwrap();
    ring.back.push_responses_and_check_notify();
    let echoed = ring.front.responses().unwrap().next().unwrap();
    assert_eq!(echoed, response);
});

/// Fills the request's indirect pages with the input bytes, repeated, and reads them back.
fn read_indirect_pages(indirect: &blkif::Indirect, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let pages: Vec<IndirectPage> = indirect
        .page_refs()
        .iter()
        .map(|_| IndirectPage::allocate())
        .collect();
    for (n, page) in pages.iter().enumerate() {
        for i in 0..512 {
            let at = (n * 512 + i) * 8;
            let b = |k: usize| bytes[(at + k) % bytes.len()];
            let segment = Segment::new(u32::from_le_bytes([b(0), b(1), b(2), b(3)]), b(4), b(5));
            assert!(page.write_segment(i, &segment));
        }
    }
    let mut out = Vec::new();
    if let Ok(nr_sectors) = indirect.read_segments(&pages, &mut out) {
        assert_eq!(out.len(), usize::from(indirect.nr_segments()));
        assert!(out
            .iter()
            .all(|s| s.first_sect() <= s.last_sect() && s.last_sect() < 8));
        let total: u64 = out.iter().map(|s| u64::from(s.nr_sectors())).sum();
        assert_eq!(total, nr_sectors);
    }
}
