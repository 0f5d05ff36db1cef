//! The handshake state machine, path by path, without I/O.

use blkif::Protocol;

use super::*;
use crate::platform::{DomId, GrantRef, Port};

const LIMITS: Limits = Limits {
    max_ring_page_order: 4,
    max_queues: 4,
};

const FILE: Backing = Backing {
    size_bytes: 64 << 20,
    logical_sector_size: 512,
    physical_sector_size: 512,
    read_only: false,
    flush: true,
    discard: None,
};

fn device() -> DeviceConfig {
    DeviceConfig {
        frontend: "/local/domain/5/device/vbd/51712".into(),
        frontend_id: DomId(5),
        writable: true,
        cdrom: false,
        discard_enable: true,
    }
}

fn rings() -> FrontendRings {
    FrontendRings {
        protocol: Protocol::X86_64,
        ring_page_order: 0,
        queues: vec![QueueRing {
            ring_refs: vec![GrantRef(8)],
            port: Port(3),
        }],
        persistent: false,
    }
}

fn new() -> Handshake {
    let (handshake, actions) = Handshake::new(device(), LIMITS);
    assert!(
        matches!(&actions[0], Action::WriteKeys(keys) if keys.iter().any(|(k, _)| *k == "max-ring-page-order"))
    );
    assert_eq!(actions[1], Action::SwitchState(XenbusState::InitWait));
    assert_eq!(actions.len(), 2);
    handshake
}

fn is_connect_keys(action: &Action) -> bool {
    matches!(action, Action::WriteKeys(keys) if keys.iter().any(|(k, v)| *k == "sectors" && v == "131072"))
}

/// Drives a fresh VBD to Connected with the hotplug script first, then the front end.
fn connected() -> Handshake {
    let mut h = new();
    assert_eq!(
        h.handle(Event::PhysicalDevicePath("/dev/loop0".into())),
        [Action::OpenStorage("/dev/loop0".into())]
    );
    assert_eq!(h.handle(Event::StorageOpened(FILE)), []);
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Initialised)),
        [Action::ReadFrontendKeys]
    );
    assert_eq!(
        h.handle(Event::FrontendKeys(Ok(rings()))),
        [Action::ConnectRings(rings())]
    );
    let actions = h.handle(Event::RingsConnected);
    assert!(is_connect_keys(&actions[0]), "{actions:?}");
    // The pipeline keeps persistent grants: offered at connect.
    assert!(
        matches!(&actions[0], Action::WriteKeys(keys) if keys.contains(&("feature-persistent", "1".into()))),
        "{actions:?}"
    );
    assert_eq!(actions[1], Action::SwitchState(XenbusState::Connected));
    assert_eq!(h.state(), XenbusState::Connected);
    h
}

#[test]
fn stays_in_init_wait_until_the_hotplug_script_is_done() {
    let mut h = new();
    // The front end is ready long before the script: its keys are read, but nothing is
    // connected without storage.
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Initialised)),
        [Action::ReadFrontendKeys]
    );
    assert_eq!(h.handle(Event::FrontendKeys(Ok(rings()))), []);
    assert_eq!(h.state(), XenbusState::InitWait);
    // The script writes physical-device-path; the storage opens; then the rings go over.
    assert_eq!(
        h.handle(Event::PhysicalDevicePath("/srv/disk.img".into())),
        [Action::OpenStorage("/srv/disk.img".into())]
    );
    // A second value is ignored, as Linux ignores a changed physical-device.
    assert_eq!(
        h.handle(Event::PhysicalDevicePath("/srv/other.img".into())),
        []
    );
    assert_eq!(
        h.handle(Event::StorageOpened(FILE)),
        [Action::ConnectRings(rings())]
    );
    let actions = h.handle(Event::RingsConnected);
    assert!(is_connect_keys(&actions[0]));
    assert_eq!(actions[1], Action::SwitchState(XenbusState::Connected));
}

#[test]
fn front_end_connected_again_changes_nothing() {
    let mut h = connected();
    assert_eq!(h.handle(Event::FrontendState(XenbusState::Connected)), []);
}

#[test]
fn bad_front_end_keys_fail_the_vbd_with_the_reason() {
    let mut h = new();
    h.handle(Event::PhysicalDevicePath("/srv/disk.img".into()));
    h.handle(Event::StorageOpened(FILE));
    h.handle(Event::FrontendState(XenbusState::Initialised));
    let error = FrontendError::OrderTooLarge { order: 7, max: 4 };
    let actions = h.handle(Event::FrontendKeys(Err(error)));
    assert_eq!(
        actions,
        [
            Action::Fatal(
                "reading front end keys: ring-page-order: 7 is above our max-ring-page-order 4"
                    .into()
            ),
            Action::SwitchState(XenbusState::Closing),
        ]
    );
    // The front end closes; we close; it starts over and we go back to InitWait.
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Closed)),
        [Action::SwitchState(XenbusState::Closed)]
    );
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Initialising)),
        [Action::SwitchState(XenbusState::InitWait)]
    );
    // Storage stays open: a good set of keys now connects.
    assert_connects_afresh(&mut h);
}

#[test]
fn storage_or_ring_failure_is_fatal() {
    let mut h = new();
    h.handle(Event::PhysicalDevicePath("/nonexistent".into()));
    let actions = h.handle(Event::StorageFailed("No such file or directory".into()));
    assert_eq!(
        actions,
        [
            Action::Fatal("opening storage: No such file or directory".into()),
            Action::SwitchState(XenbusState::Closing),
        ]
    );

    let mut h = new();
    h.handle(Event::PhysicalDevicePath("/srv/disk.img".into()));
    h.handle(Event::StorageOpened(FILE));
    h.handle(Event::FrontendState(XenbusState::Initialised));
    h.handle(Event::FrontendKeys(Ok(rings())));
    let actions = h.handle(Event::RingsFailed("grant ref 8 not granted".into()));
    assert_eq!(
        actions,
        [
            Action::Fatal("mapping rings: grant ref 8 not granted".into()),
            Action::SwitchState(XenbusState::Closing),
        ]
    );
}

#[test]
fn front_end_state_init_wait_or_unknown_numbers_are_fatal() {
    for state in [
        XenbusState::InitWait,
        XenbusState::Other(7),
        XenbusState::Other(99),
    ] {
        let mut h = connected();
        let actions = h.handle(Event::FrontendState(state));
        assert_eq!(
            actions,
            [
                Action::Fatal(format!("saw state {} at frontend", state.value())),
                Action::SwitchState(XenbusState::Closing),
                Action::Disconnect,
            ],
            "front end state {state:?}"
        );
    }
}

#[test]
fn guest_close_drains_then_closes_and_reconnects() {
    let mut h = connected();
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Closing)),
        [Action::SwitchState(XenbusState::Closing)]
    );
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Closed)),
        [Action::Disconnect]
    );
    // Not Closed before the worker drained.
    assert_eq!(h.state(), XenbusState::Closing);
    assert_eq!(
        h.handle(Event::Drained),
        [Action::SwitchState(XenbusState::Closed)]
    );
    // online is still 1: the VBD stays and reconnects.
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Initialising)),
        [Action::SwitchState(XenbusState::InitWait)]
    );
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Initialised)),
        [Action::ReadFrontendKeys]
    );
    assert_eq!(
        h.handle(Event::FrontendKeys(Ok(rings()))),
        [Action::ConnectRings(rings())]
    );
    let actions = h.handle(Event::RingsConnected);
    assert_eq!(actions[1], Action::SwitchState(XenbusState::Connected));
}

#[test]
fn toolstack_detach_removes_after_the_close() {
    let mut h = connected();
    // libxl: online=0 and state=5 in one transaction; the front end then closes.
    assert_eq!(h.handle(Event::Online(false)), []);
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Closed)),
        [Action::Disconnect]
    );
    assert_eq!(
        h.handle(Event::Drained),
        [Action::SwitchState(XenbusState::Closed), Action::Remove]
    );
}

#[test]
fn online_zero_after_closed_removes() {
    let mut h = new();
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Closed)),
        [Action::SwitchState(XenbusState::Closed)]
    );
    assert_eq!(h.handle(Event::Online(false)), [Action::Remove]);
}

#[test]
fn a_broken_ring_is_fatal_without_a_disconnect() {
    // The worker already dropped the VBD: Fatal and Closing, nothing to drain.
    let mut h = connected();
    assert_eq!(
        h.handle(Event::Broken("req_prod overran the ring".into())),
        [
            Action::Fatal("front end broke its ring: req_prod overran the ring".into()),
            Action::SwitchState(XenbusState::Closing),
        ]
    );
    // The front end's Closed then closes at once.
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Closed)),
        [Action::SwitchState(XenbusState::Closed)]
    );
    // Broken while being drained stands for Drained: a gone VBD is removed.
    let mut h = connected();
    assert_eq!(h.handle(Event::Gone), [Action::Disconnect]);
    assert_eq!(h.handle(Event::Broken("late".into())), [Action::Remove]);
    // A stale report about rings not up changes nothing.
    let mut h = new();
    assert_eq!(h.handle(Event::Broken("stale".into())), []);
}

#[test]
fn gone_tears_down_without_writing_anything() {
    // Connected: drain first, then remove; nothing else is written.
    let mut h = connected();
    assert_eq!(h.handle(Event::Gone), [Action::Disconnect]);
    assert_eq!(h.handle(Event::FrontendState(XenbusState::Initialised)), []);
    assert_eq!(h.handle(Event::Drained), [Action::Remove]);
    // Never connected: remove at once.
    let mut h = new();
    assert_eq!(h.handle(Event::Gone), [Action::Remove]);
    // The front end's directory vanished (forced detach): the same.
    let mut h = connected();
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Unknown)),
        [Action::Disconnect]
    );
    assert_eq!(h.handle(Event::Drained), [Action::Remove]);
}

#[test]
fn resize_writes_new_sectors_and_state() {
    let mut h = connected();
    let bigger = Backing {
        size_bytes: 128 << 20,
        ..FILE
    };
    assert_eq!(
        h.handle(Event::Resized(bigger)),
        [Action::WriteKeys(vec![
            ("sectors", "262144".into()),
            ("state", "4".into())
        ])]
    );
    // The same size again writes nothing.
    assert_eq!(h.handle(Event::Resized(bigger)), []);
}

/// A VBD a previous daemon left Connected, taken up again as far as its resumed rings.
fn reattached() -> Handshake {
    let mut h = Handshake::reattach(device(), LIMITS, Some(FILE.sectors()));
    assert_eq!(h.state(), XenbusState::Connected);
    // The front end is Connected: nothing to do for it, no keys rewritten.
    assert_eq!(h.handle(Event::FrontendState(XenbusState::Connected)), []);
    assert_eq!(
        h.handle(Event::PhysicalDevicePath("/dev/loop0".into())),
        [Action::OpenStorage("/dev/loop0".into())]
    );
    assert_eq!(
        h.handle(Event::StorageOpened(FILE)),
        [Action::ReadFrontendKeys]
    );
    assert_eq!(
        h.handle(Event::FrontendKeys(Ok(rings()))),
        [Action::ResumeRings(rings())]
    );
    h
}

#[test]
fn reattach_resumes_the_rings_without_writing_anything() {
    let mut h = reattached();
    assert_eq!(h.handle(Event::RingsConnected), []);
    assert_eq!(h.state(), XenbusState::Connected);
    // From then on it is an ordinary connected VBD: a close drains and closes.
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Closing)),
        [Action::SwitchState(XenbusState::Closing)]
    );
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Closed)),
        [Action::Disconnect]
    );
    assert_eq!(
        h.handle(Event::Drained),
        [Action::SwitchState(XenbusState::Closed)]
    );
    // A front end that connects again gets a fresh connect, not a resume.
    h.handle(Event::FrontendState(XenbusState::Initialising));
    assert_connects_afresh(&mut h);
}

#[test]
fn a_refused_resume_is_fatal() {
    let mut h = reattached();
    assert_eq!(
        h.handle(Event::RingsFailed("state file: corrupt".into())),
        [
            Action::Fatal("mapping rings: state file: corrupt".into()),
            Action::SwitchState(XenbusState::Closing),
        ]
    );
    let mut h = Handshake::reattach(device(), LIMITS, Some(FILE.sectors()));
    h.handle(Event::PhysicalDevicePath("/dev/loop0".into()));
    assert_eq!(
        h.handle(Event::StorageFailed("gone".into())),
        [
            Action::Fatal("opening storage: gone".into()),
            Action::SwitchState(XenbusState::Closing),
        ]
    );
}

#[test]
fn a_front_end_closing_during_reattach_is_not_resumed() {
    let mut h = Handshake::reattach(device(), LIMITS, Some(FILE.sectors()));
    h.handle(Event::PhysicalDevicePath("/dev/loop0".into()));
    assert_eq!(
        h.handle(Event::StorageOpened(FILE)),
        [Action::ReadFrontendKeys]
    );
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Closing)),
        [Action::SwitchState(XenbusState::Closing)]
    );
    // The keys read meanwhile are stale.
    assert_eq!(h.handle(Event::FrontendKeys(Ok(rings()))), []);
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Closed)),
        [Action::SwitchState(XenbusState::Closed)]
    );
}

#[test]
fn stale_answers_are_ignored() {
    let mut h = connected();
    // A worker's late confirmation or failure after the fact changes nothing.
    assert_eq!(h.handle(Event::RingsConnected), []);
    assert_eq!(h.handle(Event::RingsFailed("late".into())), []);
    assert_eq!(h.handle(Event::Drained), []);
    assert_eq!(h.handle(Event::FrontendKeys(Ok(rings()))), []);
    assert_eq!(h.state(), XenbusState::Connected);
}

mod sequences {
    use proptest::prelude::*;

    use super::*;

    fn state() -> impl Strategy<Value = XenbusState> {
        (0u32..10).prop_map(|n| XenbusState::from_key(Some(&n.to_string())))
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::PhysicalDevicePath("/srv/disk.img".into())),
            Just(Event::StorageOpened(FILE)),
            Just(Event::StorageFailed("gone".into())),
            state().prop_map(Event::FrontendState),
            Just(Event::FrontendKeys(Ok(rings()))),
            Just(Event::FrontendKeys(Err(FrontendError::PortZero {
                key: "event-channel".into()
            }))),
            Just(Event::RingsConnected),
            Just(Event::RingsFailed("bad ref".into())),
            Just(Event::Drained),
            Just(Event::Broken("overrun".into())),
            any::<bool>().prop_map(Event::Online),
            (1u64..4).prop_map(|n| Event::Resized(Backing {
                size_bytes: n << 20,
                ..FILE
            })),
            Just(Event::Gone),
        ]
    }

    proptest! {
        /// Whatever the front end, toolstack and worker do in whatever order: rings are handed
        /// over at most once until drained, Connected only with rings up and storage open,
        /// nothing follows Remove, and Remove never leaves rings mapped.
        #[test]
        fn invariants_hold_for_any_sequence(events in proptest::collection::vec(event(), 0..40)) {
            let mut h = new();
            let mut rings_out = false; // handed over, Drained not yet answered
            let mut rings_up = false;
            let mut disconnecting = false;
            let mut storage = false;
            let mut removed = false;
            for event in events {
                match &event {
                    Event::StorageOpened(_) => storage = true,
                    Event::RingsConnected if rings_out && !disconnecting => rings_up = true,
                    Event::RingsFailed(_) if rings_out && !rings_up && !disconnecting => {
                        rings_out = false
                    }
                    Event::Broken(_) if rings_out => {
                        disconnecting = false;
                        rings_out = false;
                        rings_up = false;
                    }
                    Event::Drained if disconnecting => {
                        disconnecting = false;
                        rings_out = false;
                        rings_up = false;
                    }
                    _ => {}
                }
                let actions = h.handle(event);
                prop_assert!(!removed || actions.is_empty(), "{actions:?} after Remove");
                for action in &actions {
                    match action {
                        Action::ConnectRings(_) => {
                            prop_assert!(!rings_out, "rings handed over twice");
                            prop_assert!(storage, "rings handed over before storage opened");
                            rings_out = true;
                            rings_up = false;
                        }
                        Action::SwitchState(XenbusState::Connected) => {
                            prop_assert!(rings_up && storage, "Connected without rings or storage");
                        }
                        Action::Disconnect => {
                            prop_assert!(rings_out && !disconnecting, "Disconnect without rings");
                            disconnecting = true;
                        }
                        Action::Remove => {
                            prop_assert!(!rings_out, "removed with rings mapped");
                            removed = true;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// A key lookup over fixed pairs, as the readers of toolstack and front-end keys take it.
pub(super) fn read_from(keys: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> = keys
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |key| map.get(key).cloned()
}

#[test]
fn storage_resized_while_no_daemon_ran_is_announced_at_reattach() {
    let mut h = Handshake::reattach(device(), LIMITS, Some(FILE.sectors() / 2));
    h.handle(Event::FrontendState(XenbusState::Connected));
    h.handle(Event::PhysicalDevicePath("/dev/loop0".into()));
    assert_eq!(
        h.handle(Event::StorageOpened(FILE)),
        [
            Action::WriteKeys(vec![
                ("sectors", FILE.sectors().to_string()),
                ("state", "4".into()),
            ]),
            Action::ReadFrontendKeys,
        ]
    );
}

/// The front end publishes good keys: they are read and the rings handed over anew.
fn assert_connects_afresh(h: &mut Handshake) {
    assert_eq!(
        h.handle(Event::FrontendState(XenbusState::Initialised)),
        [Action::ReadFrontendKeys]
    );
    assert_eq!(
        h.handle(Event::FrontendKeys(Ok(rings()))),
        [Action::ConnectRings(rings())]
    );
}
