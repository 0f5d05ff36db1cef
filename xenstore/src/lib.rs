//! xenstore-wire: the xenstore wire protocol, clients, and a xenstored-compatible server.
//!
//! - [`wire`]: the 16-byte header, message types, typed requests and Xen's error names. A
//!   frame claiming more than 4096 payload bytes, an unknown type, or arguments that are not
//!   text are errors, never a panic or an allocation beyond one frame.
//! - [`client`]: a blocking client and a mio-driven one. Both find xenstored as libxenstore
//!   does (`XENSTORED_PATH`, the standard socket paths, `/dev/xen/xenbus`), reconnect when it
//!   restarts and re-register their watches.
//! - [`server`]: an in-memory xenstored with Xen 4.17's permission rules, watches,
//!   transactions, domains and quotas, plus a unix-socket transport. The simulated Xen host
//!   runs it as `tokenback-xenstored`; tests use it directly.
//!
//! Behaviour follows Xen's xs_wire.h, docs/misc/xenstore.txt and the C xenstored; each
//! module says where it departs. Not implemented: the shared-page transport (xenstored side),
//! XS_CONTROL, features and quotas over the wire (Xen 4.21+), WATCHDEPTH.
#![deny(missing_docs)]

pub mod client;
pub mod path;
pub mod perms;
pub mod server;
pub mod wire;
