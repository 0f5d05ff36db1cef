//! The buckets that enforce one [`LimitConfig`]: built full, checked and charged per request,
//! and retuned in place.
//!
//! Each configured limit is a main bucket plus, when it has a burst, a companion bucket of one
//! unit refilled at the burst rate. The main bucket holds (max - rate) x length, so a saturating
//! guest gets exactly `max` units/s for `length` seconds, then `rate`.

use super::bucket::{Bucket, NANOS};
use super::config::{LimitConfig, LimitKind, RateLimit, Shape};
use super::cost::Request;

/// Picoseconds per second: the unit of [`LimitSet::time_cost`].
const PICOS: u128 = 1_000_000_000_000;

/// The buckets of one limit.
#[derive(Clone, Debug)]
struct Limit {
    main: Bucket,
    /// One unit refilled at the burst rate; spaces requests cost/max apart during a burst.
    burst: Option<Bucket>,
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
    limits: [Option<Limit>; 7],
    iops_size: Option<u64>,
}

impl LimitSet {
    /// Buckets for `config`, all full at `now`.
    pub fn new(config: &LimitConfig, now: u64) -> Self {
        let iops_size = config.iops_size();
        let mut limits: [Option<Limit>; 7] = Default::default();
        for kind in LimitKind::ALL {
            limits[kind.index()] = config.limit(kind).map(|limit| {
                let (rate, capacity) = main_bucket(kind, limit, iops_size);
                Limit {
                    main: Bucket::full(rate, capacity, now),
                    burst: burst_bucket(kind, limit, iops_size)
                        .map(|(rate, capacity)| Bucket::full(rate, capacity, now)),
                }
            });
        }
        LimitSet { limits, iops_size }
    }

    /// Every bucket with the cost `req` puts on it, in nano-units (0 where it does not apply).
    fn charges<'a>(&'a self, req: &'a Request) -> impl Iterator<Item = (&'a Bucket, i128)> + 'a {
        self.limits
            .iter()
            .zip(LimitKind::ALL)
            .flat_map(move |(limit, kind)| {
                let cost = self.cost_nano(req, kind);
                limit
                    .iter()
                    .flat_map(|l| std::iter::once(&l.main).chain(l.burst.as_ref()))
                    .map(move |bucket| (bucket, cost))
            })
    }

    fn cost_nano(&self, req: &Request, kind: LimitKind) -> i128 {
        i128::from(req.cost(kind, self.scale_of(kind))) * i128::from(NANOS)
    }

    fn scale_of(&self, kind: LimitKind) -> Option<u64> {
        self.iops_size.filter(|_| kind.counts_operations())
    }

    /// The earliest instant at or after `now` when every bucket admits `req`.
    pub fn ready_at(&self, req: &Request, now: u64) -> u64 {
        self.charges(req)
            .map(|(bucket, cost)| bucket.ready_at(cost, now))
            .max()
            .unwrap_or(now)
    }

    /// Charge `req` to every bucket it touches, at `now`.
    pub fn charge(&mut self, req: &Request, now: u64) {
        for kind in LimitKind::ALL {
            let cost = self.cost_nano(req, kind);
            if let Some(limit) = &mut self.limits[kind.index()] {
                if cost > 0 {
                    limit.main.take(cost, now);
                    if let Some(burst) = &mut limit.burst {
                        burst.take(cost, now);
                    }
                }
            }
        }
    }

    /// How long `req` occupies the most constraining limit, in picoseconds: the largest of
    /// cost / rate. Deficit round robin in a group charges this, so shares follow weights in
    /// bytes under a bandwidth limit and in operations under an IOPS limit.
    pub fn time_cost(&self, req: &Request) -> u128 {
        self.limits
            .iter()
            .zip(LimitKind::ALL)
            .filter_map(|(limit, kind)| {
                let limit = limit.as_ref()?;
                let cost = u128::from(req.cost(kind, self.scale_of(kind)));
                Some((cost * PICOS).div_ceil(u128::from(limit.main.rate())))
            })
            .max()
            .unwrap_or(0)
    }

    /// Apply a new configuration at `now`. Refill up to `now` runs at the old rates; levels are
    /// kept, clamped to smaller capacities, debt included; a removed limit is dropped with its
    /// debt and a new one starts full. A changed `iops-size` rescales operation levels into the
    /// new unit.
    pub fn retune(&mut self, config: &LimitConfig, now: u64) {
        let old_scale = self.iops_size.unwrap_or(1);
        let new_scale = config.iops_size().unwrap_or(1);
        self.iops_size = config.iops_size();
        for kind in LimitKind::ALL {
            let slot = &mut self.limits[kind.index()];
            let Some(new) = config.limit(kind) else {
                *slot = None;
                continue;
            };
            let (rate, capacity) = main_bucket(kind, new, self.iops_size);
            let burst = burst_bucket(kind, new, self.iops_size);
            let Some(limit) = slot else {
                *slot = Some(Limit {
                    main: Bucket::full(rate, capacity, now),
                    burst: burst.map(|(rate, capacity)| Bucket::full(rate, capacity, now)),
                });
                continue;
            };
            let rescale = kind.counts_operations() && old_scale != new_scale;
            if rescale {
                limit.main.rescale(new_scale, old_scale, now);
            }
            limit.main.retune(rate, capacity, now);
            limit.burst = match (limit.burst.take(), burst) {
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
        }
    }

    /// Every bucket's balance at `now`, in nano-units of its kind's unit.
    pub fn balances(&self, now: u64) -> impl Iterator<Item = Balance> + '_ {
        self.limits
            .iter()
            .zip(LimitKind::ALL)
            .flat_map(move |(limit, kind)| {
                let scale = i128::from(self.scale_of(kind).unwrap_or(1));
                let balance = move |bucket: &Bucket, burst| Balance {
                    kind,
                    burst,
                    level_nano: bucket.level_at(now).div_euclid(scale),
                    capacity_nano: bucket.capacity() / scale,
                };
                limit.iter().flat_map(move |l| {
                    std::iter::once(balance(&l.main, false))
                        .chain(l.burst.as_ref().map(|b| balance(b, true)))
                })
            })
    }
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
