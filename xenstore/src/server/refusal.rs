//! Why the server refuses a request, and the errno each reason travels as.

use thiserror::Error;

use crate::path::PathError;
use crate::perms::DomId;
use crate::wire::{MsgType, RequestError, XsErrno};

/// A per-connection limit (cf. C xenstored's quotas, XSA-349/350).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    /// Nodes owned by a domain.
    Nodes,
    /// Watches of one domain.
    Watches,
    /// Open transactions on one connection.
    Transactions,
    /// Nodes touched by one transaction.
    TransactionNodes,
    /// Entries in one permission list.
    Permissions,
    /// Bytes of one node (record header, permissions, value, children).
    NodeSize,
}

/// A refused request. Each variant maps to exactly one Xen errno, see [`Refusal::errno`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// The request does not parse.
    #[error(transparent)]
    BadRequest(#[from] RequestError),
    /// A type Xen does not define.
    #[error("unknown message type {0}")]
    UnknownType(u32),
    /// A path xenstore does not allow.
    #[error(transparent)]
    BadPath(#[from] PathError),
    /// The node does not exist.
    #[error("no node {0}")]
    NoNode(String),
    /// The caller lacks the access the request needs.
    #[error("domain {domid} may not {need} {path}")]
    Denied {
        /// The caller.
        domid: DomId,
        /// `read`, `write` or `change permissions of`.
        need: &'static str,
        /// The node.
        path: String,
    },
    /// A request reserved to privileged callers.
    #[error("only privileged callers may send {0:?}")]
    NotPrivileged(MsgType),
    /// An unprivileged caller tried to give a node away.
    #[error("domain {domid} may not change the owner of {path}")]
    ChangeOwner {
        /// The caller.
        domid: DomId,
        /// The node.
        path: String,
    },
    /// The new owner is not a domain that exists.
    #[error("domain {0} does not exist")]
    NoDomain(DomId),
    /// INTRODUCE of a domain that does not exist (Xen cannot map its store page).
    #[error("cannot introduce domain {0}: it does not exist")]
    IntroduceMissing(DomId),
    /// SET_PERMS of an `@` name other than `@introduceDomain` and `@releaseDomain`.
    #[error("{0} is not a special node")]
    SpecialName(String),
    /// XS_INTRODUCE with event-channel port 0.
    #[error("cannot introduce domain {0} without an event-channel port")]
    BadPort(DomId),
    /// RM of `/`.
    #[error("cannot remove /")]
    RemoveRoot,
    /// Domain 0 cannot be released.
    #[error("domain 0 cannot be released")]
    ReleaseDom0,
    /// No open transaction with this id on this connection.
    #[error("no transaction {0}")]
    NoTransaction(u32),
    /// TRANSACTION_START inside a transaction.
    #[error("transaction {0} is open: no nesting")]
    NestedTransaction(u32),
    /// The transaction lost a conflict.
    #[error("transaction {0} conflicts with a change made meanwhile")]
    Conflict(u32),
    /// The watch is already registered on this connection.
    #[error("watch {path} {token} already registered")]
    WatchExists {
        /// Watched path.
        path: String,
        /// Token.
        token: String,
    },
    /// No such watch on this connection.
    #[error("no watch {path} {token}")]
    NoWatch {
        /// Watched path.
        path: String,
        /// Token.
        token: String,
    },
    /// A quota would be exceeded.
    #[error("{kind:?} quota of {limit} exceeded")]
    Quota {
        /// Which quota.
        kind: QuotaKind,
        /// Its value.
        limit: usize,
    },
    /// The connection is gone.
    #[error("connection closed")]
    Closed,
    /// The reply would exceed the payload limit.
    #[error("reply of {0} bytes exceeds the payload limit")]
    ReplyTooBig(usize),
}

impl Refusal {
    /// The errno name sent in the XS_ERROR reply (C xenstored's choices).
    pub fn errno(&self) -> XsErrno {
        match self {
            Refusal::BadRequest(RequestError::Unsupported(_)) | Refusal::UnknownType(_) => {
                XsErrno::Enosys
            }
            Refusal::BadRequest(_)
            | Refusal::BadPath(_)
            | Refusal::RemoveRoot
            | Refusal::ReleaseDom0
            | Refusal::SpecialName(_)
            | Refusal::BadPort(_)
            | Refusal::IntroduceMissing(_) => XsErrno::Einval,
            Refusal::NoNode(_)
            | Refusal::NoDomain(_)
            | Refusal::NoTransaction(_)
            | Refusal::NoWatch { .. } => XsErrno::Enoent,
            Refusal::Denied { .. } | Refusal::NotPrivileged(_) => XsErrno::Eacces,
            Refusal::ChangeOwner { .. } => XsErrno::Eperm,
            Refusal::NestedTransaction(_) => XsErrno::Ebusy,
            Refusal::Conflict(_) => XsErrno::Eagain,
            Refusal::WatchExists { .. } => XsErrno::Eexist,
            // Xen 4.17-4.21 answer a full watch table with E2BIG, other quotas with ENOSPC.
            Refusal::Quota {
                kind: QuotaKind::Watches,
                ..
            } => XsErrno::E2big,
            Refusal::Quota { .. } => XsErrno::Enospc,
            Refusal::ReplyTooBig(_) => XsErrno::E2big,
            Refusal::Closed => XsErrno::Eio,
        }
    }

    /// Whether this is part of normal operation (a missing node, a lost race) rather than
    /// something an operator would want logged.
    pub fn is_routine(&self) -> bool {
        match self {
            Refusal::NoNode(_)
            | Refusal::Conflict(_)
            | Refusal::WatchExists { .. }
            | Refusal::NoWatch { .. }
            | Refusal::ReplyTooBig(_)
            | Refusal::Closed => true,
            Refusal::BadRequest(_)
            | Refusal::UnknownType(_)
            | Refusal::BadPath(_)
            | Refusal::Denied { .. }
            | Refusal::NotPrivileged(_)
            | Refusal::ChangeOwner { .. }
            | Refusal::NoDomain(_)
            | Refusal::IntroduceMissing(_)
            | Refusal::SpecialName(_)
            | Refusal::BadPort(_)
            | Refusal::RemoveRoot
            | Refusal::ReleaseDom0
            | Refusal::NoTransaction(_)
            | Refusal::NestedTransaction(_)
            | Refusal::Quota { .. } => false,
        }
    }
}
