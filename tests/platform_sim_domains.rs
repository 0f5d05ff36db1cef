//! Domain life on the simulated host: domid allocation, existence, destruction.

#![cfg(test)]

mod platform_sim_common;

use platform_sim_common::TempRun;
use tokenback::platform::sim::{GuestDomain, RunDir, SimError, MAX_GRANT_FRAMES};
use tokenback::platform::DomId;

#[test]
fn domids_count_up_and_are_not_reused_at_once() {
    let run = TempRun::new();
    let first = GuestDomain::create(run.dir(), 1, 1).unwrap();
    let second = GuestDomain::create(run.dir(), 1, 1).unwrap();
    assert_eq!((first.domid(), second.domid()), (DomId(1), DomId(2)));

    let gone = first.domid();
    drop(first);
    run.dir().destroy_domain(gone).unwrap();
    run.dir().remove_domain(gone).unwrap();
    let third = GuestDomain::create(run.dir(), 1, 1).unwrap();
    assert_eq!(
        third.domid(),
        DomId(3),
        "the freed domid 1 is not handed out next"
    );
}

#[test]
fn a_domain_exists_from_creation_until_its_directory_is_removed() {
    let run = TempRun::new();
    assert!(run.dir().domain_exists(DomId(0)));
    assert!(!run.dir().domain_exists(DomId(1)));

    let guest = GuestDomain::create(run.dir(), 4, 1).unwrap();
    let domid = guest.domid();
    assert!(run.dir().domain_exists(domid));
    assert_eq!(guest.pages(), 4);

    // Another process attaches to the same domain and sees the same memory.
    let attached = GuestDomain::open(run.dir(), domid).unwrap();
    guest.write(2, 10, b"shared").unwrap();
    let mut seen = [0u8; 6];
    attached.read(2, 10, &mut seen).unwrap();
    assert_eq!(&seen, b"shared");
    assert!(guest.write(4, 0, b"x").is_err(), "past the last page");

    run.dir().destroy_domain(domid).unwrap();
    assert!(
        run.dir().domain_exists(domid),
        "until xenstored released it"
    );
    run.dir().remove_domain(domid).unwrap();
    assert!(!run.dir().domain_exists(domid));
    assert!(GuestDomain::open(run.dir(), domid).is_err());
    assert!(run.dir().destroy_domain(DomId(0)).is_err(), "dom0 stays");
}

#[test]
fn a_run_directory_is_opened_only_once_created() {
    let run = TempRun::new();
    assert_eq!(
        RunDir::open(run.dir().root()).unwrap().root(),
        run.dir().root()
    );
    assert!(RunDir::open(&run.dir().root().join("missing")).is_err());
    // Creating it again keeps what is there.
    let again = RunDir::create(run.dir().root()).unwrap();
    assert!(again.domain_exists(DomId(0)));
}

#[test]
fn domains_are_limited_as_on_xen_and_a_refused_one_takes_no_domid() {
    // Before: any number of grant frames was accepted, and a page count whose size overflows
    // panicked in the multiplication.
    let run = TempRun::new();
    assert!(matches!(
        GuestDomain::create(run.dir(), 1, MAX_GRANT_FRAMES + 1),
        Err(SimError::Limit { requested, max, .. })
            if requested == MAX_GRANT_FRAMES + 1 && max == 64
    ));
    assert!(matches!(
        GuestDomain::create(run.dir(), usize::MAX / 2, 1),
        Err(SimError::Limit { .. })
    ));
    assert!(!run.dir().domain_exists(DomId(1)), "no half-made domain");
    let largest = GuestDomain::create(run.dir(), 1, MAX_GRANT_FRAMES).unwrap();
    assert_eq!(largest.grant_entries(), MAX_GRANT_FRAMES * 512);
}
