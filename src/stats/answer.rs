//! Answers to requests: figures asked of every worker (a command each, answered on its next
//! loop turn) and names from the driver's [`Directory`].

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::directory::{Directory, VbdInfo};
use super::protocol::{Filter, Request, PROTOCOL};
use super::report::{self, GroupReport, ResetCount, VbdReport, WorkerStats};
use crate::vbd::timer::monotonic_ns;
use crate::vbd::{Command, WorkerLink};

/// How long the control thread waits for the workers' answers: a worker answers on its next
/// loop turn, at once unless it is stuck; one that is stuck is left out of the reply rather
/// than holding every client.
const GATHER_WAIT: Duration = Duration::from_secs(1);

/// Answers requests for the control thread.
pub struct Answerer {
    links: Vec<WorkerLink>,
    directory: Arc<Directory>,
}

/// What the workers serve, with the driver's names for each VBD, in a stable order.
struct Gathered {
    vbds: Vec<(VbdReport, VbdInfo)>,
    groups: Vec<GroupReport>,
}

impl Answerer {
    pub fn new(links: Vec<WorkerLink>, directory: Arc<Directory>) -> Self {
        Answerer { links, directory }
    }

    /// The reply to `request`.
    pub fn answer(&self, request: &Request) -> Value {
        match request {
            Request::Version => json!({
                "ok": true,
                "protocol": PROTOCOL,
                "daemon": concat!("tokenbackd ", env!("CARGO_PKG_VERSION")),
            }),
            Request::List => {
                let all = self.gather();
                let vbds: Vec<Value> = (all.vbds.iter())
                    .map(|(r, info)| report::listed_vbd(r, info))
                    .collect();
                let groups: Vec<Value> = all.groups.iter().map(report::listed_group).collect();
                json!({"ok": true, "vbds": vbds, "groups": groups})
            }
            Request::Stats(filter) => {
                let all = self.gather();
                let now = monotonic_ns();
                let vbds: Vec<Value> = (all.vbds.iter())
                    .filter(|(r, _)| filter.matches_vbd(r.id, r.group.as_deref()))
                    .map(|(r, info)| report::vbd(r, info))
                    .collect();
                let groups: Vec<Value> = (all.groups.iter())
                    .filter(|g| filter.matches_group(&g.name))
                    .map(report::group)
                    .collect();
                json!({"ok": true, "now_ns": now, "vbds": vbds, "groups": groups})
            }
            Request::Reset(filter) => {
                let counts = self.reset(filter);
                json!({"ok": true, "reset": {"vbds": counts.vbds, "groups": counts.groups}})
            }
        }
    }

    fn gather(&self) -> Gathered {
        let answers: Vec<WorkerStats> = ask(&self.links, Command::Stats);
        // After the workers: a VBD they serve was entered before it was handed to them.
        let directory = self.directory.snapshot();
        let mut vbds = Vec::new();
        let mut groups = Vec::new();
        for answer in answers {
            // One the driver no longer lists is being disconnected: not shown.
            vbds.extend(
                (answer.vbds.into_iter())
                    .filter_map(|r| directory.get(&r.id).map(|info| (r, info.clone()))),
            );
            groups.extend(answer.groups.into_iter().map(|mut g| {
                g.qos = self.directory.group(&g.name).unwrap_or_default();
                g
            }));
        }
        vbds.sort_by_key(|(r, _)| r.id);
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Gathered { vbds, groups }
    }

    fn reset(&self, filter: &Filter) -> ResetCount {
        let answers = ask(&self.links, |reply| Command::Reset(filter.clone(), reply));
        answers
            .into_iter()
            .fold(ResetCount::default(), |sum, c| ResetCount {
                vbds: sum.vbds + c.vbds,
                groups: sum.groups + c.groups,
            })
    }
}

/// Sends every worker the command `make` builds around a reply channel and collects the
/// answers that come within [`GATHER_WAIT`].
fn ask<T>(links: &[WorkerLink], make: impl Fn(mpsc::Sender<T>) -> Command) -> Vec<T> {
    let (tx, rx) = mpsc::channel();
    let asked = links.iter().filter(|l| l.send(make(tx.clone()))).count();
    drop(tx);
    let deadline = Instant::now() + GATHER_WAIT;
    let mut answers = Vec::with_capacity(asked);
    while answers.len() < asked {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(answer) => answers.push(answer),
            // Timed out, or every worker that was asked dropped its reply (it ended).
            Err(_) => break,
        }
    }
    answers
}
