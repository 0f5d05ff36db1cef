//! An xl `disk=` line as libxl reads it (reference xl-hotplug.md sections 1-3; xen
//! docs/man/xl-disk-configuration.5.pod.in, tools/libs/util/libxlu_disk_l.l): comma-separated
//! `key=value`s, flags and positionals (target, format, vdev, access); `target=` takes the
//! rest of the line. The simulated host serves what tokenbackd serves: raw disks on the phy
//! back end (`backend/vbd`) with a hotplug script.

use std::collections::BTreeMap;

use thiserror::Error;

use super::DiskSpec;

/// Why a disk line was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum XlDiskError {
    #[error("`{0}` is given twice")]
    Repeated(&'static str),
    #[error("unknown parameter `{0}`")]
    Unknown(String),
    #[error("too many positional parameters at `{0}`")]
    TooManyPositional(String),
    #[error("{key}: `{value}` is not {what}")]
    BadValue {
        key: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("no vdev")]
    NoVdev,
    #[error("no target")]
    NoTarget,
    #[error("{0} is not served by the simulated host (a raw disk on the phy back end is)")]
    Unsupported(String),
}

/// The parts of a disk line the simulated toolstack acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XlDisk {
    pub vdev: String,
    pub devid: u16,
    /// Verbatim: it becomes `params`.
    pub target: String,
    pub writable: bool,
    /// `script=`, default Xen's `block`.
    pub script: String,
}

impl XlDisk {
    /// Parses a disk line.
    pub fn parse(line: &str) -> Result<XlDisk, XlDiskError> {
        let mut fields = Fields::default();
        let mut rest = line;
        let mut positional = POSITIONAL.iter();
        while !rest.trim().is_empty() {
            let part = rest.trim_start();
            if let Some(target) = part.strip_prefix("target=") {
                fields.set("target", target)?;
                break;
            }
            let (item, next) = part.split_once(',').unwrap_or((part, ""));
            rest = next;
            let item = item.trim_end();
            match item.split_once('=') {
                Some((key, value)) => {
                    let key = KEYS
                        .iter()
                        .find(|k| **k == key.trim())
                        .ok_or_else(|| XlDiskError::Unknown(item.to_owned()))?;
                    fields.set(key, value)?;
                }
                // Flags of the phy back end that change nothing here.
                None if FLAGS.contains(&item) || item.is_empty() => {}
                None => {
                    let key = positional
                        .next()
                        .ok_or_else(|| XlDiskError::TooManyPositional(item.to_owned()))?;
                    fields.set(key, item)?;
                }
            }
        }
        fields.finish()
    }

    /// The toolstack's view: `params` = target, the script as given.
    pub fn spec(&self) -> DiskSpec {
        DiskSpec {
            devid: self.devid,
            vdev: self.vdev.clone(),
            params: self.target.clone(),
            writable: self.writable,
            script: self.script.clone(),
        }
    }
}

const POSITIONAL: [&str; 4] = ["target", "format", "vdev", "access"];
const KEYS: [&str; 7] = [
    "target",
    "format",
    "vdev",
    "access",
    "script",
    "backendtype",
    "devtype",
];
const FLAGS: [&str; 5] = [
    "discard",
    "no-discard",
    "trusted",
    "untrusted",
    "direct-io-safe",
];

/// Each parameter at most once.
#[derive(Default)]
struct Fields(BTreeMap<&'static str, String>);

impl Fields {
    fn set(&mut self, key: &'static str, value: &str) -> Result<(), XlDiskError> {
        if self.0.insert(key, value.trim().to_owned()).is_some() {
            return Err(XlDiskError::Repeated(key));
        }
        Ok(())
    }

    fn finish(mut self) -> Result<XlDisk, XlDiskError> {
        for (key, fine) in [
            ("format", "raw"),
            ("backendtype", "phy"),
            ("devtype", "disk"),
        ] {
            if let Some(value) = self.0.get(key).filter(|v| *v != fine) {
                return Err(XlDiskError::Unsupported(format!("{key}={value}")));
            }
        }
        let vdev = self.0.remove("vdev").ok_or(XlDiskError::NoVdev)?;
        let devid = devid(&vdev).ok_or_else(|| XlDiskError::BadValue {
            key: "vdev",
            value: vdev.clone(),
            what: "a disk name such as xvda, sdb or hdc, or a device number below 65536",
        })?;
        let writable = match self.0.get("access").map(String::as_str) {
            None | Some("w" | "rw") => true,
            Some("r" | "ro") => false,
            Some(other) => {
                return Err(XlDiskError::BadValue {
                    key: "access",
                    value: other.to_owned(),
                    what: "r, ro, w or rw",
                })
            }
        };
        let target = self.0.remove("target").filter(|t| !t.is_empty());
        Ok(XlDisk {
            vdev,
            devid,
            target: target.ok_or(XlDiskError::NoTarget)?,
            writable,
            script: self.0.remove("script").unwrap_or_else(|| "block".into()),
        })
    }
}

/// The device number of a vdev (xen docs/man/xen-vbd-interface.7.pandoc), for the forms
/// that fit 16 bits: xvd, sd and hd names, or a number.
pub fn devid(vdev: &str) -> Option<u16> {
    if let Ok(n) = vdev.parse::<u16>() {
        return Some(n);
    }
    let (prefix, rest) = ["xvd", "sd", "hd"]
        .iter()
        .find_map(|p| vdev.strip_prefix(p).map(|r| (*p, r)))?;
    let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
    let (name, partition) = rest.split_at(letters);
    if name.len() != 1 {
        return None;
    }
    let disk = u16::from(name.as_bytes()[0] - b'a');
    let partition: u16 = match partition {
        "" => 0,
        p if !p.starts_with('0') => p.parse().ok()?,
        _ => return None,
    };
    match prefix {
        "xvd" if partition < 16 => Some((202 << 8) | (disk << 4) | partition),
        "sd" if partition < 16 => Some((8 << 8) | (disk << 4) | partition),
        "hd" if disk < 2 && partition < 64 => Some((3 << 8) | (disk << 6) | partition),
        "hd" if disk < 4 && partition < 64 => Some((22 << 8) | ((disk - 2) << 6) | partition),
        _ => None,
    }
}

/// block-tokenback's target: the storage, then `?` and the QoS keys joined by `&`.
pub fn target<K: AsRef<str>, V: AsRef<str>>(storage: &str, qos: &[(K, V)]) -> String {
    let options: Vec<String> = qos
        .iter()
        .map(|(k, v)| format!("{}={}", k.as_ref(), v.as_ref()))
        .collect();
    if options.is_empty() {
        storage.to_owned()
    } else {
        format!("{storage}?{}", options.join("&"))
    }
}

/// The QoS keys of block-tokenback's target, as given (the script checks them).
pub fn target_qos(target: &str) -> Vec<(String, String)> {
    let Some((_, options)) = target.split_once('?') else {
        return Vec::new();
    };
    options
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
