//! Token-bucket QoS: pure arithmetic over an injected clock.
//!
//! The limiter answers two questions for the worker that owns a VBD: "may this request go to
//! storage now?" ([`Vbd::poll_admit`], [`Group::poll_admit`]) and "when should I ask again?"
//! ([`Vbd::next_admit_at`], [`Group::next_admit_at`]). Time is a `u64` of nanoseconds from any
//! monotonic clock, passed in by the caller; nothing here reads a clock, sleeps or allocates per
//! request (queues reuse their storage).
//!
//! Behaviour (DESIGN.md, "QoS semantics", and docs/qos.md for operators):
//! - buckets refill lazily, `min(capacity, level + rate x elapsed)`, and start full;
//! - a request is admitted when every bucket it touches holds its cost, or is full when the cost
//!   exceeds the capacity (the bucket then goes into debt, so no limit stalls a VBD);
//! - requests of one VBD leave in FIFO order;
//! - throttle groups share buckets among members by weighted deficit round robin.
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
//! let mut now = 0;
//! let mut admitted_at = Vec::new();
//! while vbd.queued() > 0 {
//!     while let Some(admitted) = vbd.poll_admit(now) {
//!         admitted_at.push((admitted.request.id, now)); // dispatch to storage here
//!     }
//!     // Arm the worker's timer; here, jump to it.
//!     if let Some(at) = vbd.next_admit_at(now) {
//!         now = at;
//!     }
//! }
//! assert_eq!(admitted_at, [(0, 0), (1, 2_000_000), (2, 4_000_000)]);
//! # Ok::<(), tokenback::limiter::ConfigError>(())
//! ```
//!
//! Resolution: bucket levels are exact integers in 1e-9 of a unit (token, operation, byte; under
//! `iops-size`, 1e-9 of 1/iops-size operation) and time is in whole nanoseconds; the only
//! rounding is up to the next nanosecond when computing a deadline. Nothing drifts with uptime.

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
    ConfigError, LimitConfig, LimitKind, RateLimit, Shape, VbdConfig, MAX_BURST_LENGTH,
    MAX_GROUP_NAME, MAX_INFLIGHT, MAX_IOPS_SIZE, MAX_RATE, MAX_WEIGHT,
};
pub use cost::{Direction, Op, Request};
pub use group::{Group, GroupStats, MemberId};
pub use limits::Balance;
pub use stats::{CounterSnapshot, PerDirection};
pub use vbd::{Admitted, Vbd, VbdStats, MAKE_UP_NS};
