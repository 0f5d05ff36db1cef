//! What the scripted back end offers and how it may misbehave, and what it saw.

/// What the back end offers, with Linux blkback's values by default.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub max_ring_page_order: u32,
    pub max_queues: u32,
    /// 0: `feature-max-indirect-segments` is not published.
    pub max_indirect_segments: u32,
    pub persistent: bool,
    pub flush_cache: bool,
    pub barrier: bool,
    pub discard: bool,
    pub discard_secure: bool,
    pub sectors: u64,
    pub sector_size: u32,
    pub info: u32,
    /// Answer flushes and barriers with EOPNOTSUPP although offered.
    pub refuse_flush: bool,
    /// Fail flushes and barriers with BLKIF_RSP_ERROR (an I/O error), writing nothing.
    pub fail_flush: bool,
    /// Answer discards with EOPNOTSUPP although offered.
    pub refuse_discard: bool,
    /// Keep data pages mapped even without persistent grants (a broken back end).
    pub keep_grants: bool,
    /// Break every response this way.
    pub misbehave: Option<Misbehaviour>,
}

/// Ways a broken back end answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// The request's operation with its lowest bit flipped.
    WrongOperation,
    /// An id no front end hands out (not below the ring size).
    IdOutOfRange,
    /// The next id, which is not outstanding when one request is.
    IdNotOutstanding,
    /// `rsp_prod` a ring's worth beyond the responses written.
    ResponseOverflow,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            max_ring_page_order: 4,
            max_queues: 4,
            max_indirect_segments: 256,
            persistent: true,
            flush_cache: true,
            barrier: true,
            discard: true,
            discard_secure: false,
            sectors: 16384,
            sector_size: 512,
            info: 0,
            refuse_flush: false,
            fail_flush: false,
            refuse_discard: false,
            keep_grants: false,
            misbehave: None,
        }
    }
}

/// What the back end saw, for the tests' assertions.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub protocol: Option<String>,
    pub ring_order: u8,
    pub queues: usize,
    /// `operation` of each request, in the order taken.
    pub operations: Vec<u8>,
    /// Requests taken at once, for each wake-up that found some.
    pub batches: Vec<usize>,
    /// Requests taken per queue.
    pub per_queue: Vec<usize>,
    /// `nr_segments` of each indirect request.
    pub indirect_segments: Vec<u16>,
    /// (first_sect, last_sect) of each segment, per read or write.
    pub segments: Vec<Vec<(u8, u8)>>,
    /// (sector, count, secure) of each discard.
    pub discards: Vec<(u64, u64, bool)>,
    /// Grants kept mapped as persistent.
    pub persistent_maps: usize,
    /// Front-end states seen, in order.
    pub frontend_states: Vec<u32>,
}
