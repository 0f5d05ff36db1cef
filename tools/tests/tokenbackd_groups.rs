//! Throttle groups in tokenbackd (a separate process on the simulated host): groups declared
//! with Debian's `xenstore-write` below /local/domain/0/tokenback/groups, VBDs that name them
//! sharing their limits by weight, groups retuned and removed while members run, a member
//! moved between workers mid-stream, and bad group keys refused with their reason.
//! The tests take turns: rates measured on two cores need them more than the others do.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::control::{socket_of, Client};
use support::daemon::{attach, Tokenbackd};
use support::load::{count, drive, read_4k, steady_rate, Done, Until};
use support::{pattern, storage_file, xs, xs_ok, Host};
use tokenback_tools::blkfront::{Blkfront, Op, Tag};
use tokenback_tools::toolstack::DiskPaths;

const MIB: u64 = 1 << 20;
/// Deep enough that a guest descheduled for a while still has requests held.
const DEPTH: usize = 32;
/// Deeper for shares: a member whose queue empties for an instant loses its deficit (DESIGN
/// "Groups"), so a guest descheduled for longer than its backlog (42 ms at 750/s and depth
/// 32, on a machine shared with other builds) gives its share away. 128 is 170 ms.
const SHARE_DEPTH: usize = 128;
/// Writes of the move test: enough to outlast its group changes.
const WRITES: u64 = 2400;
const GROUPS: &str = "/local/domain/0/tokenback/groups";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A host, its tokenbackd, and guests with one disk each.
struct Bed {
    host: Host,
    daemon: Tokenbackd,
    guests: Vec<(Blkfront, DiskPaths, PathBuf)>,
}

impl Bed {
    fn start(name: &str, args: &[&str]) -> Bed {
        let host = Host::start(name);
        let daemon = Tokenbackd::start(&host.run, args);
        Bed {
            host,
            daemon,
            guests: Vec::new(),
        }
    }

    /// Attaches a guest whose disk's target carries `qos`; its index in `guests`.
    fn guest(&mut self, qos: &[(&str, &str)], queues: u32) -> usize {
        let n = self.guests.len();
        let file = storage_file(&self.host, &format!("disk{n}.img"), 16 * MIB);
        let (front, paths) = attach(&mut self.host, &file, qos, |o| {
            o.max_queues = queues;
            // Room for SHARE_DEPTH requests in one ring.
            o.max_ring_page_order = 2;
        });
        self.guests.push((front, paths, file));
        n
    }

    fn socket(&self) -> PathBuf {
        self.host.run.xenstored_socket()
    }

    /// The control socket's reply to `request`.
    fn control(&self, request: Value) -> Value {
        let reply = Client::connect(&socket_of(&self.host.run)).ask(&request);
        assert_eq!(reply["ok"], true, "{request}: {reply}");
        reply
    }

    /// `xenstore-write` of KEY VALUE pairs below `dir`, in one transaction.
    fn write(&self, dir: &str, pairs: &[(&str, &str)]) {
        let args: Vec<String> = std::iter::once("--".to_owned())
            .chain(
                pairs
                    .iter()
                    .flat_map(|(k, v)| [format!("{dir}/{k}"), (*v).to_owned()]),
            )
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        xs_ok(&self.socket(), "xenstore-write", &args);
    }

    fn write_group(&self, group: &str, pairs: &[(&str, &str)]) {
        self.write(&format!("{GROUPS}/{group}"), pairs);
    }

    fn write_vbd(&self, guest: usize, pairs: &[(&str, &str)]) {
        self.write(&self.guests[guest].1.backend.clone(), pairs);
    }

    /// The `qos-error` in `dir`, as `xenstore-read` shows it.
    fn qos_error(&self, dir: &str) -> Option<String> {
        let out = xs(
            &self.socket(),
            "xenstore-read",
            &[&format!("{dir}/qos-error")],
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Waits (generously) until the `qos-error` in `dir` reads as `want` says.
    fn await_qos_error(&self, dir: &str, what: &str, want: impl Fn(Option<&str>) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let error = self.qos_error(dir);
            if want(error.as_deref()) {
                println!("{dir}/qos-error: {error:?}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{dir}: qos-error never {what}: {error:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn vbd_dir(&self, guest: usize) -> String {
        self.guests[guest].1.backend.clone()
    }

    /// Waits (generously) until the daemon's log holds `line` `n` times.
    fn await_log(&self, line: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon.log().matches(line).count() < n {
            assert!(
                Instant::now() < deadline,
                "`{line}` never logged {n} times:\n{}",
                self.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Requests a second completed in `[from, from + span)`.
fn rate(done: &[Done], from: Instant, span: Duration) -> f64 {
    count(done, from, from + span) as f64 / span.as_secs_f64()
}

/// Whether a rate measured over a second or two is `limit`'s: never above it by more than 5%,
/// and generous below, as in tokenbackd_qos: on a machine shared with other builds the daemon
/// stalls beyond 1 ms now and then, and such decisions are lost (DESIGN "Late timers"). The
/// exact rates over 10,000 requests are the weights test's and tokenbackd_rates'.
fn held_at(rate: f64, limit: f64) -> bool {
    (limit * 0.75..=limit * 1.05).contains(&rate)
}

fn within(rate: f64, limit: f64, tolerance: f64) -> bool {
    (rate - limit).abs() <= limit * tolerance
}

#[test]
fn weights_share_the_group_3_to_1_and_a_lone_member_gets_all_of_it() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let mut bed = Bed::start("groups-share", &[]);
    bed.write_group("gold", &[("iops-total", "1000")]);
    bed.await_log("group created", 1);
    let heavy = bed.guest(&[("group", "gold"), ("weight", "3")], 4);
    let light = bed.guest(&[("group", "gold"), ("weight", "1")], 4);
    let span = Until::Span(Duration::from_secs(7));
    let start = Instant::now();
    let (done_heavy, done_light) = {
        let (a, b) = bed.guests.split_at_mut(light);
        let (front_heavy, front_light) = (&mut a[heavy].0, &mut b[0].0);
        std::thread::scope(|scope| {
            let h = scope.spawn(|| drive(front_heavy, SHARE_DEPTH, span, read_4k));
            let l = scope.spawn(|| drive(front_light, SHARE_DEPTH, span, read_4k));
            (h.join().unwrap(), l.join().unwrap())
        })
    };
    // Both saturate from 1 s (the group's first 100 spent, both queues full) to 6 s.
    let (from, window) = (start + Duration::from_secs(1), Duration::from_secs(5));
    let (h, l) = (
        count(&done_heavy, from, from + window),
        count(&done_light, from, from + window),
    );
    let share = h as f64 / (h + l) as f64;
    let total = (h + l) as f64 / window.as_secs_f64();
    println!(
        "weights 3:1 in iops-total=1000: {h} and {l} requests over {window:?}, shares \
         {:.1}% / {:.1}%, {total:.0} IOPS together",
        share * 100.0,
        (1.0 - share) * 100.0
    );
    assert!(
        (0.72..=0.78).contains(&share),
        "weight 3 of 3:1 got {share}"
    );
    assert!(within(total, 1000.0, 0.05), "the group's 1000/s: {total}");
    // Alone: the whole group limit, over 10,000 requests as tokenbackd_rates measures (a
    // stall of the daemon beyond 1 ms is lost, DESIGN "Late timers").
    let done = drive(
        &mut bed.guests[heavy].0,
        DEPTH,
        Until::Count(10_200),
        read_4k,
    );
    let alone = steady_rate(&done, 200, None);
    println!("the lone member: {alone:.1} IOPS");
    assert!(within(alone, 1000.0, 0.02), "alone in the group: {alone}/s");
    assert!(bed.daemon.is_running());
}

#[test]
fn a_group_retuned_and_removed_while_its_members_run() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let mut bed = Bed::start("groups-retune", &[]);
    bed.write_group("silver", &[("iops-total", "400")]);
    bed.await_log("group created", 1);
    // Its own limit is above the group's: the group's holds until the group goes.
    let g = bed.guest(&[("group", "silver"), ("iops-total", "700")], 4);
    let socket = bed.socket();
    let control = socket_of(&bed.host.run);
    let group_key = format!("{GROUPS}/silver/iops-total");
    let group_dir = format!("{GROUPS}/silver");
    let front = &mut bed.guests[g].0;
    let (done, retuned, removed) = std::thread::scope(|scope| {
        let guest = scope.spawn(|| {
            drive(
                front,
                DEPTH,
                Until::Span(Duration::from_millis(4600)),
                read_4k,
            )
        });
        std::thread::sleep(Duration::from_millis(1500));
        let retuned = Instant::now();
        xs_ok(&socket, "xenstore-write", &[&group_key, "200"]);
        std::thread::sleep(Duration::from_millis(1500));
        in_the_group(&mut Client::connect(&control));
        let removed = Instant::now();
        xs_ok(&socket, "xenstore-rm", &[&group_dir]);
        (guest.join().unwrap(), retuned, removed)
    });
    let ms = Duration::from_millis;
    let before = rate(&done, retuned - ms(1000), ms(900));
    let after = rate(&done, retuned + ms(300), ms(1000));
    let own = rate(&done, removed + ms(300), ms(1000));
    println!(
        "group iops-total=400: {before:.0}/s; retuned to 200: {after:.0}/s; group removed, \
         own iops-total=700: {own:.0}/s"
    );
    assert!(held_at(before, 400.0), "group of 400/s: {before}");
    assert!(held_at(after, 200.0), "group retuned to 200/s: {after}");
    assert!(held_at(own, 700.0), "own 700/s once the group went: {own}");
    let dir = bed.vbd_dir(g);
    bed.await_qos_error(&dir, "says the group is gone", |e| {
        e == Some("group silver does not exist")
    });
    // The control socket: no group left, the VBD on its own limits with the reason.
    let stats = bed.control(json!({"op": "stats"}));
    assert_eq!(stats["groups"], json!([]), "{stats}");
    let vbd = &stats["vbds"][0];
    assert_eq!(vbd["qos"]["group"], Value::Null, "{vbd}");
    assert_eq!(vbd["qos"]["keys"], json!({"iops-total": "700"}), "{vbd}");
    assert_eq!(vbd["qos"]["error"], "group silver does not exist", "{vbd}");
    assert!(bed.daemon.is_running());
}

/// What the control socket says of group silver and its one member while it runs at 200/s.
fn in_the_group(client: &mut Client) {
    let listed = client.ask(&json!({"op": "list"}));
    assert_eq!(listed["groups"][0]["name"], "silver", "{listed}");
    assert_eq!(listed["vbds"][0]["group"], "silver", "{listed}");
    let stats = client.ask(&json!({"op": "stats", "group": "silver"}));
    let group = &stats["groups"][0];
    assert_eq!(
        group["qos"]["keys"],
        json!({"iops-total": "200"}),
        "{group}"
    );
    assert_eq!(group["qos"]["error"], Value::Null, "{group}");
    let member = &stats["vbds"][0];
    assert_eq!(group["members"][0]["domid"], member["domid"], "{stats}");
    assert_eq!(group["members"][0]["weight"], 1, "{group}");
    assert_eq!(member["qos"]["group"], "silver", "{member}");
    // Everything the member did went through the group: its admissions are the group's.
    let (through_group, own) = (
        group["counters"]["requests"]["read"].as_u64().unwrap(),
        member["counters"]["requests"]["read"].as_u64().unwrap(),
    );
    assert!(through_group > 500 && through_group <= own, "{stats}");
    let rate = group["rates"]["read_iops"].as_f64().unwrap();
    assert!(
        (100.0..=300.0).contains(&rate),
        "the group at 200/s: {group}"
    );
    // A reset of the group zeroes it and its member.
    let reset = client.ask(&json!({"op": "reset", "group": "silver"}));
    assert_eq!(reset["reset"], json!({"vbds": 1, "groups": 1}), "{reset}");
}

/// Keeps `DEPTH` 4 KiB writes in flight over `sectors`, the n-th with `pattern(4096, n)` at
/// sector 8n, while `meanwhile` runs; checks each completion is the oldest one outstanding
/// and succeeded. The number of requests completed.
fn ordered_writes(front: &mut Blkfront, requests: u64, meanwhile: impl FnOnce() + Send) -> u64 {
    std::thread::scope(|scope| {
        let side = scope.spawn(meanwhile);
        let mut outstanding: std::collections::VecDeque<(Tag, u64)> = Default::default();
        let mut issued = 0;
        let mut completed = 0;
        while completed < requests {
            while outstanding.len() < DEPTH && issued < requests {
                let op = Op::Write {
                    sector: issued * 8,
                    data: pattern(4096, issued as u8),
                };
                outstanding.push_back((front.stage(op).unwrap(), issued));
                issued += 1;
            }
            for done in front.complete().unwrap() {
                let (tag, n) = outstanding
                    .pop_front()
                    .expect("a completion we did not ask for");
                assert_eq!(done.tag, tag, "request {n} overtaken");
                assert_eq!(done.status, 0, "request {n} failed");
                completed += 1;
            }
        }
        side.join().unwrap();
        completed
    })
}

#[test]
fn a_member_moves_between_workers_mid_stream_without_loss_error_or_reordering() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let mut bed = Bed::start("groups-move", &["--workers", "2"]);
    // Two groups on the two workers (each goes to the least loaded).
    bed.write_group("east", &[("iops-total", "300")]);
    bed.write_group("west", &[("iops-total", "500")]);
    bed.await_log("group created", 2);
    // One request admitted at a time: completions must come in submission order.
    // Its own limit paces it between groups, so that requests are held at every change.
    let g = bed.guest(&[("max-inflight", "1"), ("tokens-refill", "1000")], 1);
    let dir = bed.vbd_dir(g);
    let socket = bed.socket();
    let group = format!("{dir}/group");
    let steps = ["east", "west", "", "east", "west", "", "west"];
    let start = Instant::now();
    let front = &mut bed.guests[g].0;
    let completed = ordered_writes(front, WRITES, || {
        for name in steps {
            std::thread::sleep(Duration::from_millis(400));
            xs_ok(&socket, "xenstore-write", &["--", &group, name]);
        }
    });
    let took = start.elapsed();
    let log = bed.daemon.log();
    let moves = log.matches("moving to the worker of its group").count();
    let joins = log.matches("joined a group").count();
    println!(
        "{completed} ordered writes in {took:?} through {} group changes: {moves} moves \
         between workers, {joins} joins",
        steps.len()
    );
    assert_eq!(completed, WRITES);
    // east and west are on different workers: every change between them is a move; leaving
    // a group never is.
    assert!(moves >= 3, "moves between workers: {moves}\n{log}");
    assert!(!log.contains("cannot move"), "{log}");
    // Every write landed where it was meant to.
    let data = std::fs::read(&bed.guests[g].2).unwrap();
    for n in 0..WRITES {
        let at = (n * 4096) as usize;
        assert!(
            data[at..at + 4096] == pattern(4096, n as u8)[..],
            "write {n} lost"
        );
    }
    assert!(bed.daemon.is_running());
}

fn guest_domid(front: &Blkfront) -> String {
    front.frontend_path().split('/').nth(3).unwrap().to_owned()
}

#[test]
fn bad_group_keys_and_a_missing_group_are_refused_and_the_old_limits_stay() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let mut bed = Bed::start("groups-bad", &[]);
    // Named before it exists: refused, served without limits meanwhile.
    let g = bed.guest(&[("group", "bronze"), ("tokens-refill", "2000")], 4);
    let dir = bed.vbd_dir(g);
    bed.await_qos_error(&dir, "names the missing group", |e| {
        e == Some("group bronze does not exist")
    });
    let measure = |bed: &mut Bed| {
        let done = drive(&mut bed.guests[g].0, DEPTH, Until::Count(900), read_4k);
        steady_rate(&done, 300, None)
    };
    let unlimited = measure(&mut bed);
    println!("group bronze missing: {unlimited:.0}/s");
    assert!(unlimited > 2500.0, "served without limits: {unlimited}/s");
    // The group appears: the VBD is judged again and joins.
    bed.write_group("bronze", &[("iops-total", "300")]);
    bed.await_qos_error(&dir, "removed", |e| e.is_none());
    let joined = measure(&mut bed);
    println!("in bronze (iops-total=300): {joined:.0}/s");
    assert!(held_at(joined, 300.0), "bronze's 300/s: {joined}");
    // Bad group sets, one after another: refused whole, reason in the group's qos-error.
    let group_dir = format!("{GROUPS}/bronze");
    let domid = guest_domid(&bed.guests[g].0);
    let bad: [(&[(&str, &str)], &str); 3] = [
        (&[("iops-total", "fast")], "`fast`"),
        (&[("iops-total", "300"), ("weight", "2")], "unknown"),
        (&[("weight", ""), ("iops-total-max", "100")], "below"),
    ];
    for (pairs, says) in bad {
        bed.write_group("bronze", pairs);
        bed.await_qos_error(&group_dir, &format!("says {says}"), |e| {
            e.is_some_and(|e| e.contains(says))
        });
    }
    bed.write_group("bronze", &[("iops-total-max", "")]);
    bed.await_qos_error(&group_dir, "removed", |e| e.is_none());
    // A group directory a guest could write.
    xs_ok(
        &bed.socket(),
        "xenstore-chmod",
        &[&group_dir, "n0", &format!("b{domid}")],
    );
    bed.await_qos_error(&group_dir, "says who may write", |e| {
        e.is_some_and(|e| e.contains(&format!("writable by domain {domid}")))
    });
    bed.write_group("bronze", &[("iops-total", "5000")]);
    std::thread::sleep(Duration::from_millis(200));
    let held = measure(&mut bed);
    println!("bronze refused (guest-writable, 5000 written): {held:.0}/s");
    assert!(held_at(held, 300.0), "bronze's last good 300/s: {held}");
    // The VBD names a group that does not exist: refused, the old limits (bronze) stay.
    bed.write_vbd(g, &[("group", "missing")]);
    bed.await_qos_error(&dir, "names the missing group", |e| {
        e == Some("group missing does not exist")
    });
    let stayed = measure(&mut bed);
    println!("the VBD names a missing group: {stayed:.0}/s");
    assert!(held_at(stayed, 300.0), "still in bronze: {stayed}");
    let log = bed.daemon.log();
    assert_eq!(log.matches("group keys refused").count(), 4, "{log}");
    assert!(bed.daemon.is_running());
}

#[test]
fn a_member_is_in_its_group_again_after_tokenbackd_restarts() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let mut bed = Bed::start("groups-restart", &[]);
    bed.write_group("gold", &[("iops-total", "400")]);
    bed.await_log("group created", 1);
    let g = bed.guest(&[("group", "gold"), ("iops-total", "2000")], 4);
    let measure = |bed: &mut Bed| {
        let done = drive(&mut bed.guests[g].0, DEPTH, Until::Count(1000), read_4k);
        steady_rate(&done, 200, None)
    };
    let before = measure(&mut bed);
    assert!(bed.daemon.stop_with(libc::SIGTERM).success());
    bed.daemon = Tokenbackd::start(&bed.host.run, &[]);
    let after = measure(&mut bed);
    println!("in gold (iops-total=400): {before:.0}/s; after a restart {after:.0}/s");
    assert!(held_at(before, 400.0), "gold's 400/s: {before}");
    assert!(
        held_at(after, 400.0),
        "gold's 400/s after the restart: {after}"
    );
    assert_eq!(bed.qos_error(&bed.vbd_dir(g)), None);
}
