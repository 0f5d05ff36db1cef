//! The counters in Prometheus' text exposition format (version 0.0.4): one family per
//! metric with its HELP and TYPE, labels escaped, names by Prometheus' conventions (base
//! units, `_total` on counters). Every metric is listed in docs/tokentop.md.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::model::{Balance, ByDirection, Load, Stats, SECTOR_BYTES};

/// The content type a scraper expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy)]
enum Type {
    Counter,
    Gauge,
}

/// A metric family: its samples, in the order added.
struct Family {
    help: &'static str,
    kind: Type,
    samples: Vec<(Labels, Num)>,
}

/// A sample's value: counts stay integers, so a counter past 2^53 is still exact.
#[derive(Clone, Copy)]
enum Num {
    Int(u64),
    Float(f64),
}

impl From<u64> for Num {
    fn from(value: u64) -> Num {
        Num::Int(value)
    }
}

impl From<f64> for Num {
    fn from(value: f64) -> Num {
        Num::Float(value)
    }
}

type Labels = Vec<(&'static str, String)>;

/// Families by name, written in the order first seen.
#[derive(Default)]
struct Exposition {
    order: Vec<&'static str>,
    families: BTreeMap<&'static str, Family>,
}

impl Exposition {
    fn add(
        &mut self,
        name: &'static str,
        kind: Type,
        help: &'static str,
        labels: Labels,
        value: Num,
    ) {
        let family = self.families.entry(name).or_insert_with(|| {
            self.order.push(name);
            Family {
                help,
                kind,
                samples: vec![],
            }
        });
        family.samples.push((labels, value));
    }

    fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &Labels,
        value: impl Into<Num>,
    ) {
        self.add(name, Type::Counter, help, labels.clone(), value.into());
    }

    fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &Labels,
        value: impl Into<Num>,
    ) {
        self.add(name, Type::Gauge, help, labels.clone(), value.into());
    }

    fn render(&self) -> String {
        let mut text = String::new();
        for name in &self.order {
            let family = &self.families[name];
            let kind = match family.kind {
                Type::Counter => "counter",
                Type::Gauge => "gauge",
            };
            let _ = writeln!(text, "# HELP {name} {}", family.help);
            let _ = writeln!(text, "# TYPE {name} {kind}");
            for (labels, value) in &family.samples {
                let _ = writeln!(text, "{name}{} {}", render_labels(labels), number(*value));
            }
        }
        text
    }
}

fn render_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

/// Label values escape backslash, double quote and line feed, as the format says.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Integers print whole, the rest in Rust's shortest round-trip form; non-finite values as
/// the format spells them.
fn number(value: Num) -> String {
    let value = match value {
        Num::Int(value) => return value.to_string(),
        Num::Float(value) => value,
    };
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

/// The exposition of one snapshot; `up` false gives only `tokenback_up 0` (the daemon did
/// not answer the scrape).
pub fn render(stats: Option<&Stats>, daemon: Option<&str>) -> String {
    let mut out = Exposition::default();
    let up_help = "Whether tokenbackd answered this scrape on its control socket";
    out.gauge("tokenback_up", up_help, &vec![], u64::from(stats.is_some()));
    let Some(stats) = stats else {
        return out.render();
    };
    out.gauge(
        "tokenback_daemon_info",
        "tokenbackd's version, value 1",
        &vec![("version", daemon.unwrap_or("unknown").to_owned())],
        1u64,
    );
    for vbd in &stats.vbds {
        let id = vec![
            ("domid", vbd.domid.to_string()),
            ("devid", vbd.devid.to_string()),
            ("vdev", vbd.vdev_name()),
        ];
        let mut info = id.clone();
        info.extend([
            ("domain", vbd.domain.clone().unwrap_or_default()),
            ("backend", vbd.backend.clone()),
            ("target", vbd.target.clone()),
            ("state", vbd.state.clone()),
            ("group", vbd.qos.group.clone().unwrap_or_default()),
        ]);
        out.gauge(
            "tokenback_vbd_info",
            "A VBD and what it serves, value 1",
            &info,
            1u64,
        );
        out.gauge(
            "tokenback_vbd_queues",
            "Rings (queues) of the VBD",
            &id,
            u64::from(vbd.queues),
        );
        out.gauge(
            "tokenback_vbd_weight",
            "The VBD's weight in its throttle group",
            &id,
            u64::from(vbd.qos.weight),
        );
        let vbd_families = Names {
            requests: "tokenback_vbd_requests_total",
            bytes: "tokenback_vbd_bytes_total",
            delayed: "tokenback_vbd_delayed_requests_total",
            throttled: "tokenback_vbd_throttled_seconds_total",
            admission: "tokenback_vbd_admission_delay_seconds",
            limit: "tokenback_vbd_qos_limit",
            qos_error: "tokenback_vbd_qos_error",
            balance: "tokenback_vbd_bucket_balance",
            capacity: "tokenback_vbd_bucket_capacity",
            queued: "tokenback_vbd_queued_requests",
            in_flight: "tokenback_vbd_in_flight_requests",
            since_reset: "tokenback_vbd_since_reset_seconds",
        };
        load(
            &mut out,
            &vbd_families,
            &id,
            &vbd.load,
            &vbd.qos.keys,
            &vbd.qos.error,
        );
        let latency = "Storage latency quantiles of the VBD's requests";
        for (q, v) in [
            ("0.5", vbd.storage.latency_p50_ns),
            ("0.99", vbd.storage.latency_p99_ns),
        ] {
            if let Some(ns) = v {
                let labels = with(&id, [("quantile", q.to_owned())]);
                out.gauge(
                    "tokenback_vbd_storage_latency_seconds",
                    latency,
                    &labels,
                    ns as f64 / 1e9,
                );
            }
        }
        out.counter(
            "tokenback_vbd_storage_errors_total",
            "Requests the storage failed",
            &id,
            vbd.storage.errors,
        );
    }
    for group in &stats.groups {
        let id = vec![("group", group.name.clone())];
        out.gauge(
            "tokenback_group_members",
            "VBDs in the throttle group",
            &id,
            group.members.len() as u64,
        );
        let group_families = Names {
            requests: "tokenback_group_requests_total",
            bytes: "tokenback_group_bytes_total",
            delayed: "tokenback_group_delayed_requests_total",
            throttled: "tokenback_group_throttled_seconds_total",
            admission: "tokenback_group_admission_delay_seconds",
            limit: "tokenback_group_qos_limit",
            qos_error: "tokenback_group_qos_error",
            balance: "tokenback_group_bucket_balance",
            capacity: "tokenback_group_bucket_capacity",
            queued: "tokenback_group_queued_requests",
            in_flight: "tokenback_group_in_flight_requests",
            since_reset: "tokenback_group_since_reset_seconds",
        };
        load(
            &mut out,
            &group_families,
            &id,
            &group.load,
            &group.qos.keys,
            &group.qos.error,
        );
    }
    out.render()
}

/// The names of the families VBDs and groups share (a family's name is static text).
struct Names {
    requests: &'static str,
    bytes: &'static str,
    delayed: &'static str,
    throttled: &'static str,
    admission: &'static str,
    limit: &'static str,
    qos_error: &'static str,
    balance: &'static str,
    capacity: &'static str,
    queued: &'static str,
    in_flight: &'static str,
    since_reset: &'static str,
}

fn with<const N: usize>(labels: &Labels, more: [(&'static str, String); N]) -> Labels {
    let mut labels = labels.clone();
    labels.extend(more);
    labels
}

fn by_direction(
    out: &mut Exposition,
    name: &'static str,
    help: &'static str,
    id: &Labels,
    pair: ByDirection,
    scale: u64,
) {
    for (direction, value) in [("read", pair.read), ("write", pair.write)] {
        let labels = with(id, [("direction", direction.to_owned())]);
        out.counter(name, help, &labels, value.saturating_mul(scale));
    }
}

/// What VBDs and groups both have: counters, limits and buckets.
fn load(
    out: &mut Exposition,
    names: &Names,
    id: &Labels,
    load: &Load,
    keys: &BTreeMap<String, String>,
    qos_error: &Option<String>,
) {
    let c = &load.counters;
    let requests = "Requests admitted since the last reset (flushes and discards count as writes)";
    by_direction(out, names.requests, requests, id, c.requests, 1);
    let bytes = "Bytes of the requests admitted since the last reset";
    by_direction(out, names.bytes, bytes, id, c.sectors, SECTOR_BYTES);
    let delayed = "Requests the limiter held back before admitting them";
    by_direction(out, names.delayed, delayed, id, c.delayed, 1);
    let throttled = "Time spent with requests held back by the limiter";
    out.counter(names.throttled, throttled, id, c.throttled_ns as f64 / 1e9);
    let admission = "Quantiles of the time requests waited for admission";
    for (q, v) in [
        ("0.5", c.admission_delay_p50_ns),
        ("0.99", c.admission_delay_p99_ns),
    ] {
        if let Some(ns) = v {
            let labels = with(id, [("quantile", q.to_owned())]);
            out.gauge(names.admission, admission, &labels, ns as f64 / 1e9);
        }
    }
    let limit = "A QoS key in force, by key (units of docs/qos.md)";
    for (key, value) in keys {
        // Every key is a decimal number once accepted; anything else is not a sample.
        if let Ok(value) = value.parse::<f64>() {
            out.gauge(names.limit, limit, &with(id, [("key", key.clone())]), value);
        }
    }
    let error = "1 when the QoS keys written were refused (reason in qos-error)";
    out.gauge(names.qos_error, error, id, u64::from(qos_error.is_some()));
    for Balance {
        limit,
        burst,
        balance,
        capacity,
    } in &load.balances
    {
        let labels = with(id, [("limit", limit.clone()), ("burst", burst.to_string())]);
        let help = "A token bucket's level in its limit's units, negative in debt";
        out.gauge(names.balance, help, &labels, *balance);
        let help = "A token bucket's capacity in its limit's units";
        out.gauge(names.capacity, help, &labels, *capacity);
    }
    let queued = "Requests waiting for admission";
    out.gauge(names.queued, queued, id, load.queued);
    let in_flight = "Requests admitted and not yet completed";
    out.gauge(names.in_flight, in_flight, id, load.in_flight);
    let since = "Time since the counters were last reset";
    out.gauge(
        names.since_reset,
        since,
        id,
        load.since_reset_ns as f64 / 1e9,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::tests_support::VBD;
    use crate::top::model::Vbd;

    fn stats(vbd: Vbd) -> Stats {
        Stats {
            now_ns: 1,
            vbds: vec![vbd],
            groups: vec![],
        }
    }

    #[test]
    fn a_daemon_that_did_not_answer_is_down() {
        assert_eq!(
            render(None, None),
            "# HELP tokenback_up Whether tokenbackd answered this scrape on its control socket\n\
             # TYPE tokenback_up gauge\ntokenback_up 0\n"
        );
    }

    #[test]
    fn counters_are_totals_in_base_units_with_their_labels() {
        let vbd: Vbd = serde_json::from_str(VBD).unwrap();
        let text = render(Some(&stats(vbd)), Some("tokenbackd 0.1.0"));
        let id = r#"domid="5",devid="51712",vdev="xvda""#;
        for line in [
            "# TYPE tokenback_vbd_requests_total counter".to_owned(),
            format!(r#"tokenback_vbd_requests_total{{{id},direction="write"}} 20"#),
            format!(r#"tokenback_vbd_bytes_total{{{id},direction="read"}} 40960"#),
            format!(r#"tokenback_vbd_throttled_seconds_total{{{id}}} 0.000001"#),
            format!(r#"tokenback_vbd_admission_delay_seconds{{{id},quantile="0.99"}} 0.000005"#),
            format!(r#"tokenback_vbd_qos_limit{{{id},key="iops-total"}} 500"#),
            format!(
                r#"tokenback_vbd_bucket_balance{{{id},limit="iops-total",burst="false"}} -2.5"#
            ),
            "tokenback_up 1".to_owned(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        // p50 is null: no sample rather than a made-up zero.
        assert!(!text.contains(r#"quantile="0.5"}} 0"#), "{text}");
        // One HELP and one TYPE per family.
        assert_eq!(
            text.matches("# TYPE tokenback_vbd_requests_total ").count(),
            1
        );
    }

    #[test]
    fn every_metric_is_documented_in_docs_tokentop_md() {
        let mut vbd: Vbd = serde_json::from_str(VBD).unwrap();
        vbd.load.counters.admission_delay_p50_ns = Some(1);
        vbd.storage.latency_p99_ns = Some(1);
        let group = serde_json::from_value(serde_json::json!({
            "name": "g", "qos": {"keys": {"iops-total": "9"}, "error": null}, "members": [],
            "counters": vbd.load.counters, "balances": vbd.load.balances,
            "queued": 0, "in_flight": 0, "rates": vbd.load.rates, "since_reset_ns": 0
        }))
        .unwrap();
        let mut stats = stats(vbd);
        stats.groups.push(group);
        let text = render(Some(&stats), None);
        let doc = include_str!("../../../docs/tokentop.md");
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(names.len(), 32, "{names:?}");
        for name in names {
            assert!(
                doc.contains(&format!("`{name}`")),
                "{name} is not in docs/tokentop.md"
            );
        }
    }

    #[test]
    fn label_values_are_escaped_and_huge_counters_stay_whole() {
        let mut vbd: Vbd = serde_json::from_str(VBD).unwrap();
        vbd.domain = Some("a\"b\\c\nd".into());
        vbd.load.counters.requests.read = 1 << 60;
        let text = render(Some(&stats(vbd)), None);
        assert!(text.contains(r#"domain="a\"b\\c\nd""#), "{text}");
        assert!(
            text.contains(r#"direction="read"} 1152921504606846976"#),
            "{text}"
        );
        assert_eq!(number(Num::Float(f64::INFINITY)), "+Inf");
        assert_eq!(number(Num::Float(f64::NAN)), "NaN");
        assert_eq!(number(Num::Float(0.25)), "0.25");
    }
}
