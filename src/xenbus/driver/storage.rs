//! Opening the storage `physical-device-path` names, and the summary the handshake publishes
//! of it.

use std::path::Path;
use std::sync::Arc;

use crate::storage::{self, Mode, OpenError};
use crate::xenbus::{Backing, Discard, OpenStorage};

/// Opens storage with tokenback's storage layer.
pub struct Storage;

impl OpenStorage for Storage {
    type Storage = Arc<storage::Backing>;
    type Error = OpenError;

    fn open(&self, path: &Path, writable: bool) -> Result<(Self::Storage, Backing), OpenError> {
        let mode = if writable {
            Mode::ReadWrite
        } else {
            Mode::ReadOnly
        };
        let opened = storage::Backing::open(path, mode)?;
        let summary = summary(&opened);
        Ok((Arc::new(opened), summary))
    }
}

/// What the handshake publishes of `opened`, at its size as last read.
pub fn summary(opened: &storage::Backing) -> Backing {
    Backing {
        size_bytes: opened.size_bytes(),
        logical_sector_size: opened.logical_block_size(),
        physical_sector_size: opened.physical_block_size(),
        read_only: opened.read_only(),
        // Flushes of read-only storage have nothing to make durable.
        flush: !opened.read_only(),
        discard: opened.discard().then_some(Discard {
            granularity: opened.logical_block_size(),
            alignment: 0,
            secure: false,
        }),
    }
}
