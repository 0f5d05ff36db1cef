//! tokentop against tokenbackd serving simulated guests (both separate processes): batch
//! rows, JSON and the Prometheus metrics count exactly what the guests completed, the rates
//! follow a limit while a guest runs, and the screen (in tmux) resets counters and survives
//! the daemon stopped and started again under it.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::daemon::{attach_guest, Tokenbackd};
use support::load::{drive, read_4k, Until};
use support::tmux::Tmux;
use support::{eventually, storage_file, xs_ok, Host};
use tokenback_tools::blkfront::Blkfront;

const MIB: u64 = 1 << 20;
/// Requests each guest keeps in flight.
const DEPTH: usize = 8;

/// web1 (iops-read=200, weight 3 in group gold of iops-total=1000) and db1 (unlimited)
/// served by one tokenbackd.
struct Bed {
    host: Host,
    daemon: Tokenbackd,
    web1: Blkfront,
    db1: Blkfront,
}

impl Bed {
    fn start(name: &str) -> Bed {
        let mut host = Host::start(name);
        let daemon = Tokenbackd::start(&host.run, &[]);
        // The group first: a VBD naming a group that does not exist is refused.
        let gold = "/local/domain/0/tokenback/groups/gold/iops-total";
        xs_ok(
            &host.run.xenstored_socket(),
            "xenstore-write",
            &[gold, "1000"],
        );
        eventually("group gold created", || {
            daemon.log().contains("group created")
        });
        let mut guest = |name: &str, qos: &[(&str, &str)]| {
            let domid = host.new_named_guest(name);
            let file = storage_file(&host, &format!("{name}.img"), 8 * MIB);
            attach_guest(&mut host, domid, &file, qos, |_| {}).0
        };
        let web1 = guest(
            "web1",
            &[("iops-read", "200"), ("group", "gold"), ("weight", "3")],
        );
        let db1 = guest("db1", &[]);
        Bed {
            host,
            daemon,
            web1,
            db1,
        }
    }

    fn dir(&self) -> PathBuf {
        self.host.run.root().to_owned()
    }

    fn tokentop(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_tokentop"))
            .arg("--sim")
            .arg(self.dir())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tokentop {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// One JSON iteration.
    fn json(&self) -> Value {
        serde_json::from_slice(&self.tokentop(&["--json", "-i", "1"]).stdout).unwrap()
    }
}

fn row<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["vbds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no VBD of {name}: {doc}"))
}

#[test]
fn batch_and_json_count_exactly_what_the_guests_completed() {
    let mut bed = Bed::start("tt-count");
    assert_eq!(
        drive(&mut bed.web1, DEPTH, Until::Count(400), read_4k).len(),
        400
    );
    assert_eq!(
        drive(&mut bed.db1, DEPTH, Until::Count(300), read_4k).len(),
        300
    );
    let doc = bed.json();
    assert!(
        doc["daemon"].as_str().unwrap().starts_with("tokenbackd "),
        "{doc}"
    );
    let web1 = row(&doc, "web1");
    assert_eq!(web1["requests"], json!({"read": 400, "write": 0}));
    assert_eq!(web1["bytes"], json!({"read": 400 * 4096, "write": 0}));
    // The keys in force, the group's name and the weight among them.
    let keys = json!({"group": "gold", "iops-read": "200", "weight": "3"});
    assert_eq!(web1["limits"], keys);
    assert_eq!(web1["vdev"], "xvda");
    assert_eq!(web1["usage"]["limit"], "iops-read");
    // The bucket holds 20 (a tenth of a second): most of 400 requests waited.
    let delayed = web1["delayed_percent"].as_f64().unwrap();
    assert!(delayed > 80.0, "{delayed}% of web1's requests delayed");
    assert!(web1["admission_delay_p99_ns"].as_u64().unwrap() > 0);
    let db1 = row(&doc, "db1");
    assert_eq!(db1["requests"], json!({"read": 300, "write": 0}));
    assert_eq!(
        (db1["limits"].clone(), db1["usage"].clone()),
        (json!({}), Value::Null)
    );
    assert_eq!(db1["delayed_percent"], 0.0, "nothing holds db1 back");
    let gold = &doc["groups"][0];
    assert_eq!(
        (gold["kind"].as_str(), gold["name"].as_str()),
        (Some("group"), Some("gold"))
    );
    assert_eq!(gold["members"], json!([[web1["domid"], web1["devid"]]]));
    assert_eq!(gold["limits"], json!({"iops-total": "1000"}));
    assert_eq!(
        gold["requests"],
        json!({"read": 400, "write": 0}),
        "web1's, through the group"
    );
    assert_eq!(web1["group"], "gold");

    let out = bed.tokentop(&["-b", "-i", "1", "--sort", "name"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 4, "a header, two VBDs and the group:\n{text}");
    assert_eq!(
        (lines[0][1], lines[1][1], lines[2][1], lines[3][1]),
        ("NAME", "db1", "web1", "gold"),
        "{text}"
    );
    assert_eq!(lines[2][4], "group=gold,iops-read=200,weight=3", "{text}");
    assert_eq!(lines[3][4], "iops-total=1000", "{text}");
}

#[test]
fn batch_rates_follow_the_limit_while_the_guest_runs() {
    let mut bed = Bed::start("tt-rates");
    let top = Command::new(env!("CARGO_BIN_EXE_tokentop"))
        .args(["-b", "-d", "1", "-i", "5", "--filter", "web1", "--sim"])
        .arg(bed.dir())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Past tokentop's last iteration (4 s after its first).
    drive(
        &mut bed.web1,
        DEPTH,
        Until::Span(Duration::from_secs(6)),
        read_4k,
    );
    let out = top.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let rates: Vec<f64> = text
        .lines()
        .filter(|l| l.contains("web1"))
        .map(|l| l.split_whitespace().nth(6).unwrap().parse().unwrap())
        .collect();
    assert_eq!(rates.len(), 5, "{text}");
    // The first second spends the bucket's 20 on top; after it, the limit. Generous bounds:
    // the machine is shared.
    for (i, rate) in rates.iter().enumerate().skip(2) {
        assert!(
            (170.0..=230.0).contains(rate),
            "iteration {i}: {rate}/s against 200:\n{text}"
        );
    }
    println!("web1's read IOPS by iteration under iops-read=200: {rates:?}");
}

#[test]
fn metrics_count_what_the_guests_completed() {
    let mut bed = Bed::start("tt-metrics");
    drive(&mut bed.web1, DEPTH, Until::Count(250), read_4k);
    let exporter = support::exporter::Exporter::start(&bed.dir().join("tokenbackd.sock"));
    let (samples, _) = support::exporter::parse_prometheus(&exporter.get("/metrics").1);
    let sample = |name, labels| support::exporter::sample(&samples, name, labels);
    let read = json!({"vdev": "xvda", "direction": "read"});
    let web1 = json!({"domain": "web1"});
    assert_eq!(sample("tokenback_vbd_info", web1), 1.0);
    assert_eq!(sample("tokenback_up", json!({})), 1.0);
    let web1_domid = samples
        .iter()
        .find(|(n, l, _)| n == "tokenback_vbd_info" && l["domain"] == "web1")
        .map(|(_, l, _)| l["domid"].clone())
        .unwrap();
    let mut read_of_web1 = read.clone();
    read_of_web1["domid"] = web1_domid.clone();
    assert_eq!(
        sample("tokenback_vbd_requests_total", read_of_web1.clone()),
        250.0
    );
    assert_eq!(
        sample("tokenback_vbd_bytes_total", read_of_web1),
        250.0 * 4096.0
    );
    let limit = json!({"domid": web1_domid, "key": "iops-read"});
    assert_eq!(sample("tokenback_vbd_qos_limit", limit), 200.0);
}

#[test]
fn the_screen_resets_and_follows_the_daemon_stopped_and_started_again() {
    let mut bed = Bed::start("tt-screen");
    drive(&mut bed.web1, DEPTH, Until::Count(100), read_4k);
    let tmux = Tmux::start("daemon", &["--sim", bed.dir().to_str().unwrap()], 200, 20);
    let screen = tmux.until("both guests and the group", |s| {
        s.contains("web1") && s.contains("db1") && s.contains("[gold]")
    });
    assert!(screen.contains("iops-read=200"), "{screen}");
    tmux.type_keys("z");
    tmux.until("the reset's answer", |s| {
        s.contains("counters reset: 2 VBDs, 1 groups")
    });
    assert_eq!(row(&bed.json(), "web1")["requests"]["read"], 0);

    // SIGTERM leaves the VBDs connected for the next tokenbackd.
    bed.daemon.stop_with(libc::SIGTERM);
    tmux.until("the daemon gone", |s| {
        s.contains("tokenbackd is not running") && !s.contains("web1")
    });
    bed.daemon = Tokenbackd::start(&bed.host.run, &[]);
    tmux.until("the guests again", |s| {
        s.contains("web1") && s.contains("db1")
    });
    drive(&mut bed.web1, DEPTH, Until::Count(10), read_4k);
    assert_eq!(row(&bed.json(), "web1")["requests"]["read"], 10);
    tmux.type_keys("q");
    tmux.until_gone();
}
