//! An in-process ring with a front end and a back end attached, for tests here and in the
//! daemon. The front and back ends are the real ones; [`MockRing`] adds a third view of the
//! memory to corrupt indices and slots the way a hostile guest could.

use std::sync::atomic::Ordering;

use crate::abi::Protocol;
use crate::back::{BackRing, RingError};
use crate::front::FrontRing;
use crate::request::Limits;
use crate::shared::{ring_size, RingIndex, SharedRing, SharedRingError, HEADER_SIZE};

/// Errors setting up a mock ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MockError {
    /// The memory could not be allocated as a ring.
    #[error(transparent)]
    Memory(#[from] SharedRingError),
    /// The back end refused the fresh ring.
    #[error(transparent)]
    Ring(#[from] RingError),
}

/// A front end and a back end over one owned ring.
#[derive(Debug)]
pub struct MockRing {
    /// The guest's side.
    pub front: FrontRing,
    /// The side under test.
    pub back: BackRing,
    mem: SharedRing,
    protocol: Protocol,
}

impl MockRing {
    /// A fresh ring of 2^order pages in `protocol`, back end validating with `limits`.
    pub fn new(order: u8, protocol: Protocol, limits: Limits) -> Result<Self, MockError> {
        Self::starting_at(order, protocol, limits, 0)
    }

    /// As [`new`](Self::new) with every index starting at `start` (to cross `u32::MAX`).
    pub fn starting_at(
        order: u8,
        protocol: Protocol,
        limits: Limits,
        start: u32,
    ) -> Result<Self, MockError> {
        let mem = SharedRing::allocate(order)?;
        let front = FrontRing::init_at(mem.clone(), protocol, start);
        let back = BackRing::attach(mem.clone(), protocol, limits)?;
        Ok(MockRing {
            front,
            back,
            mem,
            protocol,
        })
    }

    /// The shared memory, for inspection and corruption.
    pub fn memory(&self) -> &SharedRing {
        &self.mem
    }

    /// Reads a header index.
    pub fn index(&self, which: RingIndex) -> u32 {
        self.mem.header(which).load(Ordering::SeqCst)
    }

    /// Overwrites a header index, as a guest (or a bug) could.
    pub fn set_index(&self, which: RingIndex, value: u32) {
        self.mem.header(which).store(value, Ordering::SeqCst);
    }

    /// Byte offset of the slot of free-running index `idx`.
    pub fn slot_offset(&self, idx: u32) -> usize {
        let size = ring_size(self.mem.order(), self.protocol.slot_size());
        HEADER_SIZE + (idx & (size - 1)) as usize * self.protocol.slot_size()
    }

    /// Overwrites the start of slot `idx` with `bytes` (at most a slot).
    pub fn write_slot(&self, idx: u32, bytes: &[u8]) -> Result<(), SharedRingError> {
        let len = bytes.len().min(self.protocol.slot_size());
        self.mem.write_bytes(self.slot_offset(idx), &bytes[..len])
    }

    /// Copies slot `idx` out.
    pub fn read_slot(&self, idx: u32) -> Vec<u8> {
        let mut out = vec![0; self.protocol.slot_size()];
        // A slot always lies inside the ring.
        let _ = self.mem.read_bytes(self.slot_offset(idx), &mut out);
        out
    }
}
