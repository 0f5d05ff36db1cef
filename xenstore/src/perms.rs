//! Node permissions: `<letter><domid>` entries, the first naming the owner.
//!
//! xenstore.txt and xenstore_lib.h: `n` none, `r` read, `w` write, `b` both. The first entry's
//! domid owns the node and its letter is the access of every domain not listed after it.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A domain id (`domid_t`).
pub type DomId = u16;

/// The access an entry grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`: nothing.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    /// Whether reading is allowed.
    pub fn can_read(self) -> bool {
        matches!(self, Access::Read | Access::Both)
    }

    /// Whether writing is allowed.
    pub fn can_write(self) -> bool {
        matches!(self, Access::Write | Access::Both)
    }

    fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }
}

/// One permission entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perm {
    /// What the domain may do.
    pub access: Access,
    /// Which domain.
    pub domid: DomId,
}

/// A permission string that is not `<n|r|w|b><decimal domid>`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("bad permission entry {0:?}")]
pub struct BadPerm(pub String);

impl FromStr for Perm {
    type Err = BadPerm;

    fn from_str(s: &str) -> Result<Perm, BadPerm> {
        let bad = || BadPerm(s.to_owned());
        let mut chars = s.chars();
        let access = match chars.next() {
            Some('n') => Access::None,
            Some('r') => Access::Read,
            Some('w') => Access::Write,
            Some('b') => Access::Both,
            _ => return Err(bad()),
        };
        let digits = chars.as_str();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let domid = digits.parse().map_err(|_| bad())?;
        Ok(Perm { access, domid })
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.access.letter(), self.domid)
    }
}

/// A node's permission list: never empty, the first entry is the owner.
///
/// The server may mark entries after the owner's as ignored, as C xenstored does with
/// XS_PERM_IGNORE for entries naming a domain that does not exist or no longer does: they
/// stay in the list (GET_PERMS reports them) but grant nothing. Lists parsed from the wire
/// have no such marks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Perms {
    entries: Vec<Perm>,
    /// Per entry, whether access checks skip it; never set for the owner's.
    ignored: Vec<bool>,
}

impl Perms {
    /// A list, refused when empty (SET_PERMS needs at least the owner).
    pub fn new(entries: Vec<Perm>) -> Option<Perms> {
        let ignored = vec![false; entries.len()];
        (!entries.is_empty()).then_some(Perms { entries, ignored })
    }

    /// Owned by `domid`, no access for anyone else.
    pub fn owned_by(domid: DomId) -> Perms {
        Perms {
            entries: vec![Perm {
                access: Access::None,
                domid,
            }],
            ignored: vec![false],
        }
    }

    /// The owning domain.
    pub fn owner(&self) -> DomId {
        self.entries[0].domid
    }

    /// All entries, owner first, ignored ones included.
    pub fn entries(&self) -> &[Perm] {
        &self.entries
    }

    /// Whether the entry at `index` is ignored by access checks.
    pub fn is_ignored(&self, index: usize) -> bool {
        self.ignored.get(index).copied().unwrap_or(false)
    }

    /// The same list with the owner replaced (a node an unprivileged domain creates).
    pub fn with_owner(&self, domid: DomId) -> Perms {
        let mut perms = self.clone();
        perms.entries[0].domid = domid;
        perms
    }

    /// What an unprivileged `domid` may do, when it also acts for `target` (XS_SET_TARGET),
    /// as C xenstored's `perm_for_conn` decides: the owner (or the owner's helper)
    /// everything; else the first later entry, not ignored, naming the domain or its
    /// target; else the owner entry's letter.
    pub fn access_for(&self, domid: DomId, target: Option<DomId>) -> Access {
        let names = |d: DomId| d == domid || Some(d) == target;
        if names(self.owner()) {
            return Access::Both;
        }
        self.entries
            .iter()
            .zip(&self.ignored)
            .skip(1)
            .find(|(p, ignored)| !**ignored && names(p.domid))
            .map_or(&self.entries[0], |(p, _)| p)
            .access
    }

    /// Marks the entries after the owner's that name a domain `gone` says is gone as
    /// ignored (C xenstored's XS_PERM_IGNORE); whether any was newly marked. The owner's
    /// entry is never marked.
    pub(crate) fn ignore_where(&mut self, gone: impl Fn(DomId) -> bool) -> bool {
        let mut marked = false;
        for (p, ignored) in self.entries.iter().zip(&mut self.ignored).skip(1) {
            if !*ignored && gone(p.domid) {
                *ignored = true;
                marked = true;
            }
        }
        marked
    }

    /// Drops the entries after the owner's that name `domid`; whether any did.
    pub fn forget(&mut self, domid: DomId) -> bool {
        let before = self.entries.len();
        // The owner entry (index 0) always stays: the list is never empty.
        let kept: Vec<(Perm, bool)> = self
            .entries
            .iter()
            .copied()
            .zip(self.ignored.iter().copied())
            .enumerate()
            .filter(|(i, (p, _))| *i == 0 || p.domid != domid)
            .map(|(_, e)| e)
            .collect();
        (self.entries, self.ignored) = kept.into_iter().unzip();
        self.entries.len() != before
    }

    /// The GET_PERMS reply payload: each entry nul-terminated, ignored ones included (C
    /// xenstored's `xs_perm_to_string` masks XS_PERM_IGNORE out).
    pub fn to_payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.entries {
            out.extend_from_slice(p.to_string().as_bytes());
            out.push(0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(list: &[&str]) -> Perms {
        Perms::new(list.iter().map(|s| s.parse().unwrap()).collect()).unwrap()
    }

    #[test]
    fn parse_and_print() {
        for s in ["n0", "r5", "w65535", "b12"] {
            assert_eq!(s.parse::<Perm>().unwrap().to_string(), s);
        }
        for s in ["", "x1", "r", "r-1", "r65536", "r 1", "r1a"] {
            assert!(s.parse::<Perm>().is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn xenstore_txt_example() {
        // n0, r5: owned by dom0, nobody else except dom5, read-only.
        let p = perms(&["n0", "r5"]);
        assert_eq!(p.access_for(0, None), Access::Both);
        assert_eq!(p.access_for(5, None), Access::Read);
        assert_eq!(p.access_for(6, None), Access::None);
    }

    #[test]
    fn owner_letter_is_the_default() {
        let p = perms(&["r3", "n7"]);
        assert_eq!(p.access_for(3, None), Access::Both);
        assert_eq!(p.access_for(4, None), Access::Read);
        assert_eq!(p.access_for(7, None), Access::None);
    }

    #[test]
    fn a_target_acts_as_the_domain_it_serves() {
        // perm_for_conn: an entry naming the connection's target grants its access, and
        // a node owned by the target is fully accessible.
        let p = perms(&["n0", "r5"]);
        assert_eq!(p.access_for(9, None), Access::None);
        assert_eq!(p.access_for(9, Some(5)), Access::Read);
        assert_eq!(perms(&["n5"]).access_for(9, Some(5)), Access::Both);
    }

    #[test]
    fn forget_drops_entries_but_never_the_owner() {
        let mut p = perms(&["n3", "r5", "b3", "w5"]);
        assert!(p.forget(5));
        assert_eq!(p, perms(&["n3", "b3"]));
        assert!(p.forget(3));
        assert_eq!(p, perms(&["n3"]));
        assert!(!p.forget(3));
    }

    #[test]
    fn ignored_entries_grant_nothing_but_stay_listed() {
        // perm_for_conn skips XS_PERM_IGNORE entries: the domain gets the owner's letter.
        let mut p = perms(&["r0", "b5", "n6", "w5"]);
        assert!(p.ignore_where(|d| d == 5));
        assert!(!p.ignore_where(|d| d == 5), "already marked");
        assert_eq!(p.access_for(5, None), Access::Read);
        assert_eq!(p.access_for(6, None), Access::None);
        assert_eq!(p.access_for(9, Some(5)), Access::Read);
        assert_eq!(p.to_payload(), b"r0\0b5\0n6\0w5\0");
        assert!(p.is_ignored(1) && !p.is_ignored(2) && p.is_ignored(3));
        // The owner's entry is never ignored.
        let mut q = perms(&["n5"]);
        assert!(!q.ignore_where(|d| d == 5));
        assert_eq!(q.access_for(5, None), Access::Both);
    }

    #[test]
    fn forget_keeps_the_marks_of_the_rest() {
        let mut p = perms(&["n0", "r5", "r6"]);
        p.ignore_where(|d| d == 6);
        p.forget(5);
        assert_eq!(p.entries().len(), 2);
        assert!(p.is_ignored(1));
    }

    #[test]
    fn empty_list_is_refused() {
        assert!(Perms::new(vec![]).is_none());
    }
}
