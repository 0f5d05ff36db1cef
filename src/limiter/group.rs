//! A throttle group: VBDs that share the group's buckets, admitted by deficit round robin.
//!
//! Each member satisfies its own buckets and the group's. Among members whose head request their
//! own buckets admit, the group picks by deficit round robin (DRR): a member's quantum is its
//! weight x 1 ms of the group's budget, and a request costs the largest of cost/rate over the
//! group's limits. The picked request then waits for the group's tokens and nobody skips ahead of
//! it, so the group never hands its budget to whoever polls first. A member whose queue empties
//! loses its deficit; members with nothing to send take no share (work-conserving).

use super::config::LimitConfig;
use super::exact::{Exact, SubNs};
use super::limits::{Balance, LimitSet};
use super::stats::{CounterSnapshot, Counters};
use super::vbd::{Admitted, Vbd, MAKE_UP_NS};

/// One weight unit's quantum: 1 ms of the group's budget, in picoseconds of limit time.
const QUANTUM_PS: u128 = 1_000_000_000;

/// A member's handle within its group; stable until the member is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(usize);

#[derive(Clone, Debug)]
struct Member {
    vbd: Vbd,
    /// Limit time (ps) the member may still spend in the current DRR round.
    deficit: u128,
}

impl Member {
    fn quantum(&self) -> u128 {
        QUANTUM_PS * u128::from(self.vbd.weight().max(1))
    }

    /// Whether the member's own buckets and in-flight cap admit its head request at `now`.
    fn eligible(&self, now: u64) -> bool {
        self.vbd.head_ready_at(now).is_some_and(|at| at <= now)
    }
}

/// A throttle group and its members.
#[derive(Clone, Debug)]
pub struct Group {
    limits: LimitSet,
    slots: Vec<Option<Member>>,
    /// The member DRR is visiting.
    cursor: usize,
    /// Whether the member at `cursor` has had its quantum for this visit.
    granted: bool,
    /// The member whose head request DRR picked and that waits for the group's tokens.
    picked: Option<usize>,
    counters: Counters,
    /// Since when a picked request has waited for the group's tokens.
    held_since: Option<u64>,
    /// The exact instant of the latest decision (an admission or a retune): no later decision
    /// may be taken before it.
    decided: Exact,
}

/// A group's counters and live state at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStats {
    /// Cumulative counters of requests admitted through the group; time throttled counts the
    /// time a picked request waited for the group's tokens.
    pub counters: CounterSnapshot,
    /// Every group bucket's balance.
    pub balances: Vec<Balance>,
    /// Members.
    pub members: usize,
    /// Requests held in the members' queues.
    pub queued: usize,
    /// The members' requests admitted and not completed.
    pub in_flight: u64,
}

impl Group {
    /// A group created at `now`, without members; its buckets start full.
    pub fn new(config: &LimitConfig, now: u64) -> Self {
        Group {
            limits: LimitSet::new(config, now),
            slots: Vec::new(),
            cursor: 0,
            granted: false,
            picked: None,
            counters: Counters::new(now),
            held_since: None,
            decided: Exact::whole(now),
        }
    }

    /// Add a member (at a request boundary of its VBD); it starts without deficit.
    pub fn add_member(&mut self, vbd: Vbd) -> MemberId {
        let member = Some(Member { vbd, deficit: 0 });
        match self.slots.iter().position(Option::is_none) {
            Some(free) => {
                self.slots[free] = member;
                MemberId(free)
            }
            None => {
                self.slots.push(member);
                MemberId(self.slots.len() - 1)
            }
        }
    }

    /// Remove a member, handing back its VBD with its queue and own buckets.
    pub fn remove_member(&mut self, id: MemberId) -> Option<Vbd> {
        let member = self.slots.get_mut(id.0)?.take()?;
        if self.picked == Some(id.0) {
            self.picked = None;
        }
        if self.cursor == id.0 {
            self.granted = false;
        }
        Some(member.vbd)
    }

    /// A member's VBD.
    pub fn member(&self, id: MemberId) -> Option<&Vbd> {
        Some(&self.slots.get(id.0)?.as_ref()?.vbd)
    }

    /// A member's VBD, to enqueue, complete or retune. Admission goes through
    /// [`Group::poll_admit`]: polling the member itself would bypass the group's buckets.
    pub fn member_mut(&mut self, id: MemberId) -> Option<&mut Vbd> {
        Some(&mut self.slots.get_mut(id.0)?.as_mut()?.vbd)
    }

    /// Every member.
    pub fn members(&self) -> impl Iterator<Item = (MemberId, &Vbd)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| Some((MemberId(i), &slot.as_ref()?.vbd)))
    }

    /// Change the group's limits at `now`, by the same rules as a VBD's own (and, like a VBD's,
    /// after taking what was due by `now`: no decision is taken before a retune).
    pub fn retune(&mut self, config: &LimitConfig, now: u64) {
        self.decided.advance_to(now);
        self.limits.retune(config, now);
    }

    /// Admit the next request of the group at `now`, if the policy allows one.
    pub fn poll_admit(&mut self, now: u64) -> Option<(MemberId, Admitted)> {
        self.admit_next(now, 0)
    }

    /// Admit every request due by `now`, each at the instant it was due but none more than
    /// [`MAKE_UP_NS`] before `now`, so that a late wake-up loses nothing (DESIGN, "Late
    /// timers"). Returns the instant to wake next, for the worker's timer: `None` when nothing
    /// can go before a completion or an enqueue.
    pub fn poll_admit_due(
        &mut self,
        now: u64,
        admitted: &mut impl Extend<(MemberId, Admitted)>,
    ) -> Option<u64> {
        while let Some(next) = self.admit_next(now, MAKE_UP_NS) {
            admitted.extend(Some(next));
        }
        self.next_admit_at(now)
    }

    /// Take the group's decisions in turn, from `make_up` before `now` (and no earlier than the
    /// previous decision), until one admits a request.
    fn admit_next(&mut self, now: u64, make_up: u64) -> Option<(MemberId, Admitted)> {
        let earliest = now.saturating_sub(make_up);
        let floor = (make_up > 0).then_some(earliest);
        let mut at = earliest.max(self.decided.at);
        while at <= now {
            if let Some(admitted) = self.decide(at, floor) {
                return Some(admitted);
            }
            if at == now {
                break;
            }
            // Refused at `at` during a late wake-up: the next decision lies later (when the
            // picked request gets the group's tokens, or a member's own buckets admit).
            match self.next_admit_at(at) {
                Some(next) if next > at => at = next,
                _ => break,
            }
        }
        self.note_held(now);
        None
    }

    /// The group's decision at `at`: pick a member by DRR unless one is picked already, and
    /// admit its head request if the group's buckets allow it. `floor` is the start of a make-up
    /// window, before which nothing is decided.
    fn decide(&mut self, at: u64, floor: Option<u64>) -> Option<(MemberId, Admitted)> {
        let still_eligible = |i: usize| self.slots[i].as_ref().is_some_and(|m| m.eligible(at));
        let index = match self.picked.filter(|&i| still_eligible(i)) {
            Some(i) => i,
            None => {
                self.picked = None;
                let i = self.pick(at)?;
                self.picked = Some(i);
                i
            }
        };
        let member = self.slots[index].as_mut()?;
        let head = *member.vbd.head()?;
        let Ok(group_ready) = self.limits.standing(&head, at) else {
            self.held_since.get_or_insert(at);
            return None;
        };
        let own_ready = member.vbd.head_standing(at).ok()?;
        let ready = SubNs::shortest(own_ready, group_ready);
        let since = member.vbd.head_since()?;
        let mut early = member.vbd.early(at, since, ready, floor);
        if self.decided.at == at {
            early = early.min(self.decided.early);
        }
        let decision = Exact { at, early };
        self.picked = None;
        member.deficit = member.deficit.saturating_sub(self.limits.time_cost(&head));
        self.limits.charge(&head, at, early);
        let admitted = member.vbd.admit_head(decision)?;
        self.decided = decision;
        if member.vbd.queued() == 0 {
            member.deficit = 0;
            if self.cursor == index {
                self.advance();
            }
        }
        self.counters
            .record_admission(&admitted.request, admitted.delay_ns, at);
        if let Some(since) = self.held_since.take() {
            self.counters.add_throttled(at.saturating_sub(since));
        }
        Some((MemberId(index), admitted))
    }

    /// The exact instant of the next decision, for a timer: when the picked request gets the
    /// group's tokens, or else when a member's own buckets first admit its head request (the
    /// group then picks). `None` when nothing can go before a completion or an enqueue.
    pub fn next_admit_at(&self, now: u64) -> Option<u64> {
        let now = now.max(self.decided.at);
        if let Some(member) = self.picked.and_then(|i| self.slots[i].as_ref()) {
            if let (true, Some(head)) = (member.eligible(now), member.vbd.head()) {
                return Some(self.limits.ready_at(head, now));
            }
        }
        self.slots
            .iter()
            .flatten()
            .filter_map(|m| m.vbd.head_ready_at(now))
            .min()
    }

    /// Counters and live state at `now`.
    pub fn stats(&self, now: u64) -> GroupStats {
        let ongoing = self.held_since.map_or(0, |since| now.saturating_sub(since));
        let members = || self.slots.iter().flatten();
        GroupStats {
            counters: self.counters.snapshot(now, ongoing),
            balances: self.limits.balances(now).collect(),
            members: members().count(),
            queued: members().map(|m| m.vbd.queued()).sum(),
            in_flight: members().map(|m| u64::from(m.vbd.in_flight())).sum(),
        }
    }

    /// Zero the group's cumulative counters (not its members').
    pub fn reset_counters(&mut self, now: u64) {
        self.counters.reset(now);
        self.held_since = self.held_since.map(|_| now);
    }

    /// Deficit round robin over the members eligible at `now`. Rounds in which nobody can pay
    /// for its head request are skipped arithmetically, so a decision visits each member at most
    /// about twice however small the quantum is next to the costs.
    fn pick(&mut self, now: u64) -> Option<usize> {
        let n = self.slots.len();
        for _pass in 0..3 {
            let mut fewest_rounds: Option<u128> = None;
            for _ in 0..n {
                let i = self.cursor;
                if let Some(member) = self.slots[i].as_mut() {
                    if member.eligible(now) {
                        let cost = member.vbd.head().map_or(0, |h| self.limits.time_cost(h));
                        let quantum = member.quantum();
                        if !self.granted {
                            member.deficit += quantum;
                            self.granted = true;
                        }
                        if member.deficit >= cost {
                            return Some(i);
                        }
                        let rounds = (cost - member.deficit).div_ceil(quantum);
                        fewest_rounds = Some(fewest_rounds.map_or(rounds, |r| r.min(rounds)));
                    } else if member.vbd.queued() == 0 {
                        member.deficit = 0;
                    }
                }
                self.advance();
            }
            // Nobody could pay: every eligible member would collect `rounds - 1` more quanta
            // before the first of them can; grant those at once.
            let rounds = fewest_rounds?;
            for member in self.slots.iter_mut().flatten() {
                if member.eligible(now) {
                    member.deficit += (rounds - 1) * member.quantum();
                }
            }
        }
        None
    }

    fn advance(&mut self) {
        self.cursor = (self.cursor + 1) % self.slots.len().max(1);
        self.granted = false;
    }

    /// Start the held-time clock of every member that has requests and could not go.
    fn note_held(&mut self, now: u64) {
        for member in self.slots.iter_mut().flatten() {
            member.vbd.note_held(now);
        }
    }
}
