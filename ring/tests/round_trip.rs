//! Every operation through a real ring in every protocol, and slot bytes laid out by hand
//! from the reference's offsets.
#![cfg(test)]

mod common;

use blkif::abi::{self, Segment};
use blkif::mock::MockRing;
use blkif::{
    Direction, Limits, Protocol, RawRequest, Request, RequestError, RequestKind, Response, Status,
};
use common::{direct, discard, indirect, pages, PROTOCOLS};

fn limits() -> Limits {
    Limits::new(1024).unwrap()
}

/// One request of every operation, valid and invalid.
fn every_op() -> Vec<RawRequest> {
    vec![
        direct(abi::BLKIF_OP_READ, 1, 0, &pages(1, 10)),
        direct(abi::BLKIF_OP_READ, 2, 99, &pages(11, 20)),
        direct(
            abi::BLKIF_OP_WRITE,
            3,
            7,
            &[Segment::new(5, 1, 3), Segment::new(6, 0, 0)],
        ),
        direct(abi::BLKIF_OP_WRITE_BARRIER, 4, 0, &[]),
        direct(abi::BLKIF_OP_WRITE_BARRIER, 5, 64, &pages(2, 30)),
        direct(abi::BLKIF_OP_FLUSH_DISKCACHE, 6, 0, &[]),
        direct(abi::BLKIF_OP_FLUSH_DISKCACHE, 7, 8, &pages(1, 40)),
        discard(8, 1 << 40, 2048, 0),
        discard(9, 0, 8, abi::BLKIF_DISCARD_SECURE),
        indirect(10, abi::BLKIF_OP_READ, 1, 0),
        indirect(11, abi::BLKIF_OP_WRITE, 513, 4096),
        indirect(12, abi::BLKIF_OP_WRITE, 1024, 4096),
        RawRequest::Other {
            operation: abi::BLKIF_OP_RESERVED_1,
            id: 13,
        },
        RawRequest::Other {
            operation: 200,
            id: u64::MAX,
        },
        direct(abi::BLKIF_OP_READ, 14, 0, &[]),
        direct(abi::BLKIF_OP_WRITE, 15, 0, &[Segment::new(1, 4, 3)]),
        direct(abi::BLKIF_OP_WRITE, 16, 0, &[Segment::new(1, 0, 8)]),
        direct(abi::BLKIF_OP_READ, 17, u64::MAX - 7, &pages(1, 1)),
        indirect(18, abi::BLKIF_OP_DISCARD, 4, 0),
        indirect(19, abi::BLKIF_OP_READ, 1025, 0),
        indirect(20, abi::BLKIF_OP_READ, 0, 0),
        discard(21, u64::MAX, 1, 0),
    ]
}

#[test]
fn every_op_round_trips_in_every_protocol() {
    for protocol in PROTOCOLS {
        let mut ring = MockRing::new(0, protocol, limits()).unwrap();
        let sent = every_op();
        for raw in &sent {
            ring.front.push_request(raw).unwrap();
        }
        assert!(ring.front.push_requests_and_check_notify());

        let taken: Vec<_> = ring.back.requests().unwrap().collect();
        assert_eq!(taken.len(), sent.len());
        for (raw, got) in sent.iter().zip(&taken) {
            assert_eq!(
                got,
                &Request::validate(raw, &limits()),
                "{protocol}: {raw:?}"
            );
            let id = got.as_ref().map_or_else(|e| e.id, Request::id);
            assert_eq!(id, raw.id());
        }
        for got in &taken {
            let response = match got {
                Ok(request) => request.response(Status::Okay),
                Err(rejected) => rejected.response(),
            };
            ring.back.push_response(&response).unwrap();
        }
        assert!(ring.back.push_responses_and_check_notify());

        let responses: Vec<Response> = ring.front.responses().unwrap().collect();
        let expected: Vec<(u64, u8, i16)> = sent
            .iter()
            .map(|raw| {
                let status = match Request::validate(raw, &limits()) {
                    Ok(_) => 0,
                    Err(rejected) => rejected.error.status().raw(),
                };
                (raw.id(), raw.response_operation(), status)
            })
            .collect();
        let got: Vec<_> = responses
            .iter()
            .map(|r| (r.id, r.operation, r.status))
            .collect();
        assert_eq!(got, expected, "{protocol}");
        assert!(!ring.front.final_check_for_responses());
    }
}

#[test]
fn validated_fields_are_the_ones_sent() {
    let r = Request::validate(
        &direct(
            abi::BLKIF_OP_WRITE,
            3,
            7,
            &[Segment::new(5, 1, 3), Segment::new(6, 0, 0)],
        ),
        &limits(),
    )
    .unwrap();
    assert_eq!(
        (r.id(), r.handle(), r.operation()),
        (3, Some(0x5100), abi::BLKIF_OP_WRITE)
    );
    let RequestKind::Write(s) = r.kind() else {
        panic!("{r:?}")
    };
    assert_eq!((s.sector_number(), s.nr_sectors()), (7, 4));
    let segs: Vec<_> = s
        .segments()
        .iter()
        .map(|g| (g.gref(), g.first_sect(), g.last_sect(), g.offset(), g.len()))
        .collect();
    assert_eq!(segs, [(5, 1, 3, 512, 1536), (6, 0, 0, 0, 512)]);

    let r = Request::validate(&discard(9, 16, 8, 0xff), &limits()).unwrap();
    let RequestKind::Discard(d) = r.kind() else {
        panic!("{r:?}")
    };
    assert_eq!(
        (d.sector_number(), d.nr_sectors(), d.secure()),
        (16, 8, true)
    );

    let r = Request::validate(&indirect(11, abi::BLKIF_OP_WRITE, 513, 4096), &limits()).unwrap();
    let RequestKind::Indirect(i) = r.kind() else {
        panic!("{r:?}")
    };
    assert_eq!(i.direction(), Direction::Write);
    assert_eq!((i.sector_number(), i.nr_segments()), (4096, 513));
    assert_eq!(i.page_refs(), [101, 102]);
    // An indirect write is answered as a write, as blkfront checks.
    assert_eq!(r.response(Status::Okay).operation, abi::BLKIF_OP_WRITE);
}

#[test]
fn errors_carry_the_reason_and_the_status() {
    let reject = |raw: RawRequest, limits: Limits| Request::validate(&raw, &limits).unwrap_err();
    let e = reject(direct(abi::BLKIF_OP_READ, 1, 0, &[]), limits());
    assert_eq!(e.error, RequestError::NoSegments { operation: 0 });
    assert_eq!(e.response().status, abi::BLKIF_RSP_ERROR);

    let mut raw = direct(abi::BLKIF_OP_READ, 1, 0, &pages(11, 0));
    if let RawRequest::Direct(d) = &mut raw {
        d.nr_segments = 12;
    }
    assert_eq!(
        reject(raw, limits()).error,
        RequestError::TooManySegments {
            nr_segments: 12,
            max: 11
        }
    );
    assert_eq!(
        reject(
            direct(1, 1, 0, &[Segment::new(1, 0, 0), Segment::new(1, 5, 2)]),
            limits()
        )
        .error,
        RequestError::SegmentReversed {
            index: 1,
            first_sect: 5,
            last_sect: 2
        }
    );
    assert_eq!(
        reject(direct(1, 1, 0, &[Segment::new(1, 0, 8)]), limits()).error,
        RequestError::SegmentPastPage {
            index: 0,
            last_sect: 8
        }
    );
    let e = reject(
        RawRequest::Other {
            operation: 4,
            id: 77,
        },
        limits(),
    );
    assert_eq!(
        (e.id, e.operation, e.error.status()),
        (77, 4, Status::NotSupported)
    );
    assert_eq!(e.response().status, abi::BLKIF_RSP_EOPNOTSUPP);

    // An indirect request echoes its (bad) indirect_op, as blkback does.
    let e = reject(indirect(5, 9, 4, 0), limits());
    assert_eq!(
        (e.operation, e.error.clone()),
        (9, RequestError::BadIndirectOperation(9))
    );
    assert_eq!(
        reject(indirect(5, 0, 1025, 0), limits()).error,
        RequestError::TooManySegments {
            nr_segments: 1025,
            max: 1024
        }
    );
    assert_eq!(
        reject(indirect(5, 0, 1, 0), Limits::DIRECT_ONLY).error,
        RequestError::IndirectNotOffered
    );
    assert_eq!(
        reject(discard(5, u64::MAX - 1, 2, 0), limits()).error,
        RequestError::SectorOverflow {
            sector_number: u64::MAX - 1,
            nr_sectors: 2
        }
    );
    assert!(Limits::new(4096).is_ok());
    assert!(Limits::new(4097).is_err());
}

/// Bytes of a request placed by hand at the reference's offsets for `protocol`.
fn hand_slot(protocol: Protocol, op: u8) -> Vec<u8> {
    let x32 = protocol == Protocol::X86_32;
    let (id_off, sector_off, body_off) = if x32 { (4, 12, 20) } else { (8, 16, 24) };
    let mut b = vec![0u8; protocol.slot_size()];
    b[0] = op;
    b[id_off..id_off + 8].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
    b[sector_off..sector_off + 8].copy_from_slice(&4096u64.to_le_bytes());
    match op {
        abi::BLKIF_OP_DISCARD => {
            b[1] = abi::BLKIF_DISCARD_SECURE;
            b[2..4].copy_from_slice(&0x5100u16.to_le_bytes());
            b[body_off..body_off + 8].copy_from_slice(&64u64.to_le_bytes());
        }
        abi::BLKIF_OP_INDIRECT => {
            b[1] = abi::BLKIF_OP_WRITE;
            b[2..4].copy_from_slice(&600u16.to_le_bytes());
            b[body_off..body_off + 2].copy_from_slice(&0x5100u16.to_le_bytes());
            let grefs = body_off + 4;
            b[grefs..grefs + 4].copy_from_slice(&31u32.to_le_bytes());
            b[grefs + 4..grefs + 8].copy_from_slice(&32u32.to_le_bytes());
        }
        _ => {
            b[1] = 2;
            b[2..4].copy_from_slice(&0x5100u16.to_le_bytes());
            for (i, gref) in [77u32, 78].into_iter().enumerate() {
                let at = body_off + 8 * i;
                b[at..at + 4].copy_from_slice(&gref.to_le_bytes());
                b[at + 4] = 1;
                b[at + 5] = 6;
            }
        }
    }
    b
}

#[test]
fn hand_laid_slots_decode_per_reference_offsets() {
    for protocol in PROTOCOLS {
        let mut ring = MockRing::new(0, protocol, limits()).unwrap();
        for (i, op) in [
            abi::BLKIF_OP_READ,
            abi::BLKIF_OP_DISCARD,
            abi::BLKIF_OP_INDIRECT,
        ]
        .into_iter()
        .enumerate()
        {
            ring.write_slot(i as u32, &hand_slot(protocol, op)).unwrap();
        }
        ring.set_index(blkif::RingIndex::ReqProd, 3);
        let got: Vec<Request> = ring.back.requests().unwrap().map(Result::unwrap).collect();
        // A discard's handle is stale in Linux's requests: not part of the validated one.
        let handles = [Some(0x5100), None, Some(0x5100)];
        for (r, handle) in got.iter().zip(handles) {
            assert_eq!(
                (r.id(), r.handle()),
                (0x1122_3344_5566_7788, handle),
                "{protocol}"
            );
        }
        let RequestKind::Read(s) = got[0].kind() else {
            panic!("{protocol}: {:?}", got[0])
        };
        assert_eq!((s.sector_number(), s.nr_sectors()), (4096, 12));
        assert_eq!(s.segments()[1].gref(), 78);
        let RequestKind::Discard(d) = got[1].kind() else {
            panic!("{protocol}: {:?}", got[1])
        };
        assert_eq!(
            (d.sector_number(), d.nr_sectors(), d.secure()),
            (4096, 64, true)
        );
        let RequestKind::Indirect(ind) = got[2].kind() else {
            panic!("{protocol}: {:?}", got[2])
        };
        assert_eq!((ind.nr_segments(), ind.page_refs()), (600, &[31, 32][..]));
    }
}

#[test]
fn responses_land_at_reference_offsets_with_zeroed_padding() {
    for protocol in PROTOCOLS {
        let mut ring = MockRing::new(0, protocol, limits()).unwrap();
        // Every byte of the request under the response is nonzero.
        ring.write_slot(0, &vec![0xa5; protocol.slot_size()])
            .unwrap();
        ring.set_index(blkif::RingIndex::ReqProd, 1);
        let rejected = ring.back.requests().unwrap().next().unwrap().unwrap_err();
        assert_eq!(rejected.operation, 0xa5);
        ring.back.push_response(&rejected.response()).unwrap();
        ring.back.push_responses_and_check_notify();

        let slot = ring.read_slot(0);
        assert_eq!(slot[0..8], 0xa5a5_a5a5_a5a5_a5a5u64.to_le_bytes());
        assert_eq!(slot[8], 0xa5, "operation");
        assert_eq!(slot[9], 0, "padding");
        assert_eq!(slot[10..12], (-2i16).to_le_bytes(), "status");
        let response_size = if protocol == Protocol::X86_32 { 12 } else { 16 };
        assert!(
            slot[12..response_size].iter().all(|&b| b == 0),
            "tail padding"
        );
        assert!(
            slot[response_size..].iter().all(|&b| b == 0xa5),
            "rest of slot untouched"
        );
    }
}

#[test]
fn next_into_takes_what_the_iterator_takes() {
    for protocol in PROTOCOLS {
        let mut by_value = MockRing::new(0, protocol, limits()).unwrap();
        let mut in_place = MockRing::new(0, protocol, limits()).unwrap();
        for raw in every_op() {
            by_value.front.push_request(&raw).unwrap();
            in_place.front.push_request(&raw).unwrap();
        }
        by_value.front.push_requests_and_check_notify();
        in_place.front.push_requests_and_check_notify();

        let expected: Vec<_> = by_value.back.requests().unwrap().collect();
        let mut requests = in_place.back.requests().unwrap();
        // A slot holding an earlier, different request: every field must be replaced.
        let mut slot = Request::validate(&discard(99, 5, 5, 1), &limits()).unwrap();
        let mut got = Vec::new();
        while let Some(taken) = requests.next_into(&mut slot) {
            got.push(taken.map(|()| slot));
        }
        assert_eq!(got, expected, "{protocol}");
    }
}
