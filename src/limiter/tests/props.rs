//! Property tests. Upper bounds: over any window of length T, the cost admitted in each limit
//! is at most its bucket + rate x T + one request's debt, and a burst's at most one unit +
//! max x T + one request's debt. Lower bound: every request is admitted at the earliest instant
//! at which all its buckets admit it. Nothing is admitted out of FIFO order; nothing stalls;
//! every balance stays within its capacity and one request's debt. The buckets' own invariants
//! are debug assertions, which these tests run.

use proptest::prelude::*;

use super::*;
use crate::limiter::{LimitConfig, LimitKind, RateLimit, Shape, MAKE_UP_NS};

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

/// Capacity (nano base units) and rate (base units/s) of a limit's main bucket, and of its
/// burst's one-unit companion.
fn buckets_of(limit: RateLimit, scale: u64) -> Vec<(u128, u128)> {
    let rate = u128::from(limit.rate * scale);
    let (capacity, burst) = match limit.shape {
        Shape::Tenth => (rate * NANOS / 10, None),
        Shape::Capacity(units) => (u128::from(units * scale) * NANOS, None),
        Shape::Burst { max, length_s } => (
            u128::from((max - limit.rate) * scale * length_s) * NANOS,
            Some((u128::from(scale) * NANOS, u128::from(max * scale))),
        ),
    };
    std::iter::once((capacity, rate)).chain(burst).collect()
}

/// A bucket of the reference model, built from the keys as DESIGN states them. The limiter
/// charges as of a decision's exact instant, in the nanosecond before the one it reports:
/// charged at the reported nanosecond, a reference never holds more than the limiter's bucket;
/// charged a nanosecond earlier, never less.
struct Reference {
    kind: LimitKind,
    size: Option<u64>,
    rate: i128,
    capacity: i128,
    level: i128,
    last: u64,
}

impl Reference {
    fn all(limits: &LimitConfig) -> Vec<Reference> {
        let mut all = Vec::new();
        for kind in LimitKind::ALL {
            let Some(limit) = limits.limit(kind) else {
                continue;
            };
            let size = limits.iops_size().filter(|_| kind.counts_operations());
            for (capacity, rate) in buckets_of(limit, size.unwrap_or(1)) {
                let capacity = capacity as i128;
                all.push(Reference {
                    kind,
                    size,
                    rate: rate as i128,
                    capacity,
                    level: capacity,
                    last: 0,
                });
            }
        }
        all
    }

    fn cost(&self, req: &Request) -> i128 {
        i128::from(req.cost(self.kind, self.size)) * NANOS as i128
    }

    fn level_at(&self, t: u64) -> i128 {
        self.capacity
            .min(self.level + self.rate * i128::from(t - self.last))
    }

    fn admits(&self, req: &Request, t: u64) -> bool {
        let cost = self.cost(req);
        cost == 0 || self.level_at(t) >= cost.min(self.capacity)
    }

    fn charge(&mut self, req: &Request, t: u64) {
        let cost = self.cost(req);
        if cost > 0 {
            self.level = self.level_at(t) - cost;
            self.last = self.last.max(t);
        }
    }
}

/// One admission as a test driver saw it.
#[derive(Clone, Copy, Debug)]
struct Decision {
    /// The instant the limiter reports.
    at: u64,
    /// The wake-up that took it.
    woke: u64,
    /// When the request was queued.
    since: u64,
    request: Request,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn admissions_are_bounded_above_and_below_in_fifo_order_however_late_the_timer(
        keys in qos_keys(),
        arrivals in proptest::collection::vec(request(), 1..80),
        late in prop_oneof![Just(0u64), 0u64..=2 * MAKE_UP_NS],
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
        let references = Reference::all(&config.limits);
        let max_cost: Vec<i128> = references
            .iter()
            .map(|r| arrivals.iter().map(|a| r.cost(&a.1)).max().unwrap_or(0))
            .collect();

        // A worker whose timer fires `late` after each deadline; arrivals wake it at once.
        let mut decisions: Vec<Decision> = Vec::new();
        let mut since = vec![0; arrivals.len()];
        let mut batch = Vec::new();
        let (mut now, mut next) = (0, 0);
        loop {
            while next < arrivals.len() && arrivals[next].0 <= now {
                vbd.enqueue(arrivals[next].1, now);
                since[next] = now;
                next += 1;
            }
            batch.clear();
            let deadline = vbd.poll_admit_due(now, &mut batch);
            for a in &batch {
                let since = since[a.request.id as usize];
                decisions.push(Decision { at: a.at, woke: now, since, request: a.request });
                vbd.complete(now);
            }
            // Balances are reported per unit, not per 1/iops-size operation.
            let balances = vbd.stats(now).balances;
            for ((balance, reference), &debt) in balances.iter().zip(&references).zip(&max_cost) {
                let scale = i128::from(reference.size.unwrap_or(1));
                prop_assert!(balance.level_nano <= balance.capacity_nano, "{:?}", balance);
                prop_assert!(
                    balance.level_nano >= (-debt).div_euclid(scale),
                    "{:?} in debt beyond one request", balance
                );
            }
            if let Some(at) = deadline {
                prop_assert!(at > now, "a refused request's deadline lies ahead");
            }
            match (deadline.map(|at| at + late), arrivals.get(next).map(|a| a.0)) {
                (None, None) => break,
                (a, b) => now = a.into_iter().chain(b).min().unwrap(),
            }
        }

        prop_assert_eq!(decisions.len(), arrivals.len(), "every request is admitted");
        prop_assert!(decisions.windows(2).all(|w| w[0].request.id < w[1].request.id), "FIFO");
        prop_assert!(decisions.windows(2).all(|w| w[0].at <= w[1].at), "in time order");
        for d in &decisions {
            prop_assert!(d.since <= d.at && d.at <= d.woke && d.woke - d.at <= MAKE_UP_NS);
        }

        // Upper bounds, per bucket and window. Instants are reported rounded up to the whole
        // nanosecond, so a window holds up to one nanosecond more refill than its span shows.
        for (reference, &debt) in references.iter().zip(&max_cost) {
            let (capacity, rate) = (reference.capacity as u128, reference.rate as u128);
            for i in 0..decisions.len() {
                let mut sum = 0;
                for j in i..decisions.len() {
                    sum += reference.cost(&decisions[j].request) as u128;
                    let span = u128::from(decisions[j].at - decisions[i].at) + 1;
                    prop_assert!(
                        sum <= capacity + rate * span + debt as u128,
                        "{:?}: {} nano-units in {} ns", reference.kind, sum, span
                    );
                }
            }
        }

        // Every request is admitted at the earliest instant at which all its buckets admit it:
        // not before (by references charged early), and, unless it went at once (on arrival,
        // behind its predecessor or at the start of its wake-up's make-up window), not after
        // (one nanosecond earlier, a reference charged late refused it).
        let mut generous = Reference::all(&config.limits);
        let mut references = references;
        let mut previous = 0;
        for d in &decisions {
            prop_assert!(
                generous.iter().all(|r| r.admits(&d.request, d.at)),
                "request {} admitted at {} before its buckets admit it", d.request.id, d.at
            );
            for r in &mut generous {
                r.charge(&d.request, d.at.saturating_sub(1));
            }
            let waited = d.at > d.since && d.at > previous && d.at > d.woke.saturating_sub(MAKE_UP_NS);
            if waited {
                let earlier = d.at - 1;
                prop_assert!(
                    references.iter().any(|r| !r.admits(&d.request, earlier)),
                    "request {} admitted at {} but every bucket admitted it at {}",
                    d.request.id, d.at, earlier
                );
            }
            for r in &mut references {
                r.charge(&d.request, d.at);
            }
            previous = d.at;
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
        late in prop_oneof![Just(0u64), 0u64..=2 * MAKE_UP_NS],
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

        // A worker whose timer fires `late` after each deadline; arrivals wake it at once.
        let mut admitted: Vec<(u64, MemberId, Request)> = Vec::new();
        let mut batch = Vec::new();
        let (mut now, mut next) = (0, 0);
        loop {
            while next < arrivals.len() && arrivals[next].0 <= now {
                let (_, member, req) = arrivals[next];
                group.member_mut(member).unwrap().enqueue(req, now);
                next += 1;
            }
            batch.clear();
            let deadline = group.poll_admit_due(now, &mut batch);
            for &(member, a) in &batch {
                prop_assert!(a.at <= now && now - a.at <= MAKE_UP_NS);
                admitted.push((a.at, member, a.request));
                group.member_mut(member).unwrap().complete(now);
            }
            if let Some(at) = deadline {
                prop_assert!(at > now, "a refused group's deadline lies ahead");
            }
            match (deadline.map(|at| at + late), arrivals.get(next).map(|a| a.0)) {
                (None, None) => break,
                (a, b) => now = a.into_iter().chain(b).min().unwrap(),
            }
        }

        prop_assert_eq!(admitted.len(), arrivals.len(), "every request is admitted");
        prop_assert!(admitted.windows(2).all(|w| w[0].0 <= w[1].0), "in time order");
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
