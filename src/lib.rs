//! tokenback: a userspace Xen block backend that gates every ring request through
//! token-bucket QoS configured per virtual disk in xenstore.
//!
//! The crate holds the daemon's parts; docs/design.md in the repository is the map.

pub mod instance_lock;
pub mod limiter;
pub mod logging;
pub mod platform;
pub mod stats;
pub mod stop_signals;
pub mod storage;
pub mod vbd;
pub mod xenbus;
