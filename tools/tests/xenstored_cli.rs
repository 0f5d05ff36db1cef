//! tokenback-xenstored's command line and log format.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tokenback-xenstored");

#[test]
fn help_exits_0_and_describes_the_socket_layout() {
    // Before: --help printed a one-line usage on stderr and exited 1.
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--run-dir",
        "--log-json",
        "DIR/socket",
        "DIR/domain/N/socket",
    ] {
        assert!(help.contains(needle), "help lacks {needle}:\n{help}");
    }
}

#[test]
fn a_bad_flag_fails_and_names_it() {
    let out = Command::new(BIN)
        .args(["--run-dir", "/nonexistent", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--no-such-flag"), "{err}");
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("--run-dir"));
}

#[test]
fn log_json_writes_one_object_a_line() {
    let dir = std::env::temp_dir().join(format!("tbxs-json-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    tokenback::platform::sim::RunDir::create(&dir).unwrap();
    let child = Command::new(BIN)
        .arg("--run-dir")
        .arg(&dir)
        .arg("--log-json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("socket").exists() {
        assert!(Instant::now() < deadline, "no socket");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on the pid of a child we own and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{:?}", out.status);
    let log = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "{log}");
    for line in lines {
        assert!(
            line.starts_with("{\"msg\":") && line.ends_with('}'),
            "{line}"
        );
        assert!(line.contains("\"bin\":\"tokenback-xenstored\""), "{line}");
    }
}
