//! The simulated host's toolstack: what libxl and the hypervisor do for a guest's life and
//! its disks (docs/sim-host.md "Domain life"; reference xenbus-vbd.md sections 2, 3, 10).
//!
//! It creates a domain (memory, grant table, event channels), gives it its xenstore home,
//! allocates the event channel of its store connection (an unbound port of the guest for
//! dom0, as libxl does for `store_port`) and introduces it to xenstored with it, writes a disk's backend and frontend directories in one
//! transaction as `libxl__device_generic_add` does, detaches a disk as libxl does (`online`
//! 0 and backend `state` 5), and destroys the domain again.

mod hotplug;
mod xl_destroy;
pub mod xl_disk;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use hotplug::Detach;
pub use xl_destroy::{DiskRemoval, DESTROY_TIMEOUT};

use thiserror::Error;
use tokenback::platform::sim::{GuestDomain, RunDir, SimError, SimEventChannel};
use tokenback::platform::{DomId, EvtchnError, Port};
use xenstore_wire::client::blocking::Client;
use xenstore_wire::client::{ClientError, Endpoint, TxId};
use xenstore_wire::perms::{Access, Perm, Perms};

/// Why the toolstack could not do its part.
#[derive(Debug, Error)]
pub enum ToolstackError {
    /// The simulated host's files.
    #[error("simulated host: {0}")]
    Sim(#[from] SimError),
    /// xenstored did not release a destroyed domain in time.
    #[error("xenstored did not release destroyed domain {0}")]
    NotReleased(DomId),
    /// The guest's store event channel.
    #[error("store event channel: {0}")]
    Evtchn(#[from] EvtchnError),
    /// The hotplug script could not be run.
    #[error("cannot run {script}: {source}")]
    Script {
        /// Its path.
        script: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The hotplug script failed: its `hotplug-error`, or how it ended.
    #[error("hotplug script of {backend}: {message}")]
    Hotplug {
        /// The disk's backend directory.
        backend: String,
        /// What went wrong.
        message: String,
    },
    /// The back end did not reach a state in time.
    #[error("the back end {backend} did not reach state {want} in time (state {state:?}; is tokenbackd serving?)")]
    BackendState {
        /// The disk's backend directory.
        backend: String,
        /// The state waited for.
        want: String,
        /// The last state read.
        state: Option<String>,
    },
    /// A xenstore request.
    #[error("xenstore {op}: {source}")]
    Xenstore {
        /// What we were doing.
        op: &'static str,
        /// What went wrong.
        #[source]
        source: ClientError,
    },
}

/// How long xenstored may take to notice a destroyed domain (it reacts at once; this only
/// bounds a hang).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(20);

fn xs_err(op: &'static str) -> impl FnOnce(ClientError) -> ToolstackError {
    move |source| ToolstackError::Xenstore { op, source }
}

/// A disk to give a guest, as an xl `disk=` line describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// Numeric vdev (51712 = xvda).
    pub devid: u16,
    /// The vdev name, e.g. `xvda`.
    pub vdev: String,
    /// The `target=` text, written to `params` verbatim.
    pub params: String,
    /// Read-write (`mode` w) or read-only (`mode` r).
    pub writable: bool,
    /// The `script=` of the disk line: a name in the script directory, or an absolute path.
    pub script: String,
}

impl DiskSpec {
    /// xvda, read-write, set up by block-tokenback.
    pub fn xvda(params: &str) -> Self {
        DiskSpec {
            devid: 51712,
            vdev: "xvda".into(),
            params: params.into(),
            writable: true,
            script: "block-tokenback".into(),
        }
    }
}

/// Where a disk's two xenstore directories are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPaths {
    /// `/local/domain/0/backend/vbd/<domid>/<devid>`.
    pub backend: String,
    /// `/local/domain/<domid>/device/vbd/<devid>`.
    pub frontend: String,
}

/// The toolstack of one simulated host, acting from dom0.
pub struct Toolstack {
    run: RunDir,
    xs: Client,
    /// XEN_SCRIPT_DIR: where a `script=` name is looked up.
    script_dir: PathBuf,
    /// Each guest's store port, held open in the guest's domain until it is destroyed (on
    /// Xen the port belongs to the domain; here to a handle, which this keeps).
    store_ports: HashMap<DomId, (SimEventChannel, Port)>,
}

impl Toolstack {
    /// Connects to the host's xenstored as dom0.
    pub fn new(run: RunDir) -> Result<Self, ToolstackError> {
        let xs =
            Client::connect(Endpoint::Socket(run.xenstored_socket())).map_err(xs_err("connect"))?;
        Ok(Toolstack {
            run,
            xs,
            script_dir: default_script_dir(),
            store_ports: HashMap::new(),
        })
    }

    /// Looks `script=` names up in `dir` instead of the default (see [`default_script_dir`]).
    pub fn set_script_dir(&mut self, dir: &Path) {
        self.script_dir = dir.to_owned();
    }

    /// The event-channel port guest `domid` was introduced with: unbound, for dom0.
    pub fn store_port(&self, domid: DomId) -> Option<Port> {
        self.store_ports.get(&domid).map(|(_, port)| *port)
    }

    /// dom0's xenstore connection.
    pub fn xenstore(&mut self) -> &mut Client {
        &mut self.xs
    }

    /// Creates a guest with `pages` pages of memory and `grant_frames` grant-table frames,
    /// gives it `/local/domain/<domid>` and introduces it: its xenstore socket exists
    /// when this returns.
    pub fn create_guest(
        &mut self,
        name: &str,
        pages: usize,
        grant_frames: usize,
    ) -> Result<DomId, ToolstackError> {
        let guest = GuestDomain::create(&self.run, pages, grant_frames)?;
        let domid = guest.domid();
        let home = format!("/local/domain/{}", domid.0);
        // libxl: the home and `device` dom0's and readable by the guest; only each device's
        // own directory (add_disk) is the guest's.
        let readable = perms(0, domid.0);
        self.xs
            .transaction(|xs, tx| {
                xs.mkdir(tx, &home)?;
                xs.set_perms(tx, &home, &readable)?;
                xs.write(tx, &format!("{home}/name"), name.as_bytes())?;
                xs.write(tx, &format!("{home}/domid"), domid.0.to_string().as_bytes())?;
                xs.mkdir(tx, &format!("{home}/device"))?;
                xs.set_perms(tx, &format!("{home}/device"), &readable)
            })
            .map_err(xs_err("write the domain's home"))?;
        let mut channel = SimEventChannel::open(&self.run, domid)?;
        let port = channel.alloc_unbound(DomId(0))?;
        self.store_ports.insert(domid, (channel, port));
        // The gfn is unused: the simulated guest reaches xenstored over a socket.
        self.xs
            .introduce(domid.0, 0, port.0)
            .map_err(xs_err("introduce"))?;
        Ok(domid)
    }

    /// Writes a disk's backend (served by dom0) and frontend directories in one transaction,
    /// with libxl's keys and permissions; both ends start Initialising.
    pub fn add_disk(&mut self, domid: DomId, disk: &DiskSpec) -> Result<DiskPaths, ToolstackError> {
        let paths = DiskPaths {
            backend: format!("/local/domain/0/backend/vbd/{}/{}", domid.0, disk.devid),
            frontend: format!("/local/domain/{}/device/vbd/{}", domid.0, disk.devid),
        };
        let fe = domid.0.to_string();
        let devid = disk.devid.to_string();
        let mode = if disk.writable { "w" } else { "r" };
        let discard = if disk.writable { "1" } else { "0" };
        // libxl__abs_path: a script not starting with `/` is in the script directory.
        let script = if disk.script.starts_with('/') {
            disk.script.clone()
        } else {
            self.script_dir.join(&disk.script).display().to_string()
        };
        let backend_keys: [(&str, &str); 14] = [
            ("frontend", &paths.frontend),
            ("frontend-id", &fe),
            ("params", &disk.params),
            ("script", &script),
            ("type", "phy"),
            ("mode", mode),
            ("device-type", "disk"),
            ("dev", &disk.vdev),
            ("online", "1"),
            ("removable", "0"),
            ("bootable", "1"),
            ("state", "1"),
            ("discard-enable", discard),
            ("specification", "xen"),
        ];
        let frontend_keys: [(&str, &str); 7] = [
            ("backend", &paths.backend),
            ("backend-id", "0"),
            ("state", "1"),
            ("virtual-device", &devid),
            ("device-type", "disk"),
            ("trusted", "1"),
            ("protocol", blkif::Protocol::NATIVE_NAME),
        ];
        let (backend_perms, frontend_perms) = (perms(0, domid.0), perms(domid.0, 0));
        self.xs
            .transaction(|xs, tx| {
                write_dir(xs, tx, &paths.backend, &backend_perms, &backend_keys)?;
                write_dir(xs, tx, &paths.frontend, &frontend_perms, &frontend_keys)
            })
            .map_err(xs_err("add the disk's directories"))?;
        Ok(paths)
    }

    /// Detaches a disk as `xl block-detach` starts to: backend `online` 0 and `state` 5 in
    /// one transaction. The front end then goes Closed and the back end Closed.
    pub fn detach_disk(&mut self, paths: &DiskPaths) -> Result<(), ToolstackError> {
        self.xs
            .transaction(|xs, tx| {
                xs.write(tx, &format!("{}/online", paths.backend), b"0")?;
                xs.write(tx, &format!("{}/state", paths.backend), b"5")
            })
            .map_err(xs_err("detach the disk"))
    }

    /// Detaches a disk as `xl block-detach --force` starts to: as [`detach_disk`], and the
    /// front end's directory deleted in the same transaction, so the guest has no say.
    ///
    /// [`detach_disk`]: Self::detach_disk
    pub fn force_detach_disk(&mut self, paths: &DiskPaths) -> Result<(), ToolstackError> {
        self.xs
            .transaction(|xs, tx| {
                xs.write(tx, &format!("{}/online", paths.backend), b"0")?;
                xs.write(tx, &format!("{}/state", paths.backend), b"5")?;
                xs.rm(tx, &paths.frontend)
            })
            .map_err(xs_err("force the disk's detach"))
    }

    /// Removes a disk's directories (after the back end is Closed).
    pub fn remove_disk(&mut self, paths: &DiskPaths) -> Result<(), ToolstackError> {
        self.xs
            .transaction(|xs, tx| {
                xs.rm(tx, &paths.frontend)?;
                xs.rm(tx, &paths.backend)
            })
            .map_err(xs_err("remove the disk's directories"))
    }

    /// Destroys a guest whose domain dies before its disks are removed (a crash under a
    /// toolstack that is not libxl, or libxl's wait for a back end run out; `xl destroy`
    /// removes the disks first: [`Toolstack::xl_destroy`]): the domain dies (grants and ports closed);
    /// xenstored notices by itself, as on VIRQ_DOM_EXC, deletes what the guest owned, fires
    /// @releaseDomain and removes its socket (libxl sends no XS_RELEASE); then the guest's
    /// home and backend directories go, and its domid becomes free.
    pub fn destroy_guest(&mut self, domid: DomId) -> Result<(), ToolstackError> {
        // Watch first, so that the release cannot be missed; on a connection of its own,
        // which takes its events with it when it closes.
        let mut releases = Client::connect(Endpoint::Socket(self.run.xenstored_socket()))
            .map_err(xs_err("connect"))?;
        releases
            .watch("@releaseDomain", "destroy")
            .map_err(xs_err("watch @releaseDomain"))?;
        self.run.destroy_domain(domid)?;
        // Destruction closed the port; the handle has nothing left to unbind.
        self.store_ports.remove(&domid);
        await_release(&mut releases, domid)?;
        let home = format!("/local/domain/{}", domid.0);
        let backends = format!("/local/domain/0/backend/vbd/{}", domid.0);
        self.xs
            .transaction(|xs, tx| {
                rm_if_present(xs, tx, &home)?;
                rm_if_present(xs, tx, &backends)
            })
            .map_err(xs_err("remove the guest's nodes"))?;
        self.run.remove_domain(domid)?;
        Ok(())
    }
}

/// Xen's script directory when block-tokenback is installed there, else the source tree's
/// xl-scripts (the simulated host runs the scripts of the tree it was built from).
pub fn default_script_dir() -> PathBuf {
    let installed = Path::new("/etc/xen/scripts");
    if installed.join("block-tokenback").exists() {
        installed.to_owned()
    } else {
        let tools = Path::new(env!("CARGO_MANIFEST_DIR"));
        tools.parent().unwrap_or(tools).join("xl-scripts")
    }
}

/// Waits until xenstored has released a destroyed domain: each @releaseDomain event on
/// `xs` prompts a look (the events of other domains, and the watch's first, are skipped).
fn await_release(xs: &mut Client, domid: DomId) -> Result<(), ToolstackError> {
    let deadline = Instant::now() + RELEASE_TIMEOUT;
    loop {
        let introduced = xs
            .is_domain_introduced(domid.0)
            .map_err(xs_err("ask whether the domain is released"))?;
        if !introduced {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let event = xs
            .next_event(Some(left))
            .map_err(xs_err("wait for @releaseDomain"))?;
        if event.is_none() {
            return Err(ToolstackError::NotReleased(domid));
        }
    }
}

/// `n<owner>` then read access for `reader`: libxl's perms for a device directory.
fn perms(owner: u16, reader: u16) -> Perms {
    let entries = vec![
        Perm {
            access: Access::None,
            domid: owner,
        },
        Perm {
            access: Access::Read,
            domid: reader,
        },
    ];
    Perms::new(entries).unwrap_or_else(|| Perms::owned_by(owner))
}

/// Creates `dir` with `perms`, then its keys, which inherit them.
fn write_dir(
    xs: &mut Client,
    tx: TxId,
    dir: &str,
    perms: &Perms,
    keys: &[(&str, &str)],
) -> Result<(), ClientError> {
    xs.mkdir(tx, dir)?;
    xs.set_perms(tx, dir, perms)?;
    keys.iter()
        .try_for_each(|(key, value)| xs.write(tx, &format!("{dir}/{key}"), value.as_bytes()))
}

fn rm_if_present(xs: &mut Client, tx: TxId, path: &str) -> Result<(), ClientError> {
    match xs.rm(tx, path) {
        Err(ClientError::Xs(xenstore_wire::wire::XsErrno::Enoent)) => Ok(()),
        other => other,
    }
}
