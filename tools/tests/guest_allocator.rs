//! One guest's front ends share its memory and grant table through one `GuestAllocator`:
//! two disks of a guest, each with a back end of its own, never share a frame or a grant ref.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod support;

use support::{pattern, BackendConfig, Host, ScriptedBackend};
use tokenback::platform::DomId;
use tokenback_tools::blkfront::{Blkfront, Error, GuestAllocator};
use tokenback_tools::toolstack::DiskSpec;

/// A second disk, xvdb, for guest `domid`, served by a back end of its own.
fn xvdb(host: &mut Host, domid: DomId) -> ScriptedBackend {
    let spec = DiskSpec {
        devid: 51728,
        vdev: "xvdb".into(),
        params: "/dev/null".into(),
        writable: true,
        script: "block-tokenback".into(),
    };
    let paths = host.toolstack.add_disk(domid, &spec).unwrap();
    ScriptedBackend::start(&host.run, domid, &paths, BackendConfig::default())
}

#[test]
fn two_disks_of_one_guest_share_its_pages_and_grant_refs() {
    let mut host = Host::start("alloc-two");
    let config = BackendConfig {
        max_ring_page_order: 2,
        ..BackendConfig::default()
    };
    let (domid, _, a_back) = host.guest_with_disk(config);
    let b_back = xvdb(&mut host, domid);
    let shared = GuestAllocator::open(&host.run, domid).unwrap();

    let mut a_opts = host.options(domid);
    a_opts.max_ring_page_order = 2;
    a_opts.allocator = Some(shared.clone());
    let mut a = Blkfront::connect(a_opts).unwrap();
    let after_a = (shared.frames_used(), shared.grefs_used());
    // Four queues of four ring pages, from frame 0 and after the 8 reserved refs.
    assert_eq!(after_a, (16, 8 + 16));

    let mut b_opts = host.options(domid);
    b_opts.devid = 51728;
    b_opts.allocator = Some(shared.clone());
    let mut b = Blkfront::connect(b_opts).unwrap();
    // b's single-page rings come after a's.
    assert_eq!(shared.frames_used(), after_a.0 + 4);
    assert_eq!(shared.grefs_used(), after_a.1 + 4);

    // Interleaved I/O on both: each disk keeps its own data (shared pages would mix them).
    for round in 0..8u8 {
        let (da, db) = (pattern(8 * 4096, round), pattern(8 * 4096, round + 100));
        let sector = u64::from(round) * 64;
        a.write(sector, &da).unwrap();
        b.write(sector, &db).unwrap();
        let (mut ra, mut rb) = (vec![0; da.len()], vec![0; db.len()]);
        b.read(sector, &mut rb).unwrap();
        a.read(sector, &mut ra).unwrap();
        assert_eq!(ra, da, "xvda round {round}");
        assert_eq!(rb, db, "xvdb round {round}");
    }
    let a_disk = a_back.disk.lock().unwrap()[..512].to_vec();
    assert_eq!(a_disk, pattern(8 * 4096, 0)[..512]);
    let b_disk = b_back.disk.lock().unwrap()[..512].to_vec();
    assert_eq!(b_disk, pattern(8 * 4096, 100)[..512]);
    // Data pages came from the same allocator.
    assert!(shared.frames_used() > after_a.0 + 4);
}

#[test]
fn clones_share_one_allocation_and_the_guest_runs_out_once() {
    let mut host = Host::start("alloc-clone");
    let domid = host.toolstack.create_guest("small", 4, 1).unwrap();
    let one = GuestAllocator::open(&host.run, domid).unwrap();
    let two = one.clone();
    assert_eq!(one.frames(3).unwrap(), 0);
    assert_eq!(two.frames(1).unwrap(), 3);
    assert!(matches!(
        one.frames(1),
        Err(Error::OutOfGuestMemory { pages: 4 })
    ));
    // One grant frame: 512 v1 entries, of which 8 are reserved.
    assert_eq!(one.gref().unwrap().0, 8);
    assert_eq!(two.gref().unwrap().0, 9);
    for _ in 10..512 {
        one.gref().unwrap();
    }
    assert!(matches!(two.gref(), Err(Error::OutOfGrantRefs { .. })));
}
