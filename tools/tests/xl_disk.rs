//! xl disk lines end to end: the simulated toolstack parses the line as libxl does, writes
//! the disk's nodes, runs xl-scripts/block-tokenback (with Debian's xenstore-utils against
//! the simulated xenstored) once tokenbackd has the VBD in InitWait, and the guest does
//! verified I/O; detaching runs the script's `remove` and leaves nothing behind.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use support::daemon::Tokenbackd;
use support::loop_device::LoopDevice;
use support::{pattern, round_trip, storage_file, Host, EVENTUALLY};
use tokenback::limiter::VbdConfig;
use tokenback_tools::blkfront::Blkfront;
use tokenback_tools::toolstack::xl_disk::{self, devid, XlDisk, XlDiskError};
use tokenback_tools::toolstack::{Detach, DiskPaths, ToolstackError};
use xenstore_wire::client::blocking::Client;
use xenstore_wire::client::Endpoint;

const MIB: u64 = 1 << 20;
const QOS_KEYS: [&str; 4] = ["tokens-refill", "tokens-max", "iops-read", "group"];

/// The disk line an operator writes for block-tokenback.
fn line(target: &str) -> String {
    format!("vdev=xvda, access=rw, script=block-tokenback, target={target}")
}

/// `xl block-attach` of `line` to a new guest, whose front end then connects.
fn attach(host: &mut Host, line: &str) -> (Blkfront, DiskPaths) {
    let disk = XlDisk::parse(line).unwrap();
    let domid = host.new_guest();
    let paths = host.toolstack.add_disk(domid, &disk.spec()).unwrap();
    let mut opts = host.options(domid);
    opts.devid = disk.devid;
    host.toolstack.hotplug_add(&paths, EVENTUALLY).unwrap();
    (Blkfront::connect(opts).unwrap(), paths)
}

/// The guest closes its disk, `xl block-detach` runs, and no node of the disk is left.
fn detach(host: &mut Host, front: Blkfront, paths: &DiskPaths) {
    front.close().unwrap();
    host.toolstack
        .block_detach(paths, Detach::Safe, EVENTUALLY)
        .unwrap();
    assert_eq!(host.read(&paths.backend), None, "backend directory left");
    assert_eq!(host.read(&paths.frontend), None, "frontend directory left");
}

fn key(host: &mut Host, paths: &DiskPaths, key: &str) -> Option<String> {
    host.read(&format!("{}/{key}", paths.backend))
}

#[test]
fn parses_disk_lines_as_libxl_does() {
    let disk = XlDisk::parse(&line("/srv/a.img?iops-read=500&tokens-max=6,0")).unwrap();
    assert_eq!(disk.vdev, "xvda");
    assert_eq!(disk.devid, 51712);
    // target= takes the rest of the line, commas and all.
    assert_eq!(disk.target, "/srv/a.img?iops-read=500&tokens-max=6,0");
    assert!(disk.writable);
    assert_eq!(disk.script, "block-tokenback");
    // Positionals: target, format, vdev, access; the default script is Xen's block.
    let old = XlDisk::parse("/dev/vg0/g1,raw,xvdb,r").unwrap();
    assert_eq!((old.devid, old.writable), (51728, false));
    assert_eq!(old.script, "block");
    assert_eq!(
        [
            devid("xvda1"),
            devid("sda"),
            devid("hda"),
            devid("hdc"),
            devid("768")
        ],
        [Some(51713), Some(2048), Some(768), Some(5632), Some(768)]
    );
    assert_eq!(devid("xvdaa"), None);
    let err = |l: &str| XlDisk::parse(l).unwrap_err();
    assert_eq!(
        err("vdev=xvda, vdev=xvdb, target=/x"),
        XlDiskError::Repeated("vdev")
    );
    assert_eq!(err("target=/x"), XlDiskError::NoVdev);
    assert_eq!(err("vdev=xvda"), XlDiskError::NoTarget);
    assert!(matches!(
        err("vdev=xvda, colour=red, target=/x"),
        XlDiskError::Unknown(_)
    ));
    assert!(matches!(
        err("vdev=xvda, format=qcow2, target=/x"),
        XlDiskError::Unsupported(_)
    ));
    assert!(matches!(
        err("vdev=xvda, access=rwx, target=/x"),
        XlDiskError::BadValue { key: "access", .. }
    ));
}

#[test]
fn a_file_with_and_without_qos_attaches_serves_and_detaches_cleanly() {
    let mut host = Host::start("xl-file");
    let _daemon = Tokenbackd::start(&host.run, &[]);
    for (name, options) in [
        ("plain.img", ""),
        ("qos.img", "?iops-read=5000&tokens-refill=20000"),
    ] {
        let file = storage_file(&host, name, 4 * MIB);
        let (mut front, paths) = attach(&mut host, &line(&format!("{}{options}", file.display())));
        assert_eq!(
            key(&mut host, &paths, "physical-device-path"),
            Some(file.display().to_string())
        );
        // A file needs no loop device: no physical-device.
        assert_eq!(key(&mut host, &paths, "physical-device"), None);
        assert_eq!(
            key(&mut host, &paths, "hotplug-status").as_deref(),
            Some("connected")
        );
        let iops = key(&mut host, &paths, "iops-read");
        assert_eq!(iops.is_some(), !options.is_empty(), "{options}");
        round_trip(&mut front, &file, 0, 4096, 1);
        round_trip(&mut front, &file, 1000, 64 * 1024, 2);
        detach(&mut host, front, &paths);
    }
}

#[test]
fn a_loop_device_with_and_without_qos_attaches_serves_and_detaches_cleanly() {
    let mut host = Host::start("xl-loop");
    let _daemon = Tokenbackd::start(&host.run, &[]);
    // Outside tmpfs, so that the loop device's direct I/O works.
    let file =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("xl-loop-{}.img", std::process::id()));
    std::fs::File::create(&file)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    let device = LoopDevice::attach(&file);
    let rdev = std::fs::metadata(&device.0).unwrap().rdev();
    let hex = format!("{:x}:{:x}", libc::major(rdev), libc::minor(rdev));
    for options in ["", "?bps-total=100000000&max-inflight=8"] {
        let target = format!("{}{options}", device.0.display());
        let (mut front, paths) = attach(&mut host, &line(&target));
        assert_eq!(key(&mut host, &paths, "physical-device"), Some(hex.clone()));
        assert_eq!(
            key(&mut host, &paths, "physical-device-path"),
            Some(device.0.display().to_string())
        );
        assert_eq!(
            key(&mut host, &paths, "bps-total").is_some(),
            !options.is_empty()
        );
        round_trip(&mut front, &device.0, 8, 4096, 3);
        detach(&mut host, front, &paths);
    }
    drop(device);
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn bad_targets_fail_with_their_message_and_leave_nothing_behind() {
    let mut host = Host::start("xl-bad");
    let _daemon = Tokenbackd::start(&host.run, &[]);
    let file = storage_file(&host, "good.img", 4 * MIB);
    let good = file.display().to_string();
    let cases = [
        (format!("{good}?colour=red"), "unknown QoS key `colour'"),
        (
            format!("{good}?iops-read=fast"),
            "iops-read: `fast' is not a whole number",
        ),
        (
            format!("{good}?iops-read=10000000000000"),
            "iops-read: 10000000000000 is out of range",
        ),
        (
            format!("{good}?iops-read-max=5"),
            "iops-read-max needs iops-read",
        ),
        (
            format!("{good}?iops-read=5&iops-read=6"),
            "iops-read is given twice",
        ),
        (format!("{good}?group=a/b"), "group: `a/b' is not a name"),
        (
            format!("{}/missing.img?iops-read=5", host.run.root().display()),
            "does not exist",
        ),
        (
            "disk.img?iops-read=5".to_owned(),
            "`disk.img' is not an absolute path",
        ),
        (
            "/dev/null?iops-read=5".to_owned(),
            "is neither a block device nor a regular file",
        ),
    ];
    for (target, message) in cases {
        let disk = XlDisk::parse(&line(&target)).unwrap();
        let domid = host.new_guest();
        let paths = host.toolstack.add_disk(domid, &disk.spec()).unwrap();
        let err = host.toolstack.hotplug_add(&paths, EVENTUALLY).unwrap_err();
        let ToolstackError::Hotplug { message: got, .. } = &err else {
            panic!("{target}: {err}");
        };
        assert!(got.contains(message), "{target}: {got}");
        let error = key(&mut host, &paths, "hotplug-error").unwrap();
        assert!(error.contains(message), "{target}: {error}");
        assert_eq!(
            key(&mut host, &paths, "hotplug-status").as_deref(),
            Some("error")
        );
        for written in QOS_KEYS
            .iter()
            .chain(&["physical-device", "physical-device-path"])
        {
            assert_eq!(
                key(&mut host, &paths, written),
                None,
                "{target}: {written} left"
            );
        }
        // The VBD waits in InitWait for storage it never gets; the guest has no front end
        // running, so `xl block-detach -f` takes it all away.
        assert_eq!(key(&mut host, &paths, "state").as_deref(), Some("2"));
        host.toolstack
            .block_detach(&paths, Detach::Forced, EVENTUALLY)
            .unwrap();
        assert_eq!(host.read(&paths.backend), None, "{target}: backend left");
    }
}

#[test]
fn qos_keys_come_before_the_storage_and_pace_the_first_request() {
    let mut host = Host::start("xl-order");
    let _daemon = Tokenbackd::start(&host.run, &[]);
    let file = storage_file(&host, "paced.img", 4 * MIB);
    let disk = XlDisk::parse(&line(&format!(
        "{}?tokens-refill=40&tokens-max=0",
        file.display()
    )))
    .unwrap();
    let domid = host.new_guest();
    let paths = host.toolstack.add_disk(domid, &disk.spec()).unwrap();
    let mut watcher = Client::connect(Endpoint::Socket(host.run.xenstored_socket())).unwrap();
    watcher.watch(&paths.backend, "order").unwrap();
    host.toolstack.hotplug_add(&paths, EVENTUALLY).unwrap();
    let mut order = Vec::new();
    while let Some(event) = watcher
        .next_event(Some(Duration::from_millis(200)))
        .unwrap()
    {
        if let Some(key) = event.path.strip_prefix(&format!("{}/", paths.backend)) {
            order.push(key.to_owned());
        }
    }
    let at = |k: &str| {
        order
            .iter()
            .position(|o| o == k)
            .unwrap_or_else(|| panic!("{k}: {order:?}"))
    };
    assert!(
        at("tokens-refill") < at("physical-device-path"),
        "{order:?}"
    );
    assert!(at("tokens-max") < at("physical-device-path"), "{order:?}");
    assert!(
        at("physical-device-path") < at("hotplug-status"),
        "{order:?}"
    );

    // 40 requests a second from the first, no burst: 12 requests take at least 11/40 s.
    let mut opts = host.options(domid);
    opts.devid = disk.devid;
    let mut front = Blkfront::connect(opts).unwrap();
    let start = Instant::now();
    for i in 0..12u8 {
        front.write(u64::from(i) * 8, &pattern(512, i)).unwrap();
    }
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    detach(&mut host, front, &paths);
}

#[test]
fn the_example_domain_configs_disk_lines_parse_and_their_keys_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/xl");
    let mut lines = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let quoted = text.split('"').skip(1).step_by(2);
        for disk_line in quoted.filter(|q| q.contains("script=block-tokenback")) {
            lines += 1;
            let qos = xl_disk::target_qos(disk_line.rsplit("target=").next().unwrap());
            let pairs = qos.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            VbdConfig::parse(pairs).unwrap_or_else(|e| panic!("{disk_line}: {e}"));
            match XlDisk::parse(disk_line) {
                Ok(disk) => assert!(disk.target.starts_with('/'), "{disk_line}"),
                // vbd3 is beyond the simulated toolstack.
                Err(e) => assert!(disk_line.contains("backendtype=tap"), "{disk_line}: {e}"),
            }
        }
    }
    assert!(lines >= 7, "{lines} disk lines in {}", dir.display());
}
