//! 4 KiB reads per second through the simulated blkfront and the tests' scripted back end
//! (a thread of this process), over the simulated host's shared memory, grant copy and
//! event channels: one at a time (a round trip each, two wake-ups), and a full order-0
//! ring of 32 at a time, staged and published as one batch. Criterion prints the rate as elements (reads) per second. The back
//! end is a test double, so the figures bound the front end and the sim, not tokenbackd.

// Benchmarks are compiled only as such; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use support::{BackendConfig, Host};
use tokenback_tools::blkfront::Op;

const DEPTH: u64 = 32;

fn reads(c: &mut Criterion) {
    let mut host = Host::start("bench");
    let (mut front, _backend, _) = host.connected(BackendConfig::default(), |_| {});
    let mut buf = vec![0; 4096];
    let mut group = c.benchmark_group("blkfront_4k_read");
    group.throughput(Throughput::Elements(1));
    group.bench_function("depth_1", |b| {
        b.iter(|| front.read(0, &mut buf).unwrap());
    });
    group.throughput(Throughput::Elements(DEPTH));
    group.bench_function("depth_32", |b| {
        b.iter(|| {
            for i in 0..DEPTH {
                front
                    .stage(Op::Read {
                        sector: i * 8,
                        len: 4096,
                    })
                    .unwrap();
            }
            let mut done = 0;
            while done < DEPTH as usize {
                done += front.complete().unwrap().len();
            }
        });
    });
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
    targets = reads
}
criterion_main!(benches);
