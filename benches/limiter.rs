//! Cost of one limiter decision: a standalone VBD with an empty queue and with a queue (admitted
//! and refused), a late wake-up that admits a batch at the instants it was due, and a throttle
//! group of 64 backlogged members.
//!
//! Run with `cargo bench -p tokenback --bench limiter`; criterion prints the time per decision.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tokenback::limiter::{Group, LimitConfig, MemberId, Op, Request, Vbd, VbdConfig};

/// Limits a realistic VBD carries: per-request tokens, IOPS and bandwidth, one with a burst.
const VBD_KEYS: [(&str, &str); 5] = [
    ("tokens-refill", "1000000"),
    ("iops-total", "1000000"),
    ("bps-total", "10737418240"),
    ("bps-write", "5000000000"),
    ("bps-write-max", "8000000000"),
];

/// The seed's single limit.
const SEED_KEYS: [(&str, &str); 2] = [("tokens-refill", "1000000"), ("tokens-max", "100000")];

fn read(id: u64) -> Request {
    Request {
        id,
        op: Op::Read,
        bytes: 4096,
    }
}

fn standalone(c: &mut Criterion) {
    let mut group = c.benchmark_group("vbd");

    // Empty queue: the request arrives and is admitted at once (the common uncontended case).
    for (name, keys) in [("seed keys", &SEED_KEYS[..]), ("5 limits", &VBD_KEYS[..])] {
        let mut vbd = Vbd::new(&VbdConfig::parse(keys.iter().copied()).expect("keys"), 0);
        let mut now = 0u64;
        group.bench_function(format!("enqueue+admit, empty queue, {name}"), |b| {
            b.iter(|| {
                now += 10_000; // 100k IOPS offered: always admissible
                vbd.enqueue(read(now), now);
                let admitted = vbd.poll_admit(black_box(now));
                vbd.complete(now);
                black_box(admitted)
            })
        });
    }

    // A queue of 32: each decision admits the head and a new request joins the tail.
    let mut vbd = Vbd::new(&VbdConfig::parse(VBD_KEYS).expect("keys"), 0);
    for id in 0..32 {
        vbd.enqueue(read(id), 0);
    }
    let mut now = 0u64;
    group.bench_function("admit, queue of 32, 5 limits", |b| {
        b.iter(|| {
            now += 10_000;
            let admitted = vbd.poll_admit(black_box(now));
            vbd.complete(now);
            vbd.enqueue(read(now), now);
            black_box(admitted)
        })
    });

    // Throttled: the head must wait; the decision refuses and computes the deadline.
    let strict = VbdConfig::parse([("iops-total", "1"), ("bps-total", "1000")]).expect("keys");
    let mut vbd = Vbd::new(&strict, 0);
    for id in 0..32 {
        vbd.enqueue(read(id), 0);
    }
    while vbd.poll_admit(0).is_some() {}
    group.bench_function("refuse + next_admit_at, queue of 32", |b| {
        b.iter(|| {
            let refused = vbd.poll_admit(black_box(1));
            black_box((refused, vbd.next_admit_at(black_box(1))))
        })
    });

    // Paced to one request per microsecond; each wake-up comes 4 us after the last and admits
    // the 4 requests due meanwhile, each at its instant.
    let paced =
        VbdConfig::parse([("tokens-refill", "1000000"), ("tokens-max", "0")]).expect("keys");
    let mut vbd = Vbd::new(&paced, 0);
    for id in 0..32 {
        vbd.enqueue(read(id), 0);
    }
    let mut admitted = Vec::with_capacity(32);
    let mut now = 0u64;
    group.bench_function(
        "poll_admit_due, wake-up admitting 4 due, queue of 32",
        |b| {
            b.iter(|| {
                now += 4_000;
                admitted.clear();
                let wake = vbd.poll_admit_due(black_box(now), &mut admitted);
                for a in &admitted {
                    vbd.complete(now);
                    vbd.enqueue(a.request, now);
                }
                black_box(wake)
            })
        },
    );
    group.finish();
}

fn group_of_64(c: &mut Criterion) {
    let limits = LimitConfig::parse([("bps-total", "1073741824"), ("iops-total", "200000")])
        .expect("valid keys");
    let mut group = Group::new(&limits, 0);
    let members: Vec<MemberId> = (0..64u32)
        .map(|i| {
            let config = VbdConfig::parse([("weight", (1 + i % 4).to_string().as_str())])
                .expect("valid keys");
            group.add_member(Vbd::new(&config, 0))
        })
        .collect();
    for &id in &members {
        let vbd = group.member_mut(id).expect("member");
        for n in 0..4 {
            vbd.enqueue(read(n), 0);
        }
    }
    let mut now = 0u64;
    c.bench_function("group of 64 backlogged members: one decision", |b| {
        b.iter(|| {
            // 5 us steps: the group limit (200k IOPS) admits about one request per step.
            now += 5_000;
            let admitted = group.poll_admit(black_box(now));
            if let Some((id, a)) = admitted {
                let vbd = group.member_mut(id).expect("member");
                vbd.complete(now);
                vbd.enqueue(a.request, now);
            }
            black_box(admitted)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = standalone, group_of_64
}
criterion_main!(benches);
