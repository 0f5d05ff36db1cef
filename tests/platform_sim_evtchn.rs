//! Event channels of the simulated host: binding, notify both ways, coalescing, unmask,
//! closing seen by the peer, and the pollable fd.

#![cfg(test)]

mod platform_sim_common;

use platform_sim_common::{readable, TempRun};
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokenback::platform::sim::{GuestDomain, PortStatus, SimEventChannel, SimGrants, SimPlatform};
use tokenback::platform::{
    CopyOp, DomId, EventChannel, EvtchnError, GrantAccess, GrantError, GrantMapping, GrantRef,
    GuestRange, Platform, Port,
};

const DOM0: DomId = DomId(0);

struct Pair {
    back: SimEventChannel,
    front: SimEventChannel,
    back_port: Port,
    front_port: Port,
}

/// A guest offers a port to dom0, dom0 binds it, and the bind's own event is drained.
fn connected(run: &TempRun, guest: &GuestDomain) -> Pair {
    let mut front = SimEventChannel::open(run.dir(), guest.domid()).unwrap();
    let mut back = SimEventChannel::open(run.dir(), DOM0).unwrap();
    let front_port = front.alloc_unbound(DOM0).unwrap();
    assert_eq!(
        front.status(front_port).unwrap(),
        PortStatus::Unbound { remote: DOM0 }
    );
    let back_port = back.bind_interdomain(guest.domid(), front_port).unwrap();
    assert_eq!(
        front.status(front_port).unwrap(),
        PortStatus::Interdomain {
            remote: DOM0,
            remote_port: back_port
        }
    );
    // Like Xen, binding leaves the new port pending once.
    let mut fired = Vec::new();
    back.read_pending(&mut fired).unwrap();
    assert_eq!(fired, [back_port]);
    back.unmask(&fired).unwrap();
    Pair {
        back,
        front,
        back_port,
        front_port,
    }
}

fn pending(ch: &mut SimEventChannel) -> Vec<Port> {
    let mut out = Vec::new();
    ch.read_pending(&mut out).unwrap();
    out
}

#[test]
fn events_flow_both_ways_and_make_the_fd_readable() {
    let run = TempRun::new();
    let guest = GuestDomain::create(run.dir(), 1, 1).unwrap();
    let mut p = connected(&run, &guest);

    assert!(!readable(&p.back, 0));
    p.front.notify(p.front_port).unwrap();
    assert!(readable(&p.back, 0));
    assert_eq!(pending(&mut p.back), [p.back_port]);
    assert!(!readable(&p.back, 0), "read_pending drains the fd");

    p.back.notify(p.back_port).unwrap();
    assert!(readable(&p.front, 0));
    assert_eq!(pending(&mut p.front), [p.front_port]);
}

#[test]
fn wait_pending_blocks_until_an_event_or_the_timeout() {
    let run = TempRun::new();
    let guest = GuestDomain::create(run.dir(), 1, 1).unwrap();
    let mut p = connected(&run, &guest);
    let mut fired = Vec::new();
    // Nothing sent: the wait ends at its timeout with no port.
    p.back
        .wait_pending(Some(Duration::from_millis(20)), &mut fired)
        .unwrap();
    assert!(fired.is_empty(), "{fired:?}");
    // An event sent from another thread ends an unbounded wait with its port.
    let (mut front, port) = (p.front, p.front_port);
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        front.notify(port).unwrap();
        front
    });
    p.back.wait_pending(None, &mut fired).unwrap();
    assert_eq!(fired, [p.back_port]);
    drop(sender.join().unwrap());
}

#[test]
fn events_coalesce_while_masked_and_unmask_redelivers() {
    let run = TempRun::new();
    let guest = GuestDomain::create(run.dir(), 1, 1).unwrap();
    let mut p = connected(&run, &guest);

    for _ in 0..5 {
        p.front.notify(p.front_port).unwrap();
    }
    assert_eq!(
        pending(&mut p.back),
        [p.back_port],
        "five events, one delivery"
    );
    p.front.notify(p.front_port).unwrap();
    p.front.notify(p.front_port).unwrap();
    assert!(pending(&mut p.back).is_empty(), "disabled until unmasked");

    p.back.unmask(&[p.back_port]).unwrap();
    assert!(readable(&p.back, 0));
    assert_eq!(pending(&mut p.back), [p.back_port], "pending while masked");
    p.back.unmask(&[p.back_port]).unwrap();
    assert!(pending(&mut p.back).is_empty(), "nothing new since");
}

#[test]
fn closing_one_end_is_seen_by_the_other() {
    let run = TempRun::new();
    let guest = GuestDomain::create(run.dir(), 1, 1).unwrap();
    let mut p = connected(&run, &guest);

    p.back.unbind(p.back_port).unwrap();
    assert_eq!(
        p.front.status(p.front_port).unwrap(),
        PortStatus::Unbound { remote: DOM0 }
    );
    // As on Xen, an event to a closed peer is dropped, not an error.
    p.front.notify(p.front_port).unwrap();
    assert_eq!(
        p.back.notify(p.back_port),
        Err(EvtchnError::NotBound { port: p.back_port })
    );
    // The guest's port can be bound again, as by a restarted back end.
    let again = p
        .back
        .bind_interdomain(guest.domid(), p.front_port)
        .unwrap();
    assert_eq!(pending(&mut p.back), [again]);

    // Dropping the guest's handle closes its end.
    drop(p.front);
    assert_eq!(
        p.back.status(again).unwrap(),
        PortStatus::Unbound {
            remote: guest.domid()
        }
    );
}

#[test]
fn ports_are_checked() {
    let run = TempRun::new();
    let guest = GuestDomain::create(run.dir(), 1, 1).unwrap();
    let other = GuestDomain::create(run.dir(), 1, 1).unwrap();
    let mut p = connected(&run, &guest);
    let mut other_back = SimEventChannel::open(run.dir(), DOM0).unwrap();

    // Only the handle that bound a port may use it, as with evtchn fds.
    assert_eq!(
        other_back.notify(p.back_port),
        Err(EvtchnError::NotBound { port: p.back_port })
    );
    assert_eq!(
        p.back.notify(Port(0)),
        Err(EvtchnError::BadPort { port: Port(0) })
    );
    // A port offered to dom0 cannot be bound twice, nor one offered to someone else.
    assert_eq!(
        other_back.bind_interdomain(guest.domid(), p.front_port),
        Err(EvtchnError::NotOffered {
            domid: guest.domid(),
            port: p.front_port
        })
    );
    let for_other = p.front.alloc_unbound(other.domid()).unwrap();
    assert!(matches!(
        other_back.bind_interdomain(guest.domid(), for_other),
        Err(EvtchnError::NotOffered { .. })
    ));
    assert_eq!(
        p.front.alloc_unbound(DomId(999)),
        Err(EvtchnError::BadDomain { domid: DomId(999) })
    );
}

#[test]
fn destroying_a_domain_unbinds_its_peers_and_stops_its_grants() {
    let run = TempRun::new();
    let guest = GuestDomain::create(run.dir(), 1, 1).unwrap();
    let domid = guest.domid();
    guest.write(0, 0, b"alive").unwrap();
    guest.grant(GrantRef(8), DOM0, 0, false).unwrap();
    let mut grants = SimGrants::new(run.dir(), DOM0);
    let mapping = grants.map(domid, &[GrantRef(8)], false).unwrap();
    let p = connected(&run, &guest);
    let mut back = p.back;
    std::mem::forget(p.front); // the guest process died without closing anything

    run.dir().destroy_domain(domid).unwrap();
    assert!(run.dir().domain_exists(domid), "until released and removed");
    assert_eq!(
        back.status(p.back_port).unwrap(),
        PortStatus::Unbound { remote: domid }
    );
    back.notify(p.back_port).unwrap();

    let mut buf = [0u8; 5];
    let mut ops = [CopyOp::from_guest(
        GuestRange {
            domid,
            gref: GrantRef(8),
            offset: 0,
        },
        &mut buf,
    )];
    assert_eq!(grants.copy(&mut ops), 1);
    assert_eq!(ops[0].status(), Err(GrantError::BadDomain { domid }));
    // SAFETY: one mapped page, kept as Xen keeps a dying domain's pages while mapped.
    let kept = unsafe { std::slice::from_raw_parts(mapping.as_ptr().as_ptr(), 5) };
    assert_eq!(kept, b"alive");

    run.dir().remove_domain(domid).unwrap();
    assert!(!run.dir().domain_exists(domid));
}

/// Back-end code written against the traits only.
fn echo_once<P: Platform>(platform: &P, domid: DomId, offered: Port) -> (P::Events, Port) {
    let mut events = platform.event_channel().unwrap();
    let port = events.bind_interdomain(domid, offered).unwrap();
    let mut fired = Vec::new();
    events.read_pending(&mut fired).unwrap();
    events.unmask(&fired).unwrap();
    events.notify(port).unwrap();
    (events, port)
}

#[test]
fn back_end_code_generic_over_the_platform_runs_on_the_sim() {
    let run = TempRun::new();
    let guest = GuestDomain::create(run.dir(), 1, 1).unwrap();
    let mut front = SimEventChannel::open(run.dir(), guest.domid()).unwrap();
    let offered = front.alloc_unbound(DOM0).unwrap();

    let platform = SimPlatform::new(run.dir().clone(), DOM0);
    let (_events, port) = echo_once(&platform, guest.domid(), offered);
    assert_eq!(
        front.status(offered).unwrap(),
        PortStatus::Interdomain {
            remote: DOM0,
            remote_port: port
        }
    );
    assert_eq!(pending(&mut front), [offered]);
    assert!(platform.grants().is_ok());
}

#[test]
fn the_fd_drives_a_mio_poll_edge_by_edge() {
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};

    let run = TempRun::new();
    let guest = GuestDomain::create(run.dir(), 1, 1).unwrap();
    let mut p = connected(&run, &guest);
    let mut poll = Poll::new().unwrap();
    let fd = p.back.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&fd), Token(7), Interest::READABLE)
        .unwrap();
    let mut events = Events::with_capacity(4);
    let ready = |poll: &mut Poll, events: &mut Events| {
        poll.poll(events, Some(std::time::Duration::ZERO)).unwrap();
        events
            .iter()
            .any(|e| e.token() == Token(7) && e.is_readable())
    };

    assert!(!ready(&mut poll, &mut events));
    p.front.notify(p.front_port).unwrap();
    assert!(ready(&mut poll, &mut events));
    assert_eq!(pending(&mut p.back), [p.back_port]);
    // Drained: edge-triggered, no new event until something new arrives.
    assert!(!ready(&mut poll, &mut events));

    // Unmasking a port that fired meanwhile raises a new edge.
    p.front.notify(p.front_port).unwrap();
    assert!(!ready(&mut poll, &mut events), "masked: coalesced");
    p.back.unmask(&[p.back_port]).unwrap();
    assert!(ready(&mut poll, &mut events));
    assert_eq!(pending(&mut p.back), [p.back_port]);
}

#[test]
fn unmask_skips_ports_not_bound_here_and_unmasks_the_rest() {
    // Before: unmask([closed port, live port]) stopped at the closed one with NotBound and left
    // the live port disabled for good.
    let run = TempRun::new();
    let guest = GuestDomain::create(run.dir(), 1, 1).unwrap();
    let mut p = connected(&run, &guest);
    let closed = p
        .back
        .bind_interdomain(guest.domid(), p.front.alloc_unbound(DOM0).unwrap());
    let closed = closed.unwrap();
    assert_eq!(pending(&mut p.back), [closed], "the bind's own event");
    p.back.unbind(closed).unwrap();

    p.front.notify(p.front_port).unwrap();
    assert_eq!(pending(&mut p.back), [p.back_port]);
    p.back
        .unmask(&[closed, Port(0), Port(1 << 20), p.back_port])
        .unwrap();
    p.front.notify(p.front_port).unwrap();
    assert_eq!(
        pending(&mut p.back),
        [p.back_port],
        "the live port was unmasked"
    );
}
