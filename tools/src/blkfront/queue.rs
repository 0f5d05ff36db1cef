//! One queue: a shared ring of 2^order pages, its event channel, and the shadow of every
//! request in flight, by id, as Linux blkfront keeps `rinfo->shadow[]`.

use std::sync::Arc;

use blkif::{FrontRing, Protocol, RawRequest, SharedRing};
use tokenback::platform::sim::{GuestDomain, SimEventChannel};
use tokenback::platform::{DomId, EventChannel, GrantRef, Port};

use super::error::{Error, ResponseError};
use super::pages::{GrantedPage, GuestPages};
use super::request::with_id;
use super::stale::Stale;
use super::xenbus::QueueKeys;
use super::Tag;

/// What the front end remembers of a request until its response.
#[derive(Debug)]
pub(crate) struct Shadow {
    pub(crate) tag: Tag,
    /// The operation the response must carry (an indirect request's `indirect_op`).
    pub(crate) operation: u8,
    /// Data pages, in disk order.
    pub(crate) data: Vec<DataPage>,
    /// Indirect segment pages.
    pub(crate) indirect: Vec<GrantedPage>,
    /// Whether the data pages are to be copied out on completion.
    pub(crate) read: bool,
    /// A FUA write without FUA on offer: a flush follows once it succeeded.
    pub(crate) post_flush: bool,
}

/// The part of a granted page that carries part of a transfer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DataPage {
    pub(crate) page: GrantedPage,
    /// Byte offset in the page (a multiple of 512).
    pub(crate) offset: usize,
    /// Bytes from `offset` (a multiple of 512, at most to the page's end).
    pub(crate) len: usize,
}

/// A ring and its bookkeeping.
pub(crate) struct Queue {
    index: usize,
    // Declared before `_guest`: the ring views the guest's memory and must go first.
    ring: FrontRing,
    ring_refs: Vec<GrantRef>,
    port: Port,
    shadow: Vec<Option<Shadow>>,
    free_ids: Vec<u64>,
    /// Junk for the fields a request leaves unused, as Linux's reused shadows hold.
    stale: Stale,
    /// Notifications sent to the back end.
    notified: u64,
    _guest: Arc<GuestDomain>,
}

impl Queue {
    /// `setup_blkring`: a zeroed ring granted to the back end, initialised for `protocol`,
    /// and an unbound event-channel port for the back end's domain.
    pub(crate) fn new(
        index: usize,
        pages: &mut GuestPages,
        order: u8,
        protocol: Protocol,
        evtchn: &mut SimEventChannel,
        backend: DomId,
    ) -> Result<Self, Error> {
        let (ring_refs, base) = pages.ring(order)?;
        // SAFETY: `base` is the start of 2^order pages of the guest's memory mapping that
        // `GuestPages::ring` checked to be in bounds and gave to this ring alone (it never
        // hands those frames out again); the mapping is page-aligned and stays mapped while
        // `_guest` lives, which is dropped after `ring`. Nothing else in this process touches
        // those pages; the back end does, through its own mapping.
        let mem = unsafe { SharedRing::new(base, order) }?;
        let ring = FrontRing::init(mem, protocol);
        let port = evtchn.alloc_unbound(backend)?;
        let size = ring.size();
        Ok(Queue {
            index,
            ring,
            ring_refs,
            port,
            shadow: (0..size).map(|_| None).collect(),
            free_ids: (0..u64::from(size)).rev().collect(),
            stale: Stale::new(index as u64),
            notified: 0,
            _guest: Arc::clone(pages.guest()),
        })
    }

    pub(crate) fn keys(&self) -> QueueKeys {
        QueueKeys {
            ring_refs: self.ring_refs.clone(),
            port: self.port,
        }
    }

    pub(crate) fn ring_refs(&self) -> &[GrantRef] {
        &self.ring_refs
    }

    /// The ring itself and our port, for [`Raw`](super::Raw) requests that bypass the shadow.
    pub(crate) fn raw_parts(&mut self) -> (&mut FrontRing, Port) {
        (&mut self.ring, self.port)
    }

    /// RING_SIZE.
    pub(crate) fn ring_size(&self) -> usize {
        self.shadow.len()
    }

    /// Requests in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.shadow.len() - self.free_ids.len()
    }

    /// Notifications sent to the back end so far.
    pub(crate) fn notified(&self) -> u64 {
        self.notified
    }

    pub(crate) fn has_room(&self) -> bool {
        !self.free_ids.is_empty()
    }

    /// Puts a request in the next slot under a free id; the back end sees it at the next
    /// [`publish`](Self::publish).
    pub(crate) fn push(&mut self, shadow: Shadow, request: RawRequest) -> Result<(), Error> {
        let id = self.free_ids.pop().ok_or(Error::QueueFull(self.index))?;
        // Ids and slots are both as many as the ring size: a free id means a free slot.
        let request = self.stale.fill_unused(with_id(request, id));
        if self.ring.push_request(&request).is_err() {
            self.free_ids.push(id);
            return Err(Error::QueueFull(self.index));
        }
        self.shadow[id as usize] = Some(shadow);
        Ok(())
    }

    /// Publishes the requests pushed so far and notifies the back end if the ring says so
    /// (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`, once per batch as blk-mq's `commit_rqs`).
    pub(crate) fn publish(&mut self, evtchn: &mut SimEventChannel) -> Result<(), Error> {
        if self.ring.push_requests_and_check_notify() {
            evtchn.notify(self.port)?;
            self.notified += 1;
        }
        Ok(())
    }

    /// Takes every response published, checking each as `blkif_interrupt` does, and re-arms
    /// `rsp_event`. Any bad response disables the device.
    pub(crate) fn take_responses(&mut self) -> Result<Vec<(Shadow, i16)>, ResponseError> {
        let mut done = Vec::new();
        loop {
            let size = self.ring.size();
            let responses = self
                .ring
                .responses()
                .map_err(|source| ResponseError::Overflow {
                    queue: self.index,
                    source,
                })?;
            for response in responses {
                let id = response.id;
                if id >= u64::from(size) {
                    return Err(ResponseError::BadId {
                        queue: self.index,
                        id,
                        ring_size: size,
                    });
                }
                let Some(shadow) = self.shadow[id as usize].take() else {
                    return Err(ResponseError::NotOutstanding {
                        queue: self.index,
                        id,
                    });
                };
                if response.operation != shadow.operation {
                    return Err(ResponseError::WrongOperation {
                        queue: self.index,
                        id,
                        got: response.operation,
                        expected: shadow.operation,
                    });
                }
                self.free_ids.push(id);
                done.push((shadow, response.status));
            }
            if !self.ring.final_check_for_responses() {
                return Ok(done);
            }
        }
    }
}
