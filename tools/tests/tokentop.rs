//! tokentop against a stand-in control socket that follows the protocol: batch rows and
//! JSON checked against the counters served, the daemon missing, garbage, another protocol
//! and huge numbers, and the Prometheus endpoint scraped over HTTP and parsed with the
//! Python prometheus_client parser (installed by scripts/test.sh from
//! tools/tests/requirements.txt). The screen, driven in tmux, is in tokentop_tui.rs; the
//! figures against a real tokenbackd's load in tokentop_daemon.rs.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

#[path = "../../tests/man_page_common/mod.rs"]
mod man_page_common;
mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use support::exporter::{parse_prometheus, sample, Exporter};
use support::fake_control::{scratch_dir as dir, vbd, FakeControl, VbdFigures};

fn tokentop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tokentop"))
        .args(args)
        .output()
        .unwrap()
}

/// Three snapshots a second apart: web1 (domid 5) reading 500/s of 4 KiB under
/// iops-read=500 after a first second at 480/s, db (domid 6) 10/s unlimited.
fn snapshots() -> Vec<Value> {
    (1..=3u64)
        .map(|s| {
            let web1 = vbd(&VbdFigures {
                domid: 5,
                domain: "web1",
                vdev: "xvda",
                keys: json!({"iops-read": "500"}),
                reads: 480 + 500 * (s - 1),
                writes: 0,
                sectors: 8,
                delayed: 100,
                read_iops: 480.0,
                since_reset_ns: s * 1_000_000_000,
            });
            let db = vbd(&VbdFigures {
                domid: 6,
                domain: "db",
                vdev: "xvdb",
                keys: json!({}),
                reads: 10 * s,
                writes: 0,
                sectors: 8,
                delayed: 0,
                read_iops: 9.0,
                since_reset_ns: s * 1_000_000_000,
            });
            json!({"now_ns": s * 1_000_000_000, "vbds": [web1, db], "groups": []})
        })
        .collect()
}

/// Batch output as iterations of rows, each a map from header to field.
fn iterations(stdout: &[u8]) -> Vec<Vec<std::collections::HashMap<String, String>>> {
    let text = String::from_utf8_lossy(stdout);
    let mut out: Vec<Vec<_>> = vec![];
    let mut header: Vec<String> = vec![];
    for line in text.lines() {
        let fields: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        if fields.first().map(String::as_str) == Some("DOMID") {
            header = fields;
            out.push(vec![]);
        } else {
            assert_eq!(fields.len(), header.len(), "a row of single words: {line}");
            let row = header.iter().cloned().zip(fields).collect();
            out.last_mut().expect("a header first").push(row);
        }
    }
    out
}

#[test]
fn batch_rows_show_the_daemons_rates_first_then_the_counters_deltas() {
    let dir = dir("batch");
    let fake = FakeControl::start(&dir.join("control.sock"), snapshots());
    let sock = fake.path.to_str().unwrap();
    let out = tokentop(&["-b", "-d", "0.1", "-i", "3", "--socket", sock]);
    assert_succeeded(&out);
    let iterations = iterations(&out.stdout);
    assert_eq!(iterations.len(), 3, "one header per iteration");
    let web1 = |i: usize| &iterations[i][0];
    assert_eq!(web1(0)["NAME"], "web1");
    assert_eq!(web1(0)["RD_IOPS"], "480.0", "the daemon's rate first");
    assert_eq!(web1(1)["RD_IOPS"], "500.0", "then 500 more requests in 1 s");
    assert_eq!(web1(1)["RD_B/S"], (500 * 4096).to_string());
    assert_eq!(web1(1)["USE"], "100.0%iops-read");
    assert_eq!(web1(2)["LIMITS"], "iops-read=500");
    // 100 of 1480 requests delayed.
    assert_eq!(web1(2)["DELAY%"], "6.8");
    assert_eq!(web1(2)["ADM_P99"], "2000.0", "microseconds");
    assert_eq!(web1(2)["BALANCE"], "-3.5");
    assert_eq!(
        (web1(2)["QUEUE"].as_str(), web1(2)["INFL"].as_str()),
        ("7", "16")
    );
    let db = &iterations[2][1];
    assert_eq!(
        (db["DOMID"].as_str(), db["RD_IOPS"].as_str()),
        ("6", "10.0")
    );
    assert_eq!((db["LIMITS"].as_str(), db["USE"].as_str()), ("-", "-"));
    assert_eq!(fake.requests("stats").len(), 3);
}

#[test]
fn batch_sorts_and_filters() {
    let dir = dir("sort");
    let fake = FakeControl::start(&dir.join("control.sock"), snapshots());
    let sock = fake.path.to_str().unwrap();
    let out = tokentop(&["-b", "-i", "1", "--socket", sock, "--sort", "name"]);
    let names: Vec<String> = iterations(&out.stdout)[0]
        .iter()
        .map(|r| r["NAME"].clone())
        .collect();
    assert_eq!(names, ["db", "web1"]);
    let out = tokentop(&[
        "-b",
        "-i",
        "1",
        "--socket",
        sock,
        "--sort",
        "rd_iops",
        "--descending",
    ]);
    assert_eq!(iterations(&out.stdout)[0][0]["NAME"], "web1");
    let out = tokentop(&["-b", "-i", "1", "--socket", sock, "--filter", "6"]);
    let rows = &iterations(&out.stdout)[0];
    assert_eq!((rows.len(), rows[0]["NAME"].as_str()), (1, "db"));
    let out = tokentop(&["-b", "-i", "1", "--socket", sock, "--sort", "speed"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`speed` is not a column"));
}

#[test]
fn json_gives_one_document_per_iteration_per_line() {
    let dir = dir("json");
    let fake = FakeControl::start(&dir.join("control.sock"), snapshots());
    let sock = fake.path.to_str().unwrap();
    let out = tokentop(&["--json", "-d", "0.1", "-i", "2", "--socket", sock]);
    assert_succeeded(&out);
    let docs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1]["now_ns"], 2_000_000_000u64);
    assert_eq!(docs[1]["daemon"], "tokenbackd fake");
    let web1 = &docs[1]["vbds"][0];
    assert_eq!(web1["domid"], 5);
    assert_eq!(web1["rates"]["read_iops"], 500.0);
    assert_eq!(web1["requests"]["read"], 980);
    assert_eq!(web1["bytes"]["read"], 980 * 4096);
    assert_eq!(web1["usage"]["limit"], "iops-read");
    assert_eq!(web1["limits"]["iops-read"], "500");
    assert_eq!(docs[0]["vbds"][0]["rates"]["read_iops"], 480.0);
    assert_eq!(docs[1]["groups"], json!([]));
}

#[test]
fn a_missing_daemon_garbage_or_another_protocol_fail_with_the_reason() {
    let dir = dir("errors");
    let missing = dir.join("nobody.sock");
    let out = tokentop(&["-b", "-i", "1", "--socket", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tokenbackd is not running: nothing listens at"),
        "{stderr}"
    );

    let fake = FakeControl::start(&dir.join("control.sock"), snapshots());
    let sock = fake.path.to_str().unwrap().to_owned();
    for (raw, reason) in [
        ("hello", "reply is not what the protocol says"),
        (
            r#"{"ok":false,"error":"busy"}"#,
            "tokenbackd refused version: busy",
        ),
        (
            r#"{"ok":true,"protocol":"one"}"#,
            "reply is not what the protocol says",
        ),
    ] {
        fake.script.lock().unwrap().raw_reply = Some(raw.into());
        let out = tokentop(&["-b", "-i", "1", "--socket", &sock]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "reply {raw}: {stderr}");
        assert!(stderr.contains(reason), "reply {raw}: {stderr}");
    }
    {
        let mut script = fake.script.lock().unwrap();
        script.raw_reply = None;
        script.protocol = 2;
    }
    let out = tokentop(&["-b", "-i", "1", "--socket", &sock]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tokenbackd speaks control protocol 2; this tokentop speaks 1"),
        "{stderr}"
    );
}

#[test]
fn a_daemon_that_goes_away_mid_batch_ends_it_with_the_reason() {
    let dir = dir("gone");
    let fake = FakeControl::start(&dir.join("control.sock"), snapshots());
    let mut child = spawn_batch("1", "5", &fake.path);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("DOMID"));
    fake.stop();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    // The connection closed, and a new one found nobody listening.
    assert!(
        stderr.contains("tokenbackd is not running: nothing listens at"),
        "{stderr}"
    );
}

#[test]
fn a_daemon_restarted_between_iterations_is_read_on_a_new_connection() {
    let dir = dir("restarted");
    let socket = dir.join("control.sock");
    let fake = FakeControl::start(&socket, snapshots());
    let mut child = spawn_batch("2", "2", &socket);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("DOMID"), "{first}");
    // Well within the 2 s before the next iteration.
    fake.stop();
    let again = FakeControl::start(&socket, snapshots());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(again.requests("version").len(), 1, "one new connection");
    assert_eq!(again.requests("stats").len(), 1);
}

#[test]
fn huge_counters_pass_through_exactly() {
    let dir = dir("huge");
    let mut snapshot = snapshots().remove(0);
    snapshot["vbds"][0]["counters"]["requests"]["read"] = json!(u64::MAX);
    snapshot["vbds"][0]["counters"]["sectors"]["read"] = json!(u64::MAX);
    snapshot["vbds"][0]["rates"]["read_bps"] = json!(1e300);
    let fake = FakeControl::start(&dir.join("control.sock"), vec![snapshot]);
    let sock = fake.path.to_str().unwrap();
    let out = tokentop(&["--json", "-i", "1", "--socket", sock]);
    assert_succeeded(&out);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["vbds"][0]["requests"]["read"], json!(u64::MAX));
    assert_eq!(
        doc["vbds"][0]["bytes"]["read"],
        json!(u64::MAX),
        "saturates, never wraps"
    );
    let out = tokentop(&["-b", "-i", "1", "--socket", sock]);
    assert!(out.status.success());
    assert_eq!(iterations(&out.stdout)[0][0]["RD_B/S"].len(), 301);
}

#[test]
fn metrics_parse_with_prometheus_client_and_follow_the_daemon() {
    let dir = dir("metrics");
    let socket = dir.join("control.sock");
    let fake = FakeControl::start(&socket, snapshots());
    let exporter = Exporter::start(&socket);
    let (status, body) = exporter.get("/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (samples, types) = parse_prometheus(&body);
    let web1_read = json!({"domid": "5", "vdev": "xvda", "direction": "read"});
    assert_eq!(
        sample(&samples, "tokenback_vbd_requests_total", web1_read.clone()),
        480.0
    );
    assert_eq!(
        sample(&samples, "tokenback_vbd_bytes_total", web1_read),
        480.0 * 4096.0
    );
    let web1 = json!({"domid": "5", "devid": "51712"});
    assert_eq!(
        sample(
            &samples,
            "tokenback_vbd_throttled_seconds_total",
            web1.clone()
        ),
        1.5
    );
    assert_eq!(
        sample(&samples, "tokenback_vbd_queued_requests", web1.clone()),
        7.0
    );
    let limit = json!({"domid": "5", "key": "iops-read"});
    assert_eq!(sample(&samples, "tokenback_vbd_qos_limit", limit), 500.0);
    let p99 = json!({"domid": "5", "quantile": "0.99"});
    assert_eq!(
        sample(&samples, "tokenback_vbd_admission_delay_seconds", p99),
        0.002
    );
    let info = json!({"domid": "6", "domain": "db", "target": "/srv/db.img"});
    assert_eq!(sample(&samples, "tokenback_vbd_info", info), 1.0);
    assert_eq!(sample(&samples, "tokenback_up", json!({})), 1.0);
    assert_eq!(types["tokenback_vbd_requests"], "counter");
    assert_eq!(types["tokenback_vbd_queued_requests"], "gauge");
    // The counters move on at the next scrape (the second snapshot).
    let (samples, _) = parse_prometheus(&exporter.get("/metrics").1);
    let web1_read = json!({"domid": "5", "direction": "read"});
    assert_eq!(
        sample(&samples, "tokenback_vbd_requests_total", web1_read),
        980.0
    );

    assert_eq!(exporter.get("/other").0, "HTTP/1.1 404 Not Found");
    fake.stop();
    let (status, body) = exporter.get("/metrics");
    assert_eq!(
        status, "HTTP/1.1 200 OK",
        "a daemon gone is a sample, not a failed scrape"
    );
    let (samples, _) = parse_prometheus(&body);
    assert_eq!(sample(&samples, "tokenback_up", json!({})), 0.0);
    assert_eq!(samples.len(), 1, "{body}");
    // Back again: the exporter reconnects.
    let _fake = FakeControl::start(&socket, snapshots());
    let (samples, _) = parse_prometheus(&exporter.get("/metrics").1);
    assert_eq!(sample(&samples, "tokenback_up", json!({})), 1.0);
}

#[test]
fn help_and_bad_arguments() {
    let out = tokentop(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for option in [
        "--batch",
        "--json",
        "--delay",
        "--iterations",
        "--socket",
        "--sim",
        "--metrics-listen",
        "--sort",
        "--filter",
    ] {
        assert!(help.contains(option), "{option} missing from\n{help}");
    }
    for (args, reason) in [
        (&["-b", "-d", "0"][..], "at least 0.1 seconds"),
        (&["-b", "-i", "0"][..], "0 is not in 1.."),
        (
            &["--sim", "/x", "--socket", "/y"][..],
            "cannot be used with",
        ),
        (
            &["-b", "--metrics-listen", "127.0.0.1:0"][..],
            "cannot be used with",
        ),
    ] {
        let out = tokentop(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
    // output() gives it pipes, not a terminal.
    let out = tokentop(&["--socket", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the screen needs a terminal: use -b or --json"),
        "{stderr}"
    );
    let out = tokentop(&[
        "--metrics-listen",
        "256.0.0.1:1",
        "--socket",
        "/nonexistent",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on 256.0.0.1:1"));
}

#[test]
fn docs_tokentop_1_is_the_generated_man_page() {
    man_page_common::assert_generated(
        env!("CARGO_BIN_EXE_tokentop"),
        "tokentop 1",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/tokentop.1"),
        "docs/tokentop.1",
    );
}

/// Fails with tokentop's stderr unless it exited 0.
fn assert_succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tokentop -b -d DELAY -i ITERATIONS --socket SOCKET` running, its output piped.
fn spawn_batch(delay: &str, iterations: &str, socket: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_tokentop"))
        .args(["-b", "-d", delay, "-i", iterations, "--socket"])
        .arg(socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}
