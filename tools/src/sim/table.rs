//! What a run prints: a line per disk per second while it runs, and a summary at the end.

use std::fmt::Write as _;

use super::RunResult;

const MIB: f64 = 1024.0 * 1024.0;

/// One second of one disk: `[  3s] web/xvda    2001 IOPS   7.8 MiB/s  limit iops-read=2000`.
pub fn live_line(second: u64, name: &str, ops: u64, bytes: u64, limit: &str) -> String {
    format!(
        "[{second:>3}s] {name:<12} {ops:>8} IOPS {:>8.1} MiB/s  limit {limit}",
        bytes as f64 / MIB
    )
}

/// The summary table, and what tokenbackd's work cost.
pub fn summary(run: &RunResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<9} {:>6} {:>4} {:>10} {:>9} {:>9} {:>9} {:>9}  limit",
        "disk", "rw", "bs", "qd", "ops", "IOPS", "MiB/s", "verified", "p99 ms"
    );
    for r in &run.disks {
        let p99 = r
            .p99
            .map_or("-".into(), |p| format!("{:.2}", p.as_secs_f64() * 1000.0));
        let _ = writeln!(
            out,
            "{:<12} {:<9} {:>6} {:>4} {:>10} {:>9.0} {:>9.1} {:>9} {:>9}  {}",
            r.name,
            r.spec.mode.name(),
            r.spec.block_size,
            r.spec.queue_depth,
            r.totals.ops(),
            r.iops(),
            r.mib_per_s(),
            r.totals.verified,
            p99,
            r.limit_before,
        );
        if let Some(after) = &r.retune {
            let _ = writeln!(
                out,
                "{:<12} retuned at {:.1}s: {:.0} IOPS {:.1} MiB/s before, {:.0} IOPS {:.1} MiB/s after ({})",
                "",
                after.at.as_secs_f64(),
                after.before.0,
                after.before.1 / MIB,
                after.after.0,
                after.after.1 / MIB,
                after.limit
            );
        }
        if let Some(error) = &r.error {
            let _ = writeln!(out, "{:<12} FAILED: {error}", "");
        }
    }
    let _ = writeln!(
        out,
        "tokenbackd: {:.1}% of a CPU core over {:.1}s (user + system, all its threads)",
        run.daemon_cpu * 100.0,
        run.seconds
    );
    out
}
