//! The workers: threads each running a [`Worker`](super::worker::Worker), and the placement of
//! VBDs and throttle groups on them. The xenbus thread reaches them through [`Dispatch`].
//!
//! A group lives on one worker (DESIGN "Workers and groups"): a new group goes to the least
//! loaded worker, a VBD that names a group at connect goes to the group's worker, and one that
//! joins a group on another worker by retune is moved there: its worker answers in-flight
//! requests, leaves the held ones in the VBD's state file and reports Moved; the group's worker
//! then adopts it from that file, as a restarted daemon would.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::{Poll, Waker};
use slog::Logger;

use super::control::{Command, Connect, Dispatch, Report, ReportSink, StatePlan};
use super::worker::{Worker, WAKER};
use crate::limiter::{LimitConfig, VbdConfig};
use crate::platform::Platform;
use crate::storage::EngineKind;
use crate::xenbus::DeviceId;

/// Why the workers could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the platform's grant or event-channel device: {0}")]
    Platform(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("setting up a worker's event loop: {0}")]
    Io(#[from] io::Error),
}

/// How a command reaches a worker: its channel and the waker of its poll.
#[derive(Clone)]
pub struct WorkerLink {
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
}

impl WorkerLink {
    /// Sends a command; false when the worker has ended (its poll failed, which it logged,
    /// or the daemon is stopping).
    pub fn send(&self, command: Command) -> bool {
        let sent = self.commands.send(command).is_ok();
        if sent {
            let _ = self.waker.wake();
        }
        sent
    }
}

struct Handle {
    link: WorkerLink,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    fn send(&self, command: Command) {
        self.link.send(command);
    }
}

/// A VBD's worker, and how to connect it again elsewhere (with the QoS keys in force).
struct Placed {
    worker: usize,
    connect: Connect,
    /// Sent to join a group on another worker, and not adopted there yet.
    moving: bool,
}

/// The running workers.
pub struct Workers {
    handles: Vec<Handle>,
    placement: HashMap<DeviceId, Placed>,
    /// Each group's worker.
    groups: HashMap<String, usize>,
    /// State files of VBDs disconnected while they moved: if their worker had handed them
    /// over already, nobody resumes from the file, and `moved` removes it.
    left_moving: HashMap<DeviceId, PathBuf>,
    reports: ReportSink,
}

impl Workers {
    /// Starts `count` workers (at least one) on `platform`, doing storage I/O with `engine`.
    pub fn start<P: Platform>(
        platform: &P,
        count: usize,
        engine: EngineKind,
        reports: ReportSink,
        log: &Logger,
    ) -> Result<Workers, StartError>
    where
        P::Grants: 'static,
        P::Events: 'static,
    {
        let mut handles = Vec::new();
        for index in 0..count.max(1) {
            let grants = platform
                .grants()
                .map_err(|e| StartError::Platform(Box::new(e)))?;
            let evtchn = platform
                .event_channel()
                .map_err(|e| StartError::Platform(Box::new(e)))?;
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (tx, rx) = mpsc::channel();
            let log = log.new(slog::o!("worker" => index));
            let worker = Worker::new(poll, grants, evtchn, rx, reports.clone(), engine, log)?;
            let thread = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || worker.run())?;
            handles.push(Handle {
                link: WorkerLink {
                    commands: tx,
                    waker,
                },
                thread: Some(thread),
            });
        }
        Ok(Workers {
            handles,
            placement: HashMap::new(),
            groups: HashMap::new(),
            left_moving: HashMap::new(),
            reports,
        })
    }

    /// Every worker's link, for the control socket's queries.
    pub fn links(&self) -> Vec<WorkerLink> {
        self.handles.iter().map(|h| h.link.clone()).collect()
    }

    /// Tells every worker to finish what is in flight and stop, leaving the VBDs connected,
    /// and waits for them.
    pub fn shutdown(mut self) {
        for handle in &self.handles {
            handle.send(Command::Shutdown);
        }
        for handle in &mut self.handles {
            if let Some(thread) = handle.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// The least loaded worker: the fewest VBDs and groups.
    fn pick(&self) -> usize {
        let mut load = vec![0usize; self.handles.len()];
        let vbds = self.placement.values().map(|placed| placed.worker);
        for w in vbds.chain(self.groups.values().copied()) {
            load[w] += 1;
        }
        (0..load.len()).min_by_key(|&w| load[w]).unwrap_or(0)
    }

    /// The worker of the group a VBD with these keys belongs to, if it names one.
    fn group_worker(&self, qos: &VbdConfig) -> Option<usize> {
        let name = qos.group.as_ref()?;
        self.groups.get(name).copied()
    }
}

impl Dispatch for Workers {
    fn connect(&mut self, connect: Connect) {
        let worker = self
            .group_worker(&connect.qos)
            .unwrap_or_else(|| self.pick());
        let placed = Placed {
            worker,
            connect: connect.clone(),
            moving: false,
        };
        self.left_moving.remove(&connect.id);
        self.placement.insert(connect.id, placed);
        self.handles[worker].send(Command::Connect(Box::new(connect)));
    }

    fn disconnect(&mut self, id: DeviceId) {
        match self.placement.remove(&id) {
            Some(placed) => {
                if let (true, Some(plan)) = (placed.moving, placed.connect.state) {
                    self.left_moving.insert(id, plan.path);
                }
                self.handles[placed.worker].send(Command::Disconnect(id));
            }
            // Never connected: nothing to drain.
            None => self.reports.send(Report::Drained(id)),
        }
    }

    fn retune(&mut self, id: DeviceId, qos: VbdConfig) {
        // Not placed: it is being disconnected, or was never connected.
        let home = self.group_worker(&qos);
        if let Some(placed) = self.placement.get_mut(&id) {
            placed.moving |= home.is_some_and(|w| w != placed.worker);
            placed.connect.qos = qos.clone();
            // A group the worker does not have makes it move the VBD (then `moved`).
            self.handles[placed.worker].send(Command::Retune(id, Box::new(qos)));
        }
    }

    fn group(&mut self, name: &str, limits: LimitConfig) {
        let worker = match self.groups.get(name) {
            Some(&worker) => worker,
            None => {
                let worker = self.pick();
                self.groups.insert(name.to_owned(), worker);
                worker
            }
        };
        self.handles[worker].send(Command::Group(name.to_owned(), Box::new(limits)));
    }

    fn remove_group(&mut self, name: &str) {
        if let Some(worker) = self.groups.remove(name) {
            self.handles[worker].send(Command::RemoveGroup(name.to_owned()));
        }
    }

    fn moved(&mut self, id: DeviceId) {
        let Some(placed) = self.placement.get(&id) else {
            // Disconnected while it moved: its old worker answers Drained, and nobody will
            // resume from the state file it left.
            if let Some(path) = self.left_moving.remove(&id) {
                // Already gone is as good.
                let _ = std::fs::remove_file(path);
            }
            return;
        };
        let worker = self
            .group_worker(&placed.connect.qos)
            .unwrap_or(placed.worker);
        let mut connect = placed.connect.clone();
        connect.state = connect.state.map(|plan| StatePlan {
            resume: true,
            ..plan
        });
        if let Some(placed) = self.placement.get_mut(&id) {
            placed.worker = worker;
            placed.moving = false;
        }
        self.handles[worker].send(Command::Adopt(Box::new(connect)));
    }
}
