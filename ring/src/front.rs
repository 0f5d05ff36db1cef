//! The front end of a shared ring, as a guest's blkfront drives it: produce requests in any
//! protocol, notify as `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY` decides, consume responses and
//! re-arm `rsp_event` as Linux blkfront does. Used by simulated guests and tests.
//!
//! Orderings mirror the back end's (see `back`): `req_prod` stored with `Release` after the
//! slots, `rsp_prod` loaded with `Acquire` before the slots, and a `SeqCst` fence between
//! publishing an index and reading the peer's event index.

use std::sync::atomic::{fence, Ordering};

use thiserror::Error;

use crate::abi::Protocol;
use crate::raw::RawRequest;
use crate::response::Response;
use crate::shared::{RingIndex, SharedRing, HEADER_SIZE};
use crate::slots::ProtocolSlots;

/// Why the front end cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrontError {
    /// Every slot holds a request or an unconsumed response.
    #[error("ring full: {0} requests outstanding")]
    RingFull(u32),
    /// The back end's `rsp_prod` claims more responses than requests were made (Linux
    /// blkfront's RING_RESPONSE_PROD_OVERFLOW, tightened to the requests outstanding).
    #[error("rsp_prod {rsp_prod} beyond the {outstanding} requests outstanding from {rsp_cons}")]
    ResponseOverflow {
        /// The value read.
        rsp_prod: u32,
        /// Our next response index.
        rsp_cons: u32,
        /// Requests produced and not yet answered.
        outstanding: u32,
    },
}

/// A front end that owns (initialised) the shared ring.
#[derive(Debug)]
pub struct FrontRing {
    slots: ProtocolSlots,
    size: u32,
    req_prod_pvt: u32,
    rsp_cons: u32,
}

impl FrontRing {
    /// `SHARED_RING_INIT` + `FRONT_RING_INIT`: indices 0, event indices 1, header padding zero.
    pub fn init(mem: SharedRing, protocol: Protocol) -> Self {
        Self::init_at(mem, protocol, 0)
    }

    /// As [`init`](Self::init), but with every index starting at `start` (event indices at
    /// `start + 1`): lets tests run the free-running indices past `u32::MAX`.
    pub fn init_at(mem: SharedRing, protocol: Protocol, start: u32) -> Self {
        // `pvt` and `__pad`: 48 bytes inside the first page, always in bounds.
        let _ = mem.write_bytes(16, &[0; HEADER_SIZE - 16]);
        mem.header(RingIndex::ReqProd)
            .store(start, Ordering::Relaxed);
        mem.header(RingIndex::RspProd)
            .store(start, Ordering::Relaxed);
        mem.header(RingIndex::ReqEvent)
            .store(start.wrapping_add(1), Ordering::Relaxed);
        mem.header(RingIndex::RspEvent)
            .store(start.wrapping_add(1), Ordering::Release);
        let slots = ProtocolSlots::new(mem, protocol);
        FrontRing {
            size: slots.size(),
            slots,
            req_prod_pvt: start,
            rsp_cons: start,
        }
    }

    /// RING_SIZE.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The shared memory, for a front end that breaks the rules on purpose (tests of a back
    /// end against a hostile guest): it can overwrite any index or slot through it.
    pub fn memory(&self) -> &SharedRing {
        self.slots.mem()
    }

    /// Requests produced (published or not) whose responses we have not consumed.
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Slots free for new requests (`RING_FREE_REQUESTS`).
    pub fn free_requests(&self) -> u32 {
        self.size - self.outstanding()
    }

    /// Writes `request` into the next slot, every field of its union member as given (a
    /// direct request's eleven `seg` entries, used or not, as Linux copies its shadow
    /// request); the back end sees it after
    /// [`push_requests_and_check_notify`](Self::push_requests_and_check_notify).
    pub fn push_request(&mut self, request: &RawRequest) -> Result<(), FrontError> {
        if self.free_requests() == 0 {
            return Err(FrontError::RingFull(self.outstanding()));
        }
        self.slots.write_request(self.req_prod_pvt, request);
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: publishes the requests written so far and
    /// returns whether the back end asked to be notified of them.
    pub fn push_requests_and_check_notify(&mut self) -> bool {
        self.slots.mem().publish_and_check_notify(
            RingIndex::ReqProd,
            RingIndex::ReqEvent,
            self.req_prod_pvt,
        )
    }

    /// The responses published so far and not yet consumed, each copied out once.
    pub fn responses(&mut self) -> Result<Responses<'_>, FrontError> {
        // Acquire: the response slots written before rsp_prod are visible (ring.h's rmb).
        let rsp_prod = self
            .slots
            .mem()
            .header(RingIndex::RspProd)
            .load(Ordering::Acquire);
        if rsp_prod.wrapping_sub(self.rsp_cons) > self.outstanding() {
            return Err(FrontError::ResponseOverflow {
                rsp_prod,
                rsp_cons: self.rsp_cons,
                outstanding: self.outstanding(),
            });
        }
        Ok(Responses {
            ring: self,
            end: rsp_prod,
        })
    }

    /// What Linux blkfront does after consuming responses: with requests still outstanding,
    /// `RING_FINAL_CHECK_FOR_RESPONSES` (set `rsp_event = rsp_cons + 1`, full barrier, look
    /// again); with none, just `rsp_event = rsp_cons + 1`. Returns whether more responses wait.
    pub fn final_check_for_responses(&mut self) -> bool {
        let mem = self.slots.mem();
        let event = mem.header(RingIndex::RspEvent);
        if self.outstanding() == 0 {
            event.store(self.rsp_cons.wrapping_add(1), Ordering::Relaxed);
            return false;
        }
        if self.unconsumed_responses() > 0 {
            return true;
        }
        event.store(self.rsp_cons.wrapping_add(1), Ordering::Relaxed);
        // rsp_event before re-reading rsp_prod (ring.h's mb).
        fence(Ordering::SeqCst);
        self.unconsumed_responses() > 0
    }

    fn unconsumed_responses(&self) -> u32 {
        let rsp_prod = self
            .slots
            .mem()
            .header(RingIndex::RspProd)
            .load(Ordering::Acquire);
        rsp_prod.wrapping_sub(self.rsp_cons)
    }
}

/// Iterator over newly published responses (see [`FrontRing::responses`]).
#[derive(Debug)]
pub struct Responses<'a> {
    ring: &'a mut FrontRing,
    end: u32,
}

impl Iterator for Responses<'_> {
    type Item = Response;

    fn next(&mut self) -> Option<Response> {
        let ring = &mut *self.ring;
        if ring.rsp_cons == self.end {
            return None;
        }
        let response = ring.slots.read_response(ring.rsp_cons);
        ring.rsp_cons = ring.rsp_cons.wrapping_add(1);
        Some(response)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end.wrapping_sub(self.ring.rsp_cons) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Responses<'_> {}
