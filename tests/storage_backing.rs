//! Opening real backing stores (files, loop devices with 512- and 4096-byte sectors, a
//! read-only loop device, things that are neither) and checking requests against them.

#![cfg(test)]

mod storage_common;

use std::path::Path;

use storage_common::*;
use tokenback::storage::{Backing, BackingKind, IoBuf, Mode, Op, OpenError, RequestError};

const MIB: u64 = 1 << 20;

fn read(offset: u64, windows: &[(usize, usize)]) -> Op {
    let bufs = windows
        .iter()
        .map(|&(start, len)| {
            let mut b = IoBuf::new();
            b.set_window(start, len);
            b
        })
        .collect();
    Op::Read { offset, bufs }
}

fn write(offset: u64, len: usize) -> Op {
    Op::Write {
        offset,
        bufs: empty_bufs(len, 4096),
    }
}

#[test]
fn file_reports_kind_size_sectors_and_direct() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 3 MiB + 700 bytes: the partial sector at the end is not part of the disk.
    let b = Backing::open(&sparse_file(dir.path(), 3 * MIB + 700), Mode::ReadWrite).expect("open");
    assert_eq!(b.kind(), BackingKind::File);
    assert_eq!(b.size_bytes(), 3 * MIB + 700);
    assert_eq!(b.sectors(), 3 * MIB / 512 + 1);
    assert_eq!(b.logical_block_size(), 512);
    assert!([512, 1024, 2048, 4096].contains(&b.physical_block_size()));
    assert!(!b.read_only());
    assert!(b.direct(), "the machine's disk takes O_DIRECT");
    assert!(b.discard());
}

#[test]
fn file_refusing_o_direct_is_opened_buffered() {
    let fs = RamMount::ramfs();
    let b = Backing::open(&sparse_file(fs.dir.path(), MIB), Mode::ReadWrite).expect("open");
    assert!(!b.direct(), "ramfs refuses O_DIRECT");
    assert!(!b.read_only());
    assert_eq!(b.logical_block_size(), 512);
}

#[test]
fn file_on_a_4096_byte_sector_disk_takes_its_direct_io_alignment() {
    // ext4 on a 4096-byte-sector loop device: O_DIRECT needs 4096-aligned offsets there.
    let fs = Ext4OnLoop::mount(4096);
    let b = Backing::open(&sparse_file(fs.mnt.path(), MIB), Mode::ReadWrite).expect("open");
    assert!(b.direct());
    assert_eq!(b.logical_block_size(), 4096);
    assert!(matches!(
        b.validate(&read(512, &[(0, 4096)])),
        Err(RequestError::Misaligned { block: 4096, .. })
    ));
}

#[test]
fn loop_devices_report_their_sector_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = sparse_file(dir.path(), 8 * MIB);
    for sector in [512, 4096] {
        let dev = LoopDev::attach(&file, sector, false);
        let b = Backing::open(&dev.path, Mode::ReadWrite).expect("open loop device");
        assert_eq!(b.kind(), BackingKind::Block);
        assert_eq!(b.sectors(), 8 * MIB / 512);
        assert_eq!(b.logical_block_size(), sector);
        assert!(b.physical_block_size() >= sector);
        assert!(!b.read_only());
        assert!(
            b.discard(),
            "loop devices discard by punching holes in their file"
        );
    }
}

#[test]
fn read_only_loop_device_and_mode_r_are_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = sparse_file(dir.path(), MIB);
    let dev = LoopDev::attach(&file, 512, true);
    assert!(
        Backing::open(&dev.path, Mode::ReadWrite)
            .expect("open")
            .read_only(),
        "BLKROGET set"
    );
    assert!(
        Backing::open(&file, Mode::ReadOnly)
            .expect("open")
            .read_only(),
        "mode=r"
    );
}

#[test]
fn neither_block_device_nor_file_is_refused() {
    // A character device and a directory.
    for p in ["/dev/null", "/"] {
        let e = Backing::open(Path::new(p), Mode::ReadWrite).unwrap_err();
        assert!(matches!(e, OpenError::NotBlockOrFile { .. }), "{p}: {e}");
    }
    let e = Backing::open(Path::new("/nonexistent/disk.img"), Mode::ReadWrite).unwrap_err();
    assert!(
        matches!(e, OpenError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    );
}

#[test]
fn requests_are_checked_against_the_backing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = sparse_file(dir.path(), MIB);
    let dev = LoopDev::attach(&file, 4096, false);
    let b = Backing::open(&dev.path, Mode::ReadWrite).expect("open");
    // Fine: the last block, and a whole page.
    b.validate(&read(MIB - 4096, &[(0, 4096)]))
        .expect("last block");
    // Past the end by one block, and an offset that overflows u64.
    assert!(matches!(
        b.validate(&read(MIB, &[(0, 4096)])),
        Err(RequestError::PastEnd { .. })
    ));
    assert!(matches!(
        b.validate(&read(u64::MAX - 4095, &[(0, 4096)])),
        Err(RequestError::PastEnd { .. })
    ));
    // 512-byte aligned is misaligned on a 4096-byte device: offset, length, window start.
    let mis = |op| {
        matches!(
            b.validate(&op),
            Err(RequestError::Misaligned { block: 4096, .. })
        )
    };
    assert!(mis(read(512, &[(0, 4096)])));
    assert!(mis(read(0, &[(0, 512)])));
    assert!(mis(read(0, &[(512, 3584)])));
    assert!(mis(Op::Discard {
        offset: 0,
        len: 512
    }));
    assert!(matches!(
        b.validate(&read(0, &[(0, 0)])),
        Err(RequestError::Empty)
    ));
    assert!(matches!(
        b.validate(&Op::Discard { offset: 0, len: 0 }),
        Err(RequestError::Empty)
    ));
    b.validate(&Op::Discard {
        offset: 4096,
        len: 8192,
    })
    .expect("aligned discard");

    // mode=r: every write-class op is refused, reads are not.
    let ro = Backing::open(&file, Mode::ReadOnly).expect("open");
    assert!(matches!(
        ro.validate(&write(0, 4096)),
        Err(RequestError::ReadOnly)
    ));
    assert!(matches!(
        ro.validate(&Op::Flush),
        Err(RequestError::ReadOnly)
    ));
    assert!(matches!(
        ro.validate(&Op::Discard {
            offset: 0,
            len: 4096
        }),
        Err(RequestError::ReadOnly)
    ));
    ro.validate(&read(0, &[(0, 4096)]))
        .expect("read on read-only");
}

#[test]
fn resized_loop_device_and_file_report_the_new_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = sparse_file(dir.path(), MIB);
    let dev = LoopDev::attach(&file, 512, false);
    let on_dev = Backing::open(&dev.path, Mode::ReadWrite).expect("open device");
    let on_file = Backing::open(&file, Mode::ReadWrite).expect("open file");
    // Grow the file, and tell the loop driver (as lvextend would change an LV).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_len(2 * MIB))
        .expect("grow");
    let st = std::process::Command::new("losetup")
        .arg("--set-capacity")
        .arg(&dev.path)
        .status();
    assert!(st.expect("run losetup").success());
    for b in [&on_dev, &on_file] {
        // Before the refresh, the new space is past the end; after it, not.
        assert!(matches!(
            b.validate(&read(MIB, &[(0, 4096)])),
            Err(RequestError::PastEnd { .. })
        ));
        assert_eq!(b.refresh_size().expect("refresh"), 2 * MIB);
        assert_eq!(b.sectors(), 2 * MIB / 512);
        b.validate(&read(MIB, &[(0, 4096)]))
            .expect("inside the grown store");
    }
}
