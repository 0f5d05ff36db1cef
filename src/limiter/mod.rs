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
//! Resolution: bucket levels are exact integers in 1e-9 of a unit (token, operation, byte; under
//! `iops-size`, 1e-9 of 1/iops-size operation) and time is in whole nanoseconds; the only
//! rounding is up to the next nanosecond when computing a deadline. Nothing drifts with uptime.

mod bucket;
mod config;
mod cost;
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
pub use vbd::{Admitted, Vbd, VbdStats};
