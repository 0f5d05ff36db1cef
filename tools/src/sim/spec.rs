//! `--disk` specs: `key=value` pairs separated by commas, e.g.
//! `size=256M,rw=randread,bs=4k,qd=16,iops-read=2000,retune-at=5s:iops-read=500`.
//!
//! Keys: `size` (bytes, K/M/G suffixes; default 64M), `rw` (read, write, randread,
//! randwrite, randrw; default randread), `bs` (default 4k), `qd` (default 16), `guest` (disks
//! naming the same guest share one; default a guest per disk), `verify` (0 or 1; default 1),
//! `queues` (the guest's cap on queues, as Linux caps them at its vCPUs; default 4),
//! `file` (existing storage to serve, a file or block device, instead of a fresh sparse file
//! of `size` in the run directory; verify=0 unless it starts zeroed),
//! `retune-at=TIME:KEY=VALUE` (write a QoS key at TIME, e.g. `5s` or `2500ms`), and every QoS
//! key of docs/qos.md, checked as tokenbackd checks them.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;
use tokenback::limiter::VbdConfig;

use crate::toolstack::xl_disk::{self, XlDisk, XlDiskError};
use crate::workload::Mode;

/// One disk of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// Bytes of storage (a sparse file).
    pub size: u64,
    pub mode: Mode,
    pub block_size: usize,
    pub queue_depth: usize,
    /// The guest it belongs to, when shared with other disks.
    pub guest: Option<String>,
    pub verify: bool,
    /// The front end's cap on queues; `None` for Linux's default.
    pub queues: Option<u32>,
    /// Existing storage to serve instead of a fresh sparse file.
    pub file: Option<PathBuf>,
    /// QoS keys of the backend directory, in the order given.
    pub qos: Vec<(String, String)>,
    pub retune: Option<Retune>,
    /// The xl disk line it came from (`--xl-disk`): its target names the storage and QoS.
    pub xl: Option<XlDisk>,
}

/// A QoS key written part way through the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retune {
    pub at: Duration,
    pub key: String,
    pub value: String,
}

/// Why a spec was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("`{0}` is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("{key}: `{value}` is not {what}")]
    BadValue {
        key: String,
        value: String,
        what: &'static str,
    },
    #[error("`{0}` is given twice")]
    Repeated(String),
    #[error("QoS keys: {0}")]
    Qos(String),
    #[error("disk line: {0}")]
    XlDisk(#[from] XlDiskError),
    #[error("bs {bs} must be a non-zero multiple of 512 no larger than size {size}")]
    BlockSize { bs: usize, size: u64 },
}

impl DiskSpec {
    /// Parses a spec (see the module docs).
    pub fn parse(text: &str) -> Result<DiskSpec, SpecError> {
        let mut spec = DiskSpec {
            size: 64 << 20,
            mode: Mode::RandRead,
            block_size: 4096,
            queue_depth: 16,
            guest: None,
            verify: true,
            file: None,
            queues: None,
            qos: Vec::new(),
            retune: None,
            xl: None,
        };
        let mut seen: Vec<&str> = Vec::new();
        for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = split_pair(pair)?;
            if seen.contains(&key) {
                return Err(SpecError::Repeated(key.into()));
            }
            seen.push(key);
            let bad = |what| SpecError::BadValue {
                key: key.into(),
                value: value.into(),
                what,
            };
            match key {
                "size" => spec.size = parse_bytes(value).ok_or_else(|| bad("a size"))?,
                "rw" => spec.mode = Mode::from_name(value).ok_or_else(|| bad("a mode"))?,
                "bs" => {
                    let bs = parse_bytes(value).ok_or_else(|| bad("a size"))?;
                    spec.block_size = usize::try_from(bs).map_err(|_| bad("a size"))?;
                }
                "qd" => {
                    spec.queue_depth = value
                        .parse()
                        .ok()
                        .filter(|&qd| (1..=1024).contains(&qd))
                        .ok_or_else(|| bad("a queue depth of 1 to 1024"))?;
                }
                "queues" => {
                    spec.queues = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|&q| (1..=16).contains(&q))
                            .ok_or_else(|| bad("a number of queues of 1 to 16"))?,
                    );
                }
                "guest" if !value.is_empty() => spec.guest = Some(value.into()),
                "file" if !value.is_empty() => spec.file = Some(value.into()),
                "verify" => {
                    spec.verify = match value {
                        "1" => true,
                        "0" => false,
                        _ => return Err(bad("0 or 1")),
                    }
                }
                "retune-at" => {
                    spec.retune = Some(parse_retune(value).ok_or_else(|| bad("TIME:KEY=VALUE"))?)
                }
                _ => spec.qos.push((key.into(), value.into())),
            }
        }
        let bs = spec.block_size;
        if bs == 0 || bs % 512 != 0 || bs as u64 > spec.size {
            return Err(SpecError::BlockSize {
                bs,
                size: spec.size,
            });
        }
        check_qos(&spec.qos)?;
        if let Some(retune) = &spec.retune {
            check_qos(&spec.qos_after_retune(retune))?;
        }
        Ok(spec)
    }

    /// A disk given by an xl disk line: the storage and QoS keys are its target's (the
    /// hotplug script checks them), the guest does the default workload of random reads and
    /// writes.
    pub fn from_xl_line(line: &str) -> Result<DiskSpec, SpecError> {
        let xl = XlDisk::parse(line)?;
        let mut spec = DiskSpec::parse("rw=randrw")?;
        spec.qos = xl_disk::target_qos(&xl.target);
        spec.xl = Some(xl);
        Ok(spec)
    }

    /// The QoS keys once `retune` is applied.
    pub fn qos_after_retune(&self, retune: &Retune) -> Vec<(String, String)> {
        let mut keys: Vec<_> = self
            .qos
            .iter()
            .filter(|(k, _)| *k != retune.key)
            .cloned()
            .collect();
        keys.push((retune.key.clone(), retune.value.clone()));
        keys
    }
}

fn split_pair(pair: &str) -> Result<(&str, &str), SpecError> {
    pair.split_once('=')
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| SpecError::NotKeyValue(pair.into()))
}

/// Checks QoS keys as tokenbackd does (tokenback's own parser).
fn check_qos(keys: &[(String, String)]) -> Result<(), SpecError> {
    VbdConfig::parse(keys.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map(drop)
        .map_err(|e| SpecError::Qos(e.to_string()))
}

/// `4096`, `4k`, `256M`, `1G` (powers of 1024).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last()? {
        (i, 'k' | 'K') => (&text[..i], 10),
        (i, 'm' | 'M') => (&text[..i], 20),
        (i, 'g' | 'G') => (&text[..i], 30),
        _ => (text, 0),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1 << shift)
}

/// `5s`, `2500ms`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    let secs = text.strip_suffix('s').unwrap_or(text);
    secs.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
}

fn parse_retune(text: &str) -> Option<Retune> {
    let (at, pair) = text.split_once(':')?;
    let (key, value) = pair.split_once('=')?;
    Some(Retune {
        at: parse_duration(at)?,
        key: key.trim().to_owned(),
        value: value.trim().to_owned(),
    })
    .filter(|r| !r.key.is_empty())
}
