//! The blkif wire ABI: operation and status values, limits, the `protocol` key, and the
//! request/response layouts of each protocol ([`x86_32`], [`x86_64`], and [`native`]).
//!
//! Values and layouts follow Xen's `xen/include/public/io/blkif.h` and Linux's
//! `drivers/block/xen-blkback/common.h`. Every layout type is `#[repr(C)]` with its padding
//! spelled out as `_pad*` fields, so a value built with zeroed padding puts no stale host bytes
//! into guest memory (the bug class of XSA-216), and zerocopy proves the byte view sound.

use crate::raw::RawRequest;
use crate::slots::SlotRef;
use thiserror::Error;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub mod x86_32;
pub mod x86_64;

/// The layout a front end of this host's own architecture uses (`XEN_IO_PROTO_ABI_NATIVE`).
#[cfg(target_arch = "x86")]
pub use x86_32 as native;
/// The layout a front end of this host's own architecture uses (`XEN_IO_PROTO_ABI_NATIVE`).
/// Every 64-bit architecture and ARM align `uint64_t` to 8, which gives the x86_64 layout.
#[cfg(not(target_arch = "x86"))]
pub use x86_64 as native;

/// Read `nr_segments` sectors into the granted pages.
pub const BLKIF_OP_READ: u8 = 0;
/// Write the granted pages' sectors.
pub const BLKIF_OP_WRITE: u8 = 1;
/// Barrier: drain, flush, then an optional write (`feature-barrier`).
pub const BLKIF_OP_WRITE_BARRIER: u8 = 2;
/// Flush the disk cache, with optional data (`feature-flush-cache`).
pub const BLKIF_OP_FLUSH_DISKCACHE: u8 = 3;
/// Reserved for SLES device-specific packets; not implemented (answered as unsupported).
pub const BLKIF_OP_RESERVED_1: u8 = 4;
/// Discard a sector range (`feature-discard`).
pub const BLKIF_OP_DISCARD: u8 = 5;
/// A read or write whose segments live in granted indirect pages.
pub const BLKIF_OP_INDIRECT: u8 = 6;

/// Response status: success.
pub const BLKIF_RSP_OKAY: i16 = 0;
/// Response status: unspecified failure.
pub const BLKIF_RSP_ERROR: i16 = -1;
/// Response status: operation not supported.
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;

/// Segments carried inline by a direct request.
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// Grant references in an indirect request's `indirect_grefs`.
pub const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// Segment entries in one indirect page (4096 / 8).
pub const SEGMENTS_PER_INDIRECT_PAGE: usize = XEN_PAGE_SIZE / core::mem::size_of::<Segment>();
/// The most segments an indirect request can describe (8 pages of 512): the ABI's ceiling,
/// not a value to advertise. Linux blkback publishes 256 as `feature-max-indirect-segments`
/// (its own `MAX_INDIRECT_SEGMENTS`); a back end chooses its cap below this one.
pub const INDIRECT_SEGMENTS_ABI_CEILING: usize =
    BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * SEGMENTS_PER_INDIRECT_PAGE;
/// Bit 0 of a discard's `flag`: erase securely (if the back end offered `discard-secure`).
pub const BLKIF_DISCARD_SECURE: u8 = 0x01;

/// `info` bit: the disk is a CD-ROM.
pub const VDISK_CDROM: u32 = 0x1;
/// `info` bit: the medium is removable.
pub const VDISK_REMOVABLE: u32 = 0x2;
/// `info` bit: the disk is read-only.
pub const VDISK_READONLY: u32 = 0x4;

/// Size of a ring or grant page on every architecture.
pub const XEN_PAGE_SIZE: usize = 4096;
/// Unit of `sector_number`, `nr_sectors` and `first_sect`/`last_sect`, whatever `sector-size` says.
pub const SECTOR_SIZE: u64 = 512;
/// Sectors in one granted page: `last_sect` is at most this minus one.
pub const SECTORS_PER_PAGE: u8 = (XEN_PAGE_SIZE as u64 / SECTOR_SIZE) as u8;

/// `blkif_request_segment`: part of one granted page, sectors `first_sect..=last_sect`.
/// Identical in every protocol (8 bytes, alignment 4).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Segment {
    /// Grant reference of the data page.
    pub gref: u32,
    /// First 512-byte sector within the page (inclusive).
    pub first_sect: u8,
    /// Last 512-byte sector within the page (inclusive).
    pub last_sect: u8,
    /// Padding; zero when we write it.
    pub _pad: [u8; 2],
}

impl Segment {
    /// A segment with zeroed padding.
    pub const fn new(gref: u32, first_sect: u8, last_sect: u8) -> Self {
        Segment {
            gref,
            first_sect,
            last_sect,
            _pad: [0; 2],
        }
    }
}

/// The request layout a front end announced in its `protocol` xenstore key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The back end's own architecture layout (`XEN_IO_PROTO_ABI_NATIVE`).
    Native,
    /// `x86_32-abi`: the i386 layout (108-byte slots, 12-byte responses).
    X86_32,
    /// `x86_64-abi`: the x86_64 layout (112-byte slots, 16-byte responses).
    X86_64,
}

/// The `protocol` key held a string that names no layout we know; the VBD cannot connect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown blkif protocol {0:?}")]
pub struct UnknownProtocol(pub String);

/// The two concrete layouts behind the three protocol names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    X86_32,
    X86_64,
}

impl Protocol {
    /// What an absent `protocol` key means. Linux blkback (`BLKIF_PROTOCOL_DEFAULT` in
    /// common.h) assumes the x86_32 layout on x86 builds, native elsewhere; blkif.h says native.
    /// We follow Linux, whose behaviour front ends have been tested against.
    pub const DEFAULT: Protocol = if cfg!(any(target_arch = "x86", target_arch = "x86_64")) {
        Protocol::X86_32
    } else {
        Protocol::Native
    };

    /// The protocol string of this host's native layout.
    pub const NATIVE_NAME: &'static str = if cfg!(target_arch = "x86") {
        "x86_32-abi"
    } else if cfg!(target_arch = "x86_64") {
        "x86_64-abi"
    } else {
        "arm-abi"
    };

    /// Parses the front end's `protocol` key (`None` when absent), as Linux blkback's
    /// `connect_ring` does: the native name first, then the two x86 names.
    pub fn from_xenstore(value: Option<&str>) -> Result<Self, UnknownProtocol> {
        match value {
            None => Ok(Self::DEFAULT),
            Some(s) if s == Self::NATIVE_NAME => Ok(Protocol::Native),
            Some("x86_32-abi") => Ok(Protocol::X86_32),
            Some("x86_64-abi") => Ok(Protocol::X86_64),
            Some(other) => Err(UnknownProtocol(other.to_owned())),
        }
    }

    /// The string a front end writes to `protocol` for this layout.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Native => Self::NATIVE_NAME,
            Protocol::X86_32 => "x86_32-abi",
            Protocol::X86_64 => "x86_64-abi",
        }
    }

    /// Bytes per ring slot (the size of the request/response union).
    pub fn slot_size(self) -> usize {
        match self.layout() {
            Layout::X86_32 => x86_32::SLOT_SIZE,
            Layout::X86_64 => x86_64::SLOT_SIZE,
        }
    }

    pub(crate) fn layout(self) -> Layout {
        match self {
            Protocol::Native if cfg!(target_arch = "x86") => Layout::X86_32,
            Protocol::Native | Protocol::X86_64 => Layout::X86_64,
            Protocol::X86_32 => Layout::X86_32,
        }
    }
}

impl core::str::FromStr for Protocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_xenstore(Some(s))
    }
}

impl core::fmt::Display for Protocol {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The part of a request slot after the common head of an indirect request, at the same
/// offset as a direct request's `seg` (identical in both layouts once placed there).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub(crate) struct IndirectTail {
    pub(crate) handle: u16,
    pub(crate) _pad2: [u8; 2],
    pub(crate) indirect_grefs: [u32; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
}

/// What the slot accessors need to know about one layout.
pub(crate) trait SlotLayout: Sized {
    /// Bytes per ring slot.
    const SLOT_SIZE: usize;
    /// Offset of what follows the common head: `seg`, a discard's `nr_sectors`, an indirect
    /// request's `handle`.
    const BODY: usize;
    /// The slot viewed as a request (exactly `SLOT_SIZE` bytes).
    type Request: FromBytes + IntoBytes + Immutable + Copy;
    /// The response at the start of a slot.
    type Response: FromBytes + IntoBytes + Immutable + Copy;
    /// Copies a request out of its slot into `out`, each byte it needs read once, converted.
    fn read_request(slot: &SlotRef<'_, Self>, out: &mut RawRequest);
    /// Writes a request into its slot: the head and the body of its union member, unused
    /// entries included.
    fn write_request(slot: &SlotRef<'_, Self>, raw: &RawRequest);
    /// Builds a wire response, padding zeroed.
    fn encode_response(r: &crate::Response) -> Self::Response;
    /// Converts a copied wire response.
    fn decode_response(r: &Self::Response) -> crate::Response;
}

/// Conversions between one layout module's types and the protocol-neutral [`RawRequest`] and
/// [`Response`](crate::Response). Expanded once per layout so both share one text.
macro_rules! slot_codec {
    () => {
        use crate::abi::IndirectTail;
        use crate::raw::{RawDirect, RawDiscard, RawIndirect, RawRequest};
        use crate::slots::SlotRef;
        use core::mem::{align_of, offset_of, size_of};
        use zerocopy::FromZeros;

        /// Offset of the union body after the common head.
        const BODY: usize = size_of::<RequestHead>();

        // The slot accessors rely on these: a slot holds a request or a response exactly at
        // its start, every slot start (64 + i * SLOT_SIZE) is aligned for both, and the head
        // and bodies sit where the full request types put them.
        const _: () = assert!(size_of::<Request>() == SLOT_SIZE);
        const _: () = assert!(size_of::<Response>() <= SLOT_SIZE);
        const _: () = assert!(SLOT_SIZE % align_of::<Request>() == 0);
        const _: () = assert!(align_of::<Response>() <= align_of::<Request>());
        const _: () = assert!(crate::shared::HEADER_SIZE % align_of::<Request>() == 0);
        const _: () = assert!(offset_of!(RequestHead, arg8) == offset_of!(Request, nr_segments));
        const _: () = assert!(offset_of!(RequestHead, arg8) == offset_of!(DiscardRequest, flag));
        const _: () =
            assert!(offset_of!(RequestHead, arg8) == offset_of!(IndirectRequest, indirect_op));
        const _: () = assert!(offset_of!(RequestHead, arg16) == offset_of!(Request, handle));
        const _: () =
            assert!(offset_of!(RequestHead, arg16) == offset_of!(IndirectRequest, nr_segments));
        const _: () = assert!(offset_of!(RequestHead, id) == offset_of!(Request, id));
        const _: () = assert!(offset_of!(RequestHead, id) == offset_of!(IndirectRequest, id));
        const _: () =
            assert!(offset_of!(RequestHead, sector_number) == offset_of!(Request, sector_number));
        const _: () = assert!(
            offset_of!(RequestHead, sector_number) == offset_of!(DiscardRequest, sector_number)
        );
        const _: () = assert!(BODY == offset_of!(Request, seg));
        const _: () = assert!(BODY == offset_of!(DiscardRequest, nr_sectors));
        const _: () = assert!(BODY == offset_of!(IndirectRequest, handle));
        const _: () = assert!(BODY + 4 == offset_of!(IndirectRequest, indirect_grefs));

        /// This layout, as a type parameter for the slot accessors.
        #[derive(Clone, Copy, Debug)]
        pub(crate) struct Abi;

        impl super::SlotLayout for Abi {
            const SLOT_SIZE: usize = SLOT_SIZE;
            const BODY: usize = BODY;
            type Request = Request;
            type Response = Response;

            #[inline]
            fn read_request(slot: &SlotRef<'_, Self>, out: &mut RawRequest) {
                let head: RequestHead = slot.read::<RequestHead, 0>();
                *out = match head.operation {
                    super::BLKIF_OP_READ
                    | super::BLKIF_OP_WRITE
                    | super::BLKIF_OP_WRITE_BARRIER
                    | super::BLKIF_OP_FLUSH_DISKCACHE => {
                        let direct = RawDirect {
                            operation: head.operation,
                            nr_segments: head.arg8,
                            handle: head.arg16,
                            id: head.id,
                            sector_number: head.sector_number,
                            seg: [super::Segment::default(); super::BLKIF_MAX_SEGMENTS_PER_REQUEST],
                        };
                        *out = RawRequest::Direct(direct);
                        // Segments go straight into `out`: built elsewhere and moved, the
                        // freshly written array would be reloaded in wider chunks than it was
                        // stored in, which defeats store forwarding and stalls.
                        if let RawRequest::Direct(d) = out {
                            // The count comes from the head copy, clamped before the loop.
                            let n =
                                usize::from(head.arg8).min(super::BLKIF_MAX_SEGMENTS_PER_REQUEST);
                            for (i, s) in d.seg.iter_mut().enumerate().take(n) {
                                *s = slot.read_segment(i);
                            }
                        }
                        return;
                    }
                    super::BLKIF_OP_DISCARD => {
                        // Two 4-byte words: x86_32 places this u64 at a 4-aligned offset.
                        let words: [u32; 2] = slot.read::<[u32; 2], BODY>();
                        RawRequest::Discard(RawDiscard {
                            flag: head.arg8,
                            handle: head.arg16,
                            id: head.id,
                            sector_number: head.sector_number,
                            nr_sectors: zerocopy::transmute!(words),
                        })
                    }
                    super::BLKIF_OP_INDIRECT => {
                        let tail: IndirectTail = slot.read::<IndirectTail, BODY>();
                        RawRequest::Indirect(RawIndirect {
                            indirect_op: head.arg8,
                            nr_segments: head.arg16,
                            handle: tail.handle,
                            id: head.id,
                            sector_number: head.sector_number,
                            indirect_grefs: tail.indirect_grefs,
                        })
                    }
                    operation => RawRequest::Other {
                        operation,
                        id: head.id,
                    },
                };
            }

            #[inline]
            fn write_request(slot: &SlotRef<'_, Self>, raw: &RawRequest) {
                let mut head = RequestHead::new_zeroed();
                head.operation = raw.operation();
                head.id = raw.id();
                match raw {
                    RawRequest::Direct(r) => {
                        head.arg8 = r.nr_segments;
                        head.arg16 = r.handle;
                        head.sector_number = r.sector_number;
                        // All eleven, used or not: a front end copies its whole request into
                        // the slot (Linux copies its shadow, stale entries included).
                        for (i, s) in r.seg.iter().enumerate() {
                            slot.write_segment(i, s);
                        }
                    }
                    RawRequest::Discard(r) => {
                        head.arg8 = r.flag;
                        head.arg16 = r.handle;
                        head.sector_number = r.sector_number;
                        let words: [u32; 2] = zerocopy::transmute!(r.nr_sectors);
                        slot.write::<[u32; 2], BODY>(&words);
                    }
                    RawRequest::Indirect(r) => {
                        head.arg8 = r.indirect_op;
                        head.arg16 = r.nr_segments;
                        head.sector_number = r.sector_number;
                        let tail = IndirectTail {
                            handle: r.handle,
                            _pad2: [0; 2],
                            indirect_grefs: r.indirect_grefs,
                        };
                        slot.write::<IndirectTail, BODY>(&tail);
                    }
                    RawRequest::Other { .. } => {}
                }
                slot.write::<RequestHead, 0>(&head);
            }

            fn encode_response(r: &crate::Response) -> Response {
                Response::encode(r)
            }

            fn decode_response(r: &Response) -> crate::Response {
                r.decode()
            }
        }

        impl Response {
            /// The wire form of `r`, padding zeroed.
            pub fn encode(r: &crate::Response) -> Self {
                let mut out = Response::new_zeroed();
                out.id = r.id;
                out.operation = r.operation;
                out.status = r.status;
                out
            }

            /// The protocol-neutral form.
            pub fn decode(&self) -> crate::Response {
                crate::Response {
                    id: self.id,
                    operation: self.operation,
                    status: self.status,
                }
            }
        }
    };
}
use slot_codec;
