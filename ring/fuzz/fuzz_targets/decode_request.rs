//! One request slot of arbitrary bytes, in a protocol and with an indirect cap chosen by the
//! input, taken by the back end: it never panics, a validated request is in range, and a
//! refused one is answered with the id found in the slot.
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;

use blkif::mock::MockRing;
use blkif::{Limits, Protocol};
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
