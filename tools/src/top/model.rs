//! The control socket's replies as types: exactly the fields of the protocol (docs/qos.md,
//! "Control socket"), so a daemon that answers something else is an error, not a blank row.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bytes in a sector: the protocol counts sectors, people read bytes.
pub const SECTOR_BYTES: u64 = 512;

/// A reply to `{"op":"stats"}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Stats {
    /// The daemon's monotonic clock when it took the figures.
    pub now_ns: u64,
    pub vbds: Vec<Vbd>,
    pub groups: Vec<Group>,
}

/// One virtual disk.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Vbd {
    pub domid: u16,
    pub devid: u32,
    pub vdev: Option<String>,
    pub domain: Option<String>,
    pub backend: String,
    pub target: String,
    pub state: String,
    pub queues: u32,
    pub qos: VbdQos,
    #[serde(flatten)]
    pub load: Load,
    pub storage: Storage,
}

/// The QoS of a VBD: the keys in force and its group.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct VbdQos {
    pub keys: BTreeMap<String, String>,
    pub error: Option<String>,
    pub group: Option<String>,
    pub weight: u32,
}

/// A throttle group.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Group {
    pub name: String,
    pub qos: GroupQos,
    pub members: Vec<Member>,
    #[serde(flatten)]
    pub load: Load,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct GroupQos {
    pub keys: BTreeMap<String, String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct Member {
    pub domid: u16,
    pub devid: u32,
    pub weight: u32,
}

/// What VBDs and groups both report: the limiter's counters and state.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Load {
    pub counters: Counters,
    pub balances: Vec<Balance>,
    pub queued: u64,
    pub in_flight: u64,
    pub rates: Rates,
    pub since_reset_ns: u64,
}

/// A pair of counters by direction (flushes and discards count as writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct ByDirection {
    pub read: u64,
    pub write: u64,
}

/// Cumulative since the last reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct Counters {
    pub requests: ByDirection,
    pub sectors: ByDirection,
    pub delayed: ByDirection,
    pub throttled_ns: u64,
    pub admission_delay_p50_ns: Option<u64>,
    pub admission_delay_p99_ns: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct Storage {
    pub latency_p50_ns: Option<u64>,
    pub latency_p99_ns: Option<u64>,
    pub errors: u64,
}

/// One token bucket, in the units of its limit (operations, bytes or tokens).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Balance {
    pub limit: String,
    pub burst: bool,
    /// Negative in debt.
    pub balance: f64,
    pub capacity: f64,
}

/// Per second; the daemon's over about the last second, ours over a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize, Serialize)]
pub struct Rates {
    pub read_iops: f64,
    pub write_iops: f64,
    pub read_bps: f64,
    pub write_bps: f64,
}

/// A reply to `{"op":"reset"}`: how many VBDs and groups were zeroed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct ResetCount {
    pub vbds: u64,
    pub groups: u64,
}

/// A reply to `{"op":"version"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Version {
    pub protocol: u32,
    pub daemon: String,
}

/// The filters of `stats` and `reset`: an entity matches when every given one does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domid: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Vbd {
    /// The VBD's name for people: its vdev, else its device number.
    pub fn vdev_name(&self) -> String {
        self.vdev.clone().unwrap_or_else(|| self.devid.to_string())
    }
}

/// What the unit tests of the other modules build their snapshots from.
#[cfg(test)]
pub(crate) mod tests_support {
    /// The protocol's own example of a VBD, as the daemon sends it.
    pub(crate) const VBD: &str = r#"{"domid":5,"devid":51712,"vdev":"xvda","domain":"web1",
        "backend":"/local/domain/0/backend/vbd/5/51712","target":"/srv/web1.img",
        "state":"connected","queues":2,
        "qos":{"keys":{"iops-total":"500"},"error":null,"group":"g1","weight":3},
        "counters":{"requests":{"read":10,"write":20},"sectors":{"read":80,"write":160},
          "delayed":{"read":1,"write":2},"throttled_ns":1000,
          "admission_delay_p50_ns":null,"admission_delay_p99_ns":5000},
        "storage":{"latency_p50_ns":100,"latency_p99_ns":null,"errors":0},
        "balances":[{"limit":"iops-total","burst":false,"balance":-2.5,"capacity":50.0}],
        "queued":3,"in_flight":4,
        "rates":{"read_iops":1.0,"write_iops":2.0,"read_bps":512.0,"write_bps":1024.0},
        "since_reset_ns":7}"#;
}

#[cfg(test)]
mod tests {
    use super::tests_support::VBD;
    use super::*;

    #[test]
    fn a_vbd_of_the_protocol_parses_with_every_field() {
        let vbd: Vbd = serde_json::from_str(VBD).unwrap();
        assert_eq!(
            (vbd.domid, vbd.devid, vbd.vdev_name()),
            (5, 51712, "xvda".into())
        );
        assert_eq!(vbd.qos.keys["iops-total"], "500");
        assert_eq!(vbd.qos.group.as_deref(), Some("g1"));
        assert_eq!(vbd.load.counters.requests.write, 20);
        assert_eq!(vbd.load.counters.admission_delay_p99_ns, Some(5000));
        assert_eq!(vbd.load.balances[0].balance, -2.5);
        assert_eq!((vbd.load.queued, vbd.load.in_flight), (3, 4));
    }

    #[test]
    fn a_vbd_missing_its_counters_is_refused() {
        let text = VBD.replace(r#""queued":3,"#, "");
        let err = serde_json::from_str::<Vbd>(&text).unwrap_err();
        assert!(err.to_string().contains("queued"), "{err}");
    }

    #[test]
    fn filters_send_only_what_is_given() {
        let filter = Filter {
            domid: Some(5),
            ..Filter::default()
        };
        assert_eq!(serde_json::to_string(&filter).unwrap(), r#"{"domid":5}"#);
    }
}
