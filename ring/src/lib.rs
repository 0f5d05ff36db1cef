//! blkif: the Xen PV block ring ABI, the shared ring's back and front ends, and a mock ring.
//!
//! # Behaviour
//!
//! - [`abi`] holds every `BLKIF_OP_*`/`BLKIF_RSP_*` value and limit, and the request and
//!   response layouts of the three protocols (`native`, `x86_32-abi`, `x86_64-abi`) with
//!   explicit padding. [`Protocol::from_xenstore`] parses the front end's `protocol` key;
//!   an absent key means x86_32 on x86, as in Linux blkback.
//! - [`SharedRing`] is the only code that touches guest-shared memory: 2^order pages,
//!   order 0..=4, ring size as ring.h's `__RING_SIZE` (32 << order for blkif). Its constructor
//!   is the crate's one `unsafe` entry point (an [`IndirectPage`] is built from a one-page
//!   view); [`SharedRing::allocate`] gives owned memory.
//! - [`BackRing`] copies each request out of its slot once, with volatile word copies of
//!   the head and of the body its operation uses (the segment count clamped before the
//!   loop), into a private [`RawRequest`] in protocol-neutral form, and validates only that
//!   copy into a [`Request`] (segments stored inline: no allocation per request).
//!   [`Requests::next_into`] validates straight into storage the caller keeps, which avoids
//!   moving the ~140-byte request and is the fast path (about twice the iterator's rate);
//!   a bad request comes back as a [`RejectedRequest`] that still carries the `id` and
//!   operation to answer it with. A front end that publishes more requests than the ring
//!   holds (or moves `req_prod` backwards) breaks the ring ([`RingError`]) before anything is
//!   read. Responses are built from padding-zeroed ABI types and carry the request's
//!   operation (an indirect request's `indirect_op`). Notification decisions follow
//!   `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY` and `RING_FINAL_CHECK_FOR_REQUESTS`.
//! - [`FrontRing`] is the guest side, for simulated guests and tests; [`mock::MockRing`]
//!   ties both to one in-process ring and can corrupt it.
//!
//! # Limits
//!
//! - Indirect requests are validated up to their page refs and segment count; the caller
//!   maps those pages (as [`IndirectPage`]s) and [`Indirect::read_segments`] copies each
//!   entry out once and validates it.
//! - Device-dependent checks (sector ranges past the disk's end, alignment to `sector-size`,
//!   writes to read-only disks, unsupported flush or discard) are the caller's.
//! - `arm-abi` is accepted only as the native name on ARM hosts.
#![deny(missing_docs)]

pub mod abi;
mod back;
mod front;
pub mod mock;
mod page;
mod raw;
mod request;
mod response;
mod segment;
mod shared;
mod slots;

pub use abi::{Protocol, UnknownProtocol};
pub use back::{BackRing, Requests, RingError, RingState};
pub use front::{FrontError, FrontRing, Responses};
pub use page::IndirectPage;
pub use raw::{RawDirect, RawDiscard, RawIndirect, RawRequest};
pub use request::{
    Direction, Discard, Indirect, Limits, LimitsError, RejectedRequest, Request, RequestError,
    RequestKind,
};
pub use response::{Response, Status};
pub use segment::{DataSegment, Segments};
pub use shared::{ring_size, RingIndex, SharedRing, SharedRingError, HEADER_SIZE, MAX_RING_ORDER};
