//! Live retune: the change takes effect at once, levels are kept, queued requests are re-priced.

use super::*;

#[test]
fn retune_down_then_up_mid_stream_switches_rates_at_once() {
    let mut sat = Saturating::new(&vbd_config(&[("iops-total", "1000")]), Op::Read, 4096);
    sat.count_until(5 * SEC);
    sat.vbd
        .retune(&vbd_config(&[("iops-total", "100")]), sat.now);
    // The bucket was empty under saturation and is clamped to 10, not refilled: 100 per second.
    let start = sat.now;
    assert_eq!(sat.count_until(start + 10 * SEC), 1000);
    sat.vbd
        .retune(&vbd_config(&[("iops-total", "5000")]), sat.now);
    let start = sat.now;
    let admitted = sat.count_until(start + 10 * SEC);
    assert!(admitted.abs_diff(50_000) <= 1, "{admitted}");
}

#[test]
fn retune_keeps_the_level_and_refills_at_the_old_rate_up_to_the_change() {
    let mut vbd = Vbd::new(&vbd_config(&[("iops-total", "1000")]), 0);
    for id in 0..100 {
        vbd.enqueue(read(id, 512), 0);
    }
    while vbd.poll_admit(0).is_some() {}
    // 50 ms at 1000/s refilled 50 operations; the new, smaller capacity (1) clamps them.
    vbd.retune(&vbd_config(&[("iops-total", "10")]), 50_000_000);
    let level = vbd.stats(50_000_000).balances[0].level_nano;
    assert_eq!(level, 1_000_000_000);
    // Raising the limit keeps the level: no instant refill to the new capacity.
    vbd.retune(&vbd_config(&[("iops-total", "100000")]), 50_000_000);
    assert_eq!(vbd.stats(50_000_000).balances[0].level_nano, 1_000_000_000);
}

#[test]
fn a_new_limit_starts_full_and_a_removed_one_drops_its_debt() {
    let mut vbd = Vbd::new(&vbd_config(&[("bps-write", "100")]), 0);
    vbd.enqueue(write(0, 1 << 20), 0);
    assert!(vbd.poll_admit(0).is_some());
    vbd.enqueue(write(1, 512), 0);
    assert_eq!(vbd.poll_admit(0), None, "deep in debt");
    vbd.retune(&vbd_config(&[("iops-write", "10")]), 0);
    assert_eq!(vbd.poll_admit(0).map(|a| a.request.id), Some(1));
}

#[test]
fn queued_requests_are_repriced_by_a_retune() {
    let mut vbd = Vbd::new(&vbd_config(&[("iops-read", "10")]), 0);
    for id in 0..3 {
        vbd.enqueue(read(id, 8192), 0);
    }
    assert!(vbd.poll_admit(0).is_some());
    assert_eq!(vbd.next_admit_at(0), Some(SEC / 10));
    // With iops-size 4096 each 8 KiB read is two operations; the bucket (1 op) is in debt by one.
    vbd.retune(
        &vbd_config(&[("iops-read", "10"), ("iops-size", "4096")]),
        0,
    );
    assert_eq!(
        vbd.next_admit_at(0),
        Some(SEC / 10),
        "the full bucket is the threshold"
    );
    assert!(vbd.poll_admit(SEC / 10).is_some());
    assert_eq!(vbd.next_admit_at(SEC / 10), Some(SEC / 10 + 2 * SEC / 10));
}

#[test]
fn removing_every_limit_releases_the_queue_at_once() {
    let mut vbd = Vbd::new(
        &vbd_config(&[("tokens-refill", "1"), ("tokens-max", "0")]),
        0,
    );
    for id in 0..1000 {
        vbd.enqueue(read(id, 4096), 0);
    }
    assert!(vbd.poll_admit(0).is_some());
    assert_eq!(vbd.poll_admit(0), None);
    vbd.retune(&VbdConfig::default(), 7);
    assert_eq!(vbd.next_admit_at(7), Some(7));
    assert_eq!(std::iter::from_fn(|| vbd.poll_admit(7)).count(), 999);
}

#[test]
fn a_burst_removed_mid_burst_falls_back_to_the_tenth_capacity() {
    let burst = vbd_config(&[
        ("iops-total", "100"),
        ("iops-total-max", "1000"),
        ("iops-total-max-length", "10"),
    ]);
    let mut sat = Saturating::new(&burst, Op::Read, 512);
    assert_eq!(sat.count_until(0), 1);
    sat.vbd.retune(&vbd_config(&[("iops-total", "100")]), 0);
    // The 8,999 operations left of the burst bucket are clamped to the new capacity of 10.
    assert_eq!(sat.count_until(0), 10);
}

#[test]
fn balances_saved_before_a_restart_are_restored_into_a_new_vbd() {
    let config = vbd_config(&[
        ("bps-read", "1000"),
        ("bps-read-max", "2000"),
        ("iops-total", "10"),
        ("iops-size", "4096"),
    ]);
    let mut vbd = Vbd::new(&config, 0);
    for id in 0..3 {
        vbd.enqueue(read(id, 8192), 0);
    }
    while vbd.poll_admit(0).is_some() {}
    let saved = vbd.balances(0);
    assert_eq!(
        saved.len(),
        3,
        "main and burst bucket of bps-read, iops-total"
    );
    let deadline = vbd.next_admit_at(0);

    // The new daemon builds the VBD (full buckets) and restores the saved balances.
    let mut restarted = Vbd::new(&config, 5);
    restarted.enqueue(read(2, 8192), 5);
    assert_eq!(
        restarted.next_admit_at(5),
        Some(5),
        "full before the restore"
    );
    restarted.restore_balances(&saved, 0, 5);
    assert_eq!(restarted.balances(0), saved);
    assert_eq!(restarted.next_admit_at(5), deadline);
}

#[test]
fn extreme_values_neither_overflow_nor_stall() {
    let max = crate::limiter::MAX_RATE.to_string();
    let size = crate::limiter::MAX_IOPS_SIZE.to_string();
    let length = crate::limiter::MAX_BURST_LENGTH.to_string();
    let huge = vbd_config(&[
        ("iops-total", "1"),
        ("iops-total-max", &max),
        ("iops-total-max-length", &length),
        ("iops-size", &size),
        ("bps-read", &max),
        ("tokens-refill", &max),
        ("tokens-max", &max),
    ]);
    let tiny = vbd_config(&[("iops-total", "1"), ("iops-size", "1"), ("bps-read", "1")]);
    let mut vbd = Vbd::new(&huge, 0);
    let mut now = 0;
    for (id, config) in [&huge, &tiny, &huge, &VbdConfig::default(), &tiny]
        .into_iter()
        .enumerate()
    {
        vbd.retune(config, now);
        vbd.enqueue(read(id as u64, u64::from(u32::MAX)), now);
        now = vbd.next_admit_at(now).expect("a deadline");
        assert!(vbd.poll_admit(now).is_some());
    }
    assert!(now < u64::MAX, "never an unreachable deadline");
}
