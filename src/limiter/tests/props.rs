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
                vbd.complete(now);
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
                    // Decisions are reported at the whole nanosecond after their exact instant.
                    let span = u128::from(admitted[j].0 - admitted[i].0) + 1;
                    prop_assert!(
                        sum <= capacity + rate * span + debt,
                        "{:?}: {} nano-units in {} ns", kind, sum, span
                    );
                }
            }
        }
    }
}

/// One member of a group: weight, own iops limit (0 = none), and its arrivals.
type MemberPlan = (u32, u64, Vec<(Op, u64, u64)>);

fn member_plan() -> impl Strategy<Value = MemberPlan> {
    (
        1u32..=4,
        prop_oneof![Just(0u64), 1u64..=2_000],
        proptest::collection::vec(request(), 1..40),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_group_keeps_each_member_fifo_admits_everything_and_bounds_its_bandwidth(
        bps in 511u64..=20_000_000,
        plans in proptest::collection::vec(member_plan(), 1..5),
    ) {
        let mut group = Group::new(&limit_config(&[("bps-total", &bps.to_string())]), 0);
        let mut arrivals: Vec<(u64, MemberId, Request)> = Vec::new();
        let mut next_id = 0;
        for (weight, iops, requests) in &plans {
            let mut keys = vec![("weight", weight.to_string())];
            if *iops > 0 {
                keys.push(("iops-total", iops.to_string()));
            }
            let config = VbdConfig::parse(keys.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
            let member = group.add_member(Vbd::new(&config, 0));
            let mut t = 0;
            for &(op, bytes, gap) in requests {
                t += gap;
                arrivals.push((t, member, Request { id: next_id, op, bytes }));
                next_id += 1;
            }
        }
        arrivals.sort_by_key(|a| a.0);

        let mut admitted: Vec<(u64, MemberId, Request)> = Vec::new();
        let (mut now, mut next) = (0, 0);
        loop {
            while next < arrivals.len() && arrivals[next].0 <= now {
                let (_, member, req) = arrivals[next];
                group.member_mut(member).unwrap().enqueue(req, now);
                next += 1;
            }
            while let Some((member, a)) = group.poll_admit(now) {
                admitted.push((now, member, a.request));
                group.member_mut(member).unwrap().complete(now);
            }
            let deadline = group.next_admit_at(now);
            if let Some(at) = deadline {
                prop_assert!(at > now, "a refused group's deadline lies ahead");
            }
            match (deadline, arrivals.get(next).map(|a| a.0)) {
                (None, None) => break,
                (a, b) => now = a.into_iter().chain(b).min().unwrap(),
            }
        }

        prop_assert_eq!(admitted.len(), arrivals.len(), "every request is admitted");
        for (member, _) in group.members() {
            let ids: Vec<u64> = admitted.iter().filter(|a| a.1 == member).map(|a| a.2.id).collect();
            prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "FIFO within a member");
        }
        let capacity = u128::from(bps) * NANOS / 10;
        let debt = admitted.iter().map(|a| u128::from(a.2.charged_bytes())).max().unwrap_or(0) * NANOS;
        for i in 0..admitted.len() {
            let mut sum = 0;
            for j in i..admitted.len() {
                sum += u128::from(admitted[j].2.charged_bytes()) * NANOS;
                let span = u128::from(admitted[j].0 - admitted[i].0) + 1;
                prop_assert!(sum <= capacity + u128::from(bps) * span + debt);
            }
        }
    }

    #[test]
    fn parsing_any_strings_never_panics(
        pairs in proptest::collection::vec(
            (prop_oneof![
                proptest::sample::select(LimitConfig::KEYS.to_vec()),
                proptest::sample::select(VbdConfig::EXTRA_KEYS.to_vec()),
                Just("bogus"),
            ], "\\PC{0,24}|[0-9]{1,22}"),
            0..8,
        ),
    ) {
        let parsed = VbdConfig::parse(pairs.iter().map(|(k, v)| (*k, v.as_str())));
        if let Err(error) = parsed {
            prop_assert!(!error.to_string().is_empty());
        }
    }
}
