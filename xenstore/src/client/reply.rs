//! Reply payloads turned into values: used by the blocking client, and by owners of an
//! [`AsyncClient`](super::nonblocking::AsyncClient) for the payloads its completions carry.

use super::{ClientError, Result, TxId};
use crate::perms::{Perm, Perms};

/// A watch event: the path that changed (relative if the watch was) and the watch's token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchEvent {
    /// Event path.
    pub path: String,
    /// The token given when registering.
    pub token: String,
}

/// The nul-terminated strings of a payload.
fn strings(payload: &[u8], what: &'static str) -> Result<Vec<String>> {
    let Some(body) = payload.strip_suffix(b"\0") else {
        return if payload.is_empty() {
            Ok(Vec::new())
        } else {
            Err(ClientError::BadReply(what))
        };
    };
    body.split(|&b| b == 0)
        .map(|s| String::from_utf8(s.to_vec()).map_err(|_| ClientError::BadReply(what)))
        .collect()
}

impl WatchEvent {
    /// Parses a WATCH_EVENT payload, `<path>\0<token>\0`.
    pub fn parse(payload: &[u8]) -> Result<WatchEvent> {
        let mut v = strings(payload, "watch event")?;
        if v.len() != 2 {
            return Err(ClientError::BadReply("watch event"));
        }
        let token = v.pop().unwrap_or_default();
        let path = v.pop().unwrap_or_default();
        Ok(WatchEvent { path, token })
    }
}

/// A DIRECTORY reply: child names.
pub fn directory(payload: &[u8]) -> Result<Vec<String>> {
    strings(payload, "directory")
}

/// One DIRECTORY_PART chunk: generation, names, and whether it is the last.
pub fn directory_part(payload: &[u8]) -> Result<(String, Vec<String>, bool)> {
    let mut v = strings(payload, "directory part")?;
    if v.is_empty() {
        return Err(ClientError::BadReply("directory part"));
    }
    let generation = v.remove(0);
    // The chunk reaching the end of the list ends with an empty name.
    let last = v.last().is_some_and(String::is_empty);
    v.retain(|s| !s.is_empty());
    Ok((generation, v, last))
}

/// A GET_PERMS reply.
pub fn perms(payload: &[u8]) -> Result<Perms> {
    let entries = strings(payload, "permissions")?
        .iter()
        .map(|s| s.parse::<Perm>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| ClientError::BadReply("permissions"))?;
    Perms::new(entries).ok_or(ClientError::BadReply("permissions"))
}

/// A TRANSACTION_START reply: the new transaction's id (never 0).
pub fn transaction_id(payload: &[u8]) -> Result<TxId> {
    let v = strings(payload, "transaction start")?;
    match v.as_slice() {
        [id] => id
            .parse()
            .ok()
            .filter(|&id| id != 0)
            .map(TxId)
            .ok_or(ClientError::BadReply("transaction start")),
        _ => Err(ClientError::BadReply("transaction start")),
    }
}

/// A reply holding one nul-terminated string (GET_DOMAIN_PATH); `what` names it in errors.
pub fn text(payload: &[u8], what: &'static str) -> Result<String> {
    match strings(payload, what)?.as_slice() {
        [s] => Ok(s.clone()),
        _ => Err(ClientError::BadReply(what)),
    }
}

/// A `T`/`F` reply (IS_DOMAIN_INTRODUCED).
pub fn boolean(payload: &[u8]) -> Result<bool> {
    match payload {
        b"T\0" => Ok(true),
        b"F\0" => Ok(false),
        _ => Err(ClientError::BadReply("T/F")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies() {
        assert_eq!(directory(b"a\0b\0").unwrap(), ["a", "b"]);
        assert!(directory(b"").unwrap().is_empty());
        assert!(directory(b"a").is_err());
        assert_eq!(
            directory_part(b"7\0a\0b\0\0").unwrap(),
            ("7".into(), vec!["a".into(), "b".into()], true)
        );
        assert_eq!(
            directory_part(b"7\0a\0").unwrap(),
            ("7".into(), vec!["a".into()], false)
        );
        assert_eq!(transaction_id(b"12\0").unwrap(), TxId(12));
        assert!(transaction_id(b"0\0").is_err());
        assert_eq!(
            WatchEvent::parse(b"/a\0tok\0").unwrap(),
            WatchEvent {
                path: "/a".into(),
                token: "tok".into()
            }
        );
        assert!(WatchEvent::parse(b"/a\0").is_err());
        assert_eq!(perms(b"n0\0r5\0").unwrap().entries().len(), 2);
        assert!(boolean(b"X\0").is_err());
    }
}
