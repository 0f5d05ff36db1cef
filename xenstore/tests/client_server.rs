//! Our blocking client against our server, over the unix socket.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{eventually, TestServer, EVENTUALLY};
use xenstore_wire::client::blocking::Client;
use xenstore_wire::client::{ClientError, Endpoint, TxId, WatchEvent};
use xenstore_wire::perms::Perms;
use xenstore_wire::wire::XsErrno;

const NO: TxId = TxId::NONE;

fn client(server: &TestServer) -> Client {
    Client::connect(Endpoint::Socket(server.socket())).unwrap()
}

fn errno<T: std::fmt::Debug>(r: Result<T, ClientError>) -> XsErrno {
    r.unwrap_err().errno().cloned().expect("an xenstore error")
}

fn event(path: &str, token: &str) -> WatchEvent {
    WatchEvent {
        path: path.into(),
        token: token.into(),
    }
}

fn perms(list: &[&str]) -> Perms {
    Perms::new(list.iter().map(|p| p.parse().unwrap()).collect()).unwrap()
}

#[test]
fn every_operation() {
    let s = TestServer::start("every-op");
    let mut c = client(&s);
    c.write(NO, "/a/b", b"v").unwrap();
    assert_eq!(c.read(NO, "/a/b").unwrap(), b"v");
    c.mkdir(NO, "/a/m").unwrap();
    assert_eq!(c.directory(NO, "/a").unwrap(), ["b", "m"]);
    c.rm(NO, "/a/m").unwrap();
    assert_eq!(errno(c.read(NO, "/a/m")), XsErrno::Enoent);
    c.set_perms(NO, "/a/b", &perms(&["n0", "r3"])).unwrap();
    assert_eq!(c.get_perms(NO, "/a/b").unwrap(), perms(&["n0", "r3"]));
    assert_eq!(c.get_domain_path(7).unwrap(), "/local/domain/7");
    assert!(!c.is_domain_introduced(7).unwrap());
    c.introduce(7, 1234, 5).unwrap();
    assert!(c.is_domain_introduced(7).unwrap());
    c.release(7).unwrap();
    c.watch("/a", "t").unwrap();
    assert_eq!(
        c.next_event(Some(EVENTUALLY)).unwrap(),
        Some(event("/a", "t"))
    );
    c.unwatch("/a", "t").unwrap();
    c.watch("/a", "u").unwrap();
    c.reset_watches().unwrap();
    c.write(NO, "/a/b", b"w").unwrap();
    assert_eq!(c.next_event(Some(Duration::ZERO)).unwrap(), None);
    let v = c
        .transaction(|c, tx| {
            c.write(tx, "/t/x", b"1")?;
            c.read(tx, "/t/x")
        })
        .unwrap();
    assert_eq!(v, b"1");
}

#[test]
fn large_listing_goes_through_directory_part() {
    let s = TestServer::start("dir-part");
    let mut c = client(&s);
    let names: Vec<String> = (0..500)
        .map(|i| format!("a-long-child-name-{i:05}"))
        .collect();
    c.transaction(|c, tx| {
        for n in &names {
            c.write(tx, &format!("/big/{n}"), b"")?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(c.directory(NO, "/big").unwrap(), names);
}

#[test]
fn guest_is_denied_where_xen_denies() {
    let s = TestServer::start("guest");
    let mut dom0 = client(&s);
    dom0.write(NO, "/local/domain/4/x", b"1").unwrap();
    dom0.set_perms(NO, "/local/domain/4", &perms(&["n4"]))
        .unwrap();
    dom0.write(NO, "/private", b"p").unwrap();
    dom0.introduce(4, 0, 1).unwrap();
    let socket = s.dir.join("domain/4/socket");
    eventually("guest socket", || socket.exists());
    let mut g = Client::connect(Endpoint::Socket(socket)).unwrap();
    g.write(NO, "mine", b"1").unwrap();
    assert_eq!(g.get_perms(NO, "mine").unwrap(), perms(&["n4"]));
    assert_eq!(errno(g.read(NO, "/private")), XsErrno::Eacces);
    assert_eq!(errno(g.write(NO, "/private", b"x")), XsErrno::Eacces);
    assert_eq!(errno(g.introduce(9, 0, 1)), XsErrno::Eacces);
    assert_eq!(
        errno(g.set_perms(NO, "mine", &perms(&["n0"]))),
        XsErrno::Eperm
    );
    // The guest sees its own changes under a relative watch, relative.
    g.watch("mine", "m").unwrap();
    assert_eq!(
        g.next_event(Some(EVENTUALLY)).unwrap(),
        Some(event("mine", "m"))
    );
    dom0.write(NO, "/local/domain/4/mine", b"2").unwrap();
    assert_eq!(
        g.next_event(Some(EVENTUALLY)).unwrap(),
        Some(event("mine", "m"))
    );
    eventually("refusal logged", || {
        s.reports
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.contains("EACCES"))
    });
}

#[test]
fn conflicting_transactions_get_eagain_and_the_helper_retries() {
    let s = TestServer::start("conflict");
    let mut a = client(&s);
    let mut b = client(&s);
    a.write(NO, "/n", b"0").unwrap();
    let tx = a.transaction_start().unwrap();
    a.read(tx, "/n").unwrap();
    a.write(tx, "/n", b"a").unwrap();
    b.write(NO, "/n", b"b").unwrap();
    assert_eq!(errno(a.transaction_end(tx, true)), XsErrno::Eagain);
    assert_eq!(a.read(NO, "/n").unwrap(), b"b");

    // The helper redoes the body after losing a race.
    let mut runs = 0;
    a.transaction(|a, tx| {
        runs += 1;
        let n: u32 = String::from_utf8(a.read(tx, "/counter").unwrap_or_default())
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if runs == 1 {
            b.write(NO, "/counter", b"10")?;
        }
        a.write(tx, "/counter", (n + 1).to_string().as_bytes())
    })
    .unwrap();
    assert_eq!(runs, 2);
    assert_eq!(a.read(NO, "/counter").unwrap(), b"11");
}

#[test]
fn watch_events_arrive_in_order() {
    let s = TestServer::start("order");
    let mut w = client(&s);
    let mut c = client(&s);
    w.watch("/o", "t").unwrap();
    for i in 0..50 {
        c.write(NO, &format!("/o/{i}"), b"").unwrap();
    }
    assert_eq!(
        w.next_event(Some(EVENTUALLY)).unwrap(),
        Some(event("/o", "t"))
    );
    for i in 0..50 {
        let e = w.next_event(Some(EVENTUALLY)).unwrap();
        assert_eq!(e, Some(event(&format!("/o/{i}"), "t")));
    }
}

#[test]
fn reconnects_after_restart_and_re_registers_watches() {
    let s = TestServer::start("restart");
    let mut c = client(&s);
    c.watch("/r", "t").unwrap();
    assert_eq!(
        c.next_event(Some(EVENTUALLY)).unwrap(),
        Some(event("/r", "t"))
    );
    let dir = s.stop_keeping_dir();
    let s = TestServer::start_in(dir);
    // The next request finds the connection gone, reconnects, and goes through.
    c.write(NO, "/r/x", b"1").unwrap();
    assert_eq!(c.read(NO, "/r/x").unwrap(), b"1");
    // The re-registered watch fired on registration, then on the write.
    assert_eq!(
        c.next_event(Some(EVENTUALLY)).unwrap(),
        Some(event("/r", "t"))
    );
    assert_eq!(
        c.next_event(Some(EVENTUALLY)).unwrap(),
        Some(event("/r/x", "t"))
    );
    drop(s);
}

/// Reads until EOF; true if the server closed the connection.
fn closed_by_server(mut s: UnixStream) -> bool {
    s.set_read_timeout(Some(EVENTUALLY)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn bad_clients_are_dropped_alone() {
    let s = TestServer::start("bad");
    let mut good = client(&s);
    good.watch("/g", "t").unwrap();
    good.next_event(Some(EVENTUALLY)).unwrap();

    // A frame claiming a 1 GiB payload.
    let mut huge = UnixStream::connect(s.socket()).unwrap();
    let header: Vec<u8> = [2u32, 1, 0, 1 << 30]
        .iter()
        .flat_map(|f| f.to_ne_bytes())
        .collect();
    huge.write_all(&header).unwrap();
    // Garbage that happens to claim a large length too.
    let mut garbage = UnixStream::connect(s.socket()).unwrap();
    garbage.write_all(&[0xff; 64]).unwrap();

    assert!(closed_by_server(huge));
    assert!(closed_by_server(garbage));
    good.write(NO, "/g/still", b"here").unwrap();
    assert_eq!(good.read(NO, "/g/still").unwrap(), b"here");
    assert_eq!(
        good.next_event(Some(EVENTUALLY)).unwrap(),
        Some(event("/g/still", "t"))
    );
    eventually("drop logged", || {
        s.reports
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.contains("protocol violation"))
    });
}

#[test]
fn unknown_types_get_enosys_and_the_connection_lives() {
    let s = TestServer::start("enosys");
    let mut raw = UnixStream::connect(s.socket()).unwrap();
    let frame: Vec<u8> = [99u32, 5, 0, 0]
        .iter()
        .flat_map(|f| f.to_ne_bytes())
        .collect();
    raw.write_all(&frame).unwrap();
    let mut reply = [0u8; 23];
    raw.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[..4], &16u32.to_ne_bytes());
    assert_eq!(&reply[4..8], &5u32.to_ne_bytes());
    assert_eq!(&reply[16..], b"ENOSYS\0");
}

#[test]
fn a_flooding_guest_hits_its_quota_and_dom0_carries_on() {
    let s = TestServer::start("flood");
    let mut dom0 = client(&s);
    dom0.mkdir(NO, "/local/domain/6").unwrap();
    dom0.set_perms(NO, "/local/domain/6", &perms(&["n6"]))
        .unwrap();
    dom0.introduce(6, 0, 1).unwrap();
    let socket = s.dir.join("domain/6/socket");
    eventually("guest socket", || socket.exists());
    let mut g = Client::connect(Endpoint::Socket(socket)).unwrap();
    let mut refused = None;
    // Spread over directories: one node's child list is itself limited (node-size quota).
    for i in 0..2000 {
        if let Err(e) = g.write(NO, &format!("d{}/n{}", i / 100, i % 100), b"x") {
            refused = Some((i, e.errno().cloned()));
            break;
        }
    }
    // 1000 nodes per domain: its home, 10 directories and 989 leaves.
    assert_eq!(refused, Some((989, Some(XsErrno::Enospc))));
    dom0.write(NO, "/local/domain/6/by-dom0", b"fine").unwrap();
    assert_eq!(dom0.read(NO, "/local/domain/6/by-dom0").unwrap(), b"fine");
    eventually("quota refusal logged", || {
        s.reports
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.contains("ENOSPC (Nodes quota of 1000 exceeded)"))
    });
}

#[test]
fn a_client_waiting_for_events_survives_a_restart() {
    let s = TestServer::start("restart-wait");
    let mut c = client(&s);
    c.watch("/w", "t").unwrap();
    assert_eq!(
        c.next_event(Some(EVENTUALLY)).unwrap(),
        Some(event("/w", "t"))
    );
    let dir = s.stop_keeping_dir();
    let s = TestServer::start_in(dir);
    // Blocked on the old connection: EOF, reconnect, and the re-registered watch fires.
    assert_eq!(
        c.next_event(Some(EVENTUALLY)).unwrap(),
        Some(event("/w", "t"))
    );
    drop(s);
}
