//! What the back end tells the front end about the disk when it connects, read as Linux's
//! `blkfront_connect` and `blkfront_gather_backend_features` read it.

use blkif::abi::{BLKIF_MAX_SEGMENTS_PER_REQUEST, VDISK_READONLY};

use super::error::Error;
use super::xenbus::Xenbus;

/// How cache flushes go out, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// Neither `feature-flush-cache` nor `feature-barrier`: flushes are not sent.
    None,
    /// `feature-flush-cache=1`: `BLKIF_OP_FLUSH_DISKCACHE` without segments.
    FlushDiskcache,
    /// Only `feature-barrier=1`: `BLKIF_OP_WRITE_BARRIER` without segments.
    Barrier,
}

/// `feature-discard` and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscardInfo {
    /// `discard-granularity` in bytes (default: the sector size).
    pub granularity: u64,
    /// `discard-alignment` in bytes (default 0).
    pub alignment: u64,
    /// `discard-secure=1`: `BLKIF_DISCARD_SECURE` may be asked for.
    pub secure: bool,
}

/// The disk as the back end described it at connect (and `sectors` after each resize).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskInfo {
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    /// `info`: `VDISK_*` bits.
    pub info: u32,
    /// Logical block size in bytes.
    pub sector_size: u32,
    /// Physical block size in bytes.
    pub physical_sector_size: u32,
    /// How flushes are sent (cleared when the back end fails one, as Linux does).
    pub flush: FlushMode,
    /// Discard, when offered (cleared when the back end answers EOPNOTSUPP).
    pub discard: Option<DiscardInfo>,
    /// Persistent grants negotiated: both ends wrote `feature-persistent=1`.
    pub persistent: bool,
    /// Segments per indirect request: the back end's `feature-max-indirect-segments`
    /// capped by ours, and 0 (direct only) when that is not above 11.
    pub max_indirect_segments: u32,
}

impl DiskInfo {
    /// Reads the connect keys; `sectors`, `info` and `sector-size` are mandatory.
    pub(crate) fn read(
        xenbus: &mut Xenbus,
        our_persistent: bool,
        our_max_indirect: u32,
    ) -> Result<Self, Error> {
        let sectors = xenbus.backend_required("sectors")?;
        let info = u32::try_from(xenbus.backend_required("info")?).unwrap_or(u32::MAX);
        let sector_size = checked_block_size(xenbus, "sector-size", None)?;
        let physical_sector_size =
            checked_block_size(xenbus, "physical-sector-size", Some(sector_size))?;
        // A back end offering both gets flushes without FUA, as in Linux.
        let flush = if xenbus.backend_u64("feature-flush-cache", 0)? != 0 {
            FlushMode::FlushDiskcache
        } else if xenbus.backend_u64("feature-barrier", 0)? != 0 {
            FlushMode::Barrier
        } else {
            FlushMode::None
        };
        let discard = if xenbus.backend_u64("feature-discard", 0)? != 0 {
            Some(DiscardInfo {
                granularity: xenbus.backend_u64("discard-granularity", u64::from(sector_size))?,
                alignment: xenbus.backend_u64("discard-alignment", 0)?,
                secure: xenbus.backend_u64("discard-secure", 0)? != 0,
            })
        } else {
            None
        };
        let persistent = our_persistent && xenbus.backend_u64("feature-persistent", 0)? != 0;
        let offered = xenbus.backend_u64("feature-max-indirect-segments", 0)?;
        let capped = offered.min(u64::from(our_max_indirect));
        let max_indirect_segments = if capped <= BLKIF_MAX_SEGMENTS_PER_REQUEST as u64 {
            0
        } else {
            capped as u32
        };
        Ok(DiskInfo {
            sectors,
            info,
            sector_size,
            physical_sector_size,
            flush,
            discard,
            persistent,
            max_indirect_segments,
        })
    }

    /// Whether the back end marked the disk read-only.
    pub fn read_only(&self) -> bool {
        self.info & VDISK_READONLY != 0
    }

    /// Most segments one read or write request may carry.
    pub fn max_segments(&self) -> usize {
        (self.max_indirect_segments as usize).max(BLKIF_MAX_SEGMENTS_PER_REQUEST)
    }
}

/// A block size: a power of two of at least 512 bytes; `default` when absent (mandatory
/// when there is none).
fn checked_block_size(xenbus: &mut Xenbus, key: &str, default: Option<u32>) -> Result<u32, Error> {
    let value = match default {
        Some(default) => xenbus.backend_u64(key, u64::from(default))?,
        None => xenbus.backend_required(key)?,
    };
    match u32::try_from(value) {
        Ok(size) if size >= 512 && size.is_power_of_two() => Ok(size),
        _ => Err(Error::BadKey {
            path: key.to_string(),
            value: value.to_string(),
            expected: "a power of two of at least 512",
        }),
    }
}
