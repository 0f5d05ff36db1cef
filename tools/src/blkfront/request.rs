//! Turning an operation into a ring request, as `blkif_queue_rw_req` and
//! `blkif_queue_discard_req` do: data copied into granted pages, one segment per page,
//! inline for up to 11 segments and in granted indirect pages beyond that. A FUA write goes
//! out as Linux sends one: a barrier carrying its data when only `feature-barrier` is
//! offered.

use blkif::abi::{
    Segment, BLKIF_DISCARD_SECURE, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_READ,
    BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, SECTOR_SIZE, SEGMENTS_PER_INDIRECT_PAGE,
};
use blkif::{RawDirect, RawDiscard, RawIndirect, RawRequest};
use zerocopy::IntoBytes;

use super::disk::{DiskInfo, FlushMode};
use super::error::Error;
use super::layout::{self, Span};
use super::pages::GuestPages;
use super::queue::{DataPage, Shadow};
use super::Tag;

/// One block operation; one ring request each, except a FUA write on a back end without
/// FUA (see [`Op::WriteFua`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read `len` bytes from 512-byte sector `sector`, into pages as the page cache lays
    /// them out.
    Read {
        /// First sector.
        sector: u64,
        /// Bytes, a multiple of the sector size.
        len: usize,
    },
    /// As [`Op::Read`], but the data is left in the pages and not returned, as a benchmark's
    /// reads land in a buffer nobody looks at (fio without `verify`): its completion carries
    /// no data.
    ReadDropped {
        /// First sector.
        sector: u64,
        /// Bytes, a multiple of the sector size.
        len: usize,
    },
    /// Read from sector `sector` into buffers laid out span by span: one segment per span,
    /// each in a page of its own, contiguous on disk.
    ReadSpans {
        /// First sector.
        sector: u64,
        /// The buffers; each a multiple of the sector size.
        spans: Vec<Span>,
    },
    /// Write `data` at sector `sector`, from pages laid out as the page cache lays them out.
    Write {
        /// First sector.
        sector: u64,
        /// Bytes, a multiple of the sector size.
        data: Vec<u8>,
    },
    /// Write `data` at sector `sector` from buffers laid out span by span (see
    /// [`Op::ReadSpans`]); `data` fills the spans in order.
    WriteSpans {
        /// First sector.
        sector: u64,
        /// As many bytes as the spans hold.
        data: Vec<u8>,
        /// The buffers; each a multiple of the sector size.
        spans: Vec<Span>,
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
        Op::Read { sector, len } | Op::ReadDropped { sector, len } => {
            check_transfer(disk, *sector, *len)?;
            let spans = layout::page_cache(*sector, *len);
            let mut prepared =
                data_request(tag, handle, disk, pages, *sector, Transfer::Read, &spans)?;
            prepared.shadow.read = matches!(op, Op::Read { .. });
            Ok(Some(prepared))
        }
        Op::ReadSpans { sector, spans } => {
            check_spans(disk, *sector, spans)?;
            data_request(tag, handle, disk, pages, *sector, Transfer::Read, spans).map(Some)
        }
        Op::Write { sector, data } => {
            check_writable(disk)?;
            check_transfer(disk, *sector, data.len())?;
            let spans = layout::page_cache(*sector, data.len());
            let transfer = Transfer::Write(data);
            data_request(tag, handle, disk, pages, *sector, transfer, &spans).map(Some)
        }
        Op::WriteSpans {
            sector,
            data,
            spans,
        } => {
            check_writable(disk)?;
            check_spans(disk, *sector, spans)?;
            if data.len() != layout::bytes(spans) {
                return Err(Error::SpansMismatch {
                    bytes: data.len(),
                    spans: layout::bytes(spans),
                });
            }
            let transfer = Transfer::Write(data);
            data_request(tag, handle, disk, pages, *sector, transfer, spans).map(Some)
        }
        Op::WriteFua { sector, data } => {
            check_writable(disk)?;
            check_transfer(disk, *sector, data.len())?;
            let spans = layout::page_cache(*sector, data.len());
            let transfer = match disk.flush {
                FlushMode::Barrier => Transfer::Barrier(data),
                FlushMode::FlushDiskcache | FlushMode::None => Transfer::Write(data),
            };
            let mut prepared = data_request(tag, handle, disk, pages, *sector, transfer, &spans)?;
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
            check_writable(disk)?;
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
            // Linux's: the block layer's flush request is never positioned (blk_rq_init)
            sector_number: u64::MAX,
            seg: [Segment::default(); BLKIF_MAX_SEGMENTS_PER_REQUEST],
        }),
    })
}

enum Transfer<'a> {
    Read,
    Write(&'a [u8]),
    /// A write as a barrier with data: direct only.
    Barrier(&'a [u8]),
}

/// A read or write whose data sits in `spans` (the data's length, checked by the caller):
/// one segment per span, each in a page of its own; inline up to 11, in indirect pages
/// beyond.
fn data_request(
    tag: Tag,
    handle: u16,
    disk: &DiskInfo,
    pages: &mut GuestPages,
    sector_number: u64,
    transfer: Transfer<'_>,
    spans: &[Span],
) -> Result<Prepared, Error> {
    let (operation, max) = match transfer {
        Transfer::Read => (BLKIF_OP_READ, disk.max_segments()),
        Transfer::Write(_) => (BLKIF_OP_WRITE, disk.max_segments()),
        Transfer::Barrier(_) => (BLKIF_OP_WRITE_BARRIER, BLKIF_MAX_SEGMENTS_PER_REQUEST),
    };
    let len = layout::bytes(spans);
    let segments = spans.len();
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
        let mut done = 0;
        for span in spans {
            let (offset, chunk) = (span.offset(), span.len());
            let page = pages.take()?;
            shadow.data.push(DataPage {
                page,
                offset,
                len: chunk,
            });
            if let Transfer::Write(data) | Transfer::Barrier(data) = transfer {
                pages.write(page.frame, offset, &data[done..done + chunk])?;
            }
            segs.push(Segment::new(
                page.gref.0,
                span.first_sect(),
                span.last_sect(),
            ));
            done += chunk;
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

fn check_writable(disk: &DiskInfo) -> Result<(), Error> {
    match disk.read_only() {
        true => Err(Error::ReadOnly),
        false => Ok(()),
    }
}

/// A transfer through `spans`: each span whole logical blocks (as blkback checks every
/// segment), and the whole inside the disk.
fn check_spans(disk: &DiskInfo, sector: u64, spans: &[Span]) -> Result<(), Error> {
    let block = u64::from(disk.sector_size);
    if let Some(span) = spans.iter().find(|s| s.len() as u64 % block != 0) {
        return Err(Error::Misaligned {
            sector,
            bytes: span.len(),
            sector_size: disk.sector_size,
        });
    }
    check_transfer(disk, sector, layout::bytes(spans))
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
