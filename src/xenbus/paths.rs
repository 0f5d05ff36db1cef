//! Where a backend's VBDs live in xenstore, and which VBD and key a watch event names
//! (reference xenbus-vbd.md section 2).

use crate::platform::DomId;

use super::frontend::parse_decimal;

/// The backend directory type we serve (DESIGN "Beside kernel blkback").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BackendType {
    /// `backend/vbd`: every `script=` disk up to Xen 4.17; the kernel's xen-blkback must be
    /// unloaded.
    #[default]
    Vbd,
    /// `backend/vbd3`: `backendtype=tap` from Xen 4.19, beside the kernel's xen-blkback.
    Vbd3,
}

impl BackendType {
    pub fn name(self) -> &'static str {
        match self {
            BackendType::Vbd => "vbd",
            BackendType::Vbd3 => "vbd3",
        }
    }
}

/// One VBD: its front end's domain and its devid (the vdev number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId {
    pub frontend_id: DomId,
    pub devid: u32,
}

/// The backend tree we serve: `/local/domain/<backend>/backend/<type>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTree {
    backend_id: DomId,
    kind: BackendType,
    root: String,
}

impl BackendTree {
    pub fn new(backend_id: DomId, kind: BackendType) -> Self {
        BackendTree {
            backend_id,
            kind,
            root: format!("/local/domain/{}/backend/{}", backend_id.0, kind.name()),
        }
    }

    /// The backend type served.
    pub fn kind(&self) -> BackendType {
        self.kind
    }

    /// The directory to watch: every VBD of every guest is below it.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Where throttle groups are declared, one directory each (DESIGN "Where QoS lives in
    /// xenstore"): the backend domain's own tree, beside the backends.
    pub fn groups_root(&self) -> String {
        format!("/local/domain/{}/tokenback/groups", self.backend_id.0)
    }

    /// The domain we serve as.
    pub fn backend_id(&self) -> DomId {
        self.backend_id
    }

    /// A guest's directory of VBDs, listed to find its devids.
    pub fn guest_dir(&self, frontend_id: DomId) -> String {
        format!("{}/{}", self.root, frontend_id.0)
    }

    pub fn device_dir(&self, id: DeviceId) -> String {
        format!("{}/{}/{}", self.root, id.frontend_id.0, id.devid)
    }

    /// Where Linux's xenbus glue reports a device's fatal error for the toolstack.
    pub fn error_node(&self, id: DeviceId) -> String {
        format!(
            "/local/domain/{}/error/backend/{}/{}/{}/error",
            self.backend_id.0,
            self.kind.name(),
            id.frontend_id.0,
            id.devid
        )
    }

    /// Which VBD a path below the root names, and the key below its directory ("" for the
    /// directory itself). `None` for the root, a guest's directory, or anything malformed.
    pub fn parse<'a>(&self, path: &'a str) -> Option<(DeviceId, &'a str)> {
        let rest = path.strip_prefix(self.root.as_str())?.strip_prefix('/')?;
        let mut parts = rest.splitn(3, '/');
        let frontend_id = parse_decimal(parts.next()?)?;
        let devid = parse_decimal(parts.next()?)?;
        let key = parts.next().unwrap_or("");
        let frontend_id = u16::try_from(frontend_id).ok()?;
        Some((
            DeviceId {
                frontend_id: DomId(frontend_id),
                devid,
            },
            key,
        ))
    }
}

/// The text of an `error` node: `"<errno> <message>"`, as `xenbus_dev_fatal` writes it.
pub fn error_value(errno: i32, message: &str) -> String {
    format!("{errno} {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_a_dom0_vbd_backend() {
        let tree = BackendTree::new(DomId(0), BackendType::Vbd);
        let id = DeviceId {
            frontend_id: DomId(5),
            devid: 51712,
        };
        assert_eq!(tree.root(), "/local/domain/0/backend/vbd");
        assert_eq!(tree.device_dir(id), "/local/domain/0/backend/vbd/5/51712");
        assert_eq!(tree.guest_dir(DomId(5)), "/local/domain/0/backend/vbd/5");
        assert_eq!(
            tree.error_node(id),
            "/local/domain/0/error/backend/vbd/5/51712/error"
        );
        assert_eq!(error_value(22, "bad ring-ref"), "22 bad ring-ref");
    }

    #[test]
    fn watch_paths_name_the_vbd_and_key() {
        let tree = BackendTree::new(DomId(3), BackendType::Vbd3);
        let id = DeviceId {
            frontend_id: DomId(7),
            devid: 768,
        };
        let root = "/local/domain/3/backend/vbd3";
        assert_eq!(tree.parse(&format!("{root}/7/768")), Some((id, "")));
        assert_eq!(
            tree.parse(&format!("{root}/7/768/state")),
            Some((id, "state"))
        );
        assert_eq!(
            tree.parse(&format!("{root}/7/768/queue-0/x")),
            Some((id, "queue-0/x"))
        );
        // The root, a guest's directory, a sibling type, and garbage ids name no VBD.
        for path in [
            root.to_owned(),
            format!("{root}/7"),
            "/local/domain/3/backend/vbd/7/768".to_owned(),
            format!("{root}3/7/768"),
            format!("{root}/x/768"),
            format!("{root}/7/-1"),
            format!("{root}/70000/768"),
        ] {
            assert_eq!(tree.parse(&path), None, "{path}");
        }
    }
}
