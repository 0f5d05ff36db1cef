//! A simulated guest's blkfront: the front end of a Xen virtual block device, behaving as
//! Linux's xen-blkfront does, over the simulated host's guest memory, grant table, event
//! channels and xenstore connection.
//!
//! # Behaviour
//!
//! - [`Blkfront::connect`] requires our own `state` to be Initialising (else
//!   [`Error::NotInitialising`]: another front end has used the device), waits for the back
//!   end's InitWait (or Connected), reads `max-ring-page-order` and `multi-queue-max-queues`,
//!   allocates 2^order contiguous ring pages per queue (from the guest's
//!   [`GuestAllocator`], shared by its front ends through [`Options::allocator`]), grants them, allocates an unbound
//!   event-channel port per queue, writes the ring keys in one transaction and goes
//!   Initialised; when the back end is Connected it reads the disk's keys ([`DiskInfo`]) and
//!   goes Connected.
//! - Reads and writes copy the data through granted pages, one segment per page (see
//!   Limits for the layouts):
//!   inline up to 11 segments, in granted indirect pages beyond that when the back end offers
//!   `feature-max-indirect-segments` (capped by [`Options::max_indirect_segments`]). Pages
//!   are reused; with persistent grants the back end may keep them mapped.
//! - Fields a request does not use (a discard's `handle`, `seg` entries past `nr_segments`,
//!   indirect page refs past the pages in use) carry junk, as they carry stale data from
//!   Linux's reused shadow requests: a back end that reads them fails the tests.
//! - [`Blkfront::submit`] publishes each request at once; [`Blkfront::stage`] and
//!   [`Blkfront::publish`] batch them, with one notification decision per queue per batch.
//!   [`Blkfront::complete`] collects completions, in any order; `read`, `write`,
//!   `write_fua`, `flush` and `discard` are the blocking forms.
//! - Every response is checked as Linux checks it (id below the ring size and outstanding,
//!   operation as sent); a bad one disables the device for good ([`Error::Disabled`]).
//!   A failed flush or barrier turns flushes and FUA off and completes as success, unless
//!   it carried data and failed with an error; a discard answered EOPNOTSUPP turns discard
//!   off; as in Linux.
//! - Back-end `state` changes are handled by [`Blkfront::handle_backend_events`], which
//!   every publish also runs (once per `submit` or batch): Connected again is a resize
//!   (re-read `sectors`; ignored when that key is missing or not a number); Closing or
//!   Closed makes the front end go Closed and refuse new requests. When the toolstack has
//!   removed our `state` node, switching state does nothing, as in Linux.
//! - [`Blkfront::raw`] drives a queue by hand, breaking the rules on purpose ([`Raw`]): for
//!   tests of a back end against a hostile guest.
//!
//! # Limits
//!
//! One operation is one ring request (no splitting; a FUA write without FUA on offer is a
//! write and a flush): a transfer may touch at most [`DiskInfo::max_segments`] pages.
//! [`Op::Read`] and [`Op::Write`] put data in pages as the page cache does (sector `s` at
//! byte `(s % 8) * 512`); [`Op::ReadSpans`] and [`Op::WriteSpans`] take any layout of whole
//! sectors, one [`Span`] per page, as the segments of a Linux bio may be.
//! No suspend/resume.

mod allocator;
mod completion;
mod connect;
mod disk;
mod error;
mod layout;
mod pages;
mod queue;
mod raw;
mod request;
mod stale;
mod xenbus;

pub use allocator::GuestAllocator;
pub use completion::{Completion, Tag};
pub use connect::Options;
pub use disk::{DiscardInfo, DiskInfo, FlushMode};
pub use error::{Error, ResponseError};
pub use layout::Span;
pub use raw::{Raw, RawPage};
pub use request::Op;
pub use xenbus::XenbusState;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use blkif::abi::{BLKIF_OP_FLUSH_DISKCACHE, BLKIF_RSP_OKAY};
use tokenback::platform::sim::SimEventChannel;
use tokenback::platform::{EventChannel, Port};

use pages::GuestPages;
use queue::Queue;
use xenbus::Xenbus;

/// A connected front end.
pub struct Blkfront {
    // Queues go before `pages`, `evtchn`: dropped first.
    queues: Vec<Queue>,
    pages: GuestPages,
    evtchn: SimEventChannel,
    xenbus: Xenbus,
    disk: DiskInfo,
    handle: u16,
    timeout: Duration,
    next_tag: u64,
    next_queue: usize,
    done: VecDeque<Completion>,
    /// FUA writes that succeeded and now need their flush: (queue, tag).
    post_flushes: Vec<(usize, Tag)>,
    disabled: Option<ResponseError>,
    closed: bool,
}

impl Blkfront {
    /// The disk as last described by the back end.
    pub fn disk(&self) -> &DiskInfo {
        &self.disk
    }

    /// Number of queues (rings) negotiated.
    pub fn queues(&self) -> usize {
        self.queues.len()
    }

    /// Ring slots per queue (RING_SIZE).
    pub fn ring_size(&self) -> usize {
        self.queues.first().map_or(0, |q| q.ring_size())
    }

    /// The frontend directory in xenstore.
    pub fn frontend_path(&self) -> &str {
        self.xenbus.frontend()
    }

    /// Whether the front end has gone Closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Pages the back end keeps mapped between requests (persistent grants).
    pub fn persistent_pages(&self) -> usize {
        self.pages.persistent_pages()
    }

    /// Pages the back end maps at this moment; with nothing in flight, its persistent grants.
    pub fn backend_mapped_pages(&self) -> Result<usize, Error> {
        self.pages.backend_mapped()
    }

    /// Ends access to every page kept granted for persistent grants (once the back end has
    /// disconnected, as Linux's `blkif_free`); returns how many. Fails on a page the back
    /// end still maps, which stays granted.
    pub fn end_persistent_grants(&mut self) -> Result<usize, Error> {
        self.pages.end_persistent()
    }

    /// Operations submitted and not yet taken back with [`complete`](Self::complete).
    pub fn in_flight(&self) -> usize {
        self.queues.iter().map(Queue::in_flight).sum::<usize>() + self.done.len()
    }

    /// Notifications sent to the back end for published requests: the ring asks for one only
    /// when the back end re-armed `req_event` and has not seen the requests yet.
    pub fn notifications(&self) -> u64 {
        self.queues.iter().map(Queue::notified).sum()
    }

    /// Submits `op` on the next queue (round robin) that has a free slot.
    pub fn submit(&mut self, op: Op) -> Result<Tag, Error> {
        let queue = self.next_free_queue()?;
        self.submit_to(queue, op)
    }

    /// Submits `op` on queue `queue`. A flush the back end does not take completes at once.
    pub fn submit_to(&mut self, queue: usize, op: Op) -> Result<Tag, Error> {
        let tag = self.stage_to(queue, op)?;
        self.publish()?;
        Ok(tag)
    }

    /// Writes `op` into the next queue's ring (round robin) without publishing it: a batch
    /// of staged operations goes out with one [`publish`](Self::publish) and at most one
    /// notification per queue. [`complete`](Self::complete) publishes first.
    pub fn stage(&mut self, op: Op) -> Result<Tag, Error> {
        let queue = self.next_free_queue()?;
        self.stage_to(queue, op)
    }

    /// Publishes every staged request and notifies the back end where the ring says so,
    /// after handling the back end's state changes (once per batch, not per request).
    pub fn publish(&mut self) -> Result<(), Error> {
        self.handle_backend_events(Duration::ZERO)?;
        for queue in &mut self.queues {
            queue.publish(&mut self.evtchn)?;
        }
        Ok(())
    }

    fn next_free_queue(&mut self) -> Result<usize, Error> {
        let n = self.queues.len();
        let queue = (0..n)
            .map(|i| (self.next_queue + i) % n)
            .find(|&q| self.queues[q].has_room())
            .ok_or(Error::QueueFull(self.next_queue))?;
        self.next_queue = (queue + 1) % n;
        Ok(queue)
    }

    fn stage_to(&mut self, queue: usize, op: Op) -> Result<Tag, Error> {
        self.check_usable()?;
        let q = self.queues.get(queue).ok_or(Error::NoSuchQueue(queue))?;
        if !q.has_room() {
            return Err(Error::QueueFull(queue));
        }
        let tag = Tag(self.next_tag);
        self.next_tag += 1;
        match request::prepare(&op, tag, self.handle, &self.disk, &mut self.pages)? {
            Some(prepared) => self.queues[queue].push(prepared.shadow, prepared.request)?,
            None => self.done.push_back(Completion {
                tag,
                operation: BLKIF_OP_FLUSH_DISKCACHE,
                status: BLKIF_RSP_OKAY,
                data: None,
            }),
        }
        Ok(tag)
    }

    /// Waits until at least one operation has completed (at most the timeout) and returns
    /// every completion available; empty when nothing is in flight.
    pub fn complete(&mut self) -> Result<Vec<Completion>, Error> {
        self.publish()?;
        let deadline = Instant::now() + self.timeout;
        loop {
            self.reap()?;
            if !self.done.is_empty() || self.in_flight() == 0 {
                return Ok(self.done.drain(..).collect());
            }
            self.wait_for_event(deadline)?;
        }
    }

    /// Reads `buf.len()` bytes from `sector`.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), Error> {
        let tag = self.submit(Op::Read {
            sector,
            len: buf.len(),
        })?;
        let data = self.wait_for(tag)?;
        // `data` is exactly as long as the request (one page's share per segment).
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Ok(())
    }

    /// Writes `data` at `sector`.
    pub fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), Error> {
        let tag = self.submit(Op::Write {
            sector,
            data: data.to_vec(),
        })?;
        self.wait_for(tag).map(drop)
    }

    /// Writes `data` at `sector`, durable once this returns ([`Op::WriteFua`]).
    pub fn write_fua(&mut self, sector: u64, data: &[u8]) -> Result<(), Error> {
        let tag = self.submit(Op::WriteFua {
            sector,
            data: data.to_vec(),
        })?;
        self.wait_for(tag).map(drop)
    }

    /// Flushes the back end's write cache.
    pub fn flush(&mut self) -> Result<(), Error> {
        let tag = self.submit(Op::Flush)?;
        self.wait_for(tag).map(drop)
    }

    /// Discards `count` sectors from `sector`.
    pub fn discard(&mut self, sector: u64, count: u64, secure: bool) -> Result<(), Error> {
        let tag = self.submit(Op::Discard {
            sector,
            count,
            secure,
        })?;
        self.wait_for(tag).map(drop)
    }

    /// Waits for `tag`, keeping other completions for [`complete`](Self::complete).
    pub fn wait_for(&mut self, tag: Tag) -> Result<Vec<u8>, Error> {
        self.publish()?;
        let deadline = Instant::now() + self.timeout;
        loop {
            self.reap()?;
            let at = self.done.iter().position(|c| c.tag == tag);
            if let Some(completion) = at.and_then(|at| self.done.remove(at)) {
                return completion.into_result();
            }
            self.wait_for_event(deadline)?;
        }
    }

    /// Handles the back end's state changes that arrived, waiting up to `wait` for the
    /// first: Connected again is a resize, Closing or Closed closes the front end (Linux's
    /// `blkback_changed`). Returns whether there was any.
    pub fn handle_backend_events(&mut self, wait: Duration) -> Result<bool, Error> {
        if !self.xenbus.backend_changed_within(wait)? {
            return Ok(false);
        }
        match self.xenbus.backend_state()? {
            XenbusState::Connected if !self.closed => {
                // Without a readable `sectors` the change is no resize (Linux returns early).
                if let Some(sectors) = self.xenbus.backend_optional_u64("sectors")? {
                    self.disk.sectors = sectors;
                }
            }
            XenbusState::Closing | XenbusState::Closed if !self.closed => {
                self.xenbus.switch_state(XenbusState::Closed)?;
                self.closed = true;
            }
            _ => {}
        }
        Ok(true)
    }

    /// Closes the device from the guest's side: Closing, then Closed once the back end is
    /// Closing, then waits for the back end to release the rings (Closed) and ends access
    /// to the ring pages.
    pub fn close(mut self) -> Result<(), Error> {
        let deadline = Instant::now() + self.timeout;
        if !self.closed {
            self.xenbus.switch_state(XenbusState::Closing)?;
            self.xenbus
                .wait_backend(deadline, "the back end's Closing", |s| {
                    matches!(
                        s,
                        XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown
                    )
                })?;
            self.xenbus.switch_state(XenbusState::Closed)?;
            self.closed = true;
        }
        self.xenbus
            .wait_backend(deadline, "the back end's Closed", |s| {
                matches!(
                    s,
                    XenbusState::Closed | XenbusState::InitWait | XenbusState::Unknown
                )
            })?;
        for queue in &self.queues {
            self.pages.end_ring(queue.ring_refs())?;
        }
        Ok(())
    }

    fn check_usable(&self) -> Result<(), Error> {
        if let Some(reason) = &self.disabled {
            return Err(Error::Disabled(reason.clone()));
        }
        if self.closed {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Sleeps until the event channel fires (or `deadline`), then takes and re-enables the
    /// ports that fired.
    fn wait_for_event(&mut self, deadline: Instant) -> Result<(), Error> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout { what: "a response" });
        }
        let mut ports: Vec<Port> = Vec::new();
        self.evtchn.wait_pending(Some(left), &mut ports)?;
        self.evtchn.unmask(&ports)?;
        Ok(())
    }
}

impl Drop for Blkfront {
    fn drop(&mut self) {
        // Best effort: a back end that still maps a ring keeps its pages granted.
        for queue in &self.queues {
            let _ = self.pages.end_ring(queue.ring_refs());
        }
    }
}
