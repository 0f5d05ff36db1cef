//! The figures of issue 16 through the whole path: a simulated guest's blkfront (one thread,
//! pinned to CPU 0) -> tokenbackd (a separate process, pinned with its worker to CPU 1) ->
//! storage, next to fio on the same file in the same run:
//!
//! 1. 4 KiB random reads at queue depth 32, null storage (target >= 650 k IOPS);
//! 2. 4 KiB random reads at queue depth 32 on a 1 GiB file with O_DIRECT, and fio's io_uring
//!    engine on that file (target >= 0.9 of fio);
//! 3. 1 MiB sequential reads at queue depth 16 on the same file, and fio (target >= 0.9);
//! 4. 4 KiB random reads at queue depth 32, null storage, with QoS keys that limit nothing
//!    reachable (every rate key at 10^12) against none at all (target >= 0.97);
//! 5. tokenbackd's CPU while a saturating guest is held at 100 IOPS (target <= 0.5% of a core).
//!
//! Each figure is the median of several runs. tokenbackd belongs to the root package, so
//! build it first: `cargo build --release --bin tokenbackd`. fio must be installed (apt-get
//! install fio); without it the fio columns say so. `FIGURES_RUNS` (default 3) and
//! `FIGURES_SECONDS` (default 5) change the number and length of the runs.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokenback_tools::sim::{self, host, DiskSpec, Placement, RunConfig};

const PLACEMENT: Placement = Placement {
    guests: 0,
    daemon: 1,
};
const FILE_BYTES: u64 = 1 << 30;

/// One figure: a workload through tokenbackd, and what it is compared with.
struct Figure {
    name: &'static str,
    spec: String,
    engine: &'static str,
    baseline: Baseline,
    /// What is reported of each run.
    shown: Shown,
    target: &'static str,
}

/// What a figure is set against, run by run.
enum Baseline {
    None,
    /// fio's `--rw`, `--bs`, `--iodepth` on the same file.
    Fio(&'static str, &'static str, u32),
    /// The same through tokenbackd with another disk spec.
    Spec(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shown {
    Iops,
    MibPerSecond,
    /// tokenbackd's CPU, in % of one core.
    DaemonCpu,
}

/// What the runs of a figure measured: tokenbackd's figure and its baseline's.
#[derive(Default)]
struct Measured {
    tokenbackd: Vec<f64>,
    baseline: Vec<f64>,
}

fn main() {
    let runs = env_number("FIGURES_RUNS", 3);
    let seconds = env_number("FIGURES_SECONDS", 5);
    if let Err(missing) = host::beside_me("tokenbackd") {
        eprintln!(
            "figures: {missing}: build it first with `cargo build --release --bin tokenbackd`"
        );
        std::process::exit(1);
    }
    let fio = fio_version();
    if fio.is_none() {
        println!("figures: fio is missing, so the fio columns stay empty: install it with `apt-get install fio`");
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let file = tmp.join("figures-1g.img");
    progress(&format!(
        "1 GiB data file {} (not tmpfs: O_DIRECT reads)",
        file.display()
    ));
    if let Err(e) = data_file(&file) {
        eprintln!("figures: cannot write {}: {e}", file.display());
        std::process::exit(1);
    }
    let figures = figures(&file);
    let mut measured: Vec<Measured> = figures.iter().map(|_| Measured::default()).collect();
    let duration = Duration::from_secs(seconds);
    for run in 1..=runs {
        for (figure, measured) in figures.iter().zip(&mut measured) {
            let dir = tmp.join("figures-run");
            let value = through_tokenbackd(figure, &figure.spec, &dir, duration);
            progress(&format!(
                "run {run}/{runs}: {}: tokenbackd {}",
                figure.name,
                show(value, figure.shown)
            ));
            measured.tokenbackd.push(value);
            let baseline = match &figure.baseline {
                Baseline::Fio(rw, bs, depth) if fio.is_some() => {
                    let (iops, mib) = run_fio(&file, rw, bs, *depth, seconds);
                    Some(if figure.shown == Shown::Iops {
                        iops
                    } else {
                        mib
                    })
                }
                Baseline::Spec(spec) => Some(through_tokenbackd(figure, spec, &dir, duration)),
                Baseline::Fio(..) | Baseline::None => None,
            };
            if let Some(value) = baseline {
                progress(&format!(
                    "run {run}/{runs}: {}: baseline {}",
                    figure.name,
                    show(value, figure.shown)
                ));
                measured.baseline.push(value);
            }
        }
    }
    println!(
        "\n{runs} runs of {seconds}s each, medians; guest (blkfront{}) on CPU {}, tokenbackd on CPU {}",
        if fio.is_some() { " and fio" } else { "" },
        PLACEMENT.guests,
        PLACEMENT.daemon
    );
    if let Some(version) = &fio {
        println!(
            "fio: {version}, --ioengine=io_uring --direct=1, pinned to CPU {}",
            PLACEMENT.guests
        );
    }
    print!("{}", table(&figures, &measured));
}

fn figures(file: &Path) -> Vec<Figure> {
    let file = file.display();
    let null_4k = "size=1G,rw=randread,bs=4k,qd=32,queues=1,verify=0";
    // Every rate key, at a rate no guest reaches: each request is priced by every bucket.
    let unreachable = ["iops-total", "iops-read", "bps-total", "bps-read"]
        .map(|key| format!(",{key}=1000000000000"))
        .concat();
    vec![
        Figure {
            name: "4 KiB random reads, QD 32, null storage",
            spec: null_4k.into(),
            engine: "null",
            baseline: Baseline::None,
            shown: Shown::Iops,
            target: ">= 650 k IOPS",
        },
        Figure {
            name: "4 KiB random reads, QD 32, 1 GiB file",
            spec: format!("file={file},rw=randread,bs=4k,qd=32,queues=1,verify=0"),
            engine: "uring",
            baseline: Baseline::Fio("randread", "4k", 32),
            shown: Shown::Iops,
            target: ">= 0.9 of fio",
        },
        Figure {
            name: "1 MiB sequential reads, QD 16, 1 GiB file",
            spec: format!("file={file},rw=read,bs=1M,qd=16,queues=1,verify=0"),
            engine: "uring",
            baseline: Baseline::Fio("read", "1M", 16),
            shown: Shown::MibPerSecond,
            target: ">= 0.9 of fio",
        },
        Figure {
            name: "QoS keys that limit nothing vs none",
            spec: format!("{null_4k}{unreachable}"),
            engine: "null",
            baseline: Baseline::Spec(null_4k.into()),
            shown: Shown::Iops,
            target: ">= 0.97 of none",
        },
        Figure {
            name: "tokenbackd's CPU, guest held at 100 IOPS",
            spec: "size=64M,rw=randread,bs=4k,qd=32,iops-total=100".into(),
            engine: "uring",
            baseline: Baseline::None,
            shown: Shown::DaemonCpu,
            target: "<= 0.5% of a core",
        },
    ]
}

/// What one run of `spec` (for `figure`) measured through tokenbackd on a fresh simulated host.
fn through_tokenbackd(figure: &Figure, spec: &str, dir: &Path, duration: Duration) -> f64 {
    let spec = DiskSpec::parse(spec).expect("the figures' specs are valid");
    // A fresh host each run: a failed run keeps its directory.
    let _ = std::fs::remove_dir_all(dir);
    let config = RunConfig {
        disks: vec![spec],
        duration,
        dir: Some(dir.to_owned()),
        keep: false,
        tokenbackd: None,
        io_engine: figure.engine.into(),
        workers: 1,
        connect_timeout: Duration::from_secs(20),
        script_dir: None,
        live: false,
        placement: Some(PLACEMENT),
    };
    let mut out = Vec::new();
    let results = sim::run(&config, &mut out, false).unwrap_or_else(|e| {
        eprintln!("{}", String::from_utf8_lossy(&out));
        panic!("{}: {e}", figure.name)
    });
    let disk = &results.disks[0];
    match figure.shown {
        Shown::Iops => disk.iops(),
        Shown::MibPerSecond => disk.mib_per_s(),
        Shown::DaemonCpu => results.daemon_cpu * 100.0,
    }
}

/// fio's `--version`, or `None` when it is not installed.
fn fio_version() -> Option<String> {
    let out = Command::new("fio").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// (IOPS, MiB/s) of fio reading `file` directly with io_uring, pinned to the guests' CPU.
fn run_fio(file: &Path, rw: &str, bs: &str, depth: u32, seconds: u64) -> (f64, f64) {
    let out = Command::new("fio")
        .args([
            "--name=figures",
            "--ioengine=io_uring",
            "--direct=1",
            "--time_based",
        ])
        .arg(format!("--filename={}", file.display()))
        .arg(format!("--rw={rw}"))
        .arg(format!("--bs={bs}"))
        .arg(format!("--iodepth={depth}"))
        .arg(format!("--runtime={seconds}"))
        .arg(format!("--cpus_allowed={}", PLACEMENT.guests))
        .args(["--output-format=terse", "--terse-version=3"])
        .output()
        .expect("fio runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fio failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Terse version 3: field 7 is the read bandwidth in KiB/s, field 8 the read IOPS.
    let line = text
        .lines()
        .find(|l| l.starts_with("3;"))
        .expect("fio's terse line");
    let fields: Vec<&str> = line.split(';').collect();
    let number = |i: usize| -> f64 { fields[i].parse().expect("a number in fio's output") };
    (number(7), number(6) / 1024.0)
}

/// Writes the 1 GiB data file once (every block allocated, so that reads reach the disk);
/// a file of the right size from an earlier run is reused.
fn data_file(path: &PathBuf) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == FILE_BYTES) {
        return Ok(());
    }
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let mut file = File::create(path)?;
    let mut chunk = vec![0u8; 1 << 20];
    for (i, byte) in chunk.iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    for _ in 0..FILE_BYTES / chunk.len() as u64 {
        file.write_all(&chunk)?;
    }
    file.sync_all()
}

fn table(figures: &[Figure], measured: &[Measured]) -> String {
    let mut out = format!(
        "{:<44} {:>16} {:>16} {:>6}  {}\n",
        "figure", "tokenbackd", "baseline", "ratio", "target"
    );
    for (figure, m) in figures.iter().zip(measured) {
        let ours = median(&m.tokenbackd);
        let baseline = (!m.baseline.is_empty()).then(|| median(&m.baseline));
        let baseline_text = match (&figure.baseline, baseline) {
            (Baseline::None, _) => "-".to_owned(),
            (Baseline::Fio(..), None) => "fio missing".to_owned(),
            (Baseline::Fio(..), Some(b)) => format!("fio {}", show(b, figure.shown)),
            (Baseline::Spec(_), b) => show(b.unwrap_or(0.0), figure.shown),
        };
        let ratio = baseline.map_or("-".to_owned(), |b| format!("{:.3}", ours / b));
        out += &format!(
            "{:<44} {:>16} {:>16} {:>6}  {}\n",
            figure.name,
            show(ours, figure.shown),
            baseline_text,
            ratio,
            figure.target
        );
    }
    out
}

fn show(value: f64, shown: Shown) -> String {
    match shown {
        Shown::Iops => format!("{:.1} k IOPS", value / 1000.0),
        Shown::MibPerSecond => format!("{value:.0} MiB/s"),
        Shown::DaemonCpu => format!("{value:.2}% CPU"),
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn progress(line: &str) {
    println!("figures: {line}");
    let _ = std::io::stdout().flush();
}
