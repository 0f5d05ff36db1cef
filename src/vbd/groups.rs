//! A worker's throttle groups (DESIGN "Workers and groups"): each [`limiter::Group`] under its
//! name, and which of the worker's VBDs each member is, so that what a group admits reaches
//! the right VBD.

use std::collections::HashMap;

use crate::limiter::{self, Admitted, GroupStats, LimitConfig, MemberId};
use crate::xenbus::DeviceId;

/// A group's place on its worker; stable until the group is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupKey(usize);

/// A VBD's membership of a group on its worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Membership {
    pub group: GroupKey,
    pub member: MemberId,
}

/// Who a member is: the worker's index of the VBD, and its id for reports.
#[derive(Clone, Copy, Debug)]
struct Seat {
    vbd: usize,
    id: DeviceId,
}

struct Named {
    name: String,
    group: limiter::Group,
    seats: HashMap<MemberId, Seat>,
}

/// A group's counters and members, for logs and the control socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupReport {
    pub name: String,
    pub stats: GroupStats,
    /// Each member and its weight, in the order they joined.
    pub members: Vec<(DeviceId, u32)>,
}

/// The groups of one worker.
#[derive(Default)]
pub struct Groups {
    slots: Vec<Option<Named>>,
    /// Reused by [`Groups::admit_due`].
    admitted: Vec<(MemberId, Admitted)>,
}

impl Groups {
    /// The group called `name`, if this worker has it.
    pub fn find(&self, name: &str) -> Option<GroupKey> {
        let found = self
            .slots
            .iter()
            .position(|slot| slot.as_ref().is_some_and(|named| named.name == name))?;
        Some(GroupKey(found))
    }

    /// The group's name.
    pub fn name(&self, key: GroupKey) -> Option<&str> {
        Some(&self.slots.get(key.0)?.as_ref()?.name)
    }

    /// Creates the group `name` at `now` (its buckets start full), or retunes it if it exists;
    /// whether it was created.
    pub fn set(&mut self, name: &str, limits: &LimitConfig, now: u64) -> bool {
        if let Some(key) = self.find(name) {
            if let Some(named) = self.slots[key.0].as_mut() {
                named.group.retune(limits, now);
            }
            return false;
        }
        let named = Some(Named {
            name: name.to_owned(),
            group: limiter::Group::new(limits, now),
            seats: HashMap::new(),
        });
        match self.slots.iter().position(Option::is_none) {
            Some(free) => self.slots[free] = named,
            None => self.slots.push(named),
        }
        true
    }

    /// Removes an empty group, with its last report; `None` if it has members still (the
    /// worker takes them out first) or is gone.
    pub fn remove(&mut self, key: GroupKey, now: u64) -> Option<GroupReport> {
        let named = self.slots.get(key.0)?.as_ref()?;
        if !named.seats.is_empty() {
            return None;
        }
        let report = self.report(key, now);
        self.slots[key.0] = None;
        report
    }

    /// The worker's VBDs that are members of `key`, by their index on the worker.
    pub fn member_vbds(&self, key: GroupKey) -> Vec<usize> {
        let Some(Some(named)) = self.slots.get(key.0) else {
            return Vec::new();
        };
        named.seats.values().map(|seat| seat.vbd).collect()
    }

    /// Puts the limiter of VBD `id` (the worker's `vbd`) into the group, at a request boundary;
    /// the limiter back if the group is gone.
    pub fn join(
        &mut self,
        key: GroupKey,
        limiter: Box<limiter::Vbd>,
        vbd: usize,
        id: DeviceId,
    ) -> Result<Membership, Box<limiter::Vbd>> {
        let Some(Some(named)) = self.slots.get_mut(key.0) else {
            return Err(limiter);
        };
        let member = named.group.add_member(*limiter);
        named.seats.insert(member, Seat { vbd, id });
        Ok(Membership { group: key, member })
    }

    /// Takes a member's limiter out of its group, with its queue and own buckets.
    pub fn leave(&mut self, membership: Membership) -> Option<Box<limiter::Vbd>> {
        let named = self.slots.get_mut(membership.group.0)?.as_mut()?;
        named.seats.remove(&membership.member);
        named.group.remove_member(membership.member).map(Box::new)
    }

    /// A member's limiter, to read.
    pub fn member(&self, membership: Membership) -> Option<&limiter::Vbd> {
        let named = self.slots.get(membership.group.0)?.as_ref()?;
        named.group.member(membership.member)
    }

    /// Zeroes the counters of the groups whose names `selected` picks (not their members');
    /// returns how many.
    pub fn reset_counters(&mut self, selected: impl Fn(&str) -> bool, now: u64) -> usize {
        let mut count = 0;
        for named in self.slots.iter_mut().flatten() {
            if selected(&named.name) {
                named.group.reset_counters(now);
                count += 1;
            }
        }
        count
    }

    /// A member's limiter, to enqueue, complete or retune.
    pub fn member_mut(&mut self, membership: Membership) -> Option<&mut limiter::Vbd> {
        let named = self.slots.get_mut(membership.group.0)?.as_mut()?;
        named.group.member_mut(membership.member)
    }

    /// Admits what every group allows by `now`, each request with the worker's index of the VBD
    /// it belongs to; returns when a group next admits, for the worker's timer.
    pub fn admit_due(&mut self, now: u64, admitted: &mut Vec<(usize, Admitted)>) -> Option<u64> {
        let mut next: Option<u64> = None;
        for named in self.slots.iter_mut().flatten() {
            let at = named.group.poll_admit_due(now, &mut self.admitted);
            for (member, request) in self.admitted.drain(..) {
                // Every member has a seat: both are added and removed together.
                if let Some(seat) = named.seats.get(&member) {
                    admitted.push((seat.vbd, request));
                }
            }
            if let Some(at) = at {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }

    /// Every group's counters and members at `now`.
    pub fn reports(&self, now: u64) -> Vec<GroupReport> {
        (0..self.slots.len())
            .filter_map(|i| self.report(GroupKey(i), now))
            .collect()
    }

    fn report(&self, key: GroupKey, now: u64) -> Option<GroupReport> {
        let named = self.slots.get(key.0)?.as_ref()?;
        let members = named
            .group
            .members()
            .filter_map(|(member, vbd)| Some((named.seats.get(&member)?.id, vbd.weight())))
            .collect();
        Some(GroupReport {
            name: named.name.clone(),
            stats: named.group.stats(now),
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::{Op, Request, VbdConfig};
    use crate::platform::DomId;

    fn id(domid: u16) -> DeviceId {
        DeviceId {
            frontend_id: DomId(domid),
            devid: 51712,
        }
    }

    fn limiter(weight: &str, requests: u64) -> Box<limiter::Vbd> {
        let config = VbdConfig::parse([("weight", weight)]).unwrap();
        let mut vbd = limiter::Vbd::new(&config, 0);
        for n in 0..requests {
            let request = Request {
                id: n,
                op: Op::Read,
                bytes: 4096,
            };
            vbd.enqueue(request, 0);
        }
        Box::new(vbd)
    }

    fn strict(rate: &str) -> LimitConfig {
        LimitConfig::parse([("tokens-refill", rate), ("tokens-max", "0")]).unwrap()
    }

    #[test]
    fn what_a_group_admits_reaches_the_vbd_of_each_member() {
        let mut groups = Groups::default();
        assert!(groups.set("gold", &strict("1000"), 0));
        assert!(groups.set("silver", &strict("10"), 0));
        let gold = groups.find("gold").unwrap();
        let silver = groups.find("silver").unwrap();
        // The worker's VBDs 4 and 7 in gold (3:1), VBD 2 in silver.
        let a = groups.join(gold, limiter("3", 100), 4, id(1)).unwrap();
        let b = groups.join(gold, limiter("1", 100), 7, id(2)).unwrap();
        let c = groups.join(silver, limiter("1", 100), 2, id(3)).unwrap();
        let member = |v| match v {
            4 => a,
            7 => b,
            _ => c,
        };
        let mut routed = Vec::new();
        let mut now = 0;
        let mut next = Some(0);
        // 40 ms: gold admits 40 (1 ms apart), silver 1 (100 ms apart).
        while let Some(at) = next.filter(|&at| at < 40_000_000) {
            now = at;
            let seen = routed.len();
            next = groups.admit_due(now, &mut routed);
            // Admitted requests complete at once: nothing else holds them.
            for &(v, _) in &routed[seen..] {
                groups.member_mut(member(v)).unwrap().complete(now);
            }
        }
        let to = |v| routed.iter().filter(|(w, _)| *w == v).count();
        assert_eq!((to(4), to(7), to(2)), (30, 10, 1), "until {now}");
        assert!(next.is_some_and(|at| at >= 40_000_000));
        // Leaving hands back the limiter with what it still holds; the group cannot go
        // while it has members.
        assert!(groups.remove(gold, now).is_none());
        let back = groups.leave(a).unwrap();
        assert_eq!(back.queued(), 70);
        let report = groups.reports(now);
        assert_eq!(report.len(), 2);
        assert_eq!(report[0].name, "gold");
        assert_eq!(report[0].members, vec![(id(2), 1)]);
        assert_eq!(report[0].stats.counters.requests.read, 40);
        assert_eq!(report[1].members, vec![(id(3), 1)]);
    }

    #[test]
    fn a_group_is_retuned_by_name_and_removed_once_empty() {
        let mut groups = Groups::default();
        assert!(groups.set("gold", &strict("1000"), 0));
        assert!(!groups.set("gold", &strict("10"), 5));
        let gold = groups.find("gold").unwrap();
        let m = groups.join(gold, limiter("1", 0), 0, id(1)).unwrap();
        assert_eq!(groups.member_vbds(gold), vec![0]);
        groups.leave(m).unwrap();
        let last = groups.remove(gold, 10).unwrap();
        assert_eq!(last.name, "gold");
        assert!(last.members.is_empty());
        assert_eq!(groups.find("gold"), None);
        // Joining a group that is gone hands the limiter back.
        assert!(groups.join(gold, limiter("1", 0), 0, id(1)).is_err());
    }
}
