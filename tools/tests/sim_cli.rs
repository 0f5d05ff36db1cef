//! The tokenback-sim binary: its help, bad arguments, a run against a stand-in daemon
//! (tokenback's workers behind a small polling xenbus loop), and the demo against the real
//! tokenbackd.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tokenback-sim"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn help_names_the_subcommands() {
    let out = sim(&["--help"]);
    assert!(out.status.success());
    let help = text(&out);
    assert!(help.contains("demo") && help.contains("run"), "{help}");
    let run = text(&sim(&["run", "--help"]));
    assert!(
        run.contains("--disk") && run.contains("--connect-timeout"),
        "{run}"
    );
}

#[test]
fn bad_arguments_fail_with_a_reason() {
    let out = sim(&["run", "--disk", "rw=sideways"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("rw: `sideways` is not a mode"),
        "{}",
        text(&out)
    );
    let out = sim(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    let out = sim(&["demo", "--duration", "soon"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_daemon_that_is_missing_or_serves_nothing_fails_clearly() {
    let out = sim(&[
        "run",
        "--disk",
        "size=1M",
        "--tokenbackd",
        "/nonexistent/tokenbackd",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("cannot start /nonexistent/tokenbackd"),
        "{}",
        text(&out)
    );
    // `true` exits at once: no disk reaches InitWait.
    let out = sim(&[
        "run",
        "--disk",
        "size=1M",
        "--tokenbackd",
        "/bin/true",
        "--connect-timeout",
        "2s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("tokenbackd exited") || t.contains("InitWait"),
        "{t}"
    );
}

#[test]
fn a_run_against_the_stand_in_follows_its_limits_and_verifies() {
    let out = sim(&[
        "run",
        "--disk",
        "size=16M,rw=randrw,bs=4k,qd=8,iops-total=1000",
        "--disk",
        "size=16M,rw=randread,bs=4k,qd=8,guest=guest1,iops-read=2000,retune-at=2s:iops-read=400",
        "--duration",
        "4s",
        "--json",
        "--tokenbackd",
        env!("CARGO_BIN_EXE_tokenback-sim-standin"),
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(json.contains("\"ok\":true"), "{json}");
    // Two disks of one guest (sharing its allocator), both verified.
    assert!(
        json.contains("guest1/xvda") && json.contains("guest1/xvdb"),
        "{json}"
    );
    let iops = |key: &str| -> Vec<f64> {
        json.match_indices(key)
            .map(|(i, _)| {
                let rest = &json[i + key.len()..];
                rest[..rest.find([',', '}']).unwrap()].parse().unwrap()
            })
            .collect()
    };
    // iops-total=1000 over 4 s with a 100-request bucket: generous bounds.
    let total = iops("\"iops\":");
    assert!(total[0] > 700.0 && total[0] < 1300.0, "{json}");
    let before = iops("\"iops_before\":")[0];
    let after = iops("\"iops_after\":")[0];
    assert!(before > 1500.0 && before < 2600.0, "{json}");
    assert!(after > 250.0 && after < 600.0, "{json}");
}

#[test]
#[ignore = "needs tokenbackd serving VBDs (issue 16)"]
fn the_demo_against_tokenbackd_follows_each_limit() {
    let out = sim(&["demo", "--duration", "10s", "--json"]);
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(json.contains("\"ok\":true"), "{json}");
    assert!(json.contains("\"iops_after\""), "{json}");
}
