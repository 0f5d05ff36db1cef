//! An in-memory xenstored: the tree, Xen's permission rules, watches, transactions, domains
//! and per-connection quotas.
//!
//! [`Server`] is a state machine with no I/O: a transport feeds it decoded messages per
//! connection ([`Server::handle`]) and sends what [`Server::pop_output`] yields. The unix-socket
//! transport is [`transport`]. Behaviour follows Xen 4.17's C xenstored (see each module);
//! where C xenstored would log, the server records a [`Notice`].
//!
//! Departures from C xenstored 4.17: the path-max quota applies to unprivileged callers only
//! (as from Xen 4.18); identical queued watch events are not coalesced. No persistence;
//! XS_CONTROL, GET/SET_FEATURE and GET/SET_QUOTA answer ENOSYS.

mod domains;
mod handle;
mod ops;
mod refusal;
pub mod transport;
mod tree;
mod txn;
mod watch;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

pub use refusal::{QuotaKind, Refusal};

use crate::perms::{DomId, Perms};
use crate::wire::{Message, MsgType};
use tree::Tree;
use txn::Transaction;
use watch::Watch;

/// Limits applied to unprivileged connections (C xenstored defaults, Xen 4.17), plus bounds
/// on queued output that apply to every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quotas {
    /// Nodes a domain may own.
    pub nodes: usize,
    /// Watches per domain (C xenstored 4.17 lets a domain hold one more).
    pub watches: usize,
    /// Open transactions per connection (C xenstored 4.17 lets it hold one more).
    pub transactions: usize,
    /// Nodes one transaction may change.
    pub transaction_nodes: usize,
    /// Entries in one permission list.
    pub permissions: usize,
    /// Path length below the domain's home.
    pub path_max: usize,
    /// Bytes per node, counted as C xenstored 4.17 counts its database record; a node must
    /// stay below it.
    pub node_size: usize,
    /// Replies a connection may leave unread before the server stops reading its requests.
    pub outstanding: usize,
    /// Watch events queued for an unprivileged connection; more are dropped (XSA-349: a
    /// guest that does not read its events must not grow the daemon without bound).
    pub watch_events: usize,
    /// The same bound for privileged connections, larger since dom0 watches everything.
    pub privileged_watch_events: usize,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            nodes: 1000,
            watches: 128,
            transactions: 10,
            transaction_nodes: 1024,
            permissions: 5,
            path_max: 2048,
            node_size: 2048,
            outstanding: 20,
            watch_events: 1024,
            privileged_watch_events: 65536,
        }
    }
}

/// Identifies a connection to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

/// Something the transport must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A domain was introduced: it may now connect as itself.
    Introduced(DomId),
    /// A domain was released: its connections go away.
    Released(DomId),
}

/// Something worth logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A request was refused for a reason an operator may want to see.
    Refused {
        /// The caller's domain.
        domid: DomId,
        /// The request type, `None` for a type Xen does not define.
        request: Option<MsgType>,
        /// Why.
        refusal: Refusal,
    },
    /// Watch events are being dropped because the connection's queue is full (reported once
    /// each time the queue fills up).
    EventDropped {
        /// The watcher's domain.
        domid: DomId,
        /// The event path.
        path: String,
    },
}

/// One connection's state.
#[derive(Debug)]
struct Conn {
    domid: DomId,
    privileged: bool,
    watches: Vec<Watch>,
    transactions: HashMap<u32, Transaction>,
    out: VecDeque<Message>,
    /// Watch events in `out`.
    queued_events: usize,
    /// Events are being dropped (queue full); logged once per episode, not per event.
    dropping: bool,
}

/// Decides whether a domain exists and is not dying, as Xen asks the hypervisor: for
/// INTRODUCE, for the domains permission lists name, and in [`Server::check_domains`].
pub type DomainExists = Box<dyn Fn(DomId) -> bool + Send>;

/// The xenstored state machine.
pub struct Server {
    tree: Tree,
    conns: HashMap<ConnId, Conn>,
    next_conn: u64,
    next_tx: u32,
    introduced: BTreeSet<DomId>,
    /// The domains besides dom0 C xenstored would hold a `struct domain` for: the
    /// introduced ones and the existing ones a permission list named. With the owners of
    /// nodes, these are what [`Server::check_domains`] asks the host about.
    domains: BTreeSet<DomId>,
    targets: HashMap<DomId, DomId>,
    /// Permissions of `@introduceDomain` and `@releaseDomain`.
    special_perms: HashMap<&'static str, Perms>,
    quotas: Quotas,
    domain_exists: DomainExists,
    dirty: HashSet<ConnId>,
    /// A watch just registered, whose first event follows the OK reply.
    registered: Option<Watch>,
    effects: Vec<Effect>,
    notices: Vec<Notice>,
}

/// The special watch paths.
pub const SPECIAL_PATHS: [&str; 2] = ["@introduceDomain", "@releaseDomain"];

impl Server {
    /// A server with only `/`, the given quotas, and a predicate telling which domains exist
    /// besides dom0 (libxl gives nodes to a domain before introducing it; a domain that no
    /// longer exists is ended by [`Server::check_domains`]).
    pub fn new(quotas: Quotas, domain_exists: DomainExists) -> Server {
        Server {
            tree: Tree::new(),
            conns: HashMap::new(),
            next_conn: 0,
            next_tx: 0,
            introduced: BTreeSet::new(),
            domains: BTreeSet::new(),
            targets: HashMap::new(),
            special_perms: SPECIAL_PATHS
                .iter()
                .map(|p| (*p, Perms::owned_by(0)))
                .collect(),
            quotas,
            domain_exists,
            dirty: HashSet::new(),
            registered: None,
            effects: Vec::new(),
            notices: Vec::new(),
        }
    }

    /// Opens a connection acting as `domid`; `privileged` bypasses permissions and quotas.
    pub fn connect(&mut self, domid: DomId, privileged: bool) -> ConnId {
        self.next_conn += 1;
        let id = ConnId(self.next_conn);
        self.conns.insert(
            id,
            Conn {
                domid,
                privileged,
                watches: Vec::new(),
                transactions: HashMap::new(),
                out: VecDeque::new(),
                queued_events: 0,
                dropping: false,
            },
        );
        id
    }

    /// Closes a connection: its watches and open transactions go with it.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
        self.dirty.remove(&conn);
    }

    /// The domain a connection acts as.
    pub fn domid_of(&self, conn: ConnId) -> Option<DomId> {
        self.conns.get(&conn).map(|c| c.domid)
    }

    /// Whether `domid` is introduced.
    pub fn is_introduced(&self, domid: DomId) -> bool {
        self.introduced.contains(&domid)
    }

    /// The next message to send on a connection.
    pub fn pop_output(&mut self, conn: ConnId) -> Option<Message> {
        let c = self.conns.get_mut(&conn)?;
        let m = c.out.pop_front()?;
        if m.msg_type == MsgType::WatchEvent {
            c.queued_events -= 1;
        }
        Some(m)
    }

    /// Whether a connection has so many unsent replies that its requests should wait.
    pub fn is_backlogged(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.out.len() - c.queued_events >= self.quotas.outstanding)
    }

    /// Connections that received output since the last call.
    pub fn take_dirty(&mut self) -> Vec<ConnId> {
        self.dirty.drain().collect()
    }

    /// Effects since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Notices since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    fn queue(&mut self, conn: ConnId, message: Message) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.out.push_back(message);
            self.dirty.insert(conn);
        }
    }
}

#[cfg(test)]
mod tests;
