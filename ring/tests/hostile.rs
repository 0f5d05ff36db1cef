//! A front end that lies: indices out of range, slots rewritten after they were taken, and
//! slots flipping while the back end copies them.
#![cfg(test)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use blkif::abi::{BLKIF_OP_READ, BLKIF_OP_WRITE};
use blkif::mock::MockRing;
use blkif::{
    BackRing, FrontError, Limits, Protocol, RequestKind, RingError, RingIndex, RingState,
    SharedRing, Status,
};
use common::{direct, pages, PROTOCOLS};

fn ring(protocol: Protocol) -> MockRing {
    MockRing::new(0, protocol, Limits::DIRECT_ONLY).unwrap()
}

#[test]
fn more_than_a_ring_of_requests_breaks_the_ring_for_good() {
    for protocol in PROTOCOLS {
        let mut ring = ring(protocol);
        ring.set_index(RingIndex::ReqProd, 33);
        let err = ring.back.requests().unwrap_err();
        assert_eq!(
            err,
            RingError::RequestOverflow {
                req_prod: 33,
                req_cons: 0,
                limit: 32,
                size: 32
            }
        );
        assert!(err.disconnects());
        assert_eq!(
            ring.back.state(),
            RingState {
                req_cons: 0,
                rsp_prod_pvt: 0
            }
        );
        // Fixing the index does not revive it.
        ring.set_index(RingIndex::ReqProd, 1);
        assert_eq!(ring.back.requests().unwrap_err(), RingError::Broken);
        assert_eq!(ring.back.final_check_for_requests(), Err(RingError::Broken));
        assert_eq!(
            ring.back.push_response(&blkif::Response {
                id: 0,
                operation: 0,
                status: 0
            }),
            Err(RingError::Broken)
        );
    }
}

#[test]
fn exactly_a_ring_is_read_and_no_more() {
    let mut ring = ring(Protocol::X86_64);
    ring.set_index(RingIndex::ReqProd, 32);
    // Zeroed slots are reads without segments: all refused, all answerable.
    let taken: Vec<_> = ring.back.requests().unwrap().collect();
    assert_eq!(taken.len(), 32);
    assert!(taken.iter().all(Result::is_err));
    // Unanswered, the ring is full: one more published request is an overflow.
    ring.set_index(RingIndex::ReqProd, 33);
    assert!(matches!(
        ring.back.requests(),
        Err(RingError::RequestOverflow { .. })
    ));
}

#[test]
fn answered_slots_can_be_published_again() {
    let mut ring = ring(Protocol::X86_32);
    ring.set_index(RingIndex::ReqProd, 32);
    let taken: Vec<_> = ring.back.requests().unwrap().collect();
    for t in &taken {
        ring.back
            .push_response(&t.as_ref().unwrap_err().response())
            .unwrap();
    }
    assert_eq!(
        ring.back
            .push_response(&taken[0].as_ref().unwrap_err().response()),
        Err(RingError::NoRequestOutstanding)
    );
    ring.set_index(RingIndex::ReqProd, 64);
    assert_eq!(ring.back.requests().unwrap().len(), 32);
}

#[test]
fn req_prod_moving_backwards_breaks_the_ring() {
    let mut ring = ring(Protocol::X86_64);
    for id in 0..4 {
        ring.front
            .push_request(&direct(BLKIF_OP_READ, id, 0, &pages(1, 1)))
            .unwrap();
    }
    ring.front.push_requests_and_check_notify();
    assert_eq!(ring.back.requests().unwrap().count(), 4);
    ring.set_index(RingIndex::ReqProd, 2);
    assert!(matches!(
        ring.back.requests(),
        Err(RingError::RequestOverflow { req_prod: 2, .. })
    ));
}

#[test]
fn a_garbage_req_prod_seen_by_the_final_check_is_reported_by_the_next_take() {
    let mut ring = ring(Protocol::X86_64);
    ring.set_index(RingIndex::ReqProd, 0x8000_0000);
    assert_eq!(ring.back.final_check_for_requests(), Ok(true));
    assert!(ring.back.requests().is_err());
}

#[test]
fn attach_refuses_a_ring_already_overflowing_and_restore_checks_state() {
    let mem = SharedRing::allocate(1).unwrap();
    mem.header(RingIndex::RspProd).store(1000, Ordering::SeqCst);
    mem.header(RingIndex::ReqProd)
        .store(1000 + 65, Ordering::SeqCst);
    let attach = BackRing::attach(mem.clone(), Protocol::X86_64, Limits::DIRECT_ONLY);
    assert!(matches!(
        attach,
        Err(RingError::RequestOverflow { size: 64, .. })
    ));

    mem.header(RingIndex::ReqProd)
        .store(1000 + 64, Ordering::SeqCst);
    let back = BackRing::attach(mem.clone(), Protocol::X86_64, Limits::DIRECT_ONLY).unwrap();
    assert_eq!(
        back.state(),
        RingState {
            req_cons: 1000,
            rsp_prod_pvt: 1000
        }
    );

    let restore = |req_cons, rsp_prod_pvt| {
        BackRing::restore(
            mem.clone(),
            Protocol::X86_64,
            Limits::DIRECT_ONLY,
            RingState {
                req_cons,
                rsp_prod_pvt,
            },
        )
        .map(|b| b.state())
    };
    assert_eq!(
        restore(1010, 1002),
        Ok(RingState {
            req_cons: 1010,
            rsp_prod_pvt: 1002
        })
    );
    assert_eq!(
        restore(1064, 1000),
        Ok(RingState {
            req_cons: 1064,
            rsp_prod_pvt: 1000
        })
    );
    // More taken than a ring, responses behind the published index, or ahead by more than a ring.
    assert!(matches!(
        restore(1065, 1000),
        Err(RingError::InvalidState { .. })
    ));
    assert!(matches!(
        restore(1000, 999),
        Err(RingError::InvalidState { .. })
    ));
    assert!(matches!(
        restore(1070, 1065),
        Err(RingError::InvalidState { .. })
    ));
}

#[test]
fn the_front_end_refuses_more_responses_than_requests() {
    let mut ring = ring(Protocol::X86_64);
    ring.front
        .push_request(&direct(BLKIF_OP_READ, 1, 0, &pages(1, 1)))
        .unwrap();
    ring.front.push_requests_and_check_notify();
    ring.set_index(RingIndex::RspProd, 2);
    assert_eq!(
        ring.front.responses().unwrap_err(),
        FrontError::ResponseOverflow {
            rsp_prod: 2,
            rsp_cons: 0,
            outstanding: 1
        }
    );
}

#[test]
fn a_slot_rewritten_after_the_take_changes_nothing() {
    for protocol in PROTOCOLS {
        let mut ring = ring(protocol);
        ring.front
            .push_request(&direct(BLKIF_OP_WRITE, 42, 8, &pages(2, 500)))
            .unwrap();
        ring.front.push_requests_and_check_notify();
        let request = ring.back.requests().unwrap().next().unwrap().unwrap();

        // The guest now rewrites the slot: another id, 200 segments, bad sectors.
        ring.write_slot(0, &vec![0xc8; protocol.slot_size()])
            .unwrap();

        // The back end acts on its copy: the same validated request...
        assert_eq!(request.id(), 42);
        let RequestKind::Write(s) = request.kind() else {
            panic!("{request:?}")
        };
        assert_eq!((s.sector_number(), s.segments().len()), (8, 2));
        assert_eq!(s.segments()[1].gref(), 501);
        // ...answered with the id and operation it validated.
        ring.back
            .push_response(&request.response(Status::Okay))
            .unwrap();
        ring.back.push_responses_and_check_notify();
        let response = ring.front.responses().unwrap().next().unwrap();
        assert_eq!(
            (response.id, response.operation, response.status),
            (42, BLKIF_OP_WRITE, 0)
        );
        // And the rewritten slot is never read again as a request.
        assert_eq!(ring.back.requests().unwrap().len(), 0);
    }
}

/// What one take of the flipping slot found.
#[derive(Default, Debug)]
struct Outcomes {
    /// The valid request, exactly.
    valid: u64,
    /// Pure garbage, refused as such.
    refused: u64,
    /// A mix of both: refused for another reason, or passed as a different request.
    torn: u64,
}

impl Outcomes {
    fn all_seen(&self) -> bool {
        self.valid > 0 && self.refused > 0 && self.torn > 0
    }
}

#[test]
fn a_slot_flipping_during_the_copy_never_yields_an_invalid_request() {
    // A writer thread flips slot bytes between a valid 11-segment read and garbage (255
    // segments, last_sect 200) while the back end takes the slot again and again. Whatever
    // mix of the two a copy catches, a request that passes validation is in range. The
    // writer holds each state for a while, so clean copies of both happen too, and the test
    // goes on until it has seen the valid request, the garbage refused and a torn copy: a
    // race that never happened would prove nothing.
    let protocol = Protocol::X86_64;
    let mut ring = ring(protocol);
    let valid = direct(BLKIF_OP_READ, 7, 0, &pages(11, 1));
    let expected = blkif::Request::validate(&valid, &Limits::DIRECT_ONLY).unwrap();
    ring.front.push_request(&valid).unwrap();
    ring.front.push_requests_and_check_notify();
    let good = ring.read_slot(0);
    let bad = vec![0xc8u8; protocol.slot_size()];
    let garbage = blkif::RequestError::UnknownOperation(0xc8);
    let memory = ring.memory().clone();
    let offset = ring.slot_offset(0);
    let stop = AtomicBool::new(false);
    let mut seen = Outcomes::default();

    std::thread::scope(|s| {
        s.spawn(|| {
            let hold = || (0..200).for_each(|_| std::hint::spin_loop());
            while !stop.load(Ordering::Relaxed) {
                memory.write_bytes(offset, &bad).unwrap();
                hold();
                memory.write_bytes(offset, &good).unwrap();
                hold();
            }
        });
        let mut takes = 0u64;
        while takes < 20_000 || (!seen.all_seen() && takes < 50_000_000) {
            takes += 1;
            // Publish slot 0 again to a fresh back end: the same bytes, copied anew.
            ring.set_index(RingIndex::RspProd, 0);
            ring.set_index(RingIndex::ReqProd, 1);
            let state = RingState {
                req_cons: 0,
                rsp_prod_pvt: 0,
            };
            let mut back =
                BackRing::restore(memory.clone(), protocol, Limits::DIRECT_ONLY, state).unwrap();
            match back.requests().unwrap().next().unwrap() {
                Ok(request) if request == expected => seen.valid += 1,
                Ok(request) => {
                    common::assert_in_range(&request, 0);
                    seen.torn += 1;
                }
                Err(r) if r.error == garbage && r.id == 0xc8c8_c8c8_c8c8_c8c8 => seen.refused += 1,
                Err(_) => seen.torn += 1,
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        seen.all_seen(),
        "the race never showed every outcome: {seen:?}"
    );
}
