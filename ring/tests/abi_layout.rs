//! Every field offset and struct size against the reference tables (blkif.h compiled for
//! x86_64 and i386; Linux's packed `blkif_x86_{32,64}_*`).
#![cfg(test)]

use blkif::abi::{self, x86_32, x86_64, Segment};
use core::mem::{align_of, offset_of, size_of};

#[test]
fn segment_layout() {
    assert_eq!(size_of::<Segment>(), 8);
    assert_eq!(offset_of!(Segment, gref), 0);
    assert_eq!(offset_of!(Segment, first_sect), 4);
    assert_eq!(offset_of!(Segment, last_sect), 5);
    assert_eq!(offset_of!(Segment, _pad), 6);
    assert_eq!(abi::SEGMENTS_PER_INDIRECT_PAGE, 512);
    assert_eq!(abi::INDIRECT_SEGMENTS_ABI_CEILING, 4096);
}

#[test]
fn x86_64_request_layout() {
    use x86_64::Request as R;
    assert_eq!(
        [
            offset_of!(R, operation),
            offset_of!(R, nr_segments),
            offset_of!(R, handle),
            offset_of!(R, _pad1),
            offset_of!(R, id),
            offset_of!(R, sector_number),
            offset_of!(R, seg),
        ],
        [0, 1, 2, 4, 8, 16, 24]
    );
    assert_eq!(size_of::<R>(), 112);
    assert_eq!(align_of::<R>(), 8);
    assert_eq!(x86_64::SLOT_SIZE, 112);
}

#[test]
fn x86_32_request_layout() {
    use x86_32::Request as R;
    assert_eq!(
        [
            offset_of!(R, operation),
            offset_of!(R, nr_segments),
            offset_of!(R, handle),
            offset_of!(R, id),
            offset_of!(R, sector_number),
            offset_of!(R, seg),
        ],
        [0, 1, 2, 4, 12, 20]
    );
    assert_eq!(size_of::<R>(), 108);
    assert_eq!(align_of::<R>(), 4);
    assert_eq!(x86_32::SLOT_SIZE, 108);
}

#[test]
fn x86_64_discard_layout() {
    use x86_64::DiscardRequest as D;
    assert_eq!(
        [
            offset_of!(D, operation),
            offset_of!(D, flag),
            offset_of!(D, handle),
            offset_of!(D, _pad1),
            offset_of!(D, id),
            offset_of!(D, sector_number),
            offset_of!(D, nr_sectors),
        ],
        [0, 1, 2, 4, 8, 16, 24]
    );
    assert_eq!(size_of::<D>(), 32);
}

#[test]
fn x86_32_discard_layout() {
    use x86_32::DiscardRequest as D;
    assert_eq!(
        [
            offset_of!(D, operation),
            offset_of!(D, flag),
            offset_of!(D, handle),
            offset_of!(D, id),
            offset_of!(D, sector_number),
            offset_of!(D, nr_sectors),
        ],
        [0, 1, 2, 4, 12, 20]
    );
    assert_eq!(size_of::<D>(), 28);
}

#[test]
fn x86_64_indirect_layout() {
    use x86_64::IndirectRequest as I;
    assert_eq!(
        [
            offset_of!(I, operation),
            offset_of!(I, indirect_op),
            offset_of!(I, nr_segments),
            offset_of!(I, _pad1),
            offset_of!(I, id),
            offset_of!(I, sector_number),
            offset_of!(I, handle),
            offset_of!(I, _pad2),
            offset_of!(I, indirect_grefs),
            offset_of!(I, _pad3),
        ],
        [0, 1, 2, 4, 8, 16, 24, 26, 28, 60]
    );
    assert_eq!(size_of::<I>(), 64);
}

#[test]
fn x86_32_indirect_layout() {
    use x86_32::IndirectRequest as I;
    assert_eq!(
        [
            offset_of!(I, operation),
            offset_of!(I, indirect_op),
            offset_of!(I, nr_segments),
            offset_of!(I, id),
            offset_of!(I, sector_number),
            offset_of!(I, handle),
            offset_of!(I, _pad2),
            offset_of!(I, indirect_grefs),
            offset_of!(I, _pad3),
        ],
        [0, 1, 2, 4, 12, 20, 22, 24, 56]
    );
    assert_eq!(size_of::<I>(), 64);
}

#[test]
fn response_layouts() {
    use x86_32::Response as R32;
    use x86_64::Response as R64;
    assert_eq!(
        [
            offset_of!(R64, id),
            offset_of!(R64, operation),
            offset_of!(R64, _pad1),
            offset_of!(R64, status),
            offset_of!(R64, _pad2),
        ],
        [0, 8, 9, 10, 12]
    );
    assert_eq!(size_of::<R64>(), 16);
    assert_eq!(
        [
            offset_of!(R32, id),
            offset_of!(R32, operation),
            offset_of!(R32, _pad1),
            offset_of!(R32, status),
        ],
        [0, 8, 9, 10]
    );
    assert_eq!(size_of::<R32>(), 12);
}

#[test]
fn native_is_x86_64_on_this_host() {
    if cfg!(target_arch = "x86_64") {
        assert_eq!(size_of::<abi::native::Request>(), 112);
        assert_eq!(blkif::Protocol::Native.slot_size(), 112);
    }
    assert_eq!(blkif::Protocol::X86_32.slot_size(), 108);
    assert_eq!(blkif::Protocol::X86_64.slot_size(), 112);
}

#[test]
fn operation_and_status_values() {
    assert_eq!(
        [
            abi::BLKIF_OP_READ,
            abi::BLKIF_OP_WRITE,
            abi::BLKIF_OP_WRITE_BARRIER,
            abi::BLKIF_OP_FLUSH_DISKCACHE,
            abi::BLKIF_OP_RESERVED_1,
            abi::BLKIF_OP_DISCARD,
            abi::BLKIF_OP_INDIRECT,
        ],
        [0, 1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        [
            abi::BLKIF_RSP_OKAY,
            abi::BLKIF_RSP_ERROR,
            abi::BLKIF_RSP_EOPNOTSUPP
        ],
        [0, -1, -2]
    );
    assert_eq!(abi::BLKIF_MAX_SEGMENTS_PER_REQUEST, 11);
    assert_eq!(abi::BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, 8);
    assert_eq!(abi::BLKIF_DISCARD_SECURE, 1);
    assert_eq!(
        [abi::VDISK_CDROM, abi::VDISK_REMOVABLE, abi::VDISK_READONLY],
        [1, 2, 4]
    );
    assert_eq!(abi::SECTORS_PER_PAGE, 8);
}

#[test]
fn ring_sizes_follow_ring_h() {
    // The reference's table: raw slot counts 36/72/145/292/584 (x86_64) and
    // 37/75/151/302/606 (x86_32) round down to 32 << order.
    for order in 0..=blkif::MAX_RING_ORDER {
        assert_eq!(
            blkif::ring_size(order, 112),
            32 << order,
            "x86_64 order {order}"
        );
        assert_eq!(
            blkif::ring_size(order, 108),
            32 << order,
            "x86_32 order {order}"
        );
    }
    // A slot size whose raw count is already a power of two keeps it.
    assert_eq!(blkif::ring_size(0, (4096 - 64) / 16), 16);
    assert_eq!(blkif::HEADER_SIZE, 64);
}

#[test]
fn protocol_strings() {
    use blkif::Protocol;
    assert_eq!(
        Protocol::from_xenstore(Some("x86_32-abi")),
        Ok(Protocol::X86_32)
    );
    if cfg!(target_arch = "x86_64") {
        // Linux compares with the native name first, so on x86_64 this is `Native`.
        assert_eq!(
            Protocol::from_xenstore(Some("x86_64-abi")),
            Ok(Protocol::Native)
        );
        assert_eq!(Protocol::DEFAULT, Protocol::X86_32);
        assert_eq!(Protocol::from_xenstore(None), Ok(Protocol::X86_32));
    }
    assert!(Protocol::from_xenstore(Some("x86_16-abi")).is_err());
    assert!(Protocol::from_xenstore(Some("")).is_err());
    for p in [Protocol::Native, Protocol::X86_32, Protocol::X86_64] {
        assert_eq!(
            p.name().parse::<Protocol>().map(|q| q.slot_size()),
            Ok(p.slot_size())
        );
    }
}
