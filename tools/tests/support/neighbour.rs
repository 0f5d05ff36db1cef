//! A well-behaved guest beside a hostile one: it writes patterns, reads them back and
//! compares, in a thread, until told to stop, counting the round trips that verified.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use tokenback_tools::blkfront::Blkfront;

use super::pattern;

/// Transfers a neighbour cycles through: (bytes, first sector's offset in its page).
const TRANSFERS: [(usize, u64); 4] = [(4096, 0), (512, 5), (3 * 512, 2), (11 * 4096, 0)];

pub struct Neighbour {
    verified: Arc<AtomicU64>,
    thread: JoinHandle<Result<u64, String>>,
}

impl Neighbour {
    /// Starts doing verified I/O through `front`, whose disk has `sectors` sectors (at least
    /// 128); `index` tells neighbours' patterns and messages apart.
    pub fn start(mut front: Blkfront, index: usize, sectors: u64, stop: Arc<AtomicBool>) -> Self {
        let verified = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&verified);
        let thread = thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (len, offset) = TRANSFERS[i as usize % TRANSFERS.len()];
                // Whole pages apart, inside the disk.
                let sector = (i * 97 % (sectors / 8 - 12)) * 8 + offset;
                let data = pattern(len, (i as u8) ^ (index as u8).wrapping_mul(17));
                let what = format!("neighbour {index}: {len} bytes at sector {sector}");
                front
                    .write(sector, &data)
                    .map_err(|e| format!("{what}: write: {e}"))?;
                let mut back = vec![0; len];
                front
                    .read(sector, &mut back)
                    .map_err(|e| format!("{what}: read: {e}"))?;
                if back != data {
                    return Err(format!("{what}: read back other data"));
                }
                i += 1;
                count.store(i, Ordering::Relaxed);
            }
            Ok(i)
        });
        Neighbour { verified, thread }
    }

    /// Round trips verified so far.
    pub fn verified(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }

    /// The thread ended: it was stopped or found an error.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the stopped thread: the round trips it verified, or what went wrong.
    pub fn join(self) -> Result<u64, String> {
        self.thread.join().expect("the neighbour's thread")
    }
}
