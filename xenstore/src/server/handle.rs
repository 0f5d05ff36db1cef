//! Request dispatch: one message in, replies and watch events queued.

use super::ops::{self, Caller};
use super::refusal::{QuotaKind, Refusal};
use super::tree::Store;
use super::txn::Transaction;
use super::watch::{Change, Watch};
use super::{ConnId, Effect, Notice, Quotas, Server, SPECIAL_PATHS};
use crate::path::{self, is_special, Resolved};
use crate::perms::{DomId, Perms};
use crate::wire::{self, Message, MsgType, Request, WireError};

const OK: &[u8] = b"OK\0";

/// What a request produced, besides side effects.
type Outcome = Result<Vec<u8>, Refusal>;

impl Server {
    /// Decodes the first frame of `buf`, as read from `conn`, and handles it: a request, or a
    /// message of unknown type (answered ENOSYS; the connection goes on). Returns the bytes
    /// the frame took, `None` while `buf` holds less than a frame, or the error that makes the
    /// stream unusable (the caller drops the connection).
    pub fn handle_frame(&mut self, conn: ConnId, buf: &[u8]) -> Result<Option<usize>, WireError> {
        match wire::decode(buf) {
            Ok(Some((msg, used))) => {
                self.handle(conn, msg);
                Ok(Some(used))
            }
            Err(WireError::UnknownType {
                msg_type,
                req_id,
                tx_id,
                frame_len,
            }) => {
                self.handle_unknown_type(conn, msg_type, req_id, tx_id);
                Ok(Some(frame_len))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Handles one request from `conn`: its reply (and any events) are queued for sending.
    pub fn handle(&mut self, conn: ConnId, msg: Message) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let domid = c.domid;
        let outcome = Request::parse(msg.msg_type, msg.payload())
            .map_err(Refusal::from)
            .and_then(|request| self.dispatch(conn, msg.tx_id, request));
        let reply = outcome.and_then(|payload| {
            let len = payload.len();
            Message::new(msg.msg_type, msg.req_id, msg.tx_id, payload)
                .map_err(|_| Refusal::ReplyTooBig(len))
        });
        match reply {
            Ok(reply) => self.queue(conn, reply),
            Err(refusal) => self.refuse(conn, domid, &msg, refusal),
        }
        // The registration event follows the OK reply, as C xenstored sends it.
        if let Some(watch) = self.registered.take() {
            self.push_event(conn, &watch, &watch.given.clone());
        }
    }

    /// Answers a frame of a type Xen does not define with ENOSYS.
    pub fn handle_unknown_type(&mut self, conn: ConnId, raw_type: u32, req_id: u32, tx_id: u32) {
        let Some(domid) = self.domid_of(conn) else {
            return;
        };
        let refusal = Refusal::UnknownType(raw_type);
        self.queue(conn, Message::error(req_id, tx_id, &refusal.errno()));
        self.notices.push(Notice::Refused {
            domid,
            request: None,
            refusal,
        });
    }

    fn refuse(&mut self, conn: ConnId, domid: DomId, msg: &Message, refusal: Refusal) {
        self.queue(
            conn,
            Message::error(msg.req_id, msg.tx_id, &refusal.errno()),
        );
        if !refusal.is_routine() {
            self.notices.push(Notice::Refused {
                domid,
                request: Some(msg.msg_type),
                refusal,
            });
        }
    }

    fn caller(&self, conn: ConnId) -> Result<Caller, Refusal> {
        let c = self.conns.get(&conn).ok_or(Refusal::Closed)?;
        Ok(Caller {
            domid: c.domid,
            privileged: c.privileged,
            target: self.targets.get(&c.domid).copied(),
        })
    }

    fn resolve(&self, caller: &Caller, given: &str) -> Result<Resolved, Refusal> {
        let path_max = (!caller.privileged).then_some(self.quotas.path_max);
        Ok(path::resolve(given, caller.domid, path_max)?)
    }

    fn require_privileged(caller: &Caller, t: MsgType) -> Result<(), Refusal> {
        if caller.privileged {
            Ok(())
        } else {
            Err(Refusal::NotPrivileged(t))
        }
    }

    fn dispatch(&mut self, conn: ConnId, tx_id: u32, request: Request) -> Outcome {
        let caller = self.caller(conn)?;
        match request {
            Request::Read { path } => {
                let p = self.resolve(&caller, &path)?.absolute;
                self.in_store(conn, tx_id, |s, _, _| ops::read(s, &caller, &p))
            }
            Request::Directory { path } => {
                let p = self.resolve(&caller, &path)?.absolute;
                self.in_store(conn, tx_id, |s, _, _| ops::directory(s, &caller, &p))
            }
            Request::DirectoryPart { path, offset } => {
                let p = self.resolve(&caller, &path)?.absolute;
                self.in_store(conn, tx_id, |s, _, _| {
                    ops::directory_part(s, &caller, &p, offset)
                })
            }
            Request::GetPerms { path } => {
                let p = self.resolve(&caller, &path)?.absolute;
                self.in_store(conn, tx_id, |s, _, _| ops::get_perms(s, &caller, &p))
            }
            Request::Write { path, value } => {
                let p = self.resolve(&caller, &path)?.absolute;
                self.in_store(conn, tx_id, |s, q, ch| {
                    ops::write(s, &caller, q, &p, value, ch).map(|()| OK.to_vec())
                })
            }
            Request::Mkdir { path } => {
                let p = self.resolve(&caller, &path)?.absolute;
                self.in_store(conn, tx_id, |s, q, ch| {
                    ops::mkdir(s, &caller, q, &p, ch).map(|()| OK.to_vec())
                })
            }
            Request::Rm { path } => {
                let p = self.resolve(&caller, &path)?.absolute;
                self.in_store(conn, tx_id, |s, _, ch| {
                    ops::rm(s, &caller, &p, ch).map(|()| OK.to_vec())
                })
            }
            Request::SetPerms { path, perms } => {
                let perms = self.admit_perms(&caller, perms)?;
                if is_special(&path) {
                    return self.set_special_perms(&caller, path, perms);
                }
                let p = self.resolve(&caller, &path)?.absolute;
                self.in_store(conn, tx_id, |s, q, ch| {
                    ops::set_perms(s, &caller, q, &p, perms, ch).map(|()| OK.to_vec())
                })
            }
            Request::Watch { path, token } => self.watch(conn, &caller, path, token),
            Request::Unwatch { path, token } => {
                // Watches are compared by canonical path, as C xenstored does: a relative
                // and an absolute spelling name the same watch.
                let Ok((absolute, _)) = self.watch_path(&caller, &path) else {
                    return Err(Refusal::NoWatch { path, token });
                };
                let c = self.conns.get_mut(&conn).ok_or(Refusal::Closed)?;
                let before = c.watches.len();
                c.watches
                    .retain(|w| !(w.absolute == absolute && w.token == token));
                if c.watches.len() == before {
                    return Err(Refusal::NoWatch { path, token });
                }
                Ok(OK.to_vec())
            }
            Request::TransactionStart => self.transaction_start(conn, &caller, tx_id),
            Request::TransactionEnd { commit } => self.transaction_end(conn, tx_id, commit),
            Request::Introduce { domid, port, .. } => {
                Self::require_privileged(&caller, MsgType::Introduce)?;
                if port == 0 {
                    return Err(Refusal::BadPort(domid));
                }
                // Domain 0 is always introduced: C xenstored only rebinds its port and fires
                // no @introduceDomain for it.
                if domid == 0 {
                    return Ok(OK.to_vec());
                }
                // C xenstored maps the domain's store page here, which fails for a domain
                // that does not exist.
                if !self.introduced.contains(&domid) && !(self.domain_exists)(domid) {
                    return Err(Refusal::IntroduceMissing(domid));
                }
                self.domains.insert(domid);
                if self.introduced.insert(domid) {
                    self.effects.push(Effect::Introduced(domid));
                    self.fire_special("@introduceDomain");
                } else {
                    // Introducing it again resets its connection (C xenstored
                    // `domain_conn_reset`): its watches and transactions go.
                    for c in self.conns.values_mut() {
                        if !c.privileged && c.domid == domid {
                            c.watches.clear();
                            c.transactions.clear();
                        }
                    }
                }
                Ok(OK.to_vec())
            }
            Request::Release { domid } => {
                Self::require_privileged(&caller, MsgType::Release)?;
                if domid == 0 {
                    return Err(Refusal::ReleaseDom0);
                }
                if !self.introduced.contains(&domid) {
                    return Err(Refusal::NoDomain(domid));
                }
                self.destroy_domain(domid);
                Ok(OK.to_vec())
            }
            Request::GetDomainPath { domid } => {
                let mut p = path::domain_path(domid).into_bytes();
                p.push(0);
                Ok(p)
            }
            Request::IsDomainIntroduced { domid } => {
                Self::require_privileged(&caller, MsgType::IsDomainIntroduced)?;
                let yes = domid == 0 || self.introduced.contains(&domid);
                Ok(if yes { b"T\0" } else { b"F\0" }.to_vec())
            }
            Request::Resume { domid } => {
                Self::require_privileged(&caller, MsgType::Resume)?;
                if !self.introduced.contains(&domid) {
                    return Err(Refusal::NoDomain(domid));
                }
                Ok(OK.to_vec())
            }
            Request::SetTarget { domid, target } => {
                Self::require_privileged(&caller, MsgType::SetTarget)?;
                // C xenstored: both must be introduced domains, else ENOENT.
                for d in [domid, target] {
                    if !self.introduced.contains(&d) {
                        return Err(Refusal::NoDomain(d));
                    }
                }
                self.targets.insert(domid, target);
                Ok(OK.to_vec())
            }
            Request::ResetWatches => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.watches.clear();
                    c.transactions.clear();
                }
                Ok(OK.to_vec())
            }
        }
    }

    /// What C xenstored 4.17's `do_set_perms` does with a list before it looks at the node:
    /// an unprivileged caller may give no more entries than the quota (ENOSPC); then, as
    /// `domain_alloc_permrefs`, each domain named that exists becomes known (C xenstored
    /// allocates its `struct domain`) and each entry after the owner's naming one that does
    /// not is marked ignored (XS_PERM_IGNORE: kept, listed by GET_PERMS, granting nothing,
    /// also to a domain created later under that domid); an owner that does not exist is
    /// ENOENT.
    fn admit_perms(&mut self, caller: &Caller, mut perms: Perms) -> Result<Perms, Refusal> {
        if !caller.privileged && perms.entries().len() > self.quotas.permissions {
            return Err(Refusal::Quota {
                kind: QuotaKind::Permissions,
                limit: self.quotas.permissions,
            });
        }
        for p in perms.entries() {
            if p.domid != 0 && !self.domains.contains(&p.domid) && (self.domain_exists)(p.domid) {
                self.domains.insert(p.domid);
            }
        }
        let gone = |d: DomId| d != 0 && !self.domains.contains(&d);
        if gone(perms.owner()) {
            return Err(Refusal::NoDomain(perms.owner()));
        }
        perms.ignore_where(gone);
        Ok(perms)
    }

    /// SET_PERMS on `@introduceDomain` or `@releaseDomain` (C xenstored
    /// `set_perms_special`), with a list [`Server::admit_perms`] passed: the owner (or
    /// privileged callers) may change them; any other `@` name is EINVAL.
    fn set_special_perms(&mut self, caller: &Caller, path: String, perms: Perms) -> Outcome {
        let name = SPECIAL_PATHS
            .iter()
            .find(|p| **p == path)
            .ok_or_else(|| Refusal::SpecialName(path.clone()))?;
        let current = &self.special_perms[name];
        if !caller.owns(current) {
            return Err(Refusal::Denied {
                domid: caller.domid,
                need: "change permissions of",
                path,
            });
        }
        self.special_perms.insert(name, perms);
        Ok(OK.to_vec())
    }

    /// Runs `op` on the live tree (firing its events) or inside transaction `tx_id` (keeping
    /// them for the commit).
    fn in_store<R>(
        &mut self,
        conn: ConnId,
        tx_id: u32,
        op: impl FnOnce(&mut dyn Store, &Quotas, &mut Vec<Change>) -> Result<R, Refusal>,
    ) -> Result<R, Refusal> {
        let mut changes = Vec::new();
        if tx_id == 0 {
            let r = op(&mut self.tree, &self.quotas, &mut changes)?;
            self.fire(changes);
            return Ok(r);
        }
        let c = self
            .conns
            .get_mut(&conn)
            .ok_or(Refusal::NoTransaction(tx_id))?;
        let privileged = c.privileged;
        let tx = c
            .transactions
            .get_mut(&tx_id)
            .ok_or(Refusal::NoTransaction(tx_id))?;
        if !privileged && tx.touched() >= self.quotas.transaction_nodes {
            return Err(Refusal::Quota {
                kind: QuotaKind::TransactionNodes,
                limit: self.quotas.transaction_nodes,
            });
        }
        let r = op(&mut tx.view(&self.tree), &self.quotas, &mut changes)?;
        tx.changes.extend(changes);
        Ok(r)
    }

    /// The canonical path of a watch, and the home to strip from its events if it was
    /// given relative.
    fn watch_path(
        &self,
        caller: &Caller,
        given: &str,
    ) -> Result<(String, Option<String>), Refusal> {
        if is_special(given) {
            // Any `@` name may be watched; only the two specials ever fire.
            path::resolve(&format!("/{}", &given[1..]), 0, None)?;
            return Ok((given.to_owned(), None));
        }
        let r = self.resolve(caller, given)?;
        let home = r.relative.then(|| path::domain_path(caller.domid));
        Ok((r.absolute, home))
    }

    fn watch(&mut self, conn: ConnId, caller: &Caller, given: String, token: String) -> Outcome {
        let (absolute, relative_to) = self.watch_path(caller, &given)?;
        let limit = self.quotas.watches;
        // C xenstored 4.17 counts watches per domain and compares before adding the new
        // one (`domain_watch(conn) > quota`): a domain may hold one more than the quota.
        let held: usize = self
            .conns
            .values()
            .filter(|c| !c.privileged && c.domid == caller.domid)
            .map(|c| c.watches.len())
            .sum();
        let c = self.conns.get_mut(&conn).ok_or(Refusal::Closed)?;
        if c.watches
            .iter()
            .any(|w| w.absolute == absolute && w.token == token)
        {
            return Err(Refusal::WatchExists { path: given, token });
        }
        if !c.privileged && held > limit {
            return Err(Refusal::Quota {
                kind: QuotaKind::Watches,
                limit,
            });
        }
        let watch = Watch {
            given,
            token,
            absolute,
            relative_to,
        };
        c.watches.push(watch.clone());
        self.registered = Some(watch);
        Ok(OK.to_vec())
    }

    fn transaction_start(&mut self, conn: ConnId, caller: &Caller, tx_id: u32) -> Outcome {
        let limit = self.quotas.transactions;
        let c = self.conns.get_mut(&conn).ok_or(Refusal::Closed)?;
        if tx_id != 0 {
            return Err(if c.transactions.contains_key(&tx_id) {
                Refusal::NestedTransaction(tx_id)
            } else {
                Refusal::NoTransaction(tx_id)
            });
        }
        // C xenstored 4.17 compares before counting the new one
        // (`transaction_started > quota`): a connection may hold one more than the quota.
        if !caller.privileged && c.transactions.len() > limit {
            return Err(Refusal::Quota {
                kind: QuotaKind::Transactions,
                limit,
            });
        }
        // Never 0 (libxenstore reads 0 as failure), never one this connection holds.
        let mut id = self.next_tx;
        loop {
            id = id.wrapping_add(1);
            if id != 0 && !c.transactions.contains_key(&id) {
                break;
            }
        }
        self.next_tx = id;
        c.transactions.insert(id, Transaction::default());
        let mut reply = id.to_string().into_bytes();
        reply.push(0);
        Ok(reply)
    }

    fn transaction_end(&mut self, conn: ConnId, tx_id: u32, commit: bool) -> Outcome {
        let c = self
            .conns
            .get_mut(&conn)
            .ok_or(Refusal::NoTransaction(tx_id))?;
        let tx = c
            .transactions
            .remove(&tx_id)
            .ok_or(Refusal::NoTransaction(tx_id))?;
        if commit {
            let changes = tx.commit(&mut self.tree).ok_or(Refusal::Conflict(tx_id))?;
            self.fire(changes);
        }
        Ok(OK.to_vec())
    }

    pub(super) fn fire_special(&mut self, name: &str) {
        let perms = self.special_perms.get(name).cloned();
        self.fire(vec![Change {
            path: name.to_owned(),
            exact: true,
            perms: perms.into_iter().collect(),
        }]);
    }

    /// Queues the events of `changes` for every watcher allowed to see them.
    pub(super) fn fire(&mut self, changes: Vec<Change>) {
        let mut deliveries = Vec::new();
        for change in &changes {
            for (id, c) in &self.conns {
                let watcher = Caller {
                    domid: c.domid,
                    privileged: c.privileged,
                    target: self.targets.get(&c.domid).copied(),
                };
                if !watcher.may_see(change) {
                    continue;
                }
                for w in c.watches.iter().filter(|w| w.matches(change)) {
                    deliveries.push((*id, w.clone(), w.event_path(change).to_owned()));
                }
            }
        }
        for (id, w, epath) in deliveries {
            self.push_event(id, &w, &epath);
        }
    }

    /// Queues one event, or drops it if the connection's event queue is full. (C xenstored
    /// also coalesces identical unsent events; watchers must re-read anyway, and a queue
    /// scan per event would cost more than it saves here.)
    fn push_event(&mut self, conn: ConnId, watch: &Watch, epath: &str) {
        let limit = match self.conns.get(&conn) {
            Some(c) if c.privileged => self.quotas.privileged_watch_events,
            Some(_) => self.quotas.watch_events,
            None => return,
        };
        let payload = watch.event_payload(epath);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.queued_events >= limit {
            if !c.dropping {
                c.dropping = true;
                let domid = c.domid;
                self.notices.push(Notice::EventDropped {
                    domid,
                    path: epath.to_owned(),
                });
            }
            return;
        }
        // Event paths and tokens are bounded by the request limits, so this always fits;
        // an over-long event is dropped, as C xenstored does.
        if let Ok(m) = Message::new(MsgType::WatchEvent, 0, 0, payload) {
            c.out.push_back(m);
            c.queued_events += 1;
            c.dropping = false;
            self.dirty.insert(conn);
        }
    }
}
