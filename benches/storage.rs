//! Storage engines: the null engine's cost per request (32 submitted, then drained), and 4 KiB
//! random reads at depth 32 on a 256 MiB file through io_uring and the thread pool, each
//! completion resubmitted at once so 32 stay in flight.
//!
//! Run with `cargo bench -p tokenback --bench storage`; criterion prints requests per second.

use std::fs::File;
use std::io::Write;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokenback::storage::{open_engine, Backing, Completion, EngineKind, IoBuf, Mode, Op};

const DEPTH: usize = 32;
const FILE_BYTES: u64 = 256 << 20;

/// Block until the completion fd is readable.
fn wait(fd: RawFd) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; EINTR just returns early and the caller drains what is there.
    unsafe { libc::poll(&mut p, 1, 1000) };
}

fn next_offset(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    (*x % (FILE_BYTES / 4096)) * 4096
}

fn read_op(offset: u64, buf: IoBuf) -> Op {
    Op::Read {
        offset,
        bufs: vec![buf],
    }
}

fn null_engine(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("null.img");
    File::create(&path)
        .and_then(|f| f.set_len(1 << 20))
        .expect("file");
    let backing = Arc::new(Backing::open(&path, Mode::ReadWrite).expect("open"));
    let mut engine = open_engine(EngineKind::Null, backing).expect("engine");
    let mut done: Vec<Completion> = (0..DEPTH as u64)
        .map(|tag| Completion {
            tag,
            result: Ok(0),
            bufs: vec![IoBuf::new()],
        })
        .collect();
    let mut group = c.benchmark_group("storage null");
    group.throughput(Throughput::Elements(DEPTH as u64));
    group.bench_function("submit 32 reads + drain", |b| {
        b.iter(|| {
            for c in done.drain(..) {
                let buf = c.bufs.into_iter().next().expect("one buffer");
                engine
                    .submit(c.tag, read_op(c.tag * 4096, buf))
                    .expect("submit");
            }
            engine.commit().expect("commit");
            engine.complete(&mut done).expect("complete");
        })
    });
    group.finish();
}

fn random_reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data.img");
    // Real data, not holes: reads of holes never reach the disk.
    let mut f = File::create(&path).expect("file");
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 + 3) as u8).collect();
    for _ in 0..FILE_BYTES >> 20 {
        f.write_all(&chunk).expect("fill");
    }
    f.sync_all().expect("sync");
    let backing = Arc::new(Backing::open(&path, Mode::ReadWrite).expect("open"));
    assert!(backing.direct(), "the benchmark file must take O_DIRECT");

    let mut group = c.benchmark_group("storage 4k random read depth 32");
    group
        .throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(5));
    for kind in [EngineKind::Uring, EngineKind::Threads] {
        let mut engine = open_engine(kind, backing.clone()).expect("engine");
        assert_eq!(engine.kind(), kind);
        let fd = engine.completion_fd();
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut done = Vec::with_capacity(DEPTH);
        group.bench_function(format!("{kind:?}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut submitted = 0;
                for tag in 0..DEPTH.min(iters as usize) as u64 {
                    engine
                        .submit(tag, read_op(next_offset(&mut x), IoBuf::new()))
                        .expect("submit");
                    submitted += 1;
                }
                engine.commit().expect("commit");
                let mut completed = 0;
                while completed < iters {
                    wait(fd);
                    engine.complete(&mut done).expect("complete");
                    for c in done.drain(..) {
                        assert_eq!(c.result.expect("read"), 4096);
                        completed += 1;
                        if submitted < iters {
                            let buf = c.bufs.into_iter().next().expect("one buffer");
                            engine
                                .submit(c.tag, read_op(next_offset(&mut x), buf))
                                .expect("submit");
                            submitted += 1;
                        }
                    }
                    engine.commit().expect("commit");
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, null_engine, random_reads);
criterion_main!(benches);
