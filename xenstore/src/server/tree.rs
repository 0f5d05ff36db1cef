//! The node store, and the view of it a request works on.
//!
//! Every node has a value, a permission list and an ordered list of children (insertion order,
//! as C xenstored lists them). Each change stamps the node with a new generation; adding or
//! removing a child changes the parent, so a parent's generation also covers its listing.
//! Transactions rely on that to detect conflicts.

use std::collections::HashMap;

use crate::perms::{DomId, Perms};

/// `sizeof(struct xs_tdb_record_hdr)`: a u64 generation and three u32 counts, padded to 8.
const RECORD_HEADER: usize = 24;
/// `sizeof(struct xs_permissions)`: two unsigned ints.
const RECORD_PERM: usize = 8;

/// One node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub value: Vec<u8>,
    pub perms: Perms,
    pub children: Vec<String>,
    /// When the node last changed; set by the store on every put.
    pub generation: u64,
}

impl Node {
    pub fn new(value: Vec<u8>, perms: Perms) -> Node {
        Node {
            value,
            perms,
            children: Vec::new(),
            generation: 0,
        }
    }

    /// What C xenstored 4.17 charges against the node-size quota: the size of its database
    /// record (`write_node_raw`), a 24-byte header (`struct xs_tdb_record_hdr`), 8 bytes
    /// per permission entry (`struct xs_permissions`), the value and the child names with
    /// their nuls.
    pub fn size(&self) -> usize {
        RECORD_HEADER
            + RECORD_PERM * self.perms.entries().len()
            + self.value.len()
            + self.children.iter().map(|c| c.len() + 1).sum::<usize>()
    }

    /// The DIRECTORY listing: child names, each nul-terminated.
    pub fn listing(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for c in &self.children {
            out.extend_from_slice(c.as_bytes());
            out.push(0);
        }
        out
    }
}

/// What requests read and change: the live tree, or a transaction's view of it.
pub(crate) trait Store {
    /// The node at an absolute path.
    fn node(&mut self, path: &str) -> Option<&Node>;
    /// The same without a transaction noting that it looked (for deciding who may see an
    /// event, which must not make the transaction conflict).
    fn peek(&self, path: &str) -> Option<&Node>;
    /// Replaces or creates a node (its generation is set by the store).
    fn put(&mut self, path: &str, node: Node);
    /// Removes one node (not its children).
    fn remove(&mut self, path: &str);
    /// How many nodes `domid` owns.
    fn owned_by(&self, domid: DomId) -> usize;
}

/// The committed tree.
#[derive(Debug)]
pub(crate) struct Tree {
    nodes: HashMap<String, Node>,
    generation: u64,
    owned: HashMap<DomId, usize>,
}

impl Tree {
    /// A tree holding only `/`, owned by dom0 with no access for others.
    pub fn new() -> Tree {
        let mut tree = Tree {
            nodes: HashMap::new(),
            generation: 0,
            owned: HashMap::new(),
        };
        tree.put("/", Node::new(Vec::new(), Perms::owned_by(0)));
        tree
    }

    /// The node at `path`, without side effects.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Every node, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    /// Domains that own at least one node.
    pub fn owners(&self) -> impl Iterator<Item = DomId> + '_ {
        self.owned.iter().filter(|(_, n)| **n > 0).map(|(d, _)| *d)
    }

    /// Marks every entry naming `domid` after a node's owner as ignored (XS_PERM_IGNORE),
    /// in place: the nodes keep their generations, as C xenstored's marking changes no
    /// generation and so makes no transaction conflict.
    pub fn ignore_domain(&mut self, domid: DomId) {
        for node in self.nodes.values_mut() {
            node.perms.ignore_where(|d| d == domid);
        }
    }

    fn count(&mut self, domid: DomId, delta: isize) {
        let n = self.owned.entry(domid).or_insert(0);
        *n = n.saturating_add_signed(delta);
    }
}

impl Store for Tree {
    fn node(&mut self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    fn peek(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    fn put(&mut self, path: &str, mut node: Node) {
        self.generation += 1;
        node.generation = self.generation;
        self.count(node.perms.owner(), 1);
        if let Some(old) = self.nodes.insert(path.to_owned(), node) {
            self.count(old.perms.owner(), -1);
        }
    }

    fn remove(&mut self, path: &str) {
        if let Some(old) = self.nodes.remove(path) {
            self.generation += 1;
            self.count(old.perms.owner(), -1);
        }
    }

    fn owned_by(&self, domid: DomId) -> usize {
        self.owned.get(&domid).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_grow_and_ownership_is_counted() {
        let mut t = Tree::new();
        let g0 = t.get("/").unwrap().generation;
        t.put("/a", Node::new(b"x".to_vec(), Perms::owned_by(3)));
        assert!(t.get("/a").unwrap().generation > g0);
        assert_eq!(t.owned_by(3), 1);
        t.put("/a", Node::new(b"y".to_vec(), Perms::owned_by(4)));
        assert_eq!((t.owned_by(3), t.owned_by(4)), (0, 1));
        t.remove("/a");
        assert_eq!(t.owned_by(4), 0);
        assert!(t.get("/a").is_none());
        assert_eq!(t.owners().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn ignoring_a_domain_keeps_generations() {
        let mut t = Tree::new();
        let perms: Vec<_> = ["n0", "r5"].iter().map(|p| p.parse().unwrap()).collect();
        t.put("/a", Node::new(vec![], Perms::new(perms).unwrap()));
        let before = t.get("/a").unwrap().clone();
        t.ignore_domain(5);
        let after = t.get("/a").unwrap();
        assert_eq!(after.generation, before.generation);
        assert!(after.perms.is_ignored(1));
        assert_eq!(after.perms.entries(), before.perms.entries());
    }
}
