//! A front end that misbehaves on purpose, to test a back end against a hostile guest: any
//! request in the ring (any operation, segment count, sector, grant ref), `req_prod` set to
//! anything, notifications at will, pages re-granted while a request uses them, responses
//! read as they come, unchecked.
//!
//! It works on one queue of a connected [`Blkfront`] through the same ring, pages and event
//! channel. Its requests have no shadow: their responses must be read here, with
//! [`Raw::responses`] or [`Raw::wait_responses`]; the ordinary path would take them for bad
//! responses and disable the device.

use std::time::Instant;

use blkif::{RawRequest, Response, RingIndex};
use tokenback::platform::{DomId, EventChannel, GrantRef};

use super::error::{Error, ResponseError};
use super::Blkfront;

/// A data page of the guest, granted to the back end writable, for raw requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPage {
    /// The guest frame.
    pub frame: u32,
    /// The grant ref it is granted through.
    pub gref: GrantRef,
}

/// One queue of a front end, driven by hand (see the module doc).
pub struct Raw<'a> {
    front: &'a mut Blkfront,
    queue: usize,
}

impl Blkfront {
    /// Drives queue `queue` by hand.
    pub fn raw(&mut self, queue: usize) -> Result<Raw<'_>, Error> {
        if queue >= self.queues.len() {
            return Err(Error::NoSuchQueue(queue));
        }
        Ok(Raw { front: self, queue })
    }
}

impl Raw<'_> {
    /// RING_SIZE.
    pub fn ring_size(&self) -> u32 {
        self.front.ring_size() as u32
    }

    /// Writes `request` as given into the next free slot, unpublished.
    pub fn push(&mut self, request: &RawRequest) -> Result<(), Error> {
        let (ring, _) = self.front.queues[self.queue].raw_parts();
        ring.push_request(request)
            .map_err(|_| Error::QueueFull(self.queue))
    }

    /// Publishes what was pushed and notifies the back end if the ring says so.
    pub fn publish(&mut self) -> Result<(), Error> {
        let (ring, port) = self.front.queues[self.queue].raw_parts();
        if ring.push_requests_and_check_notify() {
            self.front.evtchn.notify(port)?;
        }
        Ok(())
    }

    /// Notifies the back end, whatever the ring says.
    pub fn notify(&mut self) -> Result<(), Error> {
        let (_, port) = self.front.queues[self.queue].raw_parts();
        self.front.evtchn.notify(port)?;
        Ok(())
    }

    /// Stores `value` as the shared `req_prod`, as a guest may: past the ring's end, behind
    /// the back end, anything. Nothing is written into the slots.
    pub fn set_req_prod(&mut self, value: u32) {
        let (ring, _) = self.front.queues[self.queue].raw_parts();
        ring.memory()
            .header(RingIndex::ReqProd)
            .store(value, std::sync::atomic::Ordering::Release);
    }

    /// The shared `req_prod` and `rsp_prod`.
    pub fn indices(&mut self) -> (u32, u32) {
        let (ring, _) = self.front.queues[self.queue].raw_parts();
        let load = |which| {
            ring.memory()
                .header(which)
                .load(std::sync::atomic::Ordering::Acquire)
        };
        (load(RingIndex::ReqProd), load(RingIndex::RspProd))
    }

    /// The responses published so far, as they are, and `rsp_event` re-armed.
    pub fn responses(&mut self) -> Result<Vec<Response>, Error> {
        let queue = self.queue;
        let (ring, _) = self.front.queues[queue].raw_parts();
        let mut out = Vec::new();
        loop {
            let responses = ring
                .responses()
                .map_err(|source| ResponseError::Overflow { queue, source })?;
            out.extend(responses);
            if !ring.final_check_for_responses() {
                return Ok(out);
            }
        }
    }

    /// Waits until `count` responses came (at most the front end's timeout) and returns them.
    pub fn wait_responses(&mut self, count: usize) -> Result<Vec<Response>, Error> {
        let deadline = Instant::now() + self.front.timeout;
        let mut out = Vec::new();
        loop {
            out.extend(self.responses()?);
            if out.len() >= count {
                return Ok(out);
            }
            self.front.wait_for_event(deadline)?;
        }
    }

    /// A fresh data page granted to the back end, for this side's requests only.
    pub fn page(&mut self) -> Result<RawPage, Error> {
        let page = self.front.pages.take()?;
        Ok(RawPage {
            frame: page.frame,
            gref: page.gref,
        })
    }

    /// Copies `data` into a page at `offset`.
    pub fn write_page(&self, frame: u32, offset: usize, data: &[u8]) -> Result<(), Error> {
        self.front.pages.write(frame, offset, data)
    }

    /// Copies bytes of a page at `offset` into `buf`.
    pub fn read_page(&self, frame: u32, offset: usize, buf: &mut [u8]) -> Result<(), Error> {
        self.front.pages.read(frame, offset, buf)
    }

    /// Ends access through `gref` (refused while the back end copies or maps the page).
    pub fn end_access(&self, gref: GrantRef) -> Result<(), Error> {
        let guest = self.front.pages.guest();
        guest.end_access(gref).map_err(Error::EndAccess)
    }

    /// Ends access to this queue's ring pages: refused while the back end maps them.
    pub fn end_ring(&self) -> Result<(), Error> {
        let queue = &self.front.queues[self.queue];
        self.front.pages.end_ring(queue.ring_refs())
    }

    /// Ends access through `gref` and grants it again, writable, to `to` for `frame`: what a
    /// guest may do while a request naming `gref` is in flight.
    pub fn regrant(&self, gref: GrantRef, to: DomId, frame: u32) -> Result<(), Error> {
        self.end_access(gref)?;
        let guest = self.front.pages.guest();
        guest.grant(gref, to, frame, false).map_err(Error::Sim)
    }
}
