//! Clients: [`blocking::Client`] for tools and scripts, [`nonblocking::AsyncClient`] for a
//! mio event loop. Both find xenstored as libxenstore does ([`Endpoint::discover`]), match
//! replies by req_id, keep watch events that arrive between replies, and, when xenstored
//! restarts, reconnect and register their watches again. Every watch fires once on
//! registration, so consumers simply treat each event as "re-read".

pub mod blocking;
mod endpoint;
pub mod nonblocking;
pub mod reply;

use std::io;

use thiserror::Error;

pub use endpoint::Endpoint;
pub use reply::WatchEvent;

/// Encodes a request for `endpoint`, refusing one too large to send there.
fn encode_request(
    endpoint: &Endpoint,
    req_id: u32,
    tx: TxId,
    request: &crate::wire::Request,
) -> Result<crate::wire::Message> {
    let (msg_type, payload) = request.encode();
    if payload.len() > endpoint.max_payload() {
        return Err(ClientError::TooLarge(WireError::Oversized {
            len: payload.len(),
        }));
    }
    crate::wire::Message::new(msg_type, req_id, tx.0, payload).map_err(ClientError::TooLarge)
}

use crate::wire::{MsgType, WireError, XsErrno};

/// A transaction id; [`TxId::NONE`] outside transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxId(pub u32);

impl TxId {
    /// No transaction.
    pub const NONE: TxId = TxId(0);
}

/// What can go wrong talking to xenstored.
#[derive(Debug, Error)]
pub enum ClientError {
    /// xenstored refused the request.
    #[error("xenstored answered {0}")]
    Xs(XsErrno),
    /// The connection failed.
    #[error("xenstore connection: {0}")]
    Io(#[from] io::Error),
    /// xenstored sent a frame that does not parse.
    #[error("xenstored sent a bad frame: {0}")]
    Wire(#[from] WireError),
    /// A reply of the wrong type.
    #[error("reply of type {got:?} to a {sent:?} request")]
    UnexpectedReply {
        /// What came back.
        got: MsgType,
        /// What was asked.
        sent: MsgType,
    },
    /// A reply whose payload does not have the documented form.
    #[error("malformed {0} reply")]
    BadReply(&'static str),
    /// The request does not fit in one message.
    #[error("request too large: {0}")]
    TooLarge(WireError),
    /// xenstored went away and the connection was re-established: the transaction in
    /// progress is gone and must be redone.
    #[error("xenstored restarted during transaction {0}")]
    TransactionLost(u32),
    /// xenstored cannot be reached.
    #[error("xenstored is gone and did not come back")]
    Disconnected,
}

impl ClientError {
    /// Whether a transaction should be redone from the start (EAGAIN, or lost to a restart).
    pub fn should_retry(&self) -> bool {
        match self {
            ClientError::Xs(e) => *e == XsErrno::Eagain,
            ClientError::TransactionLost(_) => true,
            ClientError::Io(_)
            | ClientError::Wire(_)
            | ClientError::UnexpectedReply { .. }
            | ClientError::BadReply(_)
            | ClientError::TooLarge(_)
            | ClientError::Disconnected => false,
        }
    }

    /// The xenstore errno, if xenstored refused the request.
    pub fn errno(&self) -> Option<&XsErrno> {
        match self {
            ClientError::Xs(e) => Some(e),
            _ => None,
        }
    }
}

/// Result of a client operation.
pub type Result<T> = std::result::Result<T, ClientError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Request;

    #[test]
    fn xenbus_device_takes_smaller_requests_than_the_socket() {
        let request = Request::Write {
            path: "/a".into(),
            value: vec![b'x'; 4090],
        };
        let socket = Endpoint::Socket("/s".into());
        let device = Endpoint::Device("/d".into());
        assert!(encode_request(&socket, 1, TxId::NONE, &request).is_ok());
        assert!(matches!(
            encode_request(&device, 1, TxId::NONE, &request),
            Err(ClientError::TooLarge(_))
        ));
    }

    #[test]
    fn retry_only_on_eagain_or_a_lost_transaction() {
        assert!(ClientError::Xs(XsErrno::Eagain).should_retry());
        assert!(ClientError::TransactionLost(3).should_retry());
        assert!(!ClientError::Xs(XsErrno::Eacces).should_retry());
        assert!(!ClientError::Disconnected.should_retry());
    }
}
