//! A VBD's QoS keys (docs/qos.md), read from its backend directory at connect and again on
//! every change. DESIGN "Where QoS lives in xenstore": the toolstack makes that directory the
//! backend's and readable, not writable, by the guest; a key set a guest could have written is
//! refused whole, as is one that does not parse. A refusal is published in `qos-error` beside
//! the keys (at connect the VBD is then served without limits; later, the last good set stays
//! in force); a good set removes a stale `qos-error`. A set naming a throttle group that is not
//! declared is refused too, until the group appears.

use std::collections::BTreeMap;

use xenstore_wire::perms::Perms;

use super::store::{Store, StoreError};
use crate::limiter::{ConfigError, LimitConfig, VbdConfig};
use crate::platform::DomId;

/// Where a refusal is published, relative to the backend directory.
pub const QOS_ERROR: &str = "qos-error";

/// Why a VBD's QoS keys are not honoured.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{node} is writable by the guest (domain {guest})")]
    GuestWritable { node: String, guest: u16 },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("group {0} does not exist")]
    NoGroup(String),
}

/// Whether `name`, a key of a backend directory, is one of docs/qos.md's or looks like one
/// (a misspelt limit such as `iops-reed` is refused as an unknown key, not ignored).
pub fn is_qos_key(name: &str) -> bool {
    const FAMILIES: [&str; 3] = ["tokens-", "iops-", "bps-"];
    LimitConfig::KEYS.contains(&name)
        || VbdConfig::EXTRA_KEYS.contains(&name)
        || FAMILIES.iter().any(|family| name.starts_with(family))
}

/// A set of keys judged good.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    pub config: VbdConfig,
    /// The keys as written, those set only: what the control socket shows in force.
    pub keys: BTreeMap<String, String>,
}

fn guest_writable(perms: &Perms, guest: DomId) -> bool {
    perms.access_for(guest.0, None).can_write()
}

/// Reads the QoS keys of `dir`, whose guest is `guest`, and publishes the verdict; `exists`
/// says which throttle groups are declared.
pub fn read(
    store: &mut Store,
    dir: &str,
    guest: DomId,
    exists: impl Fn(&str) -> bool,
) -> Result<Result<Accepted, Refusal>, StoreError> {
    let verdict = judge(store, dir, guest)?.and_then(|accepted| match &accepted.config.group {
        Some(group) if !exists(group) => Err(Refusal::NoGroup(group.clone())),
        _ => Ok(accepted),
    });
    publish(store, dir, verdict.as_ref().err())?;
    Ok(verdict)
}

/// Publishes a refusal in `dir`'s `qos-error`, or removes a stale one; a directory removed
/// meanwhile is not created again.
pub fn publish(
    store: &mut Store,
    dir: &str,
    refusal: Option<&impl std::fmt::Display>,
) -> Result<(), StoreError> {
    match refusal {
        None => store.remove(&format!("{dir}/{QOS_ERROR}")),
        Some(refusal) => store
            .write_keys(dir, &[(QOS_ERROR, refusal.to_string())])
            .map(drop),
    }
}

fn judge(
    store: &mut Store,
    dir: &str,
    guest: DomId,
) -> Result<Result<Accepted, Refusal>, StoreError> {
    // Gone meanwhile: the VBD is being removed, and no limit matters.
    let Some((perms, keys)) = store.read_children(dir, is_qos_key)? else {
        return Ok(Ok(Accepted::default()));
    };
    // The directory first: if the guest may create keys there, none can be trusted.
    let writable = std::iter::once((dir.to_owned(), &perms))
        .chain(keys.iter().map(|k| (format!("{dir}/{}", k.name), &k.perms)))
        .find(|(_, perms)| guest_writable(perms, guest));
    if let Some((node, _)) = writable {
        return Ok(Err(Refusal::GuestWritable {
            node,
            guest: guest.0,
        }));
    }
    // An emptied key (how docs/qos.md removes a key in one write) is as if never there.
    let set = || keys.iter().filter(|k| !k.value.trim().is_empty());
    let pairs = set().map(|k| (k.name.as_str(), k.value.as_str()));
    Ok(VbdConfig::parse(pairs)
        .map(|config| Accepted {
            config,
            keys: set().map(|k| (k.name.clone(), k.value.clone())).collect(),
        })
        .map_err(Refusal::from))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use xenstore_wire::perms::{Access, Perm};

    /// Permissions from (domid, access) entries, the first being the owner's.
    pub(in crate::xenbus::driver) fn perms(entries: &[(u16, Access)]) -> Perms {
        Perms::new(
            entries
                .iter()
                .map(|&(domid, access)| Perm { access, domid })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn only_what_the_guest_could_write_is_refused() {
        let guest = DomId(5);
        // libxl's backend directory: dom0's, the guest may read.
        assert!(!guest_writable(
            &perms(&[(0, Access::None), (5, Access::Read)]),
            guest
        ));
        // Owned by the guest, or a write entry for it, or everyone may write.
        assert!(guest_writable(&perms(&[(5, Access::None)]), guest));
        assert!(guest_writable(
            &perms(&[(0, Access::None), (5, Access::Both)]),
            guest
        ));
        assert!(guest_writable(&perms(&[(0, Access::Write)]), guest));
        // Another guest's write entry is not this guest's.
        assert!(!guest_writable(
            &perms(&[(0, Access::None), (6, Access::Write)]),
            guest
        ));
    }

    #[test]
    fn qos_keys_are_those_of_docs_qos() {
        for key in [
            "tokens-refill",
            "tokens-max",
            "iops-total",
            "bps-write-max-length",
            "group",
            "iops-reed",
        ] {
            assert!(is_qos_key(key), "{key}");
        }
        for key in ["state", "mode", "physical-device-path", QOS_ERROR] {
            assert!(!is_qos_key(key), "{key}");
        }
    }
}
