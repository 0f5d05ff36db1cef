//! What Xen keeps private about a domain's grants (its active entries), shared by the
//! accessors of the domain: per entry the pin counts, the frame and grantee recorded by the
//! first pin, and the lock that stands in for Xen's per-entry active lock.
//!
//! `grant-active` is a 64-byte header (the dying flag at 0), then 16 bytes per grant entry:
//! the lock word @0 (u64: pin counts in the low half, the pid of the process holding the lock
//! in the high half, 0 when free), the recorded frame @8 and the recorded grantee @12.
//!
//! The lock is held for a few atomic operations, never across a system call; its holder's
//! pid makes it recoverable: a process that finds it held by a dead process takes it over,
//! and must then rebuild the entry's pin counts (the dead holder may have stopped half-way).

use super::shm::SharedFile;
use super::SimError;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const HEADER: usize = 64;
const ENTRY: usize = 16;

/// Pins of any kind; the low 16 bits of the pin counts.
pub(crate) const PIN_TOTAL: u32 = 0xFFFF;
pub(crate) const PIN_WRITER_SHIFT: u32 = 16;
/// Writable pins; bits 16..31 of the pin counts.
pub(crate) const PIN_WRITERS: u32 = 0x7FFF << PIN_WRITER_SHIFT;

/// How long a pin lock held by a live process is waited for before the access fails. Its
/// holder keeps it for a few atomic operations, so only a guest that writes the lock word
/// itself holds it longer; it must not stall the back end for more than this per access.
const PATIENCE: Duration = Duration::from_millis(50);

/// A domain's active entries, mapped.
#[derive(Debug)]
pub(crate) struct ActiveTable {
    file: SharedFile,
}

/// One active entry.
pub(crate) struct ActiveEntry<'a> {
    lock: &'a AtomicU64,
    /// The frame recorded by the first pin; later pins use it, as Xen's `act->frame`.
    pub(crate) frame: &'a AtomicU32,
    /// The grantee recorded by the first pin; later pins are checked against it, as Xen's
    /// `act->domid`.
    pub(crate) grantee: &'a AtomicU32,
}

impl ActiveTable {
    /// Creates the active table for `entries` grant entries: nothing pinned.
    pub(crate) fn create(path: &Path, entries: usize) -> Result<Self, SimError> {
        Ok(ActiveTable {
            file: SharedFile::create(path, HEADER + entries * ENTRY)?,
        })
    }

    /// Opens the active table of a grant table of `entries` entries.
    pub(crate) fn open(path: &Path, entries: usize) -> Result<Self, SimError> {
        let file = SharedFile::open(path)?;
        if file.len() < HEADER + entries * ENTRY {
            return Err(SimError::Corrupt {
                path: path.to_path_buf(),
                what: "smaller than its grant table",
            });
        }
        Ok(ActiveTable { file })
    }

    /// Set by the toolstack when the domain is destroyed; accessors then forget it.
    pub(crate) fn is_dying(&self) -> bool {
        self.file
            .u32_at(0)
            .map_or(true, |w| w.load(Ordering::Acquire) != 0)
    }

    /// Marks the domain destroyed for every accessor.
    pub(crate) fn set_dying(&self) {
        if let Some(word) = self.file.u32_at(0) {
            word.store(1, Ordering::Release);
        }
    }

    /// The active entry of grant `gref`, if the table has one.
    pub(crate) fn entry(&self, gref: u32) -> Option<ActiveEntry<'_>> {
        let base = usize::try_from(gref)
            .ok()?
            .checked_mul(ENTRY)?
            .checked_add(HEADER)?;
        Some(ActiveEntry {
            lock: self.file.u64_at(base)?,
            frame: self.file.u32_at(base + 8)?,
            grantee: self.file.u32_at(base + 12)?,
        })
    }
}

#[cfg(test)]
impl<'a> ActiveEntry<'a> {
    /// The lock word, for tests that play a process dying with it or a guest writing it.
    pub(crate) fn lock_word(&self) -> &'a AtomicU64 {
        self.lock
    }
}

/// The lock of an active entry stayed held by a live process for longer than [`PATIENCE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LockStuck;

/// A held pin lock. Its pin counts are published when it drops.
pub(crate) struct PinLock<'a> {
    word: &'a AtomicU64,
    /// The pin counts to publish on release.
    pub(crate) pins: u32,
    /// The lock was taken over from a dead holder: the pin counts may not match the
    /// entry's records and must be rebuilt before use.
    pub(crate) recovered: bool,
}

impl<'a> PinLock<'a> {
    /// Takes the lock of `entry`, taking it over from a dead holder.
    pub(crate) fn acquire(entry: &ActiveEntry<'a>) -> Result<Self, LockStuck> {
        let word = entry.lock;
        let take = |current: u64| {
            let me = u64::from(own_pid()) << 32;
            let pins = current as u32;
            word.compare_exchange_weak(
                current,
                me | u64::from(pins),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()
            .map(|_| PinLock {
                word,
                pins,
                recovered: current >> 32 != 0,
            })
        };
        let mut deadline = None;
        let mut spins = 0u32;
        loop {
            let current = word.load(Ordering::Relaxed);
            let holder = (current >> 32) as u32;
            if holder == 0 {
                if let Some(lock) = take(current) {
                    return Ok(lock);
                }
                continue;
            }
            spins += 1;
            if spins % 64 != 0 {
                std::hint::spin_loop();
                continue;
            }
            if !process_alive(holder) {
                if let Some(lock) = take(current) {
                    return Ok(lock);
                }
                continue;
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + PATIENCE);
            if Instant::now() > deadline {
                return Err(LockStuck);
            }
            std::thread::yield_now(); // the holder may be a descheduled process
        }
    }
}

impl Drop for PinLock<'_> {
    fn drop(&mut self) {
        self.word.store(u64::from(self.pins), Ordering::Release);
    }
}

/// This process's pid, asked of the kernel once: `getpid` is a system call, and the lock is
/// taken twice per copy segment. (Like everything of the sim, handles are not meant to be used
/// across a `fork`.)
fn own_pid() -> u32 {
    static PID: OnceLock<u32> = OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Whether process `pid` exists. A pid reused by a new process after its holder died reads
/// as alive: the lock then fails its accesses after [`PATIENCE`] instead of being taken over.
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 sends nothing; kill only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}
