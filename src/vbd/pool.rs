//! The workers: threads each running a [`Worker`](super::worker::Worker), and the placement of
//! VBDs on them. The xenbus thread reaches them through [`Dispatch`].

use std::collections::HashMap;
use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::{Poll, Waker};
use slog::Logger;

use super::control::{Command, Connect, Dispatch, Report, ReportSink};
use super::worker::{Worker, WAKER};
use crate::limiter::VbdConfig;
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

/// The running workers.
pub struct Workers {
    handles: Vec<Handle>,
    placement: HashMap<DeviceId, usize>,
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

    /// The least loaded worker.
    fn pick(&self) -> usize {
        let mut load = vec![0usize; self.handles.len()];
        for &w in self.placement.values() {
            load[w] += 1;
        }
        (0..load.len()).min_by_key(|&w| load[w]).unwrap_or(0)
    }
}

impl Dispatch for Workers {
    fn connect(&mut self, connect: Connect) {
        let worker = self.pick();
        self.placement.insert(connect.id, worker);
        self.handles[worker].send(Command::Connect(Box::new(connect)));
    }

    fn disconnect(&mut self, id: DeviceId) {
        match self.placement.remove(&id) {
            Some(worker) => self.handles[worker].send(Command::Disconnect(id)),
            // Never connected: nothing to drain.
            None => self.reports.send(Report::Drained(id)),
        }
    }

    fn retune(&mut self, id: DeviceId, qos: VbdConfig) {
        // Not placed: it is being disconnected, or was never connected.
        if let Some(&worker) = self.placement.get(&id) {
            self.handles[worker].send(Command::Retune(id, Box::new(qos)));
        }
    }
}
