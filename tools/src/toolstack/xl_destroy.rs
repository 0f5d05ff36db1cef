//! `xl destroy` (and a guest's poweroff or crash with `on_poweroff`/`on_crash` = destroy) as
//! libxl does it (xen tools/libs/light/libxl_domain.c `libxl__destroy_domid`,
//! `devices_destroy_cb`; libxl_device.c `libxl__initiate_device_generic_remove`): every disk
//! is removed as forced while the domain still exists, then its home goes, and only then is
//! the domain destroyed. A back end therefore sees its front end's directory vanish and
//! `online` 0 / `state` 5, and unmaps from a live domain; the domain dies with nothing
//! mapped. (A real Xen run showed this order; [`Toolstack::destroy_guest`] is the other case,
//! a domain that dies first, as when libxl's wait for the back end runs out.)

use std::time::Duration;

use tokenback::platform::DomId;
use xenstore_wire::client::{ClientError, TxId};
use xenstore_wire::wire::XsErrno;

use super::hotplug::Action;
use super::{rm_if_present, xs_err, DiskPaths, Toolstack, ToolstackError};

/// LIBXL_DESTROY_TIMEOUT: how long libxl waits for a back end to reach Closed (6).
pub const DESTROY_TIMEOUT: Duration = Duration::from_secs(10);

/// How one disk's removal went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRemoval {
    /// The disk's directories (both gone now).
    pub paths: DiskPaths,
    /// Whether the back end reached Closed within [`DESTROY_TIMEOUT`]; if not, libxl deletes
    /// the nodes without running the hotplug script's `remove`.
    pub closed: bool,
}

impl Toolstack {
    /// Destroys guest `domid` as `xl destroy` does: each disk under its backend directory
    /// removed as forced (front end's directory deleted with `online` 0 and `state` 5, up to
    /// [`DESTROY_TIMEOUT`] for Closed, the script's `remove` if it closed, the nodes deleted),
    /// the guest's home deleted, then the domain destroyed and released
    /// ([`Toolstack::destroy_guest`]). A failing `remove` is reported after the rest is done,
    /// as libxl logs it and goes on.
    pub fn xl_destroy(&mut self, domid: DomId) -> Result<Vec<DiskRemoval>, ToolstackError> {
        let backends = format!("/local/domain/0/backend/vbd/{}", domid.0);
        let devids = match self.xs.directory(TxId::NONE, &backends) {
            Ok(devids) => devids,
            Err(ClientError::Xs(XsErrno::Enoent)) => Vec::new(),
            Err(e) => return Err(xs_err("list the guest's disks")(e)),
        };
        let mut removals = Vec::new();
        let mut script_failure = None;
        for devid in devids {
            let paths = DiskPaths {
                backend: format!("{backends}/{devid}"),
                frontend: format!("/local/domain/{}/device/vbd/{devid}", domid.0),
            };
            self.force_detach_disk(&paths)?;
            let closed = self
                .await_backend_state(&paths, "6", DESTROY_TIMEOUT)
                .is_ok();
            if closed {
                if let Err(e) = self.run_script(&paths, Action::Remove) {
                    script_failure.get_or_insert(e);
                }
            }
            self.remove_disk(&paths)?;
            removals.push(DiskRemoval { paths, closed });
        }
        let home = format!("/local/domain/{}", domid.0);
        self.xs
            .transaction(|xs, tx| rm_if_present(xs, tx, &home))
            .map_err(xs_err("remove the guest's home"))?;
        self.destroy_guest(domid)?;
        match script_failure {
            Some(e) => Err(e),
            None => Ok(removals),
        }
    }
}
