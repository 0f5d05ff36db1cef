//! tokenback-xenstored's command line and log format.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

use std::process::{Command, Stdio};

mod support;

use support::Xenstored;

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
    let mut xenstored = Xenstored::start_with("json", &["--log-json"], Stdio::piped());
    let stopped = xenstored.terminate();
    assert!(stopped.status.success(), "{:?}", stopped.status);
    let lines: Vec<&str> = stopped.stderr.lines().collect();
    assert!(lines.len() >= 2, "{}", stopped.stderr);
    for line in lines {
        assert!(
            line.starts_with("{\"msg\":") && line.ends_with('}'),
            "{line}"
        );
        assert!(line.contains("\"bin\":\"tokenback-xenstored\""), "{line}");
    }
}
