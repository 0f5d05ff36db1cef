//! Where a transfer's data sits in guest memory: one span of whole 512-byte sectors per
//! page, which becomes one segment (`first_sect..=last_sect`). Linux aligns a bio's buffers
//! to 512 bytes and takes each segment's sectors from its own offset and length, so any
//! segment, not only the first and the last, may cover part of its page.

use blkif::abi::{SECTORS_PER_PAGE, SECTOR_SIZE, XEN_PAGE_SIZE};

/// Sectors `first_sect..=last_sect` of one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    first_sect: u8,
    last_sect: u8,
}

impl Span {
    /// The span of sectors `first_sect..=last_sect` of a page; `None` unless
    /// `first_sect <= last_sect <= 7`.
    pub fn new(first_sect: u8, last_sect: u8) -> Option<Self> {
        (first_sect <= last_sect && last_sect < SECTORS_PER_PAGE).then_some(Span {
            first_sect,
            last_sect,
        })
    }

    /// First sector in the page.
    pub fn first_sect(&self) -> u8 {
        self.first_sect
    }

    /// Last sector in the page.
    pub fn last_sect(&self) -> u8 {
        self.last_sect
    }

    /// Sectors covered (1..=8).
    pub fn sectors(&self) -> u8 {
        self.last_sect - self.first_sect + 1
    }

    /// Byte offset of the data in its page.
    pub(crate) fn offset(&self) -> usize {
        usize::from(self.first_sect) * SECTOR_SIZE as usize
    }

    /// Bytes of data.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.sectors()) * SECTOR_SIZE as usize
    }
}

/// Bytes the spans carry together.
pub(crate) fn bytes(spans: &[Span]) -> usize {
    spans.iter().map(Span::len).sum()
}

/// The page cache's layout of `len` bytes (whole sectors) from disk sector `sector`: sector
/// `s` at byte `(s % 8) * 512` of its page, so only the first span may start mid-page and
/// only the last may end there.
pub(crate) fn page_cache(sector: u64, len: usize) -> Vec<Span> {
    let sector_size = SECTOR_SIZE as usize;
    let mut offset = (sector % u64::from(SECTORS_PER_PAGE)) as usize * sector_size;
    let mut spans = Vec::with_capacity((offset + len).div_ceil(XEN_PAGE_SIZE));
    let mut left = len;
    while left > 0 {
        let chunk = left.min(XEN_PAGE_SIZE - offset);
        // Whole sectors inside one page: both indexes are 0..=7.
        let first_sect = (offset / sector_size) as u8;
        let last_sect = ((offset + chunk) / sector_size - 1) as u8;
        spans.push(Span {
            first_sect,
            last_sect,
        });
        left -= chunk;
        offset = 0;
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_hold_whole_sectors_of_one_page() {
        assert_eq!(
            Span::new(0, 7).map(|s| (s.offset(), s.len())),
            Some((0, 4096))
        );
        assert_eq!(
            Span::new(3, 3).map(|s| (s.offset(), s.len())),
            Some((1536, 512))
        );
        assert_eq!(Span::new(4, 3), None);
        assert_eq!(Span::new(0, 8), None);
    }

    #[test]
    fn the_page_cache_starts_mid_page_only_at_the_first_span() {
        let got: Vec<_> = page_cache(13, 2 * 4096)
            .iter()
            .map(|s| (s.first_sect(), s.last_sect()))
            .collect();
        assert_eq!(got, [(5, 7), (0, 7), (0, 4)]);
        assert_eq!(bytes(&page_cache(13, 2 * 4096)), 2 * 4096);
        assert_eq!(page_cache(8, 512), [Span::new(0, 0).unwrap()]);
    }
}
