//! Late timers (DESIGN, "Late timers"): a worker that wakes late takes its decisions at the
//! instants they were due, up to 1 ms back, so a late wake-up loses nothing; a longer stall is
//! lost rather than released as a burst.

use super::*;
use crate::limiter::{Admitted, MAKE_UP_NS};

const US: u64 = 1_000;

/// A VBD paced to one request every 100 us, with `queued` requests waiting from instant 0.
fn paced_every_100_us(queued: u64) -> Vbd {
    let keys = [("tokens-refill", "10000"), ("tokens-max", "0")];
    let mut vbd = Vbd::new(&vbd_config(&keys), 0);
    for id in 0..queued {
        vbd.enqueue(read(id, 4096), 0);
    }
    vbd
}

fn instants(admitted: &[Admitted]) -> Vec<u64> {
    admitted.iter().map(|a| a.at).collect()
}

#[test]
fn a_wake_up_300_us_late_admits_everything_that_was_due_at_its_instant() {
    let mut vbd = paced_every_100_us(20);
    let mut admitted = Vec::new();
    assert_eq!(vbd.poll_admit_due(0, &mut admitted), Some(100 * US));
    // The timer was armed for 100 us and fired at 400 us.
    let next = vbd.poll_admit_due(400 * US, &mut admitted);
    assert_eq!(
        instants(&admitted),
        [0, 100 * US, 200 * US, 300 * US, 400 * US]
    );
    assert_eq!(admitted[1].delay_ns, 100 * US, "held until it was due");
    assert_eq!(next, Some(500 * US), "the schedule goes on unshifted");
    // poll_admit decides at `now` only: one request, and the schedule shifts.
    let mut late = paced_every_100_us(20);
    assert!(late.poll_admit(0).is_some());
    assert!(late.poll_admit(400 * US).is_some());
    assert_eq!(late.poll_admit(400 * US), None);
    assert_eq!(late.next_admit_at(400 * US), Some(500 * US));
}

#[test]
fn a_wake_up_5_ms_late_makes_up_only_its_last_millisecond() {
    let mut vbd = paced_every_100_us(100);
    let mut admitted = Vec::new();
    vbd.poll_admit_due(0, &mut admitted);
    let now = 5_100 * US;
    let next = vbd.poll_admit_due(now, &mut admitted);
    // Due since 100 us, but decided no earlier than now - 1 ms, then every 100 us up to now.
    let expected: Vec<u64> = std::iter::once(0)
        .chain((0..=10).map(|k| now - MAKE_UP_NS + k * 100 * US))
        .collect();
    assert_eq!(instants(&admitted), expected);
    assert_eq!(next, Some(now + 100 * US));
}

#[test]
fn nothing_is_admitted_before_it_arrived_or_before_a_slot_was_freed() {
    let keys = [
        ("tokens-refill", "10000"),
        ("tokens-max", "0"),
        ("max-inflight", "1"),
    ];
    let mut vbd = Vbd::new(&vbd_config(&keys), 0);
    vbd.enqueue(read(0, 4096), 0);
    vbd.enqueue(read(1, 4096), 0);
    let mut admitted = Vec::new();
    assert_eq!(vbd.poll_admit_due(0, &mut admitted), None, "at the cap");
    // The slot is freed at 350 us; the request was due by its tokens at 100 us.
    vbd.complete(350 * US);
    vbd.enqueue(read(2, 4096), 400 * US);
    assert_eq!(vbd.poll_admit_due(400 * US, &mut admitted), None);
    assert_eq!(instants(&admitted), [0, 350 * US]);
    vbd.complete(400 * US);
    // Request 2 arrived at 400 us: due by its tokens at 450 us, not earlier.
    assert_eq!(vbd.poll_admit_due(900 * US, &mut admitted), None);
    assert_eq!(instants(&admitted), [0, 350 * US, 450 * US]);
}

#[test]
fn no_decision_is_taken_before_a_retune() {
    let mut vbd = paced_every_100_us(20);
    let mut admitted = Vec::new();
    vbd.poll_admit_due(0, &mut admitted);
    // Retuned at 250 us, before the late worker took what was due at 100 and 200 us.
    let faster = [("tokens-refill", "20000"), ("tokens-max", "0")];
    vbd.retune(&vbd_config(&faster), 250 * US);
    vbd.poll_admit_due(400 * US, &mut admitted);
    // By 250 us the bucket (tokens-max=0) is full again: one request then, and the next ones
    // every 50 us at the new rate.
    assert_eq!(
        instants(&admitted),
        [0, 250 * US, 300 * US, 350 * US, 400 * US]
    );
}

#[test]
fn a_worker_always_300_us_late_still_gets_exactly_the_16_mib_burst() {
    // A disk of 4 MiB/s with bursts of 16 MiB/s for 2 s, 32 KiB writes, 32 in the ring.
    let keys = [
        ("bps-write", "4194304"),
        ("bps-write-max", "16777216"),
        ("bps-write-max-length", "2"),
    ];
    let run = |due: bool| {
        let mut vbd = Vbd::new(&vbd_config(&keys), 0);
        let (mut now, mut next_id, mut bytes) = (0, 0, 0);
        let mut admitted = Vec::new();
        loop {
            while vbd.queued() < 32 {
                vbd.enqueue(write(next_id, 32 << 10), now);
                next_id += 1;
            }
            admitted.clear();
            let wake = if due {
                vbd.poll_admit_due(now, &mut admitted)
            } else {
                admitted.extend(std::iter::from_fn(|| vbd.poll_admit(now)));
                vbd.next_admit_at(now)
            };
            for a in &admitted {
                vbd.complete(now);
                if a.at <= SEC {
                    bytes += a.request.bytes;
                }
            }
            match wake {
                Some(at) if at <= SEC => now = at + 300 * US,
                _ => return bytes,
            }
        }
    };
    // 513 writes of 32 KiB in [0, 1 s]: one every 1/512 s, the last at exactly 1 s.
    assert_eq!(run(true), 513 * (32 << 10));
    // Deciding at the late `now` loses 300 us per request: 13.9 MiB/s instead of 16.
    assert_eq!(run(false), 444 * (32 << 10));
}

#[test]
fn a_group_makes_up_a_late_wake_up_across_its_members() {
    let limits = limit_config(&[("tokens-refill", "10000"), ("tokens-max", "0")]);
    let mut group = Group::new(&limits, 0);
    let members: Vec<MemberId> = (0..2)
        .map(|_| group.add_member(Vbd::new(&VbdConfig::default(), 0)))
        .collect();
    // The first member sends 2 requests, the second 20.
    for (n, &id) in members.iter().enumerate() {
        for k in 0..2 + 18 * n as u64 {
            let member = group.member_mut(id).unwrap();
            member.enqueue(read(n as u64 * 100 + k, 4096), 0);
        }
    }
    let mut admitted = Vec::new();
    assert_eq!(group.poll_admit_due(0, &mut admitted), Some(100 * US));
    let next = group.poll_admit_due(400 * US, &mut admitted);
    let at: Vec<u64> = admitted.iter().map(|(_, a)| a.at).collect();
    assert_eq!(at, [0, 100 * US, 200 * US, 300 * US, 400 * US]);
    let per_member = |id| admitted.iter().filter(|(m, _)| *m == id).count();
    assert_eq!((per_member(members[0]), per_member(members[1])), (2, 3));
    assert_eq!(next, Some(500 * US));
    // 5 ms late: only the last millisecond is made up.
    admitted.clear();
    let now = 5_400 * US;
    group.poll_admit_due(now, &mut admitted);
    assert_eq!(admitted.len(), 11);
    assert_eq!(admitted[0].1.at, now - MAKE_UP_NS);
}
