//! tokenback's xenbus layer reads what the simulated toolstack and blkfront really write: the
//! toolstack's backend keys validate, a backend path names its VBD, and the front end's keys
//! for every protocol, ring order 0..=4 and 1..=4 queues read back as the front end chose them.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::collections::HashMap;

use blkif::Protocol;
use support::{BackendConfig, Host};
use tokenback::platform::DomId;
use tokenback::xenbus::{read_device, read_frontend_rings, BackendTree, BackendType, Limits};
use xenstore_wire::client::TxId;

/// Every key below `dir` and its sub-directories, relative to `dir`.
fn keys_below(host: &mut Host, dir: &str) -> HashMap<String, String> {
    let mut keys = HashMap::new();
    let mut todo = vec![String::new()];
    while let Some(relative) = todo.pop() {
        let path = if relative.is_empty() {
            dir.to_owned()
        } else {
            format!("{dir}/{relative}")
        };
        let children = host
            .toolstack
            .xenstore()
            .directory(TxId::NONE, &path)
            .unwrap();
        for child in children {
            let key = if relative.is_empty() {
                child
            } else {
                format!("{relative}/{child}")
            };
            if let Some(value) = host.read(&format!("{dir}/{key}")) {
                keys.insert(key.clone(), value);
            }
            todo.push(key);
        }
    }
    keys
}

fn connect_and_check(host: &mut Host, protocol: Protocol, order: u8, queues: u32) {
    let what = format!("{} order {order} queues {queues}", protocol.name());
    let (front, backend, paths) = host.connected(BackendConfig::default(), |opts| {
        opts.protocol = protocol;
        opts.max_ring_page_order = order;
        opts.max_queues = queues;
    });
    assert_eq!(front.queues(), queues as usize, "{what}");

    let tree = BackendTree::new(DomId(0), BackendType::Vbd);
    let (id, key) = tree
        .parse(&paths.backend)
        .expect("backend path names a VBD");
    assert_eq!((id.devid, key), (51712, ""), "{what}");
    assert_eq!(tree.device_dir(id), paths.backend);

    let backend_keys = keys_below(host, &paths.backend);
    let device = read_device(|k| backend_keys.get(k).cloned()).expect("toolstack keys valid");
    assert_eq!(device.frontend, paths.frontend);
    assert_eq!(device.frontend_id, id.frontend_id);
    assert!(device.writable);

    let front_keys = keys_below(host, &paths.frontend);
    let limits = Limits {
        max_ring_page_order: 4,
        max_queues: 4,
    };
    let rings = read_frontend_rings(limits, |k| front_keys.get(k).cloned())
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(rings.protocol.name(), protocol.name(), "{what}");
    assert_eq!(rings.ring_page_order, order, "{what}");
    assert_eq!(rings.queues.len(), queues as usize, "{what}");
    for queue in &rings.queues {
        assert_eq!(queue.ring_refs.len(), 1 << order, "{what}");
    }
    assert!(rings.persistent, "{what}");
    front.close().unwrap();
    // The scripted back end, which plays Linux blkback, read the same.
    let seen = backend.finish();
    assert_eq!(seen.ring_order, order, "{what}");
    assert_eq!(seen.queues, queues as usize, "{what}");
}

#[test]
fn every_protocol_order_and_queue_count_reads_back() {
    let mut host = Host::start("xenbus-keys");
    for protocol in [Protocol::Native, Protocol::X86_32, Protocol::X86_64] {
        for order in 0..=4 {
            connect_and_check(&mut host, protocol, order, 1);
        }
        for queues in 2..=4 {
            connect_and_check(&mut host, protocol, 2, queues);
        }
    }
}
