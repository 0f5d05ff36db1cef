//! Real backing stores for the storage tests: files on disk, loop devices, ext4 on a loop
//! device, RAM filesystems (a tiny tmpfs that fills up, a ramfs without O_DIRECT); and a mio
//! loop that drains an engine's completions through its fd.

#![allow(dead_code)] // each test binary uses its own subset

use std::fs::File;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use tokenback::storage::{Backing, Completion, Engine, EngineKind, IoBuf, Mode, Op};

/// A sparse file of `bytes` in `dir`.
pub fn sparse_file(dir: &Path, bytes: u64) -> PathBuf {
    let path = dir.join("disk.img");
    File::create(&path)
        .and_then(|f| f.set_len(bytes))
        .expect("create backing file");
    path
}

/// A loop device over a file, detached on drop. Missing losetup or loop devices fail the test.
pub struct LoopDev {
    pub path: PathBuf,
}

impl LoopDev {
    pub fn attach(file: &Path, sector_size: u32, read_only: bool) -> LoopDev {
        let mut cmd = Command::new("losetup");
        cmd.args([
            "--find",
            "--show",
            "--sector-size",
            &sector_size.to_string(),
        ]);
        if read_only {
            cmd.arg("--read-only");
        }
        let out = cmd.arg(file).output().expect("run losetup");
        assert!(
            out.status.success(),
            "losetup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim());
        LoopDev { path }
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup")
            .arg("--detach")
            .arg(&self.path)
            .status();
    }
}

/// An ext4 filesystem on a loop device with `sector`-byte logical sectors, mounted on a fresh
/// directory; unmounted (and the loop device detached) on drop.
pub struct Ext4OnLoop {
    pub mnt: tempfile::TempDir,
    _dev: LoopDev,
    _img: tempfile::TempDir,
}

impl Ext4OnLoop {
    pub fn mount(sector: u32) -> Ext4OnLoop {
        let img = tempfile::tempdir().expect("tempdir");
        let dev = LoopDev::attach(&sparse_file(img.path(), 64 << 20), sector, false);
        let st = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&dev.path)
            .status();
        assert!(st.expect("run mkfs.ext4").success(), "mkfs.ext4 failed");
        let mnt = tempfile::tempdir().expect("tempdir");
        let st = Command::new("mount")
            .arg(&dev.path)
            .arg(mnt.path())
            .status();
        assert!(st.expect("run mount").success(), "mounting ext4 failed");
        Ext4OnLoop {
            mnt,
            _dev: dev,
            _img: img,
        }
    }
}

impl Drop for Ext4OnLoop {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mnt.path()).status();
    }
}

/// A RAM filesystem mounted on a fresh directory, unmounted on drop.
pub struct RamMount {
    pub dir: tempfile::TempDir,
}

impl RamMount {
    /// A tmpfs of `bytes`, to fill up.
    pub fn tmpfs(bytes: u64) -> RamMount {
        Self::mount("tmpfs", &format!("size={bytes}"))
    }

    /// A ramfs, which refuses O_DIRECT on every kernel.
    pub fn ramfs() -> RamMount {
        Self::mount("ramfs", "mode=0700")
    }

    fn mount(fstype: &str, options: &str) -> RamMount {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = Command::new("mount")
            .args(["-t", fstype, "-o", options, fstype])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(st.success(), "mounting a {fstype} failed");
        RamMount { dir }
    }
}

impl Drop for RamMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

pub fn open(path: &Path, mode: Mode) -> Arc<Backing> {
    Arc::new(Backing::open(path, mode).expect("open backing"))
}

pub fn engine(kind: EngineKind, backing: &Arc<Backing>) -> Box<dyn Engine + Send> {
    let e = tokenback::storage::open_engine(kind, backing.clone()).expect("open engine");
    assert_eq!(e.kind(), kind, "no fallback expected on this machine");
    e
}

/// Buffers covering `data` in windows of at most `seg` bytes (one page each).
pub fn bufs_from(data: &[u8], seg: usize) -> Vec<IoBuf> {
    data.chunks(seg)
        .map(|c| {
            let mut b = IoBuf::new();
            b.set_window(0, c.len());
            b.as_mut_slice().copy_from_slice(c);
            b
        })
        .collect()
}

pub fn empty_bufs(len: usize, seg: usize) -> Vec<IoBuf> {
    bufs_from(&vec![0u8; len], seg)
}

pub fn concat(bufs: &[IoBuf]) -> Vec<u8> {
    bufs.iter()
        .flat_map(|b| b.as_slice().iter().copied())
        .collect()
}

/// A deterministic pattern that differs per `seed` and per byte.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Wait in a mio loop on the engine's completion fd until `n` completions came back.
pub fn drain(engine: &mut dyn Engine, n: usize) -> Vec<Completion> {
    let mut poll = Poll::new().expect("poll");
    let fd: RawFd = engine.completion_fd();
    poll.registry()
        .register(&mut SourceFd(&fd), Token(0), Interest::READABLE)
        .expect("register");
    let mut events = Events::with_capacity(8);
    let mut out = Vec::new();
    engine.commit().expect("commit");
    let mut idle_wakeups = 0;
    while out.len() < n {
        // Generous: a wake-up that never comes fails the test instead of hanging it.
        // io_uring task work can interrupt epoll_wait; a worker's loop retries, so does this.
        match poll.poll(&mut events, Some(Duration::from_secs(30))) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.expect("poll"),
        }
        assert!(
            !events.is_empty(),
            "no completion within 30 s ({} of {n})",
            out.len()
        );
        if engine.complete(&mut out).expect("complete") == 0 {
            idle_wakeups += 1;
            assert!(
                idle_wakeups < 1000,
                "woken repeatedly with nothing to complete"
            );
        }
    }
    poll.registry()
        .deregister(&mut SourceFd(&fd))
        .expect("deregister");
    out
}

/// Submit one op and wait for its completion.
pub fn run(engine: &mut dyn Engine, op: Op) -> Completion {
    engine.submit(7, op).expect("submit");
    let mut c = drain(engine, 1);
    assert_eq!(c.len(), 1);
    let c = c.pop().expect("one completion");
    assert_eq!(c.tag, 7);
    c
}
