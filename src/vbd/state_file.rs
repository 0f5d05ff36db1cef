//! A VBD's state file: what a restarted tokenbackd needs to carry on serving a ring the guest
//! never saw go away (DESIGN "Restart without guest errors"). Responses reuse ring slots, so a
//! request taken and not answered exists nowhere but here once the process is gone.
//!
//! The file lives on tmpfs and is mapped shared: every update is a store into the mapping (no
//! system call), and a killed process leaves it exactly as its last store did. It holds:
//! - a header: the ring shape it was made for (queues, order, protocol) and its capacity;
//! - two bucket-level records written alternately, each with a sequence number and checksum,
//!   so a torn write leaves the older one to use;
//! - per queue, `req_cons` and `rsp_prod_pvt`;
//! - one entry per request slot: a copy of the request, its checksum, the ring index it came
//!   from, and the response index it is being answered at.
//!
//! The ring shape itself (refs, ports) is re-read from the front end's xenstore keys at
//! reattach: they stay there while the front end is Connected, the handshake already reads and
//! validates them, and a stored copy could only disagree with them. The header's shape is
//! checked against them instead.
//!
//! Order of stores, so that a kill between any two leaves a file that resumes right:
//! taking a request writes the entry's body, then its `valid` word, then `req_cons`;
//! answering writes `answered_at` (the response index), pushes the response, writes
//! `rsp_prod_pvt`, then clears `valid`. At load, an entry whose `answered_at` lies before the
//! saved `rsp_prod_pvt` was answered; `req_cons` is at least one past every valid entry's index.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use blkif::abi::{
    Segment, BLKIF_DISCARD_SECURE, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_INDIRECT, BLKIF_OP_READ,
    BLKIF_OP_WRITE,
};
use blkif::{
    Direction, Limits, Protocol, RawDirect, RawDiscard, RawIndirect, RawRequest, Request,
    RequestKind, RingState,
};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::limiter::{Balance, LimitKind};
use crate::xenbus::DeviceId;

const MAGIC: u64 = u64::from_le_bytes(*b"TKBSTAT1");
const VERSION: u32 = 1;
/// `Entry::valid` of an entry holding a request.
const VALID: u32 = 0x5641_4c44;
/// `Entry::answered` once `answered_at` holds the response index.
const ANSWERED: u32 = 1;
/// At most this many bucket balances (7 limits, each with a burst companion).
const MAX_BALANCES: usize = 16;
/// Queues the file has room for (`multi-queue-max-queues` is at most 64).
const MAX_QUEUES: usize = 64;
const HEADER_AT: usize = 0;
const BALANCES_AT: usize = 64;
const INDICES_AT: usize = BALANCES_AT + 2 * size_of::<Levels>();
const ENTRIES_AT: usize = 4096;

/// The ring shape a file was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub queues: u32,
    pub ring_page_order: u8,
    pub protocol: Protocol,
}

impl Shape {
    /// Request slots of one ring.
    fn ring_size(&self) -> u32 {
        blkif::ring_size(self.ring_page_order, self.protocol.slot_size())
    }

    /// Entries: one per request any ring may hold unanswered.
    fn capacity(&self) -> u32 {
        self.queues * self.ring_size()
    }

    fn file_len(&self) -> usize {
        ENTRIES_AT + self.capacity() as usize * size_of::<Entry>()
    }
}

/// Why a state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("truncated: {len} bytes, {expected} expected")]
    Truncated { len: u64, expected: u64 },
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("made for {saved}, the front end has {now}")]
    ShapeChanged { saved: String, now: String },
    #[error("{0} queues: more than a state file holds")]
    TooManyQueues(u32),
}

#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
struct Header {
    magic: u64,
    version: u32,
    queues: u32,
    ring_page_order: u32,
    protocol: u32,
    capacity: u32,
    checksum: u32,
}

#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
struct SavedBalance {
    kind: u32,
    burst: u32,
    level_nano: [u64; 2],
    capacity_nano: [u64; 2],
}

/// One bucket-level record.
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
struct Levels {
    /// Which record is newer; 0: never written.
    seq: u64,
    /// CLOCK_MONOTONIC when the levels were read (the file lives on tmpfs: same boot).
    saved_at: u64,
    count: u32,
    checksum: u32,
    balances: [SavedBalance; MAX_BALANCES],
}

/// One request slot. `valid` and `answered` are written last and read first.
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
struct Entry {
    valid: u32,
    checksum: u32,
    answered: u32,
    answered_at: u32,
    body: Body,
}

/// The request, in a layout of our own: a new build must read an old build's file.
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
struct Body {
    queue: u16,
    operation: u8,
    /// `indirect_op` or a discard's flag.
    sub: u8,
    nr_segments: u16,
    handle: u16,
    ring_idx: u32,
    _pad: u32,
    id: u64,
    sector_number: u64,
    /// A discard's `nr_sectors`.
    nr_sectors: u64,
    /// Inline segments; an indirect request's page refs in the first grefs.
    seg: [[u32; 2]; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}

/// A request found in the file, to redo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedRequest {
    /// The entry (and the served slot) it was kept in.
    pub slot: u32,
    pub queue: usize,
    pub request: Request,
}

/// What a previous daemon left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// Per queue, the indices to resume the back ring from.
    pub rings: Vec<RingState>,
    /// Requests taken and not answered, by queue and in the order they were taken (a VBD
    /// resumed from them keeps its FIFO order).
    pub requests: Vec<SavedRequest>,
    /// Bucket balances, and how long before the load they were read.
    pub balances: Option<(Vec<Balance>, u64)>,
}

/// A VBD's state file, mapped.
pub struct StateFile {
    map: NonNull<u8>,
    len: usize,
    capacity: u32,
    queues: u32,
    /// Sequence number of the newest levels record.
    levels_seq: u64,
}

// SAFETY: the mapping is owned by this value alone (no copy of the pointer escapes), so moving
// it to another thread moves the only access to it.
unsafe impl Send for StateFile {}

/// The state file of VBD `id` of tree `tree` under `dir`.
pub fn path_for(dir: &Path, tree: &str, id: DeviceId) -> PathBuf {
    dir.join(format!("{tree}-{}-{}", id.frontend_id.0, id.devid))
}

impl StateFile {
    /// A new, empty file for `shape`, replacing any old one.
    pub fn create(path: &Path, shape: Shape) -> Result<StateFile, StateFileError> {
        if shape.queues as usize > MAX_QUEUES {
            return Err(StateFileError::TooManyQueues(shape.queues));
        }
        let io = |source| StateFileError::Io {
            path: path.to_owned(),
            source,
        };
        // Written aside and renamed: a crash leaves either the old file or the whole new one.
        let tmp = path.with_extension("new");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io)?;
        file.set_len(shape.file_len() as u64).map_err(io)?;
        let mut state = StateFile::map(&file, shape).map_err(io)?;
        let mut header = Header {
            magic: MAGIC,
            version: VERSION,
            queues: shape.queues,
            ring_page_order: u32::from(shape.ring_page_order),
            protocol: protocol_code(shape.protocol),
            capacity: shape.capacity(),
            checksum: 0,
        };
        header.checksum = checksum(&header.as_bytes()[..size_of::<Header>() - 4]);
        state
            .bytes_mut(HEADER_AT, size_of::<Header>())
            .copy_from_slice(header.as_bytes());
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(state)
    }

    /// Opens a previous daemon's file, checks it against `shape` and reads what it holds.
    /// Requests are validated again with `limits`, as if taken from the ring.
    pub fn open(
        path: &Path,
        shape: Shape,
        limits: &Limits,
        now: u64,
    ) -> Result<(StateFile, Saved), StateFileError> {
        let io = |source| StateFileError::Io {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < ENTRIES_AT as u64 {
            return Err(StateFileError::Truncated {
                len,
                expected: ENTRIES_AT as u64,
            });
        }
        let header = read_header(&file).map_err(io)?;
        let saved_shape = check_header(&header)?;
        if saved_shape != shape {
            return Err(StateFileError::ShapeChanged {
                saved: format!("{saved_shape:?}"),
                now: format!("{shape:?}"),
            });
        }
        if len < shape.file_len() as u64 {
            return Err(StateFileError::Truncated {
                len,
                expected: shape.file_len() as u64,
            });
        }
        let mut state = StateFile::map(&file, shape).map_err(io)?;
        let saved = state.load(shape, limits, now)?;
        Ok((state, saved))
    }

    fn map(file: &File, shape: Shape) -> io::Result<StateFile> {
        let len = shape.file_len();
        Ok(StateFile {
            map: crate::platform::shared_mem::map_shared(file, len)?,
            len,
            capacity: shape.capacity(),
            queues: shape.queues,
            levels_seq: 0,
        })
    }

    fn bytes(&self, at: usize, len: usize) -> &[u8] {
        assert!(at + len <= self.len);
        // SAFETY: in bounds of the mapping (checked), which lives as long as `self`; only this
        // process writes it, and only through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(at), len) }
    }

    fn bytes_mut(&mut self, at: usize, len: usize) -> &mut [u8] {
        assert!(at + len <= self.len);
        // SAFETY: as in `bytes`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr().add(at), len) }
    }

    /// A 4-aligned word of the mapping, for the stores whose order matters.
    fn word(&self, at: usize) -> &AtomicU32 {
        assert!(at + 4 <= self.len && at % 4 == 0);
        // SAFETY: in bounds and aligned (checked; the mapping is page-aligned), valid for the
        // life of `self`; AtomicU32 has the layout of u32.
        unsafe { AtomicU32::from_ptr(self.map.as_ptr().add(at).cast()) }
    }

    fn entry_at(&self, slot: u32) -> usize {
        assert!(slot < self.capacity, "slot {slot} beyond the file");
        ENTRIES_AT + slot as usize * size_of::<Entry>()
    }

    /// Keeps a copy of `request`, taken from `queue` at ring index `ring_idx`, in entry
    /// `slot`, then notes `req_cons` as one past it. Call before the request is dispatched.
    pub fn record(&mut self, slot: u32, queue: usize, ring_idx: u32, request: &Request) {
        let at = self.entry_at(slot);
        let body = encode(queue, ring_idx, request);
        let checksum = checksum(body.as_bytes());
        self.word(at).store(0, Ordering::Release);
        self.word(at + 8).store(0, Ordering::Relaxed);
        self.bytes_mut(at + 16, size_of::<Body>())
            .copy_from_slice(body.as_bytes());
        self.word(at + 4).store(checksum, Ordering::Relaxed);
        // Release: the body is in place before the entry counts.
        self.word(at).store(VALID, Ordering::Release);
        self.save_req_cons(queue, ring_idx.wrapping_add(1));
    }

    /// The request in `slot` is about to be answered at response index `rsp_idx`.
    pub fn answering(&mut self, slot: u32, rsp_idx: u32) {
        let at = self.entry_at(slot);
        self.word(at + 12).store(rsp_idx, Ordering::Relaxed);
        self.word(at + 8).store(ANSWERED, Ordering::Release);
    }

    /// The request in `slot` was answered and `rsp_prod_pvt` saved: forget it.
    pub fn clear(&mut self, slot: u32) {
        let at = self.entry_at(slot);
        self.word(at).store(0, Ordering::Release);
    }

    pub fn save_req_cons(&mut self, queue: usize, req_cons: u32) {
        assert!(queue < self.queues as usize);
        self.word(INDICES_AT + queue * 8)
            .store(req_cons, Ordering::Release);
    }

    pub fn save_rsp_prod_pvt(&mut self, queue: usize, rsp_prod_pvt: u32) {
        assert!(queue < self.queues as usize);
        self.word(INDICES_AT + queue * 8 + 4)
            .store(rsp_prod_pvt, Ordering::Release);
    }

    /// Saves bucket balances read at `now` (CLOCK_MONOTONIC), into the older record.
    pub fn save_balances(&mut self, balances: &[Balance], now: u64) {
        let mut levels = Levels::new_zeroed();
        levels.seq = self.levels_seq + 1;
        levels.saved_at = now;
        levels.count = balances.len().min(MAX_BALANCES) as u32;
        for (saved, b) in levels.balances.iter_mut().zip(balances) {
            *saved = SavedBalance {
                kind: LimitKind::ALL
                    .iter()
                    .position(|&k| k == b.kind)
                    .unwrap_or(0) as u32,
                burst: u32::from(b.burst),
                level_nano: split(b.level_nano),
                capacity_nano: split(b.capacity_nano),
            };
        }
        levels.checksum = levels.checksum_now();
        let at = BALANCES_AT + (levels.seq % 2) as usize * size_of::<Levels>();
        self.bytes_mut(at, size_of::<Levels>())
            .copy_from_slice(levels.as_bytes());
        self.levels_seq = levels.seq;
    }

    fn load(&mut self, shape: Shape, limits: &Limits, now: u64) -> Result<Saved, StateFileError> {
        let mut rings: Vec<RingState> = (0..shape.queues as usize)
            .map(|q| RingState {
                req_cons: self.word(INDICES_AT + q * 8).load(Ordering::Acquire),
                rsp_prod_pvt: self.word(INDICES_AT + q * 8 + 4).load(Ordering::Acquire),
            })
            .collect();
        let size = shape.ring_size();
        let mut requests = Vec::new();
        for slot in 0..self.capacity {
            let at = self.entry_at(slot);
            let entry = Entry::read_from_bytes(self.bytes(at, size_of::<Entry>()))
                .expect("sized to an entry");
            if entry.valid == 0 {
                continue;
            }
            let bad = |why: &str| StateFileError::Corrupt(format!("entry {slot}: {why}"));
            if entry.valid != VALID || entry.checksum != checksum(entry.body.as_bytes()) {
                return Err(bad("checksum mismatch (torn or overwritten)"));
            }
            let queue = usize::from(entry.body.queue);
            let Some(ring) = rings.get_mut(queue) else {
                return Err(bad("queue out of range"));
            };
            // Answered (its response index before the saved rsp_prod_pvt): only `valid`
            // was left to clear.
            let behind = ring.rsp_prod_pvt.wrapping_sub(entry.answered_at);
            if entry.answered == ANSWERED && (1..=size).contains(&behind) {
                self.clear(slot);
                continue;
            }
            let request = decode(&entry.body, limits).map_err(|e| bad(&e))?;
            // req_cons saved after the entry: a kill in between left it one short. Answers go
            // out of order, so an unanswered entry may also lie behind rsp_prod_pvt: only one
            // past the saved req_cons moves it.
            let past = entry.body.ring_idx.wrapping_add(1);
            if (1..=size).contains(&past.wrapping_sub(ring.req_cons)) {
                ring.req_cons = past;
            }
            let saved = SavedRequest {
                slot,
                queue,
                request,
            };
            requests.push((entry.body.ring_idx, saved));
        }
        // Oldest first: the furthest behind the queue's final req_cons.
        requests.sort_by_key(|(ring_idx, r)| {
            let req_cons = rings[r.queue].req_cons;
            (r.queue, std::cmp::Reverse(req_cons.wrapping_sub(*ring_idx)))
        });
        let requests: Vec<SavedRequest> = requests.into_iter().map(|(_, r)| r).collect();
        for (q, ring) in rings.iter().enumerate() {
            let unanswered = ring.req_cons.wrapping_sub(ring.rsp_prod_pvt);
            let kept = requests.iter().filter(|r| r.queue == q).count() as u32;
            if unanswered != kept {
                return Err(StateFileError::Corrupt(format!(
                    "queue {q}: {unanswered} requests unanswered, {kept} kept"
                )));
            }
        }
        let balances = self.load_balances(now);
        Ok(Saved {
            rings,
            requests,
            balances,
        })
    }

    /// The newest intact levels record; sets the sequence to continue from.
    fn load_balances(&mut self, now: u64) -> Option<(Vec<Balance>, u64)> {
        let newest = (0..2)
            .map(|i| {
                let at = BALANCES_AT + i * size_of::<Levels>();
                Levels::read_from_bytes(self.bytes(at, size_of::<Levels>())).expect("sized")
            })
            .filter(|l| l.seq != 0 && l.checksum == l.checksum_now())
            .max_by_key(|l| l.seq)?;
        self.levels_seq = newest.seq;
        let balances = newest.balances[..(newest.count as usize).min(MAX_BALANCES)]
            .iter()
            .filter_map(|b| {
                Some(Balance {
                    kind: *LimitKind::ALL.get(b.kind as usize)?,
                    burst: b.burst != 0,
                    level_nano: join(b.level_nano),
                    capacity_nano: join(b.capacity_nano),
                })
            })
            .collect();
        Some((balances, now.saturating_sub(newest.saved_at)))
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of `len` bytes, unmapped once; no reference into
        // it outlives `self`.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.len) };
    }
}

impl Levels {
    fn checksum_now(&self) -> u32 {
        let mut copy = *self;
        copy.checksum = 0;
        checksum(copy.as_bytes())
    }
}

fn read_header(file: &File) -> io::Result<Header> {
    use std::os::unix::fs::FileExt;
    let mut header = Header::new_zeroed();
    file.read_exact_at(header.as_mut_bytes(), HEADER_AT as u64)?;
    Ok(header)
}

fn check_header(header: &Header) -> Result<Shape, StateFileError> {
    let corrupt = |why: &str| Err(StateFileError::Corrupt(format!("header: {why}")));
    if header.magic != MAGIC {
        return corrupt("not a tokenback state file");
    }
    if header.checksum != checksum(&header.as_bytes()[..size_of::<Header>() - 4]) {
        return corrupt("checksum mismatch");
    }
    if header.version != VERSION {
        return corrupt(&format!("version {}", header.version));
    }
    let (Some(protocol), Ok(order)) = (
        protocol_from(header.protocol),
        u8::try_from(header.ring_page_order),
    ) else {
        return corrupt("bad protocol or order");
    };
    if order > blkif::MAX_RING_ORDER || header.queues as usize > MAX_QUEUES {
        return corrupt("bad shape");
    }
    let shape = Shape {
        queues: header.queues,
        ring_page_order: order,
        protocol,
    };
    if shape.capacity() != header.capacity {
        return corrupt("capacity disagrees with the shape");
    }
    Ok(shape)
}

const PROTOCOLS: [Protocol; 3] = [Protocol::Native, Protocol::X86_32, Protocol::X86_64];

fn protocol_code(protocol: Protocol) -> u32 {
    PROTOCOLS.iter().position(|&p| p == protocol).unwrap_or(0) as u32
}

fn protocol_from(code: u32) -> Option<Protocol> {
    PROTOCOLS.get(code as usize).copied()
}

fn split(v: i128) -> [u64; 2] {
    [v as u64, (v >> 64) as u64]
}

fn join(v: [u64; 2]) -> i128 {
    (i128::from(v[1] as i64) << 64) | i128::from(v[0])
}

/// FNV-1a, folded to 32 bits: catches torn and stray writes, not an adversary (the file is
/// root's, on tmpfs).
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, folded to 32 bits. A zero byte only multiplies by the prime, so a zero word (most
/// of an entry: unused segments) is one multiplication by its eighth power: same value, taken
/// on every request's record.
fn checksum(bytes: &[u8]) -> u32 {
    const PRIME_8: u64 = FNV_PRIME.wrapping_pow(8);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        if word == [0; 8] {
            hash = hash.wrapping_mul(PRIME_8);
            continue;
        }
        for &b in word {
            hash = (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
    }
    for &b in words.remainder() {
        hash = (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }
    (hash ^ (hash >> 32)) as u32
}

fn encode(queue: usize, ring_idx: u32, request: &Request) -> Body {
    let mut body = Body::new_zeroed();
    body.queue = queue as u16;
    body.ring_idx = ring_idx;
    body.id = request.id();
    body.operation = request.operation();
    body.handle = request.handle().unwrap_or(0);
    match request.kind() {
        RequestKind::Read(s)
        | RequestKind::Write(s)
        | RequestKind::WriteBarrier(s)
        | RequestKind::FlushDiskcache(s) => {
            body.sector_number = s.sector_number();
            body.nr_segments = s.segments().len() as u16;
            for (out, seg) in body.seg.iter_mut().zip(s.segments()) {
                *out = [
                    seg.gref(),
                    u32::from(seg.first_sect()) | u32::from(seg.last_sect()) << 8,
                ];
            }
        }
        RequestKind::Discard(d) => {
            body.sub = if d.secure() { BLKIF_DISCARD_SECURE } else { 0 };
            body.sector_number = d.sector_number();
            body.nr_sectors = d.nr_sectors();
        }
        RequestKind::Indirect(i) => {
            body.sub = match i.direction() {
                Direction::Read => BLKIF_OP_READ,
                Direction::Write => BLKIF_OP_WRITE,
            };
            body.sector_number = i.sector_number();
            body.nr_segments = i.nr_segments();
            for (out, &gref) in body.seg.iter_mut().zip(i.page_refs()) {
                out[0] = gref;
            }
        }
    }
    body
}

/// Rebuilds the request as the front end wrote it and validates it again.
fn decode(body: &Body, limits: &Limits) -> Result<Request, String> {
    let raw = match body.operation {
        BLKIF_OP_DISCARD => RawRequest::Discard(RawDiscard {
            flag: body.sub,
            handle: body.handle,
            id: body.id,
            sector_number: body.sector_number,
            nr_sectors: body.nr_sectors,
        }),
        BLKIF_OP_INDIRECT => {
            let mut grefs = [0; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
            for (gref, seg) in grefs.iter_mut().zip(&body.seg) {
                *gref = seg[0];
            }
            RawRequest::Indirect(RawIndirect {
                indirect_op: body.sub,
                nr_segments: body.nr_segments,
                handle: body.handle,
                id: body.id,
                sector_number: body.sector_number,
                indirect_grefs: grefs,
            })
        }
        operation => {
            let mut seg = [Segment::default(); BLKIF_MAX_SEGMENTS_PER_REQUEST];
            for (out, saved) in seg.iter_mut().zip(&body.seg) {
                *out = Segment::new(saved[0], saved[1] as u8, (saved[1] >> 8) as u8);
            }
            RawRequest::Direct(RawDirect {
                operation,
                nr_segments: u8::try_from(body.nr_segments).map_err(|_| "segment count")?,
                handle: body.handle,
                id: body.id,
                sector_number: body.sector_number,
                seg,
            })
        }
    };
    Request::validate(&raw, limits).map_err(|e| format!("request: {:?}", e.error))
}

#[cfg(test)]
#[path = "state_file_tests.rs"]
mod tests;
