//! Persistent grants in tokenback's request pipeline (src/vbd/persistent.rs), served by the
//! workers in this process over the simulated host, with the xenbus side played by the test
//! (support/workers.rs): data pages kept mapped between requests when both ends offer
//! `feature-persistent`, at most 1056 per ring with least-recently-used purge, every one
//! unmapped when the VBD is disconnected, and grant copy for a front end that does not offer
//! them.
#![allow(clippy::tests_outside_test_module)]

mod support;

use blkif::Protocol;
use support::storage_file;
use support::workers::{attach, Disk, Served};
use support::{pattern, Host};
use tokenback::storage::EngineKind;
use tokenback::vbd::{Dispatch, Report, MAX_PERSISTENT_GRANTS};
use tokenback_tools::blkfront::{Blkfront, Op, Tag};

const MIB: u64 = 1 << 20;

fn file_bytes(path: &std::path::Path, offset: u64, len: usize) -> Vec<u8> {
    let data = std::fs::read(path).unwrap();
    data[offset as usize..offset as usize + len].to_vec()
}

fn persistent_disk(storage: &std::path::Path) -> Disk<'_> {
    Disk {
        persistent: true,
        ..Disk::new(storage)
    }
}

/// Waits for every tag; the data of each, in the order of `tags`.
fn wait_all(front: &mut Blkfront, tags: &[Tag]) -> Vec<Vec<u8>> {
    let mut done: Vec<Option<Vec<u8>>> = vec![None; tags.len()];
    while done.iter().any(Option::is_none) {
        for c in front.complete().unwrap() {
            let at = tags
                .iter()
                .position(|&t| t == c.tag)
                .expect("a tag we sent");
            done[at] = Some(c.into_result().unwrap());
        }
    }
    done.into_iter().map(Option::unwrap).collect()
}

#[test]
fn verified_io_through_persistent_grants_in_every_protocol() {
    for protocol in [Protocol::Native, Protocol::X86_32, Protocol::X86_64] {
        let mut host = Host::start("persistent-rw");
        let mut served = Served::start(&host, 1, EngineKind::Uring);
        let file = storage_file(&host, "disk.img", 8 * MIB);
        let disk = persistent_disk(&file);
        let (mut front, _, _) = attach(&mut host, &mut served, None, &disk, |o| {
            o.protocol = protocol;
            o.max_indirect_segments = 64;
        });
        assert!(front.disk().persistent, "both ends offered it");
        // Twice over the same pages: the second round goes through the pages mapped in the
        // first (blkfront reuses the still-granted ones first).
        for round in 0..2u8 {
            for (sector, len, seed) in [(0, 512, 1u8), (9, 4096, 2), (96, 40 * 4096, 3)] {
                let data = pattern(len, seed.wrapping_add(round * 16));
                front.write(sector, &data).unwrap();
                let mut back = vec![0; len];
                front.read(sector, &mut back).unwrap();
                assert!(back == data, "{protocol:?}: {len} bytes at {sector}");
                assert!(file_bytes(&file, sector * 512, len) == data, "in the file");
            }
        }
        // The back end kept the data pages mapped after the requests completed.
        let mapped = front.backend_mapped_pages().unwrap();
        assert!(mapped >= 40, "{protocol:?}: {mapped} pages kept mapped");
        assert_eq!(front.persistent_pages(), mapped);
    }
}

#[test]
fn more_pages_than_the_cap_are_purged_least_recently_used_and_stay_verified() {
    let mut host = Host::start("persistent-cap");
    let mut served = Served::start(&host, 1, EngineKind::Uring);
    let file = storage_file(&host, "disk.img", 64 * MIB);
    let disk = persistent_disk(&file);
    let (mut front, _, _) = attach(&mut host, &mut served, None, &disk, |o| {
        o.max_queues = 1;
        o.max_indirect_segments = 256;
    });
    assert_eq!(front.queues(), 1);
    // Eight 1 MiB requests in flight at once use 8 * 256 = 2048 distinct data pages on one
    // ring, about twice the cap; three rounds with different data, every round read back.
    const REQUESTS: u64 = 8;
    let len = 256 * 4096;
    for round in 0..3u8 {
        let seed = |i: u64| (i as u8).wrapping_mul(7).wrapping_add(round * 50);
        let writes: Vec<Tag> = (0..REQUESTS)
            .map(|i| {
                let data = pattern(len, seed(i));
                let sector = i * (len as u64 / 512);
                front.submit(Op::Write { sector, data }).unwrap()
            })
            .collect();
        wait_all(&mut front, &writes);
        let reads: Vec<Tag> = (0..REQUESTS)
            .map(|i| {
                let sector = i * (len as u64 / 512);
                front.submit(Op::Read { sector, len }).unwrap()
            })
            .collect();
        for (i, data) in wait_all(&mut front, &reads).into_iter().enumerate() {
            let i = i as u64;
            assert!(data == pattern(len, seed(i)), "round {round}, request {i}");
            let sector = i * (len as u64 / 512);
            assert!(file_bytes(&file, sector * 512, len) == data, "in the file");
        }
        let mapped = front.backend_mapped_pages().unwrap();
        // Full, then purged 5% at a time: between 95% of the cap and the cap.
        let floor = MAX_PERSISTENT_GRANTS - MAX_PERSISTENT_GRANTS * 5 / 100;
        assert!(
            (floor..=MAX_PERSISTENT_GRANTS).contains(&mapped),
            "round {round}: {mapped} pages mapped"
        );
    }
}

#[test]
fn every_page_can_be_ended_once_the_back_end_disconnects() {
    let mut host = Host::start("persistent-disconnect");
    let mut served = Served::start(&host, 1, EngineKind::Uring);
    let file = storage_file(&host, "disk.img", 8 * MIB);
    let disk = persistent_disk(&file);
    let (mut front, _, id) = attach(&mut host, &mut served, None, &disk, |o| {
        o.max_queues = 2;
        o.max_indirect_segments = 32;
    });
    assert_eq!(front.queues(), 2);
    for i in 0..16u64 {
        front.write(i * 64, &pattern(32 * 4096, i as u8)).unwrap();
    }
    let mapped = front.backend_mapped_pages().unwrap();
    assert!(mapped >= 32, "{mapped} pages kept mapped");
    // While the back end maps them the guest cannot take them back.
    assert!(front.end_persistent_grants().is_err());

    served.workers().disconnect(id);
    assert_eq!(served.report(), Report::Drained(id));
    assert_eq!(front.backend_mapped_pages().unwrap(), 0, "no map left");
    let ended = front.end_persistent_grants().unwrap();
    assert!(ended >= mapped, "{ended} pages ended of {mapped} mapped");
    assert_eq!(front.persistent_pages(), 0);
}

#[test]
fn a_daemon_that_stops_unmaps_them_too() {
    let mut host = Host::start("persistent-shutdown");
    let mut served = Served::start(&host, 2, EngineKind::Threads);
    let file = storage_file(&host, "disk.img", 8 * MIB);
    let disk = persistent_disk(&file);
    let (mut front, _, _) = attach(&mut host, &mut served, None, &disk, |_| {});
    front.write(0, &pattern(8 * 4096, 3)).unwrap();
    assert!(front.backend_mapped_pages().unwrap() >= 8);
    // The VBD stays Connected for the next daemon, which maps pages again as it needs them.
    served.shutdown();
    assert_eq!(front.backend_mapped_pages().unwrap(), 0, "no map left");
    assert!(front.end_persistent_grants().unwrap() >= 8);
}

#[test]
fn a_front_end_that_does_not_offer_them_gets_grant_copy() {
    let mut host = Host::start("persistent-off");
    let mut served = Served::start(&host, 1, EngineKind::Threads);
    let file = storage_file(&host, "disk.img", 8 * MIB);
    let disk = persistent_disk(&file);
    let (mut front, _, _) = attach(&mut host, &mut served, None, &disk, |o| {
        o.persistent = false;
        o.max_indirect_segments = 64;
    });
    assert!(!front.disk().persistent);
    for (sector, len, seed) in [(3, 512, 1u8), (16, 64 * 4096, 2)] {
        let data = pattern(len, seed);
        front.write(sector, &data).unwrap();
        let mut back = vec![0; len];
        front.read(sector, &mut back).unwrap();
        assert!(back == data, "{len} bytes at {sector}");
        // Linux blkfront ends access at each completion and disables the device if the back
        // end still maps a page: nothing may stay mapped.
        assert_eq!(front.backend_mapped_pages().unwrap(), 0);
        assert_eq!(front.persistent_pages(), 0);
    }
}
