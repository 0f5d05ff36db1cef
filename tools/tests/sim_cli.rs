//! The tokenback-sim binary: its help, bad arguments, a daemon that is missing or serves
//! nothing, and runs against the real tokenbackd (built beside it by `cargo build --workspace
//! --bins`, which the test script runs first): disks of our own and the demo, each disk's
//! rate following its limit.
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

/// The run's JSON report, asserting it succeeded and verified everything.
fn report(args: &[&str]) -> serde_json::Value {
    let out = sim(args);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], true, "{json}");
    json
}

/// The disk named `name` in a report.
fn disk<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    json["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {json}"))
}

fn number(value: &serde_json::Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("a number: {value}"))
}

#[test]
fn a_run_against_tokenbackd_follows_its_limits_and_verifies() {
    let json = report(&[
        "run",
        "--disk",
        "size=16M,rw=randrw,bs=4k,qd=8,iops-total=1000",
        "--disk",
        "size=16M,rw=randread,bs=4k,qd=8,guest=guest1,iops-read=2000,retune-at=2s:iops-read=400",
        "--duration",
        "4s",
        "--json",
    ]);
    // Two disks of one guest (sharing its allocator), both verified.
    let paced = disk(&json, "guest1/xvda");
    assert!(number(&paced["verified"]) > 0.0, "{json}");
    // iops-total=1000 over 4 s with a 100-request bucket: generous bounds.
    let iops = number(&paced["iops"]);
    assert!(iops > 700.0 && iops < 1300.0, "{json}");
    let retuned = &disk(&json, "guest1/xvdb")["retune"];
    let (before, after) = (
        number(&retuned["iops_before"]),
        number(&retuned["iops_after"]),
    );
    assert!(before > 1500.0 && before < 2600.0, "{json}");
    assert!(after > 250.0 && after < 600.0, "{json}");
    // tokenbackd served some 6000 requests: it used some CPU, and less than both cores.
    let cpu = number(&json["tokenbackd_cpu_percent"]);
    assert!(cpu > 0.0 && cpu < 200.0, "{json}");
}

#[test]
fn the_demo_against_tokenbackd_follows_each_limit() {
    let json = report(&["demo", "--duration", "8s", "--json"]);
    let unlimited = disk(&json, "guest1/xvda");
    assert!(number(&unlimited["iops"]) > 2500.0, "unlimited: {json}");
    let retuned = &disk(&json, "guest2/xvda")["retune"];
    let (before, after) = (
        number(&retuned["iops_before"]),
        number(&retuned["iops_after"]),
    );
    assert!(before > 1500.0 && before < 2600.0, "iops-read=2000: {json}");
    assert!(after > 350.0 && after < 700.0, "iops-read=500: {json}");
    let bandwidth = number(&disk(&json, "guest3/xvda")["mib_per_s"]);
    assert!(
        bandwidth > 6.0 && bandwidth < 10.0,
        "bps-total=8 MiB/s: {json}"
    );
    for d in json["disks"].as_array().unwrap() {
        assert!(
            number(&d["verified"]) > 0.0,
            "every disk verified reads: {json}"
        );
    }
}

#[test]
fn an_xl_disk_line_runs_its_hotplug_script_and_follows_the_target_s_limits() {
    let dir = std::env::temp_dir().join(format!("tb-sim-xl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("guest.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let line = |options: &str| {
        format!(
            "vdev=xvdb, access=rw, script=block-tokenback, target={}{options}",
            file.display()
        )
    };
    let json = report(&[
        "run",
        "--xl-disk",
        &line("?iops-total=1000"),
        "--duration",
        "3s",
        "--json",
    ]);
    let paced = disk(&json, "guest1/xvdb");
    assert!(number(&paced["verified"]) > 0.0, "{json}");
    let iops = number(&paced["iops"]);
    assert!(iops > 700.0 && iops < 1400.0, "{json}");
    // A bad target: the script's message, as hotplug-error holds it.
    let out = sim(&["run", "--xl-disk", &line("?iops-total=lots")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("iops-total: `lots' is not a whole number"),
        "{}",
        text(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
