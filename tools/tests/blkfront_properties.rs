//! Property tests of the I/O paths: arbitrary buffer layouts (every segment its own sector
//! range of its page, as a Linux bio's may be), direct and indirect, written and read back
//! through the simulated blkfront and the scripted back end, byte-exact against a model of
//! the disk, and with the back end seeing exactly the segments the layout names.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod blkfront_support;

use std::cell::RefCell;

use blkfront_support::{BackendConfig, Host, ScriptedBackend};
use blkif::Protocol;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokenback_tools::blkfront::{Blkfront, Op, Span, Tag};

/// Disk sectors of the scripted back end (its default).
const SECTORS: u64 = 16384;
/// Our cap on indirect segments: layouts of up to this many spans.
const MAX_SPANS: usize = 64;

fn span() -> impl Strategy<Value = Span> {
    (0u8..8)
        .prop_flat_map(|first| (Just(first), first..8))
        .prop_map(|(first, last)| Span::new(first, last).unwrap())
}

fn spans() -> impl Strategy<Value = Vec<Span>> {
    // Mostly direct (up to 11), often indirect.
    prop_oneof![
        2 => proptest::collection::vec(span(), 1..=11),
        1 => proptest::collection::vec(span(), 12..=MAX_SPANS),
    ]
}

fn sectors(spans: &[Span]) -> u64 {
    spans.iter().map(|s| u64::from(s.sectors())).sum()
}

/// A write through one layout and a read through another of the same length, at a sector
/// that fits both.
fn write_then_read() -> impl Strategy<Value = (u64, Vec<Span>, Vec<Span>, u8)> {
    spans()
        .prop_flat_map(|write| {
            let total = sectors(&write);
            // A read layout of the same sector count: split `total` into arbitrary spans.
            let read = proptest::collection::vec(span(), 1..=MAX_SPANS)
                .prop_map(move |pool| relayout(total, &pool));
            (0..=SECTORS - total, Just(write), read, any::<u8>())
        })
        .prop_filter("read layout within the segment cap", |(_, _, read, _)| {
            read.len() <= MAX_SPANS
        })
}

/// Spans covering exactly `total` sectors, shaped by `pool` (cut short, or padded with
/// whole pages, as needed).
fn relayout(total: u64, pool: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    let mut left = total;
    for span in pool
        .iter()
        .chain(std::iter::repeat(&Span::new(0, 7).unwrap()))
    {
        if left == 0 {
            break;
        }
        let take = u64::from(span.sectors()).min(left) as u8;
        out.push(Span::new(span.first_sect(), span.first_sect() + take - 1).unwrap());
        left -= u64::from(take);
    }
    out
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn wait(front: &mut Blkfront, tag: Tag) -> Vec<u8> {
    let done = front.complete().unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].tag, tag);
    done[0].clone().into_result().unwrap()
}

/// Runs the property against one front end in `protocol`; the disk model lives across
/// cases, so later cases read over what earlier ones wrote.
fn arbitrary_layouts_round_trip(name: &str, protocol: Protocol) {
    let mut host = Host::start(name);
    let (front, backend, _) = host.connected(BackendConfig::default(), |o| {
        o.protocol = protocol;
        o.max_indirect_segments = MAX_SPANS as u32;
    });
    let state = RefCell::new((front, vec![0u8; (SECTORS * 512) as usize]));
    let mut runner = TestRunner::new(Config::with_cases(48));
    let result = runner.run(&write_then_read(), |(sector, write, read, seed)| {
        let (front, model) = &mut *state.borrow_mut();
        check_case(front, &backend, model, sector, &write, &read, seed)
    });
    if let Err(err) = result {
        panic!("{protocol}: {err}");
    }
    drop(state);
    backend.finish();
}

fn check_case(
    front: &mut Blkfront,
    backend: &ScriptedBackend,
    model: &mut [u8],
    sector: u64,
    write: &[Span],
    read: &[Span],
    seed: u8,
) -> Result<(), TestCaseError> {
    let len = (sectors(write) * 512) as usize;
    let data = bytes(len, seed);
    let at = (sector * 512) as usize;
    let tag = front
        .submit(Op::WriteSpans {
            sector,
            data: data.clone(),
            spans: write.to_vec(),
        })
        .unwrap();
    wait(front, tag);
    model[at..at + len].copy_from_slice(&data);
    let tag = front
        .submit(Op::ReadSpans {
            sector,
            spans: read.to_vec(),
        })
        .unwrap();
    let got = wait(front, tag);
    prop_assert_eq!(&got[..], &data[..]);
    prop_assert_eq!(&backend.disk.lock().unwrap()[..], &model[..]);
    // The back end saw each layout exactly, segment by segment.
    let seen = backend.seen().segments;
    let layout = |spans: &[Span]| -> Vec<(u8, u8)> {
        spans
            .iter()
            .map(|s| (s.first_sect(), s.last_sect()))
            .collect()
    };
    prop_assert_eq!(&seen[seen.len() - 2], &layout(write));
    prop_assert_eq!(&seen[seen.len() - 1], &layout(read));
    Ok(())
}

#[test]
fn arbitrary_segment_layouts_round_trip_byte_exact_native() {
    arbitrary_layouts_round_trip("prop-native", Protocol::Native);
}

#[test]
fn arbitrary_segment_layouts_round_trip_byte_exact_x86_32() {
    arbitrary_layouts_round_trip("prop-x86-32", Protocol::X86_32);
}
