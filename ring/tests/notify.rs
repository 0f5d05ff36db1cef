//! Notification decisions and event indices on hand-worked cases, including free-running
//! indices that wrap past `u32::MAX`.
#![cfg(test)]

mod common;

use blkif::abi::{BLKIF_OP_READ, BLKIF_OP_WRITE};
use blkif::mock::MockRing;
use blkif::{Limits, Protocol, RingIndex, RingState, Status};
use common::{direct, pages, PROTOCOLS};

fn push(ring: &mut MockRing, n: u64) {
    for id in 0..n {
        ring.front
            .push_request(&direct(BLKIF_OP_READ, id, 0, &pages(1, 1)))
            .unwrap();
    }
}

/// Takes every published request and answers it (unpublished).
fn answer_all(ring: &mut MockRing) -> usize {
    let taken: Vec<_> = ring.back.requests().unwrap().collect();
    for request in &taken {
        let request = request.as_ref().unwrap();
        ring.back
            .push_response(&request.response(Status::Okay))
            .unwrap();
    }
    taken.len()
}

fn check_at(start: u32) {
    let mut ring = MockRing::starting_at(0, Protocol::X86_64, Limits::DIRECT_ONLY, start).unwrap();
    assert_eq!(ring.index(RingIndex::ReqEvent), start.wrapping_add(1));

    // req_event = start+1: the first push crosses it (new-event 0 < new-old 1).
    push(&mut ring, 1);
    assert!(ring.front.push_requests_and_check_notify());
    // Nothing new since: new-event 0 < new-old 0 is false.
    assert!(!ring.front.push_requests_and_check_notify());
    // Two more while the back end has not re-armed: new-event 2 < 2 is false.
    push(&mut ring, 2);
    assert!(!ring.front.push_requests_and_check_notify());

    assert_eq!(answer_all(&mut ring), 3);
    // Re-arm: nothing waits, so req_event becomes req_cons + 1.
    assert!(!ring.back.final_check_for_requests().unwrap());
    assert_eq!(ring.index(RingIndex::ReqEvent), start.wrapping_add(4));
    push(&mut ring, 2);
    assert!(ring.front.push_requests_and_check_notify());
    // With work waiting the final check reports it and leaves req_event alone.
    assert!(ring.back.final_check_for_requests().unwrap());
    assert_eq!(ring.index(RingIndex::ReqEvent), start.wrapping_add(4));

    // Responses: rsp_event = start+1; three responses cross it once.
    assert!(ring.back.push_responses_and_check_notify());
    assert!(!ring.back.push_responses_and_check_notify());
    assert_eq!(ring.front.responses().unwrap().count(), 3);
    // Two requests outstanding, none answered: the front end re-arms at rsp_cons + 1.
    assert!(!ring.front.final_check_for_responses());
    assert_eq!(ring.index(RingIndex::RspEvent), start.wrapping_add(4));
    assert_eq!(answer_all(&mut ring), 2);
    assert!(ring.back.push_responses_and_check_notify());
    assert_eq!(ring.front.responses().unwrap().count(), 2);
    // Nothing outstanding: blkfront just sets rsp_event = rsp_cons + 1.
    assert!(!ring.front.final_check_for_responses());
    assert_eq!(ring.index(RingIndex::RspEvent), start.wrapping_add(6));
    assert_eq!(
        ring.back.state(),
        RingState {
            req_cons: start.wrapping_add(5),
            rsp_prod_pvt: start.wrapping_add(5)
        }
    );
}

#[test]
fn notifications_from_zero() {
    check_at(0);
}

#[test]
fn notifications_across_u32_max() {
    // Every step above crosses the wrap at some index.
    for start in [u32::MAX - 5, u32::MAX - 2, u32::MAX - 1, u32::MAX] {
        check_at(start);
    }
}

#[test]
fn notify_decision_is_the_ring_h_formula() {
    // (new - event) < (new - old), computed in u32, for a batch pushed from old to new.
    let cases: [(u32, u32, u32, bool); 6] = [
        (0, 4, 1, true),            // event inside (old, new]
        (0, 4, 4, true),            // event == new
        (0, 4, 5, false),           // event past new
        (0, 4, 0, false),           // event == old: already notified for it
        (u32::MAX - 1, 2, 0, true), // batch and event across the wrap
        (u32::MAX - 1, 2, u32::MAX - 1, false),
    ];
    for (old, new, event, expected) in cases {
        let mut ring =
            MockRing::starting_at(0, Protocol::X86_32, Limits::DIRECT_ONLY, old).unwrap();
        push(&mut ring, u64::from(new.wrapping_sub(old)));
        ring.set_index(RingIndex::ReqEvent, event);
        assert_eq!(
            ring.front.push_requests_and_check_notify(),
            expected,
            "{old} {new} {event}"
        );

        answer_all(&mut ring);
        ring.set_index(RingIndex::RspEvent, event);
        assert_eq!(
            ring.back.push_responses_and_check_notify(),
            expected,
            "{old} {new} {event}"
        );
    }
}

#[test]
fn a_full_ring_cycles_many_times_past_the_wrap() {
    for protocol in PROTOCOLS {
        for order in 0..=4 {
            let start = u32::MAX - 100;
            let mut ring =
                MockRing::starting_at(order, protocol, Limits::DIRECT_ONLY, start).unwrap();
            let size = ring.front.size();
            assert_eq!(size, 32 << order);
            for round in 0..5u64 {
                for i in 0..u64::from(size) {
                    let id = round * 1000 + i;
                    ring.front
                        .push_request(&direct(BLKIF_OP_WRITE, id, i, &pages(1, 7)))
                        .unwrap();
                }
                assert!(ring
                    .front
                    .push_request(&direct(BLKIF_OP_WRITE, 0, 0, &pages(1, 7)))
                    .is_err());
                ring.front.push_requests_and_check_notify();
                assert_eq!(answer_all(&mut ring), size as usize);
                ring.back.push_responses_and_check_notify();
                let ids: Vec<u64> = ring.front.responses().unwrap().map(|r| r.id).collect();
                let expected: Vec<u64> = (0..u64::from(size)).map(|i| round * 1000 + i).collect();
                assert_eq!(ids, expected, "{protocol} order {order}");
            }
        }
    }
}
