//! QoS settings parsed from the xenstore key strings of a VBD or a throttle group.
//!
//! The daemon re-reads the keys as a set on every watch event and calls [`VbdConfig::parse`] (or
//! [`LimitConfig::parse`] for a group); an error names the key and the reason, and the caller keeps
//! the last good set in force. Every value is a decimal whole number; an empty value is the same
//! as an absent key. Ranges are chosen so that no bucket arithmetic can overflow.

use super::cost::Direction;

/// Largest accepted rate or burst rate (units per second), and `tokens-max`.
pub const MAX_RATE: u64 = 1_000_000_000_000;
/// Largest accepted `X-max-length`, in seconds.
pub const MAX_BURST_LENGTH: u64 = 1_000_000;
/// Largest accepted `iops-size`, in bytes: operation limits count in 1/iops-size operations,
/// and [`MAX_RATE`] x `MAX_IOPS_SIZE` must stay below 2^64.
pub const MAX_IOPS_SIZE: u64 = 1 << 24;
/// Largest accepted `weight`.
pub const MAX_WEIGHT: u64 = 10_000;
/// Largest accepted `max-inflight`.
pub const MAX_INFLIGHT: u64 = 1 << 20;
/// Longest accepted group name.
pub const MAX_GROUP_NAME: usize = 64;
/// Longest excerpt of a bad value quoted in an error: errors are logged and published beside
/// the key, and a value may be as long as xenstore allows.
const QUOTE_MAX: usize = 32;

/// One kind of rate limit, named by its xenstore key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// `tokens-refill` / `tokens-max`: one token per request, whatever its size.
    Tokens,
    /// `iops-total`: operations per second, both directions.
    IopsTotal,
    /// `iops-read`.
    IopsRead,
    /// `iops-write`.
    IopsWrite,
    /// `bps-total`: bytes per second, both directions.
    BpsTotal,
    /// `bps-read`.
    BpsRead,
    /// `bps-write`.
    BpsWrite,
}

impl LimitKind {
    /// Every kind, in a fixed order (the order of bucket arrays and of error checks).
    pub const ALL: [LimitKind; 7] = [
        LimitKind::Tokens,
        LimitKind::IopsTotal,
        LimitKind::IopsRead,
        LimitKind::IopsWrite,
        LimitKind::BpsTotal,
        LimitKind::BpsRead,
        LimitKind::BpsWrite,
    ];

    /// Position in [`LimitKind::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The key holding the rate.
    pub const fn key(self) -> &'static str {
        match self {
            LimitKind::Tokens => "tokens-refill",
            LimitKind::IopsTotal => "iops-total",
            LimitKind::IopsRead => "iops-read",
            LimitKind::IopsWrite => "iops-write",
            LimitKind::BpsTotal => "bps-total",
            LimitKind::BpsRead => "bps-read",
            LimitKind::BpsWrite => "bps-write",
        }
    }

    /// The key holding the bucket size (`tokens-max`) or the burst rate (`X-max`).
    pub const fn max_key(self) -> &'static str {
        match self {
            LimitKind::Tokens => "tokens-max",
            LimitKind::IopsTotal => "iops-total-max",
            LimitKind::IopsRead => "iops-read-max",
            LimitKind::IopsWrite => "iops-write-max",
            LimitKind::BpsTotal => "bps-total-max",
            LimitKind::BpsRead => "bps-read-max",
            LimitKind::BpsWrite => "bps-write-max",
        }
    }

    /// The key holding the burst length; the seed's tokens have none.
    pub const fn max_length_key(self) -> Option<&'static str> {
        match self {
            LimitKind::Tokens => None,
            LimitKind::IopsTotal => Some("iops-total-max-length"),
            LimitKind::IopsRead => Some("iops-read-max-length"),
            LimitKind::IopsWrite => Some("iops-write-max-length"),
            LimitKind::BpsTotal => Some("bps-total-max-length"),
            LimitKind::BpsRead => Some("bps-read-max-length"),
            LimitKind::BpsWrite => Some("bps-write-max-length"),
        }
    }

    /// The direction the limit is confined to; `None` for total limits and tokens.
    pub const fn direction(self) -> Option<Direction> {
        match self {
            LimitKind::Tokens | LimitKind::IopsTotal | LimitKind::BpsTotal => None,
            LimitKind::IopsRead | LimitKind::BpsRead => Some(Direction::Read),
            LimitKind::IopsWrite | LimitKind::BpsWrite => Some(Direction::Write),
        }
    }

    /// Whether the limit counts operations (and so is scaled by `iops-size`).
    pub const fn counts_operations(self) -> bool {
        matches!(
            self,
            LimitKind::IopsTotal | LimitKind::IopsRead | LimitKind::IopsWrite
        )
    }
}

/// How much a bucket holds, besides its rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// No burst set: a tenth of the rate (100 ms of I/O).
    Tenth,
    /// `tokens-max`: an explicit size in tokens; 0 is strict pacing.
    Capacity(u64),
    /// `X-max` and `X-max-length`: `max` units/s for `length_s` seconds, then the rate.
    Burst {
        /// The burst rate, at least the rate.
        max: u64,
        /// Seconds a saturating burst lasts, at least 1.
        length_s: u64,
    },
}

/// One configured limit: a positive rate and the bucket's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Units per second, at least 1.
    pub rate: u64,
    /// The bucket's size.
    pub shape: Shape,
}

/// A validated set of rate limits: a VBD's own, or a throttle group's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitConfig {
    limits: [Option<RateLimit>; 7],
    iops_size: Option<u64>,
}

impl LimitConfig {
    /// The rate keys a group or a VBD may carry.
    pub const KEYS: [&'static str; 21] = [
        "tokens-refill",
        "tokens-max",
        "iops-total",
        "iops-total-max",
        "iops-total-max-length",
        "iops-read",
        "iops-read-max",
        "iops-read-max-length",
        "iops-write",
        "iops-write-max",
        "iops-write-max-length",
        "bps-total",
        "bps-total-max",
        "bps-total-max-length",
        "bps-read",
        "bps-read-max",
        "bps-read-max-length",
        "bps-write",
        "bps-write-max",
        "bps-write-max-length",
        "iops-size",
    ];

    /// Parse a group's keys; any key outside [`LimitConfig::KEYS`] is an error.
    pub fn parse<'a, I>(pairs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut raw = RawLimits::default();
        for (key, value) in pairs {
            if !raw.accept(key, value)? {
                return Err(ConfigError::UnknownKey { key: quote(key) });
            }
        }
        raw.validate()
    }

    /// The limit of `kind`, if any.
    pub fn limit(&self, kind: LimitKind) -> Option<RateLimit> {
        self.limits[kind.index()]
    }

    /// Bytes per counted operation, if set.
    pub fn iops_size(&self) -> Option<u64> {
        self.iops_size
    }

    /// Whether no limit is set at all.
    pub fn is_unlimited(&self) -> bool {
        self.limits.iter().all(Option::is_none)
    }
}

/// A VBD's QoS settings: its own limits, its throttle group and weight, and its in-flight cap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VbdConfig {
    /// The VBD's own limits.
    pub limits: LimitConfig,
    /// The throttle group it belongs to, if any.
    pub group: Option<String>,
    /// Its weight within the group, at least 1.
    pub weight: u32,
    /// Cap on requests outstanding to storage; `None` = no cap.
    pub max_inflight: Option<u32>,
}

impl Default for VbdConfig {
    fn default() -> Self {
        VbdConfig {
            limits: LimitConfig::default(),
            group: None,
            weight: 1,
            max_inflight: None,
        }
    }
}

impl VbdConfig {
    /// The keys a VBD may carry besides [`LimitConfig::KEYS`].
    pub const EXTRA_KEYS: [&'static str; 3] = ["group", "weight", "max-inflight"];

    /// Parse a VBD's keys; any key outside [`LimitConfig::KEYS`] and
    /// [`VbdConfig::EXTRA_KEYS`] is an error.
    pub fn parse<'a, I>(pairs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut raw = RawLimits::default();
        let mut config = VbdConfig::default();
        for (key, value) in pairs {
            if raw.accept(key, value)? {
                continue;
            }
            match key {
                "group" => config.group = parse_group(value)?,
                "weight" => {
                    let weight = parse_number("weight", value, 1, MAX_WEIGHT)?.unwrap_or(1);
                    config.weight = u32::try_from(weight).unwrap_or(u32::MAX);
                }
                "max-inflight" => {
                    config.max_inflight = parse_number("max-inflight", value, 0, MAX_INFLIGHT)?
                        .filter(|&n| n > 0)
                        .and_then(|n| u32::try_from(n).ok());
                }
                _ => return Err(ConfigError::UnknownKey { key: quote(key) }),
            }
        }
        config.limits = raw.validate()?;
        Ok(config)
    }
}

/// Why a set of QoS keys was rejected. Each variant names the offending key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key that is not a QoS key.
    #[error("unknown QoS key `{key}`")]
    UnknownKey {
        /// The key (possibly shortened).
        key: String,
    },
    /// A value that is not a decimal whole number.
    #[error("{key}: `{value}` is not a whole number")]
    NotANumber {
        /// The key.
        key: &'static str,
        /// The value (possibly shortened).
        value: String,
    },
    /// A number outside the key's range.
    #[error("{key}: `{value}` is outside {min}..={max}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// The value (possibly shortened).
        value: String,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A burst rate below the rate it bursts above.
    #[error("{key}: burst rate {max} is below the rate {rate}")]
    BurstBelowRate {
        /// The `X-max` key.
        key: &'static str,
        /// Its value.
        max: u64,
        /// The rate.
        rate: u64,
    },
    /// A key that needs another one, e.g. a burst without a rate.
    #[error("{key} is set but {needs} is not")]
    Missing {
        /// The key that is set.
        key: &'static str,
        /// The key it needs.
        needs: &'static str,
    },
    /// A group name with characters outside `A-Z a-z 0-9 . _ -`, or too long.
    #[error(
        "group: `{value}` is not a valid group name (1-{MAX_GROUP_NAME} of A-Z a-z 0-9 . _ -)"
    )]
    BadGroupName {
        /// The name (possibly shortened).
        value: String,
    },
}

/// The rate keys as read, before they are checked as a set.
#[derive(Default)]
struct RawLimits {
    rate: [Option<u64>; 7],
    max: [Option<u64>; 7],
    length: [Option<u64>; 7],
    iops_size: Option<u64>,
}

impl RawLimits {
    /// Take `key` if it is a rate key; `Ok(false)` when it is not one.
    fn accept(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
        if key == "iops-size" {
            self.iops_size = parse_number("iops-size", value, 0, MAX_IOPS_SIZE)?;
            return Ok(true);
        }
        for kind in LimitKind::ALL {
            let i = kind.index();
            if key == kind.key() {
                self.rate[i] = parse_number(kind.key(), value, 0, MAX_RATE)?;
            } else if key == kind.max_key() {
                self.max[i] = parse_number(kind.max_key(), value, 0, MAX_RATE)?;
            } else if let Some(length_key) = kind.max_length_key().filter(|k| *k == key) {
                self.length[i] = parse_number(length_key, value, 1, MAX_BURST_LENGTH)?;
            } else {
                continue;
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Check the keys as a set: 0 means unset, a burst needs a rate, `X-max` >= `X`.
    fn validate(self) -> Result<LimitConfig, ConfigError> {
        let mut config = LimitConfig {
            limits: [None; 7],
            iops_size: self.iops_size.filter(|&s| s > 0),
        };
        for kind in LimitKind::ALL {
            let i = kind.index();
            let rate = self.rate[i].filter(|&r| r > 0);
            let max = self.max[i];
            let length = self.length[i];
            if let (Some(key), Some(_), None | Some(0)) = (kind.max_length_key(), length, max) {
                return Err(ConfigError::Missing {
                    key,
                    needs: kind.max_key(),
                });
            }
            let Some(rate) = rate else {
                // `tokens-max` = 0 is meaningful with a rate only; any nonzero max needs a rate.
                if max.is_some_and(|m| m > 0) {
                    return Err(ConfigError::Missing {
                        key: kind.max_key(),
                        needs: kind.key(),
                    });
                }
                continue;
            };
            let shape = match (kind, max) {
                (LimitKind::Tokens, Some(capacity)) => Shape::Capacity(capacity),
                (_, None | Some(0)) => Shape::Tenth,
                (_, Some(max)) if max < rate => {
                    return Err(ConfigError::BurstBelowRate {
                        key: kind.max_key(),
                        max,
                        rate,
                    })
                }
                (_, Some(max)) => Shape::Burst {
                    max,
                    length_s: length.unwrap_or(1),
                },
            };
            config.limits[i] = Some(RateLimit { rate, shape });
        }
        Ok(config)
    }
}

/// A decimal whole number in `min..=max`; empty (after trimming whitespace) means unset.
fn parse_number(
    key: &'static str,
    value: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ConfigError> {
    let text = value.trim_ascii();
    if text.is_empty() {
        return Ok(None);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::NotANumber {
            key,
            value: quote(value),
        });
    }
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(ConfigError::OutOfRange {
            key,
            value: quote(text),
            min,
            max,
        }),
    }
}

/// A group name as `group` and the groups' directory names carry it (blank: no group).
pub fn parse_group(value: &str) -> Result<Option<String>, ConfigError> {
    let name = value.trim_ascii();
    if name.is_empty() {
        return Ok(None);
    }
    let valid = name.len() <= MAX_GROUP_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(Some(name.to_owned()))
    } else {
        Err(ConfigError::BadGroupName { value: quote(name) })
    }
}

/// At most [`QUOTE_MAX`] characters of `text`, for error messages.
fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}
