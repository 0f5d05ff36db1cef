//! tokenback-tools: the simulated Xen host's guest side, tokentop and tokenback-sim.

pub mod blkfront;
pub mod sim;
pub mod toolstack;
pub mod top;
pub mod workload;
