//! Property tests: arbitrary guest memory never panics either end, whatever passes validation
//! is in range, and requests survive encode → ring → decode unchanged in every protocol.
#![cfg(test)]

mod common;

use blkif::abi::Segment;
use blkif::mock::MockRing;
use blkif::{
    BackRing, FrontRing, Limits, Protocol, RawDirect, RawDiscard, RawIndirect, RawRequest,
    RingIndex, RingState, SharedRing, Status,
};
use proptest::prelude::*;
use std::sync::atomic::Ordering;

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        Just(Protocol::Native),
        Just(Protocol::X86_32),
        Just(Protocol::X86_64)
    ]
}

fn segment() -> impl Strategy<Value = Segment> {
    // Mostly valid sectors, sometimes anything.
    let sect = prop_oneof![4 => 0u8..8, 1 => any::<u8>()];
    (any::<u32>(), sect.clone(), sect).prop_map(|(g, f, l)| Segment::new(g, f, l))
}

/// Any request in the union member its operation selects.
fn raw_request() -> impl Strategy<Value = RawRequest> {
    let direct = (
        0u8..=3,
        0u8..=12,
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
        proptest::array::uniform11(segment()),
    )
        .prop_map(|(operation, nr_segments, handle, id, sector_number, seg)| {
            RawRequest::Direct(RawDirect {
                operation,
                nr_segments,
                handle,
                id,
                sector_number,
                seg,
            })
        });
    let discard = (
        any::<u8>(),
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(flag, handle, id, sector_number, nr_sectors)| {
            RawRequest::Discard(RawDiscard {
                flag,
                handle,
                id,
                sector_number,
                nr_sectors,
            })
        });
    let indirect = (
        prop_oneof![4 => 0u8..=1, 1 => any::<u8>()],
        prop_oneof![4 => 0u16..=4200, 1 => any::<u16>()],
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
        any::<[u32; 8]>(),
    )
        .prop_map(
            |(indirect_op, nr_segments, handle, id, sector_number, indirect_grefs)| {
                RawRequest::Indirect(RawIndirect {
                    indirect_op,
                    nr_segments,
                    handle,
                    id,
                    sector_number,
                    indirect_grefs,
                })
            },
        );
    let other =
        (7u8..=255, any::<u64>()).prop_map(|(operation, id)| RawRequest::Other { operation, id });
    prop_oneof![4 => direct, 2 => discard, 2 => indirect, 1 => other]
}

/// `raw` with junk in every field the request does not use, as a Linux front end leaves
/// them when it reuses a shadow request: `seg` entries past `nr_segments`, a discard's
/// `handle`, indirect page refs past the pages in use.
fn with_stale_fields(raw: &RawRequest, junk: &[Segment; 11], junk16: u16) -> RawRequest {
    match *raw {
        RawRequest::Direct(mut r) => {
            let used = usize::from(r.nr_segments).min(11);
            r.seg[used..].copy_from_slice(&junk[used..]);
            RawRequest::Direct(r)
        }
        RawRequest::Discard(r) => RawRequest::Discard(RawDiscard {
            handle: junk16,
            ..r
        }),
        RawRequest::Indirect(mut r) => {
            let used = usize::from(r.nr_segments).div_ceil(512).min(8);
            for (i, gref) in r.indirect_grefs.iter_mut().enumerate().skip(used) {
                *gref = junk[i].gref;
            }
            RawRequest::Indirect(r)
        }
        RawRequest::Other { .. } => *raw,
    }
}

/// Drives a back end over `mem` as a daemon would, answering everything it takes.
fn serve(back: &mut BackRing, max_indirect: u16) {
    for _ in 0..3 {
        let taken: Vec<_> = match back.requests() {
            Ok(requests) => requests.collect(),
            Err(_) => return,
        };
        assert!(taken.len() <= back.size() as usize);
        for t in &taken {
            let response = match t {
                Ok(request) => {
                    common::assert_in_range(request, max_indirect);
                    request.response(Status::Okay)
                }
                Err(rejected) => rejected.response(),
            };
            back.push_response(&response).unwrap();
        }
        back.push_responses_and_check_notify();
        let _ = back.final_check_for_requests();
    }
}

proptest! {
    #[test]
    fn arbitrary_memory_never_panics_the_back_end(
        protocol in protocol(),
        order in 0u8..=2,
        page in proptest::collection::vec(any::<u8>(), 4096),
        header in any::<[u32; 4]>(),
        state in any::<(u32, u32)>(),
        max_indirect in 0u32..=4096,
    ) {
        let mem = SharedRing::allocate(order).unwrap();
        // The same random page in every page of the ring.
        for offset in (0..mem.size()).step_by(page.len()) {
            mem.write_bytes(offset, &page).unwrap();
        }
        let limits = Limits::new(max_indirect).unwrap();
        let indices = [RingIndex::ReqProd, RingIndex::ReqEvent, RingIndex::RspProd, RingIndex::RspEvent];
        for (which, value) in indices.into_iter().zip(header) {
            mem.header(which).store(value, Ordering::SeqCst);
        }
        if let Ok(mut back) = BackRing::attach(mem.clone(), protocol, limits) {
            serve(&mut back, limits.max_indirect_segments());
        }
        // A saved state from anywhere: refused or served, never a panic.
        let state = RingState { req_cons: state.0, rsp_prod_pvt: state.1 };
        if let Ok(mut back) = BackRing::restore(mem.clone(), protocol, limits, state) {
            serve(&mut back, limits.max_indirect_segments());
        }
    }

    #[test]
    fn arbitrary_responses_never_panic_the_front_end(
        protocol in protocol(),
        requests in 0u32..=32,
        rsp_prod in any::<u32>(),
        bytes in proptest::collection::vec(any::<u8>(), 4096),
    ) {
        let mem = SharedRing::allocate(0).unwrap();
        let mut front = FrontRing::init(mem.clone(), protocol);
        for id in 0..requests {
            front.push_request(&RawRequest::Other { operation: 9, id: id.into() }).unwrap();
        }
        front.push_requests_and_check_notify();
        mem.write_bytes(64, &bytes[64..]).unwrap();
        mem.header(RingIndex::RspProd).store(rsp_prod, Ordering::SeqCst);
        match front.responses() {
            Ok(responses) => prop_assert!(responses.count() <= requests as usize),
            Err(_) => prop_assert!(rsp_prod > requests),
        }
        front.final_check_for_responses();
    }

    #[test]
    fn unused_fields_never_change_the_validated_request(
        protocol in protocol(),
        raw in raw_request(),
        junk in proptest::array::uniform11(any::<(u32, u8, u8, [u8; 2])>()),
        junk16 in any::<u16>(),
    ) {
        // Before, a discard's `handle` went into the validated request although Linux never
        // sets it; now nothing the request does not use can reach the back end.
        let junk = junk.map(|(gref, first_sect, last_sect, _pad)| Segment { gref, first_sect, last_sect, _pad });
        let stale = with_stale_fields(&raw, &junk, junk16);
        let limits = Limits::new(4096).unwrap();
        let expected = blkif::Request::validate(&raw, &limits);
        prop_assert_eq!(&blkif::Request::validate(&stale, &limits), &expected);
        // And through the ring, where the slot now holds the junk.
        let mut ring = MockRing::new(0, protocol, limits).unwrap();
        ring.front.push_request(&stale).unwrap();
        ring.front.push_requests_and_check_notify();
        let taken = ring.back.requests().unwrap().next().unwrap();
        prop_assert_eq!(&taken, &expected);
    }

    #[test]
    fn requests_round_trip_through_the_ring(
        protocol in protocol(),
        requests in proptest::collection::vec(raw_request(), 1..=32),
        start in any::<u32>(),
    ) {
        let limits = Limits::new(4096).unwrap();
        let mut ring = MockRing::starting_at(0, protocol, limits, start).unwrap();
        for raw in &requests {
            ring.front.push_request(raw).unwrap();
        }
        ring.front.push_requests_and_check_notify();
        let taken: Vec<_> = ring.back.requests().unwrap().collect();
        prop_assert_eq!(taken.len(), requests.len());
        for (raw, got) in requests.iter().zip(taken) {
            let expected = blkif::Request::validate(raw, &limits);
            prop_assert_eq!(&got, &expected);
            // Validating into a slot that held the previous request gives the same.
            let mut slot = blkif::Request::PLACEHOLDER;
            let into = blkif::Request::validate_into(raw, &limits, &mut slot).map(|()| slot);
            prop_assert_eq!(&into, &expected);
            let response = match got {
                Ok(request) => {
                    common::assert_in_range(&request, 4096);
                    request.response(Status::Okay)
                }
                Err(rejected) => {
                    prop_assert_eq!((rejected.id, rejected.operation), (raw.id(), raw.response_operation()));
                    rejected.response()
                }
            };
            ring.back.push_response(&response).unwrap();
        }
        ring.back.push_responses_and_check_notify();
        let ids: Vec<u64> = ring.front.responses().unwrap().map(|r| r.id).collect();
        let sent: Vec<u64> = requests.iter().map(RawRequest::id).collect();
        prop_assert_eq!(ids, sent);
    }
}
