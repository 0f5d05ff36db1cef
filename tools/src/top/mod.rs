//! tokentop: tokenbackd's VBDs and throttle groups from its control socket, on a screen,
//! in batch rows or JSON for scripts, and as Prometheus metrics over HTTP.

pub mod batch;
pub mod format;
pub mod http;
pub mod metrics;
pub mod model;
pub mod rates;
pub mod socket;
pub mod table;
pub mod tui;
