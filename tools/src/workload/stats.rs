//! Live counters of a running workload, its per-second rate samples and a latency
//! histogram: written by the workload's thread, read by anyone at any time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Sub-buckets per power of two: latencies are kept to within 25%.
const SUB_BITS: u32 = 2;
const BUCKETS: usize = 64 << SUB_BITS;

/// What a workload has done so far.
#[derive(Debug, Default)]
pub struct Stats {
    reads: AtomicU64,
    writes: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    verified: AtomicU64,
    latency: Latency,
    samples: Mutex<Vec<Sample>>,
}

/// The counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub reads: u64,
    pub writes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Reads whose data was checked against what was last written there.
    pub verified: u64,
}

impl Snapshot {
    /// Operations of both kinds.
    pub fn ops(&self) -> u64 {
        self.reads + self.writes
    }

    /// Bytes of both kinds.
    pub fn bytes(&self) -> u64 {
        self.bytes_read + self.bytes_written
    }
}

/// What one second of the run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The second, from 0.
    pub second: u32,
    pub ops: u64,
    pub bytes: u64,
}

impl Stats {
    /// A completed read of `bytes`, `verified` or not, that took `latency`.
    pub fn record_read(&self, bytes: u64, verified: bool, latency: Duration) {
        self.reads.fetch_add(1, Relaxed);
        self.bytes_read.fetch_add(bytes, Relaxed);
        if verified {
            self.verified.fetch_add(1, Relaxed);
        }
        self.latency.record(latency);
    }

    /// A completed write of `bytes` that took `latency`.
    pub fn record_write(&self, bytes: u64, latency: Duration) {
        self.writes.fetch_add(1, Relaxed);
        self.bytes_written.fetch_add(bytes, Relaxed);
        self.latency.record(latency);
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            reads: self.reads.load(Relaxed),
            writes: self.writes.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            verified: self.verified.load(Relaxed),
        }
    }

    /// Adds the sample of a second that ended.
    pub fn push_sample(&self, sample: Sample) {
        self.lock_samples().push(sample);
    }

    /// Every second's sample so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.lock_samples().clone()
    }

    /// The latency below which `percent` of the operations completed (a bucket's upper
    /// bound), or `None` before the first completion.
    pub fn latency_percentile(&self, percent: f64) -> Option<Duration> {
        self.latency.percentile(percent)
    }

    fn lock_samples(&self) -> std::sync::MutexGuard<'_, Vec<Sample>> {
        self.samples.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A log-linear histogram of latencies in microseconds.
#[derive(Debug)]
struct Latency {
    buckets: Vec<AtomicU64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Latency {
    fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket(us)].fetch_add(1, Relaxed);
    }

    fn percentile(&self, percent: f64) -> Option<Duration> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        // The rank of the operation at `percent`, from 1.
        let rank = ((percent / 100.0 * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        let index = counts.iter().position(|&c| {
            seen += c;
            seen >= rank
        })?;
        Some(Duration::from_micros(upper_bound(index)))
    }
}

/// The bucket of `us`: exact below 2^SUB_BITS, else 2^SUB_BITS buckets per power of two.
fn bucket(us: u64) -> usize {
    let msb = 63 - us.max(1).leading_zeros();
    if msb < SUB_BITS {
        return us as usize;
    }
    let sub = (us >> (msb - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    ((msb - SUB_BITS + 1) << SUB_BITS) as usize + sub as usize
}

/// The largest value in bucket `index`.
fn upper_bound(index: usize) -> u64 {
    let per = 1usize << SUB_BITS;
    if index < per {
        return index as u64;
    }
    let msb = (index / per) as u32 + SUB_BITS - 1;
    let sub = (index % per) as u64;
    let lower = ((1 << SUB_BITS) + sub) << (msb - SUB_BITS);
    lower + (1 << (msb - SUB_BITS)) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values() {
        for us in [0, 1, 3, 4, 5, 7, 8, 100, 1000, 123_456, u64::MAX / 2] {
            let b = bucket(us);
            assert!(upper_bound(b) >= us, "{us} in {b}");
            assert!(b == 0 || upper_bound(b - 1) < us.max(1), "{us} in {b}");
        }
    }
}
