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

    /// What an unprivileged `domid` may do: the owner everything, a listed domain its
    /// entry, anyone else the owner entry's letter.
    pub fn access_for(&self, domid: DomId) -> Access {
        if self.owner() == domid {
            return Access::Both;
        }
        self.0[1..]
            .iter()
            .find(|p| p.domid == domid)
            .unwrap_or(&self.0[0])
            .access
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
        assert_eq!(p.access_for(0), Access::Both);
        assert_eq!(p.access_for(5), Access::Read);
        assert_eq!(p.access_for(6), Access::None);
    }

    #[test]
    fn owner_letter_is_the_default() {
        let p = perms(&["r3", "n7"]);
        assert_eq!(p.access_for(3), Access::Both);
        assert_eq!(p.access_for(4), Access::Read);
        assert_eq!(p.access_for(7), Access::None);
    }

    #[test]
    fn empty_list_is_refused() {
        assert!(Perms::new(vec![]).is_none());
    }
}
