//! One connected VBD on its worker: requests taken from its rings, held by its limiter, ordered
//! around flushes and barriers, moved by grant copy, done by its storage engine, answered.
//!
//! Each request taken from a ring gets a slot (its tag for the engine) until it is answered.
//! A request's life: Held (in the limiter) -> Gated (admitted, waiting behind a flush or
//! barrier) -> one or more storage stages -> answered. A bad request fails alone; a broken
//! ring ends the VBD once what it has in flight is done.

use std::collections::VecDeque;
use std::sync::Arc;

use blkif::{DataSegment, IndirectPage, Limits, RequestKind, SharedRing, Status};

use super::control::Connect;
use super::groups::{GroupKey, Groups, Membership};
use super::persistent::{move_data, PersistentGrants};
use super::plan::{Plan, Work};
use super::queue::Queue;
use super::state_file::{Saved, SavedRequest, Shape, StateFile};
use crate::limiter::{self, Admitted, VbdConfig};
use crate::platform::{
    CopyOp, DomId, EventChannel, GrantAccess, GrantMapping, GrantRef, GuestRange, LocalBuf, Port,
};
use crate::stats::{StorageCounters, VbdReport};
use crate::storage::{
    open_engine, BufPool, Completion, Engine, EngineKind, IoBuf, Op, OrderGate, RequestError,
};
use crate::xenbus::keys::MAX_INDIRECT_SEGMENTS;
use crate::xenbus::DeviceId;

/// What a worker lends each of its VBDs while it works on them.
pub struct Context<G> {
    pub grants: G,
    pub pool: BufPool,
    /// Indirect pages are copied here (one per page a request may use) and read from here: the
    /// guest cannot change them while they are validated.
    indirect: Vec<(SharedRing, IndirectPage)>,
    page: Vec<u8>,
    /// The worker's throttle groups, which hold their members' limiters.
    pub groups: Groups,
}

impl<G: GrantAccess> Context<G> {
    pub fn new(grants: G) -> Self {
        let pages =
            (MAX_INDIRECT_SEGMENTS as usize).div_ceil(blkif::abi::SEGMENTS_PER_INDIRECT_PAGE);
        let indirect = (0..pages)
            .map(|_| {
                let ring = SharedRing::allocate(0).expect("order 0 is valid");
                let page = IndirectPage::new(ring.clone()).expect("one page");
                (ring, page)
            })
            .collect();
        Context {
            grants,
            pool: BufPool::with_capacity(256),
            indirect,
            page: vec![0; crate::platform::PAGE_SIZE],
            groups: Groups::default(),
        }
    }
}

/// Why the VBD is being wound down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closing {
    /// The xenbus thread asked (front end closing, device removed, guest gone).
    Disconnect,
    /// The daemon stops; the rings stay as they are.
    Shutdown,
    /// The front end broke a ring.
    Broken(String),
    /// The VBD goes to another worker, to join a group there: no more requests are taken or
    /// admitted; once those in flight are answered its state file is handed over. Any other
    /// closing overrides it.
    Move,
}

/// Where a VBD's requests are admitted.
enum Limiter {
    // Boxed: its counters make it large, and a membership is small.
    Own(Box<limiter::Vbd>),
    /// Its limiter is held by a group on the same worker, which admits for it.
    Member(Membership),
}

/// A limiter without limits or requests: a placeholder while the real one changes hands.
fn unlimited() -> Box<limiter::Vbd> {
    Box::new(limiter::Vbd::new(&VbdConfig::default(), 0))
}

impl Limiter {
    fn vbd_ref<'a>(&'a self, groups: &'a Groups) -> &'a limiter::Vbd {
        match self {
            Limiter::Own(vbd) => vbd,
            Limiter::Member(membership) => groups
                .member(*membership)
                .expect("a member's group outlives its membership"),
        }
    }

    fn vbd<'a>(&'a mut self, groups: &'a mut Groups) -> &'a mut limiter::Vbd {
        match self {
            Limiter::Own(vbd) => vbd,
            // The worker takes every member out of a group before removing it.
            Limiter::Member(membership) => groups
                .member_mut(*membership)
                .expect("a member's group outlives its membership"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Free,
    /// In the limiter's queue.
    Held,
    /// Admitted; waiting in the order gate.
    Gated,
    /// A flush that comes before the request's data.
    PreFlush,
    /// The read, write or discard itself.
    Data,
    /// The flush that ends a flush request (after its data, if any).
    PostFlush,
}

struct Slot {
    queue: usize,
    request: blkif::Request,
    plan: Plan,
    segments: Vec<DataSegment>,
    stage: Stage,
    /// When its first storage stage was submitted, for the storage latency.
    submitted: u64,
}

/// A connected VBD.
pub struct Served<M: GrantMapping> {
    pub id: DeviceId,
    frontend: DomId,
    queues: Vec<Queue<M>>,
    /// Each queue's persistent grants, by queue index; empty when they are not in use.
    persistent: Vec<PersistentGrants>,
    engine: Box<dyn Engine + Send>,
    discard: bool,
    limiter: Limiter,
    gate: OrderGate<u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Operations the engine had no room for, in order.
    stalled: VecDeque<(u64, Op)>,
    /// Slots the gate released, to start in order.
    ready: VecDeque<u32>,
    closing: Option<Closing>,
    scratch: blkif::Request,
    admitted: Vec<Admitted>,
    completions: Vec<Completion>,
    /// When the limiter next admits, for the worker's timer.
    pub next_admission: Option<u64>,
    /// The front end was not asked to notify: the limiter holds requests until a timer that
    /// wakes the worker anyway, and new ones are read from the rings then (see `final_take`).
    quiet: bool,
    /// Where ring indices, bucket levels and unanswered requests are kept across a restart.
    state: Option<StateFile>,
    state_path: Option<std::path::PathBuf>,
    /// When bucket levels were last saved.
    levels_saved_at: u64,
    /// Requests the storage failed, for the worker's log.
    failures: FailureLog,
    /// Storage latency and failures, for the control socket.
    storage_counters: StorageCounters,
}

/// A request the storage failed (answered BLKIF_RSP_ERROR), for the worker to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFailure {
    /// "read", "write", "flush" or "discard": the step that failed.
    pub op: &'static str,
    /// The request's first 512-byte sector.
    pub sector: u64,
    /// Sectors it covers (0 for a flush without data).
    pub sectors: u64,
    /// What the storage said.
    pub error: String,
    /// Failures of this VBD left out of the log just before this one (rate limit).
    pub unlogged: u64,
}

/// At most this many failures a second per VBD reach the log: a disk gone bad under a busy
/// guest fails every request, and the log must neither flood nor take the worker's time. The
/// next one logged counts those left out.
const FAILURES_LOGGED_PER_SECOND: u32 = 10;

/// The failures kept for the log, rate-limited per VBD.
#[derive(Debug, Default)]
struct FailureLog {
    pending: Vec<StorageFailure>,
    window_start: Option<u64>,
    in_window: u32,
    unlogged: u64,
}

impl FailureLog {
    fn record(&mut self, now: u64, mut failure: StorageFailure) {
        let window = self.window_start.get_or_insert(now);
        if now.saturating_sub(*window) >= 1_000_000_000 {
            *window = now;
            self.in_window = 0;
        }
        if self.in_window < FAILURES_LOGGED_PER_SECOND {
            self.in_window += 1;
            failure.unlogged = std::mem::take(&mut self.unlogged);
            self.pending.push(failure);
        } else {
            self.unlogged += 1;
        }
    }
}

/// How often bucket levels are saved while serving (they are saved at shutdown too): a
/// daemon killed outright loses at most this much of their history.
const LEVELS_EVERY_NS: u64 = 10_000_000;

impl<M: GrantMapping> Served<M> {
    /// Maps and binds every queue and opens the storage engine; on error nothing is left.
    pub fn connect<G, E>(
        ctx: &mut Context<G>,
        evtchn: &mut E,
        connect: Connect,
        engine: EngineKind,
        now: u64,
    ) -> Result<Self, String>
    where
        G: GrantAccess<Mapping = M>,
        E: EventChannel,
    {
        let limits = Limits::new(MAX_INDIRECT_SEGMENTS).map_err(|e| e.to_string())?;
        let rings = &connect.rings;
        let (state, saved) = open_state(&connect, &limits, now)?;
        let mut queues: Vec<Queue<M>> = Vec::with_capacity(rings.queues.len());
        for queue in &rings.queues {
            let connected = Queue::connect(
                &mut ctx.grants,
                evtchn,
                connect.frontend_id,
                queue,
                (rings.ring_page_order, rings.protocol),
                limits,
                saved.as_ref().map(|s| s.rings[queues.len()]),
            );
            match connected {
                Ok(q) => queues.push(q),
                Err(e) => {
                    unbind(evtchn, &queues);
                    return Err(e);
                }
            }
        }
        let engine = match open_engine(engine, Arc::clone(&connect.storage)) {
            Ok(engine) => engine,
            Err(e) => {
                unbind(evtchn, &queues);
                return Err(format!("opening the storage engine: {e}"));
            }
        };
        // Both ends must have written feature-persistent=1.
        let persistent = match connect.persistent && rings.persistent {
            true => queues.iter().map(|_| PersistentGrants::default()).collect(),
            false => Vec::new(),
        };
        let mut served = Served {
            id: connect.id,
            frontend: connect.frontend_id,
            queues,
            persistent,
            engine,
            discard: connect.discard,
            limiter: Limiter::Own(Box::new(limiter::Vbd::new(&connect.qos, now))),
            gate: OrderGate::new(),
            slots: Vec::new(),
            free: Vec::new(),
            stalled: VecDeque::new(),
            ready: VecDeque::new(),
            closing: None,
            scratch: blkif::Request::PLACEHOLDER,
            admitted: Vec::new(),
            completions: Vec::new(),
            next_admission: None,
            quiet: false,
            state,
            state_path: connect.state.map(|plan| plan.path),
            levels_saved_at: now,
            failures: FailureLog::default(),
            storage_counters: StorageCounters::default(),
        };
        if let Some(saved) = saved {
            served.resume(ctx, evtchn, saved, now);
        }
        Ok(served)
    }

    /// Carries on where a previous daemon stopped: its bucket levels, its unanswered requests
    /// queued again in their old slots, and a notification on every channel (responses it
    /// wrote may be unpublished, and the front end may have given up waiting for an event).
    fn resume<G: GrantAccess, E: EventChannel>(
        &mut self,
        ctx: &mut Context<G>,
        evtchn: &mut E,
        saved: Saved,
        now: u64,
    ) {
        if let Some((balances, ago)) = &saved.balances {
            self.limiter.vbd(&mut ctx.groups).restore_balances(
                balances,
                now.saturating_sub(*ago),
                now,
            );
        }
        let slots = saved.requests.iter().map(|r| r.slot + 1).max().unwrap_or(0);
        for slot in 0..slots {
            self.slots.push(Slot {
                queue: 0,
                request: blkif::Request::PLACEHOLDER,
                plan: Plan::PLACEHOLDER,
                segments: Vec::new(),
                stage: Stage::Free,
                submitted: 0,
            });
            if !saved.requests.iter().any(|r| r.slot == slot) {
                self.free.push(slot);
            }
        }
        for SavedRequest {
            slot,
            queue,
            request,
        } in saved.requests
        {
            match plan(
                &mut self.slots[slot as usize],
                ctx,
                self.frontend,
                queue,
                request,
            ) {
                Ok(()) => {
                    let plan = self.slots[slot as usize].plan;
                    self.limiter
                        .vbd(&mut ctx.groups)
                        .enqueue(plan.limiter_request(u64::from(slot)), now);
                }
                Err(status) => self.finish(ctx, slot, status, now),
            }
        }
        for queue in &mut self.queues {
            queue.pushed = true;
            // A front end that closed its port meanwhile is not ours to report.
            let _ = evtchn.notify(queue.port);
        }
    }

    /// Removes the state file: the VBD is disconnected and nobody will resume it.
    pub fn remove_state(&mut self) {
        self.state = None;
        if let Some(path) = &self.state_path {
            // Already gone is as good.
            let _ = std::fs::remove_file(path);
        }
    }

    fn save_levels(&mut self, groups: &mut Groups, now: u64) {
        if let Some(file) = &mut self.state {
            file.save_balances(&self.limiter.vbd(groups).balances(now), now);
            self.levels_saved_at = now;
        }
    }

    /// Counters and live state at `now`, for the control socket.
    pub fn stats(&self, groups: &Groups, now: u64) -> VbdReport {
        let limiter = self.limiter.vbd_ref(groups);
        VbdReport {
            id: self.id,
            queues: self.queues.len(),
            group: self.group_name(groups).map(str::to_owned),
            weight: limiter.weight(),
            limiter: limiter.stats(now),
            storage: self.storage_counters.snapshot(),
        }
    }

    /// The name of the group it is served in.
    pub fn group_name<'a>(&self, groups: &'a Groups) -> Option<&'a str> {
        groups.name(self.membership()?.group)
    }

    /// Zeroes the counters (the live state, levels and queues, is kept).
    pub fn reset_stats(&mut self, groups: &mut Groups, now: u64) {
        self.limiter.vbd(groups).reset_counters(now);
        self.storage_counters = StorageCounters::default();
    }

    /// Our ports, with the queue each belongs to.
    pub fn ports(&self) -> impl Iterator<Item = (Port, usize)> + '_ {
        self.queues.iter().enumerate().map(|(i, q)| (q.port, i))
    }

    /// The storage engine's completion fd, for the worker's poll.
    pub fn completion_fd(&self) -> std::os::fd::RawFd {
        self.engine.completion_fd()
    }

    pub fn closing(&self) -> Option<&Closing> {
        self.closing.as_ref()
    }

    /// The storage failures to log since the last call (rate-limited).
    pub fn take_failures(&mut self) -> std::vec::Drain<'_, StorageFailure> {
        self.failures.pending.drain(..)
    }

    /// Notes a request the storage failed, answered `status`.
    fn failed(&mut self, slot: u32, error: &RequestError, status: Status, now: u64) {
        if status != Status::Error {
            return;
        }
        self.storage_counters.record_error();
        let entry = &self.slots[slot as usize];
        let (op, bytes) = match (entry.stage, entry.plan.work) {
            (Stage::PreFlush | Stage::PostFlush, _) => ("flush", 0),
            (_, Work::Read) => ("read", entry.plan.bytes),
            (_, Work::Write | Work::Flush { .. }) => ("write", entry.plan.bytes),
            (_, Work::Discard { len, .. }) => ("discard", len),
        };
        let failure = StorageFailure {
            op,
            sector: entry.plan.offset / 512,
            sectors: bytes / 512,
            error: error.to_string(),
            unlogged: 0,
        };
        self.failures.record(now, failure);
    }

    /// Requests taken and not yet answered.
    pub fn unanswered(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Takes every request published on queue `q` and queues it in the limiter; returns
    /// whether there was any. `req_event` is left as it is: while the worker is busy it looks
    /// at the ring again itself, and a front end that sees no new `req_event` does not notify
    /// (ring.h); [`final_take`](Self::final_take) re-arms it before the worker sleeps.
    pub fn take<G: GrantAccess>(&mut self, ctx: &mut Context<G>, q: usize, now: u64) -> bool {
        if self.closing.is_some() {
            return false;
        }
        let queue = &mut self.queues[q];
        let mut idx = queue.ring.state().req_cons;
        let start = idx;
        let mut requests = match queue.ring.requests() {
            Ok(requests) => requests,
            Err(e) => {
                self.close(ctx, Closing::Broken(e.to_string()), now);
                return false;
            }
        };
        while let Some(taken) = requests.next_into(&mut self.scratch) {
            let ring_idx = idx;
            idx = idx.wrapping_add(1);
            let answer = match taken {
                Ok(()) => {
                    let request = self.scratch;
                    match accept(
                        &mut self.slots,
                        &mut self.free,
                        ctx,
                        self.frontend,
                        q,
                        request,
                    ) {
                        Ok(slot) => {
                            // Kept before it goes anywhere: a restart redoes it.
                            if let Some(file) = &mut self.state {
                                file.record(slot, q, ring_idx, &request);
                            }
                            let plan = self.slots[slot as usize].plan;
                            self.limiter
                                .vbd(&mut ctx.groups)
                                .enqueue(plan.limiter_request(u64::from(slot)), now);
                            continue;
                        }
                        Err(status) => request.response(status),
                    }
                }
                Err(rejected) => rejected.response(),
            };
            // The slot it came from is answered at once.
            if requests.push_response(&answer).is_ok() {
                queue.pushed = true;
            }
        }
        if idx == start {
            return false;
        }
        if let Some(file) = &mut self.state {
            // Requests answered at once moved both indices.
            let state = queue.ring.state();
            file.save_req_cons(q, state.req_cons);
            file.save_rsp_prod_pvt(q, state.rsp_prod_pvt);
        }
        true
    }

    /// Takes what every queue holds; returns whether there was any.
    pub fn take_all<G: GrantAccess>(&mut self, ctx: &mut Context<G>, now: u64) -> bool {
        let mut took = false;
        for q in 0..self.queues.len() {
            took |= self.take(ctx, q, now);
        }
        took
    }

    /// Before the worker sleeps: asks every front end to notify at its next request
    /// (`RING_FINAL_CHECK_FOR_REQUESTS`) and takes what raced with that; returns whether there
    /// was any (then the worker stays awake and re-arms later).
    ///
    /// Not while the limiter holds requests until an instant: requests that arrive meanwhile
    /// only join the back of its queue, so a notification for each would be a wake-up for
    /// nothing. The rings are read at every `admit` instead, the timer's included.
    pub fn final_take<G: GrantAccess>(&mut self, ctx: &mut Context<G>, now: u64) -> bool {
        self.quiet = self.next_admission.is_some();
        if self.quiet {
            return false;
        }
        let mut took = false;
        for q in 0..self.queues.len() {
            if self.closing.is_some() {
                break;
            }
            match self.queues[q].ring.final_check_for_requests() {
                Ok(true) => took |= self.take(ctx, q, now),
                Ok(false) => {}
                Err(e) => self.close(ctx, Closing::Broken(e.to_string()), now),
            }
        }
        took
    }

    /// Starts what its own limiter admits by `now` and notes when it next will; a member's
    /// admissions come from its group ([`Served::admitted`]), a moving VBD's from nowhere.
    pub fn admit<G: GrantAccess>(&mut self, ctx: &mut Context<G>, now: u64) {
        if self.quiet {
            self.take_all(ctx, now);
        }
        if let (None, Limiter::Own(vbd)) = (&self.closing, &mut self.limiter) {
            let mut admitted = std::mem::take(&mut self.admitted);
            self.next_admission = vbd.poll_admit_due(now, &mut admitted);
            self.dispatch(ctx, &mut admitted, now);
            self.admitted = admitted;
        }
        if now.saturating_sub(self.levels_saved_at) >= LEVELS_EVERY_NS {
            self.save_levels(&mut ctx.groups, now);
        }
    }

    /// Starts a request its group admitted.
    pub fn admitted<G: GrantAccess>(&mut self, ctx: &mut Context<G>, admitted: Admitted, now: u64) {
        let mut batch = std::mem::take(&mut self.admitted);
        batch.push(admitted);
        self.dispatch(ctx, &mut batch, now);
        self.admitted = batch;
    }

    /// Applies new QoS keys. The retune is itself a decision (DESIGN "Retune"): what the old
    /// keys admitted by `now` goes first (the worker has its groups admit first too), then the
    /// new keys price what is still held; the caller's `advance` admits what they allow and
    /// re-arms the timer. Joining or leaving a group is the worker's (it knows the groups).
    pub fn retune<G: GrantAccess>(&mut self, ctx: &mut Context<G>, qos: &VbdConfig, now: u64) {
        self.admit(ctx, now);
        self.limiter.vbd(&mut ctx.groups).retune(qos, now);
    }

    /// The group this VBD is a member of.
    pub fn membership(&self) -> Option<Membership> {
        match self.limiter {
            Limiter::Own(_) => None,
            Limiter::Member(membership) => Some(membership),
        }
    }

    /// Puts the VBD's limiter, with its queue and own buckets, into `group`; it is the worker's
    /// VBD `index`. A member leaves its group first.
    pub fn join<G>(&mut self, ctx: &mut Context<G>, group: GroupKey, index: usize) {
        self.leave(ctx);
        let own = std::mem::replace(&mut self.limiter, Limiter::Own(unlimited()));
        let Limiter::Own(vbd) = own else {
            unreachable!("left its group above");
        };
        self.limiter = match ctx.groups.join(group, vbd, index, self.id) {
            Ok(membership) => Limiter::Member(membership),
            Err(vbd) => Limiter::Own(vbd),
        };
        self.next_admission = None;
    }

    /// Takes the VBD's limiter back from its group, if it is in one: its own limits alone
    /// apply from now.
    pub fn leave<G>(&mut self, ctx: &mut Context<G>) {
        if let Limiter::Member(membership) = self.limiter {
            // Gone with its group only if the worker broke its own rule; start afresh then.
            let vbd = ctx.groups.leave(membership).unwrap_or_else(unlimited);
            self.limiter = Limiter::Own(vbd);
        }
    }

    /// Whether it has a state file: only that carries it to another worker.
    pub fn keeps_state(&self) -> bool {
        self.state.is_some()
    }

    /// Whether a moving VBD may be handed over: nothing but held requests left (they are in
    /// its state file), nothing in the engine.
    pub fn is_settled(&self) -> bool {
        self.closing == Some(Closing::Move)
            && self.engine.in_flight() == 0
            && self.stalled.is_empty()
            && self
                .slots
                .iter()
                .all(|s| matches!(s.stage, Stage::Free | Stage::Held))
    }

    /// Before a settled VBD is handed over: its levels, for the worker that adopts it.
    pub fn hand_over<G>(&mut self, ctx: &mut Context<G>, now: u64) {
        self.save_levels(&mut ctx.groups, now);
    }

    /// Handles every completion the engine has, then retries operations it had no room for.
    pub fn complete<G: GrantAccess>(&mut self, ctx: &mut Context<G>, now: u64) {
        let mut completions = std::mem::take(&mut self.completions);
        // A failed read of the engine's fd leaves its completions for the next wake-up.
        let _ = self.engine.complete(&mut completions);
        for done in completions.drain(..) {
            self.completed(ctx, done, now);
        }
        self.completions = completions;
        while let Some((tag, op)) = self.stalled.pop_front() {
            if !self.submit(ctx, tag, op, now) {
                break;
            }
        }
        self.start_ready(ctx, now);
    }

    /// Sends queued operations to the kernel and answers to the front end, notifying it when
    /// the ring protocol asks for it.
    pub fn push<E: EventChannel>(&mut self, evtchn: &mut E) {
        // A failed submit leaves the operations queued in the engine for the next commit.
        let _ = self.engine.commit();
        for queue in &mut self.queues {
            if std::mem::take(&mut queue.pushed) && queue.ring.push_responses_and_check_notify() {
                // A front end that closed its port meanwhile is not ours to report.
                let _ = evtchn.notify(queue.port);
            }
        }
    }

    /// Winds the VBD down: no more requests are taken; those held by the limiter go at once
    /// (dropped unanswered on a broken ring, which cannot carry them, or at shutdown, where
    /// the state file keeps them for the next daemon), the rest finish.
    pub fn close<G: GrantAccess>(&mut self, ctx: &mut Context<G>, why: Closing, now: u64) {
        // A move holds everything back, so anything else may still take over from it.
        if self.closing.as_ref().is_some_and(|c| *c != Closing::Move) {
            return;
        }
        self.next_admission = None;
        if why == Closing::Move {
            // Held requests stay held (and in the state file) for the worker that adopts it;
            // those in flight finish here.
            self.leave(ctx);
            self.closing = Some(why);
            return;
        }
        let keep_held = match why {
            Closing::Broken(_) => true,
            Closing::Shutdown => self.state.is_some(),
            Closing::Disconnect | Closing::Move => false,
        };
        if why == Closing::Shutdown {
            // Levels before the held requests are let go: they are charged again when redone.
            self.save_levels(&mut ctx.groups, now);
        }
        self.closing = Some(why);
        let mut admitted = std::mem::take(&mut self.admitted);
        let limiter = self.limiter.vbd(&mut ctx.groups);
        limiter.release_all(now, &mut admitted);
        if keep_held {
            // Dropped unstarted: nothing can be answered on a broken ring, and at shutdown
            // their copies in the state file are redone by the next daemon.
            for a in admitted.drain(..) {
                self.slots[a.request.id as usize].stage = Stage::Free;
                self.free.push(a.request.id as u32);
                limiter.complete(now);
            }
        } else {
            self.dispatch(ctx, &mut admitted, now);
        }
        self.admitted = admitted;
    }

    /// Whether a closing VBD is done: nothing unanswered, nothing in the engine.
    pub fn is_drained(&self) -> bool {
        self.closing.is_some() && self.unanswered() == 0 && self.engine.in_flight() == 0
    }

    /// Unbinds the channels; dropping the value then unmaps the rings.
    pub fn unbind<E: EventChannel>(&self, evtchn: &mut E) {
        unbind(evtchn, &self.queues);
    }

    fn dispatch<G: GrantAccess>(
        &mut self,
        ctx: &mut Context<G>,
        admitted: &mut Vec<Admitted>,
        now: u64,
    ) {
        for a in admitted.drain(..) {
            let slot = a.request.id as u32;
            let entry = &mut self.slots[slot as usize];
            entry.stage = Stage::Gated;
            if let Some(slot) = self.gate.admit(slot, entry.plan.class()) {
                self.ready.push_back(slot);
            }
        }
        self.start_ready(ctx, now);
    }

    fn start_ready<G: GrantAccess>(&mut self, ctx: &mut Context<G>, now: u64) {
        while let Some(slot) = self.ready.pop_front() {
            self.start(ctx, slot, now);
        }
    }

    /// The first storage stage of a request the gate let through.
    fn start<G: GrantAccess>(&mut self, ctx: &mut Context<G>, slot: u32, now: u64) {
        let entry = &self.slots[slot as usize];
        let offset = entry.plan.offset;
        let (stage, op) = match entry.plan.work {
            Work::Read => (Stage::Data, self.read_op(ctx, slot)),
            Work::Write => match self.write_op(ctx, slot) {
                Ok(op) => (Stage::Data, op),
                Err(status) => return self.finish(ctx, slot, status, now),
            },
            Work::Flush { data: true, .. } => (Stage::PreFlush, Op::Flush),
            Work::Flush { data: false, .. } => (Stage::PostFlush, Op::Flush),
            Work::Discard { len, secure } => {
                if !self.discard || secure {
                    return self.finish(ctx, slot, Status::NotSupported, now);
                }
                (Stage::Data, Op::Discard { offset, len })
            }
        };
        let entry = &mut self.slots[slot as usize];
        entry.stage = stage;
        entry.submitted = now;
        self.submit(ctx, u64::from(slot), op, now);
    }

    /// Submits one operation; false when the engine is full (it waits in `stalled`).
    fn submit<G: GrantAccess>(&mut self, ctx: &mut Context<G>, tag: u64, op: Op, now: u64) -> bool {
        match self.engine.submit(tag, op) {
            Ok(()) => true,
            Err(rejected) => {
                if matches!(rejected.error, RequestError::QueueFull) {
                    self.stalled.push_front((tag, rejected.op));
                    return false;
                }
                recycle(ctx, rejected.op);
                let status = status_of(&rejected.error);
                self.failed(tag as u32, &rejected.error, status, now);
                self.finish(ctx, tag as u32, status, now);
                true
            }
        }
    }

    fn completed<G: GrantAccess>(&mut self, ctx: &mut Context<G>, done: Completion, now: u64) {
        let slot = done.tag as u32;
        let Some(entry) = self.slots.get(slot as usize) else {
            return;
        };
        let mut bufs = done.bufs;
        let status = match done.result {
            Err(e) => {
                let status = status_of(&e);
                self.failed(slot, &e, status, now);
                Some(status)
            }
            Ok(_) => match (entry.stage, entry.plan.work) {
                (Stage::PreFlush, _) => match self.write_op(ctx, slot) {
                    Ok(op) => {
                        self.slots[slot as usize].stage = Stage::Data;
                        self.submit(ctx, done.tag, op, now);
                        None
                    }
                    Err(status) => Some(status),
                },
                (Stage::Data, Work::Flush { .. }) => {
                    self.slots[slot as usize].stage = Stage::PostFlush;
                    self.submit(ctx, done.tag, Op::Flush, now);
                    None
                }
                (Stage::Data, Work::Read) => Some(self.copy_out(ctx, slot, &bufs)),
                _ => Some(Status::Okay),
            },
        };
        for buf in bufs.drain(..) {
            ctx.pool.put(buf);
        }
        if let Some(status) = status {
            self.finish(ctx, slot, status, now);
        }
    }

    /// Answers a request and frees its slot; what the gate releases is started by the caller's
    /// `start_ready`.
    fn finish<G>(&mut self, ctx: &mut Context<G>, slot: u32, status: Status, now: u64) {
        let entry = &mut self.slots[slot as usize];
        let stage = std::mem::replace(&mut entry.stage, Stage::Free);
        let queue = &mut self.queues[entry.queue];
        let rsp_idx = queue.ring.state().rsp_prod_pvt;
        if let Some(file) = &mut self.state {
            file.answering(slot, rsp_idx);
        }
        // A broken ring takes no more answers; the front end is being disconnected.
        if queue
            .ring
            .push_response(&entry.request.response(status))
            .is_ok()
        {
            queue.pushed = true;
        }
        if let Some(file) = &mut self.state {
            file.save_rsp_prod_pvt(entry.queue, queue.ring.state().rsp_prod_pvt);
            file.clear(slot);
        }
        if matches!(stage, Stage::PreFlush | Stage::Data | Stage::PostFlush) {
            let ns = now.saturating_sub(entry.submitted);
            self.storage_counters.record_latency(ns);
        }
        if stage != Stage::Held {
            let mut released = Vec::new();
            self.gate.completed(entry.plan.class(), &mut released);
            self.ready.extend(released);
            self.limiter.vbd(&mut ctx.groups).complete(now);
        }
        self.free.push(slot);
    }

    /// A read's buffers, one page per segment with the segment's sectors as its window.
    fn read_op<G>(&self, ctx: &mut Context<G>, slot: u32) -> Op {
        let entry = &self.slots[slot as usize];
        Op::Read {
            offset: entry.plan.offset,
            bufs: buffers(ctx, &entry.segments),
        }
    }

    /// A write's buffers, filled from the guest's pages.
    fn write_op<G: GrantAccess>(&mut self, ctx: &mut Context<G>, slot: u32) -> Result<Op, Status> {
        let entry = &self.slots[slot as usize];
        let mut bufs = buffers(ctx, &entry.segments);
        let moves = entry
            .segments
            .iter()
            .zip(bufs.iter_mut())
            .map(|(seg, buf)| (seg, LocalBuf::FromGuest(buf.as_mut_slice())));
        let persistent = self.persistent.get_mut(entry.queue);
        if !move_data(&mut ctx.grants, persistent, self.frontend, moves) {
            for buf in bufs {
                ctx.pool.put(buf);
            }
            return Err(Status::Error);
        }
        Ok(Op::Write {
            offset: entry.plan.offset,
            bufs,
        })
    }

    /// Copies a completed read into the guest's pages.
    fn copy_out<G: GrantAccess>(
        &mut self,
        ctx: &mut Context<G>,
        slot: u32,
        bufs: &[IoBuf],
    ) -> Status {
        let entry = &self.slots[slot as usize];
        let moves = entry
            .segments
            .iter()
            .zip(bufs)
            .map(|(seg, buf)| (seg, LocalBuf::ToGuest(buf.as_slice())));
        let persistent = self.persistent.get_mut(entry.queue);
        match move_data(&mut ctx.grants, persistent, self.frontend, moves) {
            true => Status::Okay,
            false => Status::Error,
        }
    }
}

/// Gives a request a slot and plans it; an indirect request's segments are copied out of its
/// indirect pages first. The error is the status to answer it with at once.
fn accept<G: GrantAccess>(
    slots: &mut Vec<Slot>,
    free: &mut Vec<u32>,
    ctx: &mut Context<G>,
    frontend: DomId,
    queue: usize,
    request: blkif::Request,
) -> Result<u32, Status> {
    let slot = match free.pop() {
        Some(slot) => slot,
        None => {
            slots.push(Slot {
                queue,
                request,
                plan: Plan::PLACEHOLDER,
                segments: Vec::new(),
                stage: Stage::Free,
                submitted: 0,
            });
            (slots.len() - 1) as u32
        }
    };
    match plan(&mut slots[slot as usize], ctx, frontend, queue, request) {
        Ok(()) => Ok(slot),
        Err(status) => {
            free.push(slot);
            Err(status)
        }
    }
}

/// Plans `request` in `entry` (held by the limiter next); an indirect request's segments are
/// copied out of its indirect pages first. The error is the status to answer it with.
fn plan<G: GrantAccess>(
    entry: &mut Slot,
    ctx: &mut Context<G>,
    frontend: DomId,
    queue: usize,
    request: blkif::Request,
) -> Result<(), Status> {
    let planned = match request.kind() {
        RequestKind::Indirect(indirect) => {
            read_indirect(ctx, frontend, indirect, &mut entry.segments).and_then(|sectors| {
                Plan::indirect(indirect.direction(), indirect.sector_number(), sectors)
                    .map_err(|_| Status::Error)
            })
        }
        kind => Plan::direct(kind, &mut entry.segments).map_err(|_| Status::Error),
    };
    entry.queue = queue;
    entry.request = request;
    entry.stage = Stage::Held;
    entry.plan = planned?;
    Ok(())
}

/// Copies an indirect request's pages out of the guest and reads its segments from the copy.
fn read_indirect<G: GrantAccess>(
    ctx: &mut Context<G>,
    frontend: DomId,
    indirect: &blkif::Indirect,
    segments: &mut Vec<DataSegment>,
) -> Result<u64, Status> {
    let entry_size = std::mem::size_of::<blkif::abi::Segment>();
    let per_page = blkif::abi::SEGMENTS_PER_INDIRECT_PAGE;
    let mut left = usize::from(indirect.nr_segments());
    let refs = indirect.page_refs();
    for (i, &gref) in refs.iter().enumerate() {
        let bytes = left.min(per_page) * entry_size;
        left -= left.min(per_page);
        let guest = GuestRange {
            domid: frontend,
            gref: GrantRef(gref),
            offset: 0,
        };
        let mut op = [CopyOp::from_guest(guest, &mut ctx.page[..bytes])];
        if ctx.grants.copy(&mut op) > 0 {
            return Err(Status::Error);
        }
        ctx.indirect[i]
            .0
            .write_bytes(0, &ctx.page[..bytes])
            .map_err(|_| Status::Error)?;
    }
    let pages: Vec<IndirectPage> = ctx.indirect[..refs.len()]
        .iter()
        .map(|(_, page)| page.clone())
        .collect();
    indirect
        .read_segments(&pages, segments)
        .map_err(|e| e.status())
}

fn buffers<G>(ctx: &mut Context<G>, segments: &[DataSegment]) -> Vec<IoBuf> {
    segments
        .iter()
        .map(|seg| {
            let mut buf = ctx.pool.take();
            buf.set_window(seg.offset(), seg.len());
            buf
        })
        .collect()
}

fn recycle<G>(ctx: &mut Context<G>, op: Op) {
    if let Op::Read { bufs, .. } | Op::Write { bufs, .. } = op {
        for buf in bufs {
            ctx.pool.put(buf);
        }
    }
}

/// What a storage refusal or failure answers, as blkback does: EOPNOTSUPP for what the store
/// cannot do, an error otherwise.
fn status_of(error: &RequestError) -> Status {
    match error {
        RequestError::DiscardUnsupported => Status::NotSupported,
        e if e.errno() == Some(libc::EOPNOTSUPP) => Status::NotSupported,
        _ => Status::Error,
    }
}

/// Creates the VBD's state file, or opens the one to resume from.
fn open_state(
    connect: &Connect,
    limits: &Limits,
    now: u64,
) -> Result<(Option<StateFile>, Option<Saved>), String> {
    let Some(plan) = &connect.state else {
        return Ok((None, None));
    };
    let shape = Shape {
        queues: connect.rings.queues.len() as u32,
        ring_page_order: connect.rings.ring_page_order,
        protocol: connect.rings.protocol,
    };
    let refused = |e| format!("state file {}: {e}", plan.path.display());
    if plan.resume {
        let (file, saved) = StateFile::open(&plan.path, shape, limits, now).map_err(refused)?;
        Ok((Some(file), Some(saved)))
    } else {
        Ok((
            Some(StateFile::create(&plan.path, shape).map_err(refused)?),
            None,
        ))
    }
}

fn unbind<M: GrantMapping, E: EventChannel>(evtchn: &mut E, queues: &[Queue<M>]) {
    for queue in queues {
        // A port the front end closed first is gone already.
        let _ = evtchn.unbind(queue.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(sector: u64) -> StorageFailure {
        StorageFailure {
            op: "write",
            sector,
            sectors: 8,
            error: "I/O error: Input/output error (os error 5)".into(),
            unlogged: 0,
        }
    }

    #[test]
    fn failures_reach_the_log_at_most_ten_a_second_and_the_next_one_counts_the_rest() {
        let mut log = FailureLog::default();
        let second = 1_000_000_000;
        for i in 0..25 {
            log.record(5 * second + i, failure(i));
        }
        let logged: Vec<_> = log.pending.drain(..).collect();
        assert_eq!(logged.len(), 10);
        assert_eq!(
            logged.iter().map(|f| f.sector).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        assert!(logged.iter().all(|f| f.unlogged == 0));
        // Still within the same second: counted, not kept.
        log.record(6 * second - 1, failure(99));
        assert!(log.pending.is_empty());
        // A second later: logged again, carrying the 16 left out.
        log.record(6 * second, failure(100));
        assert_eq!(log.pending.len(), 1);
        assert_eq!(log.pending[0].sector, 100);
        assert_eq!(log.pending[0].unlogged, 16);
        log.record(6 * second + 1, failure(101));
        assert_eq!(log.pending[1].unlogged, 0);
    }
}
