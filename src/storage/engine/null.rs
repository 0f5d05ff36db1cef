//! The null engine: every valid operation completes at once with its full length, storage
//! untouched, so benchmarks measure the rest of the data path.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use super::{Completion, Engine, EngineKind, EventFd, Op, Rejected};
use crate::storage::Backing;

pub(super) struct NullEngine {
    backing: Arc<Backing>,
    done: Vec<Completion>,
    efd: EventFd,
}

impl NullEngine {
    pub(super) fn new(backing: Arc<Backing>) -> io::Result<Self> {
        Ok(NullEngine {
            backing,
            done: Vec::new(),
            efd: EventFd::new()?,
        })
    }
}

impl Engine for NullEngine {
    fn submit(&mut self, tag: u64, op: Op) -> Result<(), Rejected> {
        if let Err(error) = self.backing.validate(&op) {
            return Err(Rejected { error, op });
        }
        let n = match &op {
            Op::Read { bufs, .. } | Op::Write { bufs, .. } => {
                bufs.iter().map(|b| b.len() as u64).sum()
            }
            Op::Flush | Op::Discard { .. } => 0,
        };
        if self.done.is_empty() {
            self.efd.signal();
        }
        self.done.push(Completion::new(tag, op, Ok(n)));
        Ok(())
    }

    fn commit(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn completion_fd(&self) -> RawFd {
        self.efd.raw()
    }

    fn complete(&mut self, out: &mut Vec<Completion>) -> io::Result<usize> {
        self.efd.clear();
        let n = self.done.len();
        out.append(&mut self.done);
        Ok(n)
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }

    fn kind(&self) -> EngineKind {
        EngineKind::Null
    }
}
