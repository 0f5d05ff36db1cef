//! Property tests of the I/O paths: arbitrary buffer layouts (every segment its own sector
//! range of its page, as a Linux bio's may be), direct and indirect, written and read back
//! through the simulated blkfront and the scripted back end, byte-exact against a model of
//! the disk, and with the back end seeing exactly the segments the layout names; and batches
//! of every operation staged across queues, completed in any order.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::cell::RefCell;

use blkif::abi::{
    BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE,
};
use blkif::Protocol;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::{BackendConfig, Host, ScriptedBackend};
use tokenback_tools::blkfront::{Blkfront, Completion, Op, Span, Tag};

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

/// Sectors of disk each operation of a batch has to itself, so that the result does not
/// depend on the order the queues are served in.
const REGION: u64 = 1024;

/// One operation of a batch, in region `i` of the disk (`offset` sectors into it).
#[derive(Debug, Clone)]
enum BatchOp {
    Write(u64, Vec<Span>, u8),
    Read(u64, Vec<Span>),
    WriteFua(u64, u8, u8),
    Discard(u64, u64),
    Flush,
}

fn batch_op() -> impl Strategy<Value = BatchOp> {
    // Offsets leave room for 64 spans of 8 sectors in a 1024-sector region.
    let offset = 0..REGION - (MAX_SPANS as u64) * 8;
    prop_oneof![
        3 => (offset.clone(), spans(), any::<u8>()).prop_map(|(o, s, seed)| BatchOp::Write(o, s, seed)),
        3 => (offset.clone(), spans()).prop_map(|(o, s)| BatchOp::Read(o, s)),
        1 => (offset.clone(), 1u8..=8, any::<u8>()).prop_map(|(o, n, seed)| BatchOp::WriteFua(o, n, seed)),
        1 => (offset, 1u64..=256).prop_map(|(o, n)| BatchOp::Discard(o, n)),
        1 => Just(BatchOp::Flush),
    ]
}

#[test]
fn batches_of_every_operation_across_queues_match_the_model() {
    let mut host = Host::start("prop-batch");
    let (front, backend, _) = host.connected(BackendConfig::default(), |o| {
        o.max_indirect_segments = MAX_SPANS as u32;
    });
    assert_eq!(front.queues(), 4);
    let state = RefCell::new((front, vec![0u8; (SECTORS * 512) as usize]));
    let ops = proptest::collection::vec(batch_op(), 1..=(SECTORS / REGION) as usize);
    let mut runner = TestRunner::new(Config::with_cases(32));
    let result = runner.run(&ops, |ops| {
        let (front, model) = &mut *state.borrow_mut();
        check_batch(front, &backend, model, &ops)
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    drop(state);
    backend.finish();
}

fn check_batch(
    front: &mut Blkfront,
    backend: &ScriptedBackend,
    model: &mut [u8],
    ops: &[BatchOp],
) -> Result<(), TestCaseError> {
    // What each read must return: its region is its own, so the model before the batch.
    let mut expected_reads = Vec::new();
    // The ring requests the batch must send (a FUA write: a write and its post-flush).
    let ring_op = |spans: &[Span], direct| match spans.len() {
        0..=11 => direct,
        _ => BLKIF_OP_INDIRECT,
    };
    let mut expected_ops = Vec::new();
    let before = backend.seen().operations.len();
    let mut tags = Vec::new();
    for (region, op) in ops.iter().enumerate() {
        let base = region as u64 * REGION;
        let op = match op.clone() {
            BatchOp::Write(offset, spans, seed) => {
                let sector = base + offset;
                let data = bytes((sectors(&spans) * 512) as usize, seed);
                let at = (sector * 512) as usize;
                model[at..at + data.len()].copy_from_slice(&data);
                expected_ops.push(ring_op(&spans, BLKIF_OP_WRITE));
                Op::WriteSpans {
                    sector,
                    data,
                    spans,
                }
            }
            BatchOp::Read(offset, spans) => {
                let sector = base + offset;
                let at = (sector * 512) as usize;
                let len = (sectors(&spans) * 512) as usize;
                expected_reads.push((tags.len(), model[at..at + len].to_vec()));
                expected_ops.push(ring_op(&spans, BLKIF_OP_READ));
                Op::ReadSpans { sector, spans }
            }
            BatchOp::WriteFua(offset, pages, seed) => {
                let sector = base + offset;
                let data = bytes(usize::from(pages) * 4096, seed);
                let at = (sector * 512) as usize;
                model[at..at + data.len()].copy_from_slice(&data);
                expected_ops.extend([BLKIF_OP_WRITE, BLKIF_OP_FLUSH_DISKCACHE]);
                Op::WriteFua { sector, data }
            }
            BatchOp::Discard(offset, count) => {
                let sector = base + offset;
                let at = (sector * 512) as usize;
                model[at..at + (count * 512) as usize].fill(0);
                expected_ops.push(BLKIF_OP_DISCARD);
                Op::Discard {
                    sector,
                    count,
                    secure: false,
                }
            }
            BatchOp::Flush => {
                expected_ops.push(BLKIF_OP_FLUSH_DISKCACHE);
                Op::Flush
            }
        };
        tags.push(front.stage(op).unwrap());
    }
    let mut done: Vec<Completion> = Vec::new();
    while done.len() < tags.len() {
        // Empty only when nothing is in flight: an operation was lost.
        let batch = front.complete().unwrap();
        prop_assert!(
            !batch.is_empty(),
            "{} of {} completed",
            done.len(),
            tags.len()
        );
        done.extend(batch);
    }
    prop_assert!(front.complete().unwrap().is_empty());
    for completion in &done {
        let i = tags.iter().position(|&t| t == completion.tag).unwrap();
        let data = completion.clone().into_result();
        prop_assert!(data.is_ok(), "operation {}: {:?}", i, data);
        if let Some((_, expected)) = expected_reads.iter().find(|(at, _)| *at == i) {
            prop_assert_eq!(&data.unwrap(), expected);
        }
    }
    prop_assert_eq!(&backend.disk.lock().unwrap()[..], &model[..]);
    // Queues are served in any order: compare the requests sent as a multiset.
    let mut sent = backend.seen().operations[before..].to_vec();
    sent.sort_unstable();
    expected_ops.sort_unstable();
    prop_assert_eq!(sent, expected_ops);
    Ok(())
}
