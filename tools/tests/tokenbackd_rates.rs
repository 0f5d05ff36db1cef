//! The rates tokenbackd (a separate process on the simulated host) lets a saturating guest
//! have, measured after the bucket's first contents are spent and over a count of requests
//! (DESIGN "QoS semantics": Start), and what holding a guest costs the daemon in CPU.
//! The tests take turns: each needs the machine's two cores to itself more than the others'.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use blkif::abi::{BLKIF_OP_READ, BLKIF_OP_WRITE};
use support::daemon::{attach, Tokenbackd};
use support::load::{drive, read_4k, steady_rate, Until};
use support::{storage_file, Host};
use tokenback::platform::sim::RunDir;
use tokenback_tools::blkfront::{Blkfront, Op};
use tokenback_tools::sim::process::cpu_seconds;

const MIB: u64 = 1 << 20;
/// Deep enough that a guest descheduled for a while still has requests held.
const DEPTH: usize = 32;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A guest with one disk of 16 MiB whose target carries `qos`, served by its own tokenbackd
/// (`start`s).
fn guest_of(
    name: &str,
    qos: &[(&str, &str)],
    start: fn(&RunDir, &[&str]) -> Tokenbackd,
) -> (Host, Tokenbackd, Blkfront) {
    let mut host = Host::start(name);
    let daemon = start(&host.run, &[]);
    let file = storage_file(&host, "disk.img", 16 * MIB);
    let (front, _) = attach(&mut host, &file, qos, |_| {});
    (host, daemon, front)
}

fn guest(name: &str, qos: &[(&str, &str)]) -> (Host, Tokenbackd, Blkfront) {
    guest_of(name, qos, Tokenbackd::start)
}

fn within(rate: f64, limit: f64, tolerance: f64) -> bool {
    (rate - limit).abs() <= limit * tolerance
}

#[test]
fn tokens_refill_1000_gives_a_saturating_guest_1000_iops() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let (_host, _daemon, mut front) = guest("rate-tokens", &[("tokens-refill", "1000")]);
    // The bucket holds 100 (tokens-refill/10): spent within the first 100 + DEPTH completions.
    let done = drive(&mut front, DEPTH, Until::Count(10_200), read_4k);
    let rate = steady_rate(&done, 200, None);
    println!("tokens-refill=1000: {rate:.1} IOPS over 10,000 requests");
    assert!(within(rate, 1000.0, 0.02), "{rate} IOPS");
}

#[test]
fn bps_total_8_mib_gives_a_saturating_guest_8_mib_a_second() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let (_host, _daemon, mut front) = guest("rate-bps", &[("bps-total", "8388608")]);
    // 64 KiB reads: 128 a second; the bucket (0.8 MiB) is spent within the first 13 + DEPTH.
    let read_64k = |n: u64| Op::ReadDropped {
        sector: (n % 256) * 128,
        len: 64 << 10,
    };
    let done = drive(&mut front, DEPTH, Until::Count(1300), read_64k);
    let mib = steady_rate(&done, 60, None) / 16.0;
    println!("bps-total=8 MiB/s: {mib:.3} MiB/s over 1,240 reads of 64 KiB");
    assert!(within(mib, 8.0, 0.02), "{mib} MiB/s");
}

#[test]
fn read_and_write_limits_hold_at_once() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let qos = [("iops-read", "300"), ("iops-write", "200")];
    let (_host, _daemon, mut front) = guest("rate-rw", &qos);
    // Reads and writes in the ratio of their limits (R W R W R): each direction at its own
    // limit, neither held back by the other in the FIFO for long.
    let mix = |n: u64| match n % 5 {
        1 | 3 => Op::Write {
            sector: (n % 2048) * 8,
            data: vec![n as u8; 4096],
        },
        _ => read_4k(n),
    };
    let done = drive(&mut front, DEPTH, Until::Count(5100), mix);
    let reads = steady_rate(&done, 100, Some(BLKIF_OP_READ));
    let writes = steady_rate(&done, 100, Some(BLKIF_OP_WRITE));
    println!("iops-read=300, iops-write=200: {reads:.1} reads/s, {writes:.1} writes/s");
    assert!(within(reads, 300.0, 0.02), "{reads} reads/s");
    assert!(within(writes, 200.0, 0.02), "{writes} writes/s");
}

#[test]
fn holding_a_guest_at_100_iops_costs_the_daemon_almost_no_cpu() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    // The release build: a debug one spends several times the CPU on the same work.
    let qos = [("iops-total", "100")];
    let (_host, daemon, mut front) = guest_of("rate-cpu", &qos, Tokenbackd::start_release);
    // The bucket (10) spent first; then 10 s held at 100 IOPS.
    drive(&mut front, DEPTH, Until::Count(50), read_4k);
    let (cpu_before, started) = (cpu_seconds(daemon.pid() as u32).unwrap(), Instant::now());
    let notified_before = front.notifications();
    let done = drive(
        &mut front,
        DEPTH,
        Until::Span(Duration::from_secs(10)),
        read_4k,
    );
    let share =
        (cpu_seconds(daemon.pid() as u32).unwrap() - cpu_before) / started.elapsed().as_secs_f64();
    println!(
        "tokenbackd's CPU with a guest held at 100 IOPS: {:.2}% of a core ({} requests in {:?})",
        share * 100.0,
        done.len(),
        started.elapsed()
    );
    assert!(
        done.len() > 900,
        "held, not stopped: {} requests",
        done.len()
    );
    // The target is 0.5%; generous here (clock ticks of 10 ms, a loaded machine).
    assert!(share < 0.02, "{:.2}% of a core", share * 100.0);
    // Held requests wait for the timer, which reads the ring anyway: the guest is not asked to
    // signal each one (a wake-up per request). A few signals come when the queue drains.
    let notified = front.notifications() - notified_before;
    assert!(
        notified * 10 < done.len() as u64,
        "{notified} signals for {} requests",
        done.len()
    );
}
