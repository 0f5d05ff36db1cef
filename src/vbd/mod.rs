//! Connected VBDs: their rings, the request pipeline from ring to limiter to storage and back,
//! and the workers that run them.
//!
//! The xenbus thread hands a VBD to a worker ([`Dispatch`], implemented by [`Workers`]); the
//! worker maps its rings, binds its channels and opens a storage engine ([`Command`]), serves
//! it, and reports back ([`Report`]).

pub mod control;
mod groups;
mod persistent;
mod plan;
mod pool;
mod queue;
mod served;
pub mod state_file;
pub mod timer;
mod worker;

pub use control::{Command, Connect, Dispatch, Report, ReportSink, StatePlan};
pub use persistent::MAX_PERSISTENT_GRANTS;
pub use pool::{StartError, WorkerLink, Workers};
