//! The keys the back end writes, in the two phases of reference xenbus-vbd.md section 4:
//! ring, queue and indirect features before InitWait; everything that depends on the storage
//! at connect, in one transaction.

use super::backing::Backing;
use super::device::DeviceConfig;
use super::frontend::Limits;

/// `feature-max-indirect-segments`, as Linux's MAX_INDIRECT_SEGMENTS.
pub const MAX_INDIRECT_SEGMENTS: u32 = 256;

/// Whether we write `feature-persistent=1` at connect: the pipeline keeps data pages mapped
/// (up to `vbd::MAX_PERSISTENT_GRANTS` per ring) when the front end offers them too. Whoever
/// builds a `vbd::Connect` passes this as its `persistent`.
pub const PERSISTENT_GRANTS: bool = true;

/// `info` bits (blkif.h VDISK_*).
pub const VDISK_CDROM: u32 = 1;
pub const VDISK_READONLY: u32 = 4;

/// Written before the switch to InitWait.
pub fn probe_keys(limits: Limits) -> Vec<(&'static str, String)> {
    vec![
        (
            "feature-max-indirect-segments",
            MAX_INDIRECT_SEGMENTS.to_string(),
        ),
        ("multi-queue-max-queues", limits.max_queues.to_string()),
        (
            "max-ring-page-order",
            limits.max_ring_page_order.to_string(),
        ),
    ]
}

/// Written in one transaction at connect, before the switch to Connected. `persistent` is
/// whether we will use persistent grants with this front end.
pub fn connect_keys(
    device: &DeviceConfig,
    backing: &Backing,
    persistent: bool,
) -> Vec<(&'static str, String)> {
    let flag = |on: bool| if on { "1" } else { "0" }.to_owned();
    let mut keys = vec![
        ("feature-flush-cache", flag(backing.flush)),
        // Linux writes the same value for barriers.
        ("feature-barrier", flag(backing.flush)),
    ];
    // Not written at all when the toolstack disabled discard, as Linux does.
    if device.discard_enable {
        keys.push(("feature-discard", flag(backing.discard.is_some())));
        if let Some(discard) = backing.discard {
            keys.push(("discard-granularity", discard.granularity.to_string()));
            keys.push(("discard-alignment", discard.alignment.to_string()));
            keys.push(("discard-secure", flag(discard.secure)));
        }
    }
    let mut info = 0;
    if device.cdrom {
        info |= VDISK_CDROM;
    }
    if !device.writable || backing.read_only {
        info |= VDISK_READONLY;
    }
    keys.extend([
        ("feature-persistent", flag(persistent)),
        ("sectors", backing.sectors().to_string()),
        ("info", info.to_string()),
        ("sector-size", backing.logical_sector_size.to_string()),
        (
            "physical-sector-size",
            backing.physical_sector_size.to_string(),
        ),
    ]);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::DomId;
    use crate::xenbus::backing::Discard;

    fn device(writable: bool, discard_enable: bool) -> DeviceConfig {
        DeviceConfig {
            frontend: "/local/domain/5/device/vbd/51712".into(),
            frontend_id: DomId(5),
            writable,
            cdrom: false,
            discard_enable,
        }
    }

    const FILE: Backing = Backing {
        size_bytes: 1 << 30,
        logical_sector_size: 512,
        physical_sector_size: 4096,
        read_only: false,
        flush: true,
        discard: Some(Discard {
            granularity: 4096,
            alignment: 0,
            secure: false,
        }),
    };

    fn get<'a>(keys: &'a [(&str, String)], key: &str) -> Option<&'a str> {
        keys.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn probe_keys_advertise_our_limits() {
        let keys = probe_keys(Limits {
            max_ring_page_order: 4,
            max_queues: 2,
        });
        assert_eq!(get(&keys, "max-ring-page-order"), Some("4"));
        assert_eq!(get(&keys, "multi-queue-max-queues"), Some("2"));
        assert_eq!(get(&keys, "feature-max-indirect-segments"), Some("256"));
    }

    #[test]
    fn connect_keys_for_a_writable_file() {
        let keys = connect_keys(&device(true, true), &FILE, true);
        assert_eq!(get(&keys, "sectors"), Some("2097152"));
        assert_eq!(get(&keys, "info"), Some("0"));
        assert_eq!(get(&keys, "sector-size"), Some("512"));
        assert_eq!(get(&keys, "physical-sector-size"), Some("4096"));
        assert_eq!(get(&keys, "feature-flush-cache"), Some("1"));
        assert_eq!(get(&keys, "feature-discard"), Some("1"));
        assert_eq!(get(&keys, "discard-granularity"), Some("4096"));
        assert_eq!(get(&keys, "feature-persistent"), Some("1"));
    }

    #[test]
    fn read_only_and_discard_disabled() {
        // mode=r, discard-enable=0: READONLY in info and no discard key at all.
        let keys = connect_keys(&device(false, false), &FILE, false);
        assert_eq!(get(&keys, "info"), Some("4"));
        assert_eq!(get(&keys, "feature-discard"), None);
        assert_eq!(get(&keys, "discard-granularity"), None);
        // A read-only device under mode=w is read-only too.
        let ro = Backing {
            read_only: true,
            ..FILE
        };
        assert_eq!(
            get(&connect_keys(&device(true, true), &ro, false), "info"),
            Some("4")
        );
    }
}
