//! The guest in its own process, as on the simulated host: this test binary runs itself
//! again as the guest (the ignored test `guest_side`), so blkfront and the scripted back end
//! share only the run directory's files, sockets and xenstore.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{eventually, pattern, BackendConfig, Host, EVENTUALLY};
use tokenback::platform::sim::RunDir;
use tokenback::platform::DomId;
use tokenback_tools::blkfront::{Blkfront, Options};

const RUN_DIR: &str = "BLKFRONT_TEST_RUN_DIR";
const DOMID: &str = "BLKFRONT_TEST_DOMID";
/// 16 pages: an indirect request.
const LEN: usize = 16 * 4096;

#[test]
fn a_guest_process_writes_reads_and_closes() {
    let mut host = Host::start("process");
    let (domid, paths, backend) = host.guest_with_disk(BackendConfig::default());
    let mut guest = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "guest_side", "--nocapture"])
        .env(RUN_DIR, host.run.root())
        .env(DOMID, domid.0.to_string())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + EVENTUALLY;
    let status = loop {
        if let Some(status) = guest.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = guest.kill();
            panic!("the guest process did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "guest process failed: {status}");
    let state = format!("{}/state", paths.backend);
    eventually("the back end Closed", || {
        host.read(&state).as_deref() == Some("6")
    });
    assert_eq!(&backend.disk.lock().unwrap()[..LEN], &pattern(LEN, 42)[..]);
    let seen = backend.finish();
    assert_eq!(seen.indirect_segments, [16, 16]);
}

/// The guest's side, run only by the test above in a process of its own.
#[test]
#[ignore = "the guest process of a_guest_process_writes_reads_and_closes"]
fn guest_side() {
    let run = RunDir::open(&PathBuf::from(std::env::var(RUN_DIR).unwrap())).unwrap();
    let domid = DomId(std::env::var(DOMID).unwrap().parse().unwrap());
    let mut opts = Options::new(run, domid, 51712);
    opts.timeout = EVENTUALLY;
    let mut front = Blkfront::connect(opts).unwrap();
    let data = pattern(LEN, 42);
    front.write(0, &data).unwrap();
    let mut back = vec![0; LEN];
    front.read(0, &mut back).unwrap();
    assert_eq!(back, data);
    front.close().unwrap();
}
