//! Steady rates, bursts, the start of a VBD, debt, FIFO order, max-inflight and counters.

use super::*;

/// Measure the steady rate after the initial full bucket: the time `count` admissions take,
/// starting at the first admission that had to wait.
fn steady_elapsed(sat: &mut Saturating, count: u64) -> u64 {
    let mut start = sat.next_admission();
    while start == 0 {
        start = sat.next_admission();
    }
    let mut end = start;
    for _ in 0..count {
        end = sat.next_admission();
    }
    end - start
}

#[test]
fn iops_limits_from_1_to_a_million_are_exact_within_a_tenth_of_a_percent() {
    for (rate, bytes) in [
        (1, 512),
        (7, 4096),
        (100, 65536),
        (1000, 4096),
        (12_345, 1 << 20),
        (1_000_000, 512),
    ] {
        let config = vbd_config(&[("iops-total", &rate.to_string())]);
        let mut sat = Saturating::new(&config, Op::Read, bytes);
        // 100 simulated seconds, or 10^4 admissions at high rates.
        let count = (rate * 100).min(10_000);
        let elapsed = steady_elapsed(&mut sat, count);
        let expected = u128::from(count) * u128::from(SEC) / u128::from(rate);
        assert!(
            within(elapsed.into(), expected, 1),
            "iops {rate}: {count} took {elapsed} ns"
        );
    }
}

#[test]
fn bandwidth_limits_from_511_b_to_10_gib_per_second_are_exact() {
    let rates = [511u64, 4096, 1_000_000, 100 << 20, 10 << 30];
    let sizes = [512u64, 4096, 65_536, 1 << 20];
    for (n, &rate) in rates.iter().enumerate() {
        for (m, &bytes) in sizes.iter().enumerate() {
            // Alternate the key and the direction so every bandwidth bucket is exercised.
            let (key, op) = [
                ("bps-total", Op::Write),
                ("bps-read", Op::Read),
                ("bps-write", Op::Write),
            ][(n + m) % 3];
            let config = vbd_config(&[(key, &rate.to_string())]);
            let mut sat = Saturating::new(&config, op, bytes);
            // Empty the initial bucket with one big request (it runs into debt), so that high
            // rates need not spend a tenth of a second's worth of small requests first.
            sat.vbd.enqueue(
                Request {
                    id: u64::MAX,
                    op,
                    bytes: rate,
                },
                0,
            );
            let count = (rate * 100 / bytes).clamp(20, 5_000);
            let elapsed = steady_elapsed(&mut sat, count);
            let expected = u128::from(count * bytes) * u128::from(SEC) / u128::from(rate);
            assert!(
                within(elapsed.into(), expected, 1),
                "{key} {rate} B/s, {bytes} B: {elapsed} ns"
            );
        }
    }
}

#[test]
fn iops_total_1000_admits_100_at_once_and_1100_in_the_first_second() {
    let config = vbd_config(&[("iops-total", "1000")]);
    assert_eq!(Saturating::new(&config, Op::Read, 4096).count_until(0), 100);
    assert_eq!(
        Saturating::new(&config, Op::Write, 4096).count_until(SEC),
        1100
    );
}

#[test]
fn seed_keys_admit_the_whole_bucket_at_once_then_the_refill() {
    let config = vbd_config(&[("tokens-refill", "2000"), ("tokens-max", "60000")]);
    assert_eq!(
        Saturating::new(&config, Op::Read, 512).count_until(0),
        60_000
    );
    assert_eq!(
        Saturating::new(&config, Op::Read, 1 << 20).count_until(SEC),
        62_000
    );
}

#[test]
fn zero_tokens_max_paces_strictly() {
    let config = vbd_config(&[("tokens-refill", "10"), ("tokens-max", "0")]);
    let mut sat = Saturating::new(&config, Op::Read, 4096);
    let times: Vec<u64> = (0..4).map(|_| sat.next_admission()).collect();
    assert_eq!(times, [0, SEC / 10, 2 * SEC / 10, 3 * SEC / 10]);
}

#[test]
fn burst_gives_max_for_its_length_then_the_rate() {
    let config = vbd_config(&[
        ("iops-total", "100"),
        ("iops-total-max", "1000"),
        ("iops-total-max-length", "2"),
    ]);
    assert_eq!(
        Saturating::new(&config, Op::Read, 4096).count_until(2 * SEC),
        2000
    );
    // Spaced at the burst rate, not all at once.
    assert_eq!(
        Saturating::new(&config, Op::Read, 4096).count_until(SEC / 2),
        501
    );
    // Then 100/s.
    assert_eq!(
        Saturating::new(&config, Op::Read, 4096).count_until(3 * SEC),
        2100
    );
    let mut sat = Saturating::new(&config, Op::Read, 4096);
    sat.count_until(10 * SEC);
    let elapsed = steady_elapsed(&mut sat, 1000);
    assert!(within(elapsed.into(), 10 * u128::from(SEC), 1));
}

#[test]
fn bandwidth_burst_spaces_large_requests_at_the_burst_rate() {
    // 1 MB/s with bursts of 4 MB/s for 1 s: a saturating guest gets 4 MB in [0, 1 s].
    let config = vbd_config(&[("bps-read", "1000000"), ("bps-read-max", "4000000")]);
    let admitted = Saturating::new(&config, Op::Read, 4000).count_until(SEC);
    assert_eq!(admitted, 1000);
}

#[test]
fn debt_at_511_bytes_per_second_with_4_kib_requests_never_stalls_and_averages_the_limit() {
    let config = vbd_config(&[("bps-total", "511")]);
    let mut sat = Saturating::new(&config, Op::Write, 4096);
    let times: Vec<u64> = (0..50).map(|_| sat.next_admission()).collect();
    // The first request waits for a full bucket (51.1 B), then each one 4096/511 s after the last.
    assert_eq!(times[0], 0);
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let per_request = (4096 * SEC).div_ceil(511);
    assert!(
        gaps.iter().all(|&g| g.abs_diff(per_request) <= 1),
        "{gaps:?}"
    );
    // On average exactly the limit: 49 requests of 4 KiB take 49 x 4096 / 511 s.
    let expected = u128::from(49 * 4096 * SEC) / 511;
    assert!(within(u128::from(times[49] - times[0]), expected, 1));
    let stats = sat.vbd.stats(sat.now);
    assert!(
        stats.balances[0].level_nano < 0,
        "in debt right after an admission"
    );
}

#[test]
fn a_queued_request_holds_back_later_ones_even_if_they_would_fit() {
    let mut vbd = Vbd::new(&vbd_config(&[("bps-read", "1000")]), 0);
    vbd.enqueue(read(1, 100), 0);
    vbd.enqueue(read(2, 4096), 0);
    // A write costs nothing in bps-read, yet waits behind the read.
    vbd.enqueue(write(3, 4096), 0);
    assert_eq!(vbd.poll_admit(0).map(|a| a.request.id), Some(1));
    assert_eq!(vbd.poll_admit(0), None);
    let at = vbd.next_admit_at(0).unwrap();
    assert_eq!(at, SEC / 10, "a full 100-byte bucket");
    assert_eq!(vbd.poll_admit(at - 1), None);
    let order: Vec<u64> = std::iter::from_fn(|| vbd.poll_admit(at))
        .map(|a| a.request.id)
        .collect();
    assert_eq!(order, [2, 3]);
}

#[test]
fn max_inflight_caps_outstanding_requests_until_completions() {
    let mut vbd = Vbd::new(&vbd_config(&[("max-inflight", "2")]), 0);
    for id in 0..3 {
        vbd.enqueue(read(id, 4096), 0);
    }
    assert!(vbd.poll_admit(0).is_some());
    assert!(vbd.poll_admit(0).is_some());
    assert_eq!(vbd.poll_admit(0), None);
    assert_eq!(vbd.next_admit_at(0), None, "only a completion releases it");
    vbd.complete(5);
    assert_eq!(
        vbd.poll_admit(5).map(|a| (a.request.id, a.delay_ns)),
        Some((2, 5))
    );
    assert_eq!(vbd.in_flight(), 2);
}

#[test]
fn counters_report_delays_time_throttled_and_reset() {
    let mut vbd = Vbd::new(
        &vbd_config(&[("iops-write", "10"), ("tokens-refill", "1000000")]),
        0,
    );
    vbd.enqueue(read(0, 4096), 0);
    vbd.enqueue(write(1, 4096), 0);
    vbd.enqueue(write(2, 4096), 0);
    let mut now = 0;
    let mut delays = Vec::new();
    while vbd.queued() > 0 {
        match vbd.poll_admit(now) {
            Some(a) => delays.push(a.delay_ns),
            None => now = vbd.next_admit_at(now).unwrap(),
        }
    }
    // iops-write=10 holds one write; the second waits 100 ms.
    assert_eq!(delays, [0, 0, SEC / 10]);
    let stats = vbd.stats(now);
    let c = stats.counters;
    assert_eq!((c.requests.read, c.requests.write), (1, 2));
    assert_eq!((c.sectors.read, c.sectors.write), (8, 16));
    assert_eq!((c.delayed.read, c.delayed.write), (0, 1));
    assert_eq!(c.throttled_ns, SEC / 10);
    assert_eq!(c.delay_p50_ns, Some(0));
    assert_eq!(c.delay_p99_ns, Some(SEC / 10));
    assert_eq!(stats.in_flight, 3);
    assert_eq!(stats.balances.len(), 2);
    vbd.reset_counters(now);
    let c = vbd.stats(now).counters;
    assert_eq!(
        (c.requests.write, c.throttled_ns, c.delay_p99_ns),
        (0, 0, None)
    );
}

#[test]
fn release_all_admits_every_held_request_at_once_without_charging() {
    // 10 IOPS, no burst: after the first request the rest would wait 100 ms each.
    let config = vbd_config(&[("iops-total", "10")]);
    let mut vbd = Vbd::new(&config, 0);
    for id in 0..5 {
        vbd.enqueue(read(id, 4096), 0);
    }
    let mut admitted = Vec::new();
    assert_eq!(vbd.poll_admit_due(0, &mut admitted), Some(SEC / 10));
    assert_eq!(admitted.len(), 1);
    vbd.release_all(1_000, &mut admitted);
    let ids: Vec<u64> = admitted.iter().map(|a| a.request.id).collect();
    assert_eq!(ids, [0, 1, 2, 3, 4], "FIFO order kept");
    assert!(admitted[1..].iter().all(|a| a.at == 1_000));
    assert_eq!(vbd.queued(), 0);
    assert_eq!(vbd.in_flight(), 5);
    // Released free: the bucket refills from its first admission as if they had not come.
    vbd.enqueue(read(5, 4096), 1_000);
    admitted.clear();
    assert_eq!(vbd.poll_admit_due(1_000, &mut admitted), Some(SEC / 10));
    assert!(admitted.is_empty());
}
