//! A worker: one thread, one mio loop, the VBDs it was given. It wakes on its event channel
//! (front ends published requests), on each VBD's storage completions, on its one timer (the
//! limiter's next admission) and on commands from the xenbus thread; nothing else runs on it
//! and nothing it owns is locked.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slog::{error, info, warn, Logger};

use super::control::{Command, Connect, Report, ReportSink};
use super::groups::GroupReport;
use super::served::{Closing, Context, Served};
use super::timer::{monotonic_ns, Timer};
use crate::limiter::{Admitted, LimitConfig, VbdConfig};
use crate::platform::{EventChannel, GrantAccess, Port};
use crate::stats::{self, Filter, QosInForce, ResetCount, WorkerStats};
use crate::storage::EngineKind;
use crate::xenbus::DeviceId;

pub(super) const WAKER: Token = Token(0);
const EVTCHN: Token = Token(1);
const TIMER: Token = Token(2);
/// VBD `i` is `Token(FIRST_VBD + i)`: its storage engine's completions.
const FIRST_VBD: usize = 3;
/// How long the loop keeps polling without sleeping after a request or a completion arrived:
/// a wake-up across cores costs more (DESIGN "Figures on 2 cores"), and a busy ring brings
/// the next batch sooner. Never while idle or throttled: timer wake-ups do not count.
const SPIN_NS: u64 = 50_000;

type Mapping<G> = <G as GrantAccess>::Mapping;

/// One worker's state; [`Worker::run`] is its thread.
pub(super) struct Worker<G: GrantAccess, E: EventChannel> {
    poll: Poll,
    ctx: Context<G>,
    evtchn: E,
    timer: Timer,
    vbds: Vec<Option<Served<Mapping<G>>>>,
    /// Our ports, to the VBD and queue they serve.
    ports: HashMap<Port, (usize, usize)>,
    commands: Receiver<Command>,
    reports: ReportSink,
    engine: EngineKind,
    log: Logger,
    stopping: bool,
    /// What the groups admitted, by VBD index; reused.
    routed: Vec<(usize, Admitted)>,
}

impl<G: GrantAccess, E: EventChannel> Worker<G, E> {
    /// A worker over its own grant and event-channel handles. `poll` must be the one the
    /// commands' waker was made from (registered as [`WAKER`]).
    pub(super) fn new(
        poll: Poll,
        grants: G,
        mut evtchn: E,
        commands: Receiver<Command>,
        reports: ReportSink,
        engine: EngineKind,
        log: Logger,
    ) -> io::Result<Self> {
        let timer = Timer::new()?;
        let registry = poll.registry();
        registry.register(
            &mut SourceFd(&evtchn.as_raw_fd()),
            EVTCHN,
            Interest::READABLE,
        )?;
        registry.register(&mut SourceFd(&timer.as_raw_fd()), TIMER, Interest::READABLE)?;
        // Events may be pending from before registration (edge-triggered: read them now).
        let mut stale = Vec::new();
        let _ = evtchn.read_pending(&mut stale);
        Ok(Worker {
            poll,
            ctx: Context::new(grants),
            evtchn,
            timer,
            vbds: Vec::new(),
            ports: HashMap::new(),
            commands,
            reports,
            engine,
            log,
            stopping: false,
            routed: Vec::new(),
        })
    }

    /// Serves until Shutdown and every VBD is drained, or the command channel is gone.
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut fired = Vec::new();
        // VBDs with requests or completions this round.
        let mut touched = Vec::new();
        let mut busy_until = 0;
        loop {
            let mut spin = monotonic_ns() < busy_until;
            if !spin && self.final_take() {
                // Requests raced with re-arming: serve them awake, re-arm later.
                busy_until = monotonic_ns() + SPIN_NS;
                spin = true;
            }
            match self.poll.poll(&mut events, spin.then_some(Duration::ZERO)) {
                Ok(()) => {}
                // io_uring task work and signals interrupt epoll_wait: look again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!(self.log, "worker poll failed; stopping"; "error" => %e);
                    return;
                }
            }
            let now = monotonic_ns();
            for event in events.iter() {
                match event.token() {
                    WAKER => self.commands(now),
                    EVTCHN => {
                        if let Err(e) = self.evtchn.read_pending(&mut fired) {
                            warn!(self.log, "reading the event channel"; "error" => %e);
                        }
                    }
                    TIMER => self.timer.clear(),
                    Token(n) => {
                        if let Some(Some(vbd)) = self.vbds.get_mut(n - FIRST_VBD) {
                            vbd.complete(&mut self.ctx, now);
                            touched.push(n - FIRST_VBD);
                        }
                    }
                }
            }
            for port in &fired {
                if let Some(&(v, q)) = self.ports.get(port) {
                    if let Some(vbd) = self.vbds[v].as_mut() {
                        vbd.take(&mut self.ctx, q, now);
                        touched.push(v);
                    }
                }
            }
            // Busy: front ends publish without notifying (req_event is not re-armed), so look.
            if spin {
                self.take_all(now, &mut touched);
            }
            self.advance(now);
            // Spinning pays only for a VBD that runs free: one its limiter or group holds waits
            // for the timer anyway (DESIGN "Figures on 2 cores": never while throttled).
            let free = |v: &usize| {
                matches!(&self.vbds[*v],
                    Some(vbd) if vbd.next_admission.is_none() && vbd.membership().is_none())
            };
            if touched.iter().any(free) {
                busy_until = now + SPIN_NS;
            }
            touched.clear();
            // Ports of VBDs dropped meanwhile are skipped by unmask.
            if let Err(e) = self.evtchn.unmask(&fired) {
                warn!(self.log, "unmasking ports"; "error" => %e);
            }
            fired.clear();
            if self.stopping && self.vbds.iter().all(Option::is_none) {
                return;
            }
        }
    }

    /// Takes what every VBD's rings hold; notes in `took` the VBDs that had any.
    fn take_all(&mut self, now: u64, took: &mut Vec<usize>) {
        for (v, vbd) in self.vbds.iter_mut().enumerate() {
            if let Some(vbd) = vbd {
                if vbd.take_all(&mut self.ctx, now) {
                    took.push(v);
                }
            }
        }
    }

    /// Re-arms every ring's `req_event` before sleeping and takes what raced with that;
    /// returns whether there was any.
    fn final_take(&mut self) -> bool {
        let now = monotonic_ns();
        let mut took = false;
        for vbd in self.vbds.iter_mut().flatten() {
            took |= vbd.final_take(&mut self.ctx, now);
        }
        took
    }

    /// Starts what the groups admit by `now`, in each member's VBD; when they next admit.
    fn admit_groups(&mut self, now: u64) -> Option<u64> {
        let mut routed = std::mem::take(&mut self.routed);
        let next = self.ctx.groups.admit_due(now, &mut routed);
        for (v, admitted) in routed.drain(..) {
            if let Some(Some(vbd)) = self.vbds.get_mut(v) {
                vbd.admitted(&mut self.ctx, admitted, now);
            }
        }
        self.routed = routed;
        next
    }

    /// Admits, submits and answers what every VBD can, retires drained ones, hands over
    /// settled moving ones and sets the timer.
    fn advance(&mut self, now: u64) {
        let mut next = self.admit_groups(now);
        for v in 0..self.vbds.len() {
            let Some(vbd) = self.vbds[v].as_mut() else {
                continue;
            };
            vbd.admit(&mut self.ctx, now);
            vbd.push(&mut self.evtchn);
            let id = vbd.id;
            for f in vbd.take_failures() {
                warn!(self.log, "storage failed a request; answered BLKIF_RSP_ERROR";
                    "domid" => id.frontend_id.0, "devid" => id.devid, "op" => f.op,
                    "sector" => f.sector, "sectors" => f.sectors, "error" => &f.error,
                    "unlogged_before" => f.unlogged);
            }
            let settled = vbd.is_settled();
            if settled {
                vbd.hand_over(&mut self.ctx, now);
            }
            if settled || vbd.is_drained() {
                self.retire(v);
                continue;
            }
            if let Some(at) = vbd.next_admission {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        if let Err(e) = self.timer.set(next) {
            error!(self.log, "arming the timer"; "error" => %e);
        }
    }

    fn commands(&mut self, now: u64) {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Connect(connect)) => self.connect(*connect, now, false),
                Ok(Command::Disconnect(id)) => {
                    match self.vbds.iter_mut().flatten().find(|v| v.id == id) {
                        Some(vbd) => vbd.close(&mut self.ctx, Closing::Disconnect, now),
                        // Already gone (its ring broke): nothing is left to drain.
                        None => self.reports.send(Report::Drained(id)),
                    }
                }
                Ok(Command::Retune(id, qos)) => self.retune(id, &qos, now),
                Ok(Command::Adopt(connect)) => self.connect(*connect, now, true),
                Ok(Command::Group(name, limits)) => self.set_group(&name, &limits, now),
                Ok(Command::RemoveGroup(name)) => self.remove_group(&name, now),
                // A control thread that stopped waiting is not ours to report.
                Ok(Command::Stats(reply)) => {
                    let _ = reply.send(self.stats(now));
                }
                Ok(Command::Reset(filter, reply)) => {
                    let _ = reply.send(self.reset(&filter, now));
                }
                Ok(Command::Shutdown) => self.shutdown(now),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => return self.shutdown(now),
            }
        }
    }

    fn retune(&mut self, id: DeviceId, qos: &VbdConfig, now: u64) {
        // Gone meanwhile (its ring broke): nothing to retune.
        let Some(v) = self.index_of(id) else {
            return;
        };
        info!(self.log, "retuned"; "domid" => id.frontend_id.0, "devid" => id.devid,
            "qos" => ?qos);
        // What the group admitted by now goes under the old keys too.
        self.admit_groups(now);
        if let Some(vbd) = self.vbds[v].as_mut() {
            vbd.retune(&mut self.ctx, qos, now);
        }
        self.place(v, qos.group.as_deref(), now);
    }

    /// Puts VBD `v` in the group `wanted` names, or out of any: a group on this worker is
    /// joined at once; one elsewhere makes the VBD move there (DESIGN "Workers and groups").
    fn place(&mut self, v: usize, wanted: Option<&str>, now: u64) {
        let Some(vbd) = self.vbds[v].as_mut() else {
            return;
        };
        // Closing or moving: the worker that adopts a moving VBD places it by its latest keys.
        if vbd.closing().is_some() {
            return;
        }
        let current = vbd.membership().map(|m| m.group);
        let name = |key| self.ctx.groups.name(key).map(str::to_owned);
        if current.and_then(name).as_deref() == wanted {
            return;
        }
        let (domid, devid) = (vbd.id.frontend_id.0, vbd.id.devid);
        match wanted.map(|name| (name, self.ctx.groups.find(name))) {
            None => {
                info!(self.log, "left its group"; "domid" => domid, "devid" => devid);
                vbd.leave(&mut self.ctx);
            }
            Some((name, Some(key))) => {
                info!(self.log, "joined a group"; "domid" => domid, "devid" => devid,
                    "group" => name);
                vbd.join(&mut self.ctx, key, v);
            }
            Some((name, None)) if vbd.keeps_state() => {
                info!(self.log, "moving to the worker of its group"; "domid" => domid,
                    "devid" => devid, "group" => name);
                vbd.close(&mut self.ctx, Closing::Move, now);
            }
            // Only the state file carries a VBD to another worker.
            Some((name, None)) => {
                warn!(self.log, "cannot move to the worker of its group without a state file; \
                    served on its own limits"; "domid" => domid, "devid" => devid,
                    "group" => name);
                vbd.leave(&mut self.ctx);
            }
        }
    }

    fn set_group(&mut self, name: &str, limits: &LimitConfig, now: u64) {
        // Due admissions go under the old limits.
        self.admit_groups(now);
        let created = self.ctx.groups.set(name, limits, now);
        let what = if created {
            "group created"
        } else {
            "group retuned"
        };
        info!(self.log, "{}", what; "group" => name, "limits" => ?limits);
    }

    fn remove_group(&mut self, name: &str, now: u64) {
        let Some(key) = self.ctx.groups.find(name) else {
            return;
        };
        self.admit_groups(now);
        // Members still in it keep their own limits.
        for v in self.ctx.groups.member_vbds(key) {
            if let Some(vbd) = self.vbds[v].as_mut() {
                vbd.leave(&mut self.ctx);
            }
        }
        if let Some(last) = self.ctx.groups.remove(key, now) {
            log_group(&self.log, "group removed", &last);
        }
    }

    /// Each group's counters and members at `now`.
    pub(super) fn group_stats(&self, now: u64) -> Vec<GroupReport> {
        self.ctx.groups.reports(now)
    }

    fn index_of(&self, id: DeviceId) -> Option<usize> {
        self.vbds
            .iter()
            .position(|vbd| vbd.as_ref().is_some_and(|vbd| vbd.id == id))
    }

    /// Every VBD's and group's figures, for the control socket.
    fn stats(&self, now: u64) -> WorkerStats {
        let groups = &self.ctx.groups;
        let group = |report: GroupReport| stats::GroupReport {
            name: report.name,
            // The keys in force are the driver's: the control thread adds them.
            qos: QosInForce::default(),
            members: report.members,
            limiter: report.stats,
        };
        WorkerStats {
            vbds: (self.vbds.iter().flatten())
                .map(|v| v.stats(groups, now))
                .collect(),
            groups: groups.reports(now).into_iter().map(group).collect(),
        }
    }

    /// Zeroes the counters of the VBDs and groups `filter` selects.
    fn reset(&mut self, filter: &Filter, now: u64) -> ResetCount {
        let mut count = ResetCount::default();
        for vbd in self.vbds.iter_mut().flatten() {
            let group = vbd.group_name(&self.ctx.groups).map(str::to_owned);
            if filter.matches_vbd(vbd.id, group.as_deref()) {
                vbd.reset_stats(&mut self.ctx.groups, now);
                count.vbds += 1;
            }
        }
        count.groups = (self.ctx.groups).reset_counters(|name| filter.matches_group(name), now);
        count
    }

    fn shutdown(&mut self, now: u64) {
        for report in self.group_stats(now) {
            log_group(&self.log, "group at shutdown", &report);
        }
        self.stopping = true;
        for vbd in self.vbds.iter_mut().flatten() {
            vbd.close(&mut self.ctx, Closing::Shutdown, now);
        }
    }

    /// Serves a VBD handed over by the xenbus thread, or (`adopted`) by another worker.
    fn connect(&mut self, connect: Connect, now: u64, adopted: bool) {
        let id = connect.id;
        let group = connect.qos.group.clone();
        let log = self.log.new(slog::o!(
            "domid" => id.frontend_id.0, "devid" => id.devid));
        let served = Served::connect(&mut self.ctx, &mut self.evtchn, connect, self.engine, now);
        let vbd = match served {
            Ok(vbd) => vbd,
            Err(reason) => {
                warn!(log, "connect failed"; "reason" => &reason, "adopted" => adopted);
                return self.reports.send(failed(id, reason, adopted));
            }
        };
        let v = match self.vbds.iter().position(Option::is_none) {
            Some(v) => v,
            None => {
                self.vbds.push(None);
                self.vbds.len() - 1
            }
        };
        let fd = vbd.completion_fd();
        let registered = self.poll.registry().register(
            &mut SourceFd(&fd),
            Token(FIRST_VBD + v),
            Interest::READABLE,
        );
        if let Err(e) = registered {
            vbd.unbind(&mut self.evtchn);
            let reason = format!("registering storage: {e}");
            return self.reports.send(failed(id, reason, adopted));
        }
        for (port, q) in vbd.ports() {
            self.ports.insert(port, (v, q));
        }
        info!(log, "connected"; "queues" => vbd.ports().count(), "engine" => ?self.engine,
            "adopted" => adopted);
        self.vbds[v] = Some(vbd);
        // The pool sent it to its group's worker (a group removed meanwhile: it is on its own).
        self.place(v, group.as_deref(), now);
        // The front end may have published already; the loop re-arms before it sleeps.
        if let Some(vbd) = self.vbds[v].as_mut() {
            vbd.take_all(&mut self.ctx, now);
        }
        if !adopted {
            self.reports.send(Report::Connected(id));
        }
    }

    /// Drops a drained (or settled moving) VBD: unbinds, unmaps, and says so.
    fn retire(&mut self, v: usize) {
        let Some(mut vbd) = self.vbds[v].take() else {
            return;
        };
        vbd.leave(&mut self.ctx);
        let fd = vbd.completion_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        for (port, _) in vbd.ports() {
            self.ports.remove(&port);
        }
        vbd.unbind(&mut self.evtchn);
        // Disconnected for good: no daemon will resume it. At shutdown the file stays, and
        // when it moves, the next worker resumes from it.
        if !matches!(vbd.closing(), Some(Closing::Shutdown | Closing::Move)) {
            vbd.remove_state();
        }
        let report = match vbd.closing() {
            Some(Closing::Broken(reason)) => {
                warn!(self.log, "front end broke its ring; disconnected";
                    "domid" => vbd.id.frontend_id.0, "devid" => vbd.id.devid, "reason" => reason);
                Some(Report::Broken(vbd.id, reason.clone()))
            }
            Some(Closing::Disconnect) => Some(Report::Drained(vbd.id)),
            Some(Closing::Move) => Some(Report::Moved(vbd.id)),
            // The daemon stops: the VBD stays Connected for the next one.
            Some(Closing::Shutdown) | None => None,
        };
        let domid = vbd.id.frontend_id;
        drop(vbd);
        // A guest's last VBD here: nothing of its domain needs to stay open (on the simulated
        // host, its memory and grant table; a dead guest's would otherwise stay mapped until
        // this worker next opens a domain).
        if self
            .vbds
            .iter()
            .flatten()
            .all(|v| v.id.frontend_id != domid)
        {
            self.ctx.grants.forget(domid);
        }
        if let Some(report) = report {
            self.reports.send(report);
        }
    }
}

/// What a failed connect reports: an adopted VBD was connected already, so its rings are
/// broken as far as the xenbus thread is concerned.
fn failed(id: DeviceId, reason: String, adopted: bool) -> Report {
    match adopted {
        true => Report::Broken(id, reason),
        false => Report::ConnectFailed(id, reason),
    }
}

fn log_group(log: &Logger, what: &str, report: &GroupReport) {
    let counters = &report.stats.counters;
    info!(log, "{}", what; "group" => &report.name, "members" => report.members.len(),
        "requests_read" => counters.requests.read, "requests_write" => counters.requests.write,
        "throttled_ns" => counters.throttled_ns);
}
