//! Throttle groups: shares by weight under contention, the whole limit for a lone member, and
//! own limits inside a group.

use super::*;

/// A member's own keys, the operation it repeats and its request size.
type MemberSpec<'a> = (&'a [(&'a str, &'a str)], Op, u64);

fn group_with(
    limits: &[(&str, &str)],
    members: &[MemberSpec],
) -> (Group, Vec<(MemberId, Op, u64)>) {
    let mut group = Group::new(&limit_config(limits), 0);
    let ids = members
        .iter()
        .map(|&(config, op, bytes)| {
            (
                group.add_member(Vbd::new(&vbd_config(config), 0)),
                op,
                bytes,
            )
        })
        .collect();
    (group, ids)
}

/// Share of `part` in `total`, in per-mille.
fn per_mille(part: u64, total: u64) -> u128 {
    u128::from(part) * 1000 / u128::from(total)
}

#[test]
fn weights_3_to_1_share_75_25_under_a_bandwidth_limit() {
    let (mut group, ids) = group_with(
        &[("bps-total", "10000000")],
        &[
            (&[("weight", "3")], Op::Read, 4096),
            (&[("weight", "1")], Op::Write, 4096),
        ],
    );
    let bytes = saturate_group(&mut group, &ids, 40_000, u64::MAX);
    let total = bytes[0] + bytes[1];
    assert!(within(per_mille(bytes[0], total), 750, 10), "{bytes:?}");
    assert!(within(per_mille(bytes[1], total), 250, 10), "{bytes:?}");
}

#[test]
fn shares_follow_weights_in_bytes_whatever_the_request_sizes() {
    let (mut group, ids) = group_with(
        &[("bps-total", "50000000")],
        &[(&[], Op::Read, 4096), (&[], Op::Read, 1 << 20)],
    );
    let bytes = saturate_group(&mut group, &ids, 20_000, u64::MAX);
    let total = bytes[0] + bytes[1];
    assert!(within(per_mille(bytes[0], total), 500, 10), "{bytes:?}");
}

#[test]
fn weights_follow_operations_under_an_iops_limit() {
    let (mut group, ids) = group_with(
        &[("iops-total", "1000")],
        &[
            (&[("weight", "1")], Op::Read, 512),
            (&[("weight", "4")], Op::Read, 65536),
        ],
    );
    let bytes = saturate_group(&mut group, &ids, 10_000, u64::MAX);
    let ops = [bytes[0] / 512, bytes[1] / 65536];
    assert!(
        within(per_mille(ops[1], ops[0] + ops[1]), 800, 10),
        "{ops:?}"
    );
}

#[test]
fn a_lone_member_gets_the_whole_group_limit() {
    let (mut group, ids) = group_with(
        &[("iops-total", "1000")],
        &[
            (&[("weight", "1")], Op::Read, 4096),
            (&[("weight", "9")], Op::Read, 4096),
        ],
    );
    // Only the first member sends: 100 at once, then 1000/s.
    let bytes = saturate_group(&mut group, &ids[..1], 1_000_000, 10 * SEC);
    assert_eq!(bytes[0] / 4096, 100 + 10_000);
    assert_eq!(group.member(ids[1].0).unwrap().queued(), 0);
}

#[test]
fn eight_equal_members_are_fair() {
    let members: Vec<MemberSpec> = (0..8)
        .map(|i| (&[][..], Op::Read, 4096 << (i % 3)))
        .collect();
    let (mut group, ids) = group_with(&[("bps-total", "100000000")], &members);
    let bytes = saturate_group(&mut group, &ids, 50_000, u64::MAX);
    let sum: u128 = bytes.iter().map(|&b| u128::from(b)).sum();
    let squares: u128 = bytes.iter().map(|&b| u128::from(b) * u128::from(b)).sum();
    // Jain's index (sum x)^2 / (n sum x^2) >= 0.99.
    assert!(sum * sum * 100 >= 99 * 8 * squares, "{bytes:?}");
}

#[test]
fn own_limits_apply_inside_a_group_and_the_rest_goes_to_the_others() {
    let (mut group, ids) = group_with(
        &[("iops-total", "1000")],
        &[
            (&[("iops-total", "100")], Op::Read, 4096),
            (&[], Op::Read, 4096),
        ],
    );
    let bytes = saturate_group(&mut group, &ids, 1_000_000, 20 * SEC);
    let ops = [bytes[0] / 4096, bytes[1] / 4096];
    // 20 s at 1000/s plus the group's initial 100; the capped member gets its own 100/s.
    assert_eq!(ops[0] + ops[1], 20_100);
    assert!(ops[0].abs_diff(2_010) <= 20, "{ops:?}");
}

#[test]
fn the_picked_request_waits_for_group_tokens_and_nobody_skips_ahead() {
    let (mut group, ids) = group_with(
        &[("bps-total", "1000")],
        &[(&[], Op::Read, 0), (&[], Op::Read, 0)],
    );
    let (a, b) = (ids[0].0, ids[1].0);
    group.member_mut(a).unwrap().enqueue(read(1, 100), 0);
    assert_eq!(group.poll_admit(0).map(|(m, _)| m), Some(a));
    // A large request of `a` is picked; the small one of `b` would fit sooner but must wait.
    group.member_mut(a).unwrap().enqueue(read(2, 4096), 0);
    assert_eq!(group.poll_admit(0), None);
    group.member_mut(b).unwrap().enqueue(read(3, 1), 0);
    let at = group.next_admit_at(0).unwrap();
    assert_eq!(at, SEC / 10, "the group bucket (100 B) must be full again");
    assert_eq!(group.poll_admit(at - 1), None);
    assert_eq!(
        group.poll_admit(at).map(|(m, adm)| (m, adm.request.id)),
        Some((a, 2))
    );
    // b is picked at once, then waits until the group's debt (3,996 B) is repaid.
    assert_eq!(group.poll_admit(at), None);
    let next = group.next_admit_at(at).unwrap();
    assert_eq!(next, at + 3997 * SEC / 1000);
    assert_eq!(group.poll_admit(next).map(|(m, _)| m), Some(b));
}

#[test]
fn members_leave_with_their_queue_and_the_group_retunes() {
    let (mut group, ids) = group_with(
        &[("tokens-refill", "10"), ("tokens-max", "0")],
        &[(&[], Op::Read, 0), (&[], Op::Read, 0)],
    );
    for id in 0..3 {
        group
            .member_mut(ids[0].0)
            .unwrap()
            .enqueue(read(id, 512), 0);
    }
    assert!(group.poll_admit(0).is_some());
    assert_eq!(group.poll_admit(0), None);
    assert_eq!(group.stats(0).queued, 2);
    group.retune(&LimitConfig::default(), 0);
    assert!(group.poll_admit(0).is_some(), "no group limit left");
    let vbd = group.remove_member(ids[0].0).unwrap();
    assert_eq!(vbd.queued(), 1);
    assert!(group.member(ids[0].0).is_none());
    assert_eq!(group.poll_admit(0), None);
    assert_eq!(group.next_admit_at(0), None);
    let stats = group.stats(0);
    assert_eq!((stats.members, stats.counters.requests.read), (1, 2));
}

#[test]
fn a_weight_retuned_mid_stream_changes_the_shares_from_then_on() {
    let (mut group, ids) = group_with(
        &[("iops-total", "1000")],
        &[(&[], Op::Read, 4096), (&[], Op::Write, 4096)],
    );
    let (even, now) = saturate_group_from(&mut group, &ids, 4_000, 0, u64::MAX);
    assert!(even[0].abs_diff(even[1]) <= 2 * 4096, "{even:?}");
    let member = group.member_mut(ids[1].0).unwrap();
    member.retune(&vbd_config(&[("weight", "3")]), now);
    let (bytes, _) = saturate_group_from(&mut group, &ids, 8_000, now, u64::MAX);
    let total = bytes[0] + bytes[1];
    assert!(within(per_mille(bytes[1], total), 750, 10), "{bytes:?}");
}
