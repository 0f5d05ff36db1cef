//! What a request costs in each kind of limit.
//!
//! The rules (DESIGN.md, "QoS semantics", Cost): reads charge the read and total limits; writes,
//! and flushes or barriers that carry data, charge the write and total limits with their bytes;
//! a flush or barrier without data and a discard cost one operation and zero bytes in the write
//! and total limits, whatever the discard's range.

use super::config::LimitKind;

/// The kind of a block request, as far as QoS cares.
// A word-sized tag leaves `Request` without padding, so the copies on the admission path move
// whole words; with a one-byte tag they stalled on store forwarding (about 5 ns a decision).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Op {
    /// BLKIF_OP_READ.
    Read,
    /// BLKIF_OP_WRITE.
    Write,
    /// BLKIF_OP_FLUSH_DISKCACHE or BLKIF_OP_WRITE_BARRIER; may carry data.
    Flush,
    /// BLKIF_OP_DISCARD; its range is never charged.
    Discard,
}

/// The direction a request is charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Reads.
    Read,
    /// Writes, flushes, barriers and discards.
    Write,
}

impl Direction {
    /// Index into per-direction counter arrays.
    pub const fn index(self) -> usize {
        match self {
            Direction::Read => 0,
            Direction::Write => 1,
        }
    }
}

/// One request as the limiter sees it: an opaque id chosen by the caller, its kind and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The caller's handle for the request (e.g. a slab key); returned on admission.
    pub id: u64,
    /// What the request does.
    pub op: Op,
    /// Bytes of data the request carries (for a discard: the range, which is not charged).
    pub bytes: u64,
}

impl Request {
    /// The direction whose limits the request is charged to.
    pub fn direction(&self) -> Direction {
        match self.op {
            Op::Read => Direction::Read,
            Op::Write | Op::Flush | Op::Discard => Direction::Write,
        }
    }

    /// Bytes charged to bandwidth limits.
    pub fn charged_bytes(&self) -> u64 {
        match self.op {
            Op::Read | Op::Write | Op::Flush => self.bytes,
            Op::Discard => 0,
        }
    }

    /// The cost in the base unit of a limit of `kind`, or 0 when the limit does not apply.
    ///
    /// Operation limits count in units of `1 / iops_size` operations when `iops_size` is set, so
    /// that the fractional cost max(1, N / iops-size) is an exact integer: max(iops_size, N).
    pub fn cost(&self, kind: LimitKind, iops_size: Option<u64>) -> u64 {
        let applies = match (kind.direction(), self.direction()) {
            (None, _) => true,
            (Some(limit), mine) => limit == mine,
        };
        if !applies {
            return 0;
        }
        match kind {
            LimitKind::Tokens => 1,
            LimitKind::IopsTotal | LimitKind::IopsRead | LimitKind::IopsWrite => match iops_size {
                Some(size) => self.charged_bytes().max(size),
                None => 1,
            },
            LimitKind::BpsTotal | LimitKind::BpsRead | LimitKind::BpsWrite => self.charged_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: Op, bytes: u64) -> Request {
        Request { id: 0, op, bytes }
    }

    #[test]
    fn reads_charge_read_and_total_only() {
        let r = req(Op::Read, 4096);
        assert_eq!(r.cost(LimitKind::BpsRead, None), 4096);
        assert_eq!(r.cost(LimitKind::BpsTotal, None), 4096);
        assert_eq!(r.cost(LimitKind::BpsWrite, None), 0);
        assert_eq!(r.cost(LimitKind::IopsWrite, None), 0);
        assert_eq!(r.cost(LimitKind::Tokens, None), 1);
    }

    #[test]
    fn flush_with_data_is_a_write_and_without_data_one_op_zero_bytes() {
        let with_data = req(Op::Flush, 8192);
        assert_eq!(with_data.cost(LimitKind::BpsWrite, None), 8192);
        assert_eq!(with_data.cost(LimitKind::BpsRead, None), 0);
        let bare = req(Op::Flush, 0);
        assert_eq!(bare.cost(LimitKind::IopsWrite, None), 1);
        assert_eq!(bare.cost(LimitKind::BpsTotal, None), 0);
        assert_eq!(bare.cost(LimitKind::IopsTotal, Some(4096)), 4096);
    }

    #[test]
    fn discard_range_is_never_charged() {
        let d = req(Op::Discard, 1 << 30);
        assert_eq!(d.cost(LimitKind::BpsWrite, None), 0);
        assert_eq!(d.cost(LimitKind::IopsTotal, None), 1);
        assert_eq!(d.cost(LimitKind::IopsTotal, Some(512)), 512);
    }

    #[test]
    fn iops_size_makes_large_requests_count_fractionally() {
        let r = req(Op::Write, 10_000);
        // 10,000 / 4,096 operations, in units of 1/4096 operation.
        assert_eq!(r.cost(LimitKind::IopsTotal, Some(4096)), 10_000);
        // Small requests count as one whole operation.
        assert_eq!(
            req(Op::Write, 512).cost(LimitKind::IopsTotal, Some(4096)),
            4096
        );
    }
}
