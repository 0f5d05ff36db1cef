//! tokenback's xenbus driver serving simulated guests: the toolstack adds disks as libxl does,
//! the test plays the hotplug script, the simulated blkfront plays the guest, and the real
//! workers serve the rings. Each test checks what xenstore, the guest and the workers see.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::path::Path;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use blkif::Protocol;
use support::daemon::{disk, hotplug};
use support::driver::{Call, Daemon};
use support::storage_file;
use support::{eventually, pattern, round_trip, Host, EVENTUALLY};
use tokenback::limiter::{LimitConfig, VbdConfig};
use tokenback::platform::DomId;
use tokenback::xenbus::DeviceId;
use tokenback_tools::blkfront::{Blkfront, Error, Options};
use tokenback_tools::toolstack::{DiskPaths, DiskSpec};
use xenstore_wire::client::TxId;
use xenstore_wire::perms::{Access, Perm, Perms};

const MIB: u64 = 1 << 20;
const XVDA: u16 = 51712;

fn write(host: &mut Host, path: &str, value: &str) {
    host.toolstack
        .xenstore()
        .write(TxId::NONE, path, value.as_bytes())
        .unwrap();
}

fn state(host: &mut Host, dir: &str) -> Option<String> {
    host.read(&format!("{dir}/state"))
}

fn await_state(host: &mut Host, dir: &str, want: &str) {
    eventually(&format!("{dir} in state {want}"), || {
        state(host, dir).as_deref() == Some(want)
    });
}

/// The hotplug script: QoS keys first, then physical-device-path, then hotplug-status.
fn options(host: &Host, domid: DomId, tune: impl FnOnce(&mut Options)) -> Options {
    let mut opts = Options::new(host.run.clone(), domid, XVDA);
    opts.timeout = EVENTUALLY;
    tune(&mut opts);
    opts
}

fn start_front(
    host: &Host,
    domid: DomId,
    tune: impl FnOnce(&mut Options),
) -> JoinHandle<Result<Blkfront, Error>> {
    let opts = options(host, domid, tune);
    thread::spawn(move || Blkfront::connect(opts))
}

/// Adds a disk on `storage` to a new guest and connects it as xl would.
fn attach(
    host: &mut Host,
    storage: &Path,
    qos: &[(&str, &str)],
    tune: impl FnOnce(&mut Options),
) -> (Blkfront, DiskPaths, DeviceId) {
    let domid = host.new_guest();
    attach_to(host, domid, storage, qos, tune)
}

/// Adds a disk on `storage` to guest `domid` and connects it as xl would, checking that the
/// back end waits in InitWait for the hotplug script.
fn attach_to(
    host: &mut Host,
    domid: DomId,
    storage: &Path,
    qos: &[(&str, &str)],
    tune: impl FnOnce(&mut Options),
) -> (Blkfront, DiskPaths, DeviceId) {
    let paths = host.toolstack.add_disk(domid, &disk(storage, qos)).unwrap();
    let front = start_front(host, domid, tune);
    // The front end publishes its rings on InitWait, and the back end stays there.
    await_state(host, &paths.frontend, "3");
    assert_eq!(state(host, &paths.backend).as_deref(), Some("2"));
    assert_eq!(host.read(&format!("{}/sectors", paths.backend)), None);
    hotplug(host, &paths);
    let front = front.join().unwrap().expect("the front end connects");
    assert_eq!(state(host, &paths.backend).as_deref(), Some("4"));
    let id = DeviceId {
        frontend_id: domid,
        devid: u32::from(XVDA),
    };
    (front, paths, id)
}

/// The guest's blkfront closes the disk: Closing, then Closed once the back end is.
fn close_front(host: &mut Host, front: Blkfront, paths: &DiskPaths) {
    front.close().unwrap();
    await_state(host, &paths.backend, "6");
}

/// The guest probes the disk again (its state back to Initialising) and connects.
fn reopen_front(
    host: &mut Host,
    paths: &DiskPaths,
    domid: DomId,
    tune: impl FnOnce(&mut Options),
) -> Blkfront {
    let front = Blkfront::reconnect(options(host, domid, tune));
    let front = front.expect("the front end connects again");
    assert_eq!(state(host, &paths.backend).as_deref(), Some("4"));
    front
}

/// xl block-detach: online 0 and Closing; the guest closes; the back end drains and goes
/// Closed; the toolstack removes the directories.
fn detach(host: &mut Host, mut front: Blkfront, paths: &DiskPaths) {
    host.toolstack.detach_disk(paths).unwrap();
    assert!(front.handle_backend_events(EVENTUALLY).unwrap());
    assert!(front.is_closed());
    await_state(host, &paths.backend, "6");
    drop(front);
    host.toolstack.remove_disk(paths).unwrap();
}

fn count(calls: &[Call], call: &Call) -> usize {
    calls.iter().filter(|c| *c == call).count()
}

#[test]
fn serves_after_the_hotplug_script_reconnects_after_a_close_and_cleans_up_on_detach() {
    let mut host = Host::start("driver-lifecycle");
    let daemon = Daemon::start(&host);
    let file = storage_file(&host, "disk.img", 8 * MIB);
    let (mut front, paths, id) = attach(&mut host, &file, &[], |_| {});
    assert_eq!(front.disk().sectors, 8 * MIB / 512);
    round_trip(&mut front, &file, 0, 4096, 1);
    round_trip(&mut front, &file, 77, 3 * 4096, 2);

    // The guest closes, then connects again: the same storage, served again.
    close_front(&mut host, front, &paths);
    assert_eq!(count(&daemon.calls(), &Call::Disconnect(id)), 1);
    let mut front = reopen_front(&mut host, &paths, id.frontend_id, |_| {});
    round_trip(&mut front, &file, 8, 512, 3);
    let connects = daemon
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Connect(c_id, _) if *c_id == id))
        .count();
    assert_eq!(connects, 2);

    // Detached: drained, Closed, forgotten.
    detach(&mut host, front, &paths);
    assert_eq!(count(&daemon.calls(), &Call::Disconnect(id)), 2);
    // Nothing was written back into the removed directory.
    let quiet = Instant::now();
    while quiet.elapsed().as_millis() < 200 {
        assert_eq!(
            host.read(&paths.backend),
            None,
            "backend directory recreated"
        );
    }

    // The same devid added again is a new VBD, served from scratch.
    let spec = DiskSpec::xvda(&file.display().to_string());
    let paths = host.toolstack.add_disk(id.frontend_id, &spec).unwrap();
    await_state(&mut host, &paths.backend, "2");
    let front = start_front(&host, id.frontend_id, |_| {});
    hotplug(&mut host, &paths);
    let mut front = front.join().unwrap().expect("connects after re-adding");
    round_trip(&mut front, &file, 16, 4096, 4);
    assert!(!daemon.is_finished());
}

#[test]
fn a_destroyed_guest_is_released_and_the_others_are_still_served() {
    let mut host = Host::start("driver-release");
    let daemon = Daemon::start(&host);
    let file_a = storage_file(&host, "a.img", 4 * MIB);
    let file_b = storage_file(&host, "b.img", 4 * MIB);
    let (front_a, paths_a, id_a) = attach(&mut host, &file_a, &[], |_| {});
    let (mut front_b, _, _) = attach(&mut host, &file_b, &[], |_| {});

    // The guest dies without closing anything: @releaseDomain tears its VBD down.
    host.toolstack.destroy_guest(id_a.frontend_id).unwrap();
    drop(front_a);
    eventually("guest A's VBD disconnected", || {
        daemon.calls().contains(&Call::Disconnect(id_a))
    });
    assert_eq!(
        host.read(&paths_a.backend),
        None,
        "backend directory recreated"
    );

    round_trip(&mut front_b, &file_b, 0, 8192, 5);

    // @releaseDomain alone does it: the front end's nodes made dom0's, so that xenstored
    // deletes none of them when the domain dies, and the directories left in place (the
    // toolstack has not cleaned up yet). Nothing is written there.
    let file_d = storage_file(&host, "d.img", 4 * MIB);
    let (front_d, paths_d, id_d) = attach(&mut host, &file_d, &[], |_| {});
    let xs = host.toolstack.xenstore();
    let dom0s = Perms::new(vec![
        Perm {
            access: Access::None,
            domid: 0,
        },
        Perm {
            access: Access::Both,
            domid: id_d.frontend_id.0,
        },
    ])
    .unwrap();
    let mut nodes = vec![paths_d.frontend.clone()];
    let keys = xs.directory(TxId::NONE, &paths_d.frontend).unwrap();
    nodes.extend(keys.iter().map(|k| format!("{}/{k}", paths_d.frontend)));
    for node in &nodes {
        xs.set_perms(TxId::NONE, node, &dom0s).unwrap();
    }
    host.run.destroy_domain(id_d.frontend_id).unwrap();
    drop(front_d);
    eventually("guest D's VBD disconnected", || {
        daemon.calls().contains(&Call::Disconnect(id_d))
    });
    assert_eq!(state(&mut host, &paths_d.backend).as_deref(), Some("4"));
    assert_eq!(state(&mut host, &paths_d.frontend).as_deref(), Some("4"));
    let file_c = storage_file(&host, "c.img", 4 * MIB);
    let (mut front_c, _, _) = attach(&mut host, &file_c, &[], |_| {});
    round_trip(&mut front_c, &file_c, 3, 512, 6);
    assert!(!daemon.is_finished());
}

#[test]
fn bad_toolstack_keys_or_missing_storage_fail_only_their_vbd() {
    let mut host = Host::start("driver-errors");
    let daemon = Daemon::start(&host);

    // A foreign tool's directory with a mode that is neither r nor w.
    let domid = host.new_guest();
    let bad = format!("/local/domain/0/backend/vbd/{}/{XVDA}", domid.0);
    let keys = [
        (
            "frontend",
            format!("/local/domain/{}/device/vbd/{XVDA}", domid.0),
        ),
        ("frontend-id", domid.0.to_string()),
        ("mode", "rw".into()),
        ("online", "1".into()),
        ("state", "1".into()),
    ];
    host.toolstack
        .xenstore()
        .transaction(|xs, tx| {
            for (key, value) in &keys {
                xs.write(tx, &format!("{bad}/{key}"), value.as_bytes())?;
            }
            Ok(())
        })
        .unwrap();
    let error_node = format!("/local/domain/0/error/backend/vbd/{}/{XVDA}/error", domid.0);
    eventually("the bad directory's error node", || {
        host.read(&error_node).is_some()
    });
    assert_eq!(
        host.read(&error_node).unwrap(),
        "22 mode: \"rw\" is neither r nor w"
    );
    await_state(&mut host, &bad, "5");

    // Storage that does not exist: the VBD fails when the hotplug script is done.
    let missing = host.new_guest();
    let spec = DiskSpec::xvda("/nonexistent/disk.img");
    let paths = host.toolstack.add_disk(missing, &spec).unwrap();
    let front = start_front(&host, missing, |_| {});
    await_state(&mut host, &paths.backend, "2");
    // (A toolstack without the script's checks: the path written directly.)
    write(
        &mut host,
        &format!("{}/physical-device-path", paths.backend),
        "/nonexistent/disk.img",
    );
    await_state(&mut host, &paths.backend, "5");
    let error_node = format!(
        "/local/domain/0/error/backend/vbd/{}/{XVDA}/error",
        missing.0
    );
    let error = host.read(&error_node).expect("an error node");
    assert!(
        error.starts_with("5 opening storage: /nonexistent/disk.img"),
        "{error}"
    );
    assert!(matches!(
        front.join().unwrap(),
        Err(Error::BackendClosed { state: 5 })
    ));

    // Another guest is served all the same.
    let file = storage_file(&host, "good.img", 4 * MIB);
    let (mut front, _, good) = attach(&mut host, &file, &[], |_| {});
    round_trip(&mut front, &file, 0, 4096, 7);
    // Only it reached the workers.
    let connected: Vec<DeviceId> = (daemon.calls().iter())
        .filter_map(|c| match c {
            Call::Connect(id, _) => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(connected, [good]);
}

#[test]
fn qos_keys_are_honoured_unless_invalid_or_guest_writable() {
    let mut host = Host::start("driver-qos");
    let daemon = Daemon::start(&host);
    let paced = [("tokens-refill", "40"), ("tokens-max", "0")];

    // Good keys: in force, and a stale qos-error goes.
    let file = storage_file(&host, "paced.img", 4 * MIB);
    let domid = host.new_guest();
    let paths = host
        .toolstack
        .add_disk(domid, &disk(&file, &paced))
        .unwrap();
    write(&mut host, &format!("{}/qos-error", paths.backend), "stale");
    let front = start_front(&host, domid, |_| {});
    await_state(&mut host, &paths.backend, "2");
    hotplug(&mut host, &paths);
    let mut front = front.join().unwrap().unwrap();
    let id = DeviceId {
        frontend_id: domid,
        devid: u32::from(XVDA),
    };
    let expected = VbdConfig::parse(paced).unwrap();
    assert!(daemon
        .calls()
        .contains(&Call::Connect(id, Box::new(expected))));
    assert_eq!(host.read(&format!("{}/qos-error", paths.backend)), None);
    // 40 requests a second, no burst: 12 requests take at least 11/40 s.
    let start = Instant::now();
    for i in 0..12 {
        front.write(i * 8, &pattern(512, i as u8)).unwrap();
    }
    assert!(start.elapsed().as_millis() >= 250, "{:?}", start.elapsed());

    // A value that does not parse (written by hand: the hotplug script refuses it): refused
    // with its reason, served without limits.
    let file = storage_file(&host, "bad.img", 4 * MIB);
    let domid = host.new_guest();
    let paths = host.toolstack.add_disk(domid, &disk(&file, &[])).unwrap();
    write(
        &mut host,
        &format!("{}/tokens-refill", paths.backend),
        "fast",
    );
    let front = start_front(&host, domid, |_| {});
    hotplug(&mut host, &paths);
    let mut front = front.join().unwrap().unwrap();
    let id = DeviceId {
        frontend_id: domid,
        devid: u32::from(XVDA),
    };
    let reason = host.read(&format!("{}/qos-error", paths.backend)).unwrap();
    assert!(reason.contains("tokens-refill"), "{reason}");
    assert!(daemon.calls().contains(&Call::Connect(id, Box::default())));
    round_trip(&mut front, &file, 0, 4096, 8);

    // Keys in a directory the guest may write: refused whole.
    let file = storage_file(&host, "open.img", 4 * MIB);
    let domid = host.new_guest();
    let paths = host
        .toolstack
        .add_disk(domid, &disk(&file, &paced))
        .unwrap();
    let open = Perms::new(vec![
        Perm {
            access: Access::None,
            domid: 0,
        },
        Perm {
            access: Access::Both,
            domid: domid.0,
        },
    ])
    .unwrap();
    host.toolstack
        .xenstore()
        .set_perms(TxId::NONE, &paths.backend, &open)
        .unwrap();
    let front = start_front(&host, domid, |_| {});
    await_state(&mut host, &paths.backend, "2");
    hotplug(&mut host, &paths);
    let mut front = front.join().unwrap().unwrap();
    let reason = host.read(&format!("{}/qos-error", paths.backend)).unwrap();
    assert!(reason.contains("writable by the guest"), "{reason}");
    let id = DeviceId {
        frontend_id: domid,
        devid: u32::from(XVDA),
    };
    assert!(daemon.calls().contains(&Call::Connect(id, Box::default())));
    round_trip(&mut front, &file, 0, 4096, 9);
}

#[test]
fn stop_hands_the_workers_back_and_leaves_the_vbd_connected() {
    let mut host = Host::start("driver-stop");
    let mut daemon = Daemon::start(&host);
    let file = storage_file(&host, "disk.img", 4 * MIB);
    let (mut front, paths, _) = attach(&mut host, &file, &[], |_| {});
    round_trip(&mut front, &file, 0, 4096, 10);
    assert!(!daemon.is_finished());
    let workers = daemon.stop();
    // Still served until the workers stop.
    round_trip(&mut front, &file, 8, 4096, 11);
    workers.shutdown();
    assert_eq!(state(&mut host, &paths.backend).as_deref(), Some("4"));
    assert_eq!(state(&mut host, &paths.frontend).as_deref(), Some("4"));
}

#[test]
fn every_protocol_ring_order_and_queue_count_connects_and_moves_data() {
    let mut host = Host::start("driver-layouts");
    let _daemon = Daemon::start(&host);
    let file = storage_file(&host, "disk.img", 8 * MIB);
    let domid = host.new_guest();
    let mut seed = 0u8;
    for protocol in [Protocol::Native, Protocol::X86_32, Protocol::X86_64] {
        for order in 0..=4u8 {
            for queues in 1..=4u32 {
                // A fresh disk each time, so that no key of the last layout is left.
                let (mut front, paths, _) = attach_to(&mut host, domid, &file, &[], |o| {
                    o.protocol = protocol;
                    o.max_ring_page_order = order;
                    o.max_queues = queues;
                });
                let what = format!("{protocol:?} order {order}, {queues} queues");
                assert_eq!(front.queues(), queues as usize, "{what}");
                let key = format!("{}/ring-page-order", paths.frontend);
                let advertised = (order > 0).then(|| order.to_string());
                assert_eq!(host.read(&key), advertised, "{what}");
                // One request per queue at least (they are spread round robin).
                for q in 0..u64::from(queues) {
                    seed = seed.wrapping_add(1);
                    round_trip(&mut front, &file, q * 64, 4096, seed);
                }
                detach(&mut host, front, &paths);
            }
        }
    }
}

#[test]
fn groups_are_sent_to_the_workers_and_a_removed_groups_members_leave_it_first() {
    let mut host = Host::start("driver-groups");
    let daemon = Daemon::start(&host);
    let groups = "/local/domain/0/tokenback/groups";
    let limits = |rate: &str| Box::new(LimitConfig::parse([("iops-total", rate)]).unwrap());
    let has = |call: &Call| {
        eventually(&format!("{call:?} sent to the workers"), || {
            daemon.calls().contains(call)
        });
    };
    write(&mut host, &format!("{groups}/east/iops-total"), "1000");
    has(&Call::Group("east".into(), limits("1000")));
    let file = storage_file(&host, "disk.img", 4 * MIB);
    let (mut front, paths, id) = attach(&mut host, &file, &[("group", "east")], |_| {});
    let member = VbdConfig::parse([("group", "east")]).unwrap();
    has(&Call::Connect(id, Box::new(member.clone())));
    round_trip(&mut front, &file, 0, 4096, 20);

    // Retuned; a bad set is refused in the group's qos-error and sent nowhere.
    write(&mut host, &format!("{groups}/east/iops-total"), "2000");
    has(&Call::Group("east".into(), limits("2000")));
    write(&mut host, &format!("{groups}/east/iops-total"), "lots");
    eventually("the group's qos-error", || {
        host.read(&format!("{groups}/east/qos-error"))
            .is_some_and(|e| e.contains("`lots`"))
    });
    let sent = |calls: &[Call]| {
        (calls.iter())
            .filter(|c| matches!(c, Call::Group(..)))
            .count()
    };
    assert_eq!(sent(&daemon.calls()), 2, "{:?}", daemon.calls());
    write(&mut host, &format!("{groups}/east/iops-total"), "2000");
    eventually("the group's qos-error gone", || {
        host.read(&format!("{groups}/east/qos-error")).is_none()
    });

    // A group on the other worker (the least loaded): joining it moves the VBD there.
    write(&mut host, &format!("{groups}/west/iops-total"), "500");
    has(&Call::Group("west".into(), limits("500")));
    write(&mut host, &format!("{}/group", paths.backend), "west");
    has(&Call::Moved(id));
    round_trip(&mut front, &file, 8, 4096, 21);

    // Removed while the VBD is in it: first the member leaves, then the group goes.
    host.toolstack
        .xenstore()
        .rm(TxId::NONE, &format!("{groups}/west"))
        .unwrap();
    has(&Call::RemoveGroup("west".into()));
    let calls = daemon.calls();
    let at = |want: &Call| calls.iter().position(|c| c == want).unwrap();
    let own = Call::Retune(id, Box::default());
    assert!(
        at(&own) < at(&Call::RemoveGroup("west".into())),
        "{calls:?}"
    );
    assert_eq!(
        host.read(&format!("{}/qos-error", paths.backend))
            .as_deref(),
        Some("group west does not exist")
    );
    round_trip(&mut front, &file, 16, 4096, 22);
}
