//! Junk in the fields a request leaves unused, as a Linux guest leaves them: blkfront reuses
//! its shadow requests without clearing them and copies the whole shadow into the slot, so
//! a discard's `handle`, the `seg` entries past `nr_segments` and the indirect page refs
//! past the pages in use hold whatever an earlier request put there. A back end must not
//! read them; sending junk there lets the tests show that it does not.

use blkif::abi::{Segment, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, SEGMENTS_PER_INDIRECT_PAGE};
use blkif::{RawDiscard, RawRequest};

/// A deterministic source of junk (xorshift64), so that a failing run can be repeated.
#[derive(Debug, Clone)]
pub(crate) struct Stale(u64);

impl Stale {
    /// A source seeded with `seed`: distinct seeds give distinct sequences (the multiply
    /// spreads them, the `| 1` keeps the generator off its fixed point 0).
    pub(crate) fn new(seed: u64) -> Self {
        Stale(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A segment entry of random bytes, padding included (sectors mostly out of range).
    fn segment(&mut self) -> Segment {
        let [g0, g1, g2, g3, first_sect, last_sect, p0, p1] = self.next().to_le_bytes();
        Segment {
            gref: u32::from_le_bytes([g0, g1, g2, g3]),
            first_sect,
            last_sect,
            _pad: [p0, p1],
        }
    }

    /// `request` with junk in every field it does not use.
    pub(crate) fn fill_unused(&mut self, request: RawRequest) -> RawRequest {
        match request {
            RawRequest::Direct(mut r) => {
                for seg in r.seg.iter_mut().skip(r.nr_segments.into()) {
                    *seg = self.segment();
                }
                RawRequest::Direct(r)
            }
            RawRequest::Discard(r) => RawRequest::Discard(RawDiscard {
                handle: self.next() as u16,
                ..r
            }),
            RawRequest::Indirect(mut r) => {
                let used = usize::from(r.nr_segments)
                    .div_ceil(SEGMENTS_PER_INDIRECT_PAGE)
                    .min(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);
                for gref in r.indirect_grefs.iter_mut().skip(used) {
                    *gref = self.next() as u32;
                }
                RawRequest::Indirect(r)
            }
            other @ RawRequest::Other { .. } => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blkif::abi::{BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_WRITE};
    use blkif::{RawDirect, RawIndirect};

    fn direct(operation: u8, used: u8) -> RawDirect {
        let mut seg = [Segment::default(); BLKIF_MAX_SEGMENTS_PER_REQUEST];
        for (i, s) in (0u32..).zip(seg.iter_mut()).take(used.into()) {
            *s = Segment::new(100 + i, 0, 7);
        }
        RawDirect {
            operation,
            nr_segments: used,
            handle: 51712,
            id: 3,
            sector_number: 8,
            seg,
        }
    }

    #[test]
    fn only_unused_fields_get_junk() {
        // Before, every unused field went out zeroed, which no Linux guest guarantees.
        let mut stale = Stale::new(7);
        for (operation, used) in [(BLKIF_OP_WRITE, 3), (BLKIF_OP_FLUSH_DISKCACHE, 0)] {
            let clean = direct(operation, used);
            let RawRequest::Direct(got) = stale.fill_unused(RawRequest::Direct(clean)) else {
                panic!("not direct");
            };
            let used = usize::from(used);
            assert_eq!(got.seg[..used], clean.seg[..used]);
            assert!(got.seg[used..].iter().all(|s| *s != Segment::default()));
            assert_eq!(
                RawDirect {
                    seg: clean.seg,
                    ..got
                },
                clean
            );
        }
        let discard = RawDiscard {
            flag: 0,
            handle: 0,
            id: 1,
            sector_number: 2,
            nr_sectors: 3,
        };
        let got = stale.fill_unused(RawRequest::Discard(discard));
        let RawRequest::Discard(got) = got else {
            panic!("not a discard")
        };
        assert_ne!(got.handle, 0);
        assert_eq!(RawDiscard { handle: 0, ..got }, discard);
        let indirect = RawIndirect {
            indirect_op: BLKIF_OP_WRITE,
            nr_segments: 513,
            handle: 51712,
            id: 4,
            sector_number: 0,
            indirect_grefs: [9, 10, 0, 0, 0, 0, 0, 0],
        };
        let RawRequest::Indirect(got) = stale.fill_unused(RawRequest::Indirect(indirect)) else {
            panic!("not indirect")
        };
        assert_eq!(got.indirect_grefs[..2], [9, 10]);
        assert!(got.indirect_grefs[2..].iter().all(|&g| g != 0));
        assert_eq!(
            RawIndirect {
                indirect_grefs: indirect.indirect_grefs,
                ..got
            },
            indirect
        );
    }
}
