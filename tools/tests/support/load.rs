//! A guest that keeps its disk busy: a fixed number of requests in flight, each completion
//! timed, for tests of the rates a limit lets through.

use std::time::{Duration, Instant};

use tokenback_tools::blkfront::{Blkfront, Op, Tag};

/// When a load stops issuing requests.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// After this long.
    Span(Duration),
    /// After this many requests.
    Count(usize),
}

/// One completed request.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub at: Instant,
    /// `BLKIF_OP_*` of the response.
    pub operation: u8,
}

/// Keeps `depth` requests in flight, the n-th of them `op(n)`, until `until`, and waits for
/// the last; every completion in order. A failed request fails the test.
pub fn drive(
    front: &mut Blkfront,
    depth: usize,
    until: Until,
    op: impl Fn(u64) -> Op,
) -> Vec<Done> {
    let start = Instant::now();
    let mut done = Vec::new();
    let mut in_flight: Vec<Tag> = Vec::new();
    let mut issued = 0u64;
    loop {
        while in_flight.len() < depth
            && match until {
                Until::Span(span) => start.elapsed() < span,
                Until::Count(n) => issued < n as u64,
            }
        {
            in_flight.push(front.stage(op(issued)).unwrap());
            issued += 1;
        }
        if in_flight.is_empty() {
            return done;
        }
        for completion in front.complete().unwrap() {
            assert_eq!(completion.status, 0, "a request failed");
            in_flight.retain(|&t| t != completion.tag);
            done.push(Done {
                at: Instant::now(),
                operation: completion.operation,
            });
        }
    }
}

/// 4 KiB reads over the first 8 MiB, one after another.
pub fn read_4k(n: u64) -> Op {
    Op::ReadDropped {
        sector: (n % 2048) * 8,
        len: 4096,
    }
}

/// Completions in [from, to).
pub fn count(done: &[Done], from: Instant, to: Instant) -> usize {
    done.iter().filter(|d| d.at >= from && d.at < to).count()
}

/// Requests of `operation` (all, for `None`) a second between the `skip`-th completion and
/// the last, the bucket's first contents spent before it.
pub fn steady_rate(done: &[Done], skip: usize, operation: Option<u8>) -> f64 {
    let from = done[skip].at;
    let to = done.last().unwrap().at;
    let n = done[skip + 1..]
        .iter()
        .filter(|d| operation.map_or(true, |o| d.operation == o))
        .count();
    n as f64 / (to - from).as_secs_f64()
}
