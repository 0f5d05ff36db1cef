//! The handshake (Linux's `talk_to_blkback` and `blkfront_connect`) and its options.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use blkif::{Protocol, MAX_RING_ORDER};
use tokenback::platform::sim::{RunDir, SimEventChannel};
use tokenback::platform::DomId;
use xenstore_wire::client::blocking::Client;
use xenstore_wire::client::Endpoint;

use super::allocator::GuestAllocator;
use super::disk::DiskInfo;
use super::error::Error;
use super::pages::GuestPages;
use super::queue::Queue;
use super::xenbus::{QueueKeys, Xenbus, XenbusState};
use super::Blkfront;

/// How to connect, with Linux blkfront's defaults where it has module parameters.
#[derive(Debug, Clone)]
pub struct Options {
    /// The simulated host.
    pub run: RunDir,
    /// The guest domain this front end runs in.
    pub domid: DomId,
    /// The device id (`virtual-device`), e.g. 51712 for xvda.
    pub devid: u16,
    /// The request layout to speak and announce in `protocol`.
    pub protocol: Protocol,
    /// Our cap on `ring-page-order` (Linux `max_ring_page_order`, default 0).
    pub max_ring_page_order: u8,
    /// Our cap on queues (Linux `max_queues`, default 4).
    pub max_queues: u32,
    /// Our cap on indirect segments (Linux `max_indirect_segments`, default 32).
    pub max_indirect_segments: u32,
    /// Offer persistent grants (Linux `feature_persistent`, default on).
    pub persistent: bool,
    /// Bound on every wait for the back end.
    pub timeout: Duration,
    /// The guest's page and grant-ref allocator, shared with its other front ends; `None`
    /// opens one of our own (right only for a guest's sole user of memory and grants).
    pub allocator: Option<GuestAllocator>,
}

impl Options {
    /// Linux's defaults for device `devid` of guest `domid`, in the native protocol.
    pub fn new(run: RunDir, domid: DomId, devid: u16) -> Self {
        Options {
            run,
            domid,
            devid,
            protocol: Protocol::Native,
            max_ring_page_order: 0,
            max_queues: 4,
            max_indirect_segments: 32,
            persistent: true,
            timeout: Duration::from_secs(30),
            allocator: None,
        }
    }
}

/// The device's xenstore directories, through the guest's own connection.
fn open_xenbus(opts: &Options) -> Result<(Xenbus, u16), Error> {
    let socket = opts.run.domain_xenstored_socket(opts.domid);
    let xs =
        Client::connect(Endpoint::Socket(socket.clone())).map_err(|source| Error::Xenstore {
            op: "connect to",
            path: socket.display().to_string(),
            source,
        })?;
    let frontend = format!("/local/domain/{}/device/vbd/{}", opts.domid.0, opts.devid);
    Xenbus::open(xs, frontend)
}

impl Blkfront {
    /// Probes a closed disk again, as Linux blkfront does when the device comes back after a
    /// close: our state back to Initialising, the back end's answer to it (InitWait, from
    /// Closed) awaited, then the handshake of [`Blkfront::connect`].
    pub fn reconnect(opts: Options) -> Result<Self, Error> {
        let deadline = Instant::now() + opts.timeout;
        let (mut xenbus, _) = open_xenbus(&opts)?;
        xenbus.switch_state(XenbusState::Initialising)?;
        xenbus.wait_backend(deadline, "the back end's InitWait after a close", |s| {
            s != XenbusState::Closed
        })?;
        drop(xenbus);
        Self::connect(opts)
    }

    /// Runs the handshake to Connected (see the module docs).
    pub fn connect(opts: Options) -> Result<Self, Error> {
        let deadline = Instant::now() + opts.timeout;
        let allocator = match &opts.allocator {
            Some(shared) => shared.clone(),
            None => GuestAllocator::open(&opts.run, opts.domid)?,
        };
        let (mut xenbus, backend_id) = open_xenbus(&opts)?;
        // Linux starts the handshake only from Initialising (`blkback_changed`): a device
        // that another front end took further is not ours to set up.
        let own = xenbus.own_state()?;
        if own != XenbusState::Initialising {
            return Err(Error::NotInitialising { state: own.value() });
        }
        let state = xenbus.wait_backend(deadline, "the back end's InitWait", |s| {
            !matches!(
                s,
                XenbusState::Unknown | XenbusState::Initialising | XenbusState::Initialised
            )
        })?;
        if state != XenbusState::InitWait && state != XenbusState::Connected {
            return Err(Error::BackendClosed {
                state: state.value(),
            });
        }
        let backend_order = xenbus.backend_u64("max-ring-page-order", 0)?;
        let order = u64::from(opts.max_ring_page_order.min(MAX_RING_ORDER)).min(backend_order);
        let order = order as u8;
        let backend_queues = xenbus.backend_u64("multi-queue-max-queues", 1)?;
        let nr_queues = backend_queues.min(u64::from(opts.max_queues)).max(1) as usize;

        let backend = DomId(backend_id);
        let mut pages = GuestPages::new(allocator, backend);
        let mut evtchn = SimEventChannel::open(&opts.run, opts.domid).map_err(Error::Sim)?;
        let queues = (0..nr_queues)
            .map(|i| Queue::new(i, &mut pages, order, opts.protocol, &mut evtchn, backend))
            .collect::<Result<Vec<_>, _>>()?;
        let keys: Vec<_> = queues.iter().map(Queue::keys).collect();
        let connected = Self::publish_and_wait(&mut xenbus, &opts, order, &keys, deadline);
        let disk = connected.inspect_err(|_| {
            // Best effort, as `blkif_free`: a back end that mapped a ring keeps it granted.
            for queue in &queues {
                let _ = pages.end_ring(queue.ring_refs());
            }
        })?;
        Ok(Blkfront {
            queues,
            pages,
            evtchn,
            xenbus,
            disk,
            handle: opts.devid,
            timeout: opts.timeout,
            next_tag: 0,
            next_queue: 0,
            done: VecDeque::new(),
            post_flushes: Vec::new(),
            disabled: None,
            closed: false,
        })
    }

    /// Publishes the ring keys, goes Initialised, waits for the back end to connect, reads
    /// the disk and goes Connected.
    fn publish_and_wait(
        xenbus: &mut Xenbus,
        opts: &Options,
        order: u8,
        keys: &[QueueKeys],
        deadline: Instant,
    ) -> Result<DiskInfo, Error> {
        xenbus.publish(order, keys, opts.protocol.name(), opts.persistent)?;
        xenbus.switch_state(XenbusState::Initialised)?;
        let state = xenbus.wait_backend(deadline, "the back end's Connected", |s| {
            matches!(
                s,
                XenbusState::Connected | XenbusState::Closing | XenbusState::Closed
            )
        })?;
        if state != XenbusState::Connected {
            return Err(Error::BackendClosed {
                state: state.value(),
            });
        }
        let disk = DiskInfo::read(xenbus, opts.persistent, opts.max_indirect_segments)?;
        xenbus.switch_state(XenbusState::Connected)?;
        Ok(disk)
    }
}
