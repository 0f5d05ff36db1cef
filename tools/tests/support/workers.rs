//! tokenback's workers serving simulated guests' disks, with the xenbus side played by the
//! test: probe keys and InitWait, the front end's keys read and validated with tokenback's own
//! functions, the Connect handed to the workers, the connect keys and Connected written. It
//! isolates the request pipeline from the xenbus driver.

use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread;

use mio::{Poll, Token, Waker};
use tokenback::limiter::VbdConfig;
use tokenback::platform::sim::SimPlatform;
use tokenback::platform::DomId;
use tokenback::storage::{Backing, EngineKind, Mode};
use tokenback::vbd::{Connect, Dispatch, Report, ReportSink, Workers};
use tokenback::xenbus::keys::{connect_keys, probe_keys};
use tokenback::xenbus::{self, read_frontend_rings, DeviceConfig, DeviceId, Limits};
use tokenback_tools::blkfront::{Blkfront, Options};
use tokenback_tools::toolstack::{DiskPaths, DiskSpec};

use super::{Host, EVENTUALLY};

/// What we advertise: the most of both.
pub const LIMITS: Limits = Limits {
    max_ring_page_order: 4,
    max_queues: 4,
};

/// The workers of one simulated host and the reports they send.
pub struct Served {
    pub workers: Option<Workers>,
    pub reports: Receiver<Report>,
    // Keeps the waker's registry alive.
    _poll: Poll,
}

impl Served {
    pub fn start(host: &Host, workers: usize, engine: EngineKind) -> Served {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let (sink, reports) = ReportSink::new(waker);
        let platform = SimPlatform::new(host.run.clone(), DomId(0));
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let workers = Workers::start(&platform, workers, engine, sink, &log).unwrap();
        Served {
            workers: Some(workers),
            reports,
            _poll: poll,
        }
    }

    pub fn workers(&mut self) -> &mut Workers {
        self.workers.as_mut().unwrap()
    }

    /// The next report, failing after [`EVENTUALLY`].
    pub fn report(&self) -> Report {
        self.reports
            .recv_timeout(EVENTUALLY)
            .expect("a report from the workers")
    }

    /// Stops the workers, leaving the VBDs connected.
    pub fn shutdown(&mut self) {
        if let Some(workers) = self.workers.take() {
            workers.shutdown();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A disk to attach.
pub struct Disk<'a> {
    pub storage: &'a Path,
    pub writable: bool,
    pub qos: &'a [(&'a str, &'a str)],
    pub devid: u16,
    /// We write `feature-persistent=1` and use persistent grants if the front end offers them.
    pub persistent: bool,
}

impl<'a> Disk<'a> {
    pub fn new(storage: &'a Path) -> Self {
        Disk {
            storage,
            writable: true,
            qos: &[],
            devid: 51712,
            persistent: false,
        }
    }
}

/// Creates a guest (or uses `domid`), attaches `disk` served by `served`, and returns the
/// connected front end.
pub fn attach(
    host: &mut Host,
    served: &mut Served,
    domid: Option<DomId>,
    disk: &Disk<'_>,
    tune: impl FnOnce(&mut Options),
) -> (Blkfront, DiskPaths, DeviceId) {
    let domid = domid.unwrap_or_else(|| host.new_guest());
    let mut spec = DiskSpec::xvda(&disk.storage.display().to_string());
    spec.devid = disk.devid;
    spec.writable = disk.writable;
    let paths = host.toolstack.add_disk(domid, &spec).unwrap();
    let id = DeviceId {
        frontend_id: domid,
        devid: u32::from(disk.devid),
    };
    let xs = host.toolstack.xenstore();
    let mut probe = probe_keys(LIMITS);
    probe.push(("state", "2".into()));
    write_keys(xs, &paths.backend, &probe);

    let mut opts = Options::new(host.run.clone(), domid, disk.devid);
    opts.timeout = EVENTUALLY;
    tune(&mut opts);
    let front = thread::spawn(move || Blkfront::connect(opts));

    let frontend = paths.frontend.clone();
    super::eventually("the front end is Initialised", || {
        host.read(&format!("{frontend}/state")).as_deref() == Some("3")
    });
    let reader = std::cell::RefCell::new(&mut *host);
    let rings = read_frontend_rings(LIMITS, |key| {
        reader.borrow_mut().read(&format!("{frontend}/{key}"))
    })
    .expect("valid front end keys");
    let mode = if disk.writable {
        Mode::ReadWrite
    } else {
        Mode::ReadOnly
    };
    let storage = Arc::new(Backing::open(disk.storage, mode).unwrap());
    let qos = VbdConfig::parse(disk.qos.iter().copied()).unwrap();
    served.workers().connect(Connect {
        id,
        frontend_id: domid,
        rings,
        storage: Arc::clone(&storage),
        qos,
        discard: storage.discard(),
        persistent: disk.persistent,
        // In-process workers: nothing outlives the test.
        state: None,
    });
    assert_eq!(served.report(), Report::Connected(id));
    let device = DeviceConfig {
        frontend: paths.frontend.clone(),
        frontend_id: domid,
        writable: disk.writable,
        cdrom: false,
        discard_enable: true,
    };
    let summary = xenbus::Backing {
        size_bytes: storage.size_bytes(),
        logical_sector_size: storage.logical_block_size(),
        physical_sector_size: storage.physical_block_size(),
        read_only: storage.read_only(),
        flush: !storage.read_only(),
        discard: storage.discard().then_some(xenbus::Discard {
            granularity: storage.logical_block_size(),
            alignment: 0,
            secure: false,
        }),
    };
    let mut keys = connect_keys(&device, &summary, disk.persistent);
    keys.push(("state", "4".into()));
    write_keys(host.toolstack.xenstore(), &paths.backend, &keys);
    let front = front.join().unwrap().expect("the front end connects");
    (front, paths, id)
}

fn write_keys(
    xs: &mut xenstore_wire::client::blocking::Client,
    dir: &str,
    keys: &[(&str, String)],
) {
    xs.transaction(|xs, tx| {
        for (key, value) in keys {
            xs.write(tx, &format!("{dir}/{key}"), value.as_bytes())?;
        }
        Ok(())
    })
    .unwrap();
}
