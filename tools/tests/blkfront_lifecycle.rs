//! The simulated blkfront across a disk's life: resize while connected, a detach by the
//! toolstack (back end Closing), a close by the guest, and the guest's destruction.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::time::{Duration, Instant};

use support::{eventually, pattern, BackendConfig, Host, EVENTUALLY};
use tokenback_tools::blkfront::{Blkfront, Error};
use xenstore_wire::client::TxId;

/// Handles back-end events until `done` holds, failing after [`EVENTUALLY`].
fn until(front: &mut Blkfront, what: &str, mut done: impl FnMut(&Blkfront) -> bool) {
    let deadline = Instant::now() + EVENTUALLY;
    while !done(front) {
        assert!(Instant::now() < deadline, "{what} never happened");
        front
            .handle_backend_events(Duration::from_millis(50))
            .unwrap();
    }
}

#[test]
fn resize_is_seen_and_the_new_sectors_are_usable() {
    let mut host = Host::start("resize");
    let (mut front, backend, _) = host.connected(BackendConfig::default(), |_| {});
    assert_eq!(front.disk().sectors, 16384);
    let beyond = 20000;
    assert!(matches!(
        front.write(beyond, &[1; 512]),
        Err(Error::OutOfRange { .. })
    ));
    backend.resize(host.toolstack.xenstore(), 32768);
    until(&mut front, "resize", |f| f.disk().sectors == 32768);
    let data = pattern(4096, 21);
    front.write(beyond, &data).unwrap();
    let mut back = vec![0; 4096];
    front.read(beyond, &mut back).unwrap();
    assert_eq!(back, data);
    assert!(!front.is_closed());
}

#[test]
fn a_detach_by_the_toolstack_closes_both_ends() {
    let mut host = Host::start("detach");
    let (mut front, backend, paths) = host.connected(BackendConfig::default(), |_| {});
    front.write(0, &pattern(512, 1)).unwrap();
    host.toolstack.detach_disk(&paths).unwrap();
    until(&mut front, "the front end closing", Blkfront::is_closed);
    assert_eq!(
        host.read(&format!("{}/state", paths.frontend)).as_deref(),
        Some("6")
    );
    let backend_state = format!("{}/state", paths.backend);
    eventually("the back end Closed", || {
        host.read(&backend_state).as_deref() == Some("6")
    });
    assert!(matches!(front.write(0, &[0; 512]), Err(Error::Closed)));
    let states = backend.finish().frontend_states;
    assert_eq!(states.last(), Some(&6));
    // The back end released the rings: the guest can take its pages back.
    front.close().unwrap();
    host.toolstack.remove_disk(&paths).unwrap();
    assert_eq!(host.read(&paths.frontend), None);
}

#[test]
fn a_close_by_the_guest_goes_through_closing_to_closed() {
    let mut host = Host::start("close");
    let (mut front, backend, paths) =
        host.connected(BackendConfig::default(), |o| o.max_ring_page_order = 2);
    front.write(0, &pattern(8 * 4096, 2)).unwrap();
    front.close().unwrap();
    assert_eq!(
        host.read(&format!("{}/state", paths.frontend)).as_deref(),
        Some("6")
    );
    assert_eq!(
        host.read(&format!("{}/state", paths.backend)).as_deref(),
        Some("6")
    );
    let states: Vec<u32> = backend
        .finish()
        .frontend_states
        .into_iter()
        .filter(|&s| s >= 5)
        .collect();
    assert_eq!(states, [5, 6]);
}

#[test]
fn a_destroyed_guest_leaves_nothing_behind() {
    let mut host = Host::start("destroy");
    let (domid, paths, backend) = host.guest_with_disk(BackendConfig::default());
    let front = Blkfront::connect(host.options(domid)).unwrap();
    drop(front);
    drop(backend);
    host.toolstack.destroy_guest(domid).unwrap();
    assert_eq!(host.read(&paths.frontend), None);
    assert_eq!(host.read(&paths.backend), None);
    assert_eq!(host.read(&format!("/local/domain/{}", domid.0)), None);
    assert!(!host.run.domain_exists(domid));
    // Its domid is not handed out again at once.
    let next = host.toolstack.create_guest("next", 16, 1).unwrap();
    assert_ne!(next, domid);
}

#[test]
fn a_back_end_closing_before_connect_fails_the_handshake() {
    let mut host = Host::start("early");
    let (domid, paths, _backend) = host.guest_with_disk(BackendConfig::default());
    let state = format!("{}/state", paths.backend);
    eventually("back end InitWait", || {
        host.read(&state).as_deref() == Some("2")
    });
    host.toolstack.detach_disk(&paths).unwrap();
    let err = Blkfront::connect(host.options(domid)).err().unwrap();
    assert!(matches!(err, Error::BackendClosed { state: 5 }), "{err}");
    // Nothing was published: the front end never got past Initialising.
    assert_eq!(host.read(&format!("{}/ring-ref", paths.frontend)), None);
    assert_eq!(
        host.read(&format!("{}/state", paths.frontend)).as_deref(),
        Some("1")
    );
}

#[test]
fn the_handshake_starts_only_from_initialising() {
    // Before, connect ignored its own state and set up a device that an earlier front end
    // had already taken to Closed.
    let mut host = Host::start("notinit");
    let (domid, paths, _backend) = host.guest_with_disk(BackendConfig::default());
    let state = format!("{}/state", paths.frontend);
    host.toolstack
        .xenstore()
        .write(TxId::NONE, &state, b"6")
        .unwrap();
    let err = Blkfront::connect(host.options(domid)).err().unwrap();
    assert!(matches!(err, Error::NotInitialising { state: 6 }), "{err}");
    assert_eq!(host.read(&format!("{}/ring-ref", paths.frontend)), None);
    assert_eq!(host.read(&state).as_deref(), Some("6"));
}

#[test]
fn a_resize_without_sectors_is_ignored() {
    // Before, a Connected event without a readable `sectors` failed the front end; Linux
    // returns early and keeps the capacity.
    let mut host = Host::start("nosectors");
    let (mut front, _backend, paths) = host.connected(BackendConfig::default(), |_| {});
    let (sectors, state) = (
        format!("{}/sectors", paths.backend),
        format!("{}/state", paths.backend),
    );
    for value in [None, Some(&b"lots"[..])] {
        host.toolstack
            .xenstore()
            .transaction(|xs, tx| {
                match value {
                    None => xs.rm(tx, &sectors)?,
                    Some(value) => xs.write(tx, &sectors, value)?,
                }
                xs.write(tx, &state, b"4")
            })
            .unwrap();
        assert!(front.handle_backend_events(EVENTUALLY).unwrap());
        assert_eq!(front.disk().sectors, 16384);
        assert!(!front.is_closed());
    }
    let data = pattern(4096, 5);
    front.write(8, &data).unwrap();
}

#[test]
fn a_vanished_state_node_aborts_the_switch_quietly() {
    // The toolstack removed our `state` node; the back end then goes Closing. Before, the
    // switch to Closed failed with ENOENT; Linux aborts its transaction and goes on, and
    // never recreates the node.
    let mut host = Host::start("vanished");
    let (mut front, _backend, paths) = host.connected(BackendConfig::default(), |_| {});
    let state = format!("{}/state", paths.frontend);
    host.toolstack.xenstore().rm(TxId::NONE, &state).unwrap();
    host.toolstack.detach_disk(&paths).unwrap();
    until(&mut front, "the front end closing", Blkfront::is_closed);
    assert_eq!(host.read(&state), None);
    assert!(matches!(front.write(0, &[0; 512]), Err(Error::Closed)));
}
