//! Typed errors of opening a backing store and of one request against it.

use std::io;
use std::path::PathBuf;

/// Why a backing store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// stat or open failed.
    #[error("{path}: {source}")]
    Io {
        /// The path asked for.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Only block devices and regular files can back a VBD.
    #[error("{path}: neither a block device nor a regular file")]
    NotBlockOrFile {
        /// The path asked for.
        path: PathBuf,
    },
    /// A sector size the device reported makes no sense.
    #[error("{path}: bad sector sizes: logical {logical}, physical {physical}")]
    BadSectorSize {
        /// The path asked for.
        path: PathBuf,
        /// Logical block size in bytes.
        logical: u32,
        /// Physical block size in bytes.
        physical: u32,
    },
}

/// Why one request failed; the other requests of the VBD are not affected.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A write-class request (write, flush, discard) on a read-only backing, refused as blkback does.
    #[error("write-class request on a read-only backing")]
    ReadOnly,
    /// The request reaches past the end of the backing.
    #[error("request at byte {offset} of {len} bytes passes the end ({size} bytes)")]
    PastEnd {
        /// Byte offset of the request.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// Size of the backing in bytes.
        size: u64,
    },
    /// An offset, length or buffer window not a multiple of the logical block size.
    #[error("{what} {value} is not a multiple of the logical block size {block}")]
    Misaligned {
        /// Which value: "offset", "length" or "buffer start".
        what: &'static str,
        /// The value.
        value: u64,
        /// The logical block size.
        block: u32,
    },
    /// A read, write or discard of no bytes.
    #[error("request of no bytes")]
    Empty,
    /// The backing does not support discard.
    #[error("discard not supported by this backing")]
    DiscardUnsupported,
    /// The engine has as many requests in flight as it can hold; submit again after completions.
    #[error("engine queue full")]
    QueueFull,
    /// The kernel failed the I/O (EIO, ENOSPC, ...).
    #[error("I/O error: {0}")]
    Io(#[source] io::Error),
}

impl RequestError {
    /// The errno of a kernel failure, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RequestError::Io(e) => e.raw_os_error(),
            _ => None,
        }
    }
}
