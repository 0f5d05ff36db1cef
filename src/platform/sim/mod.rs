//! The simulated Xen host of docs/sim-host.md: the back end's side ([`SimGrants`],
//! [`SimEventChannel`]), the layouts shared with guests, and the minimal guest side
//! ([`GuestDomain`]) that the simulated toolstack and blkfront build on.
//!
//! Everything is shared between processes through files of a run directory ([`RunDir`]) mapped
//! `MAP_SHARED`; every grant access is checked against the guest's grant table as Xen checks
//! it, so a bad ref fails only the access that named it.

mod active;
mod destroy;
mod evtchn;
mod grant_table;
mod grants;
mod guest;
mod pin_records;
mod port_table;
mod run_dir;
mod shm;

pub use evtchn::{PortStatus, SimEventChannel};
pub use grants::{SimGrants, SimMapping};
pub use guest::{EndAccessError, GuestDomain, MAX_GRANT_FRAMES};
pub use run_dir::RunDir;

use crate::platform::{DomId, Platform};
use std::io;
use std::path::{Path, PathBuf};

/// The simulated host, seen by a back end running as domain `domid` (normally dom0).
#[derive(Debug, Clone)]
pub struct SimPlatform {
    run: RunDir,
    domid: DomId,
}

impl SimPlatform {
    /// A back end acting as `domid` on the host of run directory `run`.
    pub fn new(run: RunDir, domid: DomId) -> Self {
        SimPlatform { run, domid }
    }
}

impl Platform for SimPlatform {
    type Grants = SimGrants;
    type Events = SimEventChannel;
    type Error = SimError;

    fn grants(&self) -> Result<SimGrants, SimError> {
        Ok(SimGrants::new(&self.run, self.domid))
    }

    fn event_channel(&self) -> Result<SimEventChannel, SimError> {
        SimEventChannel::open(&self.run, self.domid)
    }
}

/// A failure of the simulated host itself (its files), as opposed to a refused access.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A file or directory of the run directory could not be used.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file of the run directory does not have the layout it must have.
    #[error("{} is corrupt: {what}", path.display())]
    Corrupt { path: PathBuf, what: &'static str },
    /// No random bytes for a handle id.
    #[error("cannot get random bytes for a handle id: {0}")]
    Random(#[source] io::Error),
    /// Every domid is taken.
    #[error("no free domid in the run directory")]
    NoFreeDomid,
    /// A socket path too long for a unix socket address.
    #[error("socket path {} is too long; use a shorter run directory", path.display())]
    PathTooLong { path: PathBuf },
    /// A guest touched memory outside its own pages.
    #[error("bytes {offset}..{end} are outside the domain's {len} bytes of memory")]
    OutsideMemory {
        offset: usize,
        end: usize,
        len: usize,
    },
    /// A domain asked for more than the host allows.
    #[error("{what}: {requested} is more than the limit of {max}")]
    Limit {
        what: &'static str,
        requested: usize,
        max: usize,
    },
    /// A guest named a grant ref outside its own grant table.
    #[error("grant ref {gref} is outside the grant table ({entries} entries)")]
    BadRef { gref: u32, entries: usize },
}

impl SimError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        SimError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
