//! When to look at the storage's size again. Linux's blkback checks it in its scheduling
//! loop (drivers/block/xen-blkback/blkback.c `xen_blkif_schedule` calls `xen_vbd_resize`);
//! here the driver reads every VBD's size once a period (one stat or BLKGETSIZE64 each),
//! so an idle disk is resized too and the workers' hot path is left alone.

use std::time::{Duration, Instant};

/// How often sizes are read: a grown LV shows within a second, as an operator expects.
pub const PERIOD: Duration = Duration::from_secs(1);

/// The deadline of the next size check.
#[derive(Debug)]
pub struct SizeCheck {
    next: Instant,
}

impl SizeCheck {
    pub fn new(now: Instant) -> Self {
        SizeCheck { next: now + PERIOD }
    }

    /// How long the event loop may sleep before the next check is due.
    pub fn timeout(&self, now: Instant) -> Duration {
        self.next.saturating_duration_since(now)
    }

    /// Whether a check is due at `now`; if so, the next one is a period later.
    pub fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        // From now, not from the missed deadline: a late loop does not check in a burst.
        self.next = now + PERIOD;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_once_a_period() {
        let start = Instant::now();
        let mut check = SizeCheck::new(start);
        assert_eq!(check.timeout(start), PERIOD);
        assert!(!check.due(start + PERIOD / 2));
        assert!(check.due(start + PERIOD));
        assert!(!check.due(start + PERIOD + PERIOD / 2));
        // Late by several periods: due once, then a whole period from then.
        let late = start + PERIOD * 5;
        assert!(check.due(late));
        assert_eq!(check.timeout(late), PERIOD);
        assert!(!check.due(late));
    }
}
