//! A scripted back end that plays Linux blkback's side, from the reference (xenbus-vbd.md
//! sections 4, 6, 7, 8 and 11; blkif.md sections 4 and 7): it publishes its features and
//! goes InitWait, maps the front end's rings and binds its event channels when the front end
//! is Initialised, writes the connect keys and goes Connected, serves requests from an
//! in-memory disk with grant copy, and follows the front end to Closing and Closed.
//!
//! With persistent grants negotiated it keeps every data and indirect page it has seen
//! mapped (as blkback does), so the front end finds them in use; the bytes still move by
//! grant copy, which keeps this double free of raw-pointer copies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use blkif::abi::SECTOR_SIZE;
use blkif::{BackRing, DataSegment, Direction, Indirect, IndirectPage, Limits, Protocol};
use blkif::{Request, RequestKind, Response, RingIndex};
use blkif::{SharedRing, Status};
use tokenback::platform::sim::{RunDir, SimEventChannel, SimGrants, SimMapping};
use tokenback::platform::{
    CopyOp, DomId, EventChannel, GrantAccess, GrantMapping, GrantRef, GuestRange, Port,
};
use tokenback_tools::toolstack::DiskPaths;
use xenstore_wire::client::blocking::Client;
use xenstore_wire::client::{ClientError, Endpoint, TxId};

use super::config::{BackendConfig, Misbehaviour, Seen};

/// The back end, running in its own thread until dropped.
pub struct ScriptedBackend {
    pub disk: Arc<Mutex<Vec<u8>>>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
    backend: String,
}

impl ScriptedBackend {
    pub fn start(run: &RunDir, fe: DomId, paths: &DiskPaths, config: BackendConfig) -> Self {
        let disk = Arc::new(Mutex::new(vec![0; (config.sectors * SECTOR_SIZE) as usize]));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut blkback = Blkback {
            xs: Client::connect(Endpoint::Socket(run.xenstored_socket())).unwrap(),
            grants: SimGrants::new(run, DomId(0)),
            evtchn: SimEventChannel::open(run, DomId(0)).unwrap(),
            fe,
            backend: paths.backend.clone(),
            frontend: paths.frontend.clone(),
            config,
            rings: Vec::new(),
            persistent: false,
            persistent_maps: HashMap::new(),
            state: 1,
            disk: Arc::clone(&disk),
            seen: Arc::clone(&seen),
        };
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || blkback.run(&flag).map_err(|e| e.to_string()));
        ScriptedBackend {
            disk,
            seen,
            stop,
            thread: Some(thread),
            backend: paths.backend.clone(),
        }
    }

    /// Whether the back end's thread has ended (it fails or is stopped).
    pub fn has_ended(&self) -> bool {
        self.thread.as_ref().map_or(true, JoinHandle::is_finished)
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// What blkback does when its device grows: the new size, then `sectors` and the
    /// current state (4) again in one transaction, which fires the front end's watch.
    pub fn resize(&self, xs: &mut Client, sectors: u64) {
        self.disk
            .lock()
            .unwrap()
            .resize((sectors * SECTOR_SIZE) as usize, 0);
        let (sectors_path, state_path) = (
            format!("{}/sectors", self.backend),
            format!("{}/state", self.backend),
        );
        xs.transaction(|xs, tx| {
            xs.write(tx, &sectors_path, sectors.to_string().as_bytes())?;
            xs.write(tx, &state_path, b"4")
        })
        .unwrap();
    }

    /// Stops the thread and reports what it saw; fails the test if the back end failed.
    pub fn finish(mut self) -> Seen {
        let result = self.stop_thread();
        assert_eq!(result, Some(Ok(())), "scripted back end failed");
        self.seen()
    }

    /// Stops the thread and takes its result (`None` once taken); a panic in it is a failure.
    fn stop_thread(&mut self) -> Option<Result<(), String>> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take()?;
        Some(
            thread
                .join()
                .unwrap_or_else(|_| Err("the back end's thread panicked".into())),
        )
    }
}

impl Drop for ScriptedBackend {
    /// A test that never calls [`finish`](ScriptedBackend::finish) still fails when the back
    /// end did, unless it is already failing (a second panic would abort).
    fn drop(&mut self) {
        let result = self.stop_thread();
        if !std::thread::panicking() {
            assert!(
                matches!(result, None | Some(Ok(()))),
                "scripted back end failed: {result:?}"
            );
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One mapped ring. `back` views `_mapping`'s pages and is declared (dropped) first.
struct Ring {
    back: BackRing,
    /// A second view of the ring, to corrupt its header as a broken back end would.
    mem: SharedRing,
    port: Port,
    _mapping: SimMapping,
}

struct Blkback {
    xs: Client,
    grants: SimGrants,
    evtchn: SimEventChannel,
    fe: DomId,
    backend: String,
    frontend: String,
    config: BackendConfig,
    rings: Vec<Ring>,
    persistent: bool,
    persistent_maps: HashMap<u32, SimMapping>,
    state: u32,
    disk: Arc<Mutex<Vec<u8>>>,
    seen: Arc<Mutex<Seen>>,
}

impl Blkback {
    fn run(&mut self, stop: &AtomicBool) -> Result<(), BoxError> {
        self.probe()?;
        self.xs
            .watch(&format!("{}/state", self.frontend), "frontend")?;
        while !stop.load(Ordering::Relaxed) {
            let wait = if self.rings.is_empty() { 10 } else { 0 };
            if self
                .xs
                .next_event(Some(Duration::from_millis(wait)))?
                .is_some()
            {
                while self.xs.next_event(Some(Duration::ZERO))?.is_some() {}
                self.frontend_changed()?;
            }
            if !self.rings.is_empty() {
                self.serve_events()?;
            }
        }
        Ok(())
    }

    /// `xen_blkbk_probe`: features, then InitWait.
    fn probe(&mut self) -> Result<(), BoxError> {
        let c = self.config.clone();
        if c.max_indirect_segments > 0 {
            self.write("feature-max-indirect-segments", c.max_indirect_segments)?;
        }
        self.write("multi-queue-max-queues", c.max_queues)?;
        self.write("max-ring-page-order", c.max_ring_page_order)?;
        self.switch(2)
    }

    fn write(&mut self, key: &str, value: impl ToString) -> Result<(), ClientError> {
        let path = format!("{}/{key}", self.backend);
        self.xs
            .write(TxId::NONE, &path, value.to_string().as_bytes())
    }

    fn switch(&mut self, state: u32) -> Result<(), BoxError> {
        self.state = state;
        Ok(self.write("state", state)?)
    }

    fn frontend_read(&mut self, key: &str) -> Result<Option<String>, ClientError> {
        match self
            .xs
            .read(TxId::NONE, &format!("{}/{key}", self.frontend))
        {
            Ok(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            Err(ClientError::Xs(xenstore_wire::wire::XsErrno::Enoent)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn frontend_u32(&mut self, key: &str, default: u32) -> Result<u32, BoxError> {
        match self.frontend_read(key)? {
            Some(v) => Ok(v.trim().parse()?),
            None => Ok(default),
        }
    }

    /// `frontend_changed`, reference xenbus-vbd.md section 8.
    fn frontend_changed(&mut self) -> Result<(), BoxError> {
        let state = self.frontend_u32("state", 0)?;
        self.seen.lock().unwrap().frontend_states.push(state);
        match state {
            3 | 4 if self.state != 4 => {
                self.connect_rings()?;
                self.connect()?;
            }
            5 if self.state != 5 => self.switch(5)?,
            6 => {
                self.rings.clear();
                self.persistent_maps.clear();
                self.switch(6)?;
            }
            1 if self.state == 6 => self.switch(2)?,
            _ => {}
        }
        Ok(())
    }

    /// `connect_ring`: protocol, persistent grants, ring order, queues, refs and ports.
    fn connect_rings(&mut self) -> Result<(), BoxError> {
        let protocol_name = self.frontend_read("protocol")?;
        let protocol = Protocol::from_xenstore(protocol_name.as_deref())?;
        self.persistent =
            self.config.persistent && self.frontend_u32("feature-persistent", 0)? == 1;
        let order_key = self.frontend_read("ring-page-order")?;
        let order: u8 = order_key.as_deref().map_or(Ok(0), |v| v.trim().parse())?;
        if u32::from(order) > self.config.max_ring_page_order {
            return Err(format!("ring-page-order {order} above our maximum").into());
        }
        let queues = self.frontend_u32("multi-queue-num-queues", 1)?;
        if queues == 0 || queues > self.config.max_queues {
            return Err(format!("{queues} queues").into());
        }
        let limits = Limits::new(self.config.max_indirect_segments)?;
        for q in 0..queues {
            let dir = if queues == 1 {
                String::new()
            } else {
                format!("queue-{q}/")
            };
            let refs = if order_key.is_some() {
                (0..1u32 << order)
                    .map(|i| self.frontend_u32(&format!("{dir}ring-ref{i}"), u32::MAX))
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                vec![self.frontend_u32(&format!("{dir}ring-ref"), u32::MAX)?]
            };
            let port = self.frontend_u32(&format!("{dir}event-channel"), 0)?;
            let refs: Vec<GrantRef> = refs.into_iter().map(GrantRef).collect();
            let mapping = self.grants.map(self.fe, &refs, true)?;
            // SAFETY: the mapping covers 2^order pages and lives in the same `Ring` as the
            // view, declared after it so that it is unmapped only once the view is gone;
            // this process reaches those pages only through the view.
            let mem = unsafe { SharedRing::new(mapping.as_ptr(), order) }?;
            let back = BackRing::attach(mem.clone(), protocol, limits)?;
            let port = self.evtchn.bind_interdomain(self.fe, Port(port))?;
            self.rings.push(Ring {
                back,
                mem,
                port,
                _mapping: mapping,
            });
        }
        let mut seen = self.seen.lock().unwrap();
        seen.protocol = protocol_name;
        seen.ring_order = order;
        seen.queues = queues as usize;
        seen.per_queue = vec![0; queues as usize];
        Ok(())
    }

    /// `connect`: the disk's keys in one transaction, then Connected.
    fn connect(&mut self) -> Result<(), BoxError> {
        let c = &self.config;
        let mut keys = vec![
            ("feature-flush-cache", u32::from(c.flush_cache).to_string()),
            ("feature-barrier", u32::from(c.barrier).to_string()),
            ("feature-discard", u32::from(c.discard).to_string()),
            ("feature-persistent", u32::from(c.persistent).to_string()),
            ("sectors", c.sectors.to_string()),
            ("info", c.info.to_string()),
            ("sector-size", c.sector_size.to_string()),
            ("physical-sector-size", c.sector_size.to_string()),
        ];
        if c.discard {
            keys.push(("discard-granularity", c.sector_size.to_string()));
            keys.push(("discard-alignment", "0".into()));
            keys.push(("discard-secure", u32::from(c.discard_secure).to_string()));
        }
        let backend = self.backend.clone();
        self.xs.transaction(|xs, tx| {
            keys.iter().try_for_each(|(key, value)| {
                xs.write(tx, &format!("{backend}/{key}"), value.as_bytes())
            })
        })?;
        self.switch(4)
    }

    /// Serves every ring whose port fired.
    fn serve_events(&mut self) -> Result<(), BoxError> {
        let mut ports = Vec::new();
        self.evtchn
            .wait_pending(Some(Duration::from_millis(10)), &mut ports)?;
        self.evtchn.unmask(&ports)?;
        for port in ports {
            if let Some(index) = self.rings.iter().position(|r| r.port == port) {
                self.serve(index)?;
            }
        }
        Ok(())
    }

    /// `__do_block_io_op` for one ring, answering each request at once.
    fn serve(&mut self, index: usize) -> Result<(), BoxError> {
        loop {
            let taken: Vec<_> = self.rings[index].back.requests()?.collect();
            let mut seen = self.seen.lock().unwrap();
            seen.per_queue[index] += taken.len();
            if !taken.is_empty() {
                seen.batches.push(taken.len());
            }
            drop(seen);
            for request in taken {
                let response = match request {
                    Ok(request) => self.execute(&request),
                    Err(rejected) => rejected.response(),
                };
                self.rings[index].back.push_response(&response)?;
            }
            let ring = &mut self.rings[index];
            let notify = ring.back.push_responses_and_check_notify();
            if self.config.misbehave == Some(Misbehaviour::ResponseOverflow) {
                // Claim a ring's worth more responses than there are.
                let rsp_prod = ring.mem.header(RingIndex::RspProd);
                rsp_prod.fetch_add(ring.back.size(), Ordering::Release);
            }
            if notify {
                self.evtchn.notify(ring.port)?;
            }
            if !self.rings[index].back.final_check_for_requests()? {
                return Ok(());
            }
        }
    }

    fn execute(&mut self, request: &Request) -> Response {
        self.seen
            .lock()
            .unwrap()
            .operations
            .push(request.operation());
        let status = match *request.kind() {
            RequestKind::Read(s) => self.transfer(s.sector_number(), s.segments(), false),
            RequestKind::Write(s) => self.transfer(s.sector_number(), s.segments(), true),
            RequestKind::FlushDiskcache(s) | RequestKind::WriteBarrier(s) => {
                let offered = match request.kind() {
                    RequestKind::FlushDiskcache(_) => self.config.flush_cache,
                    _ => self.config.barrier,
                };
                if !offered || self.config.refuse_flush {
                    Status::NotSupported
                } else if self.config.fail_flush {
                    Status::Error
                } else if s.segments().is_empty() {
                    // no data, no position (blkfront's empty flush is at sector 2^64-1)
                    Status::Okay
                } else {
                    self.transfer(s.sector_number(), s.segments(), true)
                }
            }
            RequestKind::Discard(d) => self.discard(d.sector_number(), d.nr_sectors(), d.secure()),
            RequestKind::Indirect(i) => {
                self.seen
                    .lock()
                    .unwrap()
                    .indirect_segments
                    .push(i.nr_segments());
                match self.indirect_segments(&i) {
                    Some(segments) => {
                        let write = i.direction() == Direction::Write;
                        self.transfer(i.sector_number(), &segments, write)
                    }
                    None => Status::Error,
                }
            }
        };
        let mut response = request.response(status);
        match self.config.misbehave {
            Some(Misbehaviour::WrongOperation) => response.operation ^= 1,
            Some(Misbehaviour::IdOutOfRange) => response.id = 1 << 40,
            Some(Misbehaviour::IdNotOutstanding) => response.id += 1,
            Some(Misbehaviour::ResponseOverflow) | None => {}
        }
        response
    }

    fn discard(&mut self, sector: u64, count: u64, secure: bool) -> Status {
        if !self.config.discard || self.config.refuse_discard {
            return Status::NotSupported;
        }
        let mut disk = self.disk.lock().unwrap();
        let (start, end) = (
            (sector * SECTOR_SIZE) as usize,
            ((sector + count) * SECTOR_SIZE) as usize,
        );
        if end > disk.len() {
            return Status::Error;
        }
        disk[start..end].fill(0);
        drop(disk);
        self.seen
            .lock()
            .unwrap()
            .discards
            .push((sector, count, secure));
        Status::Okay
    }

    /// Maps the indirect pages and reads their segments through blkif, as the daemon does.
    fn indirect_segments(&mut self, indirect: &Indirect) -> Option<Vec<DataSegment>> {
        let refs: Vec<GrantRef> = indirect.page_refs().iter().map(|&r| GrantRef(r)).collect();
        let mappings: Vec<SimMapping> = refs
            .iter()
            .map(|&gref| self.grants.map(self.fe, &[gref], false))
            .collect::<Result<_, _>>()
            .ok()?;
        let pages: Vec<IndirectPage> = mappings
            .iter()
            // SAFETY: each mapping is one page that outlives `pages` (dropped at the end of
            // this function, after `pages`); this process reads it only through the view.
            .map(|m| unsafe { SharedRing::new(m.as_ptr(), 0) }.and_then(IndirectPage::new))
            .collect::<Result<_, _>>()
            .ok()?;
        let mut segments = Vec::new();
        indirect.read_segments(&pages, &mut segments).ok()?;
        drop(pages);
        refs.iter().for_each(|gref| self.persist(gref.0));
        Some(segments)
    }

    /// A read (`write` false: disk to guest) or write through grant copy.
    fn transfer(&mut self, sector: u64, segments: &[DataSegment], write: bool) -> Status {
        let sectors: u64 = segments.iter().map(|s| u64::from(s.nr_sectors())).sum();
        let block = u64::from(self.config.sector_size) / SECTOR_SIZE;
        if (sector | sectors) % block != 0 {
            return Status::Error;
        }
        let layout = segments.iter().map(|s| (s.first_sect(), s.last_sect()));
        self.seen.lock().unwrap().segments.push(layout.collect());
        segments.iter().for_each(|s| self.persist(s.gref()));
        let disk = Arc::clone(&self.disk);
        let mut disk = disk.lock().unwrap();
        if (sector + sectors) * SECTOR_SIZE > disk.len() as u64 {
            return Status::Error;
        }
        let mut at = (sector * SECTOR_SIZE) as usize;
        let mut failed = 0;
        for seg in segments {
            let range = self.guest_range(seg.gref(), seg.offset());
            let bytes = &mut disk[at..at + seg.len()];
            let mut op = [if write {
                CopyOp::from_guest(range, bytes)
            } else {
                CopyOp::to_guest(bytes, range)
            }];
            failed += self.grants.copy(&mut op);
            at += seg.len();
        }
        match failed {
            0 => Status::Okay,
            _ => Status::Error,
        }
    }

    fn guest_range(&self, gref: u32, offset: usize) -> GuestRange {
        GuestRange {
            domid: self.fe,
            gref: GrantRef(gref),
            // A validated segment's offset is at most 7 * 512.
            offset: offset as u16,
        }
    }

    /// With persistent grants, keeps `gref` mapped from its first use on.
    fn persist(&mut self, gref: u32) {
        let keep = self.persistent || self.config.keep_grants;
        if !keep || self.persistent_maps.contains_key(&gref) {
            return;
        }
        if let Ok(mapping) = self.grants.map(self.fe, &[GrantRef(gref)], true) {
            self.persistent_maps.insert(gref, mapping);
            self.seen.lock().unwrap().persistent_maps += 1;
        }
    }
}
