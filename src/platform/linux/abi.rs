//! The ioctl ABI of /dev/xen/gntdev and /dev/xen/evtchn (x86_64), from Linux's uapi headers.
//!
//! Every struct is `#[repr(C)]` with its padding spelled out; the tests check numbers, sizes and
//! offsets against the values compiled from the headers.

use std::mem::size_of;

/// `_IOC(_IOC_NONE, type, nr, size)` (include/uapi/asm-generic/ioctl.h). Both devices encode
/// their ioctls with `_IOC_NONE` although they pass a struct pointer.
const fn ioc_none(ty: u8, nr: u8, size: usize) -> u32 {
    ((size as u32) << 16) | ((ty as u32) << 8) | nr as u32
}

const GNTDEV_TYPE: u8 = b'G';
const EVTCHN_TYPE: u8 = b'E';

// include/uapi/xen/gntdev.h: struct ioctl_gntdev_grant_ref
/// One grant to map: the granting domain and its ref.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GntdevGrantRef {
    pub domid: u32,
    pub gref: u32,
}

// include/uapi/xen/gntdev.h: struct ioctl_gntdev_map_grant_ref, without its trailing
// `refs[1]`: `count` refs follow it directly (see `MapGrantRefRequest`).
/// Head of IOCTL_GNTDEV_MAP_GRANT_REF's argument.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GntdevMapGrantRefHead {
    /// In: number of refs that follow.
    pub count: u32,
    pub pad: u32,
    /// Out: the mmap offset of the mapping, in bytes.
    pub index: u64,
}

// include/uapi/xen/gntdev.h: struct ioctl_gntdev_unmap_grant_ref
/// IOCTL_GNTDEV_UNMAP_GRANT_REF's argument.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GntdevUnmapGrantRef {
    pub index: u64,
    pub count: u32,
    pub pad: u32,
}

// include/uapi/xen/gntdev.h: struct gntdev_grant_copy_segment, `foreign` of its unions.
/// The grant side of a copy segment.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GntdevCopyForeign {
    pub gref: u32,
    pub offset: u16,
    pub domid: u16,
}

// include/uapi/xen/gntdev.h: the `source`/`dest` union of struct gntdev_grant_copy_segment.
/// One side of a copy segment: a local address or a grant, as `flags` says.
#[repr(C)]
#[derive(Clone, Copy)]
pub union GntdevCopyPtr {
    pub virt: u64,
    pub foreign: GntdevCopyForeign,
}

// include/uapi/xen/gntdev.h: struct gntdev_grant_copy_segment
/// One segment of IOCTL_GNTDEV_GRANT_COPY.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GntdevCopySegment {
    pub source: GntdevCopyPtr,
    pub dest: GntdevCopyPtr,
    pub len: u16,
    /// `GNTCOPY_source_gref` and/or `GNTCOPY_dest_gref`.
    pub flags: u16,
    /// Out: `GNTST_*` of this segment.
    pub status: i16,
    pub pad: u16,
}

// include/uapi/xen/gntdev.h: struct ioctl_gntdev_grant_copy
/// IOCTL_GNTDEV_GRANT_COPY's argument.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GntdevGrantCopy {
    pub count: u32,
    pub pad: u32,
    pub segments: *mut GntdevCopySegment,
}

/// xen/include/public/grant_table.h: the source of a copy segment is a grant.
pub const GNTCOPY_SOURCE_GREF: u16 = 1;
/// xen/include/public/grant_table.h: the destination of a copy segment is a grant.
pub const GNTCOPY_DEST_GREF: u16 = 2;

/// IOCTL_GNTDEV_MAP_GRANT_REF; sized with one ref, as the header's `refs[1]` is.
pub const IOCTL_GNTDEV_MAP_GRANT_REF: u32 = ioc_none(
    GNTDEV_TYPE,
    0,
    size_of::<GntdevMapGrantRefHead>() + size_of::<GntdevGrantRef>(),
);
/// IOCTL_GNTDEV_UNMAP_GRANT_REF.
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: u32 =
    ioc_none(GNTDEV_TYPE, 1, size_of::<GntdevUnmapGrantRef>());
/// IOCTL_GNTDEV_GRANT_COPY.
pub const IOCTL_GNTDEV_GRANT_COPY: u32 = ioc_none(GNTDEV_TYPE, 8, size_of::<GntdevGrantCopy>());

// include/uapi/xen/evtchn.h: struct ioctl_evtchn_bind_interdomain
/// IOCTL_EVTCHN_BIND_INTERDOMAIN's argument.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EvtchnBindInterdomain {
    pub remote_domain: u32,
    pub remote_port: u32,
}

// include/uapi/xen/evtchn.h: struct ioctl_evtchn_unbind and struct ioctl_evtchn_notify
/// The argument of IOCTL_EVTCHN_UNBIND and IOCTL_EVTCHN_NOTIFY: one local port.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EvtchnPortArg {
    pub port: u32,
}

/// IOCTL_EVTCHN_BIND_INTERDOMAIN; returns the new local port.
pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: u32 =
    ioc_none(EVTCHN_TYPE, 1, size_of::<EvtchnBindInterdomain>());
/// IOCTL_EVTCHN_UNBIND.
pub const IOCTL_EVTCHN_UNBIND: u32 = ioc_none(EVTCHN_TYPE, 3, size_of::<EvtchnPortArg>());
/// IOCTL_EVTCHN_NOTIFY.
pub const IOCTL_EVTCHN_NOTIFY: u32 = ioc_none(EVTCHN_TYPE, 4, size_of::<EvtchnPortArg>());
/// IOCTL_EVTCHN_RESET: clears the overflow that makes read fail with `EFBIG`.
pub const IOCTL_EVTCHN_RESET: u32 = ioc_none(EVTCHN_TYPE, 5, 0);

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn gntdev_ioctl_numbers_match_the_headers() {
        assert_eq!(IOCTL_GNTDEV_MAP_GRANT_REF, 0x0018_4700);
        assert_eq!(IOCTL_GNTDEV_UNMAP_GRANT_REF, 0x0010_4701);
        assert_eq!(IOCTL_GNTDEV_GRANT_COPY, 0x0010_4708);
    }

    #[test]
    fn evtchn_ioctl_numbers_match_the_headers() {
        assert_eq!(IOCTL_EVTCHN_BIND_INTERDOMAIN, 0x0008_4501);
        assert_eq!(IOCTL_EVTCHN_UNBIND, 0x0004_4503);
        assert_eq!(IOCTL_EVTCHN_NOTIFY, 0x0004_4504);
        assert_eq!(IOCTL_EVTCHN_RESET, 0x0000_4505);
    }

    #[test]
    fn gntdev_map_and_unmap_layouts() {
        assert_eq!(size_of::<GntdevGrantRef>(), 8);
        assert_eq!(offset_of!(GntdevGrantRef, gref), 4);
        assert_eq!(size_of::<GntdevMapGrantRefHead>(), 16);
        assert_eq!(offset_of!(GntdevMapGrantRefHead, count), 0);
        assert_eq!(offset_of!(GntdevMapGrantRefHead, index), 8);
        assert_eq!(size_of::<GntdevUnmapGrantRef>(), 16);
        assert_eq!(offset_of!(GntdevUnmapGrantRef, index), 0);
        assert_eq!(offset_of!(GntdevUnmapGrantRef, count), 8);
    }

    #[test]
    fn gntdev_copy_layouts() {
        assert_eq!(size_of::<GntdevCopyForeign>(), 8);
        assert_eq!(offset_of!(GntdevCopyForeign, gref), 0);
        assert_eq!(offset_of!(GntdevCopyForeign, offset), 4);
        assert_eq!(offset_of!(GntdevCopyForeign, domid), 6);
        assert_eq!(size_of::<GntdevCopyPtr>(), 8);
        assert_eq!(size_of::<GntdevCopySegment>(), 24);
        assert_eq!(offset_of!(GntdevCopySegment, source), 0);
        assert_eq!(offset_of!(GntdevCopySegment, dest), 8);
        assert_eq!(offset_of!(GntdevCopySegment, len), 16);
        assert_eq!(offset_of!(GntdevCopySegment, flags), 18);
        assert_eq!(offset_of!(GntdevCopySegment, status), 20);
        assert_eq!(size_of::<GntdevGrantCopy>(), 16);
        assert_eq!(offset_of!(GntdevGrantCopy, segments), 8);
        assert_eq!((GNTCOPY_SOURCE_GREF, GNTCOPY_DEST_GREF), (1, 2));
    }

    #[test]
    fn evtchn_layouts() {
        assert_eq!(size_of::<EvtchnBindInterdomain>(), 8);
        assert_eq!(offset_of!(EvtchnBindInterdomain, remote_port), 4);
        assert_eq!(size_of::<EvtchnPortArg>(), 4);
    }
}
