//! The rows everyone shows (screen, batch, JSON): one per VBD and one per group, their
//! columns, sorting and the domain filter.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::format;
use super::model::{Balance, ByDirection, Load, Rates, SECTOR_BYTES};
use super::rates::Frame;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Vbd,
    Group,
}

/// How close a disk runs to its tightest limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    /// The QoS key, e.g. "iops-read".
    pub limit: String,
    /// The rate that limit caps, in its unit, and the limit.
    pub rate: f64,
    pub max: f64,
}

impl Usage {
    pub fn fraction(&self) -> f64 {
        self.rate / self.max
    }
}

/// One VBD or group, as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub kind: Kind,
    pub domid: Option<u16>,
    pub devid: Option<u32>,
    /// The domain's name for a VBD, the group's for a group.
    pub name: Option<String>,
    pub vdev: Option<String>,
    pub state: String,
    pub group: Option<String>,
    /// VBDs in a group: (domid, devid).
    pub members: Vec<(u16, u32)>,
    pub limits: BTreeMap<String, String>,
    pub qos_error: Option<String>,
    /// The bucket nearest empty (lowest balance against capacity).
    pub balance: Option<Balance>,
    pub rates: Rates,
    pub requests: ByDirection,
    pub bytes: ByDirection,
    /// Requests the limiter held back, as a share of those since the last reset.
    pub delayed_percent: Option<f64>,
    pub throttled_ns: u64,
    pub queued: u64,
    pub in_flight: u64,
    pub admission_delay_p99_ns: Option<u64>,
    pub latency_p99_ns: Option<u64>,
    pub usage: Option<Usage>,
}

/// The rows of a frame: VBDs, then groups, in the daemon's order.
pub fn rows(frame: &Frame) -> Vec<Row> {
    let vbds = frame
        .stats
        .vbds
        .iter()
        .zip(&frame.vbd_rates)
        .map(|(v, rates)| {
            let mut row = Row::new(Kind::Vbd, &v.load, *rates, &v.qos.keys);
            row.domid = Some(v.domid);
            row.devid = Some(v.devid);
            row.name = v.domain.clone();
            row.vdev = Some(v.vdev_name());
            row.state = v.state.clone();
            row.group = v.qos.group.clone();
            row.qos_error = v.qos.error.clone();
            row.latency_p99_ns = v.storage.latency_p99_ns;
            row
        });
    let groups = frame
        .stats
        .groups
        .iter()
        .zip(&frame.group_rates)
        .map(|(g, rates)| {
            let mut row = Row::new(Kind::Group, &g.load, *rates, &g.qos.keys);
            row.name = Some(g.name.clone());
            row.state = "group".into();
            row.members = g.members.iter().map(|m| (m.domid, m.devid)).collect();
            row.qos_error = g.qos.error.clone();
            row
        });
    vbds.chain(groups).collect()
}

impl Row {
    fn new(kind: Kind, load: &Load, rates: Rates, keys: &BTreeMap<String, String>) -> Row {
        let c = &load.counters;
        let requests = c.requests.read + c.requests.write;
        let delayed = c.delayed.read + c.delayed.write;
        Row {
            kind,
            domid: None,
            devid: None,
            name: None,
            vdev: None,
            state: String::new(),
            group: None,
            members: vec![],
            limits: keys.clone(),
            qos_error: None,
            balance: load
                .balances
                .iter()
                .min_by(|a, b| fill(a).total_cmp(&fill(b)))
                .cloned(),
            rates,
            requests: c.requests,
            bytes: ByDirection {
                read: c.sectors.read.saturating_mul(SECTOR_BYTES),
                write: c.sectors.write.saturating_mul(SECTOR_BYTES),
            },
            delayed_percent: (requests > 0).then(|| delayed as f64 * 100.0 / requests as f64),
            throttled_ns: c.throttled_ns,
            queued: load.queued,
            in_flight: load.in_flight,
            admission_delay_p99_ns: c.admission_delay_p99_ns,
            latency_p99_ns: None,
            usage: usage(keys, &rates),
        }
    }
}

/// A bucket's level as a share of its capacity (negative in debt).
fn fill(balance: &Balance) -> f64 {
    if balance.capacity > 0.0 {
        balance.balance / balance.capacity
    } else {
        balance.balance
    }
}

/// The limit the current rates come nearest to, of those that cap a rate (bursts, sizes and
/// bucket depths are not rates). `iops-size` makes large requests count as several
/// operations; rates here count requests, so they read low against such a limit.
fn usage(keys: &BTreeMap<String, String>, rates: &Rates) -> Option<Usage> {
    let iops = rates.read_iops + rates.write_iops;
    let bps = rates.read_bps + rates.write_bps;
    keys.iter()
        .filter_map(|(key, value)| {
            let rate = match key.as_str() {
                "tokens-refill" | "iops-total" => iops,
                "iops-read" => rates.read_iops,
                "iops-write" => rates.write_iops,
                "bps-total" => bps,
                "bps-read" => rates.read_bps,
                "bps-write" => rates.write_bps,
                _ => return None,
            };
            let max: f64 = value.parse().ok().filter(|&m: &f64| m > 0.0)?;
            Some(Usage {
                limit: key.clone(),
                rate,
                max,
            })
        })
        .max_by(|a, b| a.fraction().total_cmp(&b.fraction()))
}

/// The columns, in screen order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Domid,
    Name,
    Vdev,
    State,
    Limits,
    Balance,
    ReadIops,
    WriteIops,
    ReadBps,
    WriteBps,
    Delayed,
    Queued,
    InFlight,
    AdmissionP99,
    LatencyP99,
    Usage,
}

/// A value to sort by: numbers before text, missing values last whichever way.
#[derive(Debug, PartialEq, PartialOrd)]
enum SortKey {
    Num(f64),
    Text(String),
}

impl Column {
    pub const ALL: [Column; 16] = [
        Column::Domid,
        Column::Name,
        Column::Vdev,
        Column::State,
        Column::Limits,
        Column::Balance,
        Column::ReadIops,
        Column::WriteIops,
        Column::ReadBps,
        Column::WriteBps,
        Column::Delayed,
        Column::Queued,
        Column::InFlight,
        Column::AdmissionP99,
        Column::LatencyP99,
        Column::Usage,
    ];

    /// The header on the screen and in batch output (whose units are stated in
    /// docs/tokentop.md).
    pub fn header(self) -> &'static str {
        match self {
            Column::Domid => "DOMID",
            Column::Name => "NAME",
            Column::Vdev => "VDEV",
            Column::State => "STATE",
            Column::Limits => "LIMITS",
            Column::Balance => "BALANCE",
            Column::ReadIops => "RD_IOPS",
            Column::WriteIops => "WR_IOPS",
            Column::ReadBps => "RD_B/S",
            Column::WriteBps => "WR_B/S",
            Column::Delayed => "DELAY%",
            Column::Queued => "QUEUE",
            Column::InFlight => "INFL",
            Column::AdmissionP99 => "ADM_P99",
            Column::LatencyP99 => "LAT_P99",
            Column::Usage => "USE",
        }
    }

    /// Where the first column is reached by name (`--sort`).
    pub fn from_header(name: &str) -> Option<Column> {
        Column::ALL
            .into_iter()
            .find(|c| c.header().eq_ignore_ascii_case(name))
    }

    fn sort_key(self, row: &Row) -> Option<SortKey> {
        let num = |v: f64| Some(SortKey::Num(v));
        let ns = |v: Option<u64>| v.map(|v| SortKey::Num(v as f64));
        match self {
            Column::Domid => row.domid.map(|d| SortKey::Num(f64::from(d))),
            Column::Name => row.name.clone().map(SortKey::Text),
            Column::Vdev => row.vdev.clone().map(SortKey::Text),
            Column::State => Some(SortKey::Text(row.state.clone())),
            Column::Limits => Some(SortKey::Text(format::limits(&row.limits, ","))),
            Column::Balance => row.balance.as_ref().map(|b| SortKey::Num(fill(b))),
            Column::ReadIops => num(row.rates.read_iops),
            Column::WriteIops => num(row.rates.write_iops),
            Column::ReadBps => num(row.rates.read_bps),
            Column::WriteBps => num(row.rates.write_bps),
            Column::Delayed => row.delayed_percent.map(SortKey::Num),
            Column::Queued => num(row.queued as f64),
            Column::InFlight => num(row.in_flight as f64),
            Column::AdmissionP99 => ns(row.admission_delay_p99_ns),
            Column::LatencyP99 => ns(row.latency_p99_ns),
            Column::Usage => row.usage.as_ref().map(|u| SortKey::Num(u.fraction())),
        }
    }

    /// The cell on the screen: short, with units.
    pub fn human(self, row: &Row) -> String {
        match self {
            Column::Limits => format::limits_short(&row.limits),
            Column::Balance => row
                .balance
                .as_ref()
                .map_or("-".into(), |b| format::si(b.balance)),
            Column::ReadIops => format::si(row.rates.read_iops),
            Column::WriteIops => format::si(row.rates.write_iops),
            Column::ReadBps => format::bytes(row.rates.read_bps),
            Column::WriteBps => format::bytes(row.rates.write_bps),
            Column::AdmissionP99 => format::duration(row.admission_delay_p99_ns),
            Column::LatencyP99 => format::duration(row.latency_p99_ns),
            Column::Usage => row.usage.as_ref().map_or("-".into(), |u| {
                format!("{:.0}% {}", u.fraction() * 100.0, u.limit)
            }),
            _ => self.plain(row),
        }
    }

    /// The field in batch output: one word, full numbers in base units (bytes/s, us, %).
    pub fn plain(self, row: &Row) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let micros = |ns: Option<u64>| opt(ns.map(|ns| format!("{:.1}", ns as f64 / 1e3)));
        match self {
            Column::Domid => opt(row.domid.map(|d| d.to_string())),
            // One word per field: a space in a name would shift every field after it.
            Column::Name => opt(row
                .name
                .as_ref()
                .map(|n| n.replace(char::is_whitespace, "_"))),
            Column::Vdev => opt(row.vdev.clone()),
            Column::State => row.state.clone(),
            Column::Limits if row.limits.is_empty() => "-".into(),
            Column::Limits => format::limits(&row.limits, ","),
            Column::Balance => opt(row.balance.as_ref().map(|b| format!("{:.1}", b.balance))),
            Column::ReadIops => format!("{:.1}", row.rates.read_iops),
            Column::WriteIops => format!("{:.1}", row.rates.write_iops),
            Column::ReadBps => format!("{:.0}", row.rates.read_bps),
            Column::WriteBps => format!("{:.0}", row.rates.write_bps),
            Column::Delayed => opt(row.delayed_percent.map(|p| format!("{p:.1}"))),
            Column::Queued => row.queued.to_string(),
            Column::InFlight => row.in_flight.to_string(),
            Column::AdmissionP99 => micros(row.admission_delay_p99_ns),
            Column::LatencyP99 => micros(row.latency_p99_ns),
            Column::Usage => opt(row
                .usage
                .as_ref()
                .map(|u| format!("{:.1}%{}", u.fraction() * 100.0, u.limit))),
        }
    }
}

/// Sorts VBDs among themselves and groups among themselves (groups stay below), by
/// `column`; missing values go last either way, ties keep the daemon's order.
pub fn sort(rows: &mut [Row], column: Column, descending: bool) {
    rows.sort_by(|a, b| {
        let kinds = (a.kind == Kind::Group).cmp(&(b.kind == Kind::Group));
        kinds.then_with(|| match (column.sort_key(a), column.sort_key(b)) {
            (Some(x), Some(y)) => {
                let order = x.partial_cmp(&y).unwrap_or(Ordering::Equal);
                if descending {
                    order.reverse()
                } else {
                    order
                }
            }
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
    });
}

/// Keeps the VBDs of the domains that `filter` names (a domid, or part of a domain name,
/// any case), and the groups that have one of them as a member or whose name matches.
/// An empty filter keeps everything.
pub fn filter(rows: Vec<Row>, filter: &str) -> Vec<Row> {
    let filter = filter.trim();
    if filter.is_empty() {
        return rows;
    }
    let wanted = filter.to_lowercase();
    let matches = |row: &Row| {
        row.domid.is_some_and(|d| d.to_string() == filter)
            || row
                .name
                .as_ref()
                .is_some_and(|n| n.to_lowercase().contains(&wanted))
    };
    let shown: BTreeSet<(u16, u32)> = rows
        .iter()
        .filter(|r| r.kind == Kind::Vbd && matches(r))
        .filter_map(|r| Some((r.domid?, r.devid?)))
        .collect();
    rows.into_iter()
        .filter(|r| match r.kind {
            Kind::Vbd => matches(r),
            Kind::Group => matches(r) || r.members.iter().any(|m| shown.contains(m)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::tests_support::VBD;
    use crate::top::model::{Stats, Vbd};
    use crate::top::rates::Sampler;

    fn vbd(domid: u16, devid: u32, domain: &str, read_iops: f64) -> Vbd {
        let mut v: Vbd = serde_json::from_str(VBD).unwrap();
        v.domid = domid;
        v.devid = devid;
        v.domain = Some(domain.into());
        v.load.rates.read_iops = read_iops;
        v.load.rates.write_iops = 0.0;
        v
    }

    fn frame(vbds: Vec<Vbd>) -> Frame {
        let group = serde_json::from_value(serde_json::json!({
            "name": "shared", "qos": {"keys": {"iops-total": "100"}, "error": null},
            "members": [{"domid": 7, "devid": 51712, "weight": 1}],
            "counters": {"requests":{"read":0,"write":0},"sectors":{"read":0,"write":0},
                "delayed":{"read":0,"write":0},"throttled_ns":0,
                "admission_delay_p50_ns":null,"admission_delay_p99_ns":null},
            "balances": [], "queued": 0, "in_flight": 0,
            "rates": {"read_iops":50.0,"write_iops":0.0,"read_bps":0.0,"write_bps":0.0},
            "since_reset_ns": 1
        }))
        .unwrap();
        Sampler::default().observe(Stats {
            now_ns: 1,
            vbds,
            groups: vec![group],
        })
    }

    fn names(rows: &[Row]) -> Vec<String> {
        rows.iter().map(|r| r.name.clone().unwrap()).collect()
    }

    #[test]
    fn a_row_shows_the_tightest_limit_and_the_emptiest_bucket() {
        let rows = rows(&frame(vec![vbd(5, 51712, "web1", 450.0)]));
        let usage = rows[0].usage.as_ref().unwrap();
        assert_eq!(
            (usage.limit.as_str(), usage.fraction()),
            ("iops-total", 0.9)
        );
        assert_eq!(rows[0].balance.as_ref().unwrap().balance, -2.5);
        // 3 of 30 requests delayed; 80 sectors read.
        assert_eq!(rows[0].delayed_percent, Some(10.0));
        assert_eq!(rows[0].bytes.read, 80 * 512);
        assert_eq!(rows[1].kind, Kind::Group);
        assert_eq!(rows[1].usage.as_ref().unwrap().fraction(), 0.5);
    }

    #[test]
    fn sorting_keeps_groups_below_and_orders_both_ways() {
        let mut rows = rows(&frame(vec![
            vbd(5, 1, "b", 10.0),
            vbd(6, 1, "a", 30.0),
            vbd(7, 1, "c", 20.0),
        ]));
        sort(&mut rows, Column::ReadIops, true);
        assert_eq!(names(&rows), ["a", "c", "b", "shared"]);
        sort(&mut rows, Column::Name, false);
        assert_eq!(names(&rows), ["a", "b", "c", "shared"]);
        sort(&mut rows, Column::Domid, true);
        assert_eq!(names(&rows), ["c", "a", "b", "shared"]);
    }

    #[test]
    fn the_filter_takes_a_domid_or_part_of_a_name_and_keeps_their_groups() {
        let all = rows(&frame(vec![
            vbd(5, 1, "web1", 1.0),
            vbd(7, 51712, "db", 1.0),
        ]));
        assert_eq!(names(&filter(all.clone(), "7")), ["db", "shared"]);
        assert_eq!(names(&filter(all.clone(), "WEB")), ["web1"]);
        assert_eq!(names(&filter(all.clone(), "")), ["web1", "db", "shared"]);
        assert!(filter(all, "nobody").is_empty());
    }

    #[test]
    fn plain_fields_are_single_words() {
        let mut v = vbd(5, 51712, "my web", 1.0);
        v.load.counters.admission_delay_p99_ns = Some(1_500);
        let rows = rows(&frame(vec![v]));
        let fields: Vec<String> = Column::ALL.iter().map(|c| c.plain(&rows[0])).collect();
        assert!(fields.iter().all(|f| !f.contains(' ')), "{fields:?}");
        assert_eq!(Column::Name.plain(&rows[0]), "my_web");
        assert_eq!(Column::AdmissionP99.plain(&rows[0]), "1.5");
        assert_eq!(Column::Limits.plain(&rows[0]), "iops-total=500");
    }

    #[test]
    fn columns_are_found_by_header() {
        assert_eq!(Column::from_header("rd_iops"), Some(Column::ReadIops));
        assert_eq!(Column::from_header("nope"), None);
    }
}
