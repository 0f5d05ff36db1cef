//! Request/response pairs per second through the mock ring on one thread, in batches of 32
//! (a full order-0 ring): the front end pushes 32 requests, the back end takes and validates
//! them, answers all 32, and the front end consumes the responses, with every notification
//! decision and final check on the way. Criterion prints the rate as elements (pairs) per
//! second. The back end takes requests with `next_into` (the hot path); one case shows the
//! by-value iterator for comparison.

use std::hint::black_box;
use std::time::Duration;

use blkif::abi::{Segment, BLKIF_OP_READ};
use blkif::mock::MockRing;
use blkif::{Limits, Protocol, RawDirect, RawRequest, Request, Status};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BATCH: usize = 32;

fn read(nr_segments: u8) -> RawRequest {
    let mut seg = [Segment::default(); 11];
    for (i, s) in seg.iter_mut().enumerate().take(nr_segments.into()) {
        *s = Segment::new(1000 + i as u32, 0, 7);
    }
    RawRequest::Direct(RawDirect {
        operation: BLKIF_OP_READ,
        nr_segments,
        handle: 0x5100,
        id: 0,
        sector_number: 0,
        seg,
    })
}

/// How the back end takes each request.
#[derive(Clone, Copy)]
enum Take {
    /// `Requests::next_into` a slot the back end keeps (a daemon's pending-request entry).
    Into,
    /// The `Iterator`, which moves each request out by value.
    Iterator,
}

/// One batch: 32 requests in, 32 responses out, answered as they are taken (a null device).
/// Every step is checked, so a figure is only reported for 32 pairs that really went round.
fn round(ring: &mut MockRing, request: &RawRequest, take: Take, slot: &mut Request) {
    for _ in 0..BATCH {
        ring.front.push_request(request).expect("a free slot");
    }
    black_box(ring.front.push_requests_and_check_notify());

    let mut requests = ring.back.requests().expect("a sane ring");
    let mut taken = 0;
    loop {
        // `black_box`: the daemon reads the whole request; keep the compiler from skipping
        // its construction.
        let response = match take {
            Take::Into => match requests.next_into(slot) {
                None => break,
                Some(taken) => {
                    taken.expect("a valid request");
                    black_box(&*slot).response(Status::Okay)
                }
            },
            Take::Iterator => match requests.next() {
                None => break,
                Some(taken) => black_box(&taken.expect("a valid request")).response(Status::Okay),
            },
        };
        requests
            .push_response(&response)
            .expect("an outstanding request");
        taken += 1;
    }
    assert_eq!(taken, BATCH, "requests taken");
    black_box(ring.back.push_responses_and_check_notify());
    assert_eq!(ring.back.final_check_for_requests(), Ok(false));

    let responses = ring
        .front
        .responses()
        .expect("as many responses as requests");
    let mut answered = 0;
    for response in responses {
        black_box(response);
        answered += 1;
    }
    assert_eq!(answered, BATCH, "responses consumed");
    black_box(ring.front.final_check_for_responses());
}

fn pairs(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring pairs");
    group.throughput(Throughput::Elements(BATCH as u64));
    let cases = [
        (Protocol::Native, 1, Take::Into, "next_into"),
        (Protocol::Native, 11, Take::Into, "next_into"),
        (Protocol::X86_32, 1, Take::Into, "next_into"),
        (Protocol::X86_32, 11, Take::Into, "next_into"),
        (Protocol::Native, 1, Take::Iterator, "iterator"),
    ];
    for (protocol, nr_segments, take, take_name) in cases {
        let limits = Limits::new(256).expect("256 is below the ABI ceiling");
        let mut ring = MockRing::new(0, protocol, limits).expect("an order-0 mock ring");
        let request = read(nr_segments);
        let mut slot = Request::PLACEHOLDER;
        let name = format!("{protocol}/{nr_segments}-segment reads/{take_name}");
        group.bench_function(name, |b| {
            b.iter(|| round(&mut ring, &request, take, &mut slot));
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = pairs
}
criterion_main!(benches);
