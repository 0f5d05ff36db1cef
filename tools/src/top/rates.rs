//! Rates from the counters' deltas between two refreshes; the daemon's own rates (over about
//! its last second) for the first frame and after a reset, when there is no earlier count.

use std::collections::HashMap;

use super::model::{Load, Rates, Stats, SECTOR_BYTES};

/// Which VBD or group a figure belongs to, across refreshes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Vbd { domid: u16, devid: u32 },
    Group(String),
}

/// A snapshot and the rates measured against the one before it.
#[derive(Debug, Clone)]
pub struct Frame {
    pub stats: Stats,
    /// In the order of `stats.vbds`, then of `stats.groups`.
    pub vbd_rates: Vec<Rates>,
    pub group_rates: Vec<Rates>,
}

/// Keeps the previous snapshot's counters.
#[derive(Debug, Default)]
pub struct Sampler {
    previous: HashMap<Key, (u64, Load)>,
}

impl Sampler {
    /// Measures `stats` against the previous snapshot and keeps it for the next.
    pub fn observe(&mut self, stats: Stats) -> Frame {
        let now = stats.now_ns;
        let mut next = HashMap::new();
        let mut measure = |key: Key, load: &Load| {
            let rates = match self.previous.get(&key) {
                Some((then, before)) => delta_rates(*then, before, now, load),
                None => None,
            };
            next.insert(key, (now, load.clone()));
            rates.unwrap_or(load.rates)
        };
        let vbd_rates = stats
            .vbds
            .iter()
            .map(|v| {
                let key = Key::Vbd {
                    domid: v.domid,
                    devid: v.devid,
                };
                measure(key, &v.load)
            })
            .collect();
        let group_rates = stats
            .groups
            .iter()
            .map(|g| measure(Key::Group(g.name.clone()), &g.load))
            .collect();
        self.previous = next;
        Frame {
            stats,
            vbd_rates,
            group_rates,
        }
    }

    /// Forgets every count: the next frame uses the daemon's rates (after a reset or a
    /// reconnect to a new daemon, whose clock and counters start anew).
    pub fn forget(&mut self) {
        self.previous.clear();
    }
}

/// Rates over (then, now], or None when the counts cannot be compared: no time passed, or
/// the counters were reset in between (by us or anyone).
fn delta_rates(then: u64, before: &Load, now: u64, load: &Load) -> Option<Rates> {
    let seconds = now.checked_sub(then).filter(|&ns| ns > 0)? as f64 / 1e9;
    let elapsed = now - then;
    // Without a reset since_reset_ns grows by exactly the time that passed (both are the
    // daemon's clock); a reset restarts it. Half the interval is margin for rounding.
    if load.since_reset_ns.saturating_add(elapsed / 2)
        < before.since_reset_ns.saturating_add(elapsed)
    {
        return None;
    }
    let (c, b) = (&load.counters, &before.counters);
    let per_second = |now: u64, then: u64| Some(now.checked_sub(then)? as f64 / seconds);
    Some(Rates {
        read_iops: per_second(c.requests.read, b.requests.read)?,
        write_iops: per_second(c.requests.write, b.requests.write)?,
        read_bps: per_second(c.sectors.read, b.sectors.read)? * SECTOR_BYTES as f64,
        write_bps: per_second(c.sectors.write, b.sectors.write)? * SECTOR_BYTES as f64,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::top::model::Vbd;

    pub(crate) fn vbd(domid: u16, requests: u64, sectors: u64, since_reset_ns: u64) -> Vbd {
        let text = crate::top::model::tests_support::VBD
            .replace(
                r#""requests":{"read":10"#,
                &format!(r#""requests":{{"read":{requests}"#),
            )
            .replace(
                r#""sectors":{"read":80"#,
                &format!(r#""sectors":{{"read":{sectors}"#),
            )
            .replace(
                r#""since_reset_ns":7"#,
                &format!(r#""since_reset_ns":{since_reset_ns}"#),
            )
            .replace(r#""domid":5"#, &format!(r#""domid":{domid}"#));
        serde_json::from_str(&text).unwrap()
    }

    fn stats(now_ns: u64, vbds: Vec<Vbd>) -> Stats {
        Stats {
            now_ns,
            vbds,
            groups: vec![],
        }
    }

    #[test]
    fn the_first_frame_shows_the_daemons_rates() {
        let frame = Sampler::default().observe(stats(1_000, vec![vbd(5, 10, 80, 1_000)]));
        assert_eq!(frame.vbd_rates[0].read_iops, 1.0);
        assert_eq!(frame.vbd_rates[0].read_bps, 512.0);
    }

    #[test]
    fn later_frames_show_the_deltas_over_the_interval() {
        let mut sampler = Sampler::default();
        sampler.observe(stats(1_000_000_000, vec![vbd(5, 10, 80, 1_000_000_000)]));
        // 500 reads of 8 sectors in half a second.
        let frame = sampler.observe(stats(
            1_500_000_000,
            vec![vbd(5, 510, 4_080, 1_500_000_000)],
        ));
        let rates = frame.vbd_rates[0];
        assert_eq!(rates.read_iops, 1000.0);
        assert_eq!(rates.read_bps, 1000.0 * 4096.0);
        assert_eq!(rates.write_iops, 0.0);
    }

    #[test]
    fn after_a_reset_the_daemons_rates_are_shown_again() {
        let mut sampler = Sampler::default();
        sampler.observe(stats(
            10_000_000_000,
            vec![vbd(5, 9_000, 72_000, 10_000_000_000)],
        ));
        // Reset 100 ms ago: fewer requests than before, since_reset_ns small.
        let frame = sampler.observe(stats(11_000_000_000, vec![vbd(5, 10, 80, 100_000_000)]));
        assert_eq!(frame.vbd_rates[0].read_iops, 1.0, "the daemon's figure");
    }

    #[test]
    fn a_vbd_seen_for_the_first_time_uses_the_daemons_rates() {
        let mut sampler = Sampler::default();
        sampler.observe(stats(1_000_000_000, vec![vbd(5, 10, 80, 1)]));
        let frame = sampler.observe(stats(
            2_000_000_000,
            vec![vbd(5, 20, 160, 1_000_000_001), vbd(6, 500, 800, 1)],
        ));
        assert_eq!(frame.vbd_rates[0].read_iops, 10.0);
        assert_eq!(frame.vbd_rates[1].read_iops, 1.0);
    }
}
