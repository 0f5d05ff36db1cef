//! Debian's xenstore-utils, code no one here wrote, against tokenback-xenstored.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{wait_for, xs, xs_ok, Daemon};
use xenstore_wire::client::blocking::Client;
use xenstore_wire::client::{Endpoint, TxId};
use xenstore_wire::wire::XsErrno;

#[test]
fn write_read_ls_list_exists_rm() {
    let d = Daemon::start("basic");
    let s = d.socket();
    xs_ok(
        &s,
        "xenstore-write",
        &["/vm/a", "1", "/vm/b", "hello world"],
    );
    assert_eq!(
        xs_ok(&s, "xenstore-read", &["/vm/a", "/vm/b"]),
        "1\nhello world\n"
    );
    assert_eq!(
        xs_ok(&s, "xenstore-ls", &["/vm"]),
        "a = \"1\"\nb = \"hello world\"\n"
    );
    assert_eq!(xs_ok(&s, "xenstore-list", &["/vm"]), "a\nb\n");
    assert!(xs(&s, "xenstore-exists", &["/vm/a"]).status.success());
    assert_eq!(
        xs(&s, "xenstore-exists", &["/vm/zz"]).status.code(),
        Some(1)
    );
    xs_ok(&s, "xenstore-rm", &["/vm/a"]);
    let out = xs(&s, "xenstore-read", &["/vm/a"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "xenstore-read: couldn't read path /vm/a\n"
    );
    assert_eq!(xs_ok(&s, "xenstore-list", &["/vm"]), "b\n");
}

#[test]
fn chmod_and_permissions_listing() {
    let d = Daemon::start("chmod");
    let s = d.socket();
    std::fs::create_dir_all(d.dir.join("domain/5")).unwrap();
    xs_ok(&s, "xenstore-write", &["/p/x", "v"]);
    xs_ok(&s, "xenstore-chmod", &["/p/x", "n0", "r5"]);
    let ls = xs_ok(&s, "xenstore-ls", &["-p", "/p"]);
    assert!(ls.starts_with("x = \"v\""), "{ls}");
    assert!(ls.trim_end().ends_with("(n0,r5)"), "{ls}");
    // Domain 9 does not exist: Xen refuses it as an owner.
    let out = xs(&s, "xenstore-chmod", &["/p/x", "n9"]);
    assert_eq!(out.status.code(), Some(1));
    // Nor can it be introduced until the host has made DIR/domain/9/.
    let mut dom0 = Client::connect(Endpoint::Socket(s.clone())).unwrap();
    let refused = dom0.introduce(9, 0, 1).unwrap_err();
    assert_eq!(refused.errno(), Some(&XsErrno::Einval));
    std::fs::create_dir_all(d.dir.join("domain/9")).unwrap();
    dom0.introduce(9, 0, 1).unwrap();
    xs_ok(&s, "xenstore-chmod", &["/p/x", "n9"]);
    // A bad path is refused.
    assert_eq!(xs(&s, "xenstore-read", &["/p/../x"]).status.code(), Some(1));
}

#[test]
fn guest_socket_is_confined() {
    let d = Daemon::start("guest");
    let s = d.socket();
    // What a toolstack does: make the domain, give it its home, introduce it.
    std::fs::create_dir_all(d.dir.join("domain/5")).unwrap();
    xs_ok(&s, "xenstore-write", &["/local/domain/5/name", "guest"]);
    xs_ok(&s, "xenstore-chmod", &["-r", "/local/domain/5", "n5"]);
    xs_ok(&s, "xenstore-write", &["/secret", "s"]);
    let mut dom0 = Client::connect(Endpoint::Socket(s.clone())).unwrap();
    dom0.introduce(5, 0, 1).unwrap();
    let g = d.domain_socket(5);
    wait_for(&g);

    // Relative paths are the guest's home; it owns what it creates there.
    xs_ok(&g, "xenstore-write", &["data/x", "1"]);
    assert_eq!(
        xs_ok(&s, "xenstore-read", &["/local/domain/5/data/x"]),
        "1\n"
    );
    assert_eq!(xs_ok(&g, "xenstore-read", &["name"]), "guest\n");
    let out = xs(&g, "xenstore-read", &["/secret"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "xenstore-read: couldn't read path /secret\n"
    );
    assert_eq!(
        xs(&g, "xenstore-write", &["/secret", "x"]).status.code(),
        Some(1)
    );
    assert_eq!(xs(&g, "xenstore-rm", &["/secret"]).status.code(), Some(1));
    assert_eq!(xs_ok(&s, "xenstore-read", &["/secret"]), "s\n");
    // It cannot give its nodes away.
    assert_eq!(
        xs(&g, "xenstore-chmod", &["data/x", "n0"]).status.code(),
        Some(1)
    );

    // Release: the guest socket goes away, and the domain is no longer introduced.
    dom0.release(5).unwrap();
    assert!(!dom0.is_domain_introduced(5).unwrap());
    let deadline = std::time::Instant::now() + common::EVENTUALLY;
    while g.exists() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // C xenstored deletes what a released domain owned (keep_orphans off); its home, which
    // it was given, went too.
    let gone = dom0.read(TxId::NONE, "/local/domain/5/data/x").unwrap_err();
    assert_eq!(gone.errno(), Some(&XsErrno::Enoent));
    assert_eq!(
        xs(&s, "xenstore-exists", &["/local/domain/5"])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn watch_counts_the_registration_event() {
    let d = Daemon::start("watch");
    let s = d.socket();
    let mut watch = Command::new("xenstore-watch")
        .args(["-n", "3", "/w"])
        .env("XENSTORED_PATH", &s)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // The first line is the registration event: the watch is in place from here on.
    assert_eq!(lines.next().unwrap().unwrap(), "/w");
    xs_ok(&s, "xenstore-write", &["/w/a", "1"]);
    xs_ok(&s, "xenstore-write", &["/other", "1"]);
    xs_ok(&s, "xenstore-write", &["/w", "2"]);
    assert_eq!(lines.next().unwrap().unwrap(), "/w/a");
    assert_eq!(lines.next().unwrap().unwrap(), "/w");
    assert!(watch.wait().unwrap().success());
}

#[test]
fn sigterm_exits_cleanly_and_removes_the_socket() {
    let mut d = Daemon::start("sigterm");
    xs_ok(&d.socket(), "xenstore-write", &["/x", "1"]);
    let status = d.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!d.socket().exists());
}

#[test]
fn watch_sees_release_domain() {
    let d = Daemon::start("release");
    let s = d.socket();
    std::fs::create_dir_all(d.dir.join("domain/3")).unwrap();
    let mut watch = Command::new("xenstore-watch")
        .args(["-n", "2", "@releaseDomain"])
        .env("XENSTORED_PATH", &s)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "@releaseDomain");
    let mut dom0 = Client::connect(Endpoint::Socket(s.clone())).unwrap();
    dom0.introduce(3, 0, 1).unwrap();
    wait_for(&d.domain_socket(3));
    dom0.release(3).unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "@releaseDomain");
    assert!(watch.wait().unwrap().success());
}
