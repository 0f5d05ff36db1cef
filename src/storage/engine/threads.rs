//! The thread-pool engine: blocking preadv/pwritev/fdatasync/discard on a few threads, for
//! kernels without io_uring. Completions come back through a shared list and an eventfd.

use std::io;
use std::os::fd::RawFd;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{Completion, Engine, EngineKind, EventFd, Op, Rejected};
use crate::storage::backing::to_off;
use crate::storage::{Backing, IoBuf, RequestError};

struct Shared {
    done: Mutex<Vec<Completion>>,
    efd: Arc<EventFd>,
}

pub(super) struct ThreadEngine {
    backing: Arc<Backing>,
    queued: Vec<(u64, Op)>,
    chunk: usize,
    tx: Option<Sender<Vec<(u64, Op)>>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    in_flight: usize,
}

impl ThreadEngine {
    /// A pool of `threads` signalling `efd` (its own, or the io_uring engine's for discards).
    pub(super) fn new(
        backing: Arc<Backing>,
        threads: usize,
        chunk: usize,
        efd: Arc<EventFd>,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            done: Mutex::new(Vec::new()),
            efd,
        });
        let (tx, rx) = channel::<Vec<(u64, Op)>>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..threads)
            .map(|i| {
                let (rx, shared, backing) = (rx.clone(), shared.clone(), backing.clone());
                std::thread::Builder::new()
                    .name(format!("storage-io-{i}"))
                    .spawn(move || worker(&rx, &shared, &backing))
            })
            .collect::<io::Result<_>>()?;
        Ok(ThreadEngine {
            backing,
            queued: Vec::new(),
            chunk,
            tx: Some(tx),
            shared,
            threads,
            in_flight: 0,
        })
    }
}

fn worker(rx: &Mutex<Receiver<Vec<(u64, Op)>>>, shared: &Shared, backing: &Backing) {
    loop {
        // The lock is held only while waiting for the next batch.
        let batch = match rx.lock().map(|r| r.recv()) {
            Ok(Ok(batch)) => batch,
            _ => return,
        };
        for (tag, mut op) in batch {
            let result = run(backing, &mut op);
            let mut done = shared.done.lock().unwrap_or_else(|p| p.into_inner());
            if done.is_empty() {
                shared.efd.signal();
            }
            done.push(Completion::new(tag, op, result));
        }
    }
}

/// Do one operation with blocking calls; a short transfer is retried from where it stopped.
fn run(backing: &Backing, op: &mut Op) -> Result<u64, RequestError> {
    let fd = backing.fd();
    match op {
        Op::Read { offset, bufs } => transfer(fd, false, *offset, bufs),
        Op::Write { offset, bufs } => transfer(fd, true, *offset, bufs),
        Op::Flush => {
            // SAFETY: fdatasync on our own fd.
            crate::storage::backing::check(unsafe { libc::fdatasync(fd) })
                .map_err(RequestError::Io)?;
            Ok(0)
        }
        Op::Discard { offset, len } => {
            backing
                .discard_sync(*offset, *len)
                .map_err(RequestError::Io)?;
            Ok(0)
        }
    }
}

fn transfer(fd: RawFd, write: bool, offset: u64, bufs: &mut [IoBuf]) -> Result<u64, RequestError> {
    let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
    let mut iov: Vec<libc::iovec> = bufs.iter_mut().map(IoBuf::iovec).collect();
    let mut done = 0u64;
    let mut first = 0;
    while done < total {
        let off = to_off(offset + done).map_err(RequestError::Io)?;
        let cnt = (iov.len() - first) as libc::c_int;
        let ptr = iov[first..].as_ptr();
        // SAFETY: the iovecs point into buffers we own exclusively for the call's duration.
        let n = unsafe {
            if write {
                libc::pwritev(fd, ptr, cnt, off)
            } else {
                libc::preadv(fd, ptr, cnt, off)
            }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(RequestError::Io(e));
        }
        if n == 0 {
            // The backing shrank under us: the range was validated against the size at open.
            return Err(RequestError::Io(io::Error::from_raw_os_error(libc::EIO)));
        }
        done += n as u64;
        advance(&mut iov, &mut first, n as usize);
    }
    Ok(total)
}

/// Skip `n` transferred bytes in the iovec list.
pub(super) fn advance(iov: &mut [libc::iovec], first: &mut usize, mut n: usize) {
    while n > 0 && *first < iov.len() {
        let v = &mut iov[*first];
        let k = n.min(v.iov_len);
        // SAFETY: k <= iov_len, so the new base stays inside the same buffer.
        v.iov_base = unsafe { v.iov_base.cast::<u8>().add(k) }.cast();
        v.iov_len -= k;
        n -= k;
        if v.iov_len == 0 {
            *first += 1;
        }
    }
}

impl ThreadEngine {
    /// Move the finished operations into `out` without touching the eventfd (whose owner
    /// cleared it before reaping).
    pub(super) fn take_done(&mut self, out: &mut Vec<Completion>) -> usize {
        let mut done = self.shared.done.lock().unwrap_or_else(|p| p.into_inner());
        let n = done.len();
        out.append(&mut done);
        self.in_flight -= n;
        n
    }
}

impl Engine for ThreadEngine {
    fn submit(&mut self, tag: u64, op: Op) -> Result<(), Rejected> {
        if let Err(error) = self.backing.validate(&op) {
            return Err(Rejected { error, op });
        }
        self.queued.push((tag, op));
        self.in_flight += 1;
        if self.queued.len() >= self.chunk {
            // A failed commit already turned the batch into error completions.
            let _ = self.commit();
        }
        Ok(())
    }

    fn commit(&mut self) -> io::Result<()> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.queued);
        let Some(Err(lost)) = self.tx.as_ref().map(|tx| tx.send(batch)) else {
            return Ok(());
        };
        // Every pool thread died (a panic): fail the batch rather than lose its buffers.
        let mut done = self.shared.done.lock().unwrap_or_else(|p| p.into_inner());
        if done.is_empty() {
            self.shared.efd.signal();
        }
        for (tag, op) in lost.0 {
            let err = io::Error::other("storage pool threads exited");
            done.push(Completion::new(tag, op, Err(RequestError::Io(err))));
        }
        Err(io::Error::other("storage pool threads exited"))
    }

    fn completion_fd(&self) -> RawFd {
        self.shared.efd.raw()
    }

    fn complete(&mut self, out: &mut Vec<Completion>) -> io::Result<usize> {
        self.shared.efd.clear();
        Ok(self.take_done(out))
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn kind(&self) -> EngineKind {
        EngineKind::Threads
    }
}

impl Drop for ThreadEngine {
    fn drop(&mut self) {
        // Closing the channel ends the threads once the work already sent is done.
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
