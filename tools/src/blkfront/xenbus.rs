//! The front end's xenstore conversation: the keys it reads from the back end, the keys it
//! publishes in one transaction (Linux's `talk_to_blkback`), and its state switches
//! (reference xenbus-vbd.md sections 4, 6, 7 and 9).

use std::time::{Duration, Instant};

use tokenback::platform::{GrantRef, Port};
use xenstore_wire::client::blocking::Client;
use xenstore_wire::client::{ClientError, TxId};
use xenstore_wire::wire::XsErrno;

use super::error::Error;

pub use tokenback::xenbus::XenbusState;

/// What one queue publishes: its ring's grant refs and its event channel.
#[derive(Debug, Clone)]
pub(crate) struct QueueKeys {
    pub(crate) ring_refs: Vec<GrantRef>,
    pub(crate) port: Port,
}

/// The front end's connection to xenstore and the two directories of its device.
pub(crate) struct Xenbus {
    xs: Client,
    frontend: String,
    backend: String,
}

/// The token of our watch on the back end's `state`.
const BACKEND_STATE_TOKEN: &str = "blkfront-backend-state";

impl Xenbus {
    /// Reads where the back end lives from the frontend directory and watches its state.
    pub(crate) fn open(mut xs: Client, frontend: String) -> Result<(Self, u16), Error> {
        let backend_path = format!("{frontend}/backend");
        let backend =
            read(&mut xs, &backend_path)?.ok_or(Error::MissingKey { path: backend_path })?;
        let id_path = format!("{frontend}/backend-id");
        let backend_id = required_u64(&mut xs, &id_path)?;
        let backend_id = u16::try_from(backend_id).map_err(|_| Error::BadKey {
            path: id_path,
            value: backend_id.to_string(),
            expected: "a domid",
        })?;
        let state = format!("{backend}/state");
        xs.watch(&state, BACKEND_STATE_TOKEN)
            .map_err(|source| Error::Xenstore {
                op: "watch",
                path: state,
                source,
            })?;
        Ok((
            Xenbus {
                xs,
                frontend,
                backend,
            },
            backend_id,
        ))
    }

    /// The frontend directory.
    pub(crate) fn frontend(&self) -> &str {
        &self.frontend
    }

    /// The back end's state; a missing or unreadable key is Unknown, as in Linux.
    pub(crate) fn backend_state(&mut self) -> Result<XenbusState, Error> {
        let path = format!("{}/state", self.backend);
        state_at(&mut self.xs, &path)
    }

    /// Our own state as xenstore holds it (Unknown when missing or unreadable).
    pub(crate) fn own_state(&mut self) -> Result<XenbusState, Error> {
        let path = format!("{}/state", self.frontend);
        state_at(&mut self.xs, &path)
    }

    /// A back-end key read as `xenbus_read_unsigned` does: absent or not a number gives
    /// `default`.
    pub(crate) fn backend_u64(&mut self, key: &str, default: u64) -> Result<u64, Error> {
        Ok(self.backend_optional_u64(key)?.unwrap_or(default))
    }

    /// A back-end key as a number, `None` when absent or not a number (what
    /// `XENBUS_EXIST_ERR` catches after `xenbus_scanf`).
    pub(crate) fn backend_optional_u64(&mut self, key: &str) -> Result<Option<u64>, Error> {
        let path = format!("{}/{key}", self.backend);
        Ok(read(&mut self.xs, &path)?.and_then(|v| v.trim().parse().ok()))
    }

    /// A back-end key that must be there and be a number (`xenbus_gather`'s fields).
    pub(crate) fn backend_required(&mut self, key: &str) -> Result<u64, Error> {
        required_u64(&mut self.xs, &format!("{}/{key}", self.backend))
    }

    /// Waits until the back end's state satisfies `done`, at most until `deadline`.
    pub(crate) fn wait_backend(
        &mut self,
        deadline: Instant,
        what: &'static str,
        mut done: impl FnMut(XenbusState) -> bool,
    ) -> Result<XenbusState, Error> {
        loop {
            let state = self.backend_state()?;
            if done(state) {
                return Ok(state);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.next_event(left)? {
                return Err(Error::Timeout { what });
            }
        }
    }

    /// Takes the watch events that arrived, waiting up to `wait` for the first; whether
    /// there was one.
    pub(crate) fn backend_changed_within(&mut self, wait: Duration) -> Result<bool, Error> {
        if !self.next_event(wait)? {
            return Ok(false);
        }
        while self.next_event(Duration::ZERO)? {}
        Ok(true)
    }

    fn next_event(&mut self, timeout: Duration) -> Result<bool, Error> {
        let event = self
            .xs
            .next_event(Some(timeout))
            .map_err(|source| Error::Xenstore {
                op: "wait for a watch event on",
                path: self.backend.clone(),
                source,
            })?;
        Ok(event.is_some())
    }

    /// Writes every ring key in one transaction, as `talk_to_blkback` does: `ring-page-order`
    /// for a multi-page ring, the queues' refs and ports (at the top with one queue, under
    /// `queue-N` with several, plus `multi-queue-num-queues`), `protocol` and
    /// `feature-persistent`.
    pub(crate) fn publish(
        &mut self,
        order: u8,
        queues: &[QueueKeys],
        protocol: &str,
        persistent: bool,
    ) -> Result<(), Error> {
        let dir = self.frontend.clone();
        let mut keys: Vec<(String, String)> = Vec::new();
        if order > 0 {
            keys.push((format!("{dir}/ring-page-order"), order.to_string()));
        }
        if let [queue] = queues {
            push_queue_keys(&mut keys, &dir, queue);
        } else {
            keys.push((
                format!("{dir}/multi-queue-num-queues"),
                queues.len().to_string(),
            ));
            for (i, queue) in queues.iter().enumerate() {
                push_queue_keys(&mut keys, &format!("{dir}/queue-{i}"), queue);
            }
        }
        keys.push((format!("{dir}/protocol"), protocol.to_string()));
        keys.push((
            format!("{dir}/feature-persistent"),
            u8::from(persistent).to_string(),
        ));
        self.xs
            .transaction(|xs, tx| {
                keys.iter()
                    .try_for_each(|(path, value)| xs.write(tx, path, value.as_bytes()))
            })
            .map_err(|source| Error::Xenstore {
                op: "publish ring keys in",
                path: dir,
                source,
            })
    }

    /// `xenbus_switch_state`: writes our `state` in a transaction that first checks the key
    /// still exists, so that a directory the toolstack removed is never recreated. A
    /// vanished key aborts the transaction quietly, as in Linux: the device is going away.
    pub(crate) fn switch_state(&mut self, state: XenbusState) -> Result<(), Error> {
        let path = format!("{}/state", self.frontend);
        let value = state.value().to_string();
        let switched = self.xs.transaction(|xs, tx| {
            xs.read(tx, &path)?;
            xs.write(tx, &path, value.as_bytes())
        });
        match switched {
            Ok(()) | Err(ClientError::Xs(XsErrno::Enoent)) => Ok(()),
            Err(source) => Err(Error::Xenstore {
                op: "switch state of",
                path,
                source,
            }),
        }
    }
}

fn push_queue_keys(keys: &mut Vec<(String, String)>, dir: &str, queue: &QueueKeys) {
    if let [only] = queue.ring_refs.as_slice() {
        keys.push((format!("{dir}/ring-ref"), only.0.to_string()));
    } else {
        for (i, gref) in queue.ring_refs.iter().enumerate() {
            keys.push((format!("{dir}/ring-ref{i}"), gref.0.to_string()));
        }
    }
    keys.push((format!("{dir}/event-channel"), queue.port.0.to_string()));
}

/// The state a `state` key names; missing or not a number is Unknown, as in Linux's
/// `xenbus_read_driver_state`.
fn state_at(xs: &mut Client, path: &str) -> Result<XenbusState, Error> {
    let value = read(xs, path)?.and_then(|v| v.trim().parse().ok());
    Ok(XenbusState::from_value(value.unwrap_or(0)))
}

/// Reads a key as text; `None` if it does not exist.
fn read(xs: &mut Client, path: &str) -> Result<Option<String>, Error> {
    match xs.read(TxId::NONE, path) {
        Ok(value) => Ok(Some(String::from_utf8_lossy(&value).into_owned())),
        Err(ClientError::Xs(XsErrno::Enoent)) => Ok(None),
        Err(source) => Err(Error::Xenstore {
            op: "read",
            path: path.to_string(),
            source,
        }),
    }
}

fn required_u64(xs: &mut Client, path: &str) -> Result<u64, Error> {
    let value = read(xs, path)?.ok_or(Error::MissingKey {
        path: path.to_string(),
    })?;
    value.trim().parse().map_err(|_| Error::BadKey {
        path: path.to_string(),
        value,
        expected: "an unsigned decimal number",
    })
}
