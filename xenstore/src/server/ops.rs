//! Node operations with Xen's permission rules, over the live tree or a transaction.
//!
//! Access (C xenstored `perm_for_conn`): privileged callers may do anything; the owner (or a
//! domain whose SET_TARGET is the owner) everything; others what the list grants to them or
//! to their target. A missing
//! node answers ENOENT only if the nearest existing ancestor grants the access asked for,
//! else EACCES (`errno_from_parents`): a domain learns nothing about nodes it cannot reach.
//! Creating a node thus needs write access to the nearest existing ancestor; new nodes copy
//! their parent's permissions, with the creating domain as owner when it is unprivileged.

use super::refusal::{QuotaKind, Refusal};
use super::tree::{Node, Store};
use super::watch::Change;
use super::Quotas;
use crate::path;
use crate::perms::{Access, DomId, Perms};
use crate::wire::PAYLOAD_MAX;

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    pub domid: DomId,
    pub privileged: bool,
    /// The domain this one serves (SET_TARGET), if any.
    pub target: Option<DomId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    Read,
    Write,
}

impl Caller {
    pub fn access(&self, perms: &Perms) -> Access {
        if self.privileged {
            return Access::Both;
        }
        perms.access_for(self.domid, self.target)
    }

    /// Whether a watch event about `change` may reach this caller (C xenstored
    /// `watch_permitted`).
    pub fn may_see(&self, change: &Change) -> bool {
        change.perms.iter().any(|p| self.access(p).can_read())
    }

    /// Whether the caller may change `perms` (C xenstored's XS_PERM_OWNER: privileged
    /// callers, the owner, and the owner's SET_TARGET helper).
    pub fn owns(&self, perms: &Perms) -> bool {
        self.privileged || perms.owner() == self.domid || Some(perms.owner()) == self.target
    }

    fn allows(&self, perms: &Perms, need: Need) -> bool {
        let access = self.access(perms);
        match need {
            Need::Read => access.can_read(),
            Need::Write => access.can_write(),
        }
    }

    fn denied(&self, need: Need, path: &str) -> Refusal {
        Refusal::Denied {
            domid: self.domid,
            need: match need {
                Need::Read => "read",
                Need::Write => "write",
            },
            path: path.to_owned(),
        }
    }
}

/// The nearest existing ancestor of a missing node, as an error for that node.
fn missing(store: &mut dyn Store, caller: &Caller, path: &str, need: Need) -> Refusal {
    let mut at = path;
    while at != "/" {
        at = path::parent(at);
        if let Some(node) = store.node(at) {
            return if caller.allows(&node.perms, need) {
                Refusal::NoNode(path.to_owned())
            } else {
                caller.denied(need, path)
            };
        }
    }
    Refusal::NoNode(path.to_owned())
}

/// The node at `path` if the caller has `need` on it.
fn checked<'s>(
    store: &'s mut dyn Store,
    caller: &Caller,
    path: &str,
    need: Need,
) -> Result<&'s Node, Refusal> {
    match store.node(path) {
        Some(node) if caller.allows(&node.perms, need) => {}
        Some(_) => return Err(caller.denied(need, path)),
        None => return Err(missing(store, caller, path, need)),
    }
    store
        .node(path)
        .ok_or_else(|| Refusal::NoNode(path.to_owned()))
}

pub(crate) fn read(store: &mut dyn Store, caller: &Caller, path: &str) -> Result<Vec<u8>, Refusal> {
    Ok(checked(store, caller, path, Need::Read)?.value.clone())
}

pub(crate) fn directory(
    store: &mut dyn Store,
    caller: &Caller,
    path: &str,
) -> Result<Vec<u8>, Refusal> {
    Ok(checked(store, caller, path, Need::Read)?.listing())
}

pub(crate) fn get_perms(
    store: &mut dyn Store,
    caller: &Caller,
    path: &str,
) -> Result<Vec<u8>, Refusal> {
    Ok(checked(store, caller, path, Need::Read)?.perms.to_payload())
}

/// One chunk of a listing (C xenstored `send_directory_part`): `<generation>\0` and the
/// children from byte `offset` that fit, ending at a child boundary; the chunk that reaches
/// the end of the list carries one more nul.
pub(crate) fn directory_part(
    store: &mut dyn Store,
    caller: &Caller,
    path: &str,
    offset: u32,
) -> Result<Vec<u8>, Refusal> {
    let node = checked(store, caller, path, Need::Read)?;
    let mut out = node.generation.to_string().into_bytes();
    out.push(0);
    let listing = node.listing();
    let start = offset as usize;
    if start >= listing.len() {
        out.push(0);
        return Ok(out);
    }
    let room = PAYLOAD_MAX - out.len() - 1;
    let mut end = start;
    for name in listing[start..].split_inclusive(|&b| b == 0) {
        if end - start + name.len() > room {
            break;
        }
        end += name.len();
    }
    if end == start {
        // A single name longer than a chunk cannot exist (names are bounded by the path
        // limits), but an offset into the middle of one could land here.
        return Err(Refusal::ReplyTooBig(listing.len() - start));
    }
    out.extend_from_slice(&listing[start..end]);
    if end == listing.len() {
        out.push(0);
    }
    Ok(out)
}

fn check_size(caller: &Caller, quotas: &Quotas, node: &Node) -> Result<(), Refusal> {
    // C xenstored 4.17 refuses a record of exactly the quota too (`>=`).
    if !caller.privileged && node.size() >= quotas.node_size {
        return Err(Refusal::Quota {
            kind: QuotaKind::NodeSize,
            limit: quotas.node_size,
        });
    }
    Ok(())
}

/// Creates `path` and its missing ancestors; the caller must be allowed to write the nearest
/// existing ancestor.
fn create(
    store: &mut dyn Store,
    caller: &Caller,
    quotas: &Quotas,
    path: &str,
    value: Vec<u8>,
) -> Result<(), Refusal> {
    let mut missing_paths = vec![path.to_owned()];
    let mut at = path::parent(path).to_owned();
    while store.node(&at).is_none() {
        missing_paths.push(at.clone());
        at = path::parent(&at).to_owned();
    }
    let ancestor = store
        .node(&at)
        .cloned()
        .ok_or_else(|| Refusal::NoNode(at.clone()))?;
    if !caller.allows(&ancestor.perms, Need::Write) {
        return Err(caller.denied(Need::Write, path));
    }
    let owner = if caller.privileged {
        None
    } else {
        Some(caller.domid)
    };
    if owner.is_some() && store.owned_by(caller.domid) + missing_paths.len() > quotas.nodes {
        return Err(Refusal::Quota {
            kind: QuotaKind::Nodes,
            limit: quotas.nodes,
        });
    }
    // Validate everything before the first put, so a refusal leaves the store untouched.
    let mut parent = ancestor;
    let mut new_value = Some(value);
    let mut planned = Vec::new();
    for child_path in missing_paths.iter().rev() {
        parent.children.push(path::basename(child_path).to_owned());
        check_size(caller, quotas, &parent)?;
        let perms = match owner {
            Some(domid) => parent.perms.with_owner(domid),
            None => parent.perms.clone(),
        };
        let value = if child_path == path {
            new_value.take().unwrap_or_default()
        } else {
            Vec::new()
        };
        let child = Node::new(value, perms);
        check_size(caller, quotas, &child)?;
        planned.push((path::parent(child_path).to_owned(), parent));
        parent = child;
    }
    planned.push((path.to_owned(), parent));
    for (p, node) in planned {
        store.put(&p, node);
    }
    Ok(())
}

/// A change to `path`, visible to whoever may read the node (`perms`, old and new for a
/// permission change) or its parent, as C xenstored's `watch_permitted` decides.
pub(crate) fn change(store: &dyn Store, path: &str, exact: bool, mut perms: Vec<Perms>) -> Change {
    if let Some(parent) = store.peek(path::parent(path)) {
        perms.push(parent.perms.clone());
    }
    Change {
        path: path.to_owned(),
        exact,
        perms,
    }
}

fn changed(store: &dyn Store, path: &str) -> Option<Change> {
    let perms = store.peek(path)?.perms.clone();
    Some(change(store, path, false, vec![perms]))
}

pub(crate) fn write(
    store: &mut dyn Store,
    caller: &Caller,
    quotas: &Quotas,
    path: &str,
    value: Vec<u8>,
    changes: &mut Vec<Change>,
) -> Result<(), Refusal> {
    match store.node(path) {
        Some(_) => {
            let mut node = checked(store, caller, path, Need::Write)?.clone();
            node.value = value;
            check_size(caller, quotas, &node)?;
            store.put(path, node);
        }
        None => create(store, caller, quotas, path, value)?,
    }
    changes.extend(changed(store, path));
    Ok(())
}

pub(crate) fn mkdir(
    store: &mut dyn Store,
    caller: &Caller,
    quotas: &Quotas,
    path: &str,
    changes: &mut Vec<Change>,
) -> Result<(), Refusal> {
    if store.node(path).is_some() {
        // Existing node: check access as C xenstored does, change nothing, fire nothing.
        checked(store, caller, path, Need::Write)?;
        return Ok(());
    }
    create(store, caller, quotas, path, Vec::new())?;
    changes.extend(changed(store, path));
    Ok(())
}

pub(crate) fn rm(
    store: &mut dyn Store,
    caller: &Caller,
    path: &str,
    changes: &mut Vec<Change>,
) -> Result<(), Refusal> {
    if path == "/" {
        return Err(Refusal::RemoveRoot);
    }
    let node = match checked(store, caller, path, Need::Write).cloned() {
        Ok(node) => node,
        // Removing a missing node is fine if its parent exists.
        Err(Refusal::NoNode(_)) if store.node(path::parent(path)).is_some() => return Ok(()),
        Err(e) => return Err(e),
    };
    remove_subtree(store, path, &node, changes);
    Ok(())
}

/// Removes `node` at `path` and everything below it: descendants first, each firing only
/// watches on itself, then the node for its subtree. Each is seen by whoever could read it
/// or its parent before the removal.
pub(crate) fn remove_subtree(
    store: &mut dyn Store,
    path: &str,
    node: &Node,
    changes: &mut Vec<Change>,
) {
    let mut stack: Vec<(String, Perms)> = node
        .children
        .iter()
        .map(|c| (path::join(path, c), node.perms.clone()))
        .collect();
    while let Some((p, parent_perms)) = stack.pop() {
        if let Some(child) = store.node(&p).cloned() {
            stack.extend(
                child
                    .children
                    .iter()
                    .map(|c| (path::join(&p, c), child.perms.clone())),
            );
            store.remove(&p);
            changes.push(Change {
                path: p,
                exact: true,
                perms: vec![child.perms, parent_perms],
            });
        }
    }
    changes.push(change(store, path, false, vec![node.perms.clone()]));
    store.remove(path);
    let parent_path = path::parent(path);
    if let Some(mut parent) = store.node(parent_path).cloned() {
        let name = path::basename(path);
        parent.children.retain(|c| c != name);
        store.put(parent_path, parent);
    }
}

/// SET_PERMS on a node, with a list the server has already checked and marked
/// ([`Server::admit_perms`](super::Server)): the caller must own the node, and an
/// unprivileged one may not change the owner.
pub(crate) fn set_perms(
    store: &mut dyn Store,
    caller: &Caller,
    quotas: &Quotas,
    path: &str,
    perms: Perms,
    changes: &mut Vec<Change>,
) -> Result<(), Refusal> {
    let node = match store.node(path) {
        Some(node) => node.clone(),
        None => return Err(missing(store, caller, path, Need::Write)),
    };
    if !caller.owns(&node.perms) {
        return Err(Refusal::Denied {
            domid: caller.domid,
            need: "change permissions of",
            path: path.to_owned(),
        });
    }
    if !caller.privileged && perms.owner() != node.perms.owner() {
        return Err(Refusal::ChangeOwner {
            domid: caller.domid,
            path: path.to_owned(),
        });
    }
    let mut updated = node.clone();
    updated.perms = perms.clone();
    check_size(caller, quotas, &updated)?;
    store.put(path, updated);
    changes.push(change(store, path, false, vec![node.perms, perms]));
    Ok(())
}
