//! Data through the simulated blkfront and a scripted back end: byte-exact round trips,
//! direct and indirect requests, flushes, discards, persistent grants, queue depth, and the
//! front end's checks of the disk's limits and of every response.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod support;

use blkif::abi::{
    BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE,
    BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, VDISK_READONLY,
};
use support::config::Misbehaviour;
use support::{eventually, pattern, BackendConfig, Host};
use tokenback_tools::blkfront::{Error, FlushMode, Op, ResponseError};

#[test]
fn direct_requests_round_trip_byte_exact() {
    let mut host = Host::start("direct");
    let (mut front, backend, _) = host.connected(BackendConfig::default(), |_| {});
    // One sector, one page starting mid-page, eleven pages (the most a direct request
    // carries).
    for (sector, len, seed) in [(0, 512, 1), (9, 4096, 2), (96, 11 * 4096, 3)] {
        let data = pattern(len, seed);
        front.write(sector, &data).unwrap();
        let mut back = vec![0; len];
        front.read(sector, &mut back).unwrap();
        assert_eq!(back, data, "{len} bytes at sector {sector}");
    }
    // What reached the disk is what was written, at the right place.
    let expected = pattern(4096, 2);
    assert_eq!(
        &backend.disk.lock().unwrap()[9 * 512..9 * 512 + 4096],
        &expected[..]
    );
    let seen = backend.finish();
    assert!(seen.indirect_segments.is_empty());
    // Sector 9 sits at byte 512 of its page, as in the page cache.
    assert_eq!(seen.segments[2], [(1, 7), (0, 0)]);
    assert_eq!(seen.segments[4], [(0, 7); 11]);
    assert_eq!(
        seen.operations,
        [BLKIF_OP_WRITE, BLKIF_OP_READ].repeat(3),
        "one direct request per operation"
    );
}

#[test]
fn large_requests_go_indirect_up_to_the_negotiated_cap() {
    let mut host = Host::start("indirect");
    let (mut front, backend, _) =
        host.connected(BackendConfig::default(), |o| o.max_indirect_segments = 64);
    assert_eq!(front.disk().max_indirect_segments, 64);
    for (sector, pages, seed) in [(8, 12, 4), (1000, 64, 5)] {
        let data = pattern(pages * 4096, seed);
        front.write(sector, &data).unwrap();
        let mut back = vec![0; data.len()];
        front.read(sector, &mut back).unwrap();
        assert_eq!(back, data, "{pages} pages");
    }
    let too_big = front.write(0, &vec![0; 65 * 4096]).unwrap_err();
    assert!(
        matches!(
            too_big,
            Error::TooLarge {
                segments: 65,
                max: 64,
                ..
            }
        ),
        "{too_big}"
    );
    // 64 pages' worth starting mid-page touches 65 pages.
    let unaligned = front.write(4, &vec![0; 64 * 4096]).unwrap_err();
    assert!(
        matches!(unaligned, Error::TooLarge { segments: 65, .. }),
        "{unaligned}"
    );
    let seen = backend.finish();
    assert_eq!(seen.indirect_segments, [12, 12, 64, 64]);
    assert_eq!(seen.operations, [BLKIF_OP_INDIRECT; 4]);
}

#[test]
fn without_indirect_a_request_carries_eleven_pages() {
    let mut host = Host::start("noind");
    let config = BackendConfig {
        max_indirect_segments: 0,
        ..BackendConfig::default()
    };
    let (mut front, backend, _) = host.connected(config, |_| {});
    assert_eq!(front.disk().max_indirect_segments, 0);
    let err = front.write(0, &vec![1; 12 * 4096]).unwrap_err();
    assert!(matches!(err, Error::TooLarge { max: 11, .. }), "{err}");
    let data = pattern(11 * 4096, 6);
    front.write(0, &data).unwrap();
    // The back end got one direct write of eleven whole pages, and nothing of the refused
    // one (before, the test never looked).
    assert_eq!(&backend.disk.lock().unwrap()[..data.len()], &data[..]);
    let seen = backend.finish();
    assert_eq!(seen.operations, [BLKIF_OP_WRITE]);
    assert_eq!(seen.segments, [[(0, 7); 11]]);
    assert!(seen.indirect_segments.is_empty());
}

#[test]
fn flush_follows_the_features_offered() {
    let cases = [
        (
            true,
            true,
            FlushMode::FlushDiskcache,
            Some(BLKIF_OP_FLUSH_DISKCACHE),
        ),
        (
            false,
            true,
            FlushMode::Barrier,
            Some(BLKIF_OP_WRITE_BARRIER),
        ),
        (false, false, FlushMode::None, None),
    ];
    let mut host = Host::start("flush");
    for (flush_cache, barrier, mode, op) in cases {
        let config = BackendConfig {
            flush_cache,
            barrier,
            ..BackendConfig::default()
        };
        let (mut front, backend, _) = host.connected(config, |_| {});
        assert_eq!(front.disk().flush, mode);
        front.write(0, &pattern(512, 9)).unwrap();
        front.flush().unwrap();
        let seen = backend.finish();
        assert_eq!(seen.operations.get(1).copied(), op, "{mode:?}");
        assert_eq!(seen.operations.len(), 1 + usize::from(op.is_some()));
    }
}

#[test]
fn a_refused_flush_succeeds_and_turns_flushes_off() {
    let mut host = Host::start("flushoff");
    let config = BackendConfig {
        refuse_flush: true,
        ..BackendConfig::default()
    };
    let (mut front, backend, _) = host.connected(config, |_| {});
    front.flush().unwrap();
    assert_eq!(front.disk().flush, FlushMode::None);
    front.flush().unwrap();
    assert_eq!(backend.finish().operations, [BLKIF_OP_FLUSH_DISKCACHE]);
}

#[test]
fn fua_writes_go_out_as_linux_sends_them_for_each_flush_mode() {
    // Before, the simulated blkfront had no FUA write, and flushes and barriers never carried
    // data, so no test sent what a Linux guest sends with only feature-barrier.
    let cases = [
        // Only barriers: one barrier carrying the data.
        (false, true, &[BLKIF_OP_WRITE_BARRIER][..]),
        // Flush-cache (no FUA): the write, then the block layer's post-flush.
        (true, true, &[BLKIF_OP_WRITE, BLKIF_OP_FLUSH_DISKCACHE][..]),
        // No write cache at all: a plain write.
        (false, false, &[BLKIF_OP_WRITE][..]),
    ];
    let mut host = Host::start("fua");
    for (flush_cache, barrier, operations) in cases {
        let config = BackendConfig {
            flush_cache,
            barrier,
            ..BackendConfig::default()
        };
        let (mut front, backend, _) = host.connected(config, |_| {});
        // Starts mid-page and spans three pages.
        let data = pattern(2 * 4096, 12);
        front.write_fua(13, &data).unwrap();
        assert_eq!(
            &backend.disk.lock().unwrap()[13 * 512..13 * 512 + data.len()],
            &data[..]
        );
        let seen = backend.finish();
        assert_eq!(seen.operations, operations, "{flush_cache} {barrier}");
        assert_eq!(seen.segments[0], [(5, 7), (0, 7), (0, 4)]);
    }
    // A barrier carries no indirect segments: at most eleven pages.
    let config = BackendConfig {
        flush_cache: false,
        ..BackendConfig::default()
    };
    let (mut front, backend, _) = host.connected(config, |_| {});
    let err = front.write_fua(0, &vec![0; 12 * 4096]).unwrap_err();
    assert!(matches!(err, Error::TooLarge { max: 11, .. }), "{err}");
    assert!(backend.finish().operations.is_empty());
}

#[test]
fn a_failed_barrier_with_data_is_an_error_and_turns_flushes_off() {
    // Before, any failed flush or barrier completed as success: right for one without data
    // (Linux's blkif_interrupt), wrong for a FUA write sent as a barrier with data.
    let mut host = Host::start("barfail");
    for (fail_flush, refuse_flush, fails) in [(true, false, true), (false, true, false)] {
        let config = BackendConfig {
            flush_cache: false,
            fail_flush,
            refuse_flush,
            ..BackendConfig::default()
        };
        let (mut front, backend, _) = host.connected(config, |_| {});
        assert_eq!(front.disk().flush, FlushMode::Barrier);
        let result = front.write_fua(0, &pattern(4096, 3));
        if fails {
            let err = result.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Failed {
                        operation: BLKIF_OP_WRITE_BARRIER,
                        status: BLKIF_RSP_ERROR
                    }
                ),
                "{err}"
            );
        } else {
            // Refused (EOPNOTSUPP): Linux completes it as success, data or not.
            result.unwrap();
        }
        // Flushes and FUA are off: a FUA write is a plain write, a flush is not sent.
        assert_eq!(front.disk().flush, FlushMode::None);
        front.write_fua(0, &pattern(4096, 4)).unwrap();
        front.flush().unwrap();
        assert_eq!(
            backend.finish().operations,
            [BLKIF_OP_WRITE_BARRIER, BLKIF_OP_WRITE]
        );
    }
}

#[test]
fn a_flush_without_data_that_fails_succeeds_and_turns_flushes_off() {
    let mut host = Host::start("flushfail");
    let config = BackendConfig {
        fail_flush: true,
        ..BackendConfig::default()
    };
    let (mut front, backend, _) = host.connected(config, |_| {});
    front.flush().unwrap();
    assert_eq!(front.disk().flush, FlushMode::None);
    // A FUA write whose post-flush fails: the write succeeded and so does the operation.
    let (mut fua_front, fua_backend, _) = host.connected(
        BackendConfig {
            fail_flush: true,
            ..BackendConfig::default()
        },
        |_| {},
    );
    fua_front.write_fua(0, &pattern(4096, 5)).unwrap();
    assert_eq!(fua_front.disk().flush, FlushMode::None);
    assert_eq!(backend.finish().operations, [BLKIF_OP_FLUSH_DISKCACHE]);
    assert_eq!(
        fua_backend.finish().operations,
        [BLKIF_OP_WRITE, BLKIF_OP_FLUSH_DISKCACHE]
    );
}

#[test]
fn discard_zeroes_the_range_and_asks_secure_only_when_offered() {
    let mut host = Host::start("discard");
    for secure_offered in [false, true] {
        let config = BackendConfig {
            discard_secure: secure_offered,
            ..BackendConfig::default()
        };
        let (mut front, backend, _) = host.connected(config, |_| {});
        let discard = front.disk().discard.unwrap();
        assert_eq!((discard.granularity, discard.secure), (512, secure_offered));
        front.write(0, &pattern(8 * 4096, 11)).unwrap();
        front.discard(16, 24, true).unwrap();
        let mut back = vec![0; 8 * 4096];
        front.read(0, &mut back).unwrap();
        let mut expected = pattern(8 * 4096, 11);
        expected[16 * 512..40 * 512].fill(0);
        assert_eq!(back, expected);
        let seen = backend.finish();
        assert_eq!(seen.discards, [(16, 24, secure_offered)]);
        assert_eq!(seen.operations[1], BLKIF_OP_DISCARD);
    }
}

#[test]
fn discard_is_refused_when_not_offered_and_dropped_after_eopnotsupp() {
    let mut host = Host::start("nodiscard");
    let config = BackendConfig {
        discard: false,
        ..BackendConfig::default()
    };
    let (mut front, backend, _) = host.connected(config, |_| {});
    assert!(matches!(
        front.discard(0, 8, false),
        Err(Error::NotOffered("discard"))
    ));
    assert!(backend.finish().operations.is_empty());

    let config = BackendConfig {
        refuse_discard: true,
        ..BackendConfig::default()
    };
    let (mut front, backend, _) = host.connected(config, |_| {});
    let refused = front.discard(0, 8, false).unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Failed {
                status: BLKIF_RSP_EOPNOTSUPP,
                ..
            }
        ),
        "{refused}"
    );
    assert_eq!(front.disk().discard, None);
    assert!(matches!(
        front.discard(0, 8, false),
        Err(Error::NotOffered(_))
    ));
    assert_eq!(backend.finish().operations, [BLKIF_OP_DISCARD]);
}

#[test]
fn persistent_grants_are_reused_when_both_ends_offer_them() {
    let mut host = Host::start("persist");
    let (mut front, backend, paths) = host.connected(BackendConfig::default(), |_| {});
    for round in 0..4 {
        let data = pattern(4 * 4096, round);
        front.write(0, &data).unwrap();
        let mut back = vec![0; data.len()];
        front.read(0, &mut back).unwrap();
        assert_eq!(back, data);
    }
    assert!(front.disk().persistent);
    // Four data pages, mapped once and reused by all eight requests.
    assert_eq!(front.persistent_pages(), 4);
    assert_eq!(backend.finish().persistent_maps, 4);

    // A front end that does not offer them ends access after every request.
    let (mut front, backend, _) =
        host.connected(BackendConfig::default(), |o| o.persistent = false);
    front.write(0, &pattern(4 * 4096, 1)).unwrap();
    assert!(!front.disk().persistent);
    assert_eq!(front.persistent_pages(), 0);
    assert_eq!(backend.finish().persistent_maps, 0);
    drop(paths);
}

#[test]
fn a_back_end_that_keeps_grants_without_persistence_disables_the_device() {
    let mut host = Host::start("keep");
    let config = BackendConfig {
        persistent: false,
        keep_grants: true,
        ..BackendConfig::default()
    };
    let (mut front, _backend, _) = host.connected(config, |_| {});
    let err = front.write(0, &pattern(4096, 1)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Disabled(ResponseError::GrantKept { queue: 0, .. })
        ),
        "{err}"
    );
    assert!(matches!(
        front.read(0, &mut [0; 512]),
        Err(Error::Disabled(_))
    ));
}

#[test]
fn bad_responses_disable_the_device() {
    let mut host = Host::start("badrsp");
    let cases = [
        Misbehaviour::WrongOperation,
        Misbehaviour::IdOutOfRange,
        Misbehaviour::IdNotOutstanding,
        Misbehaviour::ResponseOverflow,
    ];
    for misbehave in cases {
        let config = BackendConfig {
            misbehave: Some(misbehave),
            ..BackendConfig::default()
        };
        let (mut front, _backend, _) = host.connected(config, |_| {});
        let err = front.write(0, &pattern(512, 1)).unwrap_err();
        let Error::Disabled(reason) = &err else {
            panic!("{misbehave:?}: {err}");
        };
        let expected = match reason {
            ResponseError::WrongOperation { got, expected, .. } => {
                (*got, *expected) == (BLKIF_OP_WRITE ^ 1, BLKIF_OP_WRITE)
                    && misbehave == Misbehaviour::WrongOperation
            }
            ResponseError::BadId { id, .. } => *id == 1 << 40,
            ResponseError::NotOutstanding { .. } => misbehave == Misbehaviour::IdNotOutstanding,
            ResponseError::Overflow { .. } => misbehave == Misbehaviour::ResponseOverflow,
            _ => false,
        };
        assert!(expected, "{misbehave:?}: {reason}");
        assert!(matches!(front.flush(), Err(Error::Disabled(_))));
    }
}

#[test]
fn a_full_ring_of_requests_in_flight_on_every_queue() {
    let mut host = Host::start("depth");
    let config = BackendConfig {
        max_queues: 2,
        ..BackendConfig::default()
    };
    let (mut front, backend, _) = host.connected(config, |o| o.max_ring_page_order = 1);
    let depth = front.queues() * front.ring_size();
    assert_eq!(depth, 128);
    // Fill every slot of both rings with writes before taking any completion.
    let mut tags = Vec::new();
    for i in 0..depth as u64 {
        let data = pattern(4096, i as u8);
        tags.push(
            front
                .submit(Op::Write {
                    sector: i * 8,
                    data,
                })
                .unwrap(),
        );
    }
    assert!(matches!(front.submit(Op::Flush), Err(Error::QueueFull(_))));
    let mut done = Vec::new();
    while done.len() < depth {
        let batch = front.complete().unwrap();
        assert!(!batch.is_empty());
        done.extend(batch);
    }
    done.sort_by_key(|c| c.tag);
    assert_eq!(done.iter().map(|c| c.tag).collect::<Vec<_>>(), tags);
    assert!(done.into_iter().all(|c| c.into_result().is_ok()));
    // And read them back, staged and published as one batch per queue.
    let before = backend.seen().batches.len();
    let tags: Vec<_> = (0..depth as u64)
        .map(|i| {
            front
                .stage(Op::Read {
                    sector: i * 8,
                    len: 4096,
                })
                .unwrap()
        })
        .collect();
    let mut reads = Vec::new();
    while reads.len() < depth {
        reads.extend(front.complete().unwrap());
    }
    for c in reads {
        let i = tags.iter().position(|&t| t == c.tag).unwrap();
        assert_eq!(c.into_result().unwrap(), pattern(4096, i as u8));
    }
    assert!(front.complete().unwrap().is_empty());
    // Each ring's requests appeared at once: the back end took each ring's 64 in one go.
    assert_eq!(backend.seen().batches[before..], [64, 64]);
    let seen = backend.finish();
    assert_eq!(seen.per_queue, [depth, depth]);
}

#[test]
fn transfers_are_checked_against_the_disk() {
    let mut host = Host::start("limits");
    let config = BackendConfig {
        sector_size: 4096,
        sectors: 64,
        ..BackendConfig::default()
    };
    let (mut front, backend, _) = host.connected(config, |_| {});
    assert_eq!(front.disk().sector_size, 4096);
    assert!(matches!(
        front.write(0, &[0; 512]),
        Err(Error::Misaligned {
            sector_size: 4096,
            ..
        })
    ));
    assert!(matches!(
        front.write(1, &[0; 4096]),
        Err(Error::Misaligned { .. })
    ));
    assert!(matches!(
        front.read(64, &mut [0; 4096]),
        Err(Error::OutOfRange { capacity: 64, .. })
    ));
    front.write(56, &pattern(4096, 3)).unwrap();
    assert_eq!(backend.finish().operations, [BLKIF_OP_WRITE]);

    let config = BackendConfig {
        info: VDISK_READONLY,
        ..BackendConfig::default()
    };
    let (mut front, backend, _) = host.connected(config, |_| {});
    assert!(front.disk().read_only());
    assert!(matches!(front.write(0, &[0; 512]), Err(Error::ReadOnly)));
    assert!(matches!(front.discard(0, 8, false), Err(Error::ReadOnly)));
    front.read(0, &mut [0; 512]).unwrap();
    assert_eq!(backend.finish().operations, [BLKIF_OP_READ]);
}

#[test]
#[should_panic(expected = "scripted back end failed")]
fn a_back_end_that_failed_fails_the_test_even_without_finish() {
    // The test double's Drop used to discard its thread's result: a back end that failed
    // went unnoticed by every test that did not call `finish`.
    let mut host = Host::start("bedrop");
    let (_front, backend, paths) = host.connected(BackendConfig::default(), |_| {});
    // A `state` that is no number makes the back end's `frontend_changed` fail.
    let state = format!("{}/state", paths.frontend);
    host.toolstack
        .xenstore()
        .write(xenstore_wire::client::TxId::NONE, &state, b"garbage")
        .unwrap();
    eventually("the back end failing", || backend.has_ended());
    drop(backend);
}

#[test]
fn a_dropped_read_is_read_by_the_back_end_and_completes_without_data() {
    let mut host = Host::start("read-dropped");
    let (mut front, backend, _) = host.connected(BackendConfig::default(), |_| {});
    front.write(8, &pattern(8192, 4)).unwrap();
    let tag = front
        .submit(Op::ReadDropped {
            sector: 8,
            len: 8192,
        })
        .unwrap();
    let done = loop {
        if let Some(done) = front.complete().unwrap().into_iter().find(|d| d.tag == tag) {
            break done;
        }
        front
            .handle_backend_events(std::time::Duration::from_secs(20))
            .unwrap();
    };
    assert_eq!(done.into_result().unwrap(), Vec::<u8>::new());
    let seen = backend.finish();
    assert_eq!(seen.operations, [BLKIF_OP_WRITE, BLKIF_OP_READ]);
}
