//! Debian's xenstore-utils, code no one here wrote, against tokenback-xenstored.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod support;

use support::xenstored::{wait_for, wait_gone};
use support::{xs, xs_ok, Xenstored, XsWatch};
use tokenback::platform::sim::GuestDomain;
use xenstore_wire::client::blocking::Client;
use xenstore_wire::client::{Endpoint, TxId};
use xenstore_wire::wire::XsErrno;

/// Creates a domain in the daemon's run directory, as the simulated toolstack does.
fn new_domain(d: &Xenstored) -> u16 {
    GuestDomain::create(&d.run, 1, 1).unwrap().domid().0
}

#[test]
fn write_read_ls_list_exists_rm() {
    let d = Xenstored::start("basic");
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
    let d = Xenstored::start("chmod");
    let s = d.socket();
    let reader = new_domain(&d);
    xs_ok(&s, "xenstore-write", &["/p/x", "v"]);
    xs_ok(&s, "xenstore-chmod", &["/p/x", "n0", &format!("r{reader}")]);
    let ls = xs_ok(&s, "xenstore-ls", &["-p", "/p"]);
    assert!(ls.starts_with("x = \"v\""), "{ls}");
    assert!(ls.trim_end().ends_with(&format!("(n0,r{reader})")), "{ls}");
    // The next domain does not exist yet: Xen refuses it as an owner.
    let next = reader + 1;
    let out = xs(&s, "xenstore-chmod", &["/p/x", &format!("n{next}")]);
    assert_eq!(out.status.code(), Some(1));
    // Nor can it be introduced until the host has made it.
    let mut dom0 = Client::connect(Endpoint::Socket(s.clone())).unwrap();
    let refused = dom0.introduce(next, 0, 1).unwrap_err();
    assert_eq!(refused.errno(), Some(&XsErrno::Einval));
    assert_eq!(new_domain(&d), next);
    dom0.introduce(next, 0, 1).unwrap();
    xs_ok(&s, "xenstore-chmod", &["/p/x", &format!("n{next}")]);
    // A bad path is refused.
    assert_eq!(xs(&s, "xenstore-read", &["/p/../x"]).status.code(), Some(1));
}

#[test]
fn guest_socket_is_confined() {
    let d = Xenstored::start("guest");
    let s = d.socket();
    // What a toolstack does: make the domain, give it its home, introduce it.
    let domid = new_domain(&d);
    let home = format!("/local/domain/{domid}");
    xs_ok(&s, "xenstore-write", &[&format!("{home}/name"), "guest"]);
    xs_ok(&s, "xenstore-chmod", &["-r", &home, &format!("n{domid}")]);
    xs_ok(&s, "xenstore-write", &["/secret", "s"]);
    let mut dom0 = Client::connect(Endpoint::Socket(s.clone())).unwrap();
    dom0.introduce(domid, 0, 1).unwrap();
    let g = d.domain_socket(domid);
    wait_for(&g);

    // Relative paths are the guest's home; it owns what it creates there.
    xs_ok(&g, "xenstore-write", &["data/x", "1"]);
    assert_eq!(
        xs_ok(&s, "xenstore-read", &[&format!("{home}/data/x")]),
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
    dom0.release(domid).unwrap();
    assert!(!dom0.is_domain_introduced(domid).unwrap());
    wait_gone(&g);
    // C xenstored deletes what a released domain owned (keep_orphans off); its home, which
    // it was given, went too.
    let gone = dom0
        .read(TxId::NONE, &format!("{home}/data/x"))
        .unwrap_err();
    assert_eq!(gone.errno(), Some(&XsErrno::Enoent));
    assert_eq!(xs(&s, "xenstore-exists", &[&home]).status.code(), Some(1));
}

#[test]
fn watch_counts_the_registration_event() {
    let d = Xenstored::start("watch");
    let s = d.socket();
    let mut watch = XsWatch::start(&s, "/w", 3);
    xs_ok(&s, "xenstore-write", &["/w/a", "1"]);
    xs_ok(&s, "xenstore-write", &["/other", "1"]);
    xs_ok(&s, "xenstore-write", &["/w", "2"]);
    assert_eq!(watch.next(), "/w/a");
    assert_eq!(watch.next(), "/w");
    watch.finish();
}

#[test]
fn sigterm_exits_cleanly_and_removes_the_socket() {
    let mut d = Xenstored::start("sigterm");
    xs_ok(&d.socket(), "xenstore-write", &["/x", "1"]);
    let status = d.terminate().status;
    assert!(status.success(), "{status:?}");
    assert!(!d.socket().exists());
}

#[test]
fn watch_sees_release_domain() {
    let d = Xenstored::start("release");
    let s = d.socket();
    let domid = new_domain(&d);
    let mut watch = XsWatch::start(&s, "@releaseDomain", 2);
    let mut dom0 = Client::connect(Endpoint::Socket(s.clone())).unwrap();
    dom0.introduce(domid, 0, 1).unwrap();
    wait_for(&d.domain_socket(domid));
    dom0.release(domid).unwrap();
    assert_eq!(watch.next(), "@releaseDomain");
    watch.finish();
}

#[test]
fn a_destroyed_domain_is_released_without_xs_release() {
    // Xen's toolstack only destroys the domain; xenstored notices (VIRQ_DOM_EXC), deletes
    // what it owned and fires @releaseDomain. Before: only XS_RELEASE did.
    let d = Xenstored::start("destroyed");
    let s = d.socket();
    let run = &d.run;
    let domid = GuestDomain::create(run, 1, 1).unwrap().domid();
    let home = format!("/local/domain/{}", domid.0);
    xs_ok(&s, "xenstore-write", &[&home, ""]);
    xs_ok(&s, "xenstore-chmod", &[&home, &format!("n{}", domid.0)]);
    let mut dom0 = Client::connect(Endpoint::Socket(s.clone())).unwrap();
    dom0.introduce(domid.0, 0, 1).unwrap();
    let g = d.domain_socket(domid.0);
    wait_for(&g);
    xs_ok(&g, "xenstore-write", &["data", "1"]);
    let mut watch = XsWatch::start(&s, "@releaseDomain", 2);

    run.destroy_domain(domid).unwrap();
    assert_eq!(watch.next(), "@releaseDomain");
    watch.finish();
    assert!(!dom0.is_domain_introduced(domid.0).unwrap());
    assert_eq!(
        xs(&s, "xenstore-exists", &[&home]).status.code(),
        Some(1),
        "what the domain owned is gone"
    );
    wait_gone(&g);
    run.remove_domain(domid).unwrap();
    assert!(!run.domain_exists(domid));
}
