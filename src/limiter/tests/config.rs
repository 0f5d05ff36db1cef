//! Parsing the xenstore keys: every key, defaults, combinations and typed errors.

use super::*;
use crate::limiter::{ConfigError, LimitKind, RateLimit, Shape, MAX_RATE};

fn parse(pairs: &[(&str, &str)]) -> Result<VbdConfig, ConfigError> {
    VbdConfig::parse(pairs.iter().copied())
}

#[test]
fn no_keys_means_no_limits_weight_one_and_no_group() {
    let config = parse(&[]).unwrap();
    assert!(config.limits.is_unlimited());
    assert_eq!(
        (config.weight, config.group, config.max_inflight),
        (1, None, None)
    );
}

#[test]
fn every_rate_key_is_read_with_its_shape() {
    let config = parse(&[
        ("tokens-refill", "2000"),
        ("tokens-max", "60000"),
        ("iops-total", " 500\n"),
        ("iops-read", "300"),
        ("iops-read-max", "900"),
        ("bps-write", "1048576"),
        ("bps-write-max", "2097152"),
        ("bps-write-max-length", "30"),
        ("bps-read", "0"),
        ("iops-size", "4096"),
        ("group", "gold.tier-1"),
        ("weight", "3"),
        ("max-inflight", "16"),
    ])
    .unwrap();
    let l = &config.limits;
    assert_eq!(
        l.limit(LimitKind::Tokens),
        Some(RateLimit {
            rate: 2000,
            shape: Shape::Capacity(60_000)
        })
    );
    assert_eq!(
        l.limit(LimitKind::IopsTotal),
        Some(RateLimit {
            rate: 500,
            shape: Shape::Tenth
        })
    );
    assert_eq!(
        l.limit(LimitKind::IopsRead),
        Some(RateLimit {
            rate: 300,
            shape: Shape::Burst {
                max: 900,
                length_s: 1
            }
        })
    );
    assert_eq!(
        l.limit(LimitKind::BpsWrite),
        Some(RateLimit {
            rate: 1 << 20,
            shape: Shape::Burst {
                max: 2 << 20,
                length_s: 30
            }
        })
    );
    assert_eq!(l.limit(LimitKind::BpsRead), None, "0 is no limit");
    assert_eq!(l.limit(LimitKind::BpsTotal), None);
    assert_eq!(l.iops_size(), Some(4096));
    assert_eq!(config.group.as_deref(), Some("gold.tier-1"));
    assert_eq!((config.weight, config.max_inflight), (3, Some(16)));
}

#[test]
fn every_documented_key_is_accepted() {
    for key in LimitConfig::KEYS.iter().chain(&VbdConfig::EXTRA_KEYS) {
        assert!(parse(&[(key, "")]).is_ok(), "{key}");
    }
}

#[test]
fn bad_values_name_the_key_and_the_reason() {
    let cases: [(&[(&str, &str)], ConfigError); 9] = [
        (
            &[("iops-total", "fast")],
            ConfigError::NotANumber {
                key: "iops-total",
                value: "fast".into(),
            },
        ),
        (
            &[("bps-read", "-5")],
            ConfigError::NotANumber {
                key: "bps-read",
                value: "-5".into(),
            },
        ),
        (
            &[("bps-read", "1.5")],
            ConfigError::NotANumber {
                key: "bps-read",
                value: "1.5".into(),
            },
        ),
        (
            &[("tokens-refill", "99999999999999999999999")],
            ConfigError::OutOfRange {
                key: "tokens-refill",
                value: "99999999999999999999999".into(),
                min: 0,
                max: MAX_RATE,
            },
        ),
        (
            &[("weight", "0")],
            ConfigError::OutOfRange {
                key: "weight",
                value: "0".into(),
                min: 1,
                max: 10_000,
            },
        ),
        (
            &[("iops-total", "100"), ("iops-total-max", "50")],
            ConfigError::BurstBelowRate {
                key: "iops-total-max",
                max: 50,
                rate: 100,
            },
        ),
        (
            &[("bps-total-max", "5000")],
            ConfigError::Missing {
                key: "bps-total-max",
                needs: "bps-total",
            },
        ),
        (
            &[("iops-write", "10"), ("iops-write-max-length", "5")],
            ConfigError::Missing {
                key: "iops-write-max-length",
                needs: "iops-write-max",
            },
        ),
        (
            &[("tokens-max", "100")],
            ConfigError::Missing {
                key: "tokens-max",
                needs: "tokens-refill",
            },
        ),
    ];
    for (pairs, expected) in cases {
        assert_eq!(parse(pairs), Err(expected.clone()), "{pairs:?}");
        let message = expected.to_string();
        assert!(
            pairs.iter().any(|(key, _)| message.contains(key)),
            "{message}"
        );
    }
}

#[test]
fn unknown_keys_long_values_and_bad_group_names_are_rejected() {
    assert_eq!(
        parse(&[("iops", "5")]),
        Err(ConfigError::UnknownKey { key: "iops".into() })
    );
    assert!(
        LimitConfig::parse([("group", "a")]).is_err(),
        "a group has no group"
    );
    let long = "x".repeat(10_000);
    let err = parse(&[("iops-total", &long)]).unwrap_err();
    assert!(err.to_string().len() < 100, "quoted values are shortened");
    assert!(matches!(
        parse(&[("group", "a/b")]),
        Err(ConfigError::BadGroupName { .. })
    ));
    assert!(parse(&[("group", &"g".repeat(65))]).is_err());
}

#[test]
fn zero_burst_or_zero_max_inflight_mean_unset() {
    let config = parse(&[
        ("iops-total", "100"),
        ("iops-total-max", "0"),
        ("max-inflight", "0"),
    ])
    .unwrap();
    assert_eq!(
        config.limits.limit(LimitKind::IopsTotal).unwrap().shape,
        Shape::Tenth
    );
    assert_eq!(config.max_inflight, None);
    let strict = parse(&[("tokens-refill", "100"), ("tokens-max", "0")]).unwrap();
    assert_eq!(
        strict.limits.limit(LimitKind::Tokens).unwrap().shape,
        Shape::Capacity(0)
    );
}
