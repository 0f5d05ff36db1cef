//! Counters and the control socket that tokentop reads (docs/qos.md, "Control socket").
//!
//! The workers own every VBD's figures: the control thread asks each worker with a command
//! ([`Command::Stats`](crate::vbd::Command), [`Command::Reset`](crate::vbd::Command)) that it
//! answers on its next loop turn, and waits a bounded time for the answers. Names and paths
//! the workers do not have come from the xenbus driver's [`Directory`]. Nothing here runs on
//! a worker or the xenbus thread beyond building an answer or updating an entry.

mod answer;
mod directory;
mod protocol;
mod report;
mod server;

pub use answer::Answerer;
pub use directory::{Directory, QosInForce, VbdInfo};
pub use protocol::{Filter, Request, RequestError, MAX_LINE, PROTOCOL};
pub use report::{GroupReport, ResetCount, StorageCounters, StorageStats, VbdReport, WorkerStats};
pub use server::{
    Control, ControlError, ControlSocket, MAX_CONNECTIONS, MAX_PENDING, PARTIAL_TIMEOUT,
};
