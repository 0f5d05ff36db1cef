//! The toolstack's keys in a VBD's backend directory (reference xenbus-vbd.md section 3), read
//! and validated into a `DeviceConfig`. The toolstack is trusted, but a typo or a foreign tool
//! must still fail that VBD with a reason rather than be guessed at.

use thiserror::Error;

use super::frontend::parse_decimal;
use crate::platform::{DomId, DOMID_FIRST_RESERVED};

/// A VBD as the toolstack described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Absolute path of the frontend directory.
    pub frontend: String,
    pub frontend_id: DomId,
    /// `mode` holds `w`.
    pub writable: bool,
    /// `device-type` is `cdrom`.
    pub cdrom: bool,
    /// `discard-enable`: absent means on for a writable disk (libxl's default).
    pub discard_enable: bool,
}

/// Why a backend directory's toolstack keys cannot be served. `key` is relative to it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DeviceError {
    #[error("{key}: missing")]
    Missing { key: &'static str },
    #[error("{key}: {value:?} {why}")]
    Invalid {
        key: &'static str,
        value: String,
        why: &'static str,
    },
}

/// Reads the toolstack's keys; `read(key)` is relative to the backend directory.
pub fn read_device(read: impl Fn(&str) -> Option<String>) -> Result<DeviceConfig, DeviceError> {
    // Every key is read before the first error, so that a caller fetching them
    // asynchronously learns all the names it needs in one round (see `key_cache`).
    let [frontend, id, mode, device_type, discard] = [
        "frontend",
        "frontend-id",
        "mode",
        "device-type",
        "discard-enable",
    ]
    .map(&read);
    let required =
        |key: &'static str, value: Option<String>| value.ok_or(DeviceError::Missing { key });
    let invalid = |key, value: String, why| DeviceError::Invalid { key, value, why };

    let frontend = required("frontend", frontend)?;
    if !frontend.starts_with('/') {
        return Err(invalid("frontend", frontend, "is not an absolute path"));
    }
    let id = required("frontend-id", id)?;
    let frontend_id = match parse_decimal(&id) {
        // Reserved ids (DOMID_FIRST_RESERVED and up) name no domain.
        Some(n) if n < u32::from(DOMID_FIRST_RESERVED) => DomId(n as u16),
        _ => return Err(invalid("frontend-id", id, "is not a domain id")),
    };
    let writable = match required("mode", mode)?.as_str() {
        "r" => false,
        "w" => true,
        other => return Err(invalid("mode", other.into(), "is neither r nor w")),
    };
    let cdrom = match device_type.as_deref() {
        None | Some("disk") => false,
        Some("cdrom") => true,
        Some(other) => {
            return Err(invalid(
                "device-type",
                other.into(),
                "is neither disk nor cdrom",
            ))
        }
    };
    let discard_enable = match discard.as_deref() {
        None => writable,
        Some("0") => false,
        Some("1") => true,
        Some(other) => {
            return Err(invalid(
                "discard-enable",
                other.into(),
                "is neither 0 nor 1",
            ))
        }
    };
    Ok(DeviceConfig {
        frontend,
        frontend_id,
        writable,
        cdrom,
        discard_enable,
    })
}

/// `online`: Linux counts any non-zero value as online and a missing key as offline.
pub fn is_online(value: Option<&str>) -> bool {
    value.and_then(parse_decimal).is_some_and(|n| n != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xenbus::tests::read_from;

    const XL: [(&str, &str); 7] = [
        ("frontend", "/local/domain/5/device/vbd/51712"),
        ("frontend-id", "5"),
        ("params", "/dev/vg0/guest1"),
        ("type", "phy"),
        ("mode", "w"),
        ("device-type", "disk"),
        ("online", "1"),
    ];

    #[test]
    fn what_libxl_writes_is_read() {
        let config = read_device(read_from(&XL)).unwrap();
        assert_eq!(
            config,
            DeviceConfig {
                frontend: "/local/domain/5/device/vbd/51712".into(),
                frontend_id: DomId(5),
                writable: true,
                cdrom: false,
                discard_enable: true,
            }
        );
        // Read-only: discard off unless asked for.
        let ro = [&XL[..6], &[("mode", "r")]].concat();
        let ro = read_device(read_from(&ro[..])).unwrap();
        assert!(!ro.writable && !ro.discard_enable);
    }

    #[test]
    fn bad_toolstack_keys_name_the_key() {
        let with = |key: &str, value: &'static str| {
            let mut keys: Vec<(&str, &str)> =
                XL.iter().filter(|(k, _)| *k != key).copied().collect();
            keys.push((XL.iter().find(|(k, _)| *k == key).unwrap().0, value));
            read_device(read_from(&keys))
        };
        for (key, value) in [
            ("frontend", "local/domain/5"),
            ("frontend-id", "-1"),
            ("frontend-id", "32752"),
            ("frontend-id", "five"),
            ("mode", "rw"),
            ("device-type", "floppy"),
        ] {
            match with(key, value) {
                Err(DeviceError::Invalid {
                    key: k, value: v, ..
                }) => {
                    assert_eq!((k, v.as_str()), (key, value))
                }
                other => panic!("{key}={value:?} gave {other:?}"),
            }
        }
        let no_mode: Vec<_> = XL.iter().filter(|(k, _)| *k != "mode").copied().collect();
        assert_eq!(
            read_device(read_from(&no_mode)),
            Err(DeviceError::Missing { key: "mode" })
        );
    }

    #[test]
    fn online_as_linux_reads_it() {
        assert!(is_online(Some("1")));
        assert!(is_online(Some("2")));
        assert!(!is_online(Some("0")));
        assert!(!is_online(None));
        assert!(!is_online(Some("yes")));
    }
}
