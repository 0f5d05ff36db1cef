//! The buckets that enforce one [`LimitConfig`]: built full, checked and charged per request,
//! and retuned in place.
//!
//! Each configured limit is a main bucket plus, when it has a burst, a companion bucket of one
//! unit refilled at the burst rate. The main bucket holds (max - rate) x length, so a saturating
//! guest gets exactly `max` units/s for `length` seconds, then `rate`.

use super::bucket::{Bucket, NANOS};
use super::config::{LimitConfig, LimitKind, RateLimit, Shape};
use super::cost::Request;
use super::exact::SubNs;

/// Picoseconds per second: the unit of [`LimitSet::time_cost`].
const PICOS: u128 = 1_000_000_000_000;

/// The deepest debt, in units beyond the capacity, that a restored balance may carry: more than
/// any one request can cost (a blkif request moves at most a few MiB).
const MAX_RESTORED_DEBT: i128 = 1 << 32;

/// The buckets of one configured limit.
#[derive(Clone, Debug)]
struct Limit {
    kind: LimitKind,
    main: Bucket,
    /// One unit refilled at the burst rate; spaces requests cost/max apart during a burst.
    burst: Option<Bucket>,
}

impl Limit {
    /// A limit whose buckets are full at `now`.
    fn full(kind: LimitKind, config: RateLimit, iops_size: Option<u64>, now: u64) -> Self {
        let (rate, capacity) = main_bucket(kind, config, iops_size);
        Limit {
            kind,
            main: Bucket::full(rate, capacity, now),
            burst: burst_bucket(kind, config, iops_size)
                .map(|(rate, capacity)| Bucket::full(rate, capacity, now)),
        }
    }
}

/// A bucket's balance, for counters; in nano-units of its kind's unit (token, operation, byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Balance {
    /// Which limit.
    pub kind: LimitKind,
    /// The companion bucket of a burst (true) or the main bucket (false).
    pub burst: bool,
    /// Balance at the snapshot; negative while in debt.
    pub level_nano: i128,
    /// Capacity.
    pub capacity_nano: i128,
}

/// All buckets of a VBD or a group.
#[derive(Clone, Debug)]
pub struct LimitSet {
    /// Only the configured limits, in [`LimitKind::ALL`] order: a decision touches nothing else.
    limits: Vec<Limit>,
    iops_size: Option<u64>,
}

impl LimitSet {
    /// Buckets for `config`, all full at `now`.
    pub fn new(config: &LimitConfig, now: u64) -> Self {
        let iops_size = config.iops_size();
        let limits = LimitKind::ALL
            .into_iter()
            .filter_map(|kind| Some(Limit::full(kind, config.limit(kind)?, iops_size, now)))
            .collect();
        LimitSet { limits, iops_size }
    }

    fn scale_of(&self, kind: LimitKind) -> Option<u64> {
        self.iops_size.filter(|_| kind.counts_operations())
    }

    /// The earliest instant at or after `now` when every bucket admits `req`.
    pub fn ready_at(&self, req: &Request, now: u64) -> u64 {
        let mut at = now;
        for limit in &self.limits {
            let cost = cost_nano(req, limit.kind, self.iops_size);
            at = at.max(limit.main.ready_at(cost, now));
            if let Some(burst) = &limit.burst {
                at = at.max(burst.ready_at(cost, now));
            }
        }
        at
    }

    /// Whether every bucket admits `req` at `at`: `Ok` with how long before `at` the last of
    /// them reached its threshold, when that is less than a nanosecond, or `Err` with the whole
    /// nanosecond at which they all will.
    pub fn standing(&self, req: &Request, at: u64) -> Result<Option<SubNs>, u64> {
        let mut due = at;
        let mut early = None;
        let mut take = |standing| match standing {
            Ok(fraction) => early = SubNs::shortest(early, fraction),
            Err(deadline) => due = due.max(deadline),
        };
        for limit in &self.limits {
            let cost = cost_nano(req, limit.kind, self.iops_size);
            take(limit.main.standing(cost, at));
            if let Some(burst) = &limit.burst {
                take(burst.standing(cost, at));
            }
        }
        if due > at {
            Err(due)
        } else {
            Ok(early)
        }
    }

    /// Charge `req` to every bucket it touches, as of the exact instant `early` before `at`.
    pub fn charge(&mut self, req: &Request, at: u64, early: SubNs) {
        for limit in &mut self.limits {
            let cost = cost_nano(req, limit.kind, self.iops_size);
            if cost > 0 {
                limit.main.take(cost, at, early);
                if let Some(burst) = &mut limit.burst {
                    burst.take(cost, at, early);
                }
            }
        }
    }

    /// How long `req` occupies the most constraining limit, in picoseconds: the largest of
    /// cost / rate. Deficit round robin in a group charges this, so shares follow weights in
    /// bytes under a bandwidth limit and in operations under an IOPS limit.
    pub fn time_cost(&self, req: &Request) -> u128 {
        let mut most = 0;
        for limit in &self.limits {
            let cost = req.cost(limit.kind, self.scale_of(limit.kind));
            let rate = limit.main.rate();
            // 64-bit division for any request below ~18 MB; it runs once per DRR visit.
            let time = match cost.checked_mul(PICOS as u64) {
                Some(scaled) => u128::from(scaled.div_ceil(rate)),
                None => (u128::from(cost) * PICOS).div_ceil(u128::from(rate)),
            };
            most = most.max(time);
        }
        most
    }

    /// Apply a new configuration at `now`. Refill up to `now` runs at the old rates; levels are
    /// kept, clamped to smaller capacities, debt included; a removed limit is dropped with its
    /// debt and a new one starts full. A changed `iops-size` rescales operation levels into the
    /// new unit.
    pub fn retune(&mut self, config: &LimitConfig, now: u64) {
        let old_scale = self.iops_size.unwrap_or(1);
        let new_scale = config.iops_size().unwrap_or(1);
        let iops_size = config.iops_size();
        let mut old = std::mem::take(&mut self.limits).into_iter().peekable();
        for kind in LimitKind::ALL {
            let kept = old.next_if(|limit| limit.kind == kind);
            let Some(new) = config.limit(kind) else {
                continue;
            };
            let Some(mut limit) = kept else {
                self.limits.push(Limit::full(kind, new, iops_size, now));
                continue;
            };
            let rescale = kind.counts_operations() && old_scale != new_scale;
            let (rate, capacity) = main_bucket(kind, new, iops_size);
            if rescale {
                limit.main.rescale(new_scale, old_scale, now);
            }
            limit.main.retune(rate, capacity, now);
            limit.burst = match (limit.burst.take(), burst_bucket(kind, new, iops_size)) {
                (Some(mut bucket), Some((rate, capacity))) => {
                    if rescale {
                        bucket.rescale(new_scale, old_scale, now);
                    }
                    bucket.retune(rate, capacity, now);
                    Some(bucket)
                }
                (None, Some((rate, capacity))) => Some(Bucket::full(rate, capacity, now)),
                (_, None) => None,
            };
            self.limits.push(limit);
        }
        self.iops_size = iops_size;
    }

    /// Restore balances saved by [`LimitSet::balances`] at `saved_at` (restart of the daemon
    /// without the guest noticing). Balances of limits no longer configured are ignored;
    /// limits without a saved balance stay full. Debt is capped at the capacity plus
    /// [`MAX_RESTORED_DEBT`] units.
    pub fn restore(&mut self, saved: &[Balance], saved_at: u64, now: u64) {
        for balance in saved {
            let scale = self.scale_of(balance.kind).unwrap_or(1);
            let Some(limit) = self.limits.iter_mut().find(|l| l.kind == balance.kind) else {
                continue;
            };
            let bucket = match (balance.burst, &mut limit.burst) {
                (false, _) => &mut limit.main,
                (true, Some(burst)) => burst,
                (true, None) => continue,
            };
            let level = balance.level_nano.saturating_mul(i128::from(scale));
            let max_debt = MAX_RESTORED_DEBT * i128::from(scale) * i128::from(NANOS);
            bucket.restore(level, max_debt, saved_at, now);
        }
    }

    /// Every bucket's balance at `now`, in nano-units of its kind's unit.
    pub fn balances(&self, now: u64) -> impl Iterator<Item = Balance> + '_ {
        self.limits.iter().flat_map(move |limit| {
            let scale = i128::from(self.scale_of(limit.kind).unwrap_or(1));
            let balance = move |bucket: &Bucket, burst| Balance {
                kind: limit.kind,
                burst,
                level_nano: bucket.level_at(now).div_euclid(scale),
                capacity_nano: bucket.capacity() / scale,
            };
            std::iter::once(balance(&limit.main, false))
                .chain(limit.burst.as_ref().map(|b| balance(b, true)))
        })
    }
}

/// What `req` costs in a limit of `kind`, in nano base units.
fn cost_nano(req: &Request, kind: LimitKind, iops_size: Option<u64>) -> i128 {
    let scale = iops_size.filter(|_| kind.counts_operations());
    i128::from(req.cost(kind, scale)) * i128::from(NANOS)
}

/// Rate (base units/s) and capacity (nano base units) of a limit's main bucket. Operation limits
/// under `iops-size` count in units of 1/iops-size operation, so rates scale up by iops-size.
fn main_bucket(kind: LimitKind, limit: RateLimit, iops_size: Option<u64>) -> (u64, i128) {
    let scale = scale(kind, iops_size);
    let rate = limit.rate * scale;
    let capacity = match limit.shape {
        Shape::Tenth => i128::from(rate) * i128::from(NANOS / 10),
        Shape::Capacity(units) => i128::from(units) * i128::from(scale) * i128::from(NANOS),
        Shape::Burst { max, length_s } => {
            i128::from(max - limit.rate)
                * i128::from(scale)
                * i128::from(length_s)
                * i128::from(NANOS)
        }
    };
    (rate, capacity)
}

/// Rate and capacity of the one-unit companion bucket of a burst, if the limit has a burst.
fn burst_bucket(kind: LimitKind, limit: RateLimit, iops_size: Option<u64>) -> Option<(u64, i128)> {
    let scale = scale(kind, iops_size);
    match limit.shape {
        Shape::Burst { max, .. } => Some((max * scale, i128::from(scale) * i128::from(NANOS))),
        Shape::Tenth | Shape::Capacity(_) => None,
    }
}

fn scale(kind: LimitKind, iops_size: Option<u64>) -> u64 {
    match iops_size {
        Some(size) if kind.counts_operations() => size,
        _ => 1,
    }
}
