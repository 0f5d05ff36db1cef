//! The io_uring engine: readv/writev/fsync(DATASYNC)/fallocate(PUNCH_HOLE) as SQEs, submitted in
//! chunks; completions signalled through an eventfd registered with the ring.
//!
//! A block device's discard has no io_uring opcode on the kernels we support: BLKDISCARD runs
//! on one helper thread (it can take seconds on a large range, which must not stall the worker)
//! that signals the same eventfd.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring};

use super::threads::{advance, ThreadEngine};
use super::{Completion, Engine, EngineKind, EventFd, Op, Rejected};
use crate::storage::{Backing, BackingKind, IoBuf, RequestError};

/// One operation in flight; `iov` points into `op`'s buffers and lives as long as they do.
struct Slot {
    tag: u64,
    op: Op,
    iov: Vec<libc::iovec>,
    first: usize,
    done: u64,
    total: u64,
}

// SAFETY: the iovecs only point into buffers owned by the same Slot.
unsafe impl Send for Slot {}

pub(super) struct UringEngine {
    ring: IoUring,
    backing: Arc<Backing>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    ready: Vec<Completion>,
    cqes: Vec<(usize, i32)>,
    queued: usize,
    chunk: usize,
    efd: Arc<EventFd>,
    /// BLKDISCARD off the worker; only for block devices that discard.
    discards: Option<ThreadEngine>,
}

impl UringEngine {
    pub(super) fn new(ring: IoUring, backing: Arc<Backing>, chunk: usize) -> io::Result<Self> {
        let efd = Arc::new(EventFd::new()?);
        ring.submitter().register_eventfd(efd.raw())?;
        let discards = if backing.kind() == BackingKind::Block && backing.discard() {
            Some(ThreadEngine::new(backing.clone(), 1, 1, efd.clone())?)
        } else {
            None
        };
        let depth = ring.params().sq_entries() as usize;
        Ok(UringEngine {
            ring,
            backing,
            slots: (0..depth).map(|_| None).collect(),
            free: (0..depth).rev().collect(),
            ready: Vec::new(),
            cqes: Vec::with_capacity(depth),
            queued: 0,
            chunk,
            efd,
            discards,
        })
    }

    /// Queue the SQE for slot `i` (its remaining bytes, for a resumed short transfer); a slot
    /// whose SQE cannot be queued completes with an error, so nothing is lost.
    fn push(&mut self, i: usize) {
        let fd = types::Fd(self.backing.fd());
        let slot = self.slots[i].as_ref().expect("pushed slot is live");
        let iov = &slot.iov[slot.first..];
        let sqe = match &slot.op {
            Op::Read { offset, .. } => opcode::Readv::new(fd, iov.as_ptr(), iov.len() as u32)
                .offset(offset + slot.done)
                .build(),
            Op::Write { offset, .. } => opcode::Writev::new(fd, iov.as_ptr(), iov.len() as u32)
                .offset(offset + slot.done)
                .build(),
            Op::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            Op::Discard { offset, len } => opcode::Fallocate::new(fd, *len)
                .offset(*offset)
                .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
        };
        let sqe: squeue::Entry = sqe.user_data(i as u64);
        // SAFETY: the iovecs and buffers the SQE names live in slot `i` until its CQE is reaped.
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            // Not expected: the SQ has as many entries as there are slots.
            let slot = self.slots[i].take().expect("pushed slot is live");
            self.free.push(i);
            let full = io::Error::other("submission queue full");
            self.complete_now(Completion::new(
                slot.tag,
                slot.op,
                Err(RequestError::Io(full)),
            ));
            return;
        }
        self.queued += 1;
        if self.queued >= self.chunk {
            // A failed submit leaves the SQEs queued: the caller's commit() retries and reports.
            let _ = self.commit();
        }
    }

    /// A completion that did not go through the ring; the eventfd tells the worker.
    fn complete_now(&mut self, c: Completion) {
        if self.ready.is_empty() {
            self.efd.signal();
        }
        self.ready.push(c);
    }

    fn finish(&mut self, i: usize, result: Result<u64, RequestError>) {
        let slot = self.slots[i].take().expect("completed slot is live");
        self.free.push(i);
        self.ready.push(Completion::new(slot.tag, slot.op, result));
    }
}

impl Engine for UringEngine {
    fn submit(&mut self, tag: u64, mut op: Op) -> Result<(), Rejected> {
        if let Err(error) = self.backing.validate(&op) {
            return Err(Rejected { error, op });
        }
        if let (Op::Discard { .. }, Some(pool)) = (&op, self.discards.as_mut()) {
            return pool.submit(tag, op);
        }
        let Some(i) = self.free.pop() else {
            return Err(Rejected {
                error: RequestError::QueueFull,
                op,
            });
        };
        let iov: Vec<libc::iovec> = match &mut op {
            Op::Read { bufs, .. } | Op::Write { bufs, .. } => {
                bufs.iter_mut().map(IoBuf::iovec).collect()
            }
            Op::Flush | Op::Discard { .. } => Vec::new(),
        };
        let total = iov.iter().map(|v| v.iov_len as u64).sum();
        self.slots[i] = Some(Slot {
            tag,
            op,
            iov,
            first: 0,
            done: 0,
            total,
        });
        self.push(i);
        Ok(())
    }

    fn commit(&mut self) -> io::Result<()> {
        if self.queued > 0 {
            self.ring.submit()?;
            self.queued = 0;
        }
        Ok(())
    }

    fn completion_fd(&self) -> RawFd {
        self.efd.raw()
    }

    fn complete(&mut self, out: &mut Vec<Completion>) -> io::Result<usize> {
        self.efd.clear();
        // A DEFER_TASKRUN ring posts its completions only when asked (the flag says some wait).
        if self.ring.submission().taskrun() {
            if let Err(e) = self.ring.submit() {
                // Cleared above: set again, so that the next wake-up retries.
                self.efd.signal();
                return Err(e);
            }
        }
        // Reaped first (the ring is borrowed while reaping), into a buffer kept across calls.
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data() as usize, c.result())),
        );
        for (i, res) in cqes.drain(..) {
            if res < 0 {
                self.finish(i, Err(RequestError::Io(io::Error::from_raw_os_error(-res))));
                continue;
            }
            let slot = self.slots[i].as_mut().expect("completed slot is live");
            slot.done += res as u64;
            if slot.done >= slot.total {
                let n = slot.total;
                self.finish(i, Ok(n));
            } else if res == 0 {
                // End of the backing before the validated range ended: it shrank under us.
                self.finish(
                    i,
                    Err(RequestError::Io(io::Error::from_raw_os_error(libc::EIO))),
                );
            } else {
                advance(&mut slot.iov, &mut slot.first, res as usize);
                self.push(i);
            }
        }
        self.cqes = cqes;
        if let Some(pool) = self.discards.as_mut() {
            pool.take_done(&mut self.ready);
        }
        // Resumed short transfers go with the caller's next commit() if this one fails, which
        // also reports the error; the completions in hand are returned regardless.
        let _ = self.commit();
        let n = self.ready.len();
        out.append(&mut self.ready);
        Ok(n)
    }

    fn in_flight(&self) -> usize {
        let discards = self.discards.as_ref().map_or(0, |p| p.in_flight());
        self.slots.len() - self.free.len() + self.ready.len() + discards
    }

    fn kind(&self) -> EngineKind {
        EngineKind::Uring
    }
}

impl Drop for UringEngine {
    /// Wait for the kernel to finish with every in-flight buffer before freeing them: closing
    /// the ring does not wait for its requests.
    fn drop(&mut self) {
        while self.slots.iter().any(Option::is_some) {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Nothing will complete any more; leak rather than free memory the kernel may use.
                Err(_) => return self.slots.drain(..).for_each(std::mem::forget),
            }
            for cqe in self.ring.completion() {
                self.slots[cqe.user_data() as usize] = None;
            }
        }
    }
}
