//! A long-lived back end on the simulated host keeps nothing of guests that are gone: no
//! file descriptors, no mappings of their files. One test only, so that nothing else in this
//! process opens or maps files while it counts.

#![cfg(test)]

mod platform_sim_common;

use platform_sim_common::TempRun;
use tokenback::platform::sim::{GuestDomain, RunDir, SimEventChannel, SimGrants};
use tokenback::platform::{CopyOp, DomId, EventChannel, GrantAccess, GrantRef, GuestRange};

const DOM0: DomId = DomId(0);
const GREF: GrantRef = GrantRef(8);
const LIFETIMES: usize = 20;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Mappings of guests' files (dom0's own table excepted).
fn guest_mappings(run: &RunDir) -> usize {
    let dom0 = run.domain_dir(DOM0).display().to_string() + "/";
    let guests = run.root().join("domain").display().to_string() + "/";
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|line| line.contains(&guests) && !line.contains(&dom0))
        .count()
}

/// A guest comes, is served (copies, a map, an event channel it reconnects once), and dies.
fn lifetime(run: &RunDir, grants: &mut SimGrants, back: &mut SimEventChannel) {
    let guest = GuestDomain::create(run, 4, 1).unwrap();
    let domid = guest.domid();
    guest.grant(GREF, DOM0, 1, false).unwrap();
    let at = GuestRange {
        domid,
        gref: GREF,
        offset: 0,
    };
    let mut buf = [0u8; 16];
    assert_eq!(grants.copy(&mut [CopyOp::from_guest(at, &mut buf)]), 0);
    drop(grants.map(domid, &[GREF], false).unwrap());
    for _connection in 0..2 {
        let mut front = SimEventChannel::open(run, domid).unwrap();
        let offered = front.alloc_unbound(DOM0).unwrap();
        let port = back.bind_interdomain(domid, offered).unwrap();
        front.notify(offered).unwrap();
        back.notify(port).unwrap();
        let mut fired = Vec::new();
        back.read_pending(&mut fired).unwrap();
        back.unmask(&fired).unwrap();
        back.unbind(port).unwrap();
    }
    drop(guest);
    run.destroy_domain(domid).unwrap();
    run.remove_domain(domid).unwrap();
}

#[test]
fn guests_that_come_and_go_leave_no_files_open_or_mapped() {
    // Before: each dead guest left 5 fds and its memory mapped per grant handle, and each dead
    // guest or reconnect 1 fd per event-channel handle; about 200 guest lifetimes reached the
    // default limit of 1024 fds.
    let run = TempRun::new();
    let mut grants = SimGrants::new(run.dir(), DOM0);
    let mut back = SimEventChannel::open(run.dir(), DOM0).unwrap();
    lifetime(run.dir(), &mut grants, &mut back);
    // At most the last guest's files stay until the next guest is served.
    let (fds, mappings) = (open_fds(), guest_mappings(run.dir()));
    for _ in 1..LIFETIMES {
        lifetime(run.dir(), &mut grants, &mut back);
    }
    assert_eq!(open_fds(), fds, "fds after {LIFETIMES} guest lifetimes");
    assert_eq!(
        guest_mappings(run.dir()),
        mappings,
        "mappings of dead guests"
    );
}
