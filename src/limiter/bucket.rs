//! One token bucket with lazy refill and debt, in exact integer arithmetic.
//!
//! Levels are kept in nano-units: 1e-9 of the bucket's base unit (a token, an operation or a
//! fraction of one under iops-size, a byte). A rate of `r` units/s then adds exactly `r`
//! nano-units per nanosecond, so refill is `rate x elapsed_ns` with no rounding, and capacities
//! such as 511/10 bytes are exact. Refill never multiplies more time than it takes to fill the
//! bucket, so no product can overflow however long the bucket idles.

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
        // Nanoseconds to gain `missing`, rounded up: 64-bit division whenever `missing` fits
        // (below about 1.8e10 units), and a deadline centuries ahead saturates.
        let wait = match u64::try_from(missing) {
            Ok(missing) => missing.div_ceil(self.rate),
            Err(_) => {
                u64::try_from((missing as u128).div_ceil(u128::from(self.rate))).unwrap_or(u64::MAX)
            }
        };
        now.saturating_add(wait)
    }

    /// Charge `cost` nano-units at `now` (the caller checked `ready_at`).
    pub fn take(&mut self, cost: i128, now: u64) {
        self.advance(now);
        self.level -= cost;
    }

    /// Bring the stored level up to `now`.
    pub fn advance(&mut self, now: u64) {
        if now > self.last {
            self.level = self.level_at(now);
            self.last = now;
        }
    }

    /// Change rate and capacity at `now`: refill up to `now` runs at the old rate, the level is
    /// kept (clamped to a smaller capacity), and debt stays.
    pub fn retune(&mut self, rate: u64, capacity: i128, now: u64) {
        debug_assert!(rate > 0 && capacity >= 0);
        self.advance(now);
        self.rate = rate;
        self.capacity = capacity;
        self.level = self.level.min(capacity);
    }

    /// Set the level to a saved balance taken at `saved_at`, as after a daemon restart. The
    /// balance comes from a state file and is not trusted: it is clamped to the capacity above
    /// and, below, to a debt of at most the capacity plus `max_debt`. Refill resumes from
    /// `saved_at` (or `now`, if that lies in the future).
    pub fn restore(&mut self, level: i128, max_debt: i128, saved_at: u64, now: u64) {
        self.level = level.clamp(-(self.capacity + max_debt), self.capacity);
        self.last = saved_at.min(now);
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
        b.take(511 * U / 10, 0);
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
        b.take(U, 0);
        // 4 KiB > capacity: must wait for a full bucket, not for 4096 bytes.
        let t = b.ready_at(4096 * U, 0);
        assert_eq!(t, NANOS.div_ceil(511));
        b.take(4096 * U, t);
        assert!(b.level_at(t) < 0);
        // Debt is repaid at the rate before the next request: 4096/511 s later.
        let next = b.ready_at(4096 * U, t);
        assert_eq!(next - t, (4096 * NANOS).div_ceil(511));
    }

    #[test]
    fn zero_capacity_paces_strictly() {
        let mut b = Bucket::full(1000, 0, 0);
        assert_eq!(b.ready_at(U, 0), 0);
        b.take(U, 0);
        assert_eq!(b.ready_at(U, 0), 1_000_000);
    }

    #[test]
    fn refill_never_overflows_over_centuries() {
        let mut b = Bucket::full(u64::MAX / 2, 1 << 100, 0);
        b.take(1 << 100, 0);
        assert_eq!(b.level_at(u64::MAX), 1 << 100);
        assert_eq!(b.level_at(3), 3 * i128::from(u64::MAX / 2));
    }

    #[test]
    fn retune_clamps_keeps_debt_and_refills_at_old_rate_first() {
        let mut b = Bucket::full(1000, 100 * U, 0);
        b.take(100 * U, 0);
        // 10 ms at the old 1000/s refills 10 units, then the rate changes.
        b.retune(10, 5 * U, 10_000_000);
        assert_eq!(b.level_at(10_000_000), 5 * U);
        let mut d = Bucket::full(1000, 0, 0);
        d.take(7 * U, 0);
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
        b.take(10 * U + 1, 0);
        b.rescale(1, 3, 0);
        assert_eq!(b.level_at(0), -1);
    }
}
