//! Property: whatever mix of maps, copies and unmaps a back end runs, the guest can end
//! access to a grant exactly when no mapping of it is alive, and read-only grants are never
//! mapped or copied writable.

#![cfg(test)]

mod platform_sim_common;

use platform_sim_common::TempRun;
use proptest::prelude::*;
use tokenback::platform::sim::{EndAccessError, GuestDomain, SimGrants, SimMapping};
use tokenback::platform::{CopyOp, DomId, GrantAccess, GrantError, GrantRef, GuestRange};

const DOM0: DomId = DomId(0);
/// Refs 8..12; odd refs are granted read-only.
const REFS: u32 = 4;

fn gref(i: u32) -> GrantRef {
    GrantRef(8 + i)
}

fn readonly(i: u32) -> bool {
    i % 2 == 1
}

#[derive(Debug, Clone)]
enum Step {
    Map { refs: Vec<u32>, writable: bool },
    Unmap { which: usize },
    Copy { i: u32, write: bool },
    EndAccess { i: u32 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (prop::collection::vec(0..REFS, 1..3), any::<bool>())
            .prop_map(|(refs, writable)| Step::Map { refs, writable }),
        any::<usize>().prop_map(|which| Step::Unmap { which }),
        (0..REFS, any::<bool>()).prop_map(|(i, write)| Step::Copy { i, write }),
        (0..REFS).prop_map(|i| Step::EndAccess { i }),
    ]
}

fn grant(guest: &GuestDomain, i: u32) {
    guest.grant(gref(i), DOM0, i, readonly(i)).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn end_access_succeeds_exactly_when_nothing_maps_the_grant(
        steps in prop::collection::vec(step(), 1..40)
    ) {
        let run = TempRun::new();
        let guest = GuestDomain::create(run.dir(), REFS as usize, 1).unwrap();
        for i in 0..REFS {
            grant(&guest, i);
        }
        let mut grants = SimGrants::new(run.dir(), DOM0);
        let mut live: Vec<(Vec<u32>, SimMapping)> = Vec::new();
        let mapped = |live: &[(Vec<u32>, SimMapping)], i: u32| {
            live.iter().any(|(refs, _)| refs.contains(&i))
        };

        for step in steps {
            match step {
                Step::Map { refs, writable } => {
                    let grefs: Vec<_> = refs.iter().map(|&i| gref(i)).collect();
                    let result = grants.map(guest.domid(), &grefs, writable);
                    let refused = writable && refs.iter().any(|&i| readonly(i));
                    match result {
                        Ok(mapping) => {
                            prop_assert!(!refused);
                            live.push((refs, mapping));
                        }
                        Err(err) => prop_assert!(
                            refused && matches!(err, GrantError::ReadOnly { .. }),
                            "unexpected {err}"
                        ),
                    }
                }
                Step::Unmap { which } => {
                    if !live.is_empty() {
                        live.remove(which % live.len());
                    }
                }
                Step::Copy { i, write } => {
                    let at = GuestRange { domid: guest.domid(), gref: gref(i), offset: 0 };
                    let mut buf = [0u8; 8];
                    let mut ops = [if write {
                        CopyOp::to_guest(&[1; 8], at)
                    } else {
                        CopyOp::from_guest(at, &mut buf)
                    }];
                    let failed = grants.copy(&mut ops);
                    prop_assert_eq!(failed == 1, write && readonly(i));
                }
                Step::EndAccess { i } => {
                    let result = guest.end_access(gref(i));
                    if mapped(&live, i) {
                        prop_assert_eq!(result, Err(EndAccessError::InUse { gref: 8 + i }));
                    } else {
                        prop_assert_eq!(result, Ok(()));
                        grant(&guest, i); // granted again, so later steps keep testing it
                    }
                }
            }
        }
        drop(live);
        for i in 0..REFS {
            prop_assert_eq!(guest.end_access(gref(i)), Ok(()));
        }
    }
}
