//! Connected VBDs: their rings, the request pipeline from ring to limiter to storage and back,
//! and the workers that run them.

pub mod control;

pub use control::{Command, Connect, Dispatch, Report, ReportSink};
