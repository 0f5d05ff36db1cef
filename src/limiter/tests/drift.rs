//! Exact deadlines: a request that waits for a full bucket (strict pacing, a burst's companion
//! bucket, debt) is charged as of the exact instant the bucket filled, so nothing drifts with
//! uptime. Rounding each deadline up to the next nanosecond and charging there would lose the
//! fraction on every request: 30,000 instead of 30,001 in the first test, 2,994,012 instead of
//! 3,000,001 in the second.

use super::*;

/// Admissions in [0, `end`] of a guest with one request outstanding.
fn paced_count(keys: &[(&str, &str)], op: Op, bytes: u64, end: u64) -> u64 {
    let mut sat = Saturating::new(&vbd_config(keys), op, bytes);
    sat.depth = 1;
    sat.count_until(end)
}

#[test]
fn strict_pacing_at_3000_per_second_admits_30001_in_10_s() {
    let keys = [("tokens-refill", "3000"), ("tokens-max", "0")];
    assert_eq!(paced_count(&keys, Op::Read, 4096, 10 * SEC), 30_001);
}

#[test]
fn strict_pacing_at_3_million_per_second_admits_3000001_in_1_s() {
    let keys = [("tokens-refill", "3000000"), ("tokens-max", "0")];
    assert_eq!(paced_count(&keys, Op::Read, 512, SEC), 3_000_001);
}

#[test]
fn a_million_paced_requests_are_each_admitted_at_their_exact_instant_rounded_up() {
    let rate = 3_000u64;
    let keys = [("tokens-refill", "3000"), ("tokens-max", "0")];
    let mut sat = Saturating::new(&vbd_config(&keys), Op::Write, 4096);
    sat.depth = 1;
    for k in 0..=1_000_000u64 {
        let exact = u128::from(k) * u128::from(SEC);
        let expected = exact.div_ceil(u128::from(rate));
        assert_eq!(u128::from(sat.next_admission()), expected, "request {k}");
    }
}

#[test]
fn a_burst_paced_by_its_companion_bucket_does_not_drift() {
    // 4 KiB writes at a burst rate of 3,000 per second, for 2 s.
    let keys = [
        ("bps-write", "409600"),
        ("bps-write-max", "12288000"),
        ("bps-write-max-length", "2"),
    ];
    assert_eq!(paced_count(&keys, Op::Write, 4096, SEC), 3_001);
}

#[test]
fn requests_larger_than_the_bucket_repay_their_debt_without_drift() {
    // 3 requests of 4 KiB per second; the bucket holds 1,228.8 bytes.
    let keys = [("bps-total", "12288")];
    assert_eq!(paced_count(&keys, Op::Read, 4096, 10 * SEC), 31);
}
