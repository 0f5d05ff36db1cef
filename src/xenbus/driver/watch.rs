//! The driver's watches: their tokens, and what a fired path means. The backend tree's watch
//! covers every key of every VBD's backend directory (a change fires the watches of all its
//! ancestors), so only the front ends' `state` and `@releaseDomain` need watches of their own.

use crate::platform::DomId;
use crate::xenbus::{BackendTree, DeviceId};

const TREE: &str = "tokenback:tree";
const RELEASE: &str = "tokenback:release";
const GROUPS: &str = "tokenback:groups";
const FRONTEND: &str = "tokenback:frontend:";

/// `@releaseDomain`: a domain died and xenstored released it.
pub const RELEASE_PATH: &str = "@releaseDomain";

/// What a watch event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired<'a> {
    /// Something below the root that is not one VBD's (the root or a guest's directory
    /// appeared, changed or went): list the tree again.
    Tree,
    /// A VBD's backend directory (`key` "") or a key below it.
    Backend(DeviceId, &'a str),
    /// The front end's `state` of a VBD.
    Frontend(DeviceId),
    /// Some domain was released.
    Release,
    /// A throttle group's directory or key, or their root (docs/qos.md "Throttle groups").
    Groups(&'a str),
}

pub fn tree_token() -> &'static str {
    TREE
}

pub fn release_token() -> &'static str {
    RELEASE
}

pub fn groups_token() -> &'static str {
    GROUPS
}

/// The token of the watch on VBD `id`'s front-end `state`.
pub fn frontend_token(id: DeviceId) -> String {
    format!("{FRONTEND}{}/{}", id.frontend_id.0, id.devid)
}

/// What the event of `token` on `path` means; `None` for anything not ours.
pub fn classify<'a>(tree: &BackendTree, token: &str, path: &'a str) -> Option<Fired<'a>> {
    match token {
        TREE => Some(match tree.parse(path) {
            Some((id, key)) => Fired::Backend(id, key),
            None => Fired::Tree,
        }),
        RELEASE => Some(Fired::Release),
        GROUPS => Some(Fired::Groups(path)),
        _ => {
            let (frontend_id, devid) = token.strip_prefix(FRONTEND)?.split_once('/')?;
            Some(Fired::Frontend(DeviceId {
                frontend_id: DomId(frontend_id.parse().ok()?),
                devid: devid.parse().ok()?,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xenbus::BackendType;

    #[test]
    fn fired_paths_name_what_changed() {
        let tree = BackendTree::new(DomId(0), BackendType::Vbd);
        let id = DeviceId {
            frontend_id: DomId(5),
            devid: 51712,
        };
        let root = tree.root();
        assert_eq!(classify(&tree, TREE, root), Some(Fired::Tree));
        assert_eq!(
            classify(&tree, TREE, &tree.guest_dir(DomId(5))),
            Some(Fired::Tree)
        );
        let online = format!("{}/online", tree.device_dir(id));
        assert_eq!(
            classify(&tree, TREE, &online),
            Some(Fired::Backend(id, "online"))
        );
        let token = frontend_token(id);
        assert_eq!(
            classify(&tree, &token, "/local/domain/5/device/vbd/51712/state"),
            Some(Fired::Frontend(id))
        );
        assert_eq!(classify(&tree, RELEASE, RELEASE_PATH), Some(Fired::Release));
        let group = "/local/domain/0/tokenback/groups/g1/iops-total";
        assert_eq!(classify(&tree, GROUPS, group), Some(Fired::Groups(group)));
        assert_eq!(classify(&tree, "someone-else", root), None);
        assert_eq!(classify(&tree, "tokenback:frontend:x/1", root), None);
    }
}
