//! What the control socket tells of a VBD that its worker does not know: names, paths and the
//! QoS keys in force, as the xenbus driver read them. The driver writes an entry at connect,
//! on every retune and at disconnect; the control thread copies the whole directory once per
//! request. Nothing touches it per guest request, so its lock is never on a hot path.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::xenbus::DeviceId;

/// QoS keys in force and the reason the latest set was refused, if it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QosInForce {
    /// The keys of the set in force as they were written (only those set).
    pub keys: BTreeMap<String, String>,
    /// `qos-error`: why the latest set was refused; `None` when it is the one in force.
    pub error: Option<String>,
}

/// A served VBD's names and paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VbdInfo {
    /// The backend directory's `dev` key (e.g. "xvda"), when the toolstack wrote one.
    pub vdev: Option<String>,
    /// `/local/domain/<domid>/name`, when it has one.
    pub domain: Option<String>,
    /// The backend directory.
    pub backend: String,
    /// `physical-device-path`.
    pub target: String,
    pub qos: QosInForce,
}

/// Shared between the xenbus driver, which writes it, and the control thread, which reads it.
#[derive(Debug, Default)]
pub struct Directory {
    vbds: Mutex<BTreeMap<DeviceId, VbdInfo>>,
    /// Each declared throttle group's keys in force, by name.
    groups: Mutex<BTreeMap<String, QosInForce>>,
}

impl Directory {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<DeviceId, VbdInfo>> {
        // A writer that panicked left whole values behind (each update is one insert or
        // remove): what is there is still good to read and replace.
        self.vbds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A VBD handed to a worker.
    pub fn connected(&self, id: DeviceId, info: VbdInfo) {
        self.lock().insert(id, info);
    }

    /// A served VBD's keys were read again.
    pub fn retuned(&self, id: DeviceId, qos: QosInForce) {
        if let Some(info) = self.lock().get_mut(&id) {
            info.qos = qos;
        }
    }

    /// A VBD no longer served.
    pub fn disconnected(&self, id: DeviceId) {
        self.lock().remove(&id);
    }

    /// A copy, taken for one request.
    pub fn snapshot(&self) -> BTreeMap<DeviceId, VbdInfo> {
        self.lock().clone()
    }

    /// The throttle groups as declared now (each groups watch event replaces them all).
    pub fn set_groups(&self, groups: BTreeMap<String, QosInForce>) {
        // As for the VBDs: a poisoned lock still holds whole values.
        *self.groups.lock().unwrap_or_else(PoisonError::into_inner) = groups;
    }

    /// The keys in force of the group `name`, if it is declared.
    pub fn group(&self, name: &str) -> Option<QosInForce> {
        let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        groups.get(name).cloned()
    }
}
