//! tokenback: a userspace Xen block backend that gates every ring request through
//! token-bucket QoS configured per virtual disk in xenstore.
//!
//! The crate holds the daemon's parts; see DESIGN.md in the repository for the map.

pub mod limiter;
pub mod logging;
pub mod platform;
