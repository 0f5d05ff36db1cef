//! Costs on the simulated host: grant copy in both directions, map + unmap, and event
//! channels (one thread, and a ping-pong between two threads, which pays the cross-core
//! wake-up). Figures for the sim, not for Xen.
//!
//! Run with `cargo bench -p tokenback --bench platform_sim`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokenback::platform::sim::{GuestDomain, RunDir, SimEventChannel, SimGrants};
use tokenback::platform::{
    CopyOp, DomId, EventChannel, GrantAccess, GrantRef, GuestRange, Port, PAGE_SIZE,
};

const DOM0: DomId = DomId(0);
/// Segments of one blkif request (BLKIF_MAX_SEGMENTS_PER_REQUEST).
const SEGMENTS: usize = 11;

struct Host {
    path: PathBuf,
    run: RunDir,
}

impl Host {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("tbb{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("bench run directory");
        let run = RunDir::create(&path).expect("run directory");
        Host { path, run }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn grants(c: &mut Criterion) {
    let host = Host::new();
    let guest = GuestDomain::create(&host.run, 64, 1).expect("guest");
    for i in 0..SEGMENTS as u32 {
        guest.grant(GrantRef(8 + i), DOM0, i, false).expect("grant");
    }
    let mut access = SimGrants::new(&host.run, DOM0);
    let range = |i: usize| GuestRange {
        domid: guest.domid(),
        gref: GrantRef(8 + i as u32),
        offset: 0,
    };
    let mut bufs = vec![[0u8; PAGE_SIZE]; SEGMENTS];

    let mut group = c.benchmark_group("sim grants");
    group.throughput(Throughput::Bytes((SEGMENTS * PAGE_SIZE) as u64));
    group.bench_function("copy 11 x 4 KiB from the guest", |b| {
        b.iter(|| {
            let mut ops: Vec<_> = bufs
                .iter_mut()
                .enumerate()
                .map(|(i, buf)| CopyOp::from_guest(range(i), buf))
                .collect();
            assert_eq!(access.copy(&mut ops), 0);
        })
    });
    group.bench_function("copy 11 x 4 KiB to the guest", |b| {
        b.iter(|| {
            let mut ops: Vec<_> = bufs
                .iter()
                .enumerate()
                .map(|(i, buf)| CopyOp::to_guest(buf, range(i)))
                .collect();
            assert_eq!(access.copy(&mut ops), 0);
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("map + unmap one grant", |b| {
        b.iter(|| {
            black_box(
                access
                    .map(guest.domid(), &[GrantRef(8)], true)
                    .expect("map"),
            )
        })
    });
    group.finish();
}

/// Waits for an event on `ch` and re-enables it.
fn wait(ch: &mut SimEventChannel, fired: &mut Vec<Port>) {
    loop {
        fired.clear();
        ch.wait_pending(None, fired).expect("wait_pending");
        if !fired.is_empty() {
            ch.unmask(fired).expect("unmask");
            return;
        }
    }
}

fn events(c: &mut Criterion) {
    let host = Host::new();
    let guest = GuestDomain::create(&host.run, 1, 1).expect("guest");
    let mut front = SimEventChannel::open(&host.run, guest.domid()).expect("front");
    let mut back = SimEventChannel::open(&host.run, DOM0).expect("back");
    let offered = front.alloc_unbound(DOM0).expect("alloc");
    let port = back.bind_interdomain(guest.domid(), offered).expect("bind");
    let mut fired = Vec::new();
    wait(&mut back, &mut fired); // the bind's own event

    let mut group = c.benchmark_group("sim evtchn");
    group.throughput(Throughput::Elements(1));
    group.bench_function("notify + read_pending + unmask, one thread", |b| {
        b.iter(|| {
            front.notify(offered).expect("notify");
            fired.clear();
            back.read_pending(&mut fired).expect("read_pending");
            back.unmask(&fired).expect("unmask");
            assert_eq!(fired.len(), 1);
        })
    });

    // The guest echoes every event from its own thread.
    let stop = Arc::new(AtomicBool::new(false));
    let echo = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut fired = Vec::new();
            while !stop.load(Ordering::Acquire) {
                wait(&mut front, &mut fired);
                front.notify(offered).expect("echo");
            }
        })
    };
    group.bench_function("ping-pong round trip, two threads", |b| {
        b.iter(|| {
            back.notify(port).expect("ping");
            wait(&mut back, &mut fired);
        })
    });
    group.finish();
    stop.store(true, Ordering::Release);
    back.notify(port).expect("last ping");
    echo.join().expect("echo thread");
}

fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = short();
    targets = grants, events
}
criterion_main!(benches);
