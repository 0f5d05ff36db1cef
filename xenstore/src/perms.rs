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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Perms(Vec<Perm>);

impl Perms {
    /// A list, refused when empty (SET_PERMS needs at least the owner).
    pub fn new(entries: Vec<Perm>) -> Option<Perms> {
        (!entries.is_empty()).then_some(Perms(entries))
    }

    /// Owned by `domid`, no access for anyone else.
    pub fn owned_by(domid: DomId) -> Perms {
        Perms(vec![Perm {
            access: Access::None,
            domid,
        }])
    }

    /// The owning domain.
    pub fn owner(&self) -> DomId {
        self.0[0].domid
    }

    /// All entries, owner first.
    pub fn entries(&self) -> &[Perm] {
        &self.0
    }

    /// The same list with the owner replaced (a node an unprivileged domain creates).
    pub fn with_owner(&self, domid: DomId) -> Perms {
        let mut entries = self.0.clone();
        entries[0].domid = domid;
        Perms(entries)
    }

    /// What an unprivileged `domid` may do, when it also acts for `target` (XS_SET_TARGET),
    /// as C xenstored's `perm_for_conn` decides: the owner (or the owner's helper)
    /// everything; else the first later entry naming the domain or its target; else the
    /// owner entry's letter.
    pub fn access_for(&self, domid: DomId, target: Option<DomId>) -> Access {
        let names = |d: DomId| d == domid || Some(d) == target;
        if names(self.owner()) {
            return Access::Both;
        }
        self.0[1..]
            .iter()
            .find(|p| names(p.domid))
            .unwrap_or(&self.0[0])
            .access
    }

    /// Drops the entries after the owner's that name `domid`; whether any did.
    pub fn forget(&mut self, domid: DomId) -> bool {
        let before = self.0.len();
        let mut index = 0;
        // The owner entry (index 0) always stays: the list is never empty.
        self.0.retain(|p| {
            index += 1;
            index == 1 || p.domid != domid
        });
        self.0.len() != before
    }

    /// The GET_PERMS reply payload: each entry nul-terminated.
    pub fn to_payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.0 {
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
    fn empty_list_is_refused() {
        assert!(Perms::new(vec![]).is_none());
    }
}
