//! `--json`: the run's results as one JSON object.

use std::fmt::Write as _;

use super::{DiskResult, RunResult};

/// The results as JSON.
pub fn json(run: &RunResult) -> String {
    let disks: Vec<String> = run.disks.iter().map(disk).collect();
    format!(
        "{{\"duration_s\":{},\"ok\":{},\"tokenbackd_cpu_percent\":{:.2},\"disks\":[{}]}}",
        run.seconds,
        run.disks.iter().all(|r| r.error.is_none()),
        run.daemon_cpu * 100.0,
        disks.join(",")
    )
}

fn disk(r: &DiskResult) -> String {
    let mut out = String::new();
    let t = &r.totals;
    let _ = write!(
        out,
        "{{\"name\":{},\"rw\":{},\"bs\":{},\"qd\":{},\"limit\":{},\"reads\":{},\"writes\":{},\
         \"bytes_read\":{},\"bytes_written\":{},\"verified\":{},\"iops\":{:.1},\"mib_per_s\":{:.3}",
        quote(&r.name),
        quote(r.spec.mode.name()),
        r.spec.block_size,
        r.spec.queue_depth,
        quote(&r.limit_before),
        t.reads,
        t.writes,
        t.bytes_read,
        t.bytes_written,
        t.verified,
        r.iops(),
        r.mib_per_s()
    );
    let samples: Vec<String> = r
        .samples
        .iter()
        .map(|s| {
            format!(
                "{{\"second\":{},\"ops\":{},\"bytes\":{}}}",
                s.second, s.ops, s.bytes
            )
        })
        .collect();
    let _ = write!(out, ",\"samples\":[{}]", samples.join(","));
    for (name, p) in [("p50_us", r.p50), ("p99_us", r.p99)] {
        if let Some(p) = p {
            let _ = write!(out, ",\"{name}\":{}", p.as_micros());
        }
    }
    if let Some(rt) = &r.retune {
        let _ = write!(
            out,
            ",\"retune\":{{\"at_s\":{},\"limit\":{},\"iops_before\":{:.1},\"iops_after\":{:.1},\
             \"bytes_per_s_before\":{:.0},\"bytes_per_s_after\":{:.0}}}",
            rt.at.as_secs_f64(),
            quote(&rt.limit),
            rt.before.0,
            rt.after.0,
            rt.before.1,
            rt.after.1
        );
    }
    if let Some(error) = &r.error {
        let _ = write!(out, ",\"error\":{}", quote(error));
    }
    out.push('}');
    out
}

/// A JSON string.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
