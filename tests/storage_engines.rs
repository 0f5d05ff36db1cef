//! Both I/O engines against real backing stores: files on disk, tmpfs, ramfs (buffered) and ext4
//! over a 4096-byte-sector disk, loop devices with 512- and 4096-byte sectors, a read-only loop
//! device, a full filesystem. Each test body is generic over the engine and instantiated for
//! `uring` and `threads`.

#![cfg(test)]

mod storage_common;

use std::io;

use storage_common::*;
use tokenback::storage::{open_engine_with, Engine, EngineKind, Mode, Op, RequestError};

const MIB: u64 = 1 << 20;

/// Writes of assorted sizes (one block to 11 pages, partial last pages) at assorted aligned
/// offsets, a flush, then reads back: every byte must match.
fn roundtrip(kind: EngineKind, path: &std::path::Path) {
    let b = open(path, Mode::ReadWrite);
    let mut e = engine(kind, &b);
    let blk = b.logical_block_size() as usize;
    let cases: Vec<(u64, usize, usize)> = vec![
        (0, blk, 4096),
        (blk as u64 * 3, 4096, 4096),
        (64 * 1024, 11 * 4096, 4096),
        (b.size_bytes() - 2 * 4096, 2 * 4096, 4096),
        // Segments smaller than a page, as blkif segments with first_sect..last_sect.
        (200 * 1024, 6 * blk, blk),
    ];
    for (i, (off, len, seg)) in cases.iter().enumerate() {
        let data = pattern(i as u64 + 1, *len);
        let c = run(
            &mut *e,
            Op::Write {
                offset: *off,
                bufs: bufs_from(&data, *seg),
            },
        );
        assert_eq!(c.result.expect("write"), *len as u64, "write {i} at {off}");
    }
    assert_eq!(run(&mut *e, Op::Flush).result.expect("flush"), 0);
    for (i, (off, len, seg)) in cases.iter().enumerate() {
        let c = run(
            &mut *e,
            Op::Read {
                offset: *off,
                bufs: empty_bufs(*len, *seg),
            },
        );
        assert_eq!(c.result.expect("read"), *len as u64);
        assert!(
            concat(&c.bufs) == pattern(i as u64 + 1, *len),
            "read {i} at {off} differs"
        );
    }
}

/// Discard of a written range reads back zeros (punched hole on files, BLKDISCARD on loop),
/// and the bytes next to it are untouched.
fn discard_zeroes(kind: EngineKind, path: &std::path::Path) {
    let b = open(path, Mode::ReadWrite);
    assert!(b.discard(), "discard expected on {}", path.display());
    let mut e = engine(kind, &b);
    let data = pattern(9, 64 * 1024);
    run(
        &mut *e,
        Op::Write {
            offset: MIB,
            bufs: bufs_from(&data, 4096),
        },
    )
    .result
    .expect("write");
    let c = run(
        &mut *e,
        Op::Discard {
            offset: MIB + 16 * 1024,
            len: 32 * 1024,
        },
    );
    c.result.expect("discard");
    let c = run(
        &mut *e,
        Op::Read {
            offset: MIB,
            bufs: empty_bufs(64 * 1024, 4096),
        },
    );
    let got = concat(&c.bufs);
    assert_eq!(got[..16 * 1024], data[..16 * 1024], "before the hole");
    assert!(
        got[16 * 1024..48 * 1024].iter().all(|&x| x == 0),
        "hole not zero"
    );
    assert_eq!(got[48 * 1024..], data[48 * 1024..], "after the hole");
}

/// 128 writes in flight at once at scattered offsets, completions drained through the fd in a
/// mio loop in whatever order they come; then 128 reads in flight verify every one.
fn many_in_flight(kind: EngineKind, path: &std::path::Path) {
    let b = open(path, Mode::ReadWrite);
    many_in_flight_on(&mut *engine(kind, &b));
}

fn many_in_flight_on(e: &mut dyn Engine) {
    let n = 128u64;
    let off = |i: u64| (i * 37 % n) * 8192;
    for i in 0..n {
        e.submit(
            i,
            Op::Write {
                offset: off(i),
                bufs: bufs_from(&pattern(100 + i, 4096), 4096),
            },
        )
        .expect("submit write");
    }
    let done = drain(e, n as usize);
    let mut tags: Vec<u64> = done.iter().map(|c| c.tag).collect();
    tags.sort_unstable();
    assert_eq!(tags, (0..n).collect::<Vec<_>>(), "each tag completes once");
    assert!(done.iter().all(|c| matches!(c.result, Ok(4096))));
    assert_eq!(e.in_flight(), 0);
    for i in 0..n {
        e.submit(
            i,
            Op::Read {
                offset: off(i),
                bufs: empty_bufs(4096, 4096),
            },
        )
        .expect("submit read");
    }
    for c in drain(e, n as usize) {
        assert!(
            concat(&c.bufs) == pattern(100 + c.tag, 4096),
            "request {} differs",
            c.tag
        );
    }
}

/// A read-only loop device: every write-class request is refused before storage, with the
/// operation and its buffers handed back; reads work.
fn read_only_refuses(kind: EngineKind, path: &std::path::Path) {
    let b = open(path, Mode::ReadWrite);
    assert!(b.read_only(), "losetup -r must make the backing read-only");
    let mut e = engine(kind, &b);
    let r = e
        .submit(
            1,
            Op::Write {
                offset: 0,
                bufs: bufs_from(&[1; 4096], 4096),
            },
        )
        .unwrap_err();
    assert!(matches!(r.error, RequestError::ReadOnly));
    assert!(
        matches!(r.op, Op::Write { ref bufs, .. } if bufs.len() == 1 && bufs[0].as_slice()[0] == 1)
    );
    assert!(matches!(
        e.submit(2, Op::Flush).unwrap_err().error,
        RequestError::ReadOnly
    ));
    let d = e
        .submit(
            3,
            Op::Discard {
                offset: 0,
                len: 4096,
            },
        )
        .unwrap_err();
    assert!(matches!(d.error, RequestError::ReadOnly));
    run(
        &mut *e,
        Op::Read {
            offset: 0,
            bufs: empty_bufs(4096, 4096),
        },
    )
    .result
    .expect("read");
}

/// A sparse 1 MiB file on a 64 KiB tmpfs: a write into a hole beyond the space fails with
/// ENOSPC for that request only; a read and a write into space already held still work.
fn full_disk(kind: EngineKind) {
    let fs = RamMount::tmpfs(64 * 1024);
    let path = sparse_file(fs.dir.path(), MIB);
    let b = open(&path, Mode::ReadWrite);
    let mut e = engine(kind, &b);
    let c = run(
        &mut *e,
        Op::Write {
            offset: 0,
            bufs: bufs_from(&pattern(1, 16 * 1024), 4096),
        },
    );
    c.result.expect("first write fits");
    let c = run(
        &mut *e,
        Op::Write {
            offset: 512 * 1024,
            bufs: bufs_from(&pattern(2, 128 * 1024), 4096),
        },
    );
    assert_eq!(
        c.result.expect_err("no space left").errno(),
        Some(libc::ENOSPC)
    );
    let c = run(
        &mut *e,
        Op::Write {
            offset: 4096,
            bufs: bufs_from(&pattern(3, 4096), 4096),
        },
    );
    c.result.expect("rewrite of held space");
    let c = run(
        &mut *e,
        Op::Read {
            offset: 0,
            bufs: empty_bufs(4096, 4096),
        },
    );
    assert!(
        concat(&c.bufs) == pattern(1, 16 * 1024)[..4096],
        "earlier data intact"
    );
}

fn on_disk_file(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    roundtrip(kind, &sparse_file(dir.path(), 4 * MIB));
}

fn on_tmpfs_file(kind: EngineKind) {
    let dir = tempfile::tempdir_in("/dev/shm").expect("tempdir on tmpfs");
    // tmpfs takes O_DIRECT since Linux 6.6 and refused it before; either way the data must hold.
    roundtrip(kind, &sparse_file(dir.path(), 4 * MIB));
}

/// A file on ramfs, which refuses O_DIRECT: buffered I/O.
fn buffered_file(kind: EngineKind) {
    let fs = RamMount::ramfs();
    roundtrip(kind, &sparse_file(fs.dir.path(), 4 * MIB));
}

/// A file whose filesystem needs 4096-byte O_DIRECT offsets (ext4 on a 4096-byte-sector disk).
fn file_on_4096_disk(kind: EngineKind) {
    let fs = Ext4OnLoop::mount(4096);
    roundtrip(kind, &sparse_file(fs.mnt.path(), 4 * MIB));
}

fn on_loop(kind: EngineKind, sector: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = LoopDev::attach(&sparse_file(dir.path(), 4 * MIB), sector, false);
    assert_eq!(
        open(&dev.path, Mode::ReadWrite).logical_block_size(),
        sector
    );
    roundtrip(kind, &dev.path);
}

fn discard_file(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    discard_zeroes(kind, &sparse_file(dir.path(), 4 * MIB));
}

fn discard_loop(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = LoopDev::attach(&sparse_file(dir.path(), 4 * MIB), 512, false);
    discard_zeroes(kind, &dev.path);
}

fn in_flight_file(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    many_in_flight(kind, &sparse_file(dir.path(), 4 * MIB));
}

fn in_flight_loop(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = LoopDev::attach(&sparse_file(dir.path(), 4 * MIB), 4096, false);
    many_in_flight(kind, &dev.path);
}

fn read_only_loop(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = LoopDev::attach(&sparse_file(dir.path(), 4 * MIB), 512, true);
    read_only_refuses(kind, &dev.path);
}

macro_rules! for_each_engine {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $( #[test] fn $name() { super::$name(tokenback::storage::EngineKind::Uring) } )*
        }
        mod threads {
            $( #[test] fn $name() { super::$name(tokenback::storage::EngineKind::Threads) } )*
        }
    };
}

fn loop_512(kind: EngineKind) {
    on_loop(kind, 512)
}

fn loop_4096(kind: EngineKind) {
    on_loop(kind, 4096)
}

for_each_engine!(
    on_disk_file,
    on_tmpfs_file,
    buffered_file,
    file_on_4096_disk,
    loop_512,
    loop_4096,
    discard_file,
    discard_loop,
    in_flight_file,
    in_flight_loop,
    read_only_loop,
    full_disk,
    drop_in_flight,
);

/// io_uring setup failing (as with kernel.io_uring_disabled=2 or an old kernel) gives the
/// thread pool, which serves requests.
#[test]
fn uring_setup_failure_falls_back_to_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = open(&sparse_file(dir.path(), MIB), Mode::ReadWrite);
    let mut e = open_engine_with(EngineKind::Uring, b, |_| {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    })
    .expect("fallback engine");
    assert_eq!(e.kind(), EngineKind::Threads);
    let data = pattern(5, 8192);
    run(
        &mut *e,
        Op::Write {
            offset: 4096,
            bufs: bufs_from(&data, 4096),
        },
    )
    .result
    .expect("write");
    let c = run(
        &mut *e,
        Op::Read {
            offset: 4096,
            bufs: empty_bufs(8192, 4096),
        },
    );
    assert!(concat(&c.bufs) == data);
}

/// Rings of kernels without DEFER_TASKRUN (COOP_TASKRUN, or neither) serve as the default
/// one does: their completions come without being asked for.
#[test]
fn uring_engine_serves_on_rings_of_older_kernels() {
    type Builder = fn(u32) -> io::Result<io_uring::IoUring>;
    let older: [(&str, Builder); 2] = [
        ("coop", |depth| {
            io_uring::IoUring::builder()
                .setup_coop_taskrun()
                .build(depth)
        }),
        ("plain", io_uring::IoUring::new),
    ];
    for (name, new_ring) in older {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = open(&sparse_file(dir.path(), 2 * MIB), Mode::ReadWrite);
        let mut e = open_engine_with(EngineKind::Uring, b, new_ring).expect(name);
        assert_eq!(e.kind(), EngineKind::Uring, "{name}");
        many_in_flight_on(&mut *e);
    }
}

/// The null engine completes valid requests at once with their length and still refuses what
/// the backing refuses (here: past the end).
#[test]
fn null_engine_completes_without_storage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = open(&sparse_file(dir.path(), MIB), Mode::ReadWrite);
    let mut e = engine(EngineKind::Null, &b);
    for i in 0..10 {
        e.submit(
            i,
            Op::Read {
                offset: i * 4096,
                bufs: empty_bufs(4096, 4096),
            },
        )
        .expect("submit");
    }
    let done = drain(&mut *e, 10);
    assert!(done.iter().all(|c| matches!(c.result, Ok(4096))));
    let r = e
        .submit(
            99,
            Op::Read {
                offset: MIB,
                bufs: empty_bufs(512, 512),
            },
        )
        .unwrap_err();
    assert!(matches!(r.error, RequestError::PastEnd { .. }));
}

/// Dropping an engine with 64 reads in flight waits for them (no crash, no use after free
/// under the kernel's writes), and the store is usable by a new engine afterwards.
fn drop_in_flight(kind: EngineKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = sparse_file(dir.path(), 4 * MIB);
    let b = open(&path, Mode::ReadWrite);
    let mut e = engine(kind, &b);
    for i in 0..64 {
        e.submit(
            i,
            Op::Read {
                offset: i * 4096,
                bufs: empty_bufs(4096, 4096),
            },
        )
        .expect("submit");
    }
    e.commit().expect("commit");
    drop(e);
    let mut e = engine(kind, &b);
    run(
        &mut *e,
        Op::Read {
            offset: 0,
            bufs: empty_bufs(4096, 4096),
        },
    )
    .result
    .expect("read after");
}

/// io_uring holds at most its depth in flight: one more is refused as QueueFull with its
/// buffers handed back, and is accepted again once completions were drained.
#[test]
fn uring_full_queue_hands_the_op_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = open(&sparse_file(dir.path(), 4 * MIB), Mode::ReadWrite);
    let mut e = engine(EngineKind::Uring, &b);
    let depth = tokenback::storage::DEFAULT_DEPTH as u64;
    for i in 0..depth {
        e.submit(
            i,
            Op::Read {
                offset: i * 4096 % (4 * MIB),
                bufs: empty_bufs(4096, 4096),
            },
        )
        .expect("within depth");
    }
    let r = e
        .submit(
            depth,
            Op::Read {
                offset: 0,
                bufs: bufs_from(&[5; 4096], 4096),
            },
        )
        .unwrap_err();
    assert!(matches!(r.error, RequestError::QueueFull));
    let Op::Read { bufs, .. } = r.op else {
        panic!("not the read given")
    };
    assert_eq!(concat(&bufs), vec![5; 4096], "buffers come back untouched");
    assert_eq!(drain(&mut *e, depth as usize).len(), depth as usize);
    run(&mut *e, Op::Read { offset: 0, bufs })
        .result
        .expect("accepted after draining");
}
