//! What a worker reports of its VBDs and groups when asked, and how the control socket shows
//! it: the VBD and GROUP objects of docs/qos.md ("Control socket").

use serde_json::{json, Map, Value};

use super::directory::{QosInForce, VbdInfo};
use crate::limiter::{Balance, CounterSnapshot, DelayHistogram, GroupStats, VbdStats};
use crate::xenbus::DeviceId;

/// A VBD's storage latency (submit to completion) and failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    pub latency_p50_ns: Option<u64>,
    pub latency_p99_ns: Option<u64>,
    /// Requests the storage failed (answered BLKIF_RSP_ERROR).
    pub errors: u64,
}

/// Counts a VBD's storage latency and failures, on its worker.
#[derive(Debug, Clone, Default)]
pub struct StorageCounters {
    latency: DelayHistogram,
    errors: u64,
}

impl StorageCounters {
    /// A request whose storage work took `ns` from its first submission to its last
    /// completion.
    pub fn record_latency(&mut self, ns: u64) {
        self.latency.record(ns);
    }

    /// A request the storage failed.
    pub fn record_error(&mut self) {
        self.errors += 1;
    }

    pub fn snapshot(&self) -> StorageStats {
        StorageStats {
            latency_p50_ns: self.latency.quantile(500),
            latency_p99_ns: self.latency.quantile(990),
            errors: self.errors,
        }
    }
}

/// One served VBD, as its worker sees it.
#[derive(Debug, Clone)]
pub struct VbdReport {
    pub id: DeviceId,
    pub queues: usize,
    /// The throttle group it is served in.
    pub group: Option<String>,
    pub weight: u32,
    pub limiter: VbdStats,
    pub storage: StorageStats,
}

/// One throttle group, as its worker sees it.
#[derive(Debug, Clone)]
pub struct GroupReport {
    pub name: String,
    pub qos: QosInForce,
    /// Members and their weights.
    pub members: Vec<(DeviceId, u32)>,
    pub limiter: GroupStats,
}

/// A worker's answer to a stats query.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    pub vbds: Vec<VbdReport>,
    pub groups: Vec<GroupReport>,
}

/// What a reset zeroed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResetCount {
    pub vbds: usize,
    pub groups: usize,
}

fn per_direction(p: crate::limiter::PerDirection) -> Value {
    json!({"read": p.read, "write": p.write})
}

fn counters(c: &CounterSnapshot) -> Value {
    json!({
        "requests": per_direction(c.requests),
        "sectors": per_direction(c.sectors),
        "delayed": per_direction(c.delayed),
        "throttled_ns": c.throttled_ns,
        "admission_delay_p50_ns": c.delay_p50_ns,
        "admission_delay_p99_ns": c.delay_p99_ns,
    })
}

fn rates(c: &CounterSnapshot) -> Value {
    let (iops, bps) = c.recent.per_second();
    json!({"read_iops": iops[0], "write_iops": iops[1], "read_bps": bps[0], "write_bps": bps[1]})
}

fn balances(balances: &[Balance]) -> Value {
    // Levels are kept in 1e-9 of the limit's unit.
    let unit = |nano: i128| nano as f64 / 1e9;
    balances
        .iter()
        .map(|b| {
            json!({
                "limit": b.kind.key(),
                "burst": b.burst,
                "balance": unit(b.level_nano),
                "capacity": unit(b.capacity_nano),
            })
        })
        .collect()
}

fn keys(qos: &QosInForce) -> Value {
    let keys: Map<String, Value> = (qos.keys.iter())
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Value::Object(keys)
}

fn member(id: DeviceId, weight: u32) -> Value {
    json!({"domid": id.frontend_id.0, "devid": id.devid, "weight": weight})
}

/// The VBD object.
pub fn vbd(report: &VbdReport, info: &VbdInfo) -> Value {
    let l = &report.limiter;
    json!({
        "domid": report.id.frontend_id.0,
        "devid": report.id.devid,
        "vdev": info.vdev,
        "domain": info.domain,
        "backend": info.backend,
        "target": info.target,
        "state": "connected",
        "queues": report.queues,
        "qos": {
            "keys": keys(&info.qos),
            "error": info.qos.error,
            "group": report.group,
            "weight": report.weight,
        },
        "counters": counters(&l.counters),
        "storage": {
            "latency_p50_ns": report.storage.latency_p50_ns,
            "latency_p99_ns": report.storage.latency_p99_ns,
            "errors": report.storage.errors,
        },
        "balances": balances(&l.balances),
        "queued": l.queued,
        "in_flight": l.in_flight,
        "rates": rates(&l.counters),
        "since_reset_ns": l.counters.since_reset_ns,
    })
}

/// The VBD entry of a `list`.
pub fn listed_vbd(report: &VbdReport, info: &VbdInfo) -> Value {
    json!({
        "domid": report.id.frontend_id.0,
        "devid": report.id.devid,
        "vdev": info.vdev,
        "domain": info.domain,
        "group": report.group,
    })
}

/// The group entry of a `list`.
pub fn listed_group(report: &GroupReport) -> Value {
    let members: Vec<Value> = (report.members.iter())
        .map(|&(id, w)| member(id, w))
        .collect();
    json!({"name": report.name, "members": members})
}

/// The GROUP object.
pub fn group(report: &GroupReport) -> Value {
    let l = &report.limiter;
    let mut object = listed_group(report);
    let extra = json!({
        "qos": {"keys": keys(&report.qos), "error": report.qos.error},
        "counters": counters(&l.counters),
        "balances": balances(&l.balances),
        "queued": l.queued,
        "in_flight": l.in_flight,
        "rates": rates(&l.counters),
        "since_reset_ns": l.counters.since_reset_ns,
    });
    if let (Value::Object(object), Value::Object(extra)) = (&mut object, extra) {
        object.extend(extra);
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::{Group, Op, Request, Vbd, VbdConfig};
    use crate::platform::DomId;

    #[test]
    fn storage_counters_give_latency_quantiles_and_errors() {
        let mut c = StorageCounters::default();
        assert_eq!(c.snapshot(), StorageStats::default());
        for ns in 1..=100 {
            c.record_latency(ns * 1000);
        }
        c.record_error();
        let s = c.snapshot();
        assert!((50_000..=50_000 * 9 / 8).contains(&s.latency_p50_ns.unwrap()));
        assert!((99_000..=100_000).contains(&s.latency_p99_ns.unwrap()));
        assert_eq!(s.errors, 1);
    }

    #[test]
    fn a_group_object_is_its_list_entry_and_the_group_limiter_figures() {
        let limits = VbdConfig::parse([("iops-total", "100")]).unwrap().limits;
        let mut limiter = Group::new(&limits, 0);
        let member = limiter.add_member(Vbd::new(&VbdConfig::default(), 0));
        let vbd = limiter.member_mut(member).unwrap();
        for id in 0..12 {
            let request = Request {
                id,
                op: Op::Read,
                bytes: 512,
            };
            vbd.enqueue(request, 0);
        }
        let mut admitted = Vec::new();
        limiter.poll_admit_due(0, &mut admitted);
        let id = DeviceId {
            frontend_id: DomId(7),
            devid: 51712,
        };
        let report = GroupReport {
            name: "gold".into(),
            qos: QosInForce {
                keys: [("iops-total".to_owned(), "100".to_owned())].into(),
                error: None,
            },
            members: vec![(id, 3)],
            limiter: limiter.stats(0),
        };
        let members = json!([{"domid": 7, "devid": 51712, "weight": 3}]);
        assert_eq!(
            listed_group(&report),
            json!({"name": "gold", "members": members})
        );
        let g = group(&report);
        assert_eq!(g["name"], "gold");
        assert_eq!(g["members"], members);
        assert_eq!(
            g["qos"],
            json!({"keys": {"iops-total": "100"}, "error": null})
        );
        // The bucket holds 10 (a tenth of a second): 10 went, 2 wait.
        assert_eq!(g["counters"]["requests"], json!({"read": 10, "write": 0}));
        assert_eq!(g["counters"]["sectors"]["read"], 10);
        assert_eq!(
            (g["queued"].as_u64(), g["in_flight"].as_u64()),
            (Some(2), Some(10))
        );
        assert_eq!(g["balances"][0]["balance"].as_f64(), Some(0.0));
        assert_eq!(g["since_reset_ns"], 0);
        assert_eq!(g["rates"]["read_iops"], 0.0);
    }

    #[test]
    fn a_vbd_object_has_every_field_of_the_protocol_in_its_unit() {
        let config = VbdConfig::parse([("iops-total", "10")]).unwrap();
        let mut limiter = Vbd::new(&config, 0);
        for id in 0..3 {
            limiter.enqueue(
                Request {
                    id,
                    op: Op::Write,
                    bytes: 4096,
                },
                0,
            );
        }
        let mut admitted = Vec::new();
        limiter.poll_admit_due(0, &mut admitted);
        let id = DeviceId {
            frontend_id: DomId(5),
            devid: 51712,
        };
        let report = VbdReport {
            id,
            queues: 2,
            group: None,
            weight: 1,
            limiter: limiter.stats(500_000_000),
            storage: StorageStats {
                latency_p50_ns: Some(1000),
                latency_p99_ns: Some(2000),
                errors: 1,
            },
        };
        let info = VbdInfo {
            vdev: Some("xvda".into()),
            domain: None,
            backend: "/local/domain/0/backend/vbd/5/51712".into(),
            target: "/dev/vg0/guest".into(),
            qos: QosInForce {
                keys: [("iops-total".to_owned(), "10".to_owned())].into(),
                error: None,
            },
        };
        let v = vbd(&report, &info);
        assert_eq!(v["vdev"], "xvda");
        assert_eq!(v["domain"], Value::Null);
        assert_eq!(v["qos"]["keys"], json!({"iops-total": "10"}));
        assert_eq!(v["qos"]["group"], Value::Null);
        assert_eq!(v["counters"]["requests"], json!({"read": 0, "write": 1}));
        assert_eq!(v["counters"]["sectors"]["write"], 8);
        assert_eq!(v["storage"]["errors"], 1);
        assert_eq!(v["queued"], 2);
        assert_eq!(v["in_flight"], 1);
        // iops-total=10 holds one operation (a tenth of a second); one was spent at 0 and
        // 0.5 s refilled it; the balance is in operations.
        let balance = &v["balances"][0];
        assert_eq!(balance["limit"], "iops-total");
        assert_eq!(balance["capacity"].as_f64(), Some(1.0));
        assert_eq!(balance["balance"].as_f64(), Some(1.0));
        // One write over the half second since the start.
        assert_eq!(v["rates"]["write_iops"].as_f64(), Some(2.0));
        assert_eq!(v["rates"]["write_bps"].as_f64(), Some(8192.0));
        assert_eq!(v["since_reset_ns"], 500_000_000);
    }
}
