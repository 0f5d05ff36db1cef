//! Persistent grants of one ring, as Linux blkback keeps them (drivers/block/xen-blkback/
//! blkback.c: `persistent_gnts`, `add_persistent_gnt`, `purge_persistent_gnt`): each data page
//! the front end grants is mapped once and kept mapped, and later requests naming the same
//! grant ref move their data by memcpy through that mapping instead of a grant copy.
//!
//! At most [`MAX_PERSISTENT_GRANTS`] per ring. When the ring is full, the
//! least-recently-used 5% that the request being moved does not use are unmapped, at most once
//! per [`PURGE_INTERVAL`] as blkback's `purge_persistent_gnt` runs at most every `LRU_INTERVAL`
//! (a request uses its pages only while its data is moved: reads and writes go through our own
//! buffers, so no mapping is held across storage I/O). A page that cannot be mapped or kept
//! (refused by the hypervisor, every mapping in use, or the ring full between purges) is moved
//! by grant copy, which also reports a bad ref: a guest cycling through more pages than the cap
//! (1 MiB requests at depth 16 use 4096) would otherwise map and unmap a page per page moved,
//! which costs several times the copy. Dropping the value unmaps everything.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use blkif::DataSegment;

use crate::platform::{CopyOp, DomId, GrantAccess, GrantMapping, GrantRef, GuestRange, LocalBuf};

/// Persistent grants kept per ring, as Linux's `xen_blkif_max_pgrants` default.
pub const MAX_PERSISTENT_GRANTS: usize = 1056;

/// Share of the cap unmapped at once when the ring is full (Linux's `LRU_PERCENT_CLEAN`).
const PURGE_PERCENT: usize = 5;

/// Least time between two purges (Linux's `LRU_INTERVAL`, 100 ms).
pub const PURGE_INTERVAL: Duration = Duration::from_millis(100);

struct Entry {
    /// Boxed: the ring's owner need not know the platform's mapping type.
    mapping: Box<dyn GrantMapping>,
    /// The data move that last used it.
    last_used: u64,
}

/// One ring's persistent grants.
pub struct PersistentGrants {
    entries: HashMap<GrantRef, Entry>,
    cap: usize,
    /// Counts data moves: entries used by the current one have `last_used == clock`.
    clock: u64,
    purge_every: Duration,
    last_purge: Option<Instant>,
}

impl Default for PersistentGrants {
    fn default() -> Self {
        Self::with_limits(MAX_PERSISTENT_GRANTS, PURGE_INTERVAL)
    }
}

impl PersistentGrants {
    /// Keeps at most `cap` (at least 1) pages mapped, purging at most once per `purge_every`.
    pub fn with_limits(cap: usize, purge_every: Duration) -> Self {
        PersistentGrants {
            entries: HashMap::new(),
            cap: cap.max(1),
            clock: 0,
            purge_every,
            last_purge: None,
        }
    }

    /// The mapping of `gref`, mapped now if it is not yet; `None` when it cannot be kept.
    fn mapping<G: GrantAccess>(
        &mut self,
        grants: &mut G,
        domid: DomId,
        gref: GrantRef,
    ) -> Option<&dyn GrantMapping> {
        if !self.entries.contains_key(&gref) {
            if self.entries.len() >= self.cap && !self.purge() {
                return None;
            }
            // Writable whatever the request, as blkback maps persistent grants.
            let mapping = Box::new(grants.map(domid, &[gref], true).ok()?);
            let last_used = self.clock;
            self.entries.insert(gref, Entry { mapping, last_used });
        }
        let entry = self.entries.get_mut(&gref)?;
        entry.last_used = self.clock;
        Some(entry.mapping.as_ref())
    }

    /// Unmaps the least-recently-used 5% of the cap (at least one) among the entries the
    /// current move does not use; false when every entry is in use or the last purge was less
    /// than `purge_every` ago.
    fn purge(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last_purge
            .is_some_and(|at| now.duration_since(at) < self.purge_every)
        {
            return false;
        }
        let count = (self.cap * PURGE_PERCENT / 100).max(1);
        let mut idle: Vec<(u64, GrantRef)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.last_used < self.clock)
            .map(|(&gref, e)| (e.last_used, gref))
            .collect();
        if idle.is_empty() {
            return false;
        }
        if idle.len() > count {
            idle.select_nth_unstable(count - 1);
            idle.truncate(count);
        }
        for (_, gref) in idle {
            // Dropping the mapping unmaps the page.
            self.entries.remove(&gref);
        }
        self.last_purge = Some(now);
        true
    }
}

/// Moves one request's data between the front end's pages and our buffers, one buffer per
/// segment: through the ring's persistent grants when they are in use (`persistent`), by one
/// batched grant copy for every other segment. Returns whether every segment moved.
pub fn move_data<'a, G: GrantAccess>(
    grants: &mut G,
    mut persistent: Option<&mut PersistentGrants>,
    domid: DomId,
    moves: impl IntoIterator<Item = (&'a DataSegment, LocalBuf<'a>)>,
) -> bool {
    if let Some(p) = persistent.as_deref_mut() {
        p.clock += 1;
    }
    let mut ops: Vec<CopyOp<'a>> = Vec::new();
    for (seg, mut local) in moves {
        let gref = GrantRef(seg.gref());
        let mapped = persistent
            .as_deref_mut()
            .and_then(|p| p.mapping(grants, domid, gref));
        if let Some(mapping) = mapped {
            let moved = match &mut local {
                LocalBuf::FromGuest(dst) => mapping.read_at(seg.offset(), dst),
                LocalBuf::ToGuest(src) => mapping.write_at(seg.offset(), src),
            };
            if moved.is_ok() {
                continue;
            }
        }
        let guest = GuestRange {
            domid,
            gref,
            // Below a page by validation.
            offset: seg.offset() as u16,
        };
        ops.push(match local {
            LocalBuf::FromGuest(dst) => CopyOp::from_guest(guest, dst),
            LocalBuf::ToGuest(src) => CopyOp::to_guest(src, guest),
        });
    }
    ops.is_empty() || grants.copy(&mut ops) == 0
}

#[cfg(test)]
mod tests {
    use std::ptr::NonNull;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use blkif::abi::Segment;

    use super::*;
    use crate::platform::{GrantError, PAGE_SIZE};

    /// A page of this process standing in for a mapped guest page; counts live mappings.
    struct FakeMapping {
        page: Box<[u8; PAGE_SIZE]>,
        live: Arc<AtomicUsize>,
    }

    impl GrantMapping for FakeMapping {
        fn as_ptr(&self) -> NonNull<u8> {
            NonNull::from(&self.page[0])
        }
        fn pages(&self) -> usize {
            1
        }
        fn is_writable(&self) -> bool {
            true
        }
    }

    impl Drop for FakeMapping {
        fn drop(&mut self) {
            self.live.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Maps every ref but 0 as a page filled with its ref's low byte; copies fill with 0xCC.
    #[derive(Default)]
    struct FakeGrants {
        live: Arc<AtomicUsize>,
        maps: usize,
        copied: usize,
    }

    impl GrantAccess for FakeGrants {
        type Mapping = FakeMapping;

        fn copy(&mut self, ops: &mut [CopyOp<'_>]) -> usize {
            for op in ops.iter_mut() {
                if let LocalBuf::FromGuest(dst) = op.local() {
                    dst.fill(0xCC);
                }
                op.set_status(Ok(()));
                self.copied += 1;
            }
            0
        }

        fn map(
            &mut self,
            domid: DomId,
            refs: &[GrantRef],
            _writable: bool,
        ) -> Result<FakeMapping, GrantError> {
            let gref = refs[0];
            if gref.0 == 0 {
                return Err(GrantError::NotGranted { domid, gref });
            }
            self.maps += 1;
            self.live.fetch_add(1, Ordering::SeqCst);
            Ok(FakeMapping {
                page: Box::new([gref.0 as u8; PAGE_SIZE]),
                live: Arc::clone(&self.live),
            })
        }
    }

    fn segment(gref: u32) -> DataSegment {
        let seg = Segment {
            gref,
            first_sect: 1,
            last_sect: 1,
            ..Segment::default()
        };
        DataSegment::validate(0, &seg).unwrap()
    }

    /// Reads one sector of each of `grefs`; the bytes read, one per segment.
    fn read(
        grants: &mut FakeGrants,
        persistent: Option<&mut PersistentGrants>,
        grefs: &[u32],
    ) -> Vec<u8> {
        let segments: Vec<DataSegment> = grefs.iter().map(|&g| segment(g)).collect();
        let mut bufs = vec![[0u8; 512]; grefs.len()];
        let moves = segments
            .iter()
            .zip(bufs.iter_mut())
            .map(|(s, b)| (s, LocalBuf::FromGuest(&mut b[..])));
        assert!(move_data(grants, persistent, DomId(1), moves));
        bufs.iter().map(|b| b[0]).collect()
    }

    #[test]
    fn pages_are_mapped_once_and_read_through_the_mapping() {
        let mut grants = FakeGrants::default();
        let mut persistent = PersistentGrants::default();
        assert_eq!(
            read(&mut grants, Some(&mut persistent), &[5, 6, 5]),
            [5, 6, 5]
        );
        assert_eq!(read(&mut grants, Some(&mut persistent), &[6, 7]), [6, 7]);
        assert_eq!(
            (grants.maps, grants.copied, persistent.entries.len()),
            (3, 0, 3)
        );
        drop(persistent);
        assert_eq!(grants.live.load(Ordering::SeqCst), 0, "dropping unmaps all");
    }

    #[test]
    fn without_persistent_grants_or_a_mappable_ref_data_goes_by_grant_copy() {
        let mut grants = FakeGrants::default();
        assert_eq!(read(&mut grants, None, &[5, 6]), [0xCC, 0xCC]);
        let mut persistent = PersistentGrants::default();
        assert_eq!(read(&mut grants, Some(&mut persistent), &[0, 6]), [0xCC, 6]);
        assert_eq!(
            (grants.maps, grants.copied, persistent.entries.len()),
            (1, 3, 1)
        );
    }

    #[test]
    fn writes_land_in_the_mapped_page() {
        let mut grants = FakeGrants::default();
        let mut persistent = PersistentGrants::default();
        let seg = segment(9);
        let data = [0x5Au8; 512];
        let moves = [(&seg, LocalBuf::ToGuest(&data[..]))];
        assert!(move_data(
            &mut grants,
            Some(&mut persistent),
            DomId(1),
            moves
        ));
        assert_eq!(read(&mut grants, Some(&mut persistent), &[9]), [0x5A]);
    }

    #[test]
    fn a_full_ring_purges_its_least_recently_used_idle_grants() {
        // Cap 40: 5% is 2 at a time.
        let mut grants = FakeGrants::default();
        let mut persistent = PersistentGrants::with_limits(40, Duration::ZERO);
        for gref in 1..=40 {
            read(&mut grants, Some(&mut persistent), &[gref]);
        }
        // 1 and 2 used again: 3 and 4 are now the least recently used.
        read(&mut grants, Some(&mut persistent), &[1, 2]);
        assert_eq!(read(&mut grants, Some(&mut persistent), &[41]), [41]);
        assert_eq!(persistent.entries.len(), 39);
        for gone in [3, 4] {
            assert!(!persistent.entries.contains_key(&GrantRef(gone)), "{gone}");
        }
        for kept in [1, 2, 5, 40, 41] {
            assert!(persistent.entries.contains_key(&GrantRef(kept)), "{kept}");
        }
        assert_eq!(
            grants.live.load(Ordering::SeqCst),
            39,
            "purged ones unmapped"
        );
    }

    #[test]
    fn grants_of_the_request_being_moved_are_never_purged() {
        // One request names more pages than the cap: the ones it already mapped stay, the
        // rest go by grant copy.
        let mut grants = FakeGrants::default();
        let mut persistent = PersistentGrants::with_limits(4, Duration::ZERO);
        let got = read(&mut grants, Some(&mut persistent), &[1, 2, 3, 4, 5, 6]);
        assert_eq!(got, [1, 2, 3, 4, 0xCC, 0xCC]);
        assert_eq!((persistent.entries.len(), grants.copied), (4, 2));
        // The next request may purge them, least recently used first.
        assert_eq!(read(&mut grants, Some(&mut persistent), &[7]), [7]);
        assert_eq!(persistent.entries.len(), 4);
        assert!(persistent.entries.contains_key(&GrantRef(7)));
    }

    #[test]
    fn a_full_ring_purges_at_most_once_per_interval_and_copies_meanwhile() {
        // Cap 20: 5% is 1 at a time.
        let mut grants = FakeGrants::default();
        let mut persistent = PersistentGrants::with_limits(20, Duration::from_secs(3600));
        for gref in 1..=20 {
            read(&mut grants, Some(&mut persistent), &[gref]);
        }
        // The first overflow purges one and maps; the next ones, within the interval, copy.
        assert_eq!(read(&mut grants, Some(&mut persistent), &[21]), [21]);
        assert_eq!(
            read(&mut grants, Some(&mut persistent), &[22, 23]),
            [0xCC, 0xCC]
        );
        assert_eq!((grants.maps, grants.copied), (21, 2));
        assert_eq!(persistent.entries.len(), 20);
        assert!(!persistent.entries.contains_key(&GrantRef(1)), "purged");
        // Mapped pages are still used through their mapping meanwhile.
        assert_eq!(read(&mut grants, Some(&mut persistent), &[2, 21]), [2, 21]);
        assert_eq!(grants.copied, 2);
    }
}
