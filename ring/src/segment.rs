//! Validated data segments: the part of a granted page a request reads or writes.

use crate::abi::{Segment, BLKIF_MAX_SEGMENTS_PER_REQUEST, SECTORS_PER_PAGE};
use crate::request::RequestError;

/// A validated segment: sectors `first_sect..=last_sect` of one granted page, `last_sect <= 7`.
///
/// Packed into one word (`gref | first_sect << 32 | last_sect << 40`) so that the inline
/// array of a request clears and copies as plain words on the hot path.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DataSegment(u64);

impl DataSegment {
    /// Checks one wire segment; `index` is its position in the request, for the error.
    /// Also for the entries of an indirect page, once copied out of it.
    #[inline]
    pub fn validate(index: u16, seg: &Segment) -> Result<Self, RequestError> {
        let (first_sect, last_sect) = (seg.first_sect, seg.last_sect);
        if last_sect >= SECTORS_PER_PAGE {
            return Err(RequestError::SegmentPastPage { index, last_sect });
        }
        if first_sect > last_sect {
            return Err(RequestError::SegmentReversed {
                index,
                first_sect,
                last_sect,
            });
        }
        Ok(DataSegment(
            u64::from(seg.gref) | u64::from(first_sect) << 32 | u64::from(last_sect) << 40,
        ))
    }

    /// Grant reference of the data page.
    pub fn gref(&self) -> u32 {
        self.0 as u32
    }

    /// First sector within the page (0..=7).
    pub fn first_sect(&self) -> u8 {
        (self.0 >> 32) as u8
    }

    /// Last sector within the page (`first_sect..=7`).
    pub fn last_sect(&self) -> u8 {
        (self.0 >> 40) as u8
    }

    /// Sectors covered (1..=8).
    pub fn nr_sectors(&self) -> u8 {
        self.last_sect() - self.first_sect() + 1
    }

    /// Byte offset of the data in its page.
    pub fn offset(&self) -> usize {
        usize::from(self.first_sect()) * 512
    }

    /// Length of the data in bytes (512..=4096).
    pub fn len(&self) -> usize {
        usize::from(self.nr_sectors()) * 512
    }

    /// Never true: a segment covers at least one sector.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl core::fmt::Debug for DataSegment {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DataSegment")
            .field("gref", &self.gref())
            .field("first_sect", &self.first_sect())
            .field("last_sect", &self.last_sect())
            .finish()
    }
}

/// A contiguous disk range and the inline segments that carry its data (at most 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segments {
    pub(crate) sector_number: u64,
    pub(crate) nr_sectors: u64,
    pub(crate) len: u8,
    pub(crate) seg: [DataSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}

impl Segments {
    /// No segments, from sector 0.
    pub(crate) const EMPTY: Segments = Segments {
        sector_number: 0,
        nr_sectors: 0,
        len: 0,
        seg: [DataSegment(0); BLKIF_MAX_SEGMENTS_PER_REQUEST],
    };

    /// First disk sector (512-byte units).
    pub fn sector_number(&self) -> u64 {
        self.sector_number
    }

    /// Total sectors of all segments; `sector_number + nr_sectors` does not overflow.
    pub fn nr_sectors(&self) -> u64 {
        self.nr_sectors
    }

    /// The segments, in disk order.
    pub fn segments(&self) -> &[DataSegment] {
        // At most 11 by validation; `min` lets the compiler see it too.
        &self.seg[..usize::from(self.len).min(BLKIF_MAX_SEGMENTS_PER_REQUEST)]
    }
}
