//! Typed access to the ring's slots in one protocol's layout. Requests are copied in parts
//! (head, then the body their operation uses), responses whole; every copy is a run of
//! volatile word accesses, each byte touched once, with bounds and alignment checked at
//! compile time.

use core::marker::PhantomData;
use core::mem::{align_of, size_of};

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::abi::{
    x86_32, x86_64, Layout, Protocol, Segment, SlotLayout, BLKIF_MAX_SEGMENTS_PER_REQUEST,
};
use crate::raw::RawRequest;
use crate::response::Response;
use crate::shared::{copy_from_shared, copy_to_shared, ring_size, SharedRing, HEADER_SIZE};

/// The slots of one ring in layout `L`.
#[derive(Clone, Debug)]
pub(crate) struct Slots<L> {
    mem: SharedRing,
    mask: u32,
    _layout: PhantomData<L>,
}

impl<L: SlotLayout> Slots<L> {
    fn new(mem: SharedRing) -> Self {
        let size = ring_size(mem.order(), L::SLOT_SIZE);
        Slots {
            mem,
            mask: size - 1,
            _layout: PhantomData,
        }
    }

    /// Start of the slot of free-running index `idx`. The only place indices are wrapped.
    fn slot_ptr(&self, idx: u32) -> *mut u8 {
        let slot = (idx & self.mask) as usize;
        // In bounds: slot < ring_size, and ring_size slots of SLOT_SIZE fit after the header.
        self.mem
            .as_ptr()
            .as_ptr()
            .wrapping_add(HEADER_SIZE + slot * L::SLOT_SIZE)
    }

    fn slot(&self, idx: u32) -> SlotRef<'_, L> {
        SlotRef {
            ptr: self.slot_ptr(idx),
            _ring: PhantomData,
        }
    }

    fn read_response(&self, idx: u32) -> L::Response {
        // SAFETY: a response is no larger than a slot and aligned at its start (compile-time
        // checks in abi); the memory is live.
        unsafe { copy_from_shared(self.slot_ptr(idx)) }
    }

    fn write_response(&self, idx: u32, value: &L::Response) {
        // SAFETY: as in `read_response`.
        unsafe { copy_to_shared(value, self.slot_ptr(idx)) }
    }
}

/// One request slot in shared memory, for the layout's decoder: typed copies of parts of the
/// slot whose bounds and alignment are checked at compile time.
pub(crate) struct SlotRef<'a, L> {
    ptr: *mut u8,
    _ring: PhantomData<(&'a SharedRing, L)>,
}

impl<L: SlotLayout> SlotRef<'_, L> {
    /// Copies the `T` at byte `OFFSET` of the slot out (each byte read once).
    #[inline]
    pub(crate) fn read<T: FromBytes + IntoBytes, const OFFSET: usize>(&self) -> T {
        const {
            assert!(OFFSET + size_of::<T>() <= L::SLOT_SIZE);
            assert!(OFFSET % align_of::<T>() == 0);
            assert!(align_of::<T>() <= align_of::<L::Request>());
        };
        // SAFETY: the slot is live and SLOT_SIZE bytes long, aligned like `L::Request`
        // (`Slots::slot_ptr`); the asserts above keep the `T` inside it and aligned.
        unsafe { copy_from_shared(self.ptr.wrapping_add(OFFSET)) }
    }

    /// Writes `value` at byte `OFFSET` of the slot.
    #[inline]
    pub(crate) fn write<T: IntoBytes + Immutable, const OFFSET: usize>(&self, value: &T) {
        const {
            assert!(OFFSET + size_of::<T>() <= L::SLOT_SIZE);
            assert!(OFFSET % align_of::<T>() == 0);
            assert!(align_of::<T>() <= align_of::<L::Request>());
        };
        // SAFETY: as in `read`.
        unsafe { copy_to_shared(value, self.ptr.wrapping_add(OFFSET)) }
    }

    /// Copies inline segment `i` out (`i` is clamped to the eleven that exist).
    #[inline]
    pub(crate) fn read_segment(&self, i: usize) -> Segment {
        // SAFETY: `segment_ptr` is in the slot and aligned for a `Segment`.
        unsafe { copy_from_shared(self.segment_ptr(i)) }
    }

    /// Writes inline segment `i` (`i` is clamped to the eleven that exist).
    #[inline]
    pub(crate) fn write_segment(&self, i: usize, segment: &Segment) {
        // SAFETY: `segment_ptr` is in the slot and aligned for a `Segment`.
        unsafe { copy_to_shared(segment, self.segment_ptr(i)) }
    }

    /// Start of inline segment `i`, clamped to the eleven that exist, so always in the slot.
    fn segment_ptr(&self, i: usize) -> *mut u8 {
        const {
            assert!(
                L::BODY + size_of::<[Segment; BLKIF_MAX_SEGMENTS_PER_REQUEST]>() <= L::SLOT_SIZE
            );
            assert!(L::BODY % align_of::<Segment>() == 0);
            assert!(align_of::<Segment>() <= align_of::<L::Request>());
        };
        let i = i.min(BLKIF_MAX_SEGMENTS_PER_REQUEST - 1);
        self.ptr.wrapping_add(L::BODY + size_of::<Segment>() * i)
    }
}

/// The slots of a ring in the layout its front end announced.
#[derive(Clone, Debug)]
pub(crate) enum ProtocolSlots {
    X86_32(Slots<x86_32::Abi>),
    X86_64(Slots<x86_64::Abi>),
}

impl ProtocolSlots {
    pub(crate) fn new(mem: SharedRing, protocol: Protocol) -> Self {
        match protocol.layout() {
            Layout::X86_32 => ProtocolSlots::X86_32(Slots::new(mem)),
            Layout::X86_64 => ProtocolSlots::X86_64(Slots::new(mem)),
        }
    }

    /// RING_SIZE.
    pub(crate) fn size(&self) -> u32 {
        match self {
            ProtocolSlots::X86_32(s) => s.mask + 1,
            ProtocolSlots::X86_64(s) => s.mask + 1,
        }
    }

    pub(crate) fn mem(&self) -> &SharedRing {
        match self {
            ProtocolSlots::X86_32(s) => &s.mem,
            ProtocolSlots::X86_64(s) => &s.mem,
        }
    }

    /// Copies the request out of its slot (each byte once) into `out`, converted.
    #[inline]
    pub(crate) fn read_request(&self, idx: u32, out: &mut RawRequest) {
        match self {
            ProtocolSlots::X86_32(s) => x86_32::Abi::read_request(&s.slot(idx), out),
            ProtocolSlots::X86_64(s) => x86_64::Abi::read_request(&s.slot(idx), out),
        }
    }

    #[inline]
    pub(crate) fn write_request(&self, idx: u32, raw: &RawRequest) {
        match self {
            ProtocolSlots::X86_32(s) => x86_32::Abi::write_request(&s.slot(idx), raw),
            ProtocolSlots::X86_64(s) => x86_64::Abi::write_request(&s.slot(idx), raw),
        }
    }

    pub(crate) fn read_response(&self, idx: u32) -> Response {
        match self {
            ProtocolSlots::X86_32(s) => x86_32::Abi::decode_response(&s.read_response(idx)),
            ProtocolSlots::X86_64(s) => x86_64::Abi::decode_response(&s.read_response(idx)),
        }
    }

    pub(crate) fn write_response(&self, idx: u32, response: &Response) {
        match self {
            ProtocolSlots::X86_32(s) => {
                s.write_response(idx, &x86_32::Abi::encode_response(response))
            }
            ProtocolSlots::X86_64(s) => {
                s.write_response(idx, &x86_64::Abi::encode_response(response))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::{RawDirect, RawDiscard, RawIndirect};

    /// Every union member, with every field distinct and nonzero where it can be.
    fn samples() -> Vec<RawRequest> {
        let mut seg = [Segment::default(); BLKIF_MAX_SEGMENTS_PER_REQUEST];
        for (i, s) in (0u8..).zip(seg.iter_mut()) {
            *s = Segment::new(0x0101_0101 * u32::from(i + 1), i, 0xf0 | i);
        }
        let direct = |operation, nr_segments| {
            RawRequest::Direct(RawDirect {
                operation,
                nr_segments,
                handle: 0xa1b2,
                id: 0x0102_0304_0506_0708,
                sector_number: 0x1112_1314_1516_1718,
                seg,
            })
        };
        vec![
            direct(0, 11),
            direct(1, 11),
            direct(2, 11),
            direct(3, 11),
            RawRequest::Discard(RawDiscard {
                flag: 0xff,
                handle: 0xa1b2,
                id: u64::MAX - 1,
                sector_number: 0x2122_2324_2526_2728,
                nr_sectors: 0x3132_3334_3536_3738,
            }),
            RawRequest::Indirect(RawIndirect {
                indirect_op: 0x77,
                nr_segments: 0xfedc,
                handle: 0xa1b2,
                id: 3,
                sector_number: 4,
                indirect_grefs: [1, 2, 3, 4, 5, 6, 7, u32::MAX],
            }),
            RawRequest::Other {
                operation: 4,
                id: 0x4142_4344_4546_4748,
            },
        ]
    }

    #[test]
    fn slots_decode_what_was_encoded_in_every_layout() {
        for protocol in [Protocol::X86_32, Protocol::X86_64] {
            let slots = ProtocolSlots::new(SharedRing::allocate(0).unwrap(), protocol);
            for (i, raw) in (0u32..).zip(samples()) {
                let idx = (u32::MAX - 3).wrapping_add(i);
                slots.write_request(idx, &raw);
                let mut copy = RawRequest::Other {
                    operation: 0,
                    id: 0,
                };
                slots.read_request(idx, &mut copy);
                assert_eq!(copy, raw, "{protocol}");
            }
        }
    }

    #[test]
    fn segments_past_nr_segments_are_not_read() {
        for protocol in [Protocol::X86_32, Protocol::X86_64] {
            let mem = SharedRing::allocate(0).unwrap();
            let slots = ProtocolSlots::new(mem.clone(), protocol);
            let RawRequest::Direct(mut d) = samples()[0] else {
                unreachable!()
            };
            slots.write_request(0, &RawRequest::Direct(d));
            mem.write_bytes(HEADER_SIZE + 1, &[2]).unwrap();
            d.nr_segments = 2;
            d.seg[2..].fill(Segment::default());
            let mut copy = RawRequest::Other {
                operation: 0,
                id: 0,
            };
            slots.read_request(0, &mut copy);
            assert_eq!(copy, RawRequest::Direct(d), "{protocol}");
        }
    }
}
