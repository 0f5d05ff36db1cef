//! The workload library against a scripted back end: verified reads and writes at a queue
//! depth, per-second samples and latencies, and a corrupted block caught.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use support::{BackendConfig, Host};
use tokenback_tools::workload::{self, pattern, Mode, Stats, Workload, WorkloadError};

fn workload(mode: Mode, duration: Duration) -> Workload {
    Workload {
        mode,
        block_size: 4096,
        queue_depth: 16,
        duration,
        verify: true,
        seed: 7,
    }
}

#[test]
fn randrw_verifies_every_read_and_samples_each_second() {
    let mut host = Host::start("wl-randrw");
    let config = BackendConfig {
        sectors: 2048,
        ..BackendConfig::default()
    };
    let (mut front, backend, _) = host.connected(config, |_| {});
    let stats = Stats::default();
    let started = Instant::now();
    let w = workload(Mode::RandRw, Duration::from_millis(2500));
    workload::run(&mut front, &w, &stats, &AtomicBool::new(false)).unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2500) && took < Duration::from_secs(20));
    let s = stats.snapshot();
    // 256 blocks of 4 KiB: thousands of operations touch each many times.
    assert!(s.reads > 500 && s.writes > 500, "{s:?}");
    assert_eq!(s.verified, s.reads);
    assert_eq!(s.bytes(), s.ops() * 4096);
    let samples = stats.samples();
    // Whole seconds only: the last half second is no rate.
    assert_eq!(samples.iter().map(|x| x.second).collect::<Vec<_>>(), [0, 1]);
    assert!(samples[..2]
        .iter()
        .all(|x| x.ops > 0 && x.bytes == x.ops * 4096));
    let p50 = stats.latency_percentile(50.0).unwrap();
    let p99 = stats.latency_percentile(99.0).unwrap();
    assert!(
        p50 <= p99 && p99 < Duration::from_secs(5),
        "{p50:?} {p99:?}"
    );
    // The disk's first block holds the pattern of one of the writes.
    let first = backend.disk.lock().unwrap()[..4096].to_vec();
    // Random offsets cover the disk: thousands of writes leave no block unwritten.
    let disk = backend.disk.lock().unwrap().clone();
    assert!(disk.chunks(4096).all(|b| b.iter().any(|&x| x != 0)));
    let generations = 1..=u32::try_from(s.writes).unwrap();
    assert!(generations
        .into_iter()
        .any(|g| pattern::mismatch(&first, 0, g).is_none()));
}

#[test]
fn sequential_write_then_read_verifies_and_stops_on_request() {
    let mut host = Host::start("wl-seq");
    let (mut front, _backend, _) = host.connected(BackendConfig::default(), |_| {});
    let stats = Stats::default();
    let mut w = workload(Mode::Write, Duration::from_millis(500));
    w.block_size = 64 * 1024;
    workload::run(&mut front, &w, &stats, &AtomicBool::new(false)).unwrap();
    assert!(stats.snapshot().writes > 0);
    // Already stopped: nothing is submitted, and the run returns at once.
    let stopped = Stats::default();
    w.mode = Mode::Read;
    w.duration = Duration::from_secs(60);
    let started = Instant::now();
    workload::run(&mut front, &w, &stopped, &AtomicBool::new(true)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(stopped.snapshot().ops(), 0);
}

#[test]
fn a_corrupted_block_fails_verification() {
    let mut host = Host::start("wl-corrupt");
    let config = BackendConfig {
        sectors: 64,
        ..BackendConfig::default()
    };
    let (mut front, backend, _) = host.connected(config, |_| {});
    // 8 blocks, all written at least once, then one byte changed behind the front end's back.
    let mut w = workload(Mode::Write, Duration::from_millis(300));
    w.queue_depth = 1;
    workload::run(&mut front, &w, &Stats::default(), &AtomicBool::new(false)).unwrap();
    backend.disk.lock().unwrap()[3 * 4096 + 100] ^= 0xff;
    // A fresh run knows nothing of those writes: it expects zeros everywhere.
    w.mode = Mode::Read;
    let err =
        workload::run(&mut front, &w, &Stats::default(), &AtomicBool::new(false)).unwrap_err();
    assert!(
        matches!(
            err,
            WorkloadError::Verify {
                offset: 0,
                byte: 0,
                generation: 0
            }
        ),
        "{err}"
    );
}

#[test]
fn a_block_size_off_the_sector_grid_is_refused() {
    let mut host = Host::start("wl-bs");
    let (mut front, _backend, _) = host.connected(BackendConfig::default(), |_| {});
    let mut w = workload(Mode::Read, Duration::from_secs(1));
    w.block_size = 1000;
    let err =
        workload::run(&mut front, &w, &Stats::default(), &AtomicBool::new(false)).unwrap_err();
    assert!(
        matches!(
            err,
            WorkloadError::BlockSize {
                block_size: 1000,
                ..
            }
        ),
        "{err}"
    );
}
