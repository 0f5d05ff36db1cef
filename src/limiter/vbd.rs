//! One VBD's limiter: its own buckets, its FIFO of held requests, its in-flight cap and counters.
//!
//! A VBD outside a throttle group is driven directly: [`Vbd::enqueue`] every request, then
//! [`Vbd::poll_admit_due`] once per wake-up, which admits everything due and tells when to wake
//! next. A member of a group is driven through its [`Group`](super::group::Group) instead.

use std::collections::VecDeque;

use super::config::VbdConfig;
use super::cost::Request;
use super::exact::{Exact, SubNs};
use super::limits::{Balance, LimitSet};
use super::stats::{CounterSnapshot, Counters};

/// How late a wake-up may be and still have its decisions taken at the instants they were due
/// (DESIGN, "Late timers"): 1 ms. Beyond that, decisions are taken at `now` - 1 ms, so a stalled
/// worker loses the stall instead of releasing it as a burst above the limits.
pub const MAKE_UP_NS: u64 = 1_000_000;

/// A request released to storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The request as it was queued.
    pub request: Request,
    /// The whole nanosecond of the decision: the instant the request was due, which for a late
    /// wake-up lies before the `now` it was admitted at.
    pub at: u64,
    /// How long it was held until `at`, in nanoseconds.
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
    /// The exact instant of the latest decision (an admission, a retune, a restore, a slot
    /// freed under `max-inflight`): no later decision may be taken before it.
    decided: Exact,
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
            counters: Counters::new(now),
            held_since: None,
            decided: Exact::whole(now),
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
        self.admit_next(now, 0)
    }

    /// Admit every request due by `now`, each at the instant it was due but none more than
    /// [`MAKE_UP_NS`] before `now`, so that a late wake-up loses nothing (DESIGN, "Late
    /// timers"). Returns the instant to wake next, for the worker's timer: `None` when the
    /// queue is empty or the in-flight cap holds it (then [`Vbd::complete`] releases it).
    pub fn poll_admit_due(
        &mut self,
        now: u64,
        admitted: &mut impl Extend<Admitted>,
    ) -> Option<u64> {
        while let Some(next) = self.admit_next(now, MAKE_UP_NS) {
            admitted.extend(Some(next));
        }
        self.next_admit_at(now)
    }

    /// The exact instant the head request becomes admissible, for a timer; `None` when the queue
    /// is empty or the in-flight cap holds it (then [`Vbd::complete`] is what releases it).
    #[inline]
    pub fn next_admit_at(&self, now: u64) -> Option<u64> {
        self.head_ready_at(now)
    }

    /// An admitted request finished at the storage at `now`; frees a slot under `max-inflight`.
    #[inline]
    pub fn complete(&mut self, now: u64) {
        if self.at_inflight_cap() && !self.queue.is_empty() {
            // The head waited for this slot: it cannot have been due before it was freed.
            self.decided.advance_to(now);
        }
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Release every held request at `now` without charging the buckets: a VBD being drained
    /// (disconnect, daemon shutdown) answers everything it took from the ring, at most a ring's
    /// worth, and the buckets keep the invariant that debt is below one request's cost.
    pub fn release_all(&mut self, now: u64, admitted: &mut impl Extend<Admitted>) {
        let decision = Exact::whole(now.max(self.decided.at));
        while let Some(next) = self.release_head(decision) {
            admitted.extend(Some(next));
        }
    }

    /// Apply a new configuration at `now`: levels are kept (clamped to smaller capacities), refill
    /// up to `now` runs at the old rates, debt stays with its bucket, new limits start full, and
    /// queued requests are priced under the new limits at their next decision. The retune is
    /// itself a decision: none is taken before it, so a worker takes what was due by `now`
    /// ([`Vbd::poll_admit_due`]) first.
    pub fn retune(&mut self, config: &VbdConfig, now: u64) {
        self.decided.advance_to(now);
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
            counters: self.counters.snapshot(now, ongoing),
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
        self.decided.advance_to(now);
        self.limits.restore(saved, saved_at, now);
    }

    /// Zero the cumulative counters (live state is kept).
    pub fn reset_counters(&mut self, now: u64) {
        self.counters.reset(now);
        self.held_since = self.held_since.map(|_| now);
    }

    /// Decide on the head request by `now`: at the instant it became admissible, but no earlier
    /// than `make_up` before `now`, than its arrival, or than the previous decision.
    fn admit_next(&mut self, now: u64, make_up: u64) -> Option<Admitted> {
        let head = self.queue.front()?;
        let earliest = now.saturating_sub(make_up);
        let mut at = earliest.max(head.since).max(self.decided.at);
        let ready = loop {
            if at > now || self.at_inflight_cap() {
                self.note_held(now);
                return None;
            }
            match self.limits.standing(&head.request, at) {
                Ok(ready) => break ready,
                // Due within the window: decide at that instant.
                Err(due) if due > at => at = due,
                // Only a deadline saturated at the end of time is not later.
                Err(_) => {
                    self.note_held(now);
                    return None;
                }
            }
        };
        let early = self.early(at, head.since, ready, (make_up > 0).then_some(earliest));
        self.limits.charge(&head.request, at, early);
        self.release_head(Exact { at, early })
    }

    /// The head request, if any.
    pub(super) fn head(&self) -> Option<&Request> {
        self.queue.front().map(|q| &q.request)
    }

    /// When the head request satisfies the own buckets, no earlier than `now`, its arrival or
    /// the previous decision; `None` when the queue is empty or at the in-flight cap.
    pub(super) fn head_ready_at(&self, now: u64) -> Option<u64> {
        let head = self.queue.front()?;
        if self.at_inflight_cap() {
            return None;
        }
        let from = now.max(head.since).max(self.decided.at);
        Some(self.limits.ready_at(&head.request, from))
    }

    /// Whether the own buckets admit the head request at `at` (see [`LimitSet::standing`]).
    pub(super) fn head_standing(&self, at: u64) -> Result<Option<SubNs>, u64> {
        match self.queue.front() {
            Some(head) => self.limits.standing(&head.request, at),
            None => Ok(None),
        }
    }

    /// How far before `at` the decision on the head request exactly lies, given `ready`, the
    /// fraction since the last bucket reached its threshold: none when the request arrived at
    /// `at` (`since`) or `at` is the start of the make-up window (`floor`), and never before the
    /// previous decision. A bucket that reached its threshold a nanosecond or more before `at`
    /// leaves the decision at `at` itself (the caller came late and no make-up applies).
    pub(super) fn early(
        &self,
        at: u64,
        since: u64,
        ready: Option<SubNs>,
        floor: Option<u64>,
    ) -> SubNs {
        let early = match ready {
            Some(early) if since != at && floor != Some(at) => early,
            _ => SubNs::ZERO,
        };
        if self.decided.at == at {
            early.min(self.decided.early)
        } else {
            early
        }
    }

    /// Since when the head request has been queued.
    pub(super) fn head_since(&self) -> Option<u64> {
        self.queue.front().map(|head| head.since)
    }

    fn at_inflight_cap(&self) -> bool {
        self.max_inflight.is_some_and(|cap| self.in_flight >= cap)
    }

    /// Charge and release the head request as of `decision` (the caller checked it is
    /// admissible).
    pub(super) fn admit_head(&mut self, decision: Exact) -> Option<Admitted> {
        let head = self.queue.front()?;
        self.limits
            .charge(&head.request, decision.at, decision.early);
        self.release_head(decision)
    }

    /// Release the head request, already charged, and count it.
    fn release_head(&mut self, decision: Exact) -> Option<Admitted> {
        let Queued { request, since } = self.queue.pop_front()?;
        let at = decision.at;
        self.decided = decision;
        self.in_flight = self.in_flight.saturating_add(1);
        let delay_ns = at.saturating_sub(since);
        self.counters.record_admission(&request, delay_ns, at);
        if let Some(held) = self.held_since.take() {
            self.counters.add_throttled(at.saturating_sub(held));
        }
        Some(Admitted {
            request,
            at,
            delay_ns,
        })
    }

    /// Start the held-time clock when the head could not go at `now`.
    pub(super) fn note_held(&mut self, now: u64) {
        if !self.queue.is_empty() && self.held_since.is_none() {
            self.held_since = Some(now);
        }
    }
}
