//! Counters of a VBD or a group: requests, sectors and delayed requests per direction, time
//! throttled, and admission delay quantiles from a fixed-size histogram (no allocation per
//! request).

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

/// Cumulative counters, resettable.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    requests: [u64; 2],
    sectors: [u64; 2],
    delayed: [u64; 2],
    throttled_ns: u64,
    delays: DelayHistogram,
}

impl Counters {
    /// Count an admitted request that waited `delay_ns` since it was queued.
    pub fn record_admission(&mut self, req: &Request, delay_ns: u64) {
        let dir = req.direction().index();
        self.requests[dir] += 1;
        self.sectors[dir] += req.charged_bytes() / 512;
        if delay_ns > 0 {
            self.delayed[dir] += 1;
        }
        self.delays.record(delay_ns);
    }

    /// Add time during which a request was held back.
    pub fn add_throttled(&mut self, ns: u64) {
        self.throttled_ns = self.throttled_ns.saturating_add(ns);
    }

    /// Zero everything.
    pub fn reset(&mut self) {
        *self = Counters::default();
    }

    /// The counters as plain numbers; `ongoing_throttle_ns` is a hold that has not ended yet.
    pub fn snapshot(&self, ongoing_throttle_ns: u64) -> CounterSnapshot {
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
        let mut c = Counters::default();
        c.record_admission(
            &Request {
                id: 1,
                op: Op::Read,
                bytes: 4096,
            },
            0,
        );
        c.record_admission(
            &Request {
                id: 2,
                op: Op::Discard,
                bytes: 1 << 20,
            },
            7,
        );
        c.add_throttled(7);
        let s = c.snapshot(3);
        assert_eq!(s.requests, PerDirection { read: 1, write: 1 });
        assert_eq!(s.sectors, PerDirection { read: 8, write: 0 });
        assert_eq!(s.delayed, PerDirection { read: 0, write: 1 });
        assert_eq!(s.throttled_ns, 10);
        assert_eq!(s.delay_p99_ns, Some(7));
        c.reset();
        assert_eq!(c.snapshot(0), CounterSnapshot::default());
    }
}
