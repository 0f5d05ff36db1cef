//! Token-bucket QoS: pure arithmetic over an injected clock.
//!
//! The limiter answers two questions for the worker that owns a VBD: "which requests may go to
//! storage now?" and "when should I ask again?". [`Vbd::poll_admit_due`] and
//! [`Group::poll_admit_due`] answer both in one call per wake-up. Time is a `u64` of nanoseconds
//! from any monotonic clock, passed in by the caller; nothing here reads a clock, sleeps or
//! allocates per request (queues reuse their storage).
//!
//! Behaviour (DESIGN.md, "QoS semantics", and docs/qos.md for operators):
//! - buckets refill lazily, `min(capacity, level + rate x elapsed)`, and start full;
//! - a request is admitted when every bucket it touches holds its cost, or is full when the cost
//!   exceeds the capacity (the bucket then goes into debt, so no limit stalls a VBD);
//! - requests of one VBD leave in FIFO order;
//! - throttle groups share buckets among members by weighted deficit round robin;
//! - a worker that wakes late has its decisions taken at the instants they were due, up to
//!   [`MAKE_UP_NS`] (1 ms) back, so timer lateness costs no throughput (DESIGN, "Late timers").
//!
//! A worker drives a VBD like this (time in nanoseconds of a monotonic clock):
//!
//! ```
//! use tokenback::limiter::{Op, Request, Vbd, VbdConfig};
//!
//! let config = VbdConfig::parse([("tokens-refill", "500"), ("tokens-max", "0")])?;
//! let mut vbd = Vbd::new(&config, 0);
//! for id in 0..3 {
//!     vbd.enqueue(Request { id, op: Op::Read, bytes: 4096 }, 0);
//! }
//! let mut admitted = Vec::new(); // dispatch these to storage
//! let mut now = 0;
//! // One call per wake-up; arm the timer at the instant it returns. Here the timer fires
//! // 300 us late each time, and the requests still go at the instants they were due.
//! while let Some(wake) = vbd.poll_admit_due(now, &mut admitted) {
//!     now = wake + 300_000;
//! }
//! let at: Vec<(u64, u64)> = admitted.iter().map(|a| (a.request.id, a.at)).collect();
//! assert_eq!(at, [(0, 0), (1, 2_000_000), (2, 4_000_000)]);
//! # Ok::<(), tokenback::limiter::ConfigError>(())
//! ```
//!
//! [`Vbd::poll_admit`] decides on one request at `now` itself, for callers that are never late
//! (tests that jump to each deadline).
//!
//! Resolution: bucket levels are exact integers in 1e-9 of a unit (token, operation, byte; under
//! `iops-size`, 1e-9 of 1/iops-size operation) and time is in whole nanoseconds. A decision is
//! reported at the whole nanosecond at or after its exact instant, and the buckets are charged
//! as of the exact instant, so a bucket that waited to be full keeps the refill of the fraction
//! and nothing drifts with uptime. What remains rounded, always down and by less than one
//! nanosecond's refill: the share of the fraction of a bucket other than the one that set the
//! instant, when it was full within that fraction (to a whole nano-unit), and refill within the
//! fraction for a bucket that several decisions in the same nanosecond fill again.

mod bucket;
mod config;
mod cost;
mod exact;
mod group;
mod limits;
mod stats;
mod vbd;

#[cfg(test)]
mod tests;

pub use config::{
    parse_group, ConfigError, LimitConfig, LimitKind, RateLimit, Shape, VbdConfig,
    MAX_BURST_LENGTH, MAX_GROUP_NAME, MAX_INFLIGHT, MAX_IOPS_SIZE, MAX_RATE, MAX_WEIGHT,
};
pub use cost::{Direction, Op, Request};
pub use group::{Group, GroupStats, MemberId};
pub use limits::Balance;
pub use stats::{CounterSnapshot, DelayHistogram, PerDirection, Recent, RATE_WINDOW_NS};
pub use vbd::{Admitted, Vbd, VbdStats, MAKE_UP_NS};
