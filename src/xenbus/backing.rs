//! The seam between the handshake and storage: what the handshake needs to know about the
//! storage named by `physical-device-path` to write the connect keys.

use std::path::Path;

/// What the storage behind a VBD offers, as the connect keys publish it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backing {
    /// Size in bytes.
    pub size_bytes: u64,
    /// Logical block size: a power of two, at least 512.
    pub logical_sector_size: u32,
    /// Physical block size: a power of two, at least the logical one.
    pub physical_sector_size: u32,
    /// The storage itself refuses writes (a read-only device or file).
    pub read_only: bool,
    /// Flush (and so barrier) requests are honoured.
    pub flush: bool,
    /// Discard is supported; `discard_granularity` is then its unit in bytes.
    pub discard: Option<Discard>,
}

/// How the storage discards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discard {
    pub granularity: u32,
    pub alignment: u32,
    pub secure: bool,
}

impl Backing {
    /// `sectors`: the size in 512-byte units whatever the logical block size (blkif.h).
    pub fn sectors(&self) -> u64 {
        self.size_bytes / 512
    }
}

/// Opens the storage a VBD names; implemented by the storage layer. `writable` is false for a
/// VBD whose `mode` lacks `w`.
pub trait OpenStorage {
    /// What the storage layer hands on to the pipeline with the opened storage.
    type Storage;
    /// Why the storage could not be opened (logged and published as the VBD's error).
    type Error: std::error::Error;

    fn open(&self, path: &Path, writable: bool) -> Result<(Self::Storage, Backing), Self::Error>;
}
