//! What the transport reports, for the daemon to log.

use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::perms::DomId;
use crate::server::Notice;
use crate::wire::WireError;

/// What the transport reports for logging.
#[derive(Debug)]
pub enum Report {
    /// The server refused something or dropped an event.
    Notice(Notice),
    /// A connection was dropped for breaking the protocol or failing I/O.
    Dropped {
        /// Its domain.
        domid: DomId,
        /// Why.
        reason: DropReason,
    },
    /// A socket could not be set up.
    SocketFailed {
        /// The domain it was for.
        domid: DomId,
        /// The socket.
        path: PathBuf,
        /// What failed.
        error: io::Error,
    },
    /// Reading the domain directory's changes failed: deaths may go unnoticed.
    DomainWatchFailed(io::Error),
    /// A per-domain socket was created or removed.
    DomainSocket {
        /// The domain.
        domid: DomId,
        /// The socket.
        path: PathBuf,
        /// Created (true) or removed.
        created: bool,
    },
}

/// How much an operator should care about a [`Report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Routine: sockets coming and going.
    Info,
    /// A client misbehaved or was refused; the server carries on.
    Warning,
    /// The server could not do its part (a socket, the domain watch).
    Error,
}

impl Report {
    /// How much this matters, for the daemon's log level.
    pub fn severity(&self) -> Severity {
        match self {
            Report::DomainSocket { .. } => Severity::Info,
            Report::Notice(_) | Report::Dropped { .. } => Severity::Warning,
            Report::SocketFailed { .. } | Report::DomainWatchFailed(_) => Severity::Error,
        }
    }

    /// The domain it concerns, if one.
    pub fn domid(&self) -> Option<DomId> {
        match self {
            Report::Notice(Notice::Refused { domid, .. })
            | Report::Notice(Notice::EventDropped { domid, .. })
            | Report::Dropped { domid, .. }
            | Report::SocketFailed { domid, .. }
            | Report::DomainSocket { domid, .. } => Some(*domid),
            Report::DomainWatchFailed(_) => None,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Notice(Notice::Refused {
                domid,
                request,
                refusal,
            }) => {
                match request {
                    Some(t) => write!(f, "refused {t:?}")?,
                    None => write!(f, "refused a request")?,
                }
                write!(f, " from domain {domid}: {} ({refusal})", refusal.errno())
            }
            Report::Notice(Notice::EventDropped { domid, path }) => write!(
                f,
                "dropped watch event {path} for domain {domid}: its event queue is full"
            ),
            Report::Dropped { domid, reason } => {
                write!(f, "dropped a connection of domain {domid}: {reason}")
            }
            Report::SocketFailed { domid, path, error } => {
                write!(
                    f,
                    "domain {domid}: cannot serve {}: {error}",
                    path.display()
                )
            }
            Report::DomainWatchFailed(error) => {
                write!(f, "cannot read changes of domains: {error}")
            }
            Report::DomainSocket {
                domid,
                path,
                created,
            } => {
                let what = if *created { "listening" } else { "removed" };
                write!(f, "domain {domid}: {what} {}", path.display())
            }
        }
    }
}

/// Why a connection was dropped.
#[derive(Debug, Error)]
pub enum DropReason {
    /// The peer closed it.
    #[error("closed by peer")]
    Closed,
    /// The peer broke the framing.
    #[error("protocol violation: {0}")]
    Protocol(#[from] WireError),
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// Its domain was released.
    #[error("domain released")]
    Released,
}
