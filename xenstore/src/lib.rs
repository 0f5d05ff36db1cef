//! xenstore-wire: the xenstore wire protocol, a client, and a xenstored-compatible server.
#![deny(missing_docs)]

pub mod client;
pub mod path;
pub mod perms;
pub mod server;
pub mod wire;
