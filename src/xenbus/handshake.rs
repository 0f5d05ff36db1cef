//! One VBD's handshake as a pure state machine: events in (what xenstore and the worker said),
//! actions out (what to write, open, connect or tear down). No I/O, so every path is tested
//! here; the driver carries the actions out in order. Follows Linux's `frontend_changed`
//! (drivers/block/xen-blkback/xenbus.c) with the hotplug wait of DESIGN "What the hotplug
//! script writes".

use super::backing::Backing;
use super::device::DeviceConfig;
use super::frontend::{FrontendError, FrontendRings, Limits};
use super::keys::{connect_keys, probe_keys, PERSISTENT_GRANTS};
use super::state::XenbusState;

/// What happened to this VBD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `physical-device-path` has a value (the hotplug script is done).
    PhysicalDevicePath(String),
    /// The storage named there is open.
    StorageOpened(Backing),
    StorageFailed(String),
    /// The front end's `state` changed (or was first read).
    FrontendState(XenbusState),
    /// The front end's keys, read after `Action::ReadFrontendKeys`.
    FrontendKeys(Result<FrontendRings, FrontendError>),
    /// The worker mapped the rings and bound the channels of `Action::ConnectRings`.
    RingsConnected,
    RingsFailed(String),
    /// The worker answered every in-flight request and unmapped (after `Action::Disconnect`).
    Drained,
    /// The front end broke a ring: the worker drained and dropped the VBD by itself, so
    /// nothing is left to disconnect.
    Broken(String),
    /// The backend's `online` key.
    Online(bool),
    /// The storage's size changed.
    Resized(Backing),
    /// The backend directory is gone, or the front end's domain is (@releaseDomain): tear down.
    Gone,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these keys (relative to the backend directory) in one transaction.
    WriteKeys(Vec<(&'static str, String)>),
    /// Write our `state`, unless it already holds that value or the directory is gone.
    SwitchState(XenbusState),
    /// Open the storage at this path; answer with StorageOpened or StorageFailed.
    OpenStorage(String),
    /// Read the front end's keys; answer with FrontendKeys.
    ReadFrontendKeys,
    /// Hand the rings and the opened storage to a worker; answer with RingsConnected or
    /// RingsFailed.
    ConnectRings(FrontendRings),
    /// As ConnectRings, for rings a previous daemon served: the worker resumes them from the
    /// VBD's state file.
    ResumeRings(FrontendRings),
    /// Stop taking requests, drain, unmap, unbind; answer with Drained.
    Disconnect,
    /// Log this and publish it in the VBD's `error` node, as Linux's `xenbus_dev_fatal`.
    Fatal(String),
    /// Forget this VBD: nothing of it is left to release.
    Remove,
}

/// Where the VBD's rings are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rings {
    /// Not mapped.
    Down,
    /// Keys being read.
    Reading,
    /// Handed to a worker, not yet confirmed.
    Connecting,
    Up,
    /// Being drained and unmapped.
    Draining,
}

/// One VBD's handshake.
#[derive(Debug)]
pub struct Handshake {
    device: DeviceConfig,
    limits: Limits,
    /// Our `state` as last written.
    state: XenbusState,
    frontend: XenbusState,
    backing: Option<Backing>,
    storage_asked: bool,
    /// Front end's keys read but not yet handed over (storage still opening).
    pending_rings: Option<FrontendRings>,
    rings: Rings,
    online: bool,
    /// Gone: remove once drained.
    gone: bool,
    /// Remove was asked for: nothing more to do.
    removed: bool,
    /// Taken up Connected from a previous daemon; the rings are not resumed yet.
    resuming: bool,
    /// While resuming: the `sectors` the previous daemon advertised.
    advertised_sectors: Option<u64>,
}

impl Handshake {
    /// A new device directory: advertise the probe keys and go to InitWait at once, before
    /// `physical-device-path` exists (libxl waits for exactly InitWait to run the script).
    pub fn new(device: DeviceConfig, limits: Limits) -> (Self, Vec<Action>) {
        let handshake = Handshake {
            device,
            limits,
            state: XenbusState::InitWait,
            frontend: XenbusState::Unknown,
            backing: None,
            storage_asked: false,
            pending_rings: None,
            rings: Rings::Down,
            online: true,
            gone: false,
            removed: false,
            resuming: false,
            advertised_sectors: None,
        };
        let actions = vec![
            Action::WriteKeys(probe_keys(limits)),
            Action::SwitchState(XenbusState::InitWait),
        ];
        (handshake, actions)
    }

    /// A directory a previous daemon left Connected with its state file: no keys to write
    /// (they are there), only the storage to open again (on `physical-device-path`), then the
    /// front end's keys to read and the rings to resume. `sectors` is the size it advertised:
    /// storage that was resized while no daemon ran is announced as a resize.
    pub fn reattach(device: DeviceConfig, limits: Limits, sectors: Option<u64>) -> Self {
        let (mut handshake, _) = Handshake::new(device, limits);
        handshake.state = XenbusState::Connected;
        handshake.resuming = true;
        handshake.advertised_sectors = sectors;
        handshake
    }

    /// Our `state` as last written.
    pub fn state(&self) -> XenbusState {
        self.state
    }

    /// What we advertised: the bounds to read the front end's keys with.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn device(&self) -> &DeviceConfig {
        &self.device
    }

    /// Reacts to one event.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        // Once gone, only the worker's last word about the rings matters.
        let last_word = matches!(event, Event::Drained | Event::Broken(_));
        if self.removed || (self.gone && !last_word) {
            return actions;
        }
        match event {
            Event::PhysicalDevicePath(path) => {
                // The first value wins, as Linux ignores a changed physical-device.
                if !self.storage_asked {
                    self.storage_asked = true;
                    actions.push(Action::OpenStorage(path));
                }
            }
            Event::StorageOpened(backing) => {
                self.backing = Some(backing);
                if self.resuming && self.advertised_sectors != Some(backing.sectors()) {
                    actions.push(resize_keys(&backing));
                }
                self.advance(&mut actions);
            }
            Event::StorageFailed(reason) => {
                self.fatal(format!("opening storage: {reason}"), &mut actions)
            }
            Event::FrontendState(state) => self.frontend_changed(state, &mut actions),
            Event::FrontendKeys(result) => {
                if self.rings != Rings::Reading {
                    return actions;
                }
                self.rings = Rings::Down;
                // Keys asked for before a failure or close are stale.
                if self.state != XenbusState::InitWait && !self.resuming {
                    return actions;
                }
                match result {
                    Ok(rings) => {
                        self.pending_rings = Some(rings);
                        self.advance(&mut actions);
                    }
                    Err(e) => self.fatal(format!("reading front end keys: {e}"), &mut actions),
                }
            }
            Event::RingsConnected => {
                if self.rings == Rings::Connecting {
                    self.rings = Rings::Up;
                    self.resuming = false;
                    self.advance(&mut actions);
                }
            }
            Event::RingsFailed(reason) => {
                if self.rings == Rings::Connecting {
                    self.rings = Rings::Down;
                    self.fatal(format!("mapping rings: {reason}"), &mut actions);
                }
            }
            Event::Drained => {
                if self.rings == Rings::Draining {
                    self.rings = Rings::Down;
                    if self.gone {
                        actions.push(Action::Remove);
                    } else if self.frontend == XenbusState::Closed {
                        self.close(&mut actions);
                    }
                }
            }
            Event::Broken(reason) => match self.rings {
                Rings::Connecting | Rings::Up => {
                    self.rings = Rings::Down;
                    self.fatal(format!("front end broke its ring: {reason}"), &mut actions);
                }
                // Being torn down already: the worker is done with it, as Drained says.
                Rings::Draining => actions.extend(self.handle(Event::Drained)),
                Rings::Down | Rings::Reading => {}
            },
            Event::Online(online) => {
                self.online = online;
                if !online && self.state == XenbusState::Closed && self.rings == Rings::Down {
                    actions.push(Action::Remove);
                }
            }
            Event::Resized(backing) => {
                // Only storage we opened can change size; a stray report must not stand in
                // for it.
                let Some(current) = self.backing.as_mut() else {
                    return actions;
                };
                let resized = current.sectors() != backing.sectors();
                *current = backing;
                if resized && self.state == XenbusState::Connected {
                    actions.push(resize_keys(&backing));
                }
            }
            Event::Gone => {
                self.gone = true;
                match self.rings {
                    Rings::Down | Rings::Reading => actions.push(Action::Remove),
                    Rings::Connecting | Rings::Up => {
                        self.rings = Rings::Draining;
                        actions.push(Action::Disconnect);
                    }
                    Rings::Draining => {}
                }
            }
        }
        if actions.contains(&Action::Remove) {
            self.removed = true;
        }
        actions
    }

    fn frontend_changed(&mut self, state: XenbusState, actions: &mut Vec<Action>) {
        self.frontend = state;
        match state {
            XenbusState::Initialising => {
                // The front end starts over after a close.
                if self.state == XenbusState::Closed {
                    self.switch(XenbusState::InitWait, actions);
                }
            }
            XenbusState::Initialised | XenbusState::Connected => {
                if self.state == XenbusState::Connected
                    || self.state == XenbusState::Closing
                    || self.state == XenbusState::Closed
                {
                    return;
                }
                if self.rings == Rings::Down && self.pending_rings.is_none() {
                    self.rings = Rings::Reading;
                    actions.push(Action::ReadFrontendKeys);
                }
            }
            XenbusState::Closing => self.switch(XenbusState::Closing, actions),
            XenbusState::Closed => match self.rings {
                Rings::Connecting | Rings::Up => {
                    self.rings = Rings::Draining;
                    actions.push(Action::Disconnect);
                }
                Rings::Draining => {}
                Rings::Down | Rings::Reading => {
                    self.rings = Rings::Down;
                    self.close(actions);
                }
            },
            XenbusState::Unknown => {
                // The front end's directory is gone.
                self.handle_gone(actions);
            }
            XenbusState::InitWait | XenbusState::Other(_) => {
                self.fatal(format!("saw state {} at frontend", state.value()), actions)
            }
        }
    }

    fn handle_gone(&mut self, actions: &mut Vec<Action>) {
        actions.extend(self.handle(Event::Gone));
    }

    /// Moves on as far as what we have allows: rings handed over once both the storage and the
    /// front end's keys are there; Connected once the worker confirmed.
    fn advance(&mut self, actions: &mut Vec<Action>) {
        let Some(backing) = self.backing else {
            return;
        };
        if self.resuming && self.rings == Rings::Down && self.pending_rings.is_none() {
            self.rings = Rings::Reading;
            actions.push(Action::ReadFrontendKeys);
        }
        if self.rings == Rings::Down {
            if let Some(rings) = self.pending_rings.take() {
                self.rings = Rings::Connecting;
                actions.push(match self.resuming {
                    true => Action::ResumeRings(rings),
                    false => Action::ConnectRings(rings),
                });
            }
        }
        if self.rings == Rings::Up && self.state == XenbusState::InitWait {
            actions.push(Action::WriteKeys(connect_keys(
                &self.device,
                &backing,
                PERSISTENT_GRANTS,
            )));
            self.switch(XenbusState::Connected, actions);
        }
    }

    fn close(&mut self, actions: &mut Vec<Action>) {
        self.pending_rings = None;
        self.switch(XenbusState::Closed, actions);
        if !self.online {
            actions.push(Action::Remove);
        }
    }

    fn fatal(&mut self, reason: String, actions: &mut Vec<Action>) {
        actions.push(Action::Fatal(reason));
        self.pending_rings = None;
        self.switch(XenbusState::Closing, actions);
        if matches!(self.rings, Rings::Connecting | Rings::Up) {
            self.rings = Rings::Draining;
            actions.push(Action::Disconnect);
        }
    }

    fn switch(&mut self, state: XenbusState, actions: &mut Vec<Action>) {
        if self.state != state {
            // Only a VBD that stays Connected is resumed.
            self.resuming = false;
            self.state = state;
            actions.push(Action::SwitchState(state));
        }
    }
}

/// A new size for a Connected front end: `sectors`, and `state` re-written, which fires the
/// front end's watch (Linux `xen_vbd_resize`).
fn resize_keys(backing: &Backing) -> Action {
    Action::WriteKeys(vec![
        ("sectors", backing.sectors().to_string()),
        ("state", XenbusState::Connected.value().to_string()),
    ])
}
