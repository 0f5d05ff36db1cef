//! Workloads for a connected [`Blkfront`]: sequential or random reads, writes or both, of
//! one block size at a queue depth, for a duration, with data verification and live
//! statistics ([`Stats`]).
//!
//! Verification: every block written carries the pattern of its byte offset and a
//! generation ([`pattern`]); every read checks the block against its last completed write,
//! and a block never written must read as zeros (the disk starts zeroed, e.g. a fresh
//! sparse file). Operations on one block never overlap. Verify only when the back end
//! stores data: a null storage engine returns zeros whatever was written.

pub mod blocks;
pub mod pattern;
pub mod stats;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use blkif::abi::{BLKIF_OP_WRITE, BLKIF_RSP_OKAY, SECTOR_SIZE};
use thiserror::Error;

use crate::blkfront::{self, Blkfront, Op, Tag};
use blocks::Blocks;
pub use stats::{Sample, Snapshot, Stats};

/// What a workload does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Read,
    Write,
    RandRead,
    RandWrite,
    /// Random, reads and writes half and half.
    RandRw,
}

impl Mode {
    /// The fio name (`rw=`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Read => "read",
            Mode::Write => "write",
            Mode::RandRead => "randread",
            Mode::RandWrite => "randwrite",
            Mode::RandRw => "randrw",
        }
    }

    /// The mode of fio name `name`.
    pub fn from_name(name: &str) -> Option<Mode> {
        [
            Mode::Read,
            Mode::Write,
            Mode::RandRead,
            Mode::RandWrite,
            Mode::RandRw,
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }

    fn random(self) -> bool {
        matches!(self, Mode::RandRead | Mode::RandWrite | Mode::RandRw)
    }
}

/// A workload's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub mode: Mode,
    /// Bytes per operation: a multiple of 512.
    pub block_size: usize,
    /// Operations kept in flight.
    pub queue_depth: usize,
    pub duration: Duration,
    /// Check every read against the last write (see the module docs).
    pub verify: bool,
    /// Seeds the random offsets.
    pub seed: u64,
}

/// Why a workload stopped early.
#[derive(Debug, Error)]
pub enum WorkloadError {
    /// The block size is no multiple of 512, or the disk holds no block of it.
    #[error(
        "block size {block_size} does not fit the disk of {disk_bytes} bytes in 512-byte sectors"
    )]
    BlockSize { block_size: usize, disk_bytes: u64 },
    /// The front end failed.
    #[error("front end: {0}")]
    Blkfront(#[from] blkfront::Error),
    /// The back end answered an operation with an error.
    #[error("{op} of {len} bytes at byte {offset} failed with status {status}")]
    Io {
        op: &'static str,
        offset: u64,
        len: usize,
        status: i16,
    },
    /// A read did not return what was last written there.
    #[error("verification failed: byte {byte} of the block at byte {offset} differs from write generation {generation}")]
    Verify {
        offset: u64,
        byte: usize,
        generation: u32,
    },
}

/// Operations refilled while a batch of completions is handled go out this many at a time.
const PUBLISH_EVERY: usize = 8;

/// An operation in flight.
struct InFlight {
    block: usize,
    /// The generation written, for a write.
    writes: Option<u32>,
    started: Instant,
}

/// Runs `workload` on `front` until its duration has passed or `stop` is set, recording
/// into `stats` (a sample per second); returns after every operation has completed.
pub fn run(
    front: &mut Blkfront,
    workload: &Workload,
    stats: &Stats,
    stop: &AtomicBool,
) -> Result<(), WorkloadError> {
    let disk_bytes = front.disk().sectors * SECTOR_SIZE;
    let mut runner = Runner::new(workload.clone(), disk_bytes, stats)?;
    runner.run_for(front, workload.duration, stats, stop)
}

/// A workload run in parts, e.g. across a reconnect of its disk: what each block holds and
/// the samples carry over from part to part.
pub struct Runner {
    workload: Workload,
    blocks: Blocks,
    next_generation: u32,
    sampler: Sampler,
}

impl Runner {
    /// A run of `workload` on a disk of `disk_bytes` (zeroed), its clock started now.
    pub fn new(workload: Workload, disk_bytes: u64, stats: &Stats) -> Result<Self, WorkloadError> {
        let bs = workload.block_size;
        let count = disk_bytes / bs.max(1) as u64;
        if bs == 0 || bs as u64 % SECTOR_SIZE != 0 || count == 0 {
            return Err(WorkloadError::BlockSize {
                block_size: bs,
                disk_bytes,
            });
        }
        Ok(Runner {
            blocks: Blocks::new(usize::try_from(count).unwrap_or(usize::MAX), workload.seed),
            workload,
            next_generation: 1,
            sampler: Sampler::new(Instant::now(), stats),
        })
    }

    /// Runs on `front` for `duration` or until `stop` is set; returns once every operation
    /// has completed.
    pub fn run_for(
        &mut self,
        front: &mut Blkfront,
        duration: Duration,
        stats: &Stats,
        stop: &AtomicBool,
    ) -> Result<(), WorkloadError> {
        let mut in_flight: HashMap<Tag, InFlight> = HashMap::new();
        let deadline = Instant::now() + duration;
        loop {
            let running = Instant::now() < deadline && !stop.load(Ordering::Relaxed);
            while running && in_flight.len() < self.workload.queue_depth.max(1) {
                let Some((tag, op)) = self.submit(front)? else {
                    break;
                };
                in_flight.insert(tag, op);
            }
            if in_flight.is_empty() {
                self.sampler.tick(Instant::now(), stats);
                return Ok(());
            }
            let mut staged = 0;
            for done in front.complete()? {
                let Some(op) = in_flight.remove(&done.tag) else {
                    continue;
                };
                self.completed(done, op, stats)?;
                // Refill as completions arrive, published a few at a time: the back end
                // starts on them while the rest of this batch is handled.
                if running && in_flight.len() < self.workload.queue_depth.max(1) {
                    if let Some((tag, op)) = self.submit(front)? {
                        in_flight.insert(tag, op);
                        staged += 1;
                        if staged % PUBLISH_EVERY == 0 {
                            front.publish()?;
                        }
                    }
                }
            }
            self.sampler.tick(Instant::now(), stats);
        }
    }

    /// Checks a completed operation and records it.
    fn completed(
        &mut self,
        done: blkfront::Completion,
        op: InFlight,
        stats: &Stats,
    ) -> Result<(), WorkloadError> {
        let bs = self.workload.block_size;
        let offset = op.block as u64 * bs as u64;
        let latency = op.started.elapsed();
        self.blocks.release(op.block);
        if done.status != BLKIF_RSP_OKAY {
            return Err(WorkloadError::Io {
                op: if done.operation == BLKIF_OP_WRITE {
                    "write"
                } else {
                    "read"
                },
                offset,
                len: bs,
                status: done.status,
            });
        }
        match op.writes {
            Some(generation) => {
                self.blocks.set_generation(op.block, generation);
                stats.record_write(bs as u64, latency);
            }
            None => {
                if self.workload.verify {
                    let generation = self.blocks.generation(op.block);
                    let data = done.data.unwrap_or_default();
                    if let Some(byte) = pattern::mismatch(&data, offset, generation) {
                        return Err(WorkloadError::Verify {
                            offset,
                            byte,
                            generation,
                        });
                    }
                }
                stats.record_read(bs as u64, self.workload.verify, latency);
            }
        }
        Ok(())
    }

    /// Stages the next operation on an idle block, if there is one.
    fn submit(&mut self, front: &mut Blkfront) -> Result<Option<(Tag, InFlight)>, WorkloadError> {
        let bs = self.workload.block_size;
        let Some(block) = self.blocks.take(self.workload.mode.random()) else {
            return Ok(None);
        };
        let write = match self.workload.mode {
            Mode::Read | Mode::RandRead => false,
            Mode::Write | Mode::RandWrite => true,
            Mode::RandRw => self.blocks.coin(),
        };
        let offset = block as u64 * bs as u64;
        let sector = offset / SECTOR_SIZE;
        let (op, writes) = if write {
            let generation = self.next_generation;
            self.next_generation = self.next_generation.wrapping_add(1).max(1);
            let mut data = vec![0; bs];
            pattern::fill(&mut data, offset, generation);
            (Op::Write { sector, data }, Some(generation))
        } else if self.workload.verify {
            (Op::Read { sector, len: bs }, None)
        } else {
            (Op::ReadDropped { sector, len: bs }, None)
        };
        let tag = front
            .stage(op)
            .inspect_err(|_| self.blocks.release(block))?;
        let started = Instant::now();
        Ok(Some((
            tag,
            InFlight {
                block,
                writes,
                started,
            },
        )))
    }
}

/// Pushes one sample per whole second of the run.
struct Sampler {
    start: Instant,
    second: u32,
    last: Snapshot,
}

impl Sampler {
    fn new(start: Instant, stats: &Stats) -> Self {
        Sampler {
            start,
            second: 0,
            last: stats.snapshot(),
        }
    }

    fn tick(&mut self, now: Instant, stats: &Stats) {
        let elapsed = now.duration_since(self.start);
        if elapsed < Duration::from_secs(u64::from(self.second) + 1) {
            return;
        }
        let now = stats.snapshot();
        stats.push_sample(Sample {
            second: self.second,
            ops: now.ops() - self.last.ops(),
            bytes: now.bytes() - self.last.bytes(),
        });
        self.last = now;
        self.second = u32::try_from(elapsed.as_secs()).unwrap_or(u32::MAX);
    }
}
