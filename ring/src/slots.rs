//! Typed access to the ring's slots in one protocol's layout: each request or response is
//! copied in or out with one volatile access of the whole value.

use core::marker::PhantomData;

use crate::abi::{x86_32, x86_64, Layout, Protocol, SlotLayout};
use crate::raw::RawRequest;
use crate::response::Response;
use crate::shared::{ring_size, SharedRing, HEADER_SIZE};

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

    fn read_request(&self, idx: u32) -> L::Request {
        let ptr = self.slot_ptr(idx).cast::<L::Request>();
        // SAFETY: `slot_ptr` is in bounds for SLOT_SIZE = size_of::<Request>() bytes and
        // aligned (slot starts are multiples of the layout's alignment, checked at compile time
        // in abi); the memory is live (SharedRing contract); every bit pattern is a valid
        // `Request` (FromBytes). Volatile: the guest may change it concurrently, so we copy once.
        unsafe { ptr.read_volatile() }
    }

    fn write_request(&self, idx: u32, value: &L::Request) {
        let ptr = self.slot_ptr(idx).cast::<L::Request>();
        // SAFETY: as in `read_request`; writing plain bytes (IntoBytes) into shared memory.
        unsafe { ptr.write_volatile(*value) }
    }

    fn read_response(&self, idx: u32) -> L::Response {
        let ptr = self.slot_ptr(idx).cast::<L::Response>();
        // SAFETY: a response is no larger than a slot and aligned at its start (compile-time
        // checks in abi); live memory; any bit pattern is valid (FromBytes).
        unsafe { ptr.read_volatile() }
    }

    fn write_response(&self, idx: u32, value: &L::Response) {
        let ptr = self.slot_ptr(idx).cast::<L::Response>();
        // SAFETY: as in `read_response`; writing plain bytes (IntoBytes).
        unsafe { ptr.write_volatile(*value) }
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

    /// Copies the request slot once and converts the copy.
    pub(crate) fn read_request(&self, idx: u32) -> RawRequest {
        match self {
            ProtocolSlots::X86_32(s) => x86_32::Abi::decode(&s.read_request(idx)),
            ProtocolSlots::X86_64(s) => x86_64::Abi::decode(&s.read_request(idx)),
        }
    }

    pub(crate) fn write_request(&self, idx: u32, raw: &RawRequest) {
        match self {
            ProtocolSlots::X86_32(s) => s.write_request(idx, &x86_32::Abi::encode(raw)),
            ProtocolSlots::X86_64(s) => s.write_request(idx, &x86_64::Abi::encode(raw)),
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
