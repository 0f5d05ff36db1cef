//! What the xenbus thread and the workers say to each other. The xenbus thread owns the
//! handshake of every VBD; a worker owns the rings, the limiter and the storage I/O of the VBDs
//! it was given. Commands go to a worker, reports come back, each over a channel with a
//! `mio::Waker` so that neither side polls.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;

use crate::limiter::{LimitConfig, VbdConfig};
use crate::platform::DomId;
use crate::stats::{Filter, ResetCount, WorkerStats};
use crate::storage::Backing;
use crate::xenbus::{DeviceId, FrontendRings};

/// A VBD to serve: everything the handshake learnt, validated. Kept by the workers' pool too,
/// to hand the VBD to another worker (resumed from its state file) when it joins a group there.
#[derive(Debug, Clone)]
pub struct Connect {
    pub id: DeviceId,
    /// The front end's domain: the granting domain of every ring, data and indirect page.
    pub frontend_id: DomId,
    pub rings: FrontendRings,
    /// The storage named by `physical-device-path`, opened read-write or read-only as `mode`
    /// says.
    pub storage: Arc<Backing>,
    /// The QoS keys of the backend directory, read at connect.
    pub qos: VbdConfig,
    /// `discard-enable` and the storage's support: discards are otherwise refused
    /// (EOPNOTSUPP), as blkback does when it did not advertise `feature-discard`.
    pub discard: bool,
    /// We wrote `feature-persistent=1` (see `xenbus::keys::PERSISTENT_GRANTS`): persistent
    /// grants are used when the front end offered them too (`rings.persistent`).
    pub persistent: bool,
    /// The VBD's state file (DESIGN "Restart without guest errors"); `None` keeps none, and
    /// the VBD cannot outlive its daemon.
    pub state: Option<StatePlan>,
}

/// Where a VBD keeps its state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePlan {
    pub path: PathBuf,
    /// A previous daemon served the rings and left the file: resume from it instead of
    /// attaching afresh.
    pub resume: bool,
}

/// From the xenbus thread to a worker.
#[derive(Debug)]
pub enum Command {
    /// Map the rings, bind the channels, start serving; answer Connected or ConnectFailed.
    Connect(Box<Connect>),
    /// Stop taking requests, answer those in flight, unmap, unbind; answer Drained.
    Disconnect(DeviceId),
    /// New QoS keys for a VBD: they apply from the worker's next decision (DESIGN "Retune").
    /// A `group` this worker does not have sends the VBD to the worker that has it: it stops
    /// taking requests, finishes those in flight and answers Moved.
    Retune(DeviceId, Box<VbdConfig>),
    /// A VBD that left another worker (Moved): resume it from its state file, as a restarted
    /// daemon would, without a report unless that fails (then Broken).
    Adopt(Box<Connect>),
    /// Create the named throttle group with these limits, or retune it (DESIGN "Groups").
    Group(String, Box<LimitConfig>),
    /// Remove the named group; members still in it keep their own limits.
    RemoveGroup(String),
    /// The control socket asks for the counters and live state of every VBD and group.
    Stats(mpsc::Sender<WorkerStats>),
    /// The control socket zeroes the counters of the VBDs and groups that match.
    Reset(Filter, mpsc::Sender<ResetCount>),
    /// The daemon stops: finish what is in flight on every VBD, leave the rings as they are
    /// (the VBDs stay Connected for the next tokenbackd), and end the thread.
    Shutdown,
}

/// From a worker to the xenbus thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The VBD is served.
    Connected(DeviceId),
    /// Mapping or binding failed; nothing of the VBD is left on the worker.
    ConnectFailed(DeviceId, String),
    /// The front end broke a ring (an index overrun, a ring that could not be read): the VBD
    /// was drained and dropped by the worker; nothing of it is left there.
    Broken(DeviceId, String),
    /// After Disconnect: every in-flight request answered, rings unmapped, channels unbound.
    Drained(DeviceId),
    /// The VBD left its worker to join a group on another one: nothing in flight, rings
    /// unmapped, channels unbound, its held requests and levels in its state file for the
    /// next worker to adopt.
    Moved(DeviceId),
}

/// Where a worker sends its reports: a channel and the waker of the xenbus thread's poll.
#[derive(Clone)]
pub struct ReportSink {
    tx: mpsc::Sender<Report>,
    waker: Arc<mio::Waker>,
}

impl ReportSink {
    /// A sink and the receiving end, which the xenbus thread drains when `waker` fires.
    pub fn new(waker: Arc<mio::Waker>) -> (ReportSink, mpsc::Receiver<Report>) {
        let (tx, rx) = mpsc::channel();
        (ReportSink { tx, waker }, rx)
    }

    /// Sends a report; a xenbus thread that is gone (the daemon is stopping) is not an error.
    pub fn send(&self, report: Report) {
        if self.tx.send(report).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// What the xenbus driver needs of the workers.
pub trait Dispatch {
    /// Hands a VBD to a worker; the worker answers through the report sink.
    fn connect(&mut self, connect: Connect);
    /// Asks the worker serving `id` to drain and drop it; it answers Drained.
    fn disconnect(&mut self, id: DeviceId);
    /// Gives the worker serving `id` new QoS keys; nothing is answered.
    fn retune(&mut self, id: DeviceId, qos: VbdConfig);
    /// Creates the throttle group `name` or retunes it; nothing is answered.
    fn group(&mut self, name: &str, limits: LimitConfig);
    /// Removes the throttle group `name` (its members were retuned out of it first).
    fn remove_group(&mut self, name: &str);
    /// A worker reported Moved: hands the VBD to the worker of its group.
    fn moved(&mut self, id: DeviceId);
}
