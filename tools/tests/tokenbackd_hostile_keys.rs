//! A guest that writes garbage into its own frontend keys, against tokenbackd as a process.
//! The guest writes through its own xenstore connection (the domain socket), as a guest
//! kernel does: bad ring refs, ring orders and queue counts above what we advertised, missing
//! queue directories, bad event channels, unknown protocols, values of nearly the largest
//! size xenstore takes, and `state` values that are garbage or change faster than anyone
//! reads them. Each time that VBD fails with its reason in its `error` node and goes Closing
//! (or is dropped, as Linux drops a device whose front end's state reads as Unknown), the
//! daemon keeps running, and a neighbour guest on the same daemon keeps verifying its I/O.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use support::daemon::{attach, hotplug, Tokenbackd};
use support::neighbour::Neighbour;
use support::{eventually, Host};
use tokenback::platform::DomId;
use tokenback_tools::blkfront::Blkfront;
use tokenback_tools::toolstack::{DiskPaths, DiskSpec};
use xenstore_wire::client::blocking::Client;
use xenstore_wire::client::{Endpoint, TxId};

const SECTORS: u64 = 8192;

/// The daemon, the neighbour, and the hostile guests a test adds.
struct Bed {
    host: Host,
    daemon: Tokenbackd,
    stop: Arc<AtomicBool>,
    neighbour: Option<Neighbour>,
    disks: usize,
}

/// A guest whose disk the toolstack added and the hotplug script set up, but whose front end
/// is played by hand through the guest's own xenstore connection.
struct Guest {
    domid: DomId,
    xs: Client,
    paths: DiskPaths,
}

impl Guest {
    /// Writes `value` to the frontend key `key`.
    fn write(&mut self, key: &str, value: &str) {
        let path = format!("{}/{key}", self.paths.frontend);
        self.xs
            .write(TxId::NONE, &path, value.as_bytes())
            .unwrap_or_else(|e| panic!("the guest writes {} bytes to {key}: {e}", value.len()));
    }

    /// Writes `keys` (the ring keys of a front end that granted nothing) over a base of one
    /// queue, then goes Initialised.
    fn initialised(&mut self, keys: &[(&str, String)]) {
        let base = [
            ("ring-ref", "8"),
            ("event-channel", "5"),
            ("protocol", "x86_64-abi"),
        ];
        for (key, value) in base {
            self.write(key, value);
        }
        for (key, value) in keys {
            self.write(key, value);
        }
        self.write("state", "3");
    }
}

impl Bed {
    fn start(name: &str) -> Bed {
        let mut host = Host::start(name);
        let daemon = Tokenbackd::start(&host.run, &["--workers", "2", "--max-queues", "4"]);
        let file = storage(&host, "neighbour.img");
        let (front, _) = attach(&mut host, &file, &[], |_| {});
        let stop = Arc::new(AtomicBool::new(false));
        let neighbour = Neighbour::start(front, 0, SECTORS, Arc::clone(&stop));
        let bed = Bed {
            host,
            daemon,
            stop,
            neighbour: Some(neighbour),
            disks: 0,
        };
        bed.progress("at the start");
        bed
    }

    /// A new guest with a disk in InitWait, its storage named by the hotplug script.
    fn guest(&mut self) -> Guest {
        let domid = self.host.new_guest();
        let file = storage(&self.host, &format!("hostile{}.img", self.disks));
        self.disks += 1;
        let paths = self
            .host
            .toolstack
            .add_disk(domid, &DiskSpec::xvda(&file.display().to_string()))
            .unwrap();
        hotplug(&mut self.host, &paths);
        let socket = self.host.run.domain_xenstored_socket(domid);
        let xs = Client::connect(Endpoint::Socket(socket)).unwrap();
        Guest { domid, xs, paths }
    }

    fn backend_state(&mut self, guest: &Guest) -> Option<String> {
        self.host.read(&format!("{}/state", guest.paths.backend))
    }

    /// The VBD's `error` node (Linux's xenbus_dev_fatal writes it under our domain's
    /// error/ directory).
    fn error_node(&mut self, guest: &Guest) -> Option<String> {
        let backend = guest.paths.backend.trim_start_matches("/local/domain/0/");
        self.host
            .read(&format!("/local/domain/0/error/{backend}/error"))
    }

    /// The guest's VBD fails: Closing, with `reason` in its error node and the log; the
    /// daemon runs on and the neighbour keeps verifying.
    fn fails(&mut self, guest: &Guest, what: &str, reason: &str) {
        eventually(&format!("{what}: the VBD fails with {reason:?}"), || {
            self.backend_state(guest).as_deref() == Some("5")
                && self.error_node(guest).is_some_and(|e| e.contains(reason))
        });
        // The log is written off the driver's thread, maybe after the error node.
        eventually(&format!("{what}: the log says {reason:?}"), || {
            self.daemon.log().contains(reason)
        });
        self.alive(what);
    }

    fn alive(&mut self, what: &str) {
        assert!(
            self.daemon.is_running(),
            "{what}: log:\n{}",
            self.daemon.log()
        );
        self.progress(&format!("after {what}"));
    }

    fn progress(&self, when: &str) {
        let neighbour = self.neighbour.as_ref().unwrap();
        let before = neighbour.verified();
        eventually(&format!("the neighbour verifies I/O {when}"), || {
            assert!(!neighbour.is_finished(), "the neighbour stopped {when}");
            neighbour.verified() >= before + 3
        });
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let done = self.neighbour.take().unwrap().join();
        assert!(done.unwrap_or_else(|e| panic!("{e}")) > 0);
        assert!(self.daemon.is_running(), "log:\n{}", self.daemon.log());
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        // A failed test still stops the neighbour before the host goes.
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn storage(host: &Host, name: &str) -> PathBuf {
    let path = host.run.root().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .set_len(SECTORS * 512)
        .unwrap();
    path
}

/// What a hostile front end tries, the keys it writes, and the reason the VBD must fail with.
type Case = (&'static str, Vec<(&'static str, String)>, &'static str);

#[test]
fn garbage_in_the_ring_keys_fails_that_vbd_alone() {
    let mut bed = Bed::start("hostile-keys-rings");
    // Nearly the largest value a guest may store (xenstored refuses nodes of 2048 bytes).
    let huge_number = "9".repeat(1900);
    let huge_name = "x".repeat(1900);
    let cases: Vec<Case> = vec![
        (
            "ring-ref not a number",
            vec![("ring-ref", "ring".into())],
            "ring-ref: \"ring\" is not a decimal number",
        ),
        (
            "ring-ref past 32 bits",
            vec![("ring-ref", "4294967296".into())],
            "ring-ref: \"4294967296\" is not a decimal number",
        ),
        (
            "ring-ref that nobody granted",
            vec![("ring-ref", "1000000".into())],
            "mapping rings",
        ),
        (
            "ring-page-order above the advertised 4",
            vec![("ring-page-order", "5".into())],
            "ring-page-order: 5 is above our max-ring-page-order 4",
        ),
        (
            "ring-page-order 2^32 - 1",
            vec![("ring-page-order", "4294967295".into())],
            "ring-page-order: 4294967295 is above",
        ),
        (
            "no queue",
            vec![("multi-queue-num-queues", "0".into())],
            "multi-queue-num-queues: 0 is not in 1..=4",
        ),
        (
            "four billion queues",
            vec![("multi-queue-num-queues", "4000000000".into())],
            "multi-queue-num-queues: 4000000000 is not in 1..=4",
        ),
        (
            "two queues, queue-1 missing",
            vec![
                ("multi-queue-num-queues", "2".into()),
                ("queue-0/ring-ref", "8".into()),
                ("queue-0/event-channel", "5".into()),
            ],
            "queue-1/ring-ref: missing",
        ),
        (
            "event-channel not a number",
            vec![("event-channel", "port five".into())],
            "event-channel: \"port five\" is not a decimal number",
        ),
        (
            "event-channel 0",
            vec![("event-channel", "0".into())],
            "event-channel: event channel port 0 is reserved",
        ),
        (
            "an unknown protocol",
            vec![("protocol", "sparc-abi".into())],
            "sparc-abi",
        ),
        (
            "a ring-ref of 1900 digits",
            vec![("ring-ref", huge_number.clone())],
            "ring-ref: \"99999",
        ),
        (
            "a protocol of 1900 bytes",
            vec![("protocol", huge_name.clone())],
            "protocol: ",
        ),
    ];
    for (what, keys, reason) in cases {
        let mut guest = bed.guest();
        guest.initialised(&keys);
        bed.fails(&guest, what, reason);
    }
    bed.finish();
}

#[test]
fn garbage_states_fail_that_vbd_or_drop_it_alone() {
    let mut bed = Bed::start("hostile-keys-states");
    for (what, state) in [
        ("state 99", "99"),
        ("state InitWait from the front end", "2"),
        ("state Reconfiguring", "7"),
    ] {
        let mut guest = bed.guest();
        guest.write("state", state);
        let reason = format!("saw state {state} at frontend");
        bed.fails(&guest, what, &reason);
    }
    // Not a number reads as Unknown, as Linux's xenbus_read_driver_state: Linux blkback
    // unregisters the device; tokenbackd drops the VBD.
    let huge = "3".repeat(1900);
    for (what, state) in [
        ("state banana", "banana"),
        ("state -1", "-1"),
        ("state empty", ""),
        ("state of 1900 digits", huge.as_str()),
    ] {
        let mut guest = bed.guest();
        let log_before = bed.daemon.log().len();
        guest.write("state", state);
        let domid = guest.domid.0.to_string();
        eventually(&format!("{what}: the VBD is dropped"), || {
            bed.daemon.log()[log_before..]
                .lines()
                .any(|l| l.contains("removed") && l.contains(&format!("domid: {domid}")))
        });
        bed.alive(what);
    }
    bed.finish();
}

#[test]
fn a_state_flipped_faster_than_read_ends_where_it_was_left_and_serves_again() {
    let mut bed = Bed::start("hostile-keys-flips");
    let mut guest = bed.guest();
    for key in [("ring-ref", "1000000"), ("event-channel", "5")] {
        guest.write(key.0, key.1);
    }
    let flips = ["1", "3", "4", "5", "6", "2", "7", "99", "3", "1", "6", "4"];
    for i in 0..600 {
        guest.write("state", flips[i % flips.len()]);
    }
    guest.write("state", "6");
    eventually("the back end ends Closed after the flips", || {
        bed.backend_state(&guest).as_deref() == Some("6")
    });
    bed.alive("600 state flips");
    // A well-behaved front end on the same device is served after all that.
    let domid = guest.domid;
    drop(guest);
    let mut front = Blkfront::reconnect(bed.host.options(domid)).expect("reconnects");
    let data = support::pattern(8192, 7);
    front.write(16, &data).unwrap();
    let mut back = vec![0; data.len()];
    front.read(16, &mut back).unwrap();
    assert!(
        back == data,
        "the reconnected front end reads back what it wrote"
    );
    bed.progress("after the reconnect");
    bed.finish();
}

#[test]
fn a_connected_front_end_flipping_its_state_ends_closed_unmapped_and_serves_again() {
    let mut bed = Bed::start("hostile-keys-connected-flips");
    let file = storage(&bed.host, "flipper.img");
    let (mut front, paths) = attach(&mut bed.host, &file, &[], |o| o.max_queues = 2);
    support::round_trip(&mut front, &file, 64, 8192, 1);
    let domid: u16 = paths.frontend.split('/').nth(3).unwrap().parse().unwrap();
    // The guest's kernel writes its state behind its blkfront's back, through its own
    // connection: every state, valid ring keys in place, faster than the daemon reads them.
    let socket = bed.host.run.domain_xenstored_socket(DomId(domid));
    let mut xs = Client::connect(Endpoint::Socket(socket)).unwrap();
    let state = format!("{}/state", paths.frontend);
    let flips = ["5", "6", "1", "3", "4", "1", "3", "6", "4", "5", "3", "1"];
    for i in 0..600 {
        xs.write(TxId::NONE, &state, flips[i % flips.len()].as_bytes())
            .unwrap();
    }
    xs.write(TxId::NONE, &state, b"6").unwrap();
    let backend_state = format!("{}/state", paths.backend);
    eventually("the back end ends Closed after the flips", || {
        bed.host.read(&backend_state).as_deref() == Some("6")
    });
    assert_eq!(
        front.backend_mapped_pages().unwrap(),
        0,
        "no data page left mapped"
    );
    for queue in 0..front.queues() {
        let raw = front.raw(queue).unwrap();
        raw.end_ring()
            .unwrap_or_else(|e| panic!("queue {queue}'s ring is still mapped: {e}"));
    }
    bed.alive("600 state flips of a connected front end");
    drop(front);
    let mut front = Blkfront::reconnect(bed.host.options(DomId(domid))).expect("reconnects");
    support::round_trip(&mut front, &file, 128, 8192, 2);
    bed.progress("after the reconnect");
    bed.finish();
}
