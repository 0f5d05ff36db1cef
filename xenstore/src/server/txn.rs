//! Transactions: optimistic, checked at commit.
//!
//! A transaction keeps its own writes in an overlay and records the generation of every
//! committed node it looked at (or that it was absent). Commit succeeds only if all of those
//! are still what it saw; then the overlay is applied at once and its watch events fire.
//! Otherwise nothing is applied and the caller gets EAGAIN, as with C xenstored, and redoes
//! the whole transaction. This is serialisable: a committed transaction behaves as if it
//! ran at its commit.

use std::collections::HashMap;

use super::tree::{Node, Store, Tree};
use super::watch::Change;
use crate::perms::DomId;

/// An open transaction.
#[derive(Debug, Default)]
pub(crate) struct Transaction {
    /// Final state of every node the transaction changed; `None` = removed.
    overlay: HashMap<String, Option<Node>>,
    /// Generation of each committed node read, `None` if it was absent.
    observed: HashMap<String, Option<u64>>,
    /// Change in owned-node counts, per domain.
    owned_delta: HashMap<DomId, isize>,
    /// Events to fire if the transaction commits.
    pub changes: Vec<Change>,
}

impl Transaction {
    /// How many nodes the transaction has changed.
    pub fn touched(&self) -> usize {
        self.overlay.len()
    }

    /// Whether every committed node seen is unchanged.
    fn still_valid(&self, tree: &Tree) -> bool {
        self.observed
            .iter()
            .all(|(path, seen)| tree.get(path).map(|n| n.generation) == *seen)
    }

    /// Applies the transaction if it does not conflict; returns its events, or `None` on
    /// conflict.
    pub fn commit(self, tree: &mut Tree) -> Option<Vec<Change>> {
        if !self.still_valid(tree) {
            return None;
        }
        // The overlay holds only the final state of each path (parents included), so the
        // order in which it is applied does not matter.
        for (path, node) in self.overlay {
            match node {
                Some(node) => tree.put(&path, node),
                None => tree.remove(&path),
            }
        }
        Some(self.changes)
    }

    /// Marks entries naming `domid` as ignored in the nodes this transaction wrote and in
    /// the lists its pending events are checked against, as the committed tree's are when
    /// the domain ends.
    pub fn ignore_domain(&mut self, domid: DomId) {
        let overlay = self.overlay.values_mut().flatten().map(|n| &mut n.perms);
        let events = self.changes.iter_mut().flat_map(|c| c.perms.iter_mut());
        for perms in overlay.chain(events) {
            perms.ignore_where(|d| d == domid);
        }
    }

    /// The view through which requests inside the transaction work.
    pub fn view<'a>(&'a mut self, tree: &'a Tree) -> TxView<'a> {
        TxView { tree, tx: self }
    }
}

/// A transaction's overlay on top of the committed tree.
pub(crate) struct TxView<'a> {
    tree: &'a Tree,
    tx: &'a mut Transaction,
}

impl TxView<'_> {
    fn current_owner(&mut self, path: &str) -> Option<DomId> {
        self.node(path).map(|n| n.perms.owner())
    }

    fn count(&mut self, domid: DomId, delta: isize) {
        *self.tx.owned_delta.entry(domid).or_insert(0) += delta;
    }
}

impl Store for TxView<'_> {
    fn node(&mut self, path: &str) -> Option<&Node> {
        if let Some(own) = self.tx.overlay.get(path) {
            return own.as_ref();
        }
        let committed = self.tree.get(path);
        self.tx
            .observed
            .entry(path.to_owned())
            .or_insert(committed.map(|n| n.generation));
        committed
    }

    fn peek(&self, path: &str) -> Option<&Node> {
        match self.tx.overlay.get(path) {
            Some(own) => own.as_ref(),
            None => self.tree.get(path),
        }
    }

    fn put(&mut self, path: &str, node: Node) {
        if let Some(old) = self.current_owner(path) {
            self.count(old, -1);
        }
        self.count(node.perms.owner(), 1);
        self.tx.overlay.insert(path.to_owned(), Some(node));
    }

    fn remove(&mut self, path: &str) {
        if let Some(old) = self.current_owner(path) {
            self.count(old, -1);
        }
        self.tx.overlay.insert(path.to_owned(), None);
    }

    fn owned_by(&self, domid: DomId) -> usize {
        let delta = self.tx.owned_delta.get(&domid).copied().unwrap_or(0);
        self.tree.owned_by(domid).saturating_add_signed(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perms::Perms;

    fn node(v: &[u8]) -> Node {
        Node::new(v.to_vec(), Perms::owned_by(0))
    }

    #[test]
    fn own_writes_are_visible_and_commit() {
        let mut tree = Tree::new();
        let mut tx = Transaction::default();
        let mut view = tx.view(&tree);
        view.put("/a", node(b"1"));
        assert_eq!(view.node("/a").unwrap().value, b"1");
        assert!(tree.get("/a").is_none());
        assert!(tx.commit(&mut tree).is_some());
        assert_eq!(tree.get("/a").unwrap().value, b"1");
    }

    #[test]
    fn a_change_to_something_read_is_a_conflict() {
        let mut tree = Tree::new();
        tree.put("/a", node(b"1"));
        let mut tx = Transaction::default();
        assert!(tx.view(&tree).node("/a").is_some());
        tree.put("/a", node(b"2"));
        assert!(tx.commit(&mut tree).is_none());
    }

    #[test]
    fn creation_of_something_seen_absent_is_a_conflict() {
        let mut tree = Tree::new();
        let mut tx = Transaction::default();
        assert!(tx.view(&tree).node("/b").is_none());
        tree.put("/b", node(b""));
        assert!(tx.commit(&mut tree).is_none());
    }

    #[test]
    fn unrelated_changes_do_not_conflict() {
        let mut tree = Tree::new();
        let mut tx = Transaction::default();
        tx.view(&tree).put("/x", node(b"1"));
        tree.put("/y", node(b"2"));
        assert!(tx.commit(&mut tree).is_some());
    }

    #[test]
    fn ownership_counts_include_the_overlay() {
        let tree = Tree::new();
        let mut tx = Transaction::default();
        let mut view = tx.view(&tree);
        view.put("/a", Node::new(vec![], Perms::owned_by(7)));
        assert_eq!(view.owned_by(7), 1);
        view.remove("/a");
        assert_eq!(view.owned_by(7), 0);
    }
}
