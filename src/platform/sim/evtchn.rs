//! Event channels between processes of the simulated host, with Linux evtchn's semantics.
//!
//! Each handle owns a datagram socket in its domain's directory; a one-byte datagram is a
//! doorbell that makes the handle's fd readable, while the pending bits in the shared port
//! tables say which ports fired (docs/sim-host.md, "Event channels").

use super::port_table::{
    lock_pair, PortEntry, PortTable, EV_MASKED, EV_PENDING, STATE_FREE, STATE_INTERDOMAIN,
    STATE_UNBOUND,
};
use super::run_dir::{random_id, RunDir};
use super::SimError;
use crate::platform::{DomId, EventChannel, EvtchnError, Port};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// `sun_path` holds 108 bytes including the terminating nul.
const MAX_SOCKET_PATH: usize = 107;

/// What a port of this handle's domain is, as `EVTCHNOP_status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortStatus {
    /// Not allocated.
    Free,
    /// Allocated for `remote`, which has not bound it (or has closed its end).
    Unbound { remote: DomId },
    /// Connected to `remote_port` of `remote`.
    Interdomain { remote: DomId, remote_port: Port },
}

/// One handle on a domain's event channels, like one open of /dev/xen/evtchn.
#[derive(Debug)]
pub struct SimEventChannel {
    run: RunDir,
    me: DomId,
    id: u64,
    socket: UnixDatagram,
    socket_path: PathBuf,
    /// Port tables by domid, this domain's included.
    tables: HashMap<DomId, PortTable>,
    /// Ports owned by this handle.
    bound: Vec<Port>,
    /// Sockets connected to the handles this one has woken, by domain and handle id: a send
    /// on a connected socket skips the path lookup of every notify.
    doorbells: HashMap<(DomId, u64), UnixDatagram>,
}

impl SimEventChannel {
    /// Opens a handle acting as domain `me`.
    pub fn open(run: &RunDir, me: DomId) -> Result<Self, SimError> {
        let own = PortTable::open(run, me)?;
        let id = random_id()?;
        let socket_path = run.evtchn_socket(me, id);
        if socket_path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(SimError::PathTooLong { path: socket_path });
        }
        let socket = UnixDatagram::bind(&socket_path)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| SimError::io("bind", &socket_path, e))?;
        Ok(SimEventChannel {
            run: run.clone(),
            me,
            id,
            socket,
            socket_path,
            tables: HashMap::from([(me, own)]),
            bound: Vec::new(),
            doorbells: HashMap::new(),
        })
    }

    /// The domain this handle acts as.
    pub fn domid(&self) -> DomId {
        self.me
    }

    /// Allocates a port that `remote` may bind to (`EVTCHNOP_alloc_unbound`).
    pub fn alloc_unbound(&mut self, remote: DomId) -> Result<Port, EvtchnError> {
        if !self.run.domain_exists(remote) {
            return Err(EvtchnError::BadDomain { domid: remote });
        }
        let own = &self.tables[&self.me];
        let _lock = own.lock().map_err(sim_error)?;
        let port = own.find_free().ok_or(EvtchnError::NoFreePort)?;
        let entry = own.entry(port).ok_or(EvtchnError::BadPort { port })?;
        entry
            .remote_domid
            .store(u32::from(remote.0), Ordering::Relaxed);
        entry.remote_port.store(0, Ordering::Relaxed);
        entry.bits.store(0, Ordering::Relaxed);
        entry.owner.store(self.id, Ordering::Relaxed);
        entry.state.store(STATE_UNBOUND, Ordering::Release);
        self.bound.push(port);
        Ok(port)
    }

    /// What `port` of this domain is.
    pub fn status(&self, port: Port) -> Result<PortStatus, EvtchnError> {
        let entry = self.tables[&self.me]
            .entry(port)
            .ok_or(EvtchnError::BadPort { port })?;
        let remote = DomId(entry.remote_domid.load(Ordering::Relaxed) as u16);
        Ok(match entry.state.load(Ordering::Acquire) {
            STATE_UNBOUND => PortStatus::Unbound { remote },
            STATE_INTERDOMAIN => PortStatus::Interdomain {
                remote,
                remote_port: Port(entry.remote_port.load(Ordering::Relaxed)),
            },
            _ => PortStatus::Free,
        })
    }

    /// The port table of `domid`; reopened when `fresh`, since a domid may name a newer
    /// domain than the one mapped earlier.
    fn table(&mut self, domid: DomId, fresh: bool) -> Result<&PortTable, EvtchnError> {
        if domid != self.me && (fresh || !self.tables.contains_key(&domid)) {
            let table =
                PortTable::open(&self.run, domid).map_err(|_| EvtchnError::BadDomain { domid })?;
            self.tables.insert(domid, table);
        }
        self.tables
            .get(&domid)
            .ok_or(EvtchnError::BadDomain { domid })
    }

    /// Checks that this handle owns `port` and returns its entry.
    fn owned(&self, port: Port) -> Result<PortEntry<'_>, EvtchnError> {
        let entry = self.tables[&self.me]
            .entry(port)
            .ok_or(EvtchnError::BadPort { port })?;
        if entry.owner.load(Ordering::Relaxed) != self.id
            || entry.state.load(Ordering::Acquire) == STATE_FREE
        {
            return Err(EvtchnError::NotBound { port });
        }
        Ok(entry)
    }

    /// Closes a port of this handle (`EVTCHNOP_close`); the peer's port goes back to unbound.
    fn close(&mut self, port: Port) -> Result<(), EvtchnError> {
        let entry = self.owned(port)?;
        let remote = DomId(entry.remote_domid.load(Ordering::Relaxed) as u16);
        let remote_port = Port(entry.remote_port.load(Ordering::Relaxed));
        let interdomain = entry.state.load(Ordering::Acquire) == STATE_INTERDOMAIN;
        // The peer's table may be gone with its domain; then only our end is closed.
        let peer_table = interdomain && self.table(remote, false).is_ok();
        let me = self.me;
        let own = &self.tables[&me];
        let theirs = peer_table.then(|| &self.tables[&remote]);
        let _locks = match theirs {
            Some(theirs) => lock_pair((me, own), (remote, theirs)),
            None => own.lock().map(|lock| (lock, None)),
        }
        .map_err(sim_error)?;
        if let Some(peer) = theirs.and_then(|t| t.entry(remote_port)) {
            if peer.is_connected_to(me, port) {
                close_peer(&self.run, remote, &peer);
            }
        }
        if let Some(entry) = own.entry(port) {
            entry.free();
        }
        self.bound.retain(|&p| p != port);
        Ok(())
    }

    /// Drops what no port of this handle needs any more: the port tables of domains it has
    /// no channel with (a dead guest's table would stay mapped) and the doorbell sockets of
    /// handles none of its ports connects to (one more per guest reconnect otherwise).
    fn evict_unused(&mut self) {
        let mut domains = HashSet::from([self.me]);
        let mut peers = HashSet::from([(self.me, self.id)]);
        let own = &self.tables[&self.me];
        for &port in &self.bound {
            let Some(entry) = own.entry(port) else {
                continue;
            };
            let remote = DomId(entry.remote_domid.load(Ordering::Relaxed) as u16);
            domains.insert(remote);
            let remote_port = Port(entry.remote_port.load(Ordering::Relaxed));
            if let Some(peer) = self.tables.get(&remote).and_then(|t| t.entry(remote_port)) {
                if peer.is_connected_to(self.me, port) {
                    peers.insert((remote, peer.owner.load(Ordering::Relaxed)));
                }
            }
        }
        self.tables.retain(|domid, _| domains.contains(domid));
        self.doorbells.retain(|key, _| peers.contains(key));
    }

    /// Wakes handle `owner` of `domid`. Failures are harmless: a full queue means the handle
    /// is already due to wake, a refused one that it is gone.
    fn ring(&mut self, domid: DomId, owner: u64) {
        let key = (domid, owner);
        if !self.doorbells.contains_key(&key) {
            let Ok(socket) = UnixDatagram::unbound() else {
                return;
            };
            let path = self.run.evtchn_socket(domid, owner);
            if socket.connect(path).is_err() || socket.set_nonblocking(true).is_err() {
                return;
            }
            self.doorbells.insert(key, socket);
        }
        if let Some(socket) = self.doorbells.get(&key) {
            if let Err(e) = socket.send(&[0]) {
                if e.kind() != io::ErrorKind::WouldBlock {
                    self.doorbells.remove(&key);
                }
            }
        }
    }
}

/// Closes the far end of a channel whose near end goes away (both tables locked). The peer's
/// port goes back to unbound, as `evtchn_close` leaves it, for its handle to close; a handle
/// whose process died never will, so its port is freed, as the kernel freed it when that
/// process's evtchn fd closed.
pub(super) fn close_peer(run: &RunDir, domid: DomId, peer: &PortEntry<'_>) {
    if handle_alive(run, domid, peer.owner.load(Ordering::Relaxed)) {
        peer.remote_port.store(0, Ordering::Relaxed);
        peer.state.store(STATE_UNBOUND, Ordering::Release);
    } else {
        peer.free();
    }
}

/// Whether handle `owner` of `domid` still has a process behind it: a dead process's socket
/// refuses (or is gone), as the kernel would have closed its evtchn fd.
pub(super) fn handle_alive(run: &RunDir, domid: DomId, owner: u64) -> bool {
    let Ok(probe) = UnixDatagram::unbound() else {
        return true;
    };
    match probe.connect(run.evtchn_socket(domid, owner)) {
        Ok(()) => true,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
        ),
    }
}

impl AsFd for SimEventChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for SimEventChannel {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl EventChannel for SimEventChannel {
    fn bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port, EvtchnError> {
        if !self.run.domain_exists(remote) {
            return Err(EvtchnError::BadDomain { domid: remote });
        }
        self.table(remote, true)?;
        let (me, id) = (self.me, self.id);
        let own = &self.tables[&me];
        let theirs = &self.tables[&remote];
        let _locks = lock_pair((me, own), (remote, theirs)).map_err(sim_error)?;
        let not_offered = EvtchnError::NotOffered {
            domid: remote,
            port: remote_port,
        };
        let peer = theirs.entry(remote_port).ok_or(not_offered)?;
        // A port still held by a dead handle of ours is closed first, as the kernel closes
        // a dead process's evtchn fd; this is what lets a restarted back end rebind.
        if peer.state.load(Ordering::Acquire) == STATE_INTERDOMAIN
            && peer.remote_domid.load(Ordering::Relaxed) == u32::from(me.0)
        {
            let stale_port = Port(peer.remote_port.load(Ordering::Relaxed));
            if let Some(stale) = own.entry(stale_port) {
                let owner = stale.owner.load(Ordering::Relaxed);
                if stale.is_connected_to(remote, remote_port)
                    && owner != id
                    && !handle_alive(&self.run, me, owner)
                {
                    stale.free();
                    peer.remote_port.store(0, Ordering::Relaxed);
                    peer.state.store(STATE_UNBOUND, Ordering::Release);
                }
            }
        }
        if peer.state.load(Ordering::Acquire) != STATE_UNBOUND
            || peer.remote_domid.load(Ordering::Relaxed) != u32::from(me.0)
        {
            return Err(not_offered);
        }
        let port = own.find_free().ok_or(EvtchnError::NoFreePort)?;
        let local = own.entry(port).ok_or(EvtchnError::NoFreePort)?;
        local
            .remote_domid
            .store(u32::from(remote.0), Ordering::Relaxed);
        local.remote_port.store(remote_port.0, Ordering::Relaxed);
        local.owner.store(id, Ordering::Relaxed);
        // Xen marks the new port pending: the unbound port may have been notified before.
        local.bits.store(EV_PENDING, Ordering::Relaxed);
        local.state.store(STATE_INTERDOMAIN, Ordering::Release);
        peer.remote_port.store(port.0, Ordering::Relaxed);
        peer.state.store(STATE_INTERDOMAIN, Ordering::Release);
        self.bound.push(port);
        self.ring(me, id);
        Ok(port)
    }

    fn unbind(&mut self, port: Port) -> Result<(), EvtchnError> {
        self.close(port)?;
        self.evict_unused();
        Ok(())
    }

    fn notify(&mut self, port: Port) -> Result<(), EvtchnError> {
        let entry = self.owned(port)?;
        if entry.state.load(Ordering::Acquire) != STATE_INTERDOMAIN {
            return Ok(()); // the peer closed its end: Xen drops the event silently
        }
        let remote = DomId(entry.remote_domid.load(Ordering::Relaxed) as u16);
        let remote_port = Port(entry.remote_port.load(Ordering::Relaxed));
        let me = self.me;
        let Ok(theirs) = self.table(remote, false) else {
            return Ok(());
        };
        let Some(peer) = theirs.entry(remote_port) else {
            return Ok(());
        };
        if !peer.is_connected_to(me, port) {
            return Ok(());
        }
        let owner = peer.owner.load(Ordering::Relaxed);
        let before = peer.bits.fetch_or(EV_PENDING, Ordering::AcqRel);
        if before & (EV_PENDING | EV_MASKED) == 0 {
            self.ring(remote, owner);
        }
        Ok(())
    }

    fn read_pending(&mut self, out: &mut Vec<Port>) -> Result<(), EvtchnError> {
        // Drain the doorbells first, then scan: a doorbell sent after the scan starts
        // leaves the fd readable for the next call.
        let mut sink = [0u8; 16];
        loop {
            match self.socket.recv(&mut sink) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(EvtchnError::from_io("recv of event doorbells", &e)),
            }
        }
        let own = &self.tables[&self.me];
        for &port in &self.bound {
            let Some(entry) = own.entry(port) else {
                continue;
            };
            // Deliver once: clear pending and disable, as evtchn's interrupt handler does.
            let delivered = entry
                .bits
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                    (bits & EV_PENDING != 0 && bits & EV_MASKED == 0)
                        .then_some((bits & !EV_PENDING) | EV_MASKED)
                });
            if delivered.is_ok() {
                out.push(port);
            }
        }
        Ok(())
    }

    fn unmask(&mut self, ports: &[Port]) -> Result<(), EvtchnError> {
        for &port in ports {
            // Linux evtchn's write skips ports this fd does not own and unmasks the rest: one
            // port closed meanwhile must not leave the others disabled.
            let Ok(entry) = self.owned(port) else {
                continue;
            };
            let before = entry.bits.fetch_and(!EV_MASKED, Ordering::AcqRel);
            if before & EV_MASKED != 0 && before & EV_PENDING != 0 {
                self.ring(self.me, self.id);
            }
        }
        Ok(())
    }
}

impl Drop for SimEventChannel {
    fn drop(&mut self) {
        for port in std::mem::take(&mut self.bound) {
            let _ = self.close(port);
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

/// Locking a port table fails only on I/O (`flock`, or the table gone with its domain).
fn sim_error(err: SimError) -> EvtchnError {
    let errno = match err {
        SimError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        _ => libc::EIO,
    };
    EvtchnError::Os {
        op: "lock of a port table",
        errno,
    }
}
