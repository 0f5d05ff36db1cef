//! A domain's end: what C xenstored 4.17 does when it frees a domain (`destroy_domain` in
//! xenstored_domain.c), on XS_RELEASE or when the hypervisor reports it dying or gone
//! (`check_domains` after VIRQ_DOM_EXC).
//!
//! With `keep_orphans` off (the default) every node the domain owns is deleted with its
//! subtree, firing watches as XS_RM does; the domain leaves the permission lists of
//! `@introduceDomain` and `@releaseDomain`; then, if it was introduced, `@releaseDomain`
//! fires. C xenstored leaves a dead domain's entries in other nodes' lists but ignores them
//! (XS_PERM_IGNORE, by comparing generations); we remove them, which grants the same
//! access: none, also to a new domain that reuses the domid.
//!
//! Departure: C xenstored also fires `@releaseDomain` when a domain shuts down or crashes
//! while it still exists; the simulated host has no such state, only destruction.

use std::collections::BTreeSet;

use super::ops;
use super::tree::Store;
use super::{Effect, Server};
use crate::perms::DomId;

impl Server {
    /// Looks for domains that no longer exist (asking the predicate given to
    /// [`Server::new`]) among those introduced or named in a permission list, and ends each.
    /// The transport calls this when the host signals a change of domains, as C xenstored
    /// does on VIRQ_DOM_EXC.
    pub fn check_domains(&mut self) {
        let mut known: BTreeSet<DomId> = self.introduced.clone();
        let lists = self
            .tree
            .iter()
            .map(|(_, node)| &node.perms)
            .chain(self.special_perms.values());
        for perms in lists {
            known.extend(perms.entries().iter().map(|p| p.domid));
        }
        known.remove(&0);
        for domid in known {
            if !(self.domain_exists)(domid) {
                self.destroy_domain(domid);
            }
        }
    }

    /// Ends domain `domid`: its connections, SET_TARGET links, nodes and permission
    /// entries go; `@releaseDomain` fires if it was introduced.
    pub(crate) fn destroy_domain(&mut self, domid: DomId) {
        let introduced = self.introduced.remove(&domid);
        self.targets.retain(|d, t| *d != domid && *t != domid);
        self.conns.retain(|_, c| c.privileged || c.domid != domid);
        self.remove_nodes_of(domid);
        for perms in self.special_perms.values_mut() {
            // C xenstored's `remove_domid_from_perm`: the owner becomes dom0.
            if perms.owner() == domid {
                *perms = perms.with_owner(0);
            }
            perms.forget(domid);
        }
        if introduced {
            self.effects.push(Effect::Released(domid));
            self.fire_special("@releaseDomain");
        }
    }

    /// Deletes the subtrees of the nodes `domid` owns and drops its entries from the rest.
    fn remove_nodes_of(&mut self, domid: DomId) {
        let mut owned: Vec<String> = self
            .tree
            .iter()
            .filter(|(_, node)| node.perms.owner() == domid)
            .map(|(path, _)| path.clone())
            .collect();
        // Ancestors sort before their descendants, whose removal they include.
        owned.sort();
        let mut changes = Vec::new();
        for path in owned {
            let Some(node) = self.tree.get(&path).cloned() else {
                continue;
            };
            if path == "/" {
                // The root cannot go: it returns to dom0, as orphans do with keep_orphans.
                let mut root = node;
                root.perms = root.perms.with_owner(0);
                self.tree.put("/", root);
                continue;
            }
            ops::remove_subtree(&mut self.tree, &path, &node, &mut changes);
        }
        let listed: Vec<String> = self
            .tree
            .iter()
            .filter(|(_, node)| node.perms.entries()[1..].iter().any(|p| p.domid == domid))
            .map(|(path, _)| path.clone())
            .collect();
        for path in listed {
            if let Some(mut node) = self.tree.get(&path).cloned() {
                node.perms.forget(domid);
                self.tree.put(&path, node);
            }
        }
        self.fire(changes);
    }
}
