//! Error names as they travel in XS_ERROR payloads.

use std::fmt;

/// An errno carried by name in an `XS_ERROR` reply (xs_wire.h `xsd_errors[]`).
///
/// The names are the protocol, not the host's errno numbers: a reply holds e.g. `ENOENT\0`.
/// Names outside Xen's table are kept verbatim in [`XsErrno::Other`] (oxenstored, for one,
/// answers `EQUOTA`), so a client never loses what the server said.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum XsErrno {
    /// Invalid argument: bad path, bad argument count, bad `T`/`F`.
    Einval,
    /// Permission denied.
    Eacces,
    /// The watch (path, token) is already registered.
    Eexist,
    /// Is a directory.
    Eisdir,
    /// No such node, transaction or watch.
    Enoent,
    /// Out of memory.
    Enomem,
    /// Quota exceeded (nodes, transactions, node size).
    Enospc,
    /// I/O error.
    Eio,
    /// Directory not empty.
    Enotempty,
    /// Unsupported message type.
    Enosys,
    /// Read-only connection.
    Erofs,
    /// Transaction already open with that id.
    Ebusy,
    /// Transaction conflict: redo the whole transaction.
    Eagain,
    /// Already connected.
    Eisconn,
    /// Reply would exceed the payload limit; watch quota (Xen 4.17-4.21).
    E2big,
    /// Only privileged callers may change a node's owner.
    Eperm,
    /// Quota exceeded, as oxenstored names it.
    Equota,
    /// A name outside the table, kept verbatim.
    Other(String),
}

/// The names in Xen's order; new ones are only appended upstream.
const NAMED: [(XsErrno, &str); 17] = [
    (XsErrno::Einval, "EINVAL"),
    (XsErrno::Eacces, "EACCES"),
    (XsErrno::Eexist, "EEXIST"),
    (XsErrno::Eisdir, "EISDIR"),
    (XsErrno::Enoent, "ENOENT"),
    (XsErrno::Enomem, "ENOMEM"),
    (XsErrno::Enospc, "ENOSPC"),
    (XsErrno::Eio, "EIO"),
    (XsErrno::Enotempty, "ENOTEMPTY"),
    (XsErrno::Enosys, "ENOSYS"),
    (XsErrno::Erofs, "EROFS"),
    (XsErrno::Ebusy, "EBUSY"),
    (XsErrno::Eagain, "EAGAIN"),
    (XsErrno::Eisconn, "EISCONN"),
    (XsErrno::E2big, "E2BIG"),
    (XsErrno::Eperm, "EPERM"),
    (XsErrno::Equota, "EQUOTA"),
];

impl XsErrno {
    /// The name as sent on the wire (without the trailing nul).
    pub fn name(&self) -> &str {
        match self {
            XsErrno::Other(name) => name,
            known => NAMED
                .iter()
                .find(|(e, _)| e == known)
                .map_or("EINVAL", |(_, n)| n),
        }
    }

    /// Parses an `XS_ERROR` payload: the name, normally nul-terminated.
    pub fn from_payload(payload: &[u8]) -> XsErrno {
        let name = payload.strip_suffix(b"\0").unwrap_or(payload);
        let name = String::from_utf8_lossy(name);
        NAMED
            .iter()
            .find(|(_, n)| *n == name)
            .map_or_else(|| XsErrno::Other(name.into_owned()), |(e, _)| e.clone())
    }

    /// The `XS_ERROR` payload for this error: the name and a nul.
    pub fn to_payload(&self) -> Vec<u8> {
        let mut p = self.name().as_bytes().to_vec();
        p.push(0);
        p
    }
}

impl fmt::Display for XsErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for XsErrno {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (e, n) in NAMED.iter() {
            assert_eq!(e.name(), *n);
            assert_eq!(XsErrno::from_payload(&e.to_payload()), *e);
        }
    }

    #[test]
    fn unknown_name_is_kept() {
        let e = XsErrno::from_payload(b"EWHATEVER\0");
        assert_eq!(e, XsErrno::Other("EWHATEVER".into()));
        assert_eq!(e.to_payload(), b"EWHATEVER\0");
    }

    #[test]
    fn missing_nul_is_tolerated() {
        assert_eq!(XsErrno::from_payload(b"EAGAIN"), XsErrno::Eagain);
    }
}
