//! Server behaviour, request by request, without sockets.

use std::sync::{Arc, Mutex};

use super::*;
use crate::wire::{Request, XsErrno};

struct Harness {
    server: Server,
    /// Domains below 100 the host has destroyed; the rest of 1..=99 exist.
    dead: Arc<Mutex<HashSet<DomId>>>,
    req_id: u32,
    /// Watch events popped while looking for a reply.
    stash: HashMap<ConnId, Vec<Message>>,
}

type Reply = Result<Vec<u8>, XsErrno>;

impl Harness {
    fn new() -> Harness {
        Harness::with_quotas(Quotas::default())
    }

    fn with_quotas(quotas: Quotas) -> Harness {
        // Domains 1..=99 "exist" (created by the toolstack) before being introduced.
        let dead = Arc::new(Mutex::new(HashSet::new()));
        let host = Arc::clone(&dead);
        let exists = move |d: DomId| d < 100 && !host.lock().unwrap().contains(&d);
        Harness {
            server: Server::new(quotas, Box::new(exists)),
            dead,
            req_id: 0,
            stash: HashMap::new(),
        }
    }

    fn send_tx(&mut self, conn: ConnId, tx_id: u32, req: Request) -> Reply {
        self.req_id += 1;
        let (t, payload) = req.encode();
        self.server
            .handle(conn, Message::new(t, self.req_id, tx_id, payload).unwrap());
        let reply = loop {
            let m = self.server.pop_output(conn).expect("a reply");
            if m.msg_type != MsgType::WatchEvent {
                break m;
            }
            self.stash.entry(conn).or_default().push(m);
        };
        assert_eq!(reply.req_id, self.req_id);
        assert_eq!(reply.tx_id, tx_id);
        if reply.msg_type == MsgType::Error {
            Err(XsErrno::from_payload(reply.payload()))
        } else {
            assert_eq!(reply.msg_type, t);
            Ok(reply.into_payload())
        }
    }

    fn send(&mut self, conn: ConnId, req: Request) -> Reply {
        self.send_tx(conn, 0, req)
    }

    fn events(&mut self, conn: ConnId) -> Vec<String> {
        let mut out = Vec::new();
        let mut all = self.stash.remove(&conn).unwrap_or_default();
        all.extend(std::iter::from_fn(|| self.server.pop_output(conn)));
        for m in all {
            assert_eq!(m.msg_type, MsgType::WatchEvent);
            assert_eq!((m.req_id, m.tx_id), (0, 0));
            out.push(
                String::from_utf8(m.into_payload())
                    .unwrap()
                    .replace('\0', " "),
            );
        }
        out
    }

    fn write(&mut self, conn: ConnId, path: &str, value: &str) -> Reply {
        self.send(
            conn,
            Request::Write {
                path: path.into(),
                value: value.into(),
            },
        )
    }

    fn read(&mut self, conn: ConnId, path: &str) -> Reply {
        self.send(conn, Request::Read { path: path.into() })
    }

    fn set_perms(&mut self, conn: ConnId, path: &str, perms: &[&str]) -> Reply {
        let perms = Perms::new(perms.iter().map(|p| p.parse().unwrap()).collect()).unwrap();
        self.send(
            conn,
            Request::SetPerms {
                path: path.into(),
                perms,
            },
        )
    }

    fn watch(&mut self, conn: ConnId, path: &str, token: &str) -> Reply {
        self.send(
            conn,
            Request::Watch {
                path: path.into(),
                token: token.into(),
            },
        )
    }

    /// Introduces `domid` with a valid port.
    fn introduce(&mut self, dom0: ConnId, domid: DomId) -> Reply {
        let introduce = Request::Introduce {
            domid,
            gfn: 0,
            port: 1,
        };
        self.send(dom0, introduce)
    }

    /// A guest's home made by dom0 and given to it, as libxl does.
    fn guest(&mut self, dom0: ConnId, domid: DomId) -> ConnId {
        let home = format!("/local/domain/{domid}");
        self.write(dom0, &home, "").unwrap();
        self.set_perms(dom0, &home, &[&format!("n{domid}")])
            .unwrap();
        self.server.connect(domid, false)
    }
}

fn ok() -> Reply {
    Ok(b"OK\0".to_vec())
}

#[test]
fn write_read_directory_rm() {
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    assert_eq!(h.write(d0, "/a/b/c", "v"), ok());
    assert_eq!(h.read(d0, "/a/b/c"), Ok(b"v".to_vec()));
    // Parents are created empty; WRITE values have no trailing nul.
    assert_eq!(h.read(d0, "/a/b"), Ok(vec![]));
    h.write(d0, "/a/d", "").unwrap();
    assert_eq!(
        h.send(d0, Request::Directory { path: "/a".into() }),
        Ok(b"b\0d\0".to_vec())
    );
    assert_eq!(
        h.send(
            d0,
            Request::Rm {
                path: "/a/b".into()
            }
        ),
        ok()
    );
    assert_eq!(h.read(d0, "/a/b/c"), Err(XsErrno::Enoent));
    // Removing a missing node is fine when its parent exists, not otherwise.
    assert_eq!(
        h.send(
            d0,
            Request::Rm {
                path: "/a/b".into()
            }
        ),
        ok()
    );
    assert_eq!(
        h.send(
            d0,
            Request::Rm {
                path: "/x/y".into()
            }
        ),
        Err(XsErrno::Enoent)
    );
    assert_eq!(
        h.send(d0, Request::Rm { path: "/".into() }),
        Err(XsErrno::Einval)
    );
    assert_eq!(h.read(d0, "/a//b"), Err(XsErrno::Einval));
}

#[test]
fn mkdir_keeps_values() {
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    h.write(d0, "/k", "keep").unwrap();
    assert_eq!(h.send(d0, Request::Mkdir { path: "/k".into() }), ok());
    assert_eq!(h.read(d0, "/k"), Ok(b"keep".to_vec()));
}

#[test]
fn guest_is_confined_by_permissions() {
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let g = h.guest(d0, 5);
    h.write(d0, "/secret/x", "1").unwrap();
    // Relative paths land in the guest's home, which it owns.
    assert_eq!(h.write(g, "data/key", "v"), ok());
    assert_eq!(h.read(d0, "/local/domain/5/data/key"), Ok(b"v".to_vec()));
    assert_eq!(
        h.send(
            d0,
            Request::GetPerms {
                path: "/local/domain/5/data/key".into()
            }
        ),
        Ok(b"n5\0".to_vec())
    );
    // Denied where Xen denies: a node owned by dom0 with no access for others...
    assert_eq!(h.read(g, "/secret/x"), Err(XsErrno::Eacces));
    assert_eq!(h.write(g, "/secret/x", "2"), Err(XsErrno::Eacces));
    assert_eq!(h.write(g, "/new", "2"), Err(XsErrno::Eacces));
    // ...and a missing node below it says EACCES, not ENOENT.
    assert_eq!(h.read(g, "/secret/missing"), Err(XsErrno::Eacces));
    assert_eq!(h.read(g, "missing"), Err(XsErrno::Enoent));
    // A read grant lets it read but not write.
    h.set_perms(d0, "/secret/x", &["n0", "r5"]).unwrap();
    assert_eq!(h.read(g, "/secret/x"), Ok(b"1".to_vec()));
    assert_eq!(h.write(g, "/secret/x", "2"), Err(XsErrno::Eacces));
    // Only the owner sets permissions, and only privileged callers change the owner.
    assert_eq!(h.set_perms(g, "/secret/x", &["r5"]), Err(XsErrno::Eacces));
    assert_eq!(h.set_perms(g, "data/key", &["n6"]), Err(XsErrno::Eperm));
    assert_eq!(h.set_perms(g, "data/key", &["n5", "r0"]), ok());
    // Privileged requests.
    for req in [
        Request::Introduce {
            domid: 7,
            gfn: 1,
            port: 1,
        },
        Request::Release { domid: 7 },
        Request::IsDomainIntroduced { domid: 7 },
    ] {
        assert_eq!(h.send(g, req), Err(XsErrno::Eacces));
    }
    let notices = h.server.take_notices();
    assert!(notices.iter().any(|n| matches!(
        n,
        Notice::Refused {
            domid: 5,
            refusal: Refusal::Denied { .. },
            ..
        }
    )));
}

#[test]
fn owner_must_exist() {
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    h.write(d0, "/a", "").unwrap();
    assert_eq!(h.set_perms(d0, "/a", &["n7"]), ok());
    assert_eq!(h.set_perms(d0, "/a", &["n500"]), Err(XsErrno::Enoent));
}

#[test]
fn watch_fires_on_registration_after_ok_then_on_subtree_changes() {
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let w = h.server.connect(0, true);
    assert_eq!(h.watch(w, "/a", "tok"), ok());
    assert_eq!(h.events(w), ["/a tok "]);
    h.write(d0, "/a/b", "1").unwrap();
    h.write(d0, "/ab", "1").unwrap();
    h.write(d0, "/a", "2").unwrap();
    assert_eq!(h.events(w), ["/a/b tok ", "/a tok "]);
    assert_eq!(h.watch(w, "/a", "tok"), Err(XsErrno::Eexist));
    h.send(
        w,
        Request::Unwatch {
            path: "/a".into(),
            token: "tok".into(),
        },
    )
    .unwrap();
    assert_eq!(
        h.send(
            w,
            Request::Unwatch {
                path: "/a".into(),
                token: "tok".into()
            }
        ),
        Err(XsErrno::Enoent)
    );
    h.write(d0, "/a", "3").unwrap();
    assert!(h.events(w).is_empty());
}

#[test]
fn removing_a_subtree_fires_descendants_exactly_then_the_node() {
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let w = h.server.connect(0, true);
    h.write(d0, "/a/b/c", "").unwrap();
    h.watch(w, "/a/b/c", "exact").unwrap();
    h.watch(w, "/a", "top").unwrap();
    h.events(w);
    h.send(
        d0,
        Request::Rm {
            path: "/a/b".into(),
        },
    )
    .unwrap();
    assert_eq!(h.events(w), ["/a/b/c exact ", "/a/b top "]);
}

#[test]
fn relative_watches_report_relative_paths() {
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let g = h.guest(d0, 3);
    h.watch(g, "device", "t").unwrap();
    assert_eq!(h.events(g), ["device t "]);
    h.write(d0, "/local/domain/3/device/vbd", "").unwrap();
    assert_eq!(h.events(g), ["device/vbd t "]);
}

#[test]
fn events_need_read_access() {
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let g = h.guest(d0, 4);
    h.watch(g, "/hidden", "t").unwrap();
    h.events(g);
    h.write(d0, "/hidden", "x").unwrap();
    assert!(h.events(g).is_empty());
}

#[test]
fn special_watches_fire_for_privileged_watchers_only() {
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let g = h.guest(d0, 2);
    h.watch(d0, "@introduceDomain", "i").unwrap();
    h.watch(d0, "@releaseDomain", "r").unwrap();
    h.watch(g, "@releaseDomain", "r").unwrap();
    h.events(d0);
    h.events(g);
    assert_eq!(h.introduce(d0, 9), ok());
    assert_eq!(h.server.take_effects(), [Effect::Introduced(9)]);
    assert_eq!(h.events(d0), ["@introduceDomain i "]);
    assert_eq!(
        h.send(d0, Request::IsDomainIntroduced { domid: 9 }),
        Ok(b"T\0".to_vec())
    );
    assert_eq!(h.send(d0, Request::Release { domid: 9 }), ok());
    assert_eq!(h.server.take_effects(), [Effect::Released(9)]);
    assert_eq!(h.events(d0), ["@releaseDomain r "]);
    assert!(h.events(g).is_empty());
    assert_eq!(
        h.send(d0, Request::IsDomainIntroduced { domid: 9 }),
        Ok(b"F\0".to_vec())
    );
    assert_eq!(
        h.send(d0, Request::Release { domid: 9 }),
        Err(XsErrno::Enoent)
    );
    // A domain the host has not created cannot be introduced.
    assert_eq!(h.introduce(d0, 500), Err(XsErrno::Einval));
    assert!(h.server.take_effects().is_empty());
    // Port 0 is no event channel: C xenstored refuses it (`port <= 0`).
    let portless = Request::Introduce {
        domid: 10,
        gfn: 0,
        port: 0,
    };
    assert_eq!(h.send(d0, portless), Err(XsErrno::Einval));
    assert_eq!(
        h.send(d0, Request::IsDomainIntroduced { domid: 10 }),
        Ok(b"F\0".to_vec())
    );
    // Domain 0 is always introduced: no socket, no @introduceDomain.
    assert_eq!(h.introduce(d0, 0), ok());
    assert!(h.server.take_effects().is_empty());
    assert!(h.events(d0).is_empty());
    assert_eq!(
        h.send(d0, Request::GetDomainPath { domid: 9 }),
        Ok(b"/local/domain/9\0".to_vec())
    );
}

fn start(h: &mut Harness, conn: ConnId) -> u32 {
    let id = h.send(conn, Request::TransactionStart).unwrap();
    let id = std::str::from_utf8(id.strip_suffix(b"\0").unwrap()).unwrap();
    id.parse().unwrap()
}

#[test]
fn transactions_are_private_until_commit_and_conflict_with_eagain() {
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let w = h.server.connect(0, true);
    h.write(d0, "/t/x", "0").unwrap();
    h.watch(w, "/t", "t").unwrap();
    h.events(w);

    let tx = start(&mut h, d0);
    assert_ne!(tx, 0);
    let write = |p: &str, v: &str| Request::Write {
        path: p.into(),
        value: v.into(),
    };
    h.send_tx(d0, tx, write("/t/x", "1")).unwrap();
    assert_eq!(
        h.send_tx(
            d0,
            tx,
            Request::Read {
                path: "/t/x".into()
            }
        ),
        Ok(b"1".to_vec())
    );
    assert_eq!(h.read(d0, "/t/x"), Ok(b"0".to_vec()));
    assert!(h.events(w).is_empty(), "no events before commit");
    assert_eq!(
        h.send_tx(d0, tx, Request::TransactionEnd { commit: true }),
        ok()
    );
    assert_eq!(h.read(d0, "/t/x"), Ok(b"1".to_vec()));
    assert_eq!(h.events(w), ["/t/x t "]);

    // A change made meanwhile to something the transaction read: EAGAIN, nothing applied.
    let tx = start(&mut h, d0);
    h.send_tx(
        d0,
        tx,
        Request::Read {
            path: "/t/x".into(),
        },
    )
    .unwrap();
    h.send_tx(d0, tx, write("/t/y", "new")).unwrap();
    h.write(d0, "/t/x", "2").unwrap();
    assert_eq!(
        h.send_tx(d0, tx, Request::TransactionEnd { commit: true }),
        Err(XsErrno::Eagain)
    );
    assert_eq!(h.read(d0, "/t/y"), Err(XsErrno::Enoent));
    // The id is gone after END; a nested START is refused.
    assert_eq!(
        h.send_tx(d0, tx, Request::TransactionEnd { commit: false }),
        Err(XsErrno::Enoent)
    );
    let tx = start(&mut h, d0);
    assert_eq!(
        h.send_tx(d0, tx, Request::TransactionStart),
        Err(XsErrno::Ebusy)
    );
    h.send_tx(d0, tx, write("/t/z", "")).unwrap();
    assert_eq!(
        h.send_tx(d0, tx, Request::TransactionEnd { commit: false }),
        ok()
    );
    assert_eq!(h.read(d0, "/t/z"), Err(XsErrno::Enoent));
}

#[test]
fn quotas_refuse_clearly() {
    let quotas = Quotas {
        nodes: 3,
        watches: 2,
        transactions: 1,
        watch_events: 2,
        ..Quotas::default()
    };
    let mut h = Harness::with_quotas(quotas);
    let d0 = h.server.connect(0, true);
    let g = h.guest(d0, 8);
    h.write(g, "a", "").unwrap();
    h.write(g, "b", "").unwrap();
    // The home counts: it is owned by the guest.
    assert_eq!(h.write(g, "c", ""), Err(XsErrno::Enospc));
    // C xenstored 4.17 compares the count before adding: quota + 1 watches, per domain
    // (a second connection of the same domain shares them).
    h.watch(g, "a", "1").unwrap();
    h.watch(g, "b", "2").unwrap();
    let g2 = h.server.connect(8, false);
    h.watch(g2, "c", "3").unwrap();
    assert_eq!(h.watch(g, "d", "4"), Err(XsErrno::E2big));
    assert_eq!(h.watch(g2, "d", "4"), Err(XsErrno::E2big));
    h.events(g);
    h.events(g2);
    // Likewise quota + 1 transactions per connection.
    start(&mut h, g);
    start(&mut h, g);
    assert_eq!(h.send(g, Request::TransactionStart), Err(XsErrno::Enospc));
    assert_eq!(h.write(g, &"v".repeat(2100), ""), Err(XsErrno::Einval));
    assert_eq!(h.write(g, "a", &"v".repeat(2100)), Err(XsErrno::Enospc));
    // Dom0 is not limited.
    h.write(d0, "/local/domain/8/x", &"v".repeat(3000)).unwrap();
    // A guest that does not read its events loses the excess, not the daemon's memory.
    for i in 0..5 {
        h.write(d0, "/local/domain/8/a", &i.to_string()).unwrap();
    }
    assert_eq!(h.events(g).len(), 2);
    let drops = h
        .server
        .take_notices()
        .into_iter()
        .filter(|n| matches!(n, Notice::EventDropped { domid: 8, .. }))
        .count();
    assert_eq!(drops, 1, "one notice per episode, not per event");
}

#[test]
fn long_listings_need_directory_part() {
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let names: Vec<String> = (0..400).map(|i| format!("child-number-{i:04}")).collect();
    for n in &names {
        h.write(d0, &format!("/big/{n}"), "").unwrap();
    }
    assert_eq!(
        h.send(
            d0,
            Request::Directory {
                path: "/big".into()
            }
        ),
        Err(XsErrno::E2big)
    );
    let mut listed = Vec::new();
    let mut offset = 0u32;
    let mut generation = None;
    loop {
        let chunk = h
            .send(
                d0,
                Request::DirectoryPart {
                    path: "/big".into(),
                    offset,
                },
            )
            .unwrap();
        assert!(chunk.len() <= crate::wire::PAYLOAD_MAX);
        let mut parts = chunk.split(|&b| b == 0);
        let gen = parts.next().unwrap().to_vec();
        assert_eq!(*generation.get_or_insert(gen.clone()), gen);
        let body = &chunk[gen.len() + 1..];
        let done = body.ends_with(b"\0\0") || body == b"\0";
        for name in body.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            listed.push(String::from_utf8(name.to_vec()).unwrap());
            offset += name.len() as u32 + 1;
        }
        if done {
            break;
        }
    }
    assert_eq!(listed, names);
}

#[test]
fn malformed_and_unknown_requests_get_errors() {
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    h.server.handle(
        d0,
        Message::new(MsgType::Read, 1, 0, b"no-nul".to_vec()).unwrap(),
    );
    let m = h.server.pop_output(d0).unwrap();
    assert_eq!(
        (m.msg_type, m.payload()),
        (MsgType::Error, &b"EINVAL\0"[..])
    );
    h.server.handle_unknown_type(d0, 99, 2, 0);
    let m = h.server.pop_output(d0).unwrap();
    assert_eq!((m.req_id, m.payload()), (2, &b"ENOSYS\0"[..]));
    h.server.handle(
        d0,
        Message::new(MsgType::Read, 3, 77, b"/\0".to_vec()).unwrap(),
    );
    let m = h.server.pop_output(d0).unwrap();
    assert_eq!((m.tx_id, m.payload()), (77, &b"ENOENT\0"[..]));
}

#[test]
fn unread_replies_make_a_connection_wait() {
    let mut h = Harness::with_quotas(Quotas {
        outstanding: 3,
        ..Quotas::default()
    });
    let g = h.server.connect(5, false);
    for i in 0..3 {
        assert!(!h.server.is_backlogged(g));
        let (t, p) = Request::Read { path: "/".into() }.encode();
        h.server.handle(g, Message::new(t, i, 0, p).unwrap());
    }
    assert!(h.server.is_backlogged(g));
    h.server.pop_output(g);
    assert!(!h.server.is_backlogged(g));
}

#[test]
fn special_nodes_can_be_opened_to_a_guest() {
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let g = h.guest(d0, 2);
    h.watch(g, "@releaseDomain", "r").unwrap();
    h.events(g);
    assert_eq!(
        h.set_perms(g, "@releaseDomain", &["n0", "r2"]),
        Err(XsErrno::Eacces)
    );
    assert_eq!(h.set_perms(d0, "@releaseDomain", &["n0", "r2"]), ok());
    h.introduce(d0, 3).unwrap();
    h.send(d0, Request::Release { domid: 3 }).unwrap();
    assert_eq!(h.events(g), ["@releaseDomain r "]);
}

#[test]
fn special_names_are_not_nodes() {
    // Xen 4.17 checks GET_PERMS (and every node request's) paths as node names, so an `@`
    // name is EINVAL, even for dom0; SET_PERMS knows only the two specials. Before:
    // GET_PERMS answered the list, SET_PERMS on an unknown `@` name said ENOENT, and READ
    // took `@x` as a relative path below the caller's home.
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let get = |path: &str| Request::GetPerms { path: path.into() };
    assert_eq!(h.send(d0, get("@releaseDomain")), Err(XsErrno::Einval));
    assert_eq!(h.send(d0, get("@other")), Err(XsErrno::Einval));
    assert_eq!(h.write(d0, "@other", "x"), Err(XsErrno::Einval));
    assert_eq!(h.read(d0, "@other"), Err(XsErrno::Einval));
    assert_eq!(h.set_perms(d0, "@other", &["n0"]), Err(XsErrno::Einval));
    assert_eq!(h.set_perms(d0, "@introduceDomain", &["n0", "r3"]), ok());
}

#[test]
fn a_special_node_owner_may_change_it() {
    // set_perms_special asks perm_for_conn for write and owner, not for privilege.
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let g = h.guest(d0, 2);
    assert_eq!(h.set_perms(d0, "@releaseDomain", &["n2"]), ok());
    assert_eq!(h.set_perms(g, "@releaseDomain", &["n2", "r3"]), ok());
    let g3 = h.guest(d0, 3);
    assert_eq!(
        h.set_perms(g3, "@releaseDomain", &["n3"]),
        Err(XsErrno::Eacces)
    );
}

#[test]
fn release_deletes_the_domains_nodes_and_forgets_it() {
    // Before: the released domain's nodes and its entries in permission lists stayed, so a
    // new domain 5 inherited both. Its entries in other lists stay listed but are ignored,
    // as C xenstored 4.17 does (XS_PERM_IGNORE).
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let g = h.guest(d0, 5);
    h.introduce(d0, 5).unwrap();
    h.write(g, "data/x", "1").unwrap();
    h.write(d0, "/local/domain/5/data/x/below", "dom0's")
        .unwrap();
    h.write(d0, "/shared", "s").unwrap();
    h.set_perms(d0, "/shared", &["n0", "r5", "r6"]).unwrap();
    h.set_perms(d0, "@releaseDomain", &["n0", "r5"]).unwrap();
    h.watch(d0, "/local/domain/5/data/x/below", "w").unwrap();
    h.watch(d0, "@releaseDomain", "r").unwrap();
    h.events(d0);
    h.server.take_effects();

    assert_eq!(h.send(d0, Request::Release { domid: 5 }), ok());
    // Everything it owned went, subtrees included (rm_node), firing watches as RM does.
    for gone in ["/local/domain/5", "/local/domain/5/data/x/below"] {
        assert_eq!(h.read(d0, gone), Err(XsErrno::Enoent), "{gone}");
    }
    assert_eq!(
        h.events(d0),
        ["/local/domain/5/data/x/below w ", "@releaseDomain r "]
    );
    let perms = |h: &mut Harness, path: &str| h.send(d0, Request::GetPerms { path: path.into() });
    assert_eq!(perms(&mut h, "/shared"), Ok(b"n0\0r5\0r6\0".to_vec()));
    assert_eq!(h.server.take_effects(), [Effect::Released(5)]);

    // A new domain 5 gets nothing of the old one's.
    let g = h.guest(d0, 5);
    h.introduce(d0, 5).unwrap();
    assert_eq!(h.read(g, "/shared"), Err(XsErrno::Eacces));
    assert_eq!(h.read(g, "data/x"), Err(XsErrno::Enoent));
    h.watch(g, "@releaseDomain", "r").unwrap();
    h.events(g);
    h.introduce(d0, 6).unwrap();
    h.send(d0, Request::Release { domid: 6 }).unwrap();
    assert!(h.events(g).is_empty(), "no longer on @releaseDomain's list");
}

#[test]
fn entries_for_missing_domains_grant_nothing_later() {
    // C xenstored ignores list entries naming a domain that does not exist; a domain created
    // later with that domid must not gain them.
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    h.write(d0, "/n", "v").unwrap();
    h.dead.lock().unwrap().insert(40);
    assert_eq!(h.set_perms(d0, "/n", &["n0", "r40", "r41"]), ok());
    h.dead.lock().unwrap().remove(&40);
    let g = h.guest(d0, 40);
    assert_eq!(h.read(g, "/n"), Err(XsErrno::Eacces));
}

/// GET_PERMS of `path` as dom0, entries separated by spaces.
fn listed(h: &mut Harness, d0: ConnId, path: &str) -> String {
    let reply = h.send(d0, Request::GetPerms { path: path.into() }).unwrap();
    String::from_utf8(reply)
        .unwrap()
        .trim_end_matches('\0')
        .replace('\0', " ")
}

#[test]
fn a_dead_domains_entries_stay_listed_and_grant_nothing() {
    // C xenstored 4.17 keeps entries naming a domain that ended; GET_PERMS lists them, and
    // perm_for_conn skips them (domain_adjust_node_perms marks them XS_PERM_IGNORE), also for
    // a new domain reusing the domid (chk_domain_generation). Before: the entries were
    // removed, so GET_PERMS no longer listed them.
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let g = h.guest(d0, 5);
    h.introduce(d0, 5).unwrap();
    h.write(d0, "/shared", "s").unwrap();
    h.set_perms(d0, "/shared", &["n0", "r5", "b6"]).unwrap();
    // An explicit "none" for domain 5 under a readable default.
    h.write(d0, "/open", "o").unwrap();
    h.set_perms(d0, "/open", &["r0", "n5"]).unwrap();
    h.set_perms(d0, "@introduceDomain", &["n5"]).unwrap();
    assert_eq!(h.read(g, "/shared"), Ok(b"s".to_vec()));
    assert_eq!(h.read(g, "/open"), Err(XsErrno::Eacces));

    // The host destroys domain 5; xenstored notices (VIRQ_DOM_EXC).
    h.dead.lock().unwrap().insert(5);
    h.server.check_domains();
    assert_eq!(h.server.domid_of(g), None);
    assert_eq!(listed(&mut h, d0, "/shared"), "n0 r5 b6");
    assert_eq!(listed(&mut h, d0, "/open"), "r0 n5");
    // A node created now inherits the list, ignored entry included.
    h.write(d0, "/shared/child", "c").unwrap();
    assert_eq!(listed(&mut h, d0, "/shared/child"), "n0 r5 b6");
    // Rewriting a node keeps its entries ignored.
    h.write(d0, "/shared", "t").unwrap();

    // A new domain 5 gains nothing through the old entries; skipping an ignored entry
    // leaves the owner's letter as its access, as perm_for_conn does.
    h.dead.lock().unwrap().remove(&5);
    let g = h.guest(d0, 5);
    h.introduce(d0, 5).unwrap();
    assert_eq!(h.read(g, "/shared"), Err(XsErrno::Eacces));
    assert_eq!(h.read(g, "/shared/child"), Err(XsErrno::Eacces));
    assert_eq!(h.read(g, "/open"), Ok(b"o".to_vec()));
    assert_eq!(listed(&mut h, d0, "/shared"), "n0 r5 b6");
    // The special list it owned went to dom0 (remove_domid_from_perm).
    assert_eq!(
        h.set_perms(g, "@introduceDomain", &["n5"]),
        Err(XsErrno::Eacces)
    );
    // Entries set after the new domain exists are its own.
    h.set_perms(d0, "/shared", &["n0", "r5", "b6"]).unwrap();
    assert_eq!(h.read(g, "/shared"), Ok(b"t".to_vec()));
}

#[test]
fn a_transaction_cannot_revive_a_dead_domains_entry() {
    // A list written inside a transaction before the domain ended is ignored too once the
    // transaction commits, and marking the committed tree makes no conflict.
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    h.guest(d0, 5);
    h.write(d0, "/shared", "s").unwrap();
    h.set_perms(d0, "/shared", &["n0", "r5"]).unwrap();
    let tx = start(&mut h, d0);
    let write = Request::Write {
        path: "/t".into(),
        value: "x".into(),
    };
    h.send_tx(d0, tx, write).unwrap();
    let set = Request::SetPerms {
        path: "/t".into(),
        perms: Perms::new(vec!["n0".parse().unwrap(), "r5".parse().unwrap()]).unwrap(),
    };
    h.send_tx(d0, tx, set).unwrap();
    h.send_tx(
        d0,
        tx,
        Request::Read {
            path: "/shared".into(),
        },
    )
    .unwrap();

    h.dead.lock().unwrap().insert(5);
    h.server.check_domains();
    h.dead.lock().unwrap().remove(&5);
    let g = h.guest(d0, 5);
    let end = Request::TransactionEnd { commit: true };
    assert_eq!(h.send_tx(d0, tx, end), ok());
    assert_eq!(listed(&mut h, d0, "/t"), "n0 r5");
    assert_eq!(h.read(g, "/t"), Err(XsErrno::Eacces));
    assert_eq!(h.read(g, "/shared"), Err(XsErrno::Eacces));
}

#[test]
fn set_perms_naming_a_domain_that_never_existed() {
    // do_set_perms in 4.17: domain_alloc_permrefs marks entries for domains the hypervisor
    // does not know XS_PERM_IGNORE and the list is accepted; an owner that does not exist
    // is ENOENT, checked before the node is looked at. Before: the entry was dropped, and
    // the owner was checked after the caller's right to the node.
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let g = h.guest(d0, 5);
    h.write(d0, "/n", "v").unwrap();
    assert_eq!(h.set_perms(d0, "/n", &["n0", "r500", "r5"]), ok());
    assert_eq!(listed(&mut h, d0, "/n"), "n0 r500 r5");
    assert_eq!(h.read(g, "/n"), Ok(b"v".to_vec()));
    assert_eq!(h.set_perms(d0, "/n", &["n500"]), Err(XsErrno::Enoent));
    assert_eq!(h.set_perms(g, "/n", &["n500"]), Err(XsErrno::Enoent));
    assert_eq!(h.set_perms(g, "/missing", &["n500"]), Err(XsErrno::Enoent));
    assert_eq!(h.set_perms(g, "/n", &["n5"]), Err(XsErrno::Eacces));
    assert_eq!(
        h.set_perms(d0, "@releaseDomain", &["n500"]),
        Err(XsErrno::Enoent)
    );
    assert_eq!(h.set_perms(d0, "@releaseDomain", &["n0", "r500"]), ok());
    // A never-existing domain named in a list is not one check_domains ends.
    h.server.check_domains();
    assert_eq!(listed(&mut h, d0, "/n"), "n0 r500 r5");
}

#[test]
fn a_dead_domain_is_released_when_the_host_says_so() {
    // What C xenstored does on VIRQ_DOM_EXC (check_domains): a dying introduced domain is
    // ended as by XS_RELEASE, @releaseDomain included; a domain only named in lists loses
    // its nodes silently. Before: only XS_RELEASE ended a domain.
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let g = h.guest(d0, 7);
    h.introduce(d0, 7).unwrap();
    h.write(g, "data", "x").unwrap();
    h.write(d0, "/owned-by-8", "").unwrap();
    h.set_perms(d0, "/owned-by-8", &["n8"]).unwrap();
    h.watch(d0, "@releaseDomain", "r").unwrap();
    h.events(d0);
    h.server.take_effects();

    h.server.check_domains();
    assert!(h.events(d0).is_empty(), "nothing died yet");

    h.dead.lock().unwrap().extend([7, 8]);
    h.server.check_domains();
    assert_eq!(h.events(d0), ["@releaseDomain r "]);
    assert_eq!(h.server.take_effects(), [Effect::Released(7)]);
    assert_eq!(
        h.send(d0, Request::IsDomainIntroduced { domid: 7 }),
        Ok(b"F\0".to_vec())
    );
    assert_eq!(h.read(d0, "/local/domain/7"), Err(XsErrno::Enoent));
    assert_eq!(h.read(d0, "/owned-by-8"), Err(XsErrno::Enoent));
    // Its connection is gone with it.
    assert_eq!(h.server.domid_of(g), None);
}

#[test]
fn a_target_reads_what_its_domain_may() {
    // perm_for_conn: an entry naming the connection's target grants access. Before: only a
    // node owned by the target did.
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let helper = h.guest(d0, 8);
    h.guest(d0, 5);
    h.write(d0, "/vm5", "v").unwrap();
    h.set_perms(d0, "/vm5", &["n0", "r5"]).unwrap();
    assert_eq!(h.read(helper, "/vm5"), Err(XsErrno::Eacces));
    let target = Request::SetTarget {
        domid: 8,
        target: 5,
    };
    // Both must be introduced (find_connected_domain), else ENOENT.
    assert_eq!(h.send(d0, target.clone()), Err(XsErrno::Enoent));
    h.introduce(d0, 8).unwrap();
    assert_eq!(h.send(d0, target.clone()), Err(XsErrno::Enoent));
    h.introduce(d0, 5).unwrap();
    assert_eq!(h.send(d0, target), ok());
    assert_eq!(h.read(helper, "/vm5"), Ok(b"v".to_vec()));
    // Watch events follow the same rule.
    h.watch(helper, "/vm5", "t").unwrap();
    h.events(helper);
    h.write(d0, "/vm5", "w").unwrap();
    assert_eq!(h.events(helper), ["/vm5 t "]);
}

#[test]
fn events_are_seen_by_readers_of_the_parent() {
    // watch_permitted: the node or its parent readable. Before: only the node's own list.
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let g = h.guest(d0, 4);
    h.write(d0, "/dir/hidden", "").unwrap();
    h.set_perms(d0, "/dir", &["n0", "r4"]).unwrap();
    h.set_perms(d0, "/dir/hidden", &["n0"]).unwrap();
    h.watch(g, "/dir", "t").unwrap();
    h.events(g);
    h.write(d0, "/dir/hidden", "x").unwrap();
    assert_eq!(h.events(g), ["/dir/hidden t "]);
    // A grandchild whose parent is hidden stays hidden.
    h.write(d0, "/dir/hidden/deeper", "x").unwrap();
    assert!(h.events(g).is_empty());
}

#[test]
fn a_watch_is_one_whatever_its_spelling() {
    // C xenstored compares canonical paths. Before: "data" and its absolute spelling were
    // two watches, and UNWATCH of one left the other.
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let g = h.guest(d0, 5);
    h.watch(g, "data", "t").unwrap();
    assert_eq!(
        h.watch(g, "/local/domain/5/data", "t"),
        Err(XsErrno::Eexist)
    );
    let unwatch = |path: &str| Request::Unwatch {
        path: path.into(),
        token: "t".into(),
    };
    assert_eq!(h.send(g, unwatch("/local/domain/5/data")), ok());
    assert_eq!(h.send(g, unwatch("data")), Err(XsErrno::Enoent));
}

#[test]
fn node_size_counts_the_record_as_xen_does() {
    // 4.17: 24-byte header + 8 bytes per permission + value + children, refused at >= 2048.
    // Before: 4 bytes per permission, no header, refused only above the quota.
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let g = h.guest(d0, 3);
    h.write(g, "k", "").unwrap();
    let fits = 2048 - 24 - 8 - 1;
    assert_eq!(h.write(g, "k", &"v".repeat(fits)), ok());
    assert_eq!(h.write(g, "k", &"v".repeat(fits + 1)), Err(XsErrno::Enospc));
}

#[test]
fn introducing_again_resets_the_domains_connection() {
    // C xenstored's do_introduce calls domain_conn_reset for a known domain. Before: a
    // second INTRODUCE changed nothing.
    let mut h = Harness::new();
    let d0 = h.server.connect(0, true);
    let g = h.guest(d0, 5);
    h.introduce(d0, 5).unwrap();
    h.watch(g, "data", "t").unwrap();
    let tx = start(&mut h, g);
    h.events(g);
    h.server.take_effects();
    assert_eq!(h.introduce(d0, 5), ok());
    assert!(h.server.take_effects().is_empty(), "no second socket");
    h.write(d0, "/local/domain/5/data", "x").unwrap();
    assert!(h.events(g).is_empty(), "the watch is gone");
    let end = Request::TransactionEnd { commit: true };
    assert_eq!(h.send_tx(g, tx, end), Err(XsErrno::Enoent));
}
