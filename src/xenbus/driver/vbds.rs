//! The VBDs the driver knows, each with its handshake, and the carrying out of the actions
//! those handshakes return: written to xenstore, opened, handed to the workers. Answers
//! (storage opened, front-end keys read) go back to the handshake after the batch that asked
//! for them, so that actions are always carried out in the order they were returned.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use slog::{debug, error, info, o, warn, Logger};

use super::groups::{Change, Groups};
use super::qos;
use super::reattach::{StateDir, TakeUp};
use super::storage::{self as opening, Storage};
use super::store::{Store, StoreError};
use super::watch::frontend_token;
use crate::platform::DomId;
use crate::stats::{Directory, QosInForce, VbdInfo};
use crate::storage;
use crate::vbd::{Connect, Dispatch, Report};
use crate::xenbus::keys;
use crate::xenbus::{
    error_value, is_online, read_device, read_frontend_rings, Action, BackendTree, DeviceId, Event,
    FrontendRings, Handshake, Limits, OpenStorage, XenbusState,
};

/// The errno of a failure published in an `error` node: the toolstack's keys are invalid.
const EINVAL: i32 = libc::EINVAL;
/// Any other failure of the handshake.
const EIO: i32 = libc::EIO;

struct Vbd {
    handshake: Handshake,
    /// Opened once `physical-device-path` was read; handed to the worker at connect.
    storage: Option<Arc<storage::Backing>>,
    /// While a worker serves it: the QoS keys in force there.
    qos: Option<InForce>,
    log: Logger,
}

/// The QoS keys a worker applies to a VBD, and why the latest set was refused if it was.
struct InForce {
    accepted: qos::Accepted,
    /// Logged once per reason, not on every watch event of a bad set.
    refused: Option<String>,
}

impl InForce {
    /// As the control socket shows it.
    fn shown(&self) -> QosInForce {
        QosInForce {
            keys: self.accepted.keys.clone(),
            error: self.refused.clone(),
        }
    }
}

impl Vbd {
    fn frontend_state(&self) -> String {
        format!("{}/state", self.handshake.device().frontend)
    }
}

/// As Linux's `xenbus_dev_remove`: a VBD removed while its `state` reads Closing ends Closed.
/// That is a forced detach (`xl block-detach --force`: the toolstack wrote Closing and deleted
/// the front end's directory at once), and the toolstack waits for Closed before it removes
/// the backend directory.
fn closed_if_closing(store: &mut Store, dir: &str) -> Result<(), StoreError> {
    let state = XenbusState::from_key(store.read(&format!("{dir}/state"))?.as_deref());
    if state == XenbusState::Closing {
        store.write_keys(dir, &[("state", XenbusState::Closed.value().to_string())])?;
    }
    Ok(())
}

/// Every VBD being served or set up, and the workers they go to.
pub struct Vbds<D> {
    tree: BackendTree,
    states: StateDir,
    limits: Limits,
    dispatch: D,
    vbds: HashMap<DeviceId, Vbd>,
    groups: Groups,
    /// What the control socket shows of each served VBD.
    directory: Arc<Directory>,
    log: Logger,
}

fn id_log(log: &Logger, id: DeviceId) -> Logger {
    log.new(o!("domid" => id.frontend_id.0, "devid" => id.devid))
}

impl<D: Dispatch> Vbds<D> {
    pub fn new(
        tree: BackendTree,
        states: StateDir,
        limits: Limits,
        dispatch: D,
        directory: Arc<Directory>,
        log: Logger,
    ) -> Self {
        let groups = Groups::new(tree.groups_root(), tree.backend_id(), log.clone());
        Vbds {
            tree,
            states,
            limits,
            dispatch,
            vbds: HashMap::new(),
            groups,
            directory,
            log,
        }
    }

    /// The throttle groups' directory, to watch.
    pub fn groups_root(&self) -> &str {
        self.groups.root()
    }

    /// Something changed below the groups' directory: the workers get the groups' new limits;
    /// the VBDs refused for naming a group that did not exist are judged again when it
    /// appears, and the members of a removed group keep their own limits, their `qos-error`
    /// saying the group is gone (docs/qos.md "Throttle groups").
    pub fn groups_changed(&mut self, store: &mut Store, path: &str) -> Result<(), StoreError> {
        for change in self.groups.changed(store, path)? {
            match change {
                Change::Created(name, limits) => {
                    info!(self.log, "group created"; "group" => &name, "limits" => ?limits);
                    self.dispatch.group(&name, limits);
                    let refused: Vec<DeviceId> = (self.vbds.iter())
                        .filter(|(_, vbd)| vbd.qos.as_ref().is_some_and(|q| q.refused.is_some()))
                        .map(|(&id, _)| id)
                        .collect();
                    for id in refused {
                        self.qos_changed(store, id)?;
                    }
                }
                Change::Retuned(name, limits) => {
                    info!(self.log, "group retuned"; "group" => &name, "limits" => ?limits);
                    self.dispatch.group(&name, limits);
                }
                Change::Removed(name) => self.group_removed(store, &name)?,
            }
        }
        self.directory.set_groups(self.groups.shown());
        Ok(())
    }

    fn group_removed(&mut self, store: &mut Store, name: &str) -> Result<(), StoreError> {
        info!(self.log, "group removed"; "group" => name);
        let refusal = qos::Refusal::NoGroup(name.to_owned());
        for (&id, vbd) in &mut self.vbds {
            let Some(in_force) = vbd.qos.as_mut() else {
                continue;
            };
            if in_force.accepted.config.group.as_deref() != Some(name) {
                continue;
            }
            warn!(vbd.log, "its group was removed: served on its own limits"; "group" => name);
            in_force.accepted.config.group = None;
            in_force.accepted.keys.remove("group");
            in_force.refused = Some(refusal.to_string());
            qos::publish(store, &self.tree.device_dir(id), Some(&refusal))?;
            self.dispatch.retune(id, in_force.accepted.config.clone());
            self.directory.retuned(id, in_force.shown());
        }
        // After the retunes: the group's worker sees its members leave first.
        self.dispatch.remove_group(name);
        Ok(())
    }

    /// The workers, for the caller to shut down.
    pub fn into_dispatch(self) -> D {
        self.dispatch
    }

    /// Lists the whole tree: probes new VBDs, tears down those whose directory is gone.
    pub fn rescan(&mut self, store: &mut Store) -> Result<(), StoreError> {
        let root = self.tree.root().to_owned();
        let mut present = BTreeSet::new();
        for guest in store.list(&root)? {
            for devid in store.list(&format!("{root}/{guest}"))? {
                // Names that are no ids (a stray node) are nobody's VBD.
                if let Some((id, "")) = self.tree.parse(&format!("{root}/{guest}/{devid}")) {
                    present.insert(id);
                }
            }
        }
        let gone: Vec<DeviceId> = (self.vbds.keys())
            .filter(|id| !present.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.deliver(store, id, Event::Gone)?;
        }
        for id in present {
            if !self.vbds.contains_key(&id) {
                self.probe(store, id)?;
            }
        }
        Ok(())
    }

    /// A key (or, for "", the directory) of VBD `id`'s backend directory changed.
    pub fn backend_changed(
        &mut self,
        store: &mut Store,
        id: DeviceId,
        key: &str,
    ) -> Result<(), StoreError> {
        if !self.vbds.contains_key(&id) {
            return self.probe(store, id);
        }
        let dir = self.tree.device_dir(id);
        let event = match key {
            "" if !store.exists(&dir)? => Event::Gone,
            "physical-device-path" => match store.read(&format!("{dir}/{key}"))? {
                Some(path) => Event::PhysicalDevicePath(path),
                None => return Ok(()),
            },
            "online" => Event::Online(is_online(store.read(&format!("{dir}/{key}"))?.as_deref())),
            // A QoS key, or the directory itself (its permissions): the set is judged again.
            "" => return self.qos_changed(store, id),
            key if qos::is_qos_key(key) => return self.qos_changed(store, id),
            // Ours, the toolstack's and the hotplug script's.
            _ => return Ok(()),
        };
        self.deliver(store, id, event)
    }

    /// Reads a served VBD's QoS keys again: a good set that differs goes to its worker, a bad
    /// one leaves the last good set in force (DESIGN "Retune").
    fn qos_changed(&mut self, store: &mut Store, id: DeviceId) -> Result<(), StoreError> {
        let dir = self.tree.device_dir(id);
        let Some(vbd) = self.vbds.get_mut(&id) else {
            return Ok(());
        };
        let frontend_id = vbd.handshake.device().frontend_id;
        // Not served (yet, or any more): the keys are read when it connects.
        let Some(in_force) = &mut vbd.qos else {
            return Ok(());
        };
        let groups = &self.groups;
        match qos::read(store, &dir, frontend_id, |name| groups.exists(name))? {
            Ok(accepted) => {
                in_force.refused = None;
                if accepted.config != in_force.accepted.config {
                    info!(vbd.log, "QoS retuned"; "qos" => ?accepted.config);
                    self.dispatch.retune(id, accepted.config.clone());
                }
                in_force.accepted = accepted;
            }
            Err(refusal) => {
                let reason = refusal.to_string();
                if in_force.refused.as_ref() != Some(&reason) {
                    warn!(vbd.log, "QoS keys refused: the last good set stays in force";
                        "reason" => &reason);
                    in_force.refused = Some(reason);
                }
            }
        }
        self.directory.retuned(id, in_force.shown());
        Ok(())
    }

    /// The front end's `state` of VBD `id` may have changed.
    pub fn frontend_changed(&mut self, store: &mut Store, id: DeviceId) -> Result<(), StoreError> {
        let Some(vbd) = self.vbds.get(&id) else {
            return Ok(());
        };
        let path = vbd.frontend_state();
        // Absent (the front end's directory went) reads as Unknown: the VBD is gone.
        let state = XenbusState::from_key(store.read(&path)?.as_deref());
        self.deliver(store, id, Event::FrontendState(state))
    }

    /// Some domain was released: every VBD of a front end whose domain is gone is torn down.
    pub fn domains_released(&mut self, store: &mut Store) -> Result<(), StoreError> {
        let frontends: BTreeSet<DomId> = self.vbds.keys().map(|id| id.frontend_id).collect();
        for domid in frontends {
            if store.domain_exists(domid.0)? {
                continue;
            }
            info!(self.log, "front end's domain released"; "domid" => domid.0);
            let ids: Vec<DeviceId> = (self.vbds.keys())
                .filter(|id| id.frontend_id == domid)
                .copied()
                .collect();
            for id in ids {
                self.deliver(store, id, Event::Gone)?;
            }
        }
        Ok(())
    }

    /// Reads the size of every VBD's open storage again; the workers check requests against
    /// it from now on, and the handshake publishes a changed one (Linux `xen_vbd_resize`).
    pub fn refresh_sizes(&mut self, store: &mut Store) -> Result<(), StoreError> {
        let mut resized = Vec::new();
        for (&id, vbd) in &self.vbds {
            let Some(storage) = &vbd.storage else {
                continue;
            };
            let before = storage.size_bytes();
            match storage.refresh_size() {
                Ok(after) if after != before => {
                    info!(vbd.log, "storage resized"; "from_bytes" => before, "to_bytes" => after);
                    resized.push((id, opening::summary(storage)));
                }
                Ok(_) => {}
                // The size as last read stays in force until a read succeeds.
                Err(e) => warn!(vbd.log, "reading the storage's size"; "error" => %e),
            }
        }
        for (id, summary) in resized {
            self.deliver(store, id, Event::Resized(summary))?;
        }
        Ok(())
    }

    /// What a worker said about a VBD.
    pub fn report(&mut self, store: &mut Store, report: Report) -> Result<(), StoreError> {
        let (id, event) = match report {
            Report::Connected(id) => (id, Event::RingsConnected),
            Report::ConnectFailed(id, reason) => (id, Event::RingsFailed(reason)),
            Report::Broken(id, reason) => (id, Event::Broken(reason)),
            Report::Drained(id) => (id, Event::Drained),
            // Between workers: nothing the handshake sees.
            Report::Moved(id) => {
                self.dispatch.moved(id);
                return Ok(());
            }
        };
        self.deliver(store, id, event)
    }

    /// A backend directory we do not serve yet. As Linux's `xenbus_probe_node`, one whose
    /// `state` is Initialising is taken: the toolstack just created it; so is one a previous
    /// tokenbackd left Connected with its state file (see `reattach`). Any other was served
    /// and closed (waiting for the toolstack to remove it) or is being removed.
    fn probe(&mut self, store: &mut Store, id: DeviceId) -> Result<(), StoreError> {
        let dir = self.tree.device_dir(id);
        let state = XenbusState::from_key(store.read(&format!("{dir}/state"))?.as_deref());
        let log = id_log(&self.log, id);
        let resume = match self.states.take_up(id, state) {
            TakeUp::New => false,
            TakeUp::Reattach => true,
            TakeUp::Foreign => {
                warn!(log, "left alone: Connected, but no state file of ours";
                    "state_file" => %self.states.path(id).display());
                return Ok(());
            }
            TakeUp::Ignore => return Ok(()),
        };
        let device = match store.read_keys(&dir, |read| read_device(read))? {
            Ok(device) => device,
            Err(e) => {
                // Linux's xenbus_dev_fatal: the error node, then Closing, so that the
                // toolstack sees the failure and the directory is not probed again.
                error!(log, "bad toolstack keys"; "error" => %e);
                store.write(
                    &self.tree.error_node(id),
                    &error_value(EINVAL, &e.to_string()),
                )?;
                let closing = XenbusState::Closing.value().to_string();
                store.write_keys(&dir, &[("state", closing)])?;
                return Ok(());
            }
        };
        info!(log, "new VBD"; "frontend" => &device.frontend, "writable" => device.writable,
            "reattach" => resume);
        let (handshake, actions) = match resume {
            true => {
                let sectors = store.read(&format!("{dir}/sectors"))?;
                let sectors = sectors.and_then(|s| s.parse().ok());
                (
                    Handshake::reattach(device, self.limits, sectors),
                    Vec::new(),
                )
            }
            false => Handshake::new(device, self.limits),
        };
        let vbd = Vbd {
            handshake,
            storage: None,
            qos: None,
            log,
        };
        // Its first event is the front end's state as it is now.
        store.watch(&vbd.frontend_state(), &frontend_token(id))?;
        self.vbds.insert(id, vbd);
        self.run(store, id, actions)?;
        // The hotplug script may have run already (it waits for InitWait, which a previous
        // daemon may have written); the toolstack may be detaching.
        self.backend_changed(store, id, "physical-device-path")?;
        self.backend_changed(store, id, "online")
    }

    fn deliver(&mut self, store: &mut Store, id: DeviceId, event: Event) -> Result<(), StoreError> {
        let Some(vbd) = self.vbds.get_mut(&id) else {
            return Ok(());
        };
        debug!(vbd.log, "event"; "event" => ?event);
        let actions = vbd.handshake.handle(event);
        self.run(store, id, actions)
    }

    /// Carries out `actions`, then the handshake's reactions to their answers, in order.
    fn run(
        &mut self,
        store: &mut Store,
        id: DeviceId,
        actions: Vec<Action>,
    ) -> Result<(), StoreError> {
        let mut answers = VecDeque::new();
        let mut actions = actions;
        loop {
            for action in actions {
                match self.carry(store, id, action) {
                    Ok(Some(answer)) => answers.push_back(answer),
                    Ok(None) => {}
                    Err(e) if e.is_lost() => return Err(e),
                    // One request refused: the VBD goes on; what is missing shows in xenstore.
                    Err(e) => warn!(self.log, "xenstore refused"; "error" => %e,
                        "domid" => id.frontend_id.0, "devid" => id.devid),
                }
            }
            let Some(answer) = answers.pop_front() else {
                return Ok(());
            };
            let Some(vbd) = self.vbds.get_mut(&id) else {
                return Ok(());
            };
            debug!(vbd.log, "event"; "event" => ?answer);
            actions = vbd.handshake.handle(answer);
        }
    }

    /// Carries out one action; the event that answers it, if it has one.
    fn carry(
        &mut self,
        store: &mut Store,
        id: DeviceId,
        action: Action,
    ) -> Result<Option<Event>, StoreError> {
        let dir = self.tree.device_dir(id);
        let Some(vbd) = self.vbds.get_mut(&id) else {
            return Ok(None);
        };
        match action {
            Action::WriteKeys(keys) => {
                store.write_keys(&dir, &keys)?;
            }
            Action::SwitchState(state) => {
                info!(vbd.log, "state"; "state" => state.value());
                store.write_keys(&dir, &[("state", state.value().to_string())])?;
            }
            Action::OpenStorage(path) => {
                let writable = vbd.handshake.device().writable;
                return Ok(Some(match Storage.open(Path::new(&path), writable) {
                    Ok((opened, summary)) => {
                        info!(vbd.log, "storage open"; "path" => &path,
                            "sectors" => summary.sectors(), "read_only" => summary.read_only);
                        vbd.storage = Some(opened);
                        Event::StorageOpened(summary)
                    }
                    Err(e) => Event::StorageFailed(e.to_string()),
                }));
            }
            Action::ReadFrontendKeys => {
                let frontend = vbd.handshake.device().frontend.clone();
                let limits = vbd.handshake.limits();
                let rings = store.read_keys(&frontend, |read| read_frontend_rings(limits, read))?;
                return Ok(Some(Event::FrontendKeys(rings)));
            }
            Action::ConnectRings(rings) => return self.connect(store, id, rings, false),
            Action::ResumeRings(rings) => return self.connect(store, id, rings, true),
            Action::Disconnect => {
                info!(vbd.log, "disconnecting");
                vbd.qos = None;
                self.directory.disconnected(id);
                self.dispatch.disconnect(id);
            }
            Action::Fatal(reason) => {
                error!(vbd.log, "VBD failed"; "reason" => &reason);
                store.write(&self.tree.error_node(id), &error_value(EIO, &reason))?;
            }
            Action::Remove => {
                info!(vbd.log, "removed");
                let path = vbd.frontend_state();
                self.vbds.remove(&id);
                self.directory.disconnected(id);
                store.unwatch(&path, &frontend_token(id))?;
                closed_if_closing(store, &dir)?;
            }
        }
        Ok(None)
    }

    /// Hands the rings to a worker (`resume`: from the VBD's state file); it answers with a
    /// report.
    fn connect(
        &mut self,
        store: &mut Store,
        id: DeviceId,
        rings: FrontendRings,
        resume: bool,
    ) -> Result<Option<Event>, StoreError> {
        let dir = self.tree.device_dir(id);
        let Some(vbd) = self.vbds.get_mut(&id) else {
            return Ok(None);
        };
        let Some(storage) = vbd.storage.clone() else {
            // The handshake hands rings over only once storage is open.
            return Ok(Some(Event::RingsFailed("no storage open".into())));
        };
        let device = vbd.handshake.device();
        let frontend_id = device.frontend_id;
        let discard = device.discard_enable && storage.discard();
        let groups = &self.groups;
        let (accepted, refused) = match qos::read(store, &dir, frontend_id, |g| groups.exists(g))? {
            Ok(accepted) => (accepted, None),
            Err(refusal) => {
                warn!(vbd.log, "QoS keys refused: served without limits"; "reason" => %refusal);
                (qos::Accepted::default(), Some(refusal.to_string()))
            }
        };
        let config = accepted.config.clone();
        info!(vbd.log, "connecting"; "queues" => rings.queues.len(), "resume" => resume,
            "ring_page_order" => rings.ring_page_order, "protocol" => ?rings.protocol,
            "qos" => ?config);
        let in_force = InForce { accepted, refused };
        let info = VbdInfo {
            vdev: store.read(&format!("{dir}/dev"))?,
            domain: store.read(&format!("/local/domain/{}/name", frontend_id.0))?,
            target: (store.read(&format!("{dir}/physical-device-path"))?).unwrap_or_default(),
            backend: dir,
            qos: in_force.shown(),
        };
        self.directory.connected(id, info);
        vbd.qos = Some(in_force);
        self.dispatch.connect(Connect {
            id,
            frontend_id,
            rings,
            storage,
            qos: config,
            discard,
            persistent: keys::PERSISTENT_GRANTS,
            state: Some(self.states.plan(id, resume)),
        });
        Ok(None)
    }
}
