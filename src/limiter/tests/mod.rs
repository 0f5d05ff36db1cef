//! Scenario tests of the limiter, all driven by simulated time: the clock jumps to the next
//! deadline the limiter reports instead of ticking, so long spans cost nothing.

mod config;
mod drift;
mod group;
mod late;
mod props;
mod rate;
mod retune;

use super::{Group, LimitConfig, MemberId, Op, Request, Vbd, VbdConfig};

pub(super) const SEC: u64 = 1_000_000_000;

pub(super) fn vbd_config(pairs: &[(&str, &str)]) -> VbdConfig {
    VbdConfig::parse(pairs.iter().copied()).expect("valid test configuration")
}

/// A read of `bytes` with the caller's `id`.
pub(super) fn read(id: u64, bytes: u64) -> Request {
    Request {
        id,
        op: Op::Read,
        bytes,
    }
}

/// A write of `bytes` with the caller's `id`.
pub(super) fn write(id: u64, bytes: u64) -> Request {
    Request {
        id,
        op: Op::Write,
        bytes,
    }
}

pub(super) fn limit_config(pairs: &[(&str, &str)]) -> LimitConfig {
    LimitConfig::parse(pairs.iter().copied()).expect("valid test configuration")
}

/// A guest that keeps `depth` requests of one kind queued on a standalone VBD.
pub(super) struct Saturating {
    pub vbd: Vbd,
    pub op: Op,
    pub bytes: u64,
    pub depth: usize,
    pub now: u64,
    next_id: u64,
}

impl Saturating {
    pub fn new(config: &VbdConfig, op: Op, bytes: u64) -> Self {
        Saturating {
            vbd: Vbd::new(config, 0),
            op,
            bytes,
            depth: 4,
            now: 0,
            next_id: 0,
        }
    }

    fn top_up(&mut self) {
        while self.vbd.queued() < self.depth {
            let req = Request {
                id: self.next_id,
                op: self.op,
                bytes: self.bytes,
            };
            self.next_id += 1;
            self.vbd.enqueue(req, self.now);
        }
    }

    /// The instant of the next admission; storage completes every request at once.
    pub fn next_admission(&mut self) -> u64 {
        loop {
            self.top_up();
            if self.vbd.poll_admit(self.now).is_some() {
                self.vbd.complete(self.now);
                return self.now;
            }
            let at = self
                .vbd
                .next_admit_at(self.now)
                .expect("a queued request has a deadline");
            assert!(
                at > self.now,
                "deadline {at} not after a refusal at {}",
                self.now
            );
            self.now = at;
        }
    }

    /// Admissions in [0, `end`] (from the current state).
    pub fn count_until(&mut self, end: u64) -> u64 {
        let mut count = 0;
        loop {
            self.top_up();
            match self.vbd.poll_admit(self.now) {
                Some(_) => {
                    self.vbd.complete(self.now);
                    count += 1;
                }
                None => {
                    let at = self.vbd.next_admit_at(self.now).expect("deadline");
                    if at > end {
                        return count;
                    }
                    self.now = at;
                }
            }
        }
    }
}

/// Admit from a group whose members all keep 4 requests queued, until `admissions` requests
/// went or the clock passes `end`; returns the bytes admitted per member.
pub(super) fn saturate_group(
    group: &mut Group,
    members: &[(MemberId, Op, u64)],
    admissions: usize,
    end: u64,
) -> Vec<u64> {
    saturate_group_from(group, members, admissions, 0, end).0
}

/// [`saturate_group`] from the instant `start`; also returns the instant of the last decision.
pub(super) fn saturate_group_from(
    group: &mut Group,
    members: &[(MemberId, Op, u64)],
    admissions: usize,
    start: u64,
    end: u64,
) -> (Vec<u64>, u64) {
    let mut bytes = vec![0u64; members.len()];
    let mut now = start;
    let mut next_id = 0;
    let mut admitted = 0;
    loop {
        for &(id, op, size) in members {
            let vbd = group.member_mut(id).expect("member");
            while vbd.queued() < 4 {
                vbd.enqueue(
                    Request {
                        id: next_id,
                        op,
                        bytes: size,
                    },
                    now,
                );
                next_id += 1;
            }
        }
        match group.poll_admit(now) {
            Some((id, a)) => {
                let slot = members
                    .iter()
                    .position(|m| m.0 == id)
                    .expect("known member");
                bytes[slot] += a.request.bytes;
                group.member_mut(id).expect("member").complete(now);
                admitted += 1;
                if admitted == admissions {
                    return (bytes, now);
                }
            }
            None => {
                let at = group
                    .next_admit_at(now)
                    .expect("a backlogged group has a deadline");
                assert!(at > now);
                if at > end {
                    return (bytes, now);
                }
                now = at;
            }
        }
    }
}

/// Whether `measured` is within `per_mille`/1000 of `expected` (exact integers).
pub(super) fn within(measured: u128, expected: u128, per_mille: u128) -> bool {
    measured.abs_diff(expected) * 1000 <= expected * per_mille
}
