//! One queue of a connected VBD: the front end's ring pages mapped into this process, the back
//! ring over them, and the event channel bound to the front end's port.

use blkif::{BackRing, Limits, Protocol, RingState, SharedRing};

use crate::platform::{DomId, EventChannel, GrantAccess, GrantMapping, Port};
use crate::xenbus::QueueRing;

/// A mapped ring. Field order matters: the ring view is dropped before the mapping it views.
pub struct Queue<M: GrantMapping> {
    pub ring: BackRing,
    /// Our end of the event channel.
    pub port: Port,
    /// Responses were pushed since the last notification decision.
    pub pushed: bool,
    _mapping: M,
}

impl<M: GrantMapping> Queue<M> {
    /// Maps the ring pages writable, attaches the back ring (or resumes it at `resume`, the
    /// indices a previous daemon saved) and binds the channel. On error nothing stays mapped
    /// or bound.
    pub fn connect<G, E>(
        grants: &mut G,
        evtchn: &mut E,
        frontend: DomId,
        queue: &QueueRing,
        (order, protocol): (u8, Protocol),
        limits: Limits,
        resume: Option<RingState>,
    ) -> Result<Self, String>
    where
        G: GrantAccess<Mapping = M>,
        E: EventChannel,
    {
        let mapping = grants
            .map(frontend, &queue.ring_refs, true)
            .map_err(|e| format!("mapping ring refs {:?}: {e}", queue.ring_refs))?;
        if mapping.pages() != 1 << order {
            return Err(format!(
                "{} ring pages mapped for order {order}",
                mapping.pages()
            ));
        }
        // SAFETY: the mapping is writable and holds 2^order pages (checked above); it is kept
        // in `_mapping`, declared after `ring`, so it outlives every use of the view, and
        // nothing in this process holds references into it.
        let shared = unsafe { SharedRing::new(mapping.as_ptr(), order) }
            .map_err(|e| format!("ring view: {e}"))?;
        let ring = match resume {
            None => BackRing::attach(shared, protocol, limits),
            Some(state) => BackRing::restore(shared, protocol, limits, state),
        }
        .map_err(|e| format!("attaching the ring: {e}"))?;
        let port = evtchn
            .bind_interdomain(frontend, queue.port)
            .map_err(|e| format!("binding event channel {}: {e}", queue.port))?;
        Ok(Queue {
            ring,
            port,
            pushed: false,
            _mapping: mapping,
        })
    }
}
