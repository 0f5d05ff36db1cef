//! Taking up VBDs a previous tokenbackd left Connected (DESIGN "Restart without guest
//! errors"): which backend directories to take, and where their state files are.

use std::path::{Path, PathBuf};

use crate::vbd::StatePlan;
use crate::xenbus::{BackendTree, DeviceId, XenbusState};

/// What to do with a backend directory the driver does not serve yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeUp {
    /// Initialising: the toolstack just created it (Linux's `xenbus_probe_node`).
    New,
    /// Connected, with a state file: a previous tokenbackd served it; resume it.
    Reattach,
    /// Connected with no state file: someone else's (kernel blkback, or a daemon whose state
    /// directory is elsewhere). Left alone, with a warning.
    Foreign,
    /// Any other state: closed or being closed, waiting for the toolstack.
    Ignore,
}

/// Where VBDs keep their state files.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    tree: &'static str,
}

impl StateDir {
    pub fn new(dir: &Path, tree: &BackendTree) -> Self {
        StateDir {
            dir: dir.to_owned(),
            tree: tree.kind().name(),
        }
    }

    pub fn path(&self, id: DeviceId) -> PathBuf {
        crate::vbd::state_file::path_for(&self.dir, self.tree, id)
    }

    /// How to take up directory `id`, whose `state` is `state`.
    pub fn take_up(&self, id: DeviceId, state: XenbusState) -> TakeUp {
        match state {
            XenbusState::Initialising => TakeUp::New,
            XenbusState::Connected if self.path(id).exists() => TakeUp::Reattach,
            XenbusState::Connected => TakeUp::Foreign,
            _ => TakeUp::Ignore,
        }
    }

    /// The state file to keep for a connect (`resume`: the one to resume from).
    pub fn plan(&self, id: DeviceId, resume: bool) -> StatePlan {
        StatePlan {
            path: self.path(id),
            resume,
        }
    }
}
