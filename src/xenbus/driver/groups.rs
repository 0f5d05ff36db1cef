//! Throttle groups declared in xenstore (docs/qos.md "Throttle groups"): one directory per group
//! below `/local/domain/<backend>/tokenback/groups/`, holding the same rate keys as a VBD. Each
//! change reads a group's keys again in one transaction; a refused set leaves its reason in the
//! group's `qos-error` and the last good set in force (a group created with a refused set has no
//! limits). The tree is the backend domain's own: a group that another domain could write is
//! refused whole, as a VBD's keys a guest could write are.

use std::collections::BTreeMap;

use slog::{warn, Logger};
use xenstore_wire::perms::Perms;

use super::qos::{self, QOS_ERROR};
use super::store::{Store, StoreError};
use crate::limiter::{parse_group, ConfigError, LimitConfig};
use crate::platform::DomId;
use crate::stats::QosInForce;

/// Why a group's keys are not honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{node} is writable by {by}")]
    Writable { node: String, by: String },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// What a change did to the groups, for the VBDs that name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Created with these limits.
    Created(String, LimitConfig),
    /// New limits for an existing group.
    Retuned(String, LimitConfig),
    /// The directory is gone.
    Removed(String),
}

/// A group's keys in force, and why the latest set was refused if it was.
struct InForce {
    limits: LimitConfig,
    /// The keys of the set in force as written (only those set), for the control socket.
    keys: BTreeMap<String, String>,
    /// Logged once per reason, not on every watch event of a bad set.
    refused: Option<String>,
}

/// The groups the driver knows, as declared in xenstore.
pub struct Groups {
    root: String,
    backend: DomId,
    groups: BTreeMap<String, InForce>,
    log: Logger,
}

/// Who besides `backend` may write a node with `perms`: its owner, every domain (the first
/// entry's access is that of domains not listed), or a listed domain.
fn writable_by_another(perms: &Perms, backend: DomId) -> Option<String> {
    if perms.owner() != backend.0 {
        return Some(format!("its owner, domain {}", perms.owner()));
    }
    let (first, listed) = perms.entries().split_first()?;
    if first.access.can_write() {
        return Some("every domain".to_owned());
    }
    let writer = listed
        .iter()
        .find(|e| e.domid != backend.0 && e.access.can_write())?;
    Some(format!("domain {}", writer.domid))
}

impl Groups {
    pub fn new(root: String, backend: DomId, log: Logger) -> Self {
        Groups {
            root,
            backend,
            groups: BTreeMap::new(),
            log,
        }
    }

    /// The directory watched.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Every declared group's keys in force and refusal, for the control socket.
    pub fn shown(&self) -> BTreeMap<String, QosInForce> {
        (self.groups.iter())
            .map(|(name, g)| {
                let shown = QosInForce {
                    keys: g.keys.clone(),
                    error: g.refused.clone(),
                };
                (name.clone(), shown)
            })
            .collect()
    }

    /// Whether the group `name` is declared.
    pub fn exists(&self, name: &str) -> bool {
        self.groups.contains_key(name)
    }

    /// A watch event on `path`: reads the group it is about again, or every group when the
    /// root itself changed. Our own `qos-error` writes are nothing new.
    pub fn changed(&mut self, store: &mut Store, path: &str) -> Result<Vec<Change>, StoreError> {
        let below = path
            .strip_prefix(self.root.as_str())
            .and_then(|rest| rest.strip_prefix('/'));
        let Some(below) = below else {
            return self.rescan(store);
        };
        let (name, key) = below.split_once('/').unwrap_or((below, ""));
        if key == QOS_ERROR {
            return Ok(Vec::new());
        }
        Ok(self.judge(store, name)?.into_iter().collect())
    }

    /// Lists the groups' directory: reads every group, notes those gone.
    fn rescan(&mut self, store: &mut Store) -> Result<Vec<Change>, StoreError> {
        let present = store.list(&self.root)?;
        let gone: Vec<String> = (self.groups.keys())
            .filter(|name| !present.contains(name))
            .cloned()
            .collect();
        let mut changes = Vec::new();
        for name in gone.iter().chain(&present) {
            changes.extend(self.judge(store, name)?);
        }
        Ok(changes)
    }

    /// Reads the group `name` again.
    fn judge(&mut self, store: &mut Store, name: &str) -> Result<Option<Change>, StoreError> {
        // A directory whose name no VBD could give is nobody's group.
        if !matches!(parse_group(name), Ok(Some(valid)) if valid == name) {
            return Ok(None);
        }
        let dir = format!("{}/{name}", self.root);
        let Some((perms, keys)) = store.read_children(&dir, |key| key != QOS_ERROR)? else {
            return Ok(self
                .groups
                .remove(name)
                .map(|_| Change::Removed(name.to_owned())));
        };
        let writable = std::iter::once((dir.clone(), &perms))
            .chain(keys.iter().map(|k| (format!("{dir}/{}", k.name), &k.perms)))
            .find_map(|(node, perms)| Some((node, writable_by_another(perms, self.backend)?)));
        // An emptied key is as if never there, as for a VBD.
        let set = || keys.iter().filter(|k| !k.value.trim().is_empty());
        let verdict = match writable {
            Some((node, by)) => Err(Refusal::Writable { node, by }),
            None => LimitConfig::parse(set().map(|k| (k.name.as_str(), k.value.as_str())))
                .map_err(Refusal::from),
        };
        qos::publish(store, &dir, verdict.as_ref().err())?;
        let (limits, refused) = match verdict {
            Ok(limits) => {
                let shown = set().map(|k| (k.name.clone(), k.value.clone())).collect();
                (Some((limits, shown)), None)
            }
            Err(refusal) => (None, Some(refusal.to_string())),
        };
        Ok(self.apply(name, limits, refused))
    }

    /// Applies a verdict: good limits replace those in force, a refusal keeps them.
    fn apply(
        &mut self,
        name: &str,
        limits: Option<(LimitConfig, BTreeMap<String, String>)>,
        refused: Option<String>,
    ) -> Option<Change> {
        let before = self.groups.get(name).and_then(|g| g.refused.as_ref());
        if let Some(reason) = refused.as_ref().filter(|r| Some(*r) != before) {
            warn!(self.log, "group keys refused: the last good set stays in force";
                "group" => name, "reason" => reason);
        }
        match self.groups.get_mut(name) {
            None => {
                let (limits, keys) = limits.unwrap_or_default();
                let in_force = InForce {
                    limits: limits.clone(),
                    keys,
                    refused,
                };
                self.groups.insert(name.to_owned(), in_force);
                Some(Change::Created(name.to_owned(), limits))
            }
            Some(in_force) => {
                in_force.refused = refused;
                let (limits, keys) = limits?;
                in_force.keys = keys;
                if limits == in_force.limits {
                    return None;
                }
                in_force.limits = limits.clone();
                Some(Change::Retuned(name.to_owned(), limits))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::qos::tests::perms;
    use super::*;
    use xenstore_wire::perms::Access;

    #[test]
    fn only_the_backend_may_write_a_group() {
        let dom0 = DomId(0);
        // xenstore-write's default in dom0's tree: dom0's, nobody else's.
        assert_eq!(
            writable_by_another(&perms(&[(0, Access::None)]), dom0),
            None
        );
        assert_eq!(
            writable_by_another(&perms(&[(0, Access::None), (5, Access::Read)]), dom0),
            None
        );
        assert_eq!(
            writable_by_another(&perms(&[(5, Access::None)]), dom0).as_deref(),
            Some("its owner, domain 5")
        );
        assert_eq!(
            writable_by_another(&perms(&[(0, Access::Both)]), dom0).as_deref(),
            Some("every domain")
        );
        assert_eq!(
            writable_by_another(&perms(&[(0, Access::Read), (7, Access::Write)]), dom0).as_deref(),
            Some("domain 7")
        );
    }

    #[test]
    fn a_refused_set_keeps_the_limits_in_force() {
        let log = Logger::root(slog::Discard, slog::o!());
        let mut groups = Groups::new("/g".into(), DomId(0), log);
        let keyed = |value: &str| {
            let keys = BTreeMap::from([("iops-total".to_owned(), value.to_owned())]);
            (LimitConfig::parse([("iops-total", value)]).unwrap(), keys)
        };
        let (a, b) = (keyed("1000"), keyed("500"));
        assert_eq!(
            groups.apply("g1", Some(a.clone()), None),
            Some(Change::Created("g1".into(), a.0.clone()))
        );
        assert_eq!(groups.apply("g1", Some(a.clone()), None), None);
        assert_eq!(groups.apply("g1", None, Some("bad".into())), None);
        assert_eq!(groups.groups["g1"].refused.as_deref(), Some("bad"));
        assert_eq!(groups.groups["g1"].limits, a.0);
        // What the control socket shows: the set in force and the refusal.
        let shown = &groups.shown()["g1"];
        assert_eq!(shown.keys, a.1);
        assert_eq!(shown.error.as_deref(), Some("bad"));
        assert_eq!(
            groups.apply("g1", Some(b.clone()), None),
            Some(Change::Retuned("g1".into(), b.0))
        );
        assert_eq!(groups.groups["g1"].refused, None);
        assert_eq!(groups.shown()["g1"].keys, b.1);
        // Created with a refused set: it exists, without limits.
        assert_eq!(
            groups.apply("g2", None, Some("bad".into())),
            Some(Change::Created("g2".into(), LimitConfig::default()))
        );
        assert!(groups.exists("g2"));
    }
}
