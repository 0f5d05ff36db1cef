//! tokenback's request pipeline (src/vbd) serving simulated guests in this process's threads
//! over the simulated host: the workers take requests from real shared rings, pass them through
//! the limiter, move data by grant copy and do the I/O on a file. The xenbus side is played by
//! the test (support/workers.rs), so each test sees the pipeline alone.
#![allow(clippy::tests_outside_test_module)]

mod support;

use blkif::Protocol;
use support::storage_file;
use support::workers::{attach, Disk, Served};
use support::{pattern, Host};
use tokenback::storage::EngineKind;
use tokenback::vbd::{Dispatch, Report};
use tokenback_tools::blkfront::{Error, Op, Span};

const MIB: u64 = 1 << 20;

fn file_bytes(path: &std::path::Path, offset: u64, len: usize) -> Vec<u8> {
    let data = std::fs::read(path).unwrap();
    data[offset as usize..offset as usize + len].to_vec()
}

#[test]
fn reads_and_writes_round_trip_through_the_file_in_every_protocol_and_engine() {
    for engine in [EngineKind::Uring, EngineKind::Threads] {
        for protocol in [Protocol::Native, Protocol::X86_32, Protocol::X86_64] {
            let mut host = Host::start("pipeline-rw");
            let mut served = Served::start(&host, 1, engine);
            let file = storage_file(&host, "disk.img", 8 * MIB);
            let (mut front, _, _) = attach(&mut host, &mut served, None, &Disk::new(&file), |o| {
                o.protocol = protocol;
            });
            for (sector, len, seed) in [(0, 512, 1u8), (9, 4096, 2), (96, 11 * 4096, 3)] {
                let data = pattern(len, seed);
                front.write(sector, &data).unwrap();
                let mut back = vec![0; len];
                front.read(sector, &mut back).unwrap();
                assert_eq!(
                    back, data,
                    "{engine:?} {protocol:?}: {len} bytes at {sector}"
                );
                assert_eq!(file_bytes(&file, sector * 512, len), data, "in the file");
            }
        }
    }
}

#[test]
fn indirect_requests_up_to_the_maximum_with_arbitrary_segments() {
    let mut host = Host::start("pipeline-indirect");
    let mut served = Served::start(&host, 1, EngineKind::Uring);
    let file = storage_file(&host, "disk.img", 16 * MIB);
    let (mut front, _, _) = attach(&mut host, &mut served, None, &Disk::new(&file), |o| {
        o.max_indirect_segments = 256;
        o.max_ring_page_order = 2;
    });
    // 256 pages of whole-page segments (1 MiB), then odd per-segment ranges.
    let data = pattern(256 * 4096, 7);
    front.write(2048, &data).unwrap();
    let mut back = vec![0; data.len()];
    front.read(2048, &mut back).unwrap();
    assert!(back == data, "1 MiB indirect round trip");
    assert!(file_bytes(&file, 2048 * 512, data.len()) == data);

    let spans: Vec<Span> = (0..40u8).map(|i| Span::new(i % 8, 7).unwrap()).collect();
    let bytes: usize = spans.iter().map(|s| usize::from(s.sectors()) * 512).sum();
    let data = pattern(bytes, 9);
    let tag = front
        .submit(Op::WriteSpans {
            sector: 77,
            data: data.clone(),
            spans: spans.clone(),
        })
        .unwrap();
    front.wait_for(tag).unwrap();
    let tag = front.submit(Op::ReadSpans { sector: 77, spans }).unwrap();
    assert_eq!(front.wait_for(tag).unwrap(), data);
    assert_eq!(file_bytes(&file, 77 * 512, bytes), data);
}

#[test]
fn four_queues_of_order_four_rings_keep_many_requests_in_flight() {
    let mut host = Host::start("pipeline-queues");
    let mut served = Served::start(&host, 2, EngineKind::Uring);
    let file = storage_file(&host, "disk.img", 64 * MIB);
    let (mut front, _, _) = attach(&mut host, &mut served, None, &Disk::new(&file), |o| {
        o.max_ring_page_order = 4;
        o.max_queues = 4;
    });
    assert_eq!(front.queues(), 4);
    let mut tags = Vec::new();
    for i in 0..1024u64 {
        let data = pattern(4096, i as u8);
        tags.push((
            front
                .submit_to(
                    i as usize % 4,
                    Op::Write {
                        sector: i * 8,
                        data,
                    },
                )
                .unwrap(),
            i,
        ));
    }
    let mut done = 0;
    while done < tags.len() {
        for c in front.complete().unwrap() {
            c.into_result().unwrap();
            done += 1;
        }
    }
    for i in (0..1024u64).step_by(97) {
        let mut back = vec![0; 4096];
        front.read(i * 8, &mut back).unwrap();
        assert_eq!(back, pattern(4096, i as u8), "block {i}");
    }
}

#[test]
fn flush_barrier_fua_and_discard() {
    let mut host = Host::start("pipeline-flush");
    let mut served = Served::start(&host, 1, EngineKind::Uring);
    let file = storage_file(&host, "disk.img", 8 * MIB);
    let (mut front, _, _) = attach(&mut host, &mut served, None, &Disk::new(&file), |_| {});
    let data = pattern(8192, 4);
    front.write(0, &data).unwrap();
    front.flush().unwrap();
    front.write_fua(16, &data).unwrap();
    assert_eq!(file_bytes(&file, 16 * 512, 8192), data);
    // A discard punches a hole in the file: the range reads back as zeros.
    front.discard(0, 16, false).unwrap();
    let mut back = vec![1; 8192];
    front.read(0, &mut back).unwrap();
    assert!(back.iter().all(|&b| b == 0), "discarded range reads zeros");
}

#[test]
fn a_read_only_disk_refuses_every_write_class_request_and_serves_reads() {
    let mut host = Host::start("pipeline-ro");
    let mut served = Served::start(&host, 1, EngineKind::Threads);
    let file = storage_file(&host, "disk.img", 4 * MIB);
    std::fs::write(&file, pattern(4 * MIB as usize, 5)).unwrap();
    let mut disk = Disk::new(&file);
    disk.writable = false;
    let (mut front, _, _) = attach(&mut host, &mut served, None, &disk, |_| {});
    assert!(front.disk().read_only());
    let mut back = vec![0; 4096];
    front.read(8, &mut back).unwrap();
    assert_eq!(back, pattern(4 * MIB as usize, 5)[4096..8192]);
    // blkfront itself refuses writes to a read-only disk; send them raw instead.
    let tag = front.submit(Op::Write {
        sector: 0,
        data: vec![9; 512],
    });
    match tag {
        Ok(tag) => assert!(
            front.wait_for(tag).is_err(),
            "a write to a read-only disk fails"
        ),
        Err(e) => assert!(matches!(e, Error::ReadOnly), "{e}"),
    }
    assert_eq!(std::fs::read(&file).unwrap(), pattern(4 * MIB as usize, 5));
}

#[test]
fn requests_past_the_end_fail_alone() {
    let mut host = Host::start("pipeline-end");
    let mut served = Served::start(&host, 1, EngineKind::Uring);
    let file = storage_file(&host, "disk.img", MIB);
    let (mut front, _, _) = attach(&mut host, &mut served, None, &Disk::new(&file), |_| {});
    let mut back = vec![0; 4096];
    assert!(front.read(2048 - 4, &mut back).is_err(), "crosses the end");
    assert!(front.read(2048 - 8, &mut back).is_ok(), "the last 4 KiB");
}

#[test]
fn disconnect_drains_and_a_second_vbd_keeps_working() {
    let mut host = Host::start("pipeline-disconnect");
    let mut served = Served::start(&host, 1, EngineKind::Uring);
    let a = storage_file(&host, "a.img", MIB);
    let b = storage_file(&host, "b.img", MIB);
    let (mut front_a, _, id_a) = attach(&mut host, &mut served, None, &Disk::new(&a), |_| {});
    let (mut front_b, _, _) = attach(&mut host, &mut served, None, &Disk::new(&b), |_| {});
    front_a.write(0, &pattern(4096, 1)).unwrap();
    served.workers().disconnect(id_a);
    assert_eq!(served.report(), Report::Drained(id_a));
    let data = pattern(4096, 2);
    front_b.write(8, &data).unwrap();
    let mut back = vec![0; 4096];
    front_b.read(8, &mut back).unwrap();
    assert_eq!(back, data);
}

#[test]
fn tokens_refill_paces_a_guest() {
    let mut host = Host::start("pipeline-qos");
    let mut served = Served::start(&host, 1, EngineKind::Uring);
    let file = storage_file(&host, "disk.img", MIB);
    let mut disk = Disk::new(&file);
    disk.qos = &[("tokens-refill", "200"), ("tokens-max", "0")];
    let (mut front, _, _) = attach(&mut host, &mut served, None, &disk, |_| {});
    let start = std::time::Instant::now();
    let mut back = vec![0; 4096];
    for i in 0..60 {
        front.read(i * 8, &mut back).unwrap();
    }
    // 200 IOPS: 60 reads take about 0.3 s; a generous bound either way.
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        (0.2..2.0).contains(&elapsed),
        "60 reads at 200 IOPS took {elapsed} s"
    );
}
