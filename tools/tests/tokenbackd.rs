//! The tokenbackd binary serving a simulated host (`--sim DIR`): the xenbus driver and the
//! workers wired up as the daemon runs them, stopped by a signal.
#![allow(clippy::tests_outside_test_module)]

mod support;

use support::daemon::{attach, Tokenbackd};
use support::workers::storage_file;
use support::{pattern, Host};

#[test]
fn serves_a_guest_and_leaves_it_connected_on_sigterm() {
    let mut host = Host::start("tokenbackd-serve");
    let mut daemon = Tokenbackd::start(&host.run, &["--workers", "2", "--io-engine", "threads"]);
    let file = storage_file(&host, "disk.img", 4 << 20);
    let (mut front, paths) = attach(&mut host, &file, &[], |o| o.max_queues = 2);
    assert_eq!(front.queues(), 2);
    let data = pattern(8192, 12);
    front.write(16, &data).unwrap();
    let mut back = vec![0; data.len()];
    front.read(16, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(
        &std::fs::read(&file).unwrap()[16 * 512..16 * 512 + 8192],
        &data[..]
    );

    let status = daemon.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status}; its log:\n{}", daemon.log());
    assert_eq!(
        host.read(&format!("{}/state", paths.backend)).as_deref(),
        Some("4")
    );
    assert!(
        daemon.log().contains("every VBD left connected"),
        "{}",
        daemon.log()
    );
}
