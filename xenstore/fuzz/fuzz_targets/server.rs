//! Arbitrary frames from a privileged and two unprivileged connections into the server:
//! nothing panics, every request gets exactly one reply, and nothing sent exceeds the limit.
//! A connection its domain's release closed comes back as a new one, as a re-introduced
//! domain would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstore_wire::server::{Quotas, Server};
use xenstore_wire::wire::{MsgType, PAYLOAD_MAX};

fuzz_target!(|data: &[u8]| {
    // Small quotas so that the fuzzer reaches them.
    let quotas = Quotas {
        nodes: 8,
        watches: 4,
        transactions: 2,
        transaction_nodes: 8,
        watch_events: 8,
        ..Quotas::default()
    };
    let mut server = Server::new(quotas, Box::new(|d| d < 4));
    let parties = [(0, true), (1, false), (2, false)];
    let mut conns = parties.map(|(domid, privileged)| server.connect(domid, privileged));
    // Each step: one byte choosing the connection, then one frame from it.
    let mut rest = data;
    while let Some((&selector, tail)) = rest.split_first() {
        let which = usize::from(selector) % conns.len();
        if server.domid_of(conns[which]).is_none() {
            let (domid, privileged) = parties[which];
            conns[which] = server.connect(domid, privileged);
        }
        let conn = conns[which];
        // The transport's own dispatch: a request or an unknown type, each answered once.
        let Ok(Some(used)) = server.handle_frame(conn, tail) else {
            break;
        };
        let mut replies = 0;
        for c in conns {
            while let Some(m) = server.pop_output(c) {
                assert!(m.payload().len() <= PAYLOAD_MAX);
                if c == conn && m.msg_type != MsgType::WatchEvent {
                    replies += 1;
                }
            }
        }
        assert_eq!(replies, 1);
        let _ = server.take_effects();
        let _ = server.take_notices();
        rest = &tail[used..];
    }
});
