//! Discovery and handshake of VBDs (reference xenbus-vbd.md): the toolstack's keys, the front
//! end's keys, the keys we write in each phase, and each VBD's handshake as a pure state
//! machine. The xenstore driver that carries its actions out comes next.

pub mod backing;
pub mod device;
pub mod frontend;
pub mod handshake;
pub mod kernel_blkback;
pub mod keys;
pub mod paths;
pub mod state;

#[cfg(test)]
mod tests;

pub use backing::{Backing, Discard, OpenStorage};
pub use device::{is_online, read_device, DeviceConfig, DeviceError};
pub use frontend::{read_frontend_rings, FrontendError, FrontendRings, Limits, QueueRing};
pub use handshake::{Action, Event, Handshake};
pub use kernel_blkback::{check_kernel_blkback, KernelBlkbackLoaded};
pub use paths::{error_value, BackendTree, BackendType, DeviceId};
pub use state::XenbusState;
