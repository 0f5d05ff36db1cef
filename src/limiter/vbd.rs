//! One VBD's limiter: its own buckets, its FIFO of held requests, its in-flight cap and counters.
//!
//! A VBD outside a throttle group is driven directly: [`Vbd::enqueue`] every request, then
//! [`Vbd::poll_admit`] until it returns `None`, then arm a timer at [`Vbd::next_admit_at`]. A
//! member of a group is driven through its [`Group`](super::group::Group) instead.

use std::collections::VecDeque;

use super::config::VbdConfig;
use super::cost::Request;
use super::limits::{Balance, LimitSet};
use super::stats::{CounterSnapshot, Counters};

/// A request released to storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The request as it was queued.
    pub request: Request,
    /// How long it was held, in nanoseconds.
    pub delay_ns: u64,
}

#[derive(Clone, Copy, Debug)]
struct Queued {
    request: Request,
    since: u64,
}

/// A VBD's QoS state.
#[derive(Clone, Debug)]
pub struct Vbd {
    limits: LimitSet,
    queue: VecDeque<Queued>,
    in_flight: u32,
    max_inflight: Option<u32>,
    weight: u32,
    counters: Counters,
    /// Since when the head of the queue has been held, while it is.
    held_since: Option<u64>,
}

/// A VBD's counters and live state at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VbdStats {
    /// Cumulative counters since the last reset.
    pub counters: CounterSnapshot,
    /// Every own bucket's balance.
    pub balances: Vec<Balance>,
    /// Requests held in the queue.
    pub queued: usize,
    /// Requests admitted and not yet completed.
    pub in_flight: u32,
}

impl Vbd {
    /// A VBD that connects at `now`: its buckets start full.
    pub fn new(config: &VbdConfig, now: u64) -> Self {
        Vbd {
            limits: LimitSet::new(&config.limits, now),
            queue: VecDeque::new(),
            in_flight: 0,
            max_inflight: config.max_inflight,
            weight: config.weight,
            counters: Counters::default(),
            held_since: None,
        }
    }

    /// Queue `req`, which arrived at `now`, behind every earlier request.
    // Inline across crates too: the worker calls these for every request.
    #[inline]
    pub fn enqueue(&mut self, request: Request, now: u64) {
        self.queue.push_back(Queued {
            request,
            since: now,
        });
    }

    /// Admit the head request if every own bucket and the in-flight cap allow it at `now`.
    #[inline]
    pub fn poll_admit(&mut self, now: u64) -> Option<Admitted> {
        let head = self.queue.front()?;
        let admitted =
            !self.at_inflight_cap() && self.limits.try_charge(&head.request, now).is_ok();
        if admitted {
            self.release_head(now)
        } else {
            self.note_held(now);
            None
        }
    }

    /// The exact instant the head request becomes admissible, for a timer; `None` when the queue
    /// is empty or the in-flight cap holds it (then [`Vbd::complete`] is what releases it).
    #[inline]
    pub fn next_admit_at(&self, now: u64) -> Option<u64> {
        self.head_ready_at(now)
    }

    /// An admitted request finished at the storage; frees a slot under `max-inflight`.
    #[inline]
    pub fn complete(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Apply a new configuration at `now`: levels are kept (clamped to smaller capacities), refill
    /// up to `now` runs at the old rates, debt stays with its bucket, new limits start full, and
    /// queued requests are priced under the new limits at their next decision.
    pub fn retune(&mut self, config: &VbdConfig, now: u64) {
        self.limits.retune(&config.limits, now);
        self.max_inflight = config.max_inflight;
        self.weight = config.weight;
    }

    /// Weight within a throttle group.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Requests held.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Requests admitted and not completed.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Counters and live state at `now`.
    pub fn stats(&self, now: u64) -> VbdStats {
        let ongoing = self.held_since.map_or(0, |since| now.saturating_sub(since));
        VbdStats {
            counters: self.counters.snapshot(ongoing),
            balances: self.balances(now),
            queued: self.queue.len(),
            in_flight: self.in_flight,
        }
    }

    /// Every own bucket's balance at `now`, to be saved with the ring state across a restart.
    pub fn balances(&self, now: u64) -> Vec<Balance> {
        self.limits.balances(now).collect()
    }

    /// Restore balances saved at `saved_at` by a previous daemon (see
    /// [`Vbd::balances`]); the saved values are clamped, as they come from a file.
    pub fn restore_balances(&mut self, saved: &[Balance], saved_at: u64, now: u64) {
        self.limits.restore(saved, saved_at, now);
    }

    /// Zero the cumulative counters (live state is kept).
    pub fn reset_counters(&mut self, now: u64) {
        self.counters.reset();
        self.held_since = self.held_since.map(|_| now);
    }

    /// The head request, if any.
    pub(super) fn head(&self) -> Option<&Request> {
        self.queue.front().map(|q| &q.request)
    }

    /// When the head request satisfies the own buckets, or `None` (empty, or at the in-flight
    /// cap).
    pub(super) fn head_ready_at(&self, now: u64) -> Option<u64> {
        let head = self.queue.front()?;
        if self.at_inflight_cap() {
            return None;
        }
        Some(self.limits.ready_at(&head.request, now))
    }

    fn at_inflight_cap(&self) -> bool {
        self.max_inflight.is_some_and(|cap| self.in_flight >= cap)
    }

    /// Charge and release the head request (the caller checked it is admissible).
    pub(super) fn admit_head(&mut self, now: u64) -> Option<Admitted> {
        let head = self.queue.front()?;
        self.limits.charge(&head.request, now);
        self.release_head(now)
    }

    /// Release the head request, already charged, and count it.
    fn release_head(&mut self, now: u64) -> Option<Admitted> {
        let Queued { request, since } = self.queue.pop_front()?;
        self.in_flight = self.in_flight.saturating_add(1);
        let delay_ns = now.saturating_sub(since);
        self.counters.record_admission(&request, delay_ns);
        if let Some(held) = self.held_since.take() {
            self.counters.add_throttled(now.saturating_sub(held));
        }
        Some(Admitted { request, delay_ns })
    }

    /// Start the held-time clock when the head could not go at `now`.
    pub(super) fn note_held(&mut self, now: u64) {
        if !self.queue.is_empty() && self.held_since.is_none() {
            self.held_since = Some(now);
        }
    }
}
