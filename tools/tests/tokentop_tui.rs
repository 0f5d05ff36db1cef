//! tokentop's screen driven in tmux against a stand-in control socket: keys to sort,
//! filter, reset, open help and quit, read back with capture-pane; the daemon stopped
//! and started again under it, and the terminal resized.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod support;

use serde_json::{json, Value};
use support::fake_control::{scratch_dir as dir, vbd, FakeControl, VbdFigures};
use support::tmux::Tmux;

/// web1 (domid 5) held at iops-read=500, db (domid 6) unlimited, and a group of web1.
fn snapshot() -> Value {
    let figures = |domid, domain, vdev, keys, read_iops| VbdFigures {
        domid,
        domain,
        vdev,
        keys,
        reads: 1000,
        writes: 0,
        sectors: 8,
        delayed: 100,
        read_iops,
        since_reset_ns: 1_000_000_000,
    };
    let mut web1 = vbd(&figures(
        5,
        "web1",
        "xvda",
        json!({"iops-read": "500"}),
        450.0,
    ));
    web1["qos"]["group"] = json!("shared");
    let db = vbd(&figures(6, "db", "xvdb", json!({}), 1200.0));
    let mut group = web1.clone();
    for field in [
        "domid", "devid", "vdev", "domain", "backend", "target", "state", "queues", "storage",
    ] {
        group.as_object_mut().unwrap().remove(field);
    }
    group["name"] = json!("shared");
    group["qos"] = json!({"keys": {"iops-total": "2000"}, "error": null});
    group["members"] = json!([{"domid": 5, "devid": 51712, "weight": 1}]);
    json!({"now_ns": 1_000_000_000u64, "vbds": [web1, db], "groups": [group]})
}

/// The screen's line holding `text`, by index.
fn line_of(screen: &str, text: &str) -> Option<usize> {
    screen.lines().position(|l| l.contains(text))
}

#[test]
fn keys_sort_filter_reset_help_and_quit() {
    let dir = dir("keys");
    let fake = FakeControl::start(&dir.join("control.sock"), vec![snapshot()]);
    let tmux = Tmux::start("keys", &["--socket", fake.path.to_str().unwrap()], 220, 30);
    let screen = tmux.until("both VBDs and the group", |s| {
        s.contains("web1") && s.contains("db") && s.contains("[shared]")
    });
    // What the README shows.
    println!("{screen}");
    assert!(
        screen.contains("tokenbackd fake - 2 VBDs, 1 groups"),
        "{screen}"
    );
    assert!(screen.contains("90% iops-read"), "450 of 500: {screen}");
    assert!(screen.contains("iops-read=500"), "{screen}");
    assert!(
        line_of(&screen, "web1") < line_of(&screen, "db"),
        "by domid: {screen}"
    );
    assert!(
        line_of(&screen, "db") < line_of(&screen, "[shared]"),
        "groups below: {screen}"
    );

    // Sort by name (one column right), then reversed.
    tmux.type_keys(">");
    let screen = tmux.until("sorted by name", |s| s.contains("sort NAME"));
    assert!(
        line_of(&screen, "db") < line_of(&screen, "web1"),
        "{screen}"
    );
    tmux.type_keys("r");
    let screen = tmux.until("reversed", |s| s.contains("sort NAME ▼"));
    assert!(
        line_of(&screen, "web1") < line_of(&screen, "db"),
        "{screen}"
    );

    // Filter to domain 6.
    tmux.type_keys("f");
    tmux.until("the filter prompt", |s| {
        s.contains("filter (domid or name):")
    });
    tmux.type_keys("6");
    tmux.press("Enter");
    let screen = tmux.until("the filter applied", |s| s.contains("filter: 6"));
    assert!(
        screen.contains("db") && !screen.contains("web1"),
        "{screen}"
    );
    assert!(!screen.contains("[shared]"), "db is in no group: {screen}");

    // Reset what is shown: db alone.
    tmux.type_keys("z");
    tmux.until("the reset's answer", |s| {
        s.contains("counters reset: 2 VBDs")
    });
    assert_eq!(
        fake.requests("reset"),
        [json!({"op": "reset", "domid": 6, "devid": 51712})]
    );

    tmux.type_keys("h");
    tmux.until("the help", |s| {
        s.contains("reset the counters of what is shown")
    });
    tmux.type_keys("x");
    tmux.until("the help closed", |s| {
        !s.contains("reset the counters of what is shown")
    });
    tmux.type_keys("q");
    tmux.until_gone();
}

#[test]
fn the_daemon_stopped_and_started_again_under_it_and_a_resize() {
    let dir = dir("restart");
    let socket = dir.join("control.sock");
    let tmux = Tmux::start("restart", &["--socket", socket.to_str().unwrap()], 200, 30);
    let screen = tmux.until("no daemon yet", |s| s.contains("tokenbackd is not running"));
    assert!(
        screen.contains(socket.to_str().unwrap()),
        "names the socket: {screen}"
    );

    let fake = FakeControl::start(&socket, vec![snapshot()]);
    tmux.until("the daemon's VBDs", |s| s.contains("web1"));
    fake.stop();
    tmux.until("the daemon gone", |s| {
        s.contains("tokenbackd") && s.contains("no daemon") && !s.contains("web1")
    });
    let _fake = FakeControl::start(&socket, vec![snapshot()]);
    tmux.until("the daemon back", |s| {
        s.contains("web1") && s.contains("[shared]")
    });

    // Too narrow for every column: the trend and the least needed give way, and the limits
    // keep their units.
    tmux.run(&["resize-window", "-t", "top", "-x", "110", "-y", "12"]);
    let screen = tmux.until("the table redrawn narrower", |s| {
        s.contains("web1") && !s.contains("TREND") && s.lines().count() <= 12
    });
    assert!(screen.lines().all(|l| l.chars().count() <= 110), "{screen}");
    assert!(
        screen.contains("iops-total=2.0k") && screen.contains("90% iops-read"),
        "{screen}"
    );
    assert!(
        !screen.contains("STATE") && screen.contains("RD_IOPS"),
        "{screen}"
    );
    assert!(screen.starts_with("tokentop - tokenbackd fake"), "{screen}");
}
