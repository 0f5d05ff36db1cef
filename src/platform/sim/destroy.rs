//! Destroying a domain, the toolstack's part of a guest's death (docs/sim-host.md,
//! "Domain life").

use super::evtchn::close_peer;
use super::grant_table::GrantTable;
use super::port_table::{lock_pair, PortTable, NR_PORTS, STATE_FREE};
use super::run_dir::RunDir;
use super::SimError;
use crate::platform::{DomId, Port};
use std::fs;
use std::io;
use std::sync::atomic::Ordering;

impl RunDir {
    /// Destroys guest `domid` as Xen does: its grants stop working for every accessor, each
    /// of its interdomain ports is closed (the peer's port becomes unbound), and its files
    /// are removed. Pages a back end still maps stay valid until it unmaps them. xenstored
    /// notices (the domain is no longer [`RunDir::domain_alive`]) and releases it; the caller
    /// then calls [`RunDir::remove_domain`].
    pub fn destroy_domain(&self, domid: DomId) -> Result<(), SimError> {
        if domid.0 == 0 {
            return Err(SimError::Corrupt {
                path: self.domain_dir(domid),
                what: "dom0 cannot be destroyed",
            });
        }
        GrantTable::open(self, domid)?.set_dying();
        self.close_ports(domid)?;
        for path in [
            self.memory(domid),
            self.grant_table(domid),
            self.grant_active(domid),
            self.evtchn_table(domid),
        ] {
            remove_if_present(&path)?;
        }
        let dir = self.domain_dir(domid);
        let entries = fs::read_dir(&dir).map_err(|e| SimError::io("list", &dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            // Doorbell sockets and grant map records die with the domain.
            let name = name.to_string_lossy();
            if name.starts_with("evtchn-") || name.starts_with("grants-") {
                remove_if_present(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Removes the destroyed domain's directory once xenstored has released it (its socket
    /// is gone): from then on the domain no longer exists and its domid may be reused.
    pub fn remove_domain(&self, domid: DomId) -> Result<(), SimError> {
        let dir = self.domain_dir(domid);
        match fs::remove_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(SimError::io("remove", &dir, e)),
            _ => Ok(()),
        }
    }

    fn close_ports(&self, domid: DomId) -> Result<(), SimError> {
        let own = PortTable::open(self, domid)?;
        for port in (1..NR_PORTS).map(Port) {
            let Some(entry) = own.entry(port) else {
                continue;
            };
            if entry.state.load(Ordering::Acquire) == STATE_FREE {
                continue;
            }
            let remote = DomId(entry.remote_domid.load(Ordering::Relaxed) as u16);
            let remote_port = Port(entry.remote_port.load(Ordering::Relaxed));
            // A peer whose table is gone has died too: only our end needs closing.
            let theirs = PortTable::open(self, remote).ok();
            let _locks = match &theirs {
                Some(theirs) => lock_pair((domid, &own), (remote, theirs))?,
                None => (own.lock()?, None),
            };
            if let Some(peer) = theirs.as_ref().and_then(|t| t.entry(remote_port)) {
                if peer.is_connected_to(domid, port) {
                    close_peer(self, remote, &peer);
                }
            }
            entry.free();
        }
        Ok(())
    }
}

fn remove_if_present(path: &std::path::Path) -> Result<(), SimError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(SimError::io("remove", path, e)),
        _ => Ok(()),
    }
}
