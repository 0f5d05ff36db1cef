//! tokenback's xenbus driver and workers serving a simulated host in this process, as
//! tokenbackd runs them, with every call the driver makes on the workers recorded.

use std::sync::{Arc, Mutex};

use tokenback::limiter::{LimitConfig, VbdConfig};
use tokenback::platform::sim::SimPlatform;
use tokenback::platform::DomId;
use tokenback::stats::Directory;
use tokenback::storage::EngineKind;
use tokenback::vbd::{Connect, Dispatch, ReportSink, Workers};
use tokenback::xenbus::driver::{Driver, DriverConfig, Running};
use tokenback::xenbus::{BackendTree, BackendType, DeviceId};
use xenstore_wire::client::Endpoint;

use super::Host;

/// A call the driver made on the workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Connect(DeviceId, Box<VbdConfig>),
    Disconnect(DeviceId),
    Retune(DeviceId, Box<VbdConfig>),
    Group(String, Box<LimitConfig>),
    RemoveGroup(String),
    Moved(DeviceId),
}

/// The workers, with every call recorded.
pub struct Recorded {
    pub workers: Workers,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Dispatch for Recorded {
    fn connect(&mut self, connect: Connect) {
        let call = Call::Connect(connect.id, Box::new(connect.qos.clone()));
        self.calls.lock().unwrap().push(call);
        self.workers.connect(connect);
    }

    fn disconnect(&mut self, id: DeviceId) {
        self.calls.lock().unwrap().push(Call::Disconnect(id));
        self.workers.disconnect(id);
    }

    fn retune(&mut self, id: DeviceId, qos: VbdConfig) {
        let call = Call::Retune(id, Box::new(qos.clone()));
        self.calls.lock().unwrap().push(call);
        self.workers.retune(id, qos);
    }

    fn group(&mut self, name: &str, limits: LimitConfig) {
        let call = Call::Group(name.to_owned(), Box::new(limits.clone()));
        self.calls.lock().unwrap().push(call);
        self.workers.group(name, limits);
    }

    fn remove_group(&mut self, name: &str) {
        self.calls
            .lock()
            .unwrap()
            .push(Call::RemoveGroup(name.to_owned()));
        self.workers.remove_group(name);
    }

    fn moved(&mut self, id: DeviceId) {
        self.calls.lock().unwrap().push(Call::Moved(id));
        self.workers.moved(id);
    }
}

/// The driver and its workers; stopped (VBDs left connected) on drop.
pub struct Daemon {
    running: Option<Running<Recorded>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Daemon {
    /// Serves `backend/vbd` of dom0 with two workers, advertising 4 queues.
    pub fn start(host: &Host) -> Daemon {
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let state_dir = host.run.root().join("state");
        std::fs::create_dir_all(&state_dir).unwrap();
        let config = DriverConfig {
            endpoint: Endpoint::Socket(host.run.xenstored_socket()),
            tree: BackendTree::new(DomId(0), BackendType::Vbd),
            max_queues: 4,
            state_dir,
        };
        let driver = Driver::new(config, log.clone()).unwrap();
        let (sink, reports) = ReportSink::new(driver.waker());
        let platform = SimPlatform::new(host.run.clone(), DomId(0));
        let workers = Workers::start(&platform, 2, EngineKind::Threads, sink, &log).unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = Recorded {
            workers,
            calls: Arc::clone(&calls),
        };
        let directory = Arc::new(Directory::default());
        let running = driver.spawn(reports, recorded, directory, || {}).unwrap();
        assert_eq!(running.root(), "/local/domain/0/backend/vbd");
        Daemon {
            running: Some(running),
            calls,
        }
    }

    /// The calls made so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Whether the driver's thread ended by itself.
    pub fn is_finished(&self) -> bool {
        self.running.as_ref().is_some_and(Running::is_finished)
    }

    /// Stops the driver, asserting it ran without error, and hands back the workers.
    pub fn stop(&mut self) -> Workers {
        let running = self.running.take().expect("running");
        let (recorded, ended) = running.stop();
        ended.expect("the driver stops cleanly");
        recorded.expect("the driver's thread did not panic").workers
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            if let (Some(recorded), _) = running.stop() {
                recorded.workers.shutdown();
            }
        }
    }
}
