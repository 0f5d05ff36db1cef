//! Watches and the changes that fire them.
//!
//! xenstore.txt and C xenstored (watch.c): a change to a node fires every watch on that path
//! or an ancestor. When a subtree is removed, the removed node fires that way, and each
//! removed descendant fires only watches set exactly on it. Watches registered with a relative
//! path receive relative event paths. The special paths `@introduceDomain` and
//! `@releaseDomain` fire only watches set exactly on them (Xen 4.17 semantics).

use crate::path::{self, is_special};
use crate::perms::Perms;

/// Something that happened to a node, to be matched against watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    /// Absolute path, or a special `@` name.
    pub path: String,
    /// Only watches on exactly this path fire (a removed descendant).
    pub exact: bool,
    /// Permissions that decide who may see the event; a watcher needs read access in any
    /// of them: the node's (old and new, for a permission change) and its parent's.
    pub perms: Vec<Perms>,
}

/// A registered watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Watch {
    /// The path as the client gave it (and as events are reported for relative watches).
    pub given: String,
    /// The token as the client gave it.
    pub token: String,
    /// Absolute path, or the special name.
    pub absolute: String,
    /// Home directory to strip from event paths, for a relative watch.
    pub relative_to: Option<String>,
}

impl Watch {
    /// Whether this watch fires for `change`.
    pub fn matches(&self, change: &Change) -> bool {
        if is_special(&change.path) || change.exact {
            self.absolute == change.path
        } else {
            !is_special(&self.absolute) && path::is_within(&change.path, &self.absolute)
        }
    }

    /// The event path the client sees for `change`.
    pub fn event_path<'a>(&self, change: &'a Change) -> &'a str {
        match &self.relative_to {
            Some(home) => change
                .path
                .strip_prefix(home.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .unwrap_or(&change.path),
            None => &change.path,
        }
    }

    /// The WATCH_EVENT payload for an event path.
    pub fn event_payload(&self, epath: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(epath.len() + self.token.len() + 2);
        out.extend_from_slice(epath.as_bytes());
        out.push(0);
        out.extend_from_slice(self.token.as_bytes());
        out.push(0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(given: &str, absolute: &str, relative_to: Option<&str>) -> Watch {
        Watch {
            given: given.into(),
            token: "t".into(),
            absolute: absolute.into(),
            relative_to: relative_to.map(Into::into),
        }
    }

    fn change(path: &str, exact: bool) -> Change {
        Change {
            path: path.into(),
            exact,
            perms: vec![Perms::owned_by(0)],
        }
    }

    #[test]
    fn subtree_matching() {
        let w = watch("/a", "/a", None);
        assert!(w.matches(&change("/a", false)));
        assert!(w.matches(&change("/a/b/c", false)));
        assert!(!w.matches(&change("/ab", false)));
        assert!(!w.matches(&change("/", false)));
        assert!(watch("/", "/", None).matches(&change("/x", false)));
    }

    #[test]
    fn removed_descendants_fire_only_exact_watches() {
        assert!(!watch("/a", "/a", None).matches(&change("/a/b", true)));
        assert!(watch("/a/b", "/a/b", None).matches(&change("/a/b", true)));
    }

    #[test]
    fn special_paths_fire_only_exact_watches() {
        let w = watch("@releaseDomain", "@releaseDomain", None);
        assert!(w.matches(&change("@releaseDomain", false)));
        assert!(!w.matches(&change("/local", false)));
        assert!(!watch("/", "/", None).matches(&change("@releaseDomain", false)));
    }

    #[test]
    fn relative_watches_get_relative_paths() {
        let w = watch("device", "/local/domain/5/device", Some("/local/domain/5"));
        let c = change("/local/domain/5/device/vbd", false);
        assert_eq!(w.event_path(&c), "device/vbd");
        assert_eq!(w.event_payload("device/vbd"), b"device/vbd\0t\0");
    }
}
