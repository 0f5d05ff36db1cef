use std::os::unix::fs::FileExt;

use blkif::abi::{Segment, BLKIF_OP_WRITE};
use blkif::{Limits, Protocol, RawDirect, RawDiscard, RawIndirect, RawRequest, Request, RingState};

use super::*;
use crate::limiter::{Balance, LimitKind};

const SHAPE: Shape = Shape {
    queues: 2,
    ring_page_order: 0,
    protocol: Protocol::X86_64,
};

fn limits() -> Limits {
    Limits::new(crate::xenbus::keys::MAX_INDIRECT_SEGMENTS).unwrap()
}

fn write(id: u64, sector: u64) -> Request {
    let mut seg = [Segment::default(); 11];
    seg[0] = Segment::new(7, 0, 7);
    seg[1] = Segment::new(8, 2, 3);
    let raw = RawRequest::Direct(RawDirect {
        operation: BLKIF_OP_WRITE,
        nr_segments: 2,
        handle: 51712,
        id,
        sector_number: sector,
        seg,
    });
    Request::validate(&raw, &limits()).unwrap()
}

fn discard(id: u64) -> Request {
    let raw = RawRequest::Discard(RawDiscard {
        flag: 1,
        handle: 0,
        id,
        sector_number: 64,
        nr_sectors: 128,
    });
    Request::validate(&raw, &limits()).unwrap()
}

fn indirect(id: u64) -> Request {
    let raw = RawRequest::Indirect(RawIndirect {
        indirect_op: 0,
        nr_segments: 200,
        handle: 3,
        id,
        sector_number: 1 << 20,
        indirect_grefs: [11, 0, 0, 0, 0, 0, 0, 0],
    });
    Request::validate(&raw, &limits()).unwrap()
}

fn open(path: &Path) -> Result<(StateFile, Saved), StateFileError> {
    StateFile::open(path, SHAPE, &limits(), 5_000_000_000)
}

#[test]
fn requests_indices_and_balances_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vbd-1-51712");
    let mut file = StateFile::create(&path, SHAPE).unwrap();
    file.save_rsp_prod_pvt(0, 10);
    file.save_req_cons(0, 10);
    file.save_rsp_prod_pvt(1, u32::MAX);
    file.save_req_cons(1, u32::MAX);
    file.record(3, 0, 10, &write(100, 8));
    file.record(0, 0, 11, &discard(101));
    file.record(40, 1, u32::MAX, &indirect(102));
    let balances = vec![
        Balance {
            kind: LimitKind::Tokens,
            burst: false,
            level_nano: -1_500_000_000,
            capacity_nano: 1_000_000_000,
        },
        Balance {
            kind: LimitKind::BpsWrite,
            burst: true,
            level_nano: 1 << 70,
            capacity_nano: 1 << 71,
        },
    ];
    file.save_balances(&balances, 4_000_000_000);
    drop(file);

    let (_file, mut saved) = open(&path).unwrap();
    saved.requests.sort_by_key(|r| r.slot);
    assert_eq!(
        saved.rings,
        vec![
            RingState {
                req_cons: 12,
                rsp_prod_pvt: 10
            },
            RingState {
                req_cons: 0,
                rsp_prod_pvt: u32::MAX
            },
        ]
    );
    let got: Vec<(u32, usize, Request)> = (saved.requests.iter())
        .map(|r| (r.slot, r.queue, r.request))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, 0, discard(101)),
            (3, 0, write(100, 8)),
            (40, 1, indirect(102))
        ]
    );
    assert_eq!(saved.balances, Some((balances, 1_000_000_000)));
}

#[test]
fn answered_requests_are_not_redone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let mut file = StateFile::create(&path, SHAPE).unwrap();
    file.record(0, 0, 0, &write(1, 0));
    file.record(1, 0, 1, &write(2, 8));
    file.record(2, 0, 2, &write(3, 16));
    // 1: answered at response 0 and rsp_prod_pvt saved; killed before its entry was cleared.
    file.answering(1, 0);
    file.save_rsp_prod_pvt(0, 1);
    // 2: being answered at response 1; killed before rsp_prod_pvt was saved: redone.
    file.answering(2, 1);
    drop(file);
    let (_file, saved) = open(&path).unwrap();
    let mut ids: Vec<u64> = saved.requests.iter().map(|r| r.request.id()).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 3]);
    assert_eq!(
        saved.rings[0],
        RingState {
            req_cons: 3,
            rsp_prod_pvt: 1
        }
    );
    // The answered entry was cleared on load: a second load agrees.
    let (_file, again) = open(&path).unwrap();
    assert_eq!(again.requests.len(), 2);
}

#[test]
fn an_unanswered_request_behind_later_answers_keeps_req_cons() {
    // Answers go out of order: requests 0..4 taken, 1, 2 and 3 answered (responses 0..3),
    // request 0 still in flight, so its ring index lies behind rsp_prod_pvt.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let mut file = StateFile::create(&path, SHAPE).unwrap();
    for (slot, idx) in (0..4u32).zip(0..4u32) {
        file.record(slot, 0, idx, &write(u64::from(idx), u64::from(idx) * 8));
    }
    for (slot, rsp) in [(1u32, 0u32), (2, 1), (3, 2)] {
        file.answering(slot, rsp);
        file.save_rsp_prod_pvt(0, rsp + 1);
        file.clear(slot);
    }
    drop(file);
    let (_file, saved) = open(&path).unwrap();
    assert_eq!(
        saved.rings[0],
        RingState {
            req_cons: 4,
            rsp_prod_pvt: 3
        }
    );
    let ids: Vec<u64> = saved.requests.iter().map(|r| r.request.id()).collect();
    assert_eq!(ids, vec![0]);
}

#[test]
fn a_torn_entry_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let mut file = StateFile::create(&path, SHAPE).unwrap();
    file.record(5, 1, 0, &write(1, 0));
    drop(file);
    // One byte of the request's body changed after its checksum was taken.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    let at = (ENTRIES_AT + 5 * size_of::<Entry>() + 16 + 30) as u64;
    f.write_all_at(&[0xee], at).unwrap();
    let err = open(&path).err().expect("refused");
    assert!(
        matches!(&err, StateFileError::Corrupt(m) if m.contains("entry 5")),
        "{err}"
    );
}

#[test]
fn an_entry_without_its_valid_word_is_not_there() {
    // Killed after the body and before `valid`: the request is still on the ring, behind the
    // saved req_cons, and is taken again.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let mut file = StateFile::create(&path, SHAPE).unwrap();
    file.record(0, 0, 0, &write(1, 0));
    file.clear(0);
    file.save_req_cons(0, 0);
    drop(file);
    let (_file, saved) = open(&path).unwrap();
    assert!(saved.requests.is_empty());
    assert_eq!(
        saved.rings[0],
        RingState {
            req_cons: 0,
            rsp_prod_pvt: 0
        }
    );
}

#[test]
fn a_torn_levels_record_leaves_the_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let mut file = StateFile::create(&path, SHAPE).unwrap();
    let level = |n| {
        vec![Balance {
            kind: LimitKind::IopsRead,
            burst: false,
            level_nano: n,
            capacity_nano: 10,
        }]
    };
    file.save_balances(&level(1), 1_000);
    file.save_balances(&level(2), 2_000);
    drop(file);
    // The second record (seq 2) is torn.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0x55], (BALANCES_AT + 2 * 8 + 8 + 20) as u64)
        .unwrap();
    let (mut file, saved) = open(&path).unwrap();
    assert_eq!(saved.balances, Some((level(1), 5_000_000_000 - 1_000)));
    // Writing goes on from the intact one, into the torn record.
    file.save_balances(&level(3), 3_000);
    drop(file);
    let (_file, saved) = open(&path).unwrap();
    assert_eq!(saved.balances, Some((level(3), 5_000_000_000 - 3_000)));
}

#[test]
fn truncated_corrupt_and_reshaped_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    drop(StateFile::create(&path, SHAPE).unwrap());
    let other = Shape { queues: 1, ..SHAPE };
    let err = StateFile::open(&path, other, &limits(), 0).err().unwrap();
    assert!(matches!(err, StateFileError::ShapeChanged { .. }), "{err}");

    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(5000).unwrap();
    let err = open(&path).err().unwrap();
    assert!(matches!(err, StateFileError::Truncated { .. }), "{err}");
    f.set_len(100).unwrap();
    assert!(matches!(open(&path), Err(StateFileError::Truncated { .. })));

    drop(StateFile::create(&path, SHAPE).unwrap());
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[1], 13).unwrap();
    let err = open(&path).err().unwrap();
    assert!(
        matches!(&err, StateFileError::Corrupt(m) if m.contains("header")),
        "{err}"
    );

    std::fs::write(&path, vec![0u8; SHAPE.file_len()]).unwrap();
    let err = open(&path).err().unwrap();
    assert!(
        matches!(&err, StateFileError::Corrupt(m) if m.contains("not a tokenback")),
        "{err}"
    );
}

#[test]
fn a_count_that_disagrees_with_the_indices_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let mut file = StateFile::create(&path, SHAPE).unwrap();
    file.save_req_cons(1, 4);
    drop(file);
    let err = open(&path).err().unwrap();
    assert!(
        matches!(&err, StateFileError::Corrupt(m) if m.contains("queue 1")),
        "{err}"
    );
}

#[test]
fn checksum_skipping_zero_words_is_byte_wise_fnv_1a() {
    // Files written by earlier builds carry the byte-wise sum: the shortcut must agree.
    let byte_wise = |bytes: &[u8]| {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
        (hash ^ (hash >> 32)) as u32
    };
    let mut bytes = [0u8; 131];
    for (i, at) in [3usize, 17, 40, 64, 130].into_iter().enumerate() {
        bytes[at] = i as u8 + 1;
        for len in 0..bytes.len() {
            assert_eq!(checksum(&bytes[..len]), byte_wise(&bytes[..len]), "{len}");
        }
    }
}

#[test]
fn held_requests_come_back_in_the_order_they_were_taken_whatever_their_slots() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vbd-1-51712");
    let mut file = StateFile::create(&path, SHAPE).unwrap();
    // Queue 0 wraps its index; slots were reused out of order (the free list is a stack).
    let first = u32::MAX - 1;
    file.save_rsp_prod_pvt(0, first);
    let taken = [(7, 0), (2, 1), (9, 2), (0, 3)];
    for (slot, i) in taken {
        let idx = first.wrapping_add(i);
        file.record(slot, 0, idx, &write(200 + u64::from(i), 8));
        file.save_req_cons(0, idx.wrapping_add(1));
    }
    file.record(5, 1, 0, &discard(300));
    file.save_req_cons(1, 1);
    drop(file);

    let (_file, saved) = open(&path).unwrap();
    let got: Vec<(usize, u64)> = (saved.requests.iter())
        .map(|r| (r.queue, r.request.id()))
        .collect();
    assert_eq!(got, vec![(0, 200), (0, 201), (0, 202), (0, 203), (1, 300)]);
}
