//! Exact decision instants: a whole nanosecond less a fraction of one.
//!
//! Buckets reach a request's threshold at instants that are rarely whole nanoseconds: a bucket
//! refilled at 3,000 tokens/s gains a token every 333,333 1/3 ns. The limiter reports decisions
//! at the next whole nanosecond, but charges the buckets as of the exact instant, so the refill
//! of that fraction is kept and a paced VBD does not drift behind its limit.

/// A fraction of a nanosecond, `num / den` with `num < den`: how far before a whole nanosecond
/// an exact instant lies. `den` is the refill rate (nano-units per ns) of the bucket that
/// defined it, so that bucket's share of the fraction, `num` nano-units, is exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubNs {
    num: u64,
    den: u64,
}

impl SubNs {
    /// No fraction: the instant is the whole nanosecond itself.
    pub const ZERO: SubNs = SubNs { num: 0, den: 1 };

    /// `num / den` of a nanosecond; `num < den`.
    pub fn new(num: u64, den: u64) -> SubNs {
        debug_assert!(num < den, "a fraction of one nanosecond");
        SubNs { num, den }
    }

    /// Whether the fraction is nothing.
    pub fn is_zero(self) -> bool {
        self.num == 0
    }

    /// The shorter of two fractions (the later of two instants in the same nanosecond).
    pub fn min(self, other: SubNs) -> SubNs {
        let mine = u128::from(self.num) * u128::from(other.den);
        let theirs = u128::from(other.num) * u128::from(self.den);
        if mine <= theirs {
            self
        } else {
            other
        }
    }

    /// The shorter of two optional fractions, where `None` (a nanosecond or more) is longest:
    /// when several buckets admit a request, its exact instant is when the last of them began to.
    pub fn shortest(a: Option<SubNs>, b: Option<SubNs>) -> Option<SubNs> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What a bucket refilled at `rate` nano-units per ns gains during the fraction, rounded
    /// down; exact for the bucket that defined it.
    pub fn refill(self, rate: u64) -> u128 {
        if self.num == 0 || rate == self.den {
            return u128::from(self.num);
        }
        // Both factors are below 2^64, so the product fits.
        u128::from(rate) * u128::from(self.num) / u128::from(self.den)
    }
}

/// An exact instant: `at` whole nanoseconds less `early`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exact {
    /// The whole nanosecond at or after the instant, at which it is reported.
    pub at: u64,
    /// How far before `at` the instant lies.
    pub early: SubNs,
}

impl Exact {
    /// The whole nanosecond `at`.
    pub fn whole(at: u64) -> Exact {
        Exact {
            at,
            early: SubNs::ZERO,
        }
    }

    /// Move to a decision at the whole nanosecond `now`, unless a later one was taken.
    pub fn advance_to(&mut self, now: u64) {
        if now >= self.at {
            *self = Exact::whole(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_compares_fractions_of_different_denominators() {
        let third = SubNs::new(1, 3);
        let half = SubNs::new(2, 4);
        assert_eq!(third.min(half), third);
        assert_eq!(half.min(third), third);
        assert_eq!(SubNs::ZERO.min(third), SubNs::ZERO);
    }

    #[test]
    fn refill_is_exact_for_the_defining_rate_and_rounds_down_otherwise() {
        let f = SubNs::new(2_000, 3_000);
        assert_eq!(f.refill(3_000), 2_000);
        // 7 nano-units/ns for 2/3 ns: 4.67, rounded down.
        assert_eq!(f.refill(7), 4);
        assert_eq!(SubNs::ZERO.refill(u64::MAX), 0);
        let near_one = SubNs::new(u64::MAX - 1, u64::MAX);
        assert_eq!(near_one.refill(u64::MAX), u128::from(u64::MAX - 1));
        assert_eq!(near_one.refill(u64::MAX - 1), u128::from(u64::MAX - 2));
    }
}
