//! Discovery and handshake of VBDs (reference xenbus-vbd.md): where VBDs live in xenstore, the
//! toolstack's keys, the front end's keys, the keys we write in each phase, and each VBD's
//! handshake as a pure state machine. Nothing here does I/O except the kernel blkback check:
//! a driver feeds each `Handshake` the events it reads from xenstore and from the workers, and
//! carries out the `Action`s it returns.

pub mod backing;
pub mod device;
pub mod driver;
pub mod frontend;
pub mod handshake;
pub mod kernel_blkback;
pub mod key_cache;
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
pub use key_cache::{KeyCache, Lookup};
pub use paths::{error_value, BackendTree, BackendType, DeviceId};
pub use state::XenbusState;
