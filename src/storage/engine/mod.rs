//! The engines: io_uring, a thread pool when io_uring is unavailable, and null for benchmarks.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use super::backing::Backing;
use super::buf::IoBuf;
use super::error::RequestError;

mod null;
mod threads;
mod uring;

/// One storage operation. Buffers are owned by the operation while it is in flight and handed
/// back in its [`Completion`].
pub enum Op {
    /// Read at a byte offset into the buffers' windows, in order.
    Read {
        /// Byte offset in the backing.
        offset: u64,
        /// Destination windows.
        bufs: Vec<IoBuf>,
    },
    /// Write the buffers' windows, in order, at a byte offset.
    Write {
        /// Byte offset in the backing.
        offset: u64,
        /// Source windows.
        bufs: Vec<IoBuf>,
    },
    /// fdatasync: covers the writes that completed before it was submitted.
    Flush,
    /// Discard a byte range (BLKDISCARD or a punched hole).
    Discard {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
}

impl Op {
    fn into_bufs(self) -> Vec<IoBuf> {
        match self {
            Op::Read { bufs, .. } | Op::Write { bufs, .. } => bufs,
            Op::Flush | Op::Discard { .. } => Vec::new(),
        }
    }
}

/// The outcome of one operation.
pub struct Completion {
    /// The tag given at submission.
    pub tag: u64,
    /// Bytes transferred (0 for flush and discard) or why it failed.
    pub result: Result<u64, RequestError>,
    /// The operation's buffers, back to the caller (reads: filled).
    pub bufs: Vec<IoBuf>,
}

impl Completion {
    fn new(tag: u64, op: Op, result: Result<u64, RequestError>) -> Self {
        Completion {
            tag,
            result,
            bufs: op.into_bufs(),
        }
    }
}

/// A submission refused before it reached storage; the operation (and its buffers) come back.
pub struct Rejected {
    /// Why.
    pub error: RequestError,
    /// The operation, untouched.
    pub op: Op,
}

impl std::fmt::Debug for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rejected({:?})", self.error)
    }
}

/// An I/O engine owned by one worker, used on the thread that opened it (an io_uring engine
/// may be a single-issuer ring).
pub trait Engine {
    /// Validate `op` against the backing and queue it; queued operations go to the kernel every
    /// `chunk` submissions and at [`Engine::commit`].
    fn submit(&mut self, tag: u64, op: Op) -> Result<(), Rejected>;
    /// Hand every queued operation to the kernel (or the pool) now.
    fn commit(&mut self) -> io::Result<()>;
    /// The fd that becomes readable when completions are ready (register it with mio, edge or
    /// level: [`Engine::complete`] empties it).
    fn completion_fd(&self) -> RawFd;
    /// Move every ready completion into `out`; returns how many.
    fn complete(&mut self, out: &mut Vec<Completion>) -> io::Result<usize>;
    /// Operations submitted and not yet returned by `complete`.
    fn in_flight(&self) -> usize;
    /// Which engine this is.
    fn kind(&self) -> EngineKind;
}

/// The choice of `--io-engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// io_uring, falling back to threads when the kernel refuses it.
    Uring,
    /// A thread pool doing blocking preadv/pwritev.
    Threads,
    /// Completes everything at once without touching storage (benchmarks only).
    Null,
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(s, false)
    }
}

/// Submissions per kernel call when the caller does not commit sooner (DESIGN "Figures on 2
/// cores": chunks of about 4 kept the device busy).
pub const DEFAULT_CHUNK: usize = 4;
/// Operations one engine holds in flight.
pub const DEFAULT_DEPTH: u32 = 256;
const POOL_THREADS: usize = 4;

/// Open an engine of `kind` on `backing`; `uring` falls back to `threads` when io_uring setup
/// fails (old kernel, `kernel.io_uring_disabled`), and the returned engine's `kind()` says so.
pub fn open_engine(kind: EngineKind, backing: Arc<Backing>) -> io::Result<Box<dyn Engine + Send>> {
    open_engine_with(kind, backing, new_ring)
}

/// A ring whose completions wait for the worker to ask for them where the kernel allows it:
/// DEFER_TASKRUN (Linux 6.1) runs their task work only in the worker's own `io_uring_enter`
/// (signalling the eventfd meanwhile), so no completion interrupts its epoll_wait or its
/// copying; it needs SINGLE_ISSUER: the engine is used on the thread that opened it, as a
/// worker opens its VBDs' engines. Else COOP_TASKRUN (5.19), else a plain ring.
fn new_ring(depth: u32) -> io::Result<io_uring::IoUring> {
    io_uring::IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .build(depth)
        .or_else(|_| {
            io_uring::IoUring::builder()
                .setup_coop_taskrun()
                .build(depth)
        })
        .or_else(|_| io_uring::IoUring::new(depth))
}

/// [`open_engine`] with the io_uring constructor given, so the fallback can be tested.
pub fn open_engine_with(
    kind: EngineKind,
    backing: Arc<Backing>,
    new_ring: impl FnOnce(u32) -> io::Result<io_uring::IoUring>,
) -> io::Result<Box<dyn Engine + Send>> {
    let pool = |backing| {
        let efd = Arc::new(EventFd::new()?);
        threads::ThreadEngine::new(backing, POOL_THREADS, DEFAULT_CHUNK, efd)
    };
    Ok(match kind {
        EngineKind::Null => Box::new(null::NullEngine::new(backing)?),
        EngineKind::Threads => Box::new(pool(backing)?),
        EngineKind::Uring => match new_ring(DEFAULT_DEPTH) {
            Ok(ring) => Box::new(uring::UringEngine::new(ring, backing, DEFAULT_CHUNK)?),
            Err(_) => Box::new(pool(backing)?),
        },
    })
}

/// A non-blocking eventfd: the completion fd of the pool and null engines, io_uring's
/// registered eventfd (shared with its discard thread).
pub(crate) struct EventFd(std::os::fd::OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(EventFd(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
    }

    pub(crate) fn raw(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }

    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64. A full counter (EAGAIN) already means readable.
        unsafe { libc::write(self.raw(), (&one as *const u64).cast(), 8) };
    }

    /// Reset the counter; nothing to read (EAGAIN) is fine.
    pub(crate) fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64.
        unsafe { libc::read(self.raw(), (&mut v as *mut u64).cast(), 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::EngineKind;

    #[test]
    fn io_engine_names_parse_and_others_are_refused() {
        assert_eq!("uring".parse(), Ok(EngineKind::Uring));
        assert_eq!("threads".parse(), Ok(EngineKind::Threads));
        assert_eq!("null".parse(), Ok(EngineKind::Null));
        assert!("aio".parse::<EngineKind>().is_err());
    }
}
