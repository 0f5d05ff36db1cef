//! The back end of a shared ring: take requests (copied once, then validated), push responses,
//! and decide notifications exactly as ring.h's macros do.
//!
//! Index orderings, mapped from ring.h's barriers:
//! - `req_prod` is loaded with `Acquire` (ring.h: read the index, then `xen_rmb`), so the slot
//!   contents the front end wrote before its `wmb` + index store are visible to our copy.
//! - `rsp_prod` is stored with `Release` (ring.h: `xen_wmb` before the store), so the guest
//!   never sees the index before the response bytes.
//! - A `SeqCst` fence sits between publishing an index and reading the peer's event index
//!   (ring.h: `xen_mb`), in both the notify check and the final re-check: store→load order is
//!   the one x86 does not give for free, and without it a wake-up can be lost.
//! - Our own indices (`rsp_prod`, `req_event`) are only written by us; loading them back needs
//!   no ordering.

use std::sync::atomic::{fence, Ordering};

use thiserror::Error;

use crate::abi::Protocol;
use crate::raw::RawRequest;
use crate::request::{Limits, RejectedRequest, Request};
use crate::response::Response;
use crate::shared::{RingIndex, SharedRing};
use crate::slots::ProtocolSlots;

/// Why the ring cannot be used (the VBD disconnects) or a call was out of turn.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RingError {
    /// The front end's `req_prod` claims more requests than the ring can hold, or went
    /// backwards: a broken or malicious front end. Nothing was read.
    #[error("req_prod {req_prod} outside {req_cons}..={limit} (ring of {size}): front end broken")]
    RequestOverflow {
        /// The value read from the shared header.
        req_prod: u32,
        /// Our next request index.
        req_cons: u32,
        /// The highest acceptable value (`rsp_prod_pvt + size`).
        limit: u32,
        /// RING_SIZE.
        size: u32,
    },
    /// The ring was found broken before; it stays unusable.
    #[error("ring disconnected after an earlier overflow")]
    Broken,
    /// A response was pushed but every taken request has been answered (a caller bug: the
    /// slot would overwrite a request not yet read).
    #[error("no taken request awaits a response")]
    NoRequestOutstanding,
    /// A saved [`RingState`] that cannot belong to this ring.
    #[error("saved ring state {state:?} does not fit the ring (rsp_prod {rsp_prod}, size {size})")]
    InvalidState {
        /// The rejected state.
        state: RingState,
        /// The shared `rsp_prod`.
        rsp_prod: u32,
        /// RING_SIZE.
        size: u32,
    },
}

impl RingError {
    /// Whether the VBD must disconnect (versus a bug in the caller's bookkeeping).
    pub fn disconnects(&self) -> bool {
        match self {
            RingError::RequestOverflow { .. } | RingError::Broken => true,
            RingError::InvalidState { .. } => true,
            RingError::NoRequestOutstanding => false,
        }
    }
}

/// The back end's private indices, to save across a restart. Untrusted when read back: it
/// becomes a ring again only through [`BackRing::restore`], which checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RingState {
    /// Next request slot to read.
    pub req_cons: u32,
    /// Next response slot to write.
    pub rsp_prod_pvt: u32,
}

/// A back end attached to a shared ring.
#[derive(Debug)]
pub struct BackRing {
    slots: ProtocolSlots,
    limits: Limits,
    size: u32,
    req_cons: u32,
    rsp_prod_pvt: u32,
    broken: bool,
    /// The private copy of the request being taken; the only copy validation reads.
    copy: RawRequest,
}

impl BackRing {
    /// Attaches at the shared `rsp_prod` (ring.h's `BACK_RING_ATTACH`, as Linux blkback does),
    /// refusing a ring whose `req_prod` is already more than a ring ahead.
    pub fn attach(mem: SharedRing, protocol: Protocol, limits: Limits) -> Result<Self, RingError> {
        let rsp_prod = mem.header(RingIndex::RspProd).load(Ordering::Acquire);
        let state = RingState {
            req_cons: rsp_prod,
            rsp_prod_pvt: rsp_prod,
        };
        let mut ring = Self::restore(mem, protocol, limits, state)?;
        ring.published_requests()?;
        Ok(ring)
    }

    /// Re-attaches with indices saved earlier, after checking that they fit the shared ring:
    /// at most a ring of requests taken and unanswered, and responses not behind `rsp_prod`.
    pub fn restore(
        mem: SharedRing,
        protocol: Protocol,
        limits: Limits,
        state: RingState,
    ) -> Result<Self, RingError> {
        let slots = ProtocolSlots::new(mem, protocol);
        let size = slots.size();
        let rsp_prod = slots
            .mem()
            .header(RingIndex::RspProd)
            .load(Ordering::Acquire);
        let unanswered = state.req_cons.wrapping_sub(state.rsp_prod_pvt);
        let unpublished = state.rsp_prod_pvt.wrapping_sub(rsp_prod);
        if unanswered > size || unpublished > size {
            return Err(RingError::InvalidState {
                state,
                rsp_prod,
                size,
            });
        }
        Ok(BackRing {
            slots,
            limits,
            size,
            req_cons: state.req_cons,
            rsp_prod_pvt: state.rsp_prod_pvt,
            broken: false,
            copy: RawRequest::Other {
                operation: 0,
                id: 0,
            },
        })
    }

    /// The indices to save.
    pub fn state(&self) -> RingState {
        RingState {
            req_cons: self.req_cons,
            rsp_prod_pvt: self.rsp_prod_pvt,
        }
    }

    /// RING_SIZE.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The limits requests are validated against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Requests taken and not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// The requests published so far and not yet taken, at most a ring's worth per call.
    /// Each is copied out of its slot once as the iterator reaches it, and `req_cons` moves
    /// past it before the caller sees it. A front end that published more than the ring
    /// holds breaks the ring for good.
    pub fn requests(&mut self) -> Result<Requests<'_>, RingError> {
        let end = self.published_requests()?;
        Ok(Requests { ring: self, end })
    }

    /// Writes a response into the next response slot; it becomes visible to the front end at
    /// the next [`push_responses_and_check_notify`](Self::push_responses_and_check_notify).
    pub fn push_response(&mut self, response: &Response) -> Result<(), RingError> {
        if self.broken {
            return Err(RingError::Broken);
        }
        if self.outstanding() == 0 {
            return Err(RingError::NoRequestOutstanding);
        }
        self.slots.write_response(self.rsp_prod_pvt, response);
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`: publishes the responses written so far and
    /// returns whether the front end asked to be notified of them.
    pub fn push_responses_and_check_notify(&mut self) -> bool {
        self.slots.mem().publish_and_check_notify(
            RingIndex::RspProd,
            RingIndex::RspEvent,
            self.rsp_prod_pvt,
        )
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`: whether requests are waiting; if none, first asks the
    /// front end to notify at the next one (`req_event = req_cons + 1`) and checks again for
    /// one that raced with that.
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        if self.broken {
            return Err(RingError::Broken);
        }
        if self.unconsumed() > 0 {
            return Ok(true);
        }
        let mem = self.slots.mem();
        mem.header(RingIndex::ReqEvent)
            .store(self.req_cons.wrapping_add(1), Ordering::Relaxed);
        // req_event before re-reading req_prod (ring.h's mb).
        fence(Ordering::SeqCst);
        Ok(self.unconsumed() > 0)
    }

    /// `RING_HAS_UNCONSUMED_REQUESTS`; an out-of-range `req_prod` counts as work, so that the
    /// caller goes on to [`requests`](Self::requests), which reports it.
    fn unconsumed(&self) -> u32 {
        let req_prod = self
            .slots
            .mem()
            .header(RingIndex::ReqProd)
            .load(Ordering::Acquire);
        let published = req_prod.wrapping_sub(self.req_cons);
        let free = self.size - self.outstanding();
        published.min(free)
    }

    /// Reads `req_prod` once and returns the index to consume up to (exclusive), or breaks
    /// the ring if it lies outside `req_cons..=rsp_prod_pvt + size`.
    fn published_requests(&mut self) -> Result<u32, RingError> {
        if self.broken {
            return Err(RingError::Broken);
        }
        // Acquire: the slots written before req_prod are visible (ring.h's rmb).
        let req_prod = self
            .slots
            .mem()
            .header(RingIndex::ReqProd)
            .load(Ordering::Acquire);
        // Both differences from rsp_prod_pvt are in 0..=size when the front end is sane:
        // RING_REQUEST_PROD_OVERFLOW, plus a req_prod that moved backwards past req_cons.
        let ahead = req_prod.wrapping_sub(self.rsp_prod_pvt);
        if ahead > self.size || ahead < self.outstanding() {
            self.broken = true;
            return Err(RingError::RequestOverflow {
                req_prod,
                req_cons: self.req_cons,
                limit: self.rsp_prod_pvt.wrapping_add(self.size),
                size: self.size,
            });
        }
        Ok(req_prod)
    }
}

/// Iterator over newly published requests (see [`BackRing::requests`]). A back end that
/// completes requests at once (errors, a null device) can answer them while iterating.
#[derive(Debug)]
pub struct Requests<'a> {
    ring: &'a mut BackRing,
    end: u32,
}

impl Requests<'_> {
    /// As `next`, but validates the request straight into `out` (see
    /// [`Request::validate_into`]): `Some(Ok(()))` when `out` now holds it. The faster way
    /// to take requests into storage the caller keeps.
    pub fn next_into(&mut self, out: &mut Request) -> Option<Result<(), RejectedRequest>> {
        let ring = &mut *self.ring;
        if ring.req_cons == self.end {
            return None;
        }
        ring.slots.read_request(ring.req_cons, &mut ring.copy);
        ring.req_cons = ring.req_cons.wrapping_add(1);
        Some(Request::validate_into(&ring.copy, &ring.limits, out))
    }

    /// [`BackRing::push_response`] without ending the iteration.
    pub fn push_response(&mut self, response: &Response) -> Result<(), RingError> {
        self.ring.push_response(response)
    }
}

impl Iterator for Requests<'_> {
    type Item = Result<Request, RejectedRequest>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut request = Request::PLACEHOLDER;
        let taken = self.next_into(&mut request)?;
        Some(taken.map(|()| request))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end.wrapping_sub(self.ring.req_cons) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Requests<'_> {}
