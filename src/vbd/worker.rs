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
use super::served::{Closing, Context, Served};
use super::timer::{monotonic_ns, Timer};
use crate::platform::{EventChannel, GrantAccess, Port};
use crate::stats::{Filter, ResetCount, WorkerStats};
use crate::storage::EngineKind;

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
            // Spinning pays only for a VBD that runs free: one its limiter holds waits for the
            // timer anyway (DESIGN "Figures on 2 cores": never while throttled).
            let free =
                |v: &usize| matches!(&self.vbds[*v], Some(vbd) if vbd.next_admission.is_none());
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

    /// Admits, submits and answers what every VBD can, retires drained ones and sets the timer.
    fn advance(&mut self, now: u64) {
        let mut next: Option<u64> = None;
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
            if vbd.is_drained() {
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
                Ok(Command::Connect(connect)) => self.connect(*connect, now),
                Ok(Command::Disconnect(id)) => {
                    match self.vbds.iter_mut().flatten().find(|v| v.id == id) {
                        Some(vbd) => vbd.close(&mut self.ctx, Closing::Disconnect, now),
                        // Already gone (its ring broke): nothing is left to drain.
                        None => self.reports.send(Report::Drained(id)),
                    }
                }
                Ok(Command::Retune(id, qos)) => {
                    // Gone meanwhile (its ring broke): nothing to retune.
                    if let Some(vbd) = self.vbds.iter_mut().flatten().find(|v| v.id == id) {
                        info!(self.log, "retuned"; "domid" => id.frontend_id.0,
                            "devid" => id.devid, "qos" => ?qos);
                        vbd.retune(&mut self.ctx, &qos, now);
                    }
                }
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

    /// Every VBD's (and group's) figures, for the control socket.
    fn stats(&self, now: u64) -> WorkerStats {
        WorkerStats {
            vbds: self.vbds.iter().flatten().map(|v| v.stats(now)).collect(),
            // Throttle groups are not served yet: none to report.
            groups: Vec::new(),
        }
    }

    /// Zeroes the counters of the VBDs (and groups) `filter` selects.
    fn reset(&mut self, filter: &Filter, now: u64) -> ResetCount {
        let mut count = ResetCount::default();
        for vbd in self.vbds.iter_mut().flatten() {
            // Served on its own: in no group.
            if filter.matches_vbd(vbd.id, None) {
                vbd.reset_stats(now);
                count.vbds += 1;
            }
        }
        count
    }

    fn shutdown(&mut self, now: u64) {
        self.stopping = true;
        for vbd in self.vbds.iter_mut().flatten() {
            vbd.close(&mut self.ctx, Closing::Shutdown, now);
        }
    }

    fn connect(&mut self, connect: Connect, now: u64) {
        let id = connect.id;
        let log = self.log.new(slog::o!(
            "domid" => id.frontend_id.0, "devid" => id.devid));
        let served = Served::connect(&mut self.ctx, &mut self.evtchn, connect, self.engine, now);
        let mut vbd = match served {
            Ok(vbd) => vbd,
            Err(reason) => {
                warn!(log, "connect failed"; "reason" => &reason);
                return self.reports.send(Report::ConnectFailed(id, reason));
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
            return self.reports.send(Report::ConnectFailed(
                id,
                format!("registering storage: {e}"),
            ));
        }
        for (port, q) in vbd.ports() {
            self.ports.insert(port, (v, q));
        }
        info!(log, "connected"; "queues" => vbd.ports().count(), "engine" => ?self.engine);
        // The front end may have published already; the loop re-arms before it sleeps.
        vbd.take_all(&mut self.ctx, now);
        self.vbds[v] = Some(vbd);
        self.reports.send(Report::Connected(id));
    }

    /// Drops a drained VBD: unbinds, unmaps, and says so.
    fn retire(&mut self, v: usize) {
        let Some(mut vbd) = self.vbds[v].take() else {
            return;
        };
        let fd = vbd.completion_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        for (port, _) in vbd.ports() {
            self.ports.remove(&port);
        }
        vbd.unbind(&mut self.evtchn);
        // Disconnected for good: no daemon will resume it. At shutdown the file stays.
        if vbd.closing() != Some(&Closing::Shutdown) {
            vbd.remove_state();
        }
        let report = match vbd.closing() {
            Some(Closing::Broken(reason)) => {
                warn!(self.log, "front end broke its ring; disconnected";
                    "domid" => vbd.id.frontend_id.0, "devid" => vbd.id.devid, "reason" => reason);
                Some(Report::Broken(vbd.id, reason.clone()))
            }
            Some(Closing::Disconnect) => Some(Report::Drained(vbd.id)),
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
