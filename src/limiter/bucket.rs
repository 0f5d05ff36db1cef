//! One token bucket with lazy refill and debt, in exact integer arithmetic.
//!
//! Levels are kept in nano-units: 1e-9 of the bucket's base unit (a token, an operation or a
//! fraction of one under iops-size, a byte). A rate of `r` units/s then adds exactly `r`
//! nano-units per nanosecond, so refill is `rate x elapsed_ns` with no rounding, and capacities
//! such as 511/10 bytes are exact. Refill never multiplies more time than it takes to fill the
//! bucket, so no product can overflow however long the bucket idles.
//!
//! A request that waits for a bucket is charged as of the exact instant the bucket reached its
//! threshold, not the whole nanosecond after it at which the decision is reported: refill during
//! that fraction is kept, even by a bucket that is full by then (see [`super::exact`]).

use super::exact::SubNs;

/// Nanoseconds per second, and nano-units per unit.
pub const NANOS: u64 = 1_000_000_000;

/// A token bucket. `level` may be negative (debt) after a request larger than the capacity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Refill rate in units per second (= nano-units per nanosecond); never 0.
    rate: u64,
    /// Capacity in nano-units; 0 means strict pacing.
    capacity: i128,
    /// Balance in nano-units as of `last`.
    level: i128,
    /// The instant (ns) that `level` describes.
    last: u64,
}

impl Bucket {
    /// A full bucket at `now`. `rate` must be positive.
    pub fn full(rate: u64, capacity: i128, now: u64) -> Self {
        debug_assert!(rate > 0 && capacity >= 0);
        Bucket {
            rate,
            capacity,
            level: capacity,
            last: now,
        }
    }

    /// Refill rate in units per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Capacity in nano-units.
    pub fn capacity(&self) -> i128 {
        self.capacity
    }

    /// The balance in nano-units at `now` (an earlier `now` than the last update sees no refill).
    pub fn level_at(&self, now: u64) -> i128 {
        let deficit = self.capacity - self.level;
        if deficit <= 0 || now <= self.last {
            return self.level;
        }
        // A u64 rate times u64 nanoseconds always fits in u128; no division on this hot path.
        let gain = u128::from(self.rate) * u128::from(now - self.last);
        if gain >= deficit as u128 {
            self.capacity
        } else {
            // gain < deficit, which fits in i128.
            self.level + gain as i128
        }
    }

    /// What the level must reach before a request of `cost` nano-units may be admitted: the cost
    /// itself, or a full bucket when the cost exceeds the capacity (the request then runs into
    /// debt, so that no limit, however small, stalls a queue).
    fn threshold(&self, cost: i128) -> i128 {
        cost.min(self.capacity)
    }

    /// The earliest instant at or after `now` when a request of `cost` nano-units is admissible.
    /// A zero cost is always admissible: a limit that a request does not touch never holds it.
    pub fn ready_at(&self, cost: i128, now: u64) -> u64 {
        if cost == 0 {
            return now;
        }
        let missing = self.threshold(cost) - self.level_at(now);
        if missing <= 0 {
            return now;
        }
        self.deadline(missing as u128, now)
    }

    /// Whether a request of `cost` nano-units is admissible at `at`: `Ok` with how long before
    /// `at` the bucket reached the threshold, when that is less than a nanosecond, or `Err` with
    /// the earliest whole nanosecond at which it will.
    #[inline]
    pub fn standing(&self, cost: i128, at: u64) -> Result<Option<SubNs>, u64> {
        if cost == 0 {
            return Ok(None);
        }
        let need = self.threshold(cost) - self.level;
        if need <= 0 {
            // At the threshold already at `last`: within a fraction of `at` only if that is `at`.
            let surplus = need.unsigned_abs();
            return Ok((at <= self.last && surplus < u128::from(self.rate))
                .then(|| SubNs::new(surplus as u64, self.rate)));
        }
        let need = need as u128;
        let gain = u128::from(self.rate) * u128::from(at.saturating_sub(self.last));
        if gain < need {
            return Err(self.deadline(need - gain, at));
        }
        // The refill beyond the threshold by `at`: a fraction if less than a nanosecond's.
        let surplus = gain - need;
        Ok((surplus < u128::from(self.rate)).then(|| SubNs::new(surplus as u64, self.rate)))
    }

    /// The whole nanosecond, counted from `at`, by which `missing` nano-units are refilled.
    fn deadline(&self, missing: u128, at: u64) -> u64 {
        // 64-bit division whenever `missing` fits (below about 1.8e10 units), and a deadline
        // centuries ahead saturates.
        let wait = match u64::try_from(missing) {
            Ok(missing) => missing.div_ceil(self.rate),
            Err(_) => u64::try_from(missing.div_ceil(u128::from(self.rate))).unwrap_or(u64::MAX),
        };
        at.saturating_add(wait)
    }

    /// Charge `cost` nano-units as of the exact instant `early` before `at` (the caller checked
    /// [`Bucket::standing`]). A bucket full by `at` keeps what it refilled during `early`.
    #[inline]
    pub fn take(&mut self, cost: i128, at: u64, early: SubNs) {
        debug_assert!(
            self.level_at(at) >= self.threshold(cost),
            "charged before it admits"
        );
        self.level = (self.level_through(at, early) - cost).min(self.capacity);
        self.last = self.last.max(at);
        // Debt is at most what one request costs beyond a full bucket.
        debug_assert!(self.is_valid() && self.level >= self.threshold(cost) - cost);
    }

    /// The level at `at`, where refill past the capacity within `early` before `at` counts.
    fn level_through(&self, at: u64, early: SubNs) -> i128 {
        if at <= self.last || early.is_zero() {
            return self.level_at(at);
        }
        let deficit = (self.capacity - self.level) as u128;
        let gain = u128::from(self.rate) * u128::from(at - self.last);
        if gain < deficit {
            self.level + gain as i128
        } else {
            // Less than one nanosecond of refill: below 2^64.
            self.capacity + (gain - deficit).min(early.refill(self.rate)) as i128
        }
    }

    /// The bucket's invariants: a positive rate, a capacity of at least 0, a level at most the
    /// capacity. Checked after every change in debug builds (the property tests run those).
    pub fn is_valid(&self) -> bool {
        self.rate > 0 && self.capacity >= 0 && self.level <= self.capacity
    }

    /// Bring the stored level up to `now`.
    pub fn advance(&mut self, now: u64) {
        if now > self.last {
            self.level = self.level_at(now);
            self.last = now;
        }
        debug_assert!(self.is_valid());
    }

    /// Change rate and capacity at `now`: refill up to `now` runs at the old rate, the level is
    /// kept (clamped to a smaller capacity), and debt stays.
    pub fn retune(&mut self, rate: u64, capacity: i128, now: u64) {
        debug_assert!(rate > 0 && capacity >= 0);
        self.advance(now);
        self.rate = rate;
        self.capacity = capacity;
        self.level = self.level.min(capacity);
        debug_assert!(self.is_valid());
    }

    /// Set the level to a saved balance taken at `saved_at`, as after a daemon restart. The
    /// balance comes from a state file and is not trusted: it is clamped to the capacity above
    /// and, below, to a debt of at most the capacity plus `max_debt`. Refill resumes from
    /// `saved_at` (or `now`, if that lies in the future).
    pub fn restore(&mut self, level: i128, max_debt: i128, saved_at: u64, now: u64) {
        self.level = level.clamp(-(self.capacity + max_debt), self.capacity);
        self.last = saved_at.min(now);
        debug_assert!(self.is_valid());
    }

    /// Rescale the level by `num / den` (a change of base unit), rounding towards debt.
    pub fn rescale(&mut self, num: u64, den: u64, now: u64) {
        self.advance(now);
        let (num, den) = (i128::from(num), i128::from(den));
        self.level = match self.level.checked_mul(num) {
            Some(scaled) => scaled.div_euclid(den),
            // Only for levels near the configured extremes; precision there is moot.
            None => self.level.div_euclid(den).saturating_mul(num),
        };
        debug_assert!(self.is_valid());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: i128 = NANOS as i128;

    #[test]
    fn starts_full_and_spends_at_once() {
        let b = Bucket::full(100, 10 * U, 0);
        assert_eq!(b.ready_at(10 * U, 0), 0);
        assert_eq!(b.ready_at(5 * U, 0), 0);
    }

    #[test]
    fn refill_is_exact_for_awkward_rates() {
        // 511 B/s with a 51.1 B capacity: no rounding of the capacity or the refill.
        let mut b = Bucket::full(511, 511 * U / 10, 0);
        b.take(511 * U / 10, 0, SubNs::ZERO);
        assert_eq!(b.level_at(0), 0);
        assert_eq!(b.level_at(1), 511);
        // One byte takes 1e9/511 ns, rounded up to whole nanoseconds.
        assert_eq!(b.ready_at(U, 0), (NANOS).div_ceil(511));
        assert!(b.level_at(NANOS.div_ceil(511)) >= U);
        assert!(b.level_at(NANOS.div_ceil(511) - 1) < U);
    }

    #[test]
    fn large_request_waits_for_full_bucket_then_goes_into_debt() {
        let mut b = Bucket::full(511, 511 * U / 10, 0);
        b.take(U, 0, SubNs::ZERO);
        // 4 KiB > capacity: must wait for a full bucket, not for 4096 bytes.
        let t = b.ready_at(4096 * U, 0);
        assert_eq!(t, NANOS.div_ceil(511));
        b.take(4096 * U, t, SubNs::ZERO);
        assert!(b.level_at(t) < 0);
        // Debt is repaid at the rate before the next request: 4096/511 s later.
        let next = b.ready_at(4096 * U, t);
        assert_eq!(next - t, (4096 * NANOS).div_ceil(511));
    }

    #[test]
    fn standing_reports_the_fraction_of_a_nanosecond_since_the_threshold() {
        let mut b = Bucket::full(3_000, 0, 0);
        b.take(U, 0, SubNs::ZERO);
        // One token takes 333,333 1/3 ns: reached 2/3 ns before the whole nanosecond 333,334.
        assert_eq!(b.standing(U, 333_333), Err(333_334));
        assert_eq!(b.standing(U, 333_334), Ok(Some(SubNs::new(2_000, 3_000))));
        assert_eq!(b.standing(U, 333_335), Ok(None));
        assert_eq!(b.standing(0, 0), Ok(None), "a zero cost never waits");
    }

    #[test]
    fn a_full_bucket_keeps_the_refill_of_the_fraction_it_was_charged_early() {
        let mut b = Bucket::full(3_000, 0, 0);
        b.take(U, 0, SubNs::ZERO);
        let early = b.standing(U, 333_334).unwrap().unwrap();
        b.take(U, 333_334, early);
        // Charged as of 333,333 1/3 ns: the 2,000 nano-units since then are kept ...
        assert_eq!(b.level_at(333_334), -U + 2_000);
        // ... so the third token is due at exactly 666,666 2/3 ns, not 666,668.
        assert_eq!(b.standing(U, 333_334), Err(666_667));
        // Without the fraction the bucket would drift by 2/3 ns per request.
        let mut rounded = Bucket::full(3_000, 0, 0);
        rounded.take(U, 0, SubNs::ZERO);
        rounded.take(U, 333_334, SubNs::ZERO);
        assert_eq!(rounded.standing(U, 333_334), Err(666_668));
    }

    #[test]
    fn the_fraction_never_lifts_a_bucket_above_its_capacity_after_the_charge() {
        // 10 nano-units per ns, and a cost of 3: the bucket is full again at once.
        let mut b = Bucket::full(10, 5, 0);
        b.take(5, 0, SubNs::ZERO);
        b.take(3, 1, SubNs::new(9, 10));
        assert_eq!(b.level_at(1), 5);
        assert!(b.is_valid());
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "charged before it admits")]
    fn the_invariant_checks_fire_on_a_charge_the_bucket_does_not_admit() {
        let mut b = Bucket::full(10, 5 * U, 0);
        b.take(5 * U, 0, SubNs::ZERO);
        b.take(U, 0, SubNs::ZERO);
    }

    #[test]
    fn zero_capacity_paces_strictly() {
        let mut b = Bucket::full(1000, 0, 0);
        assert_eq!(b.ready_at(U, 0), 0);
        b.take(U, 0, SubNs::ZERO);
        assert_eq!(b.ready_at(U, 0), 1_000_000);
    }

    #[test]
    fn refill_never_overflows_over_centuries() {
        let mut b = Bucket::full(u64::MAX / 2, 1 << 100, 0);
        b.take(1 << 100, 0, SubNs::ZERO);
        assert_eq!(b.level_at(u64::MAX), 1 << 100);
        assert_eq!(b.level_at(3), 3 * i128::from(u64::MAX / 2));
    }

    #[test]
    fn retune_clamps_keeps_debt_and_refills_at_old_rate_first() {
        let mut b = Bucket::full(1000, 100 * U, 0);
        b.take(100 * U, 0, SubNs::ZERO);
        // 10 ms at the old 1000/s refills 10 units, then the rate changes.
        b.retune(10, 5 * U, 10_000_000);
        assert_eq!(b.level_at(10_000_000), 5 * U);
        let mut d = Bucket::full(1000, 0, 0);
        d.take(7 * U, 0, SubNs::ZERO);
        d.retune(2000, 0, 0);
        assert_eq!(d.level_at(0), -7 * U);
    }

    #[test]
    fn restore_clamps_an_untrusted_level_and_refills_from_the_save() {
        let mut b = Bucket::full(10, 5 * U, 0);
        b.restore(-3 * U, U, 100, 100);
        assert_eq!(b.level_at(100), -3 * U);
        b.restore(i128::MIN, U, 100, 100);
        assert_eq!(b.level_at(100), -6 * U);
        b.restore(i128::MAX, U, 100, 100);
        assert_eq!(b.level_at(100), 5 * U);
        // Saved empty one second before the restart: 10/s refilled it meanwhile.
        b.restore(0, U, 1_000, 1_000 + NANOS);
        assert_eq!(b.level_at(1_000 + NANOS), 5 * U);
    }

    #[test]
    fn rescale_rounds_towards_debt() {
        let mut b = Bucket::full(1, 10 * U, 0);
        b.take(10 * U + 1, 0, SubNs::ZERO);
        b.rescale(1, 3, 0);
        assert_eq!(b.level_at(0), -1);
    }
}
