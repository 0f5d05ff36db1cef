//! What the hypervisor provides to a back end: grant access and event channels.
//!
//! The daemon is written against the traits here, never against an implementation:
//! [`linux`] drives `/dev/xen/gntdev` and `/dev/xen/evtchn` on a real dom0, [`sim`] is the
//! simulated host of docs/sim-host.md. Both check guest input the same way (a bad grant ref fails
//! the one access that named it), so code above this module cannot tell them apart.

mod evtchn;
mod grant;
pub mod linux;
pub(crate) mod shared_mem;
pub mod sim;

pub use evtchn::{wait_readable, EventChannel, EvtchnError};
pub use grant::{
    CopyOp, GrantAccess, GrantError, GrantMapping, GuestRange, LocalBuf, MappedRangeError,
};

use std::fmt;

/// A host as a worker sees it: where it gets its own grant and event-channel handles. The
/// daemon is generic over this, so the same code runs on Xen ([`linux::LinuxPlatform`]) and on
/// the simulated host ([`sim::SimPlatform`]).
pub trait Platform: Send + Sync {
    /// Grant access for one worker.
    type Grants: GrantAccess + Send;
    /// Event channels for one worker.
    type Events: EventChannel + Send;
    /// Why a handle could not be opened.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens a grant-access handle.
    fn grants(&self) -> Result<Self::Grants, Self::Error>;
    /// Opens an event-channel handle.
    fn event_channel(&self) -> Result<Self::Events, Self::Error>;
}

/// Size of a guest page and of every grant; Xen's page size on x86.
pub const PAGE_SIZE: usize = 4096;

/// A Xen domain id (`domid_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomId(pub u16);

/// An event-channel port number (`evtchn_port_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port(pub u32);

/// A grant reference: an index into the granting domain's grant table (`grant_ref_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantRef(pub u32);

impl fmt::Display for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}", self.0)
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port {}", self.0)
    }
}

impl fmt::Display for GrantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gref {}", self.0)
    }
}

/// `DOMID_FIRST_RESERVED` (xen/include/public/xen.h): domids from here up are not domains.
pub const DOMID_FIRST_RESERVED: u16 = 0x7FF0;

/// Grant-table status codes (`GNTST_*`, xen/include/public/grant_table.h) that this crate names.
pub mod gntst {
    /// `GNTST_okay`.
    pub const OKAY: i16 = 0;
    /// `GNTST_general_error`: Xen's answer for bad flags, wrong grantee and read-only violations.
    pub const GENERAL_ERROR: i16 = -1;
    /// `GNTST_bad_domain`.
    pub const BAD_DOMAIN: i16 = -2;
    /// `GNTST_bad_gntref`.
    pub const BAD_GNTREF: i16 = -3;
    /// `GNTST_no_device_space`: too many pins on one entry.
    pub const NO_DEVICE_SPACE: i16 = -7;
    /// `GNTST_bad_page`.
    pub const BAD_PAGE: i16 = -9;
    /// `GNTST_bad_copy_arg`: a copy segment crosses its page.
    pub const BAD_COPY_ARG: i16 = -10;
    /// `GNTST_eagain`: not done; try again.
    pub const EAGAIN: i16 = -12;
}
