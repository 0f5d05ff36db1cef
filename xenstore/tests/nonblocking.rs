//! The mio-driven client against our server.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::time::Instant;

use common::{TestServer, EVENTUALLY};
use mio::{Events, Poll, Token};
use xenstore_wire::client::blocking::Client;
use xenstore_wire::client::nonblocking::{AsyncClient, Completion};
use xenstore_wire::client::{Endpoint, TxId, WatchEvent};
use xenstore_wire::wire::Request;

const TOKEN: Token = Token(7);

/// Runs the loop until `done` says so, collecting completions in arrival order.
fn pump(
    poll: &mut Poll,
    c: &mut AsyncClient,
    mut done: impl FnMut(&[Completion]) -> bool,
) -> Vec<Completion> {
    let mut events = Events::with_capacity(16);
    let mut out = Vec::new();
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        while let Some(done_one) = c.next_completion() {
            out.push(done_one);
        }
        if done(&out) {
            return out;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out with {out:?}");
        poll.poll(&mut events, Some(left)).unwrap();
        for e in events.iter() {
            assert_eq!(e.token(), TOKEN);
            c.handle_ready(poll.registry());
        }
    }
}

fn replies(out: &[Completion]) -> usize {
    out.iter()
        .filter(|c| matches!(c, Completion::Reply { .. }))
        .count()
}

fn event(path: &str) -> WatchEvent {
    WatchEvent {
        path: path.into(),
        token: "t".into(),
    }
}

#[test]
fn many_requests_in_flight_with_events_interleaved() {
    let s = TestServer::start("mio-many");
    let mut setup = Client::connect(Endpoint::Socket(s.socket())).unwrap();
    for i in 0..100 {
        setup
            .write(TxId::NONE, &format!("/k/{i}"), i.to_string().as_bytes())
            .unwrap();
    }
    let mut poll = Poll::new().unwrap();
    let mut c = AsyncClient::connect(Endpoint::Socket(s.socket())).unwrap();
    c.register(poll.registry(), TOKEN).unwrap();

    let watch = Request::Watch {
        path: "/k".into(),
        token: "t".into(),
    };
    let watch_id = c.submit(TxId::NONE, &watch).unwrap();
    let mut reads = Vec::new();
    let mut writes = 0;
    for i in 0..100 {
        let read = Request::Read {
            path: format!("/k/{i}"),
        };
        reads.push((c.submit(TxId::NONE, &read).unwrap(), i.to_string()));
        if i % 10 == 0 {
            let write = Request::Write {
                path: format!("/k/w{i}"),
                value: b"x".to_vec(),
            };
            c.submit(TxId::NONE, &write).unwrap();
            writes += 1;
        }
    }
    assert_eq!(c.in_flight(), 1 + 100 + writes);
    let total = 1 + 100 + writes;
    let out = pump(&mut poll, &mut c, |out| replies(out) == total);

    // Every read got its own value back, matched by req_id.
    for (id, want) in &reads {
        let got = out.iter().find_map(|c| match c {
            Completion::Reply { req_id, result } if req_id == id => {
                Some(result.as_ref().unwrap().clone())
            }
            _ => None,
        });
        assert_eq!(got.as_deref(), Some(want.as_bytes()));
    }
    // The registration event follows the watch's OK; each write's event came in between.
    let watch_pos = out
        .iter()
        .position(|c| matches!(c, Completion::Reply { req_id, .. } if *req_id == watch_id))
        .unwrap();
    assert!(matches!(&out[watch_pos + 1], Completion::Event(e) if *e == event("/k")));
    let events: Vec<&WatchEvent> = out
        .iter()
        .filter_map(|c| match c {
            Completion::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 1 + writes);
    let last_event = out
        .iter()
        .rposition(|c| matches!(c, Completion::Event(_)))
        .unwrap();
    assert!(last_event < out.len() - 1, "events interleave with replies");
}

#[test]
fn reconnects_and_re_registers_watches() {
    let s = TestServer::start("mio-restart");
    let mut poll = Poll::new().unwrap();
    let mut c = AsyncClient::connect(Endpoint::Socket(s.socket())).unwrap();
    c.register(poll.registry(), TOKEN).unwrap();
    let watch = Request::Watch {
        path: "/r".into(),
        token: "t".into(),
    };
    c.submit(TxId::NONE, &watch).unwrap();
    pump(&mut poll, &mut c, |out| {
        out.iter().any(|c| matches!(c, Completion::Event(_)))
    });

    let dir = s.stop_keeping_dir();
    let out = pump(&mut poll, &mut c, |out| {
        out.iter()
            .any(|c| matches!(c, Completion::Disconnected { .. }))
    });
    assert!(!c.is_connected(), "{out:?}");
    assert!(c
        .submit(TxId::NONE, &Request::Read { path: "/".into() })
        .is_err());

    let s = TestServer::start_in(dir);
    let deadline = Instant::now() + EVENTUALLY;
    while c.reconnect(poll.registry()).is_err() {
        assert!(Instant::now() < deadline, "never reconnected");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The watch fires again on re-registration; its OK reply is the client's own business.
    let out = pump(&mut poll, &mut c, |out| !out.is_empty());
    assert!(
        matches!(&out[0], Completion::Event(e) if *e == event("/r")),
        "{out:?}"
    );
    let id = c
        .submit(TxId::NONE, &Request::Read { path: "/".into() })
        .unwrap();
    let out = pump(&mut poll, &mut c, |out| replies(out) == 1);
    assert!(matches!(&out[0], Completion::Reply { req_id, result: Ok(_) } if *req_id == id));
    drop(s);
}
