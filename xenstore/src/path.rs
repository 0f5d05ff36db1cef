//! Node paths: validation and resolution of relative paths.
//!
//! xenstore.txt and C xenstored: absolute paths start with `/`, use only `A-Z a-z 0-9 - / _ @`,
//! have no `//` and no trailing `/` (except `/` itself). `@` names the special watch paths.
//! A relative path is resolved against `/local/domain/<domid>`.

use thiserror::Error;

use crate::perms::DomId;
use crate::wire::{ABS_PATH_MAX, REL_PATH_MAX};

/// Why a path is refused (answered `EINVAL`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    /// Empty path.
    #[error("empty path")]
    Empty,
    /// A character outside `A-Z a-z 0-9 - / _ @`.
    #[error("path {0:?} has a character xenstore does not allow")]
    BadChar(String),
    /// A special `@` name where a node path is needed (C xenstored's `is_valid_nodename`
    /// wants a leading `/` after canonicalising, which leaves `@` names as they are).
    #[error("{0} names a special watch, not a node")]
    Special(String),
    /// `//` or a trailing `/`.
    #[error("path {0:?} has an empty component")]
    EmptyComponent(String),
    /// Over XENSTORE_ABS_PATH_MAX, or over the path-max quota below the domain's home.
    #[error("path of {len} bytes exceeds {max}")]
    TooLong {
        /// Its length as measured.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The home directory of a domain, `/local/domain/<domid>`.
pub fn domain_path(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

/// Whether `path` names a special watch node (`@introduceDomain`, `@releaseDomain`).
pub fn is_special(path: &str) -> bool {
    path.starts_with('@')
}

/// A checked absolute path, and whether the caller wrote it relative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The absolute path.
    pub absolute: String,
    /// Set when the caller gave a relative path (watch events are then relative too).
    pub relative: bool,
}

/// Checks a node path given by a caller of `domid` and makes it absolute.
///
/// `path_max` limits the part below the caller's home (C xenstored's path-max quota, for
/// unprivileged callers), `None` for no such limit; the whole path is always limited to
/// XENSTORE_ABS_PATH_MAX.
pub fn resolve(path: &str, domid: DomId, path_max: Option<usize>) -> Result<Resolved, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if is_special(path) {
        return Err(PathError::Special(path.to_owned()));
    }
    let relative = !path.starts_with('/');
    if relative && path.len() > REL_PATH_MAX {
        return Err(PathError::TooLong {
            len: path.len(),
            max: REL_PATH_MAX,
        });
    }
    let absolute = if relative {
        format!("{}/{path}", domain_path(domid))
    } else {
        path.to_owned()
    };
    check_absolute(&absolute)?;
    if let Some(max) = path_max {
        let home = format!("{}/", domain_path(domid));
        let len = absolute.strip_prefix(&home).unwrap_or(&absolute).len();
        if len > max {
            return Err(PathError::TooLong { len, max });
        }
    }
    Ok(Resolved { absolute, relative })
}

/// Checks the syntax and length of an absolute path.
fn check_absolute(path: &str) -> Result<(), PathError> {
    if path.len() > ABS_PATH_MAX {
        return Err(PathError::TooLong {
            len: path.len(),
            max: ABS_PATH_MAX,
        });
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@');
    if !path.bytes().all(allowed) {
        return Err(PathError::BadChar(path.to_owned()));
    }
    if path != "/" && (path.ends_with('/') || path.contains("//")) {
        return Err(PathError::EmptyComponent(path.to_owned()));
    }
    Ok(())
}

/// The parent of an absolute path other than `/`.
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of an absolute path.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `parent/name`, minding the root.
pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Whether `path` is `ancestor` or lies below it.
pub fn is_within(path: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || path == ancestor
        || (path.starts_with(ancestor) && path.as_bytes().get(ancestor.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_to_the_domain_home() {
        let r = resolve("device/vbd", 5, None).unwrap();
        assert_eq!(r.absolute, "/local/domain/5/device/vbd");
        assert!(r.relative);
        assert!(!resolve("/vm", 5, None).unwrap().relative);
    }

    #[test]
    fn bad_paths_are_refused() {
        assert_eq!(resolve("", 0, None), Err(PathError::Empty));
        for p in ["/a b", "/a.b", "/ä", "/a\n"] {
            assert!(
                matches!(resolve(p, 0, None), Err(PathError::BadChar(_))),
                "{p}"
            );
        }
        for p in ["/a/", "//a", "/a//b"] {
            assert!(
                matches!(resolve(p, 0, None), Err(PathError::EmptyComponent(_))),
                "{p}"
            );
        }
        assert!(resolve("/", 0, None).is_ok());
        // Not a relative path below the home: C xenstored answers EINVAL.
        assert_eq!(
            resolve("@releaseDomain", 5, None),
            Err(PathError::Special("@releaseDomain".into()))
        );
    }

    #[test]
    fn lengths_follow_xen_limits() {
        let long_abs = format!("/{}", "a".repeat(ABS_PATH_MAX));
        assert!(matches!(
            resolve(&long_abs, 0, None),
            Err(PathError::TooLong { .. })
        ));
        let rel = "a".repeat(2048);
        assert!(resolve(&rel, 3, Some(2048)).is_ok());
        let rel = "a".repeat(2049);
        assert!(resolve(&rel, 3, Some(4000)).is_err());
        // The quota is measured below the home directory, else on the whole path.
        let vm = format!("/vm/{}", "a".repeat(2045));
        assert!(resolve(&vm, 3, Some(2048)).is_err());
        assert!(resolve(&vm, 3, None).is_ok());
    }

    #[test]
    fn tree_helpers() {
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(basename("/a/b"), "b");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a", "/a"));
        assert!(!is_within("/ab", "/a"));
        assert!(is_within("/x", "/"));
    }
}
