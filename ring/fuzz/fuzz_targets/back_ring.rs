//! A back end over a ring page of arbitrary bytes, driven by a script of operations from the
//! input while the "guest" rewrites indices and slots between them: no panic, no request out
//! of range, never more taken than the ring holds.
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::sync::atomic::Ordering;

use blkif::{BackRing, Limits, Protocol, RingIndex, SharedRing, Status};
use libfuzzer_sys::fuzz_target;

const INDICES: [RingIndex; 4] = [
    RingIndex::ReqProd,
    RingIndex::ReqEvent,
    RingIndex::RspProd,
    RingIndex::RspEvent,
];

fuzz_target!(|data: &[u8]| {
    let Some((&[selector], rest)) = data.split_first_chunk::<1>() else {
        return;
    };
    let (page, script) = rest.split_at(rest.len().min(4096));
    let protocol =
        [Protocol::Native, Protocol::X86_32, Protocol::X86_64][usize::from(selector % 3)];
    let limits = Limits::new(256).unwrap();
    let mem = SharedRing::allocate(0).unwrap();
    mem.write_bytes(0, page).unwrap();
    let Ok(mut back) = BackRing::attach(mem.clone(), protocol, limits) else {
        return;
    };
    let mut unanswered = Vec::new();
    for step in script.chunks(5) {
        let (&op, arg) = step.split_first().unwrap();
        let value = arg.iter().fold(0u32, |v, &b| v << 8 | u32::from(b));
        match op % 6 {
            0 => {
                let Ok(requests) = back.requests() else {
                    continue;
                };
                for taken in requests {
                    match taken {
                        Ok(request) => {
                            common::assert_in_range(&request, 256);
                            unanswered.push(request.response(Status::Okay));
                        }
                        Err(rejected) => unanswered.push(rejected.response()),
                    }
                }
                assert!(back.outstanding() <= back.size());
            }
            1 => {
                if let Some(response) = unanswered.pop() {
                    back.push_response(&response).unwrap();
                }
            }
            2 => {
                back.push_responses_and_check_notify();
            }
            3 => {
                let _ = back.final_check_for_requests();
            }
            4 => mem
                .header(INDICES[usize::from(op >> 6)])
                .store(value, Ordering::SeqCst),
            _ => {
                let offset = usize::from(op) * 16 % 4096;
                let _ = mem.write_bytes(offset, &value.to_le_bytes());
            }
        }
    }
});
