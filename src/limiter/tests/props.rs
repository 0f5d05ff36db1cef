//! Property tests: over any window of length T, the cost admitted in each limit is at most its
//! bucket + rate x T + one request's debt; nothing is admitted out of FIFO order; nothing stalls.

use proptest::prelude::*;

use super::*;
use crate::limiter::{LimitKind, RateLimit, Shape};

const NANOS: u128 = 1_000_000_000;

/// A rate and an optional burst (multiple of the rate, length in seconds).
fn rate_with_burst(
    rates: std::ops::RangeInclusive<u64>,
) -> impl Strategy<Value = (u64, Option<(u64, u64)>)> {
    (rates, proptest::option::of((1u64..=4, 1u64..=3)))
}

prop_compose! {
    fn qos_keys()(
        iops in proptest::option::of(rate_with_burst(1..=5_000)),
        bps in proptest::option::of(rate_with_burst(511..=50_000_000)),
        bps_key in prop_oneof![Just("bps-total"), Just("bps-read"), Just("bps-write")],
        tokens in proptest::option::of((1u64..=5_000, proptest::option::of(0u64..=500))),
        iops_size in prop_oneof![Just(None), Just(Some(512u64)), Just(Some(4096u64))],
    ) -> Vec<(String, String)> {
        let mut keys = Vec::new();
        let mut add = |key: &str, value: u64| keys.push((key.to_owned(), value.to_string()));
        for (key, limit) in [("iops-total", iops), (bps_key, bps)] {
            if let Some((rate, burst)) = limit {
                add(key, rate);
                if let Some((times, length)) = burst {
                    add(&format!("{key}-max"), rate * times);
                    add(&format!("{key}-max-length"), length);
                }
            }
        }
        if let Some((rate, max)) = tokens {
            add("tokens-refill", rate);
            if let Some(max) = max {
                add("tokens-max", max);
            }
        }
        if let Some(size) = iops_size {
            add("iops-size", size);
        }
        keys
    }
}

fn request() -> impl Strategy<Value = (Op, u64, u64)> {
    let op = prop_oneof![
        Just(Op::Read),
        Just(Op::Write),
        Just(Op::Flush),
        Just(Op::Discard)
    ];
    // (op, bytes, gap since the previous arrival in ns)
    (
        op,
        0u64..=(1 << 20),
        prop_oneof![Just(0u64), 0u64..=SEC / 100, 0u64..=2 * SEC],
    )
}

/// Bucket capacity (nano base units) and rate (base units/s) of a limit's main bucket.
fn bucket_of(limit: RateLimit, scale: u64) -> (u128, u128) {
    let rate = u128::from(limit.rate * scale);
    let capacity = match limit.shape {
        Shape::Tenth => rate * NANOS / 10,
        Shape::Capacity(units) => u128::from(units * scale) * NANOS,
        Shape::Burst { max, length_s } => u128::from((max - limit.rate) * scale * length_s) * NANOS,
    };
    (capacity, rate)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn admitted_cost_is_bounded_in_every_window_and_order_is_fifo(
        keys in qos_keys(),
        arrivals in proptest::collection::vec(request(), 1..80),
    ) {
        let config = VbdConfig::parse(keys.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        let mut vbd = Vbd::new(&config, 0);
        let mut t = 0;
        let arrivals: Vec<(u64, Request)> = arrivals
            .iter()
            .enumerate()
            .map(|(id, &(op, bytes, gap))| {
                t += gap;
                (t, Request { id: id as u64, op, bytes })
            })
            .collect();

        let mut admitted: Vec<(u64, Request)> = Vec::new();
        let mut now = 0;
        let mut next = 0;
        loop {
            while next < arrivals.len() && arrivals[next].0 <= now {
                vbd.enqueue(arrivals[next].1, now);
                next += 1;
            }
            while let Some(a) = vbd.poll_admit(now) {
                admitted.push((now, a.request));
                vbd.complete();
            }
            let deadline = vbd.next_admit_at(now);
            if let Some(at) = deadline {
                prop_assert!(at > now, "a refused request's deadline lies ahead");
            }
            match (deadline, arrivals.get(next).map(|a| a.0)) {
                (None, None) => break,
                (a, b) => now = a.into_iter().chain(b).min().unwrap(),
            }
        }

        prop_assert_eq!(admitted.len(), arrivals.len(), "every request is admitted");
        prop_assert!(admitted.windows(2).all(|w| w[0].1.id < w[1].1.id), "FIFO");

        let limits = &config.limits;
        for kind in LimitKind::ALL {
            let Some(limit) = limits.limit(kind) else { continue };
            let size = limits.iops_size().filter(|_| kind.counts_operations());
            let (capacity, rate) = bucket_of(limit, size.unwrap_or(1));
            let costs: Vec<u128> = admitted.iter().map(|(_, r)| u128::from(r.cost(kind, size))).collect();
            let debt = costs.iter().max().copied().unwrap_or(0) * NANOS;
            for i in 0..admitted.len() {
                let mut sum = 0;
                for j in i..admitted.len() {
                    sum += costs[j] * NANOS;
                    let span = u128::from(admitted[j].0 - admitted[i].0);
                    prop_assert!(
                        sum <= capacity + rate * span + debt,
                        "{:?}: {} nano-units in {} ns", kind, sum, span
                    );
                }
            }
        }
    }
}
