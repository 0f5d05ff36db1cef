//! The simulated blkfront completes the vbd handshake with a scripted Linux-like back end,
//! for every protocol and every ring order, with one queue and with several, and every
//! request form works in each protocol's layout.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod support;

use blkif::abi::{BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT};
use blkif::Protocol;
use support::{eventually, pattern, BackendConfig, Host};

/// Connects at each ring order 0..=4 in `protocol` and checks what each side wrote and saw.
fn every_ring_order(name: &str, protocol: Protocol) {
    let mut host = Host::start(name);
    for order in 0..=4u8 {
        let config = BackendConfig {
            max_queues: 1,
            ..BackendConfig::default()
        };
        let (mut front, backend, paths) = host.connected(config, |opts| {
            opts.protocol = protocol;
            opts.max_ring_page_order = order;
        });
        let fe = paths.frontend.clone();
        assert_eq!(front.ring_size(), 32 << order);
        assert_eq!(host.read(&format!("{fe}/state")).as_deref(), Some("4"));
        assert_eq!(
            host.read(&format!("{}/state", paths.backend)).as_deref(),
            Some("4")
        );
        assert_eq!(
            host.read(&format!("{fe}/protocol")).as_deref(),
            Some(protocol.name())
        );
        assert_eq!(
            host.read(&format!("{fe}/feature-persistent")).as_deref(),
            Some("1")
        );
        assert!(host.read(&format!("{fe}/event-channel")).is_some());
        assert_eq!(host.read(&format!("{fe}/multi-queue-num-queues")), None);
        if order == 0 {
            assert_eq!(host.read(&format!("{fe}/ring-page-order")), None);
            assert!(host.read(&format!("{fe}/ring-ref")).is_some());
        } else {
            assert_eq!(
                host.read(&format!("{fe}/ring-page-order")),
                Some(order.to_string())
            );
            assert_eq!(host.read(&format!("{fe}/ring-ref")), None);
            for i in 0..1u32 << order {
                assert!(
                    host.read(&format!("{fe}/ring-ref{i}")).is_some(),
                    "ring-ref{i}"
                );
            }
        }
        // The ring works in this layout: a request in every slot and back.
        let data = pattern(4096, order);
        for slot in 0..front.ring_size() as u64 {
            front.write(slot * 8, &data).unwrap();
        }
        let mut back = vec![0; 4096];
        front
            .read(8 * (front.ring_size() as u64 - 1), &mut back)
            .unwrap();
        assert_eq!(back, data);
        // Every request form in this layout: indirect, discard, flush.
        let big = pattern(16 * 4096, order + 100);
        front.write(4096, &big).unwrap();
        front.discard(4096 + 8, 8, false).unwrap();
        front.flush().unwrap();
        let mut back = vec![0; big.len()];
        front.read(4096, &mut back).unwrap();
        let mut expected = big;
        expected[4096..8192].fill(0);
        assert_eq!(back, expected);
        // The watch event of our Connected reaches the back end asynchronously (through
        // xenstored, a process of its own); under load it can come after all the I/O.
        eventually("the back end seeing Connected", || {
            backend.seen().frontend_states.contains(&4)
        });
        let seen = backend.finish();
        assert_eq!(seen.indirect_segments, [16, 16]);
        assert_eq!(seen.discards, [(4096 + 8, 8, false)]);
        let tail = &seen.operations[seen.operations.len() - 4..];
        let forms = [
            BLKIF_OP_INDIRECT,
            BLKIF_OP_DISCARD,
            BLKIF_OP_FLUSH_DISKCACHE,
            BLKIF_OP_INDIRECT,
        ];
        assert_eq!(tail, forms);
        assert_eq!(seen.protocol.as_deref(), Some(protocol.name()));
        assert_eq!(seen.ring_order, order);
        assert_eq!(seen.queues, 1);
        // Its watch may first fire after the front end already went Initialised, and its
        // registration event and a change made meanwhile may both come and read the same
        // state: what matters is the order of the states.
        let mut states: Vec<u32> = seen
            .frontend_states
            .into_iter()
            .filter(|&s| s != 1)
            .collect();
        states.dedup();
        assert_eq!(states, [3, 4], "{protocol}, order {order}");
    }
}

#[test]
fn native_protocol_at_every_ring_order() {
    every_ring_order("native", Protocol::Native);
}

#[test]
fn x86_32_protocol_at_every_ring_order() {
    every_ring_order("x86-32", Protocol::X86_32);
}

#[test]
fn x86_64_protocol_at_every_ring_order() {
    every_ring_order("x86-64", Protocol::X86_64);
}

#[test]
fn ring_order_is_the_smaller_of_both_caps() {
    let mut host = Host::start("order-cap");
    let config = BackendConfig {
        max_ring_page_order: 2,
        ..BackendConfig::default()
    };
    let (front, backend, _) = host.connected(config, |opts| opts.max_ring_page_order = 4);
    assert_eq!(front.ring_size(), 32 << 2);
    assert_eq!(backend.finish().ring_order, 2);
}

#[test]
fn queues_are_the_smaller_of_both_caps_and_live_under_queue_n() {
    let mut host = Host::start("mq");
    let config = BackendConfig {
        max_queues: 3,
        ..BackendConfig::default()
    };
    let (mut front, backend, paths) = host.connected(config, |opts| {
        opts.max_ring_page_order = 1;
        opts.max_queues = 8;
    });
    let fe = paths.frontend.clone();
    assert_eq!(front.queues(), 3);
    assert_eq!(
        host.read(&format!("{fe}/multi-queue-num-queues"))
            .as_deref(),
        Some("3")
    );
    assert_eq!(host.read(&format!("{fe}/event-channel")), None);
    assert_eq!(host.read(&format!("{fe}/ring-ref0")), None);
    for q in 0..3 {
        assert!(host
            .read(&format!("{fe}/queue-{q}/event-channel"))
            .is_some());
        assert!(host.read(&format!("{fe}/queue-{q}/ring-ref0")).is_some());
        assert!(host.read(&format!("{fe}/queue-{q}/ring-ref1")).is_some());
    }
    // Each queue carries its own requests, and data written through one reads back
    // through another.
    let data = pattern(8192, 7);
    front.write(64, &data).unwrap();
    for q in 0..3 {
        let tag = front
            .submit_to(
                q,
                tokenback_tools::blkfront::Op::Read {
                    sector: 64,
                    len: 8192,
                },
            )
            .unwrap();
        let done = front.complete().unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].tag, tag);
        assert_eq!(done[0].clone().into_result().unwrap(), data);
    }
    let seen = backend.finish();
    assert_eq!(seen.queues, 3);
    assert_eq!(seen.per_queue.iter().filter(|&&n| n > 0).count(), 3);
    assert_eq!(seen.per_queue.iter().sum::<usize>(), 4);
}

#[test]
fn connects_when_the_back_end_is_already_waiting() {
    // The back end reached InitWait long before the front end started: the first watch
    // event already shows it.
    let mut host = Host::start("late");
    let (domid, paths, backend) = host.guest_with_disk(BackendConfig::default());
    support::eventually("back end InitWait", || {
        host.read(&format!("{}/state", paths.backend)).as_deref() == Some("2")
    });
    let front = tokenback_tools::blkfront::Blkfront::connect(host.options(domid)).unwrap();
    assert_eq!(front.disk().sectors, 16384);
    drop(front);
    drop(backend);
}
