//! Counters of a VBD or a group: requests, sectors and delayed requests per direction, time
//! throttled, admission delay quantiles from a fixed-size histogram (no allocation per
//! request), and what was admitted over about the last second, for rates.
//!
//! Rates need no timer: two marks of the cumulative counts, at least [`RATE_WINDOW_NS`] apart,
//! are rolled lazily when an admission is counted, and a read rolls them the same way without
//! keeping the result. Every admission at or after `newer + window` rolls, so counts cannot have
//! moved after `newer + window` unless a roll happened: a read finds them unchanged since then.

use super::cost::{Direction, Request};

/// Sub-buckets per power of two: quantiles are exact below 8 ns and within 1/8 above.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Enough slots for every u64 value.
const SLOTS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// A log-linear histogram of nanosecond delays.
#[derive(Clone, Debug)]
pub struct DelayHistogram {
    counts: [u64; SLOTS],
    total: u64,
    max: u64,
}

impl Default for DelayHistogram {
    fn default() -> Self {
        DelayHistogram {
            counts: [0; SLOTS],
            total: 0,
            max: 0,
        }
    }
}

impl DelayHistogram {
    fn slot(value: u64) -> usize {
        if value < SUB as u64 {
            return value as usize;
        }
        let exp = 63 - value.leading_zeros();
        let sub = (value >> (exp - SUB_BITS)) as usize & (SUB - 1);
        (exp - SUB_BITS + 1) as usize * SUB + sub
    }

    /// The largest value that falls in `slot`.
    fn slot_top(slot: usize) -> u64 {
        if slot < SUB {
            return slot as u64;
        }
        let exp = (slot / SUB) as u32 + SUB_BITS - 1;
        let sub = (slot % SUB) as u64;
        let low = (1u64 << exp) | (sub << (exp - SUB_BITS));
        low + ((1u64 << (exp - SUB_BITS)) - 1)
    }

    /// Count one delay.
    pub fn record(&mut self, delay_ns: u64) {
        self.counts[Self::slot(delay_ns)] += 1;
        self.total += 1;
        self.max = self.max.max(delay_ns);
    }

    /// The delay at or below which `per_mille`/1000 of the samples lie (the top of its slot,
    /// at most the largest sample); `None` without samples.
    pub fn quantile(&self, per_mille: u32) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = (u128::from(self.total) * u128::from(per_mille.min(1000))).div_ceil(1000);
        let rank = u64::try_from(rank).unwrap_or(u64::MAX).max(1);
        let mut seen = 0;
        for (slot, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Self::slot_top(slot).min(self.max));
            }
        }
        Some(self.max)
    }
}

/// The shortest span a rate is taken over: rates cover between one and two of these while
/// admissions flow (plus at most the gap between two), less than three in any case.
pub const RATE_WINDOW_NS: u64 = 1_000_000_000;

/// Cumulative admissions at an instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Mark {
    at: u64,
    requests: [u64; 2],
    bytes: [u64; 2],
}

/// Cumulative counters, resettable.
#[derive(Clone, Debug)]
pub struct Counters {
    requests: [u64; 2],
    sectors: [u64; 2],
    bytes: [u64; 2],
    delayed: [u64; 2],
    throttled_ns: u64,
    delays: DelayHistogram,
    /// When the counters started (creation or the last reset).
    since: u64,
    /// The older and the newer mark of the rate windows.
    marks: [Mark; 2],
}

impl Counters {
    /// Counters that start at `now`.
    pub fn new(now: u64) -> Self {
        let start = Mark {
            at: now,
            ..Mark::default()
        };
        Counters {
            requests: [0; 2],
            sectors: [0; 2],
            bytes: [0; 2],
            delayed: [0; 2],
            throttled_ns: 0,
            delays: DelayHistogram::default(),
            since: now,
            marks: [start; 2],
        }
    }

    /// Count a request admitted at `at` that waited `delay_ns` since it was queued.
    pub fn record_admission(&mut self, req: &Request, delay_ns: u64, at: u64) {
        // Before the counts move: a mark holds the counts as of its instant.
        self.marks = self.rolled(at);
        let dir = req.direction().index();
        self.requests[dir] += 1;
        self.sectors[dir] += req.charged_bytes() / 512;
        self.bytes[dir] += req.charged_bytes();
        if delay_ns > 0 {
            self.delayed[dir] += 1;
        }
        self.delays.record(delay_ns);
    }

    /// The marks as they stand at `now` (see the module's comment).
    fn rolled(&self, now: u64) -> [Mark; 2] {
        let [older, newer] = self.marks;
        if now < newer.at.saturating_add(RATE_WINDOW_NS) {
            return [older, newer];
        }
        let current = Mark {
            at: now,
            requests: self.requests,
            bytes: self.bytes,
        };
        if now >= newer.at.saturating_add(2 * RATE_WINDOW_NS) {
            // Unchanged for the last window: it starts a window ago.
            let start = Mark {
                at: now - RATE_WINDOW_NS,
                ..current
            };
            return [start, current];
        }
        [newer, current]
    }

    /// What was admitted since the older mark as it stands at `now`.
    fn recent(&self, now: u64) -> Recent {
        let [older, _] = self.rolled(now);
        let diff = |now: &[u64; 2], then: &[u64; 2]| PerDirection {
            read: now[0] - then[0],
            write: now[1] - then[1],
        };
        Recent {
            requests: diff(&self.requests, &older.requests),
            bytes: diff(&self.bytes, &older.bytes),
            span_ns: now.saturating_sub(older.at),
        }
    }

    /// Add time during which a request was held back.
    pub fn add_throttled(&mut self, ns: u64) {
        self.throttled_ns = self.throttled_ns.saturating_add(ns);
    }

    /// Zero everything, from `now`.
    pub fn reset(&mut self, now: u64) {
        *self = Counters::new(now);
    }

    /// The counters at `now` as plain numbers; `ongoing_throttle_ns` is a hold that has not
    /// ended yet.
    pub fn snapshot(&self, now: u64, ongoing_throttle_ns: u64) -> CounterSnapshot {
        let per_dir = |a: &[u64; 2]| PerDirection {
            read: a[Direction::Read.index()],
            write: a[Direction::Write.index()],
        };
        CounterSnapshot {
            requests: per_dir(&self.requests),
            sectors: per_dir(&self.sectors),
            delayed: per_dir(&self.delayed),
            throttled_ns: self.throttled_ns.saturating_add(ongoing_throttle_ns),
            delay_p50_ns: self.delays.quantile(500),
            delay_p99_ns: self.delays.quantile(990),
            recent: self.recent(now),
            since_reset_ns: now.saturating_sub(self.since),
        }
    }
}

/// A pair of counts, reads and writes (flushes and discards count as writes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerDirection {
    /// Reads.
    pub read: u64,
    /// Writes, flushes and discards.
    pub write: u64,
}

/// Counters at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Requests admitted.
    pub requests: PerDirection,
    /// 512-byte sectors admitted.
    pub sectors: PerDirection,
    /// Requests admitted later than they were queued.
    pub delayed: PerDirection,
    /// Total time during which a request was held back.
    pub throttled_ns: u64,
    /// Median admission delay.
    pub delay_p50_ns: Option<u64>,
    /// 99th percentile admission delay.
    pub delay_p99_ns: Option<u64>,
    /// What was admitted over about the last second.
    pub recent: Recent,
    /// Since the counters started (creation or the last reset).
    pub since_reset_ns: u64,
}

/// What was admitted over a recent span: at least [`RATE_WINDOW_NS`] once the counters are
/// that old, less than three times that (see [`RATE_WINDOW_NS`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recent {
    /// Requests admitted.
    pub requests: PerDirection,
    /// Bytes admitted.
    pub bytes: PerDirection,
    /// The span, in nanoseconds.
    pub span_ns: u64,
}

impl Recent {
    /// Per second: (read, write) operations and (read, write) bytes; zeros over no span.
    pub fn per_second(&self) -> ([f64; 2], [f64; 2]) {
        if self.span_ns == 0 {
            return ([0.0; 2], [0.0; 2]);
        }
        let rate = |n: u64| n as f64 * 1e9 / self.span_ns as f64;
        (
            [rate(self.requests.read), rate(self.requests.write)],
            [rate(self.bytes.read), rate(self.bytes.write)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::cost::Op;

    #[test]
    fn slots_are_monotonic_and_tops_bound_their_values() {
        let mut last = 0;
        for v in (0..5000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let slot = DelayHistogram::slot(v);
            assert!(slot >= last && slot < SLOTS, "value {v}");
            assert!(DelayHistogram::slot_top(slot) >= v);
            // Within 1/8 of the value.
            assert!(DelayHistogram::slot_top(slot) - v <= v / 8);
            last = slot;
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = DelayHistogram::default();
        assert_eq!(h.quantile(500), None);
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(500).unwrap();
        let p99 = h.quantile(990).unwrap();
        assert!((500_000..=500_000 * 9 / 8).contains(&p50), "p50 {p50}");
        assert!((990_000..=1_000_000).contains(&p99), "p99 {p99}");
        assert_eq!(h.quantile(1000), Some(1_000_000));
    }

    #[test]
    fn counters_split_by_direction_and_reset() {
        let mut c = Counters::new(0);
        c.record_admission(
            &Request {
                id: 1,
                op: Op::Read,
                bytes: 4096,
            },
            0,
            0,
        );
        c.record_admission(
            &Request {
                id: 2,
                op: Op::Discard,
                bytes: 1 << 20,
            },
            7,
            7,
        );
        c.add_throttled(7);
        let s = c.snapshot(100, 3);
        assert_eq!(s.requests, PerDirection { read: 1, write: 1 });
        assert_eq!(s.sectors, PerDirection { read: 8, write: 0 });
        assert_eq!(s.delayed, PerDirection { read: 0, write: 1 });
        assert_eq!(s.throttled_ns, 10);
        assert_eq!(s.delay_p99_ns, Some(7));
        assert_eq!(s.since_reset_ns, 100);
        c.reset(200);
        let zero = CounterSnapshot {
            since_reset_ns: 50,
            recent: Recent {
                span_ns: 50,
                ..Recent::default()
            },
            ..CounterSnapshot::default()
        };
        assert_eq!(c.snapshot(250, 0), zero);
    }

    fn read(id: u64) -> Request {
        Request {
            id,
            op: Op::Read,
            bytes: 4096,
        }
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn rates_cover_about_the_last_second_of_a_steady_load() {
        let mut c = Counters::new(0);
        // 1000/s for 10 s, one every ms.
        for i in 0..10_000 {
            c.record_admission(&read(i), 0, i * MS);
        }
        for now in [10_000 * MS, 10_400 * MS, 10_999 * MS] {
            let recent = c.snapshot(now, 0).recent;
            assert!(
                (RATE_WINDOW_NS..2 * RATE_WINDOW_NS).contains(&recent.span_ns),
                "span {} at {now}",
                recent.span_ns
            );
            let (iops, bps) = recent.per_second();
            // Admissions stopped at 10 s: what the span holds of them, over the span.
            let expected =
                (10_000 * MS - (now - recent.span_ns)) as f64 / recent.span_ns as f64 * 1000.0;
            assert!(
                (iops[0] - expected).abs() < 2.0,
                "{iops:?} vs {expected} at {now}"
            );
            assert!((bps[0] - expected * 4096.0).abs() < 2.0 * 4096.0);
            assert_eq!(iops[1], 0.0);
        }
    }

    proptest::proptest! {
        #[test]
        fn a_rate_spans_one_to_three_seconds_and_counts_exactly_what_its_span_holds(
            gaps in proptest::collection::vec(0..2_500 * MS, 1..200),
            late in 0..3_000 * MS,
        ) {
            let mut c = Counters::new(0);
            let mut at = 0;
            let mut admitted = Vec::new();
            for (i, gap) in gaps.iter().enumerate() {
                at += gap;
                c.record_admission(&read(i as u64), 0, at);
                admitted.push(at);
                // Read between admissions too: reads must not move the marks.
                let recent = c.snapshot(at + gap / 2, 0).recent;
                proptest::prop_assert!(recent.span_ns < 3 * RATE_WINDOW_NS);
            }
            let now = at + late;
            let recent = c.snapshot(now, 0).recent;
            proptest::prop_assert!(recent.span_ns >= RATE_WINDOW_NS.min(now));
            proptest::prop_assert!(recent.span_ns < 3 * RATE_WINDOW_NS);
            // A mark holds the counts as of its instant: admissions at it are after it.
            let start = now - recent.span_ns;
            let held = admitted.iter().filter(|&&t| t >= start).count() as u64;
            let before = admitted.iter().filter(|&&t| t > start).count() as u64;
            proptest::prop_assert!(
                (before..=held).contains(&recent.requests.read),
                "{} admitted in a span holding {before}..={held}", recent.requests.read
            );
        }
    }

    #[test]
    fn rates_fall_to_zero_after_a_second_without_admissions_and_follow_a_burst() {
        let mut c = Counters::new(0);
        for i in 0..500 {
            c.record_admission(&read(i), 0, i * MS);
        }
        // Idle for a long while: nothing over the last second.
        let recent = c.snapshot(100_000 * MS, 0).recent;
        assert_eq!((recent.requests.read, recent.span_ns), (0, RATE_WINDOW_NS));
        // A burst of 300 in 300 ms after the idle time counts over the last second only.
        for i in 0..300 {
            c.record_admission(&read(i), 0, 100_000 * MS + i * MS);
        }
        let recent = c.snapshot(100_300 * MS, 0).recent;
        assert_eq!(recent.requests.read, 300);
        assert!(recent.span_ns <= 2 * RATE_WINDOW_NS, "{}", recent.span_ns);
    }
}
