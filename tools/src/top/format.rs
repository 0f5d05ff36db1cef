//! Numbers for people: short, with units.

use std::collections::BTreeMap;

/// 1234.5 -> "1.2k", 0.4 -> "0.4", -2500 -> "-2.5k".
pub fn si(value: f64) -> String {
    scaled(value, 1000.0, &["", "k", "M", "G", "T", "P"])
}

/// Bytes (per second) in powers of 1024: 8388608 -> "8.0Mi".
pub fn bytes(value: f64) -> String {
    scaled(value, 1024.0, &["", "Ki", "Mi", "Gi", "Ti", "Pi"])
}

fn scaled(value: f64, step: f64, units: &[&str]) -> String {
    if !value.is_finite() {
        return "?".into();
    }
    let mut v = value;
    let mut unit = 0;
    while v.abs() >= step && unit + 1 < units.len() {
        v /= step;
        unit += 1;
    }
    if unit == 0 && v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}{}", units[unit])
    }
}

/// Nanoseconds as "850us", "12.3ms", "1.2s"; "-" when the daemon has no figure yet.
pub fn duration(ns: Option<u64>) -> String {
    let Some(ns) = ns else {
        return "-".into();
    };
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.0}us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1}ms", ns / 1e6)
    } else {
        format!("{:.1}s", ns / 1e9)
    }
}

/// The keys in force as `key=value` joined by `separator`.
pub fn limits(keys: &BTreeMap<String, String>, separator: &str) -> String {
    keys.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(separator)
}

/// The keys in force for the screen: values shortened ("bps-total=8.0Mi"), "-" for none.
pub fn limits_short(keys: &BTreeMap<String, String>) -> String {
    if keys.is_empty() {
        return "-".into();
    }
    keys.iter()
        .map(|(k, v)| match v.parse::<f64>() {
            Ok(n) if k.starts_with("bps-") && !k.ends_with("-length") => {
                format!("{k}={}", bytes(n))
            }
            Ok(n) => format!("{k}={}", si(n)),
            Err(_) => format!("{k}={v}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_shorten_with_units() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(999.0), "999");
        assert_eq!(si(1234.5), "1.2k");
        assert_eq!(si(-2500.0), "-2.5k");
        assert_eq!(si(2.5e18), "2500.0P");
        assert_eq!(si(f64::NAN), "?");
        assert_eq!(bytes(8.0 * 1024.0 * 1024.0), "8.0Mi");
        assert_eq!(bytes(511.0), "511");
    }

    #[test]
    fn durations_pick_their_unit() {
        assert_eq!(duration(None), "-");
        assert_eq!(duration(Some(900)), "900ns");
        assert_eq!(duration(Some(850_000)), "850us");
        assert_eq!(duration(Some(12_345_678)), "12.3ms");
        assert_eq!(duration(Some(u64::MAX)), "18446744073.7s");
    }

    #[test]
    fn limits_read_as_keys() {
        let keys: BTreeMap<String, String> = [("bps-total", "8388608"), ("iops-read", "2000")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        assert_eq!(limits(&keys, ","), "bps-total=8388608,iops-read=2000");
        assert_eq!(limits_short(&keys), "bps-total=8.0Mi iops-read=2.0k");
        assert_eq!(limits_short(&BTreeMap::new()), "-");
    }
}
