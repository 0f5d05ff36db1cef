//! The xenbus driver: the thread that owns xenstore for tokenbackd. It watches the backend
//! tree, runs one [`Handshake`](super::Handshake) per VBD (reference xenbus-vbd.md; Linux
//! drivers/block/xen-blkback/xenbus.c), carries out what they ask, and hands connected VBDs
//! to the workers through [`Dispatch`]. It sleeps in one mio poll on xenstore (watch events)
//! and its waker, which the workers' reports and stop share (mio allows one waker a poll).
//!
//! The xenstore client is the blocking one: every request is a short round trip to a local
//! xenstored, and the handshakes' actions are carried out one after another in any case.

mod groups;
mod qos;
mod reattach;
mod resize;
mod storage;
mod store;
mod vbds;
mod watch;

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use slog::{info, Logger};
use xenstore_wire::client::{ClientError, Endpoint};

use self::reattach::StateDir;
use self::resize::SizeCheck;
use self::store::{Store, StoreError};
use self::vbds::Vbds;
use self::watch::Fired;
use super::{BackendTree, Limits};
use crate::stats::Directory;
use crate::vbd::{Dispatch, Report};

pub use self::qos::QOS_ERROR;

const XENSTORE: Token = Token(0);
const WAKER: Token = Token(1);

/// What the driver serves and how to reach xenstored.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub endpoint: Endpoint,
    pub tree: BackendTree,
    /// `multi-queue-max-queues` we advertise (at least 1).
    pub max_queues: u32,
    /// Where VBDs keep their state files (tmpfs): a restarted daemon resumes from them.
    pub state_dir: PathBuf,
}

/// Why the driver could not start, or why its thread ended.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("connecting to xenstored: {0}")]
    Connect(#[source] ClientError),
    #[error("setting up the event loop: {0}")]
    Poll(#[from] io::Error),
    #[error("xenstore: {0}")]
    Store(#[from] StoreError),
    #[error("the xenbus thread panicked")]
    Panicked,
}

/// The driver, connected and ready to run.
pub struct Driver {
    config: DriverConfig,
    store: Store,
    poll: Poll,
    waker: Arc<Waker>,
    /// Set before the waker is woken to stop the thread.
    stop: Arc<AtomicBool>,
    log: Logger,
}

impl Driver {
    /// Connects to xenstored and sets up the poll; nothing watched yet.
    pub fn new(config: DriverConfig, log: Logger) -> Result<Driver, DriverError> {
        let store = Store::connect(config.endpoint.clone()).map_err(DriverError::Connect)?;
        let poll = Poll::new()?;
        let fd = store.as_fd().as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), XENSTORE, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let log = log.new(slog::o!("tree" => config.tree.root().to_owned()));
        Ok(Driver {
            config,
            store,
            poll,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            log,
        })
    }

    /// The waker the workers' ReportSink must use (reports are drained when it fires).
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Runs the driver on its own thread until stopped.
    ///
    /// `on_failure` runs on the driver's thread if it ends by itself (xenstore lost): how the
    /// daemon learns that it must stop.
    /// `directory` is kept up to date with what the control socket shows of each served VBD.
    pub fn spawn<D: Dispatch + Send + 'static>(
        self,
        reports: Receiver<Report>,
        dispatch: D,
        directory: Arc<Directory>,
        on_failure: impl FnOnce() + Send + 'static,
    ) -> Result<Running<D>, DriverError> {
        let root = self.config.tree.root().to_owned();
        let stop = Stop {
            flag: Arc::clone(&self.stop),
            waker: Arc::clone(&self.waker),
        };
        let limits = Limits {
            max_ring_page_order: blkif::MAX_RING_ORDER,
            max_queues: self.config.max_queues.max(1),
        };
        let states = StateDir::new(&self.config.state_dir, &self.config.tree);
        let tree = self.config.tree.clone();
        let vbds = Vbds::new(tree, states, limits, dispatch, directory, self.log.clone());
        let thread = std::thread::Builder::new()
            .name("xenbus".into())
            .spawn(move || {
                let (dispatch, ended) = Loop::new(self, reports, vbds).run();
                if ended.is_err() {
                    on_failure();
                }
                (dispatch, ended)
            })?;
        Ok(Running { root, stop, thread })
    }
}

/// How the thread is told to stop.
struct Stop {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

/// The driver's thread.
pub struct Running<D> {
    root: String,
    stop: Stop,
    thread: JoinHandle<(D, Result<(), DriverError>)>,
}

impl<D> Running<D> {
    /// The backend tree path served, e.g. /local/domain/0/backend/vbd.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The thread ended (xenstore lost, fatal error).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops the thread, joins it, and gives the dispatch back so the caller can shut the
    /// workers down (leaving VBDs connected), with the error the thread ended on, if any. The
    /// dispatch is lost only if the thread panicked.
    pub fn stop(self) -> (Option<D>, Result<(), DriverError>) {
        // Release: pairs with the thread's Acquire load after its wake-up.
        self.stop.flag.store(true, Ordering::Release);
        // A thread that already ended has its result waiting: the wake is then moot.
        let _ = self.stop.waker.wake();
        match self.thread.join() {
            Ok((dispatch, ended)) => (Some(dispatch), ended),
            Err(_) => (None, Err(DriverError::Panicked)),
        }
    }
}

/// The event loop, on the driver's thread.
struct Loop<D> {
    driver: Driver,
    reports: Receiver<Report>,
    vbds: Vbds<D>,
    sizes: SizeCheck,
}

impl<D: Dispatch> Loop<D> {
    fn new(driver: Driver, reports: Receiver<Report>, vbds: Vbds<D>) -> Self {
        Loop {
            driver,
            reports,
            vbds,
            sizes: SizeCheck::new(Instant::now()),
        }
    }

    fn run(mut self) -> (D, Result<(), DriverError>) {
        let result = self.serve();
        match &result {
            Ok(()) => info!(self.driver.log, "stopped; VBDs left as they are"),
            Err(e) => slog::crit!(self.driver.log, "xenbus driver ended"; "error" => %e),
        }
        (self.vbds.into_dispatch(), result)
    }

    fn serve(&mut self) -> Result<(), DriverError> {
        let store = &mut self.driver.store;
        // Each watch fires once at once: the groups' first event lists the groups, before
        // the tree's lists the VBDs that may name them.
        store.watch(self.vbds.groups_root(), watch::groups_token())?;
        store.watch(self.driver.config.tree.root(), watch::tree_token())?;
        store.watch(watch::RELEASE_PATH, watch::release_token())?;
        info!(self.driver.log, "watching");
        let mut events = Events::with_capacity(8);
        loop {
            self.drain()?;
            let timeout = self.sizes.timeout(Instant::now());
            match self.driver.poll.poll(&mut events, Some(timeout)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            }
            // Stop wins over anything else that woke us: VBD states are left as they are.
            if self.driver.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            self.check_sizes()?;
        }
    }

    /// Resizes the VBDs whose storage changed size, when a check is due.
    fn check_sizes(&mut self) -> Result<(), DriverError> {
        if self.sizes.due(Instant::now()) {
            self.vbds.refresh_sizes(&mut self.driver.store)?;
        }
        Ok(())
    }

    /// Handles every report and watch event there is. Handling one may queue more (a request
    /// reads past events into the client's queue), so until neither has anything: only then
    /// is the xenstore descriptor sure to fire again for what comes next.
    fn drain(&mut self) -> Result<(), DriverError> {
        loop {
            let mut idle = true;
            // Empty, or no worker left to report: nothing more for now.
            while let Ok(report) = self.reports.try_recv() {
                idle = false;
                self.vbds.report(&mut self.driver.store, report)?;
            }
            while let Some(event) = self.driver.store.next_event()? {
                idle = false;
                self.fired(&event.token, &event.path)?;
            }
            if idle {
                return Ok(());
            }
        }
    }

    fn fired(&mut self, token: &str, path: &str) -> Result<(), StoreError> {
        let store = &mut self.driver.store;
        let result = match watch::classify(&self.driver.config.tree, token, path) {
            Some(Fired::Tree) => self.vbds.rescan(store),
            Some(Fired::Backend(id, key)) => self.vbds.backend_changed(store, id, key),
            Some(Fired::Frontend(id)) => self.vbds.frontend_changed(store, id),
            Some(Fired::Release) => self.vbds.domains_released(store),
            Some(Fired::Groups(path)) => self.vbds.groups_changed(store, path),
            None => Ok(()),
        };
        match result {
            Err(e) if !e.is_lost() => {
                slog::warn!(self.driver.log, "xenstore refused"; "path" => path, "error" => %e);
                Ok(())
            }
            other => other,
        }
    }
}
