//! Why blkfront cannot do what it was asked.

use thiserror::Error;
use tokenback::platform::sim::{EndAccessError, SimError};
use tokenback::platform::EvtchnError;
use xenstore_wire::client::ClientError;

/// A failure of the front end or of its conversation with the back end.
#[derive(Debug, Error)]
pub enum Error {
    /// xenstored refused a request or could not be reached.
    #[error("xenstore {op} of {path}: {source}")]
    Xenstore {
        /// The operation.
        op: &'static str,
        /// The node.
        path: String,
        /// What went wrong.
        #[source]
        source: ClientError,
    },
    /// A key the handshake needs is absent.
    #[error("{path} is missing")]
    MissingKey {
        /// The node.
        path: String,
    },
    /// A key holds something else than the number the protocol defines.
    #[error("{path} holds {value:?}, not {expected}")]
    BadKey {
        /// The node.
        path: String,
        /// What it holds.
        value: String,
        /// What it should hold.
        expected: &'static str,
    },
    /// The simulated host's files could not be used.
    #[error("simulated host: {0}")]
    Sim(#[source] SimError),
    /// An event-channel operation failed.
    #[error("event channel: {0}")]
    Evtchn(#[from] EvtchnError),
    /// The ring pages could not be viewed as a shared ring.
    #[error("shared ring: {0}")]
    Ring(#[from] blkif::SharedRingError),
    /// Every page of the guest's memory is in use.
    #[error("the guest's {pages} pages of memory are used up")]
    OutOfGuestMemory {
        /// Pages the guest has.
        pages: usize,
    },
    /// Every grant ref is in use.
    #[error("the guest's {entries} grant entries are used up")]
    OutOfGrantRefs {
        /// Entries in the grant table.
        entries: usize,
    },
    /// Access to a page could not be ended.
    #[error("cannot end access: {0}")]
    EndAccess(#[source] EndAccessError),
    /// Our own `state` was not Initialising, so the handshake was not started.
    #[error("the front end's state is {state}, not Initialising (1)")]
    NotInitialising {
        /// The state found.
        state: u32,
    },
    /// The back end closed (or failed) while we waited for it to connect.
    #[error("the back end went to xenbus state {state} before connecting")]
    BackendClosed {
        /// Its state.
        state: u32,
    },
    /// Something that should have happened did not within the configured timeout.
    #[error("timed out waiting for {what}")]
    Timeout {
        /// What we waited for.
        what: &'static str,
    },
    /// The device is closed (the back end went Closing, or [`close`](super::Blkfront::close)).
    #[error("the device is closed")]
    Closed,
    /// A response broke the protocol; the device is disabled for good, as Linux does.
    #[error("device disabled: {0}")]
    Disabled(#[from] ResponseError),
    /// A transfer that is not a whole number of logical sectors, or starts off one.
    #[error("{bytes} bytes at sector {sector} do not align to the {sector_size}-byte sector size")]
    Misaligned {
        /// First 512-byte sector.
        sector: u64,
        /// Length in bytes.
        bytes: usize,
        /// The disk's `sector-size`.
        sector_size: u32,
    },
    /// A transfer past the end of the disk.
    #[error("{count} sectors from sector {sector} pass the disk's {capacity} sectors")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Sectors asked for.
        count: u64,
        /// Sectors the disk has.
        capacity: u64,
    },
    /// A transfer larger than one request may carry.
    #[error("{bytes} bytes need {segments} segments, but a request carries at most {max}")]
    TooLarge {
        /// Length in bytes.
        bytes: usize,
        /// Segments needed.
        segments: usize,
        /// Segments allowed.
        max: usize,
    },
    /// A write whose data does not fill its spans exactly.
    #[error("{bytes} bytes of data for spans that hold {spans}")]
    SpansMismatch {
        /// Bytes of data.
        bytes: usize,
        /// Bytes the spans hold.
        spans: usize,
    },
    /// A write (or discard) to a disk the back end marked read-only.
    #[error("the disk is read-only")]
    ReadOnly,
    /// An operation the back end does not offer (or withdrew after refusing it).
    #[error("the back end does not offer {0}")]
    NotOffered(&'static str),
    /// A queue index beyond the queues negotiated.
    #[error("no queue {0}")]
    NoSuchQueue(usize),
    /// Every request slot of the queue is in use.
    #[error("queue {0} is full")]
    QueueFull(usize),
    /// The back end answered the request with a failure status.
    #[error("operation {operation} failed with status {status}")]
    Failed {
        /// `BLKIF_OP_*`.
        operation: u8,
        /// `BLKIF_RSP_*` (any value the back end sent).
        status: i16,
    },
}

/// A response that Linux blkfront would refuse (blkif.md section 7), disabling the device.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResponseError {
    /// `rsp_prod` claims more responses than requests are outstanding.
    #[error("queue {queue}: {source}")]
    Overflow {
        /// The queue.
        queue: usize,
        /// The ring's report.
        #[source]
        source: blkif::FrontError,
    },
    /// An id we never hand out (not below the ring size).
    #[error("queue {queue}: response id {id} is not below the ring size {ring_size}")]
    BadId {
        /// The queue.
        queue: usize,
        /// The id received.
        id: u64,
        /// RING_SIZE.
        ring_size: u32,
    },
    /// An id with no request outstanding.
    #[error("queue {queue}: response id {id} answers no outstanding request")]
    NotOutstanding {
        /// The queue.
        queue: usize,
        /// The id received.
        id: u64,
    },
    /// The back end kept a grant mapped after answering, without persistent grants (Linux:
    /// "backed has not unmapped grant").
    #[error("queue {queue}: grant {source} after the response")]
    GrantKept {
        /// The queue.
        queue: usize,
        /// The refused end of access.
        #[source]
        source: EndAccessError,
    },
    /// The operation differs from the request's (an indirect request's `indirect_op`).
    #[error("queue {queue}: response to id {id} has operation {got}, not {expected}")]
    WrongOperation {
        /// The queue.
        queue: usize,
        /// The id.
        id: u64,
        /// The response's operation.
        got: u8,
        /// The request's.
        expected: u8,
    },
}
