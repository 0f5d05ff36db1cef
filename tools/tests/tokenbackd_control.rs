//! tokenbackd's control socket (docs/qos.md, "Control socket"), with the daemon a separate
//! process on the simulated host and guests driving load: the figures agree with what the
//! guests completed, filters select, reset zeroes, and no client can hold the daemon (garbage,
//! a half-written request, a client that never reads, too many connections).
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::control::Client;
use support::daemon::{attach_guest, Tokenbackd};
use support::load::{drive, read_4k, Done, Until};
use support::{storage_file, Host, EVENTUALLY};
use tokenback::platform::DomId;
use tokenback_tools::blkfront::{Blkfront, Op};

const MIB: u64 = 1 << 20;
/// Requests each guest keeps in flight.
const DEPTH: usize = 8;
const DEVID: u64 = 51712;
/// Guest "web1"'s limits: strict pacing at 200 requests a second, whose bucket (it holds
/// nothing) goes into debt at every admission, and a byte rate far above what that lets
/// through, whose bucket stays near full.
const WEB1_QOS: [(&str, &str); 3] = [
    ("tokens-refill", "200"),
    ("tokens-max", "0"),
    ("bps-read", "8388608"),
];

/// A client of the control socket.
/// The VBDs of a `stats` reply.
fn vbds(reply: &Value) -> &Vec<Value> {
    assert_eq!(reply["ok"], true, "{reply}");
    reply["vbds"].as_array().expect("vbds")
}

/// The only VBD of a `stats` reply for one domain.
fn only_vbd(client: &mut Client, domid: DomId) -> Value {
    let reply = client.ask(&json!({"op": "stats", "domid": domid.0}));
    let vbds = vbds(&reply);
    assert_eq!(vbds.len(), 1, "{reply}");
    vbds[0].clone()
}

fn balance<'a>(vbd: &'a Value, limit: &str) -> &'a Value {
    (vbd["balances"].as_array().unwrap().iter())
        .find(|b| b["limit"] == limit && b["burst"] == false)
        .unwrap_or_else(|| panic!("no balance of {limit}: {vbd}"))
}

/// 4 KiB writes over the first 8 MiB.
fn write_4k(n: u64) -> Op {
    Op::Write {
        sector: (n % 2048) * 8,
        data: vec![n as u8; 4096],
    }
}

/// Two guests served by one tokenbackd: "web1" with [`WEB1_QOS`], "db1" without limits.
struct Bed {
    _host: Host,
    daemon: Tokenbackd,
    socket: PathBuf,
    web1: (DomId, Blkfront, PathBuf),
    db1: (DomId, Blkfront, PathBuf),
}

impl Bed {
    fn start(name: &str) -> Bed {
        let mut host = Host::start(name);
        let daemon = Tokenbackd::start(&host.run, &[]);
        let mut guest = |name: &str, qos: &[(&str, &str)]| {
            let domid = host.new_named_guest(name);
            let file = storage_file(&host, &format!("{name}.img"), 8 * MIB);
            let (front, _) = attach_guest(&mut host, domid, &file, qos, |_| {});
            (domid, front, file)
        };
        let web1 = guest("web1", &WEB1_QOS);
        let db1 = guest("db1", &[]);
        let socket = host.run.root().join("tokenbackd.sock");
        Bed {
            _host: host,
            daemon,
            socket,
            web1,
            db1,
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket)
    }
}

#[test]
fn stats_agree_with_what_the_guests_completed_and_reset_zeroes_what_the_filter_selects() {
    let mut bed = Bed::start("control-stats");
    let mut client = bed.client();
    let version = client.ask(&json!({"op": "version"}));
    assert_eq!(version["ok"], true);
    assert_eq!(version["protocol"], 1);
    assert!(version["daemon"]
        .as_str()
        .unwrap()
        .starts_with("tokenbackd "));

    let (web1, db1) = (bed.web1.0, bed.db1.0);
    let list = client.ask(&json!({"op": "list"}));
    let expected = json!([
        {"domid": web1.0, "devid": DEVID, "vdev": "xvda", "domain": "web1", "group": null},
        {"domid": db1.0, "devid": DEVID, "vdev": "xvda", "domain": "db1", "group": null},
    ]);
    assert_eq!(list["vbds"], expected, "{list}");
    assert_eq!(list["groups"], json!([]));

    // web1 saturates its limit for 4 s; after 3 s, what the socket says of it under load (its
    // rates then cover the load only: they span one to two seconds).
    let front = &mut bed.web1.1;
    let span = Until::Span(Duration::from_millis(4000));
    let (done, loaded, loaded_balances) = std::thread::scope(|scope| {
        let guest = scope.spawn(|| drive(front, DEPTH, span, read_4k));
        std::thread::sleep(Duration::from_millis(3000));
        let loaded = only_vbd(&mut client, web1);
        let more: Vec<Value> = (0..5).map(|_| only_vbd(&mut client, web1)).collect();
        let done: Vec<Done> = guest.join().unwrap();
        (done, loaded, more)
    });
    let rate = loaded["rates"]["read_iops"].as_f64().unwrap();
    println!("web1 under tokens-refill=200: {rate:.1} read IOPS over about the last second");
    assert!(
        (150.0..=250.0).contains(&rate),
        "tokens-refill=200: {loaded}"
    );
    assert_eq!(loaded["rates"]["write_iops"], 0.0);
    let bps = loaded["rates"]["read_bps"].as_f64().unwrap();
    assert!(
        (bps - rate * 4096.0).abs() < 1.0,
        "read_bps {bps} for {rate} IOPS of 4 KiB"
    );
    // Strict pacing: in debt from each admission until the next is due (a sample taken just
    // as one is due finds it at 0).
    let paced = balance(&loaded, "tokens-refill");
    assert_eq!(paced["capacity"], 0.0);
    let levels: Vec<f64> = loaded_balances
        .iter()
        .map(|v| balance(v, "tokens-refill")["balance"].as_f64().unwrap())
        .collect();
    assert!(
        levels.iter().all(|l| (-1.0..=0.0).contains(l)),
        "tokens-refill balances {levels:?}"
    );
    assert!(levels.iter().any(|&l| l < 0.0), "never in debt: {levels:?}");
    // 800 KiB/s of 8 MiB/s: near full (a tenth of a second's worth).
    let bytes = balance(&loaded, "bps-read");
    assert_eq!(bytes["capacity"], 838_860.8);
    assert!(
        bytes["balance"].as_f64().unwrap() > 800_000.0,
        "bps-read balance: {bytes}"
    );
    assert!(
        loaded["queued"].as_u64().unwrap() > 0,
        "held by the limit: {loaded}"
    );
    assert!(loaded["in_flight"].as_u64().unwrap() <= DEPTH as u64);

    // db1, unlimited: writes, then a flush (flushes count as writes).
    let db1_writes = drive(&mut bed.db1.1, DEPTH, Until::Count(300), write_4k).len() as u64;
    bed.db1.1.flush().unwrap();

    let web1_reads = done.len() as u64;
    let stats = client.ask(&json!({"op": "stats"}));
    let all = vbds(&stats);
    assert_eq!(all.len(), 2, "{stats}");
    assert!(stats["now_ns"].as_u64().unwrap() > 0);
    assert_eq!(stats["groups"], json!([]));
    let w = &all[0];
    assert_eq!(
        (w["domid"].as_u64(), w["devid"].as_u64()),
        (Some(web1.0.into()), Some(DEVID))
    );
    assert_eq!(w["vdev"], "xvda");
    assert_eq!(w["domain"], "web1");
    assert_eq!(
        w["backend"],
        format!("/local/domain/0/backend/vbd/{}/{DEVID}", web1.0)
    );
    assert_eq!(w["target"], bed.web1.2.display().to_string());
    assert_eq!(w["state"], "connected");
    assert!(w["queues"].as_u64().unwrap() >= 1);
    let keys: serde_json::Map<String, Value> = WEB1_QOS
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    assert_eq!(w["qos"]["keys"], Value::Object(keys));
    assert_eq!(w["qos"]["error"], Value::Null);
    assert_eq!(w["qos"]["group"], Value::Null);
    assert_eq!(w["qos"]["weight"], 1);
    let c = &w["counters"];
    assert_eq!(
        c["requests"],
        json!({"read": web1_reads, "write": 0}),
        "{w}"
    );
    assert_eq!(c["sectors"], json!({"read": web1_reads * 8, "write": 0}));
    // Paced from the first request: all but the first waited.
    assert!(
        c["delayed"]["read"].as_u64().unwrap() >= web1_reads - DEPTH as u64,
        "{c}"
    );
    assert!(c["throttled_ns"].as_u64().unwrap() > 1_000_000_000, "{c}");
    assert!(c["admission_delay_p50_ns"].as_u64().unwrap() > 0, "{c}");
    assert!(c["admission_delay_p99_ns"].as_u64() >= c["admission_delay_p50_ns"].as_u64());
    let s = &w["storage"];
    assert!(s["latency_p50_ns"].as_u64().unwrap() > 0, "{s}");
    assert!(s["latency_p99_ns"].as_u64() >= s["latency_p50_ns"].as_u64());
    assert_eq!(s["errors"], 0);
    assert_eq!(
        (w["queued"].as_u64(), w["in_flight"].as_u64()),
        (Some(0), Some(0))
    );
    let web1_age = w["since_reset_ns"].as_u64().unwrap();
    assert!(web1_age > 4_000_000_000, "{w}");

    let d = &all[1];
    assert_eq!(d["domain"], "db1");
    assert_eq!(d["qos"]["keys"], json!({}));
    assert_eq!(d["balances"], json!([]));
    let c = &d["counters"];
    assert_eq!(
        c["requests"],
        json!({"read": 0, "write": db1_writes + 1}),
        "{d}"
    );
    assert_eq!(c["sectors"], json!({"read": 0, "write": db1_writes * 8}));
    assert_eq!(c["delayed"], json!({"read": 0, "write": 0}));
    assert_eq!(c["throttled_ns"], 0);
    assert!(d["storage"]["latency_p50_ns"].as_u64().unwrap() > 0);

    // Filters: every one given must match.
    let count = |client: &mut Client, filter: Value| {
        let mut request = filter;
        request["op"] = json!("stats");
        vbds(&client.ask(&request)).len()
    };
    assert_eq!(count(&mut client, json!({"domid": db1.0})), 1);
    assert_eq!(
        count(&mut client, json!({"domid": web1.0, "devid": DEVID})),
        1
    );
    assert_eq!(
        count(&mut client, json!({"domid": web1.0, "devid": 51728})),
        0
    );
    assert_eq!(count(&mut client, json!({"devid": DEVID})), 2);
    assert_eq!(count(&mut client, json!({"domid": 999})), 0);
    // No groups are served: none match, nor does any VBD.
    let grouped = client.ask(&json!({"op": "stats", "group": "g1"}));
    assert_eq!((vbds(&grouped).len(), &grouped["groups"]), (0, &json!([])));

    // Reset web1 only: its counters start again, db1's are untouched.
    let reset = client.ask(&json!({"op": "reset", "domid": web1.0}));
    assert_eq!(
        reset,
        json!({"ok": true, "reset": {"vbds": 1, "groups": 0}})
    );
    let w = only_vbd(&mut client, web1);
    let c = &w["counters"];
    assert_eq!(c["requests"], json!({"read": 0, "write": 0}), "{w}");
    assert_eq!(c["sectors"], json!({"read": 0, "write": 0}));
    assert_eq!(c["delayed"], json!({"read": 0, "write": 0}));
    assert_eq!(c["throttled_ns"], 0);
    assert_eq!(c["admission_delay_p50_ns"], Value::Null);
    assert_eq!(
        w["storage"],
        json!({"latency_p50_ns": null, "latency_p99_ns": null, "errors": 0})
    );
    assert_eq!(w["rates"]["read_iops"], 0.0);
    assert!(w["since_reset_ns"].as_u64().unwrap() < web1_age, "{w}");
    // The live state is kept: the paced bucket is as the load left it, not refilled.
    assert_eq!(balance(&w, "tokens-refill")["capacity"], 0.0);
    let d = only_vbd(&mut client, db1);
    assert_eq!(d["counters"]["requests"]["write"], db1_writes + 1);

    let reset = client.ask(&json!({"op": "reset"}));
    assert_eq!(reset["reset"], json!({"vbds": 2, "groups": 0}));
    let d = only_vbd(&mut client, db1);
    assert_eq!(d["counters"]["requests"], json!({"read": 0, "write": 0}));
    assert!(bed.daemon.is_running());
}

#[test]
fn the_socket_is_private_replaces_a_stale_one_answers_garbage_and_goes_at_exit() {
    let host = Host::start("control-socket");
    // A socket file left by a killed daemon, nobody listening.
    let path = host.run.root().join("given.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(UnixStream::connect(&path).is_err());
    let path_arg = path.display().to_string();
    let mut daemon = Tokenbackd::start(&host.run, &["--control-socket", &path_arg]);
    support::eventually("the control socket answers", || {
        UnixStream::connect(&path).is_ok()
    });
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "the socket's mode"
    );
    // --control-socket replaces the default.
    assert!(!host.run.root().join("tokenbackd.sock").exists());

    let mut client = Client::connect(&path);
    // Each bad request gets its reason, and the connection goes on.
    let bad: [(&[u8], &str); 7] = [
        (b"hello\n", "not JSON"),
        (b"[1,2]\n", "not a JSON object"),
        (b"{}\n", "no \"op\""),
        (b"{\"op\":\"frobnicate\"}\n", "unknown op \"frobnicate\""),
        (b"{\"op\":\"stats\",\"domid\":\"5\"}\n", "\"domid\" must be"),
        (b"{\"op\":\"reset\",\"group\":7}\n", "\"group\" must be"),
        (b"\xff\xfe\n", "not JSON"),
    ];
    for (request, says) in bad {
        let reply = client.reply_to(request);
        assert_eq!(reply["ok"], false, "{request:?}: {reply}");
        let error = reply["error"].as_str().unwrap();
        assert!(
            error.contains(says),
            "{request:?}: {error:?} should say {says:?}"
        );
        assert_eq!(
            client.ask(&json!({"op": "version"}))["ok"],
            true,
            "after {request:?}"
        );
    }
    // Several requests in one write, the last in two: replies in order, one each.
    client.send(b"{\"op\":\"list\"}\n{\"op\":\"nope\"}\n{\"op\":\"vers");
    std::thread::sleep(Duration::from_millis(100));
    client.send(b"ion\"}\n");
    assert_eq!(client.reply()["vbds"], json!([]));
    assert_eq!(client.reply()["ok"], false);
    assert_eq!(client.reply()["protocol"], 1);

    // A line longer than 64 KiB: refused, then the connection is closed.
    let mut long = vec![b' '; 64 * 1024 + 1];
    long.push(b'\n');
    let reply = client.reply_to(&long);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("longer than 65536"),
        "{reply}"
    );
    assert!(client.closed());
    // Others are still served.
    assert_eq!(
        Client::connect(&path).ask(&json!({"op": "version"}))["ok"],
        true
    );

    assert!(daemon.stop_with(libc::SIGTERM).success());
    assert!(!path.exists(), "the socket is removed at exit");
}

#[test]
fn half_written_and_unread_clients_are_dropped_while_the_guest_and_others_are_served() {
    let mut bed = Bed::start("control-slow");
    let mut other = bed.client();

    // Half a request, then nothing.
    let mut half = bed.client();
    half.send(b"{\"op\":\"vers");
    let half_sent = Instant::now();

    // A client that sends requests and never reads its replies; a thread, as its writes
    // block once the daemon stops reading them.
    let greedy = UnixStream::connect(&bed.socket).unwrap();
    let mut greedy_writer = greedy.try_clone().unwrap();
    greedy_writer.set_write_timeout(Some(EVENTUALLY)).unwrap();
    let flood = std::thread::spawn(move || {
        let line = b"{\"op\":\"stats\"}\n".repeat(64);
        let mut sent = 0usize;
        loop {
            match greedy_writer.write_all(&line) {
                Ok(()) => sent += line.len(),
                Err(e) => return (sent, e),
            }
        }
    });

    // Meanwhile the guest is served and so is another client.
    let done = drive(&mut bed.db1.1, DEPTH, Until::Count(2000), write_4k);
    assert_eq!(done.len(), 2000);
    assert_eq!(other.ask(&json!({"op": "version"}))["ok"], true);

    let (sent, error) = flood.join().unwrap();
    println!("the unread client sent {sent} bytes of requests before it was dropped");
    // Dropped by the daemon, not blocked until the write timed out.
    assert!(
        matches!(
            error.kind(),
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
        ),
        "the unread client's writes ended with {error}"
    );
    drop(greedy);
    let logged = |says: &str| {
        support::eventually(says, || bed.daemon.log().contains(says));
    };
    logged("more than 1 MiB of replies unread");

    // The half-written request is dropped after 10 s, not before.
    assert!(half.closed());
    let waited = half_sent.elapsed();
    println!("the half-written request was dropped after {waited:?}");
    assert!(
        waited >= Duration::from_millis(9_500),
        "dropped after {waited:?}"
    );
    assert!(waited < Duration::from_secs(10) + EVENTUALLY, "{waited:?}");
    logged("partial request line timed out");

    let d = only_vbd(&mut other, bed.db1.0);
    assert_eq!(d["counters"]["requests"]["write"], 2000);
    assert!(bed.daemon.is_running());
}

#[test]
fn connections_past_64_get_an_error_line_and_are_closed() {
    let host = Host::start("control-many");
    let _daemon = Tokenbackd::start(&host.run, &[]);
    let path = host.run.root().join("tokenbackd.sock");
    support::eventually("the control socket answers", || {
        UnixStream::connect(&path).is_ok()
    });
    let mut clients: Vec<Client> = (0..64)
        .map(|_| {
            let mut c = Client::connect(&path);
            assert_eq!(c.ask(&json!({"op": "version"}))["ok"], true);
            c
        })
        .collect();
    let mut refused = Client::connect(&path);
    let reply = refused.reply();
    assert_eq!(reply["ok"], false);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("too many connections"),
        "{reply}"
    );
    assert!(refused.closed());
    // The 64 are still served.
    assert_eq!(clients[63].ask(&json!({"op": "list"}))["ok"], true);
    // One goes: a new one is served again, once the daemon saw it go.
    drop(clients.pop());
    support::eventually("a connection is served again", || {
        let mut c = Client::connect(&path);
        c.send(b"{\"op\":\"version\"}\n");
        c.reply()["ok"] == true
    });
}

#[test]
fn requests_the_storage_fails_are_counted() {
    let mut host = Host::start("control-errors");
    // The daemon can write no file past 2 MiB: writes there fail with EFBIG.
    let limit = 2 * MIB;
    let _daemon = Tokenbackd::start_with_file_size_limit(&host.run, &[], limit);
    let domid = host.new_named_guest("web1");
    let file = storage_file(&host, "disk.img", 4 * MIB);
    let (mut front, _) = attach_guest(&mut host, domid, &file, &[], |_| {});
    front.write(0, &[1; 4096]).unwrap();
    for n in 0..3 {
        let past = limit / 512 + 64 + n * 8;
        assert!(
            front.write(past, &[2; 4096]).is_err(),
            "a write past the limit"
        );
    }
    let mut client = Client::connect(&host.run.root().join("tokenbackd.sock"));
    let v = only_vbd(&mut client, domid);
    assert_eq!(v["storage"]["errors"], 3, "{v}");
    // Failed or not, each was admitted and reached the storage.
    assert_eq!(v["counters"]["requests"]["write"], 4);
    assert!(v["storage"]["latency_p99_ns"].as_u64().unwrap() > 0);
    assert_eq!(client.ask(&json!({"op": "reset"}))["reset"]["vbds"], 1);
    assert_eq!(only_vbd(&mut client, domid)["storage"]["errors"], 0);
}

#[test]
fn the_keys_in_force_follow_a_retune_and_a_refused_set_shows_its_reason() {
    let mut host = Host::start("control-keys");
    let _daemon = Tokenbackd::start(&host.run, &[]);
    let domid = host.new_named_guest("web1");
    let file = storage_file(&host, "disk.img", 4 * MIB);
    let qos = [("iops-total", "500")];
    let (_front, paths) = attach_guest(&mut host, domid, &file, &qos, |_| {});
    let mut client = Client::connect(&host.run.root().join("tokenbackd.sock"));
    let shown = |client: &mut Client| only_vbd(client, domid)["qos"].clone();
    assert_eq!(
        shown(&mut client),
        json!({"keys": {"iops-total": "500"}, "error": null, "group": null, "weight": 1})
    );
    let write = |key: &str, value: &str| {
        let path = format!("{}/{key}", paths.backend);
        support::xs_ok(
            &host.run.xenstored_socket(),
            "xenstore-write",
            &[&path, value],
        );
    };
    // Refused: the last good set stays in force, with the reason beside it.
    write("iops-total", "fast");
    support::eventually("qos.error shown", || !shown(&mut client)["error"].is_null());
    let qos = shown(&mut client);
    assert_eq!(qos["keys"], json!({"iops-total": "500"}));
    assert!(
        qos["error"].as_str().unwrap().contains("iops-total"),
        "{qos}"
    );
    // A good set: in force, the reason gone.
    write("iops-total", "800");
    support::eventually("the retune shown", || {
        shown(&mut client)
            == json!({"keys": {"iops-total": "800"}, "error": null, "group": null, "weight": 1})
    });
    let v = only_vbd(&mut client, domid);
    assert_eq!(balance(&v, "iops-total")["capacity"], 80.0);
}
