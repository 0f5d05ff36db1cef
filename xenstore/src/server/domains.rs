//! A domain's end: what C xenstored 4.17 does when it frees a domain (`destroy_domain` in
//! xenstored_domain.c), on XS_RELEASE or when the hypervisor reports it dying or gone
//! (`check_domains` after VIRQ_DOM_EXC).
//!
//! With `keep_orphans` off (the default) every node the domain owns is deleted with its
//! subtree, firing watches as XS_RM does; the domain leaves the permission lists of
//! `@introduceDomain` and `@releaseDomain` (`remove_domid_from_perm`, which also gives a
//! list it owned to dom0); then, if it was introduced, `@releaseDomain` fires.
//!
//! Entries naming it in other nodes' lists stay, ignored (XS_PERM_IGNORE): GET_PERMS still
//! lists them, access checks skip them. C xenstored decides that when it reads a node
//! (`domain_adjust_node_perms`): an entry is ignored if its domain has no `struct domain`,
//! or one allocated after the node was last written (`chk_domain_generation`), which is a
//! new domain reusing the domid. We mark the entries when the domain ends instead, in the
//! tree and in open transactions, which ignores the same entries without comparing
//! generations on every access: an entry naming a domain that did not exist is marked when
//! it is set (`Server::admit_perms`), and nodes inherit their parent's marks. One
//! difference: a list a transaction wrote while the domain lived, committed after a new
//! domain took the domid, is ignored here; C xenstored would let the new domain use it.
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
    /// [`Server::new`]) among those introduced, named in a permission list, or owning
    /// nodes, and ends each. The transport calls this when the host signals a change of
    /// domains, as C xenstored does on VIRQ_DOM_EXC.
    pub fn check_domains(&mut self) {
        let mut known: BTreeSet<DomId> = &self.domains | &self.introduced;
        known.extend(self.tree.owners());
        known.remove(&0);
        for domid in known {
            if !(self.domain_exists)(domid) {
                self.destroy_domain(domid);
            }
        }
    }

    /// Ends domain `domid`: its connections, SET_TARGET links and nodes go, its entries in
    /// other lists are ignored from now on; `@releaseDomain` fires if it was introduced.
    pub(crate) fn destroy_domain(&mut self, domid: DomId) {
        let introduced = self.introduced.remove(&domid);
        self.domains.remove(&domid);
        self.targets.retain(|d, t| *d != domid && *t != domid);
        self.conns.retain(|_, c| c.privileged || c.domid != domid);
        self.remove_nodes_of(domid);
        self.tree.ignore_domain(domid);
        for tx in self
            .conns
            .values_mut()
            .flat_map(|c| c.transactions.values_mut())
        {
            tx.ignore_domain(domid);
        }
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

    /// Deletes the subtrees of the nodes `domid` owns (C xenstored walks the tree only if
    /// the domain owns any).
    fn remove_nodes_of(&mut self, domid: DomId) {
        if self.tree.owned_by(domid) == 0 {
            return;
        }
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
        self.fire(changes);
    }
}
