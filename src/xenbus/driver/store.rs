//! The driver's xenstore connection: reads where absent is an answer, writes that never
//! recreate a directory the toolstack removed, and the listings and permissions the driver
//! needs. Blocking, one request at a time, on the driver thread.

use std::os::fd::BorrowedFd;
use std::time::Duration;

use xenstore_wire::client::blocking::Client;
use xenstore_wire::client::{ClientError, Endpoint, TxId, WatchEvent};
use xenstore_wire::perms::Perms;
use xenstore_wire::wire::XsErrno;

use crate::xenbus::{KeyCache, Lookup};

/// A xenstore request that failed.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct StoreError {
    what: &'static str,
    path: String,
    #[source]
    source: ClientError,
}

impl StoreError {
    /// Whether the connection is gone (the driver cannot go on), rather than one request
    /// refused.
    pub fn is_lost(&self) -> bool {
        !matches!(self.source, ClientError::Xs(_))
    }
}

/// dom0's (or the driver domain's) connection to xenstored.
pub struct Store {
    client: Client,
}

/// A child node as [`Store::read_children`] found it.
pub struct Child {
    pub name: String,
    pub value: String,
    pub perms: Perms,
}

fn absent_is_none<T>(result: Result<T, ClientError>) -> Result<Option<T>, ClientError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(ClientError::Xs(XsErrno::Enoent)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Store {
    pub fn connect(endpoint: Endpoint) -> Result<Store, ClientError> {
        let mut client = Client::connect(endpoint)?;
        // The driver polls the descriptor, which a reconnect would replace: a lost xenstored
        // ends the driver instead.
        client.set_reconnect_window(Duration::ZERO);
        Ok(Store { client })
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.client.as_fd()
    }

    fn error<'a>(what: &'static str, path: &'a str) -> impl FnOnce(ClientError) -> StoreError + 'a {
        move |source| StoreError {
            what,
            path: path.to_owned(),
            source,
        }
    }

    /// A watch event already received, without waiting.
    pub fn next_event(&mut self) -> Result<Option<WatchEvent>, StoreError> {
        self.client
            .next_event(Some(Duration::ZERO))
            .map_err(Self::error("wait for", "watch events"))
    }

    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        self.client
            .watch(path, token)
            .map_err(Self::error("watch", path))
    }

    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        self.client
            .unwatch(path, token)
            .map_err(Self::error("unwatch", path))
    }

    /// A value as text (lossy: the keys we read are ASCII); `None` if absent.
    pub fn read(&mut self, path: &str) -> Result<Option<String>, StoreError> {
        let value = absent_is_none(self.client.read(TxId::NONE, path));
        let value = value.map_err(Self::error("read", path))?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Runs `validate` over the keys of `dir` it asks for, reading each once.
    pub fn read_keys<T>(
        &mut self,
        dir: &str,
        validate: impl Fn(&dyn Fn(&str) -> Option<String>) -> T,
    ) -> Result<T, StoreError> {
        let mut cache = KeyCache::new();
        loop {
            match cache.run(&validate) {
                Lookup::Done(result) => return Ok(result),
                Lookup::Need(keys) => {
                    for key in keys {
                        let value = self.read(&format!("{dir}/{key}"))?;
                        cache.insert(key, value);
                    }
                }
            }
        }
    }

    /// The children of `dir`; none if it is absent.
    pub fn list(&mut self, dir: &str) -> Result<Vec<String>, StoreError> {
        let names = absent_is_none(self.client.directory(TxId::NONE, dir));
        Ok(names.map_err(Self::error("list", dir))?.unwrap_or_default())
    }

    pub fn exists(&mut self, path: &str) -> Result<bool, StoreError> {
        let perms = absent_is_none(self.client.get_perms(TxId::NONE, path));
        Ok(perms.map_err(Self::error("look up", path))?.is_some())
    }

    /// The permissions of `dir`, and the value and permissions of each child `wanted` names,
    /// read in one transaction: a set of keys written in one transaction is seen whole or
    /// not at all. `None` if `dir` is absent.
    pub fn read_children(
        &mut self,
        dir: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Option<(Perms, Vec<Child>)>, StoreError> {
        self.client
            .transaction(|xs, tx| {
                let Some(perms) = absent_is_none(xs.get_perms(tx, dir))? else {
                    return Ok(None);
                };
                let mut children = Vec::new();
                let names = absent_is_none(xs.directory(tx, dir))?.unwrap_or_default();
                for name in names.into_iter().filter(|n| wanted(n)) {
                    let path = format!("{dir}/{name}");
                    let value = absent_is_none(xs.read(tx, &path))?;
                    let perms = absent_is_none(xs.get_perms(tx, &path))?;
                    if let (Some(value), Some(perms)) = (value, perms) {
                        let value = String::from_utf8_lossy(&value).into_owned();
                        children.push(Child { name, value, perms });
                    }
                }
                Ok(Some((perms, children)))
            })
            .map_err(Self::error("read the keys of", dir))
    }

    /// Writes `keys` (relative to `dir`) in one transaction, unless `dir` is gone: a write
    /// would create it again after the toolstack removed it. Whether `dir` was there.
    pub fn write_keys(&mut self, dir: &str, keys: &[(&str, String)]) -> Result<bool, StoreError> {
        self.client
            .transaction(|xs, tx| {
                if absent_is_none(xs.get_perms(tx, dir))?.is_none() {
                    return Ok(false);
                }
                for (key, value) in keys {
                    xs.write(tx, &format!("{dir}/{key}"), value.as_bytes())?;
                }
                Ok(true)
            })
            .map_err(Self::error("write keys in", dir))
    }

    /// Writes one value, creating its parents (for nodes outside any VBD's directory).
    pub fn write(&mut self, path: &str, value: &str) -> Result<(), StoreError> {
        self.client
            .write(TxId::NONE, path, value.as_bytes())
            .map_err(Self::error("write", path))
    }

    /// Removes a node if it is there.
    pub fn remove(&mut self, path: &str) -> Result<(), StoreError> {
        absent_is_none(self.client.rm(TxId::NONE, path))
            .map(drop)
            .map_err(Self::error("remove", path))
    }

    /// Whether a domain is still introduced to xenstored; where we may not ask (a driver
    /// domain), whether its home directory is still there.
    pub fn domain_exists(&mut self, domid: u16) -> Result<bool, StoreError> {
        match self.client.is_domain_introduced(domid) {
            Ok(introduced) => Ok(introduced),
            Err(ClientError::Xs(XsErrno::Eacces)) => self.exists(&format!("/local/domain/{domid}")),
            Err(e) => Err(Self::error(
                "ask whether introduced: domain",
                &domid.to_string(),
            )(e)),
        }
    }
}
