//! Turning an operation into a ring request, as `blkif_queue_rw_req` and
//! `blkif_queue_discard_req` do: data copied into granted pages, one segment per page,
//! inline for up to 11 segments and in granted indirect pages beyond that. A FUA write goes
//! out as Linux sends one: a barrier carrying its data when only `feature-barrier` is
//! offered.

use blkif::abi::{
    Segment, BLKIF_DISCARD_SECURE, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_READ,
    BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, SECTOR_SIZE, SEGMENTS_PER_INDIRECT_PAGE, XEN_PAGE_SIZE,
};
use blkif::{RawDirect, RawDiscard, RawIndirect, RawRequest};
use zerocopy::IntoBytes;

use super::disk::{DiskInfo, FlushMode};
use super::error::Error;
use super::pages::GuestPages;
use super::queue::{DataPage, Shadow};
use super::Tag;

/// One block operation; one ring request each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read `len` bytes from 512-byte sector `sector`.
    Read {
        /// First sector.
        sector: u64,
        /// Bytes, a multiple of the sector size.
        len: usize,
    },
    /// Write `data` at sector `sector`.
    Write {
        /// First sector.
        sector: u64,
        /// Bytes, a multiple of the sector size.
        data: Vec<u8>,
    },
    /// Write `data` at sector `sector`, durable when it completes (`REQ_FUA`). As Linux: with
    /// only `feature-barrier` offered, a `BLKIF_OP_WRITE_BARRIER` carrying the data (at most
    /// 11 segments: barriers are never indirect); with `feature-flush-cache`, which offers no
    /// FUA, a write and, once it succeeded, a flush (the block layer's post-flush), and the
    /// completion is the flush's; with neither, a plain write (no write cache to bypass).
    WriteFua {
        /// First sector.
        sector: u64,
        /// Bytes, a multiple of the sector size.
        data: Vec<u8>,
    },
    /// Flush the back end's write cache (a no-op when it offers no flush).
    Flush,
    /// Discard `count` sectors from `sector`; `secure` is honoured only if offered.
    Discard {
        /// First sector.
        sector: u64,
        /// Sectors.
        count: u64,
        /// Ask for `BLKIF_DISCARD_SECURE`.
        secure: bool,
    },
}

/// A request ready for a ring slot; its `id` is set when the queue gives it one.
pub(crate) struct Prepared {
    pub(crate) shadow: Shadow,
    pub(crate) request: RawRequest,
}

/// The request with its `id` set.
pub(crate) fn with_id(request: RawRequest, id: u64) -> RawRequest {
    match request {
        RawRequest::Direct(r) => RawRequest::Direct(RawDirect { id, ..r }),
        RawRequest::Discard(r) => RawRequest::Discard(RawDiscard { id, ..r }),
        RawRequest::Indirect(r) => RawRequest::Indirect(RawIndirect { id, ..r }),
        RawRequest::Other { operation, .. } => RawRequest::Other { operation, id },
    }
}

/// Checks `op` against the disk and builds its request; `None` for a flush the back end
/// does not take.
pub(crate) fn prepare(
    op: &Op,
    tag: Tag,
    handle: u16,
    disk: &DiskInfo,
    pages: &mut GuestPages,
) -> Result<Option<Prepared>, Error> {
    match op {
        Op::Read { sector, len } => {
            check_transfer(disk, *sector, *len)?;
            data_request(tag, handle, disk, pages, *sector, Transfer::Read(*len)).map(Some)
        }
        Op::Write { sector, data } => {
            if disk.read_only() {
                return Err(Error::ReadOnly);
            }
            check_transfer(disk, *sector, data.len())?;
            data_request(tag, handle, disk, pages, *sector, Transfer::Write(data)).map(Some)
        }
        Op::WriteFua { sector, data } => {
            if disk.read_only() {
                return Err(Error::ReadOnly);
            }
            check_transfer(disk, *sector, data.len())?;
            let transfer = match disk.flush {
                FlushMode::Barrier => Transfer::Barrier(data),
                FlushMode::FlushDiskcache | FlushMode::None => Transfer::Write(data),
            };
            let mut prepared = data_request(tag, handle, disk, pages, *sector, transfer)?;
            prepared.shadow.post_flush = disk.flush == FlushMode::FlushDiskcache;
            Ok(Some(prepared))
        }
        Op::Flush => Ok(flush_request(tag, handle, disk.flush)),
        Op::Discard {
            sector,
            count,
            secure,
        } => {
            let offered = disk.discard.ok_or(Error::NotOffered("discard"))?;
            if disk.read_only() {
                return Err(Error::ReadOnly);
            }
            check_range(disk, *sector, *count)?;
            let flag = if *secure && offered.secure {
                BLKIF_DISCARD_SECURE
            } else {
                0
            };
            let (sector_number, nr_sectors) = (*sector, *count);
            Ok(Some(Prepared {
                shadow: shadow(tag, BLKIF_OP_DISCARD),
                request: RawRequest::Discard(RawDiscard {
                    flag,
                    handle,
                    id: 0,
                    sector_number,
                    nr_sectors,
                }),
            }))
        }
    }
}

fn shadow(tag: Tag, operation: u8) -> Shadow {
    Shadow {
        tag,
        operation,
        data: Vec::new(),
        indirect: Vec::new(),
        read: false,
        post_flush: false,
    }
}

/// A flush without data as the back end takes it, or `None` when it offers none.
pub(crate) fn flush_request(tag: Tag, handle: u16, mode: FlushMode) -> Option<Prepared> {
    let operation = match mode {
        FlushMode::None => return None,
        FlushMode::FlushDiskcache => BLKIF_OP_FLUSH_DISKCACHE,
        FlushMode::Barrier => BLKIF_OP_WRITE_BARRIER,
    };
    Some(Prepared {
        shadow: shadow(tag, operation),
        request: RawRequest::Direct(RawDirect {
            operation,
            nr_segments: 0,
            handle,
            id: 0,
            sector_number: 0,
            seg: [Segment::default(); BLKIF_MAX_SEGMENTS_PER_REQUEST],
        }),
    })
}

enum Transfer<'a> {
    Read(usize),
    Write(&'a [u8]),
    /// A write as a barrier with data: direct only.
    Barrier(&'a [u8]),
}

/// A read or write, laid out as the page cache lays it out: sector `s` of the transfer sits
/// at byte `(s % 8) * 512` of its page, so a transfer that does not start on a page
/// boundary begins mid-page (`first_sect` > 0), and every other segment starts at 0. One
/// segment per page; inline up to 11, in indirect pages beyond.
fn data_request(
    tag: Tag,
    handle: u16,
    disk: &DiskInfo,
    pages: &mut GuestPages,
    sector_number: u64,
    transfer: Transfer<'_>,
) -> Result<Prepared, Error> {
    let (operation, len, max) = match transfer {
        Transfer::Read(len) => (BLKIF_OP_READ, len, disk.max_segments()),
        Transfer::Write(data) => (BLKIF_OP_WRITE, data.len(), disk.max_segments()),
        Transfer::Barrier(data) => (
            BLKIF_OP_WRITE_BARRIER,
            data.len(),
            BLKIF_MAX_SEGMENTS_PER_REQUEST,
        ),
    };
    let sectors_per_page = (XEN_PAGE_SIZE as u64) / SECTOR_SIZE;
    let first_offset = (sector_number % sectors_per_page * SECTOR_SIZE) as usize;
    let segments = (first_offset + len).div_ceil(XEN_PAGE_SIZE);
    if segments > max {
        return Err(Error::TooLarge {
            bytes: len,
            segments,
            max,
        });
    }
    let mut shadow = shadow(tag, operation);
    shadow.read = operation == BLKIF_OP_READ;
    let mut segs = Vec::with_capacity(segments);
    let filled = (|| {
        let (mut done, mut offset) = (0, first_offset);
        while done < len {
            let chunk = (len - done).min(XEN_PAGE_SIZE - offset);
            let page = pages.take()?;
            shadow.data.push(DataPage {
                page,
                offset,
                len: chunk,
            });
            if let Transfer::Write(data) | Transfer::Barrier(data) = transfer {
                pages.write(page.frame, offset, &data[done..done + chunk])?;
            }
            // Whole sectors inside one page: both indexes are 0..=7.
            let sector = SECTOR_SIZE as usize;
            let first_sect = (offset / sector) as u8;
            let last_sect = ((offset + chunk) / sector - 1) as u8;
            segs.push(Segment::new(page.gref.0, first_sect, last_sect));
            done += chunk;
            offset = 0;
        }
        if segments > BLKIF_MAX_SEGMENTS_PER_REQUEST {
            for entries in segs.chunks(SEGMENTS_PER_INDIRECT_PAGE) {
                let page = pages.take()?;
                shadow.indirect.push(page);
                pages.write(page.frame, 0, entries.as_bytes())?;
            }
        }
        Ok(())
    })();
    if let Err(err) = filled {
        // The back end never saw these pages: ending access cannot fail.
        for page in shadow
            .indirect
            .drain(..)
            .chain(shadow.data.drain(..).map(|d| d.page))
        {
            let _ = pages.give_back(page, false);
        }
        return Err(err);
    }
    let request = if segments > BLKIF_MAX_SEGMENTS_PER_REQUEST {
        let mut indirect_grefs = [0; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
        for (slot, page) in indirect_grefs.iter_mut().zip(&shadow.indirect) {
            *slot = page.gref.0;
        }
        // At most max_indirect_segments, which fits 16 bits (checked above against it).
        let nr_segments = segments as u16;
        RawRequest::Indirect(RawIndirect {
            indirect_op: operation,
            nr_segments,
            handle,
            id: 0,
            sector_number,
            indirect_grefs,
        })
    } else {
        let mut seg = [Segment::default(); BLKIF_MAX_SEGMENTS_PER_REQUEST];
        seg[..segs.len()].copy_from_slice(&segs);
        let nr_segments = segs.len() as u8;
        RawRequest::Direct(RawDirect {
            operation,
            nr_segments,
            handle,
            id: 0,
            sector_number,
            seg,
        })
    };
    Ok(Prepared { shadow, request })
}

/// A read or write of `len` bytes at `sector`: whole logical blocks, inside the disk.
fn check_transfer(disk: &DiskInfo, sector: u64, len: usize) -> Result<(), Error> {
    let block = u64::from(disk.sector_size);
    let aligned = len > 0
        && (len as u64) % block == 0
        && sector
            .checked_mul(SECTOR_SIZE)
            .is_some_and(|b| b % block == 0);
    if !aligned {
        return Err(Error::Misaligned {
            sector,
            bytes: len,
            sector_size: disk.sector_size,
        });
    }
    check_range(disk, sector, len as u64 / SECTOR_SIZE)
}

fn check_range(disk: &DiskInfo, sector: u64, count: u64) -> Result<(), Error> {
    match sector.checked_add(count) {
        Some(end) if end <= disk.sectors => Ok(()),
        _ => Err(Error::OutOfRange {
            sector,
            count,
            capacity: disk.sectors,
        }),
    }
}
