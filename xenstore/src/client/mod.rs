//! Clients: [`blocking::Client`] for tools and scripts, [`nonblocking::AsyncClient`] for a
//! mio event loop. Both find xenstored as libxenstore does ([`Endpoint::discover`]), match
//! replies by req_id, keep watch events that arrive between replies, and, when xenstored
//! restarts, reconnect and register their watches again. Every watch fires once on
//! registration, so consumers simply treat each event as "re-read".

pub mod blocking;
mod endpoint;
pub mod nonblocking;
mod reply;

use std::io;

use thiserror::Error;

pub use endpoint::Endpoint;
pub use reply::WatchEvent;

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
