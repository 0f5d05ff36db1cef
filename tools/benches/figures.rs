//! The figures of issue 16 through the whole path: a simulated guest's blkfront (one thread,
//! pinned to CPU 0) -> tokenbackd (a separate process, pinned with its worker to CPU 1) ->
//! storage, next to fio on the same file in the same run:
//!
//! 1. 4 KiB random reads at queue depth 32, null storage (target >= 650 k IOPS);
//! 2. 4 KiB random reads at queue depth 32 on a 1 GiB file with O_DIRECT, and fio's io_uring
//!    engine on that file (target >= 0.9 of fio);
//! 3. 1 MiB sequential reads at queue depth 16 on the same file, and fio (target >= 0.9).
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

/// One figure: a workload through tokenbackd and, on a file, the same with fio.
struct Figure {
    name: &'static str,
    spec: String,
    engine: &'static str,
    /// fio's `--rw`, `--bs`, `--iodepth`, when compared with fio.
    fio: Option<(&'static str, &'static str, u32)>,
    /// Report MiB/s instead of IOPS.
    bandwidth: bool,
    target: &'static str,
}

/// What one run of a figure measured: tokenbackd's rate and fio's (IOPS or MiB/s).
#[derive(Default)]
struct Measured {
    tokenbackd: Vec<f64>,
    fio: Vec<f64>,
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
            let rate = through_tokenbackd(figure, &tmp.join("figures-run"), duration);
            progress(&format!(
                "run {run}/{runs}: {}: tokenbackd {}",
                figure.name,
                show(rate, figure.bandwidth)
            ));
            measured.tokenbackd.push(rate);
            if let (Some((rw, bs, depth)), Some(_)) = (figure.fio, &fio) {
                let (iops, mib) = run_fio(&file, rw, bs, depth, seconds);
                let rate = if figure.bandwidth { mib } else { iops };
                progress(&format!(
                    "run {run}/{runs}: {}: fio {}",
                    figure.name,
                    show(rate, figure.bandwidth)
                ));
                measured.fio.push(rate);
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
    vec![
        Figure {
            name: "4 KiB random reads, QD 32, null storage",
            spec: "size=1G,rw=randread,bs=4k,qd=32,queues=1,verify=0".into(),
            engine: "null",
            fio: None,
            bandwidth: false,
            target: ">= 650 k IOPS",
        },
        Figure {
            name: "4 KiB random reads, QD 32, 1 GiB file",
            spec: format!("file={file},rw=randread,bs=4k,qd=32,queues=1,verify=0"),
            engine: "uring",
            fio: Some(("randread", "4k", 32)),
            bandwidth: false,
            target: ">= 0.9 of fio",
        },
        Figure {
            name: "1 MiB sequential reads, QD 16, 1 GiB file",
            spec: format!("file={file},rw=read,bs=1M,qd=16,queues=1,verify=0"),
            engine: "uring",
            fio: Some(("read", "1M", 16)),
            bandwidth: true,
            target: ">= 0.9 of fio",
        },
    ]
}

/// IOPS (or MiB/s) of one run of `figure` through tokenbackd on a fresh simulated host.
fn through_tokenbackd(figure: &Figure, dir: &Path, duration: Duration) -> f64 {
    let spec = DiskSpec::parse(&figure.spec).expect("the figures' specs are valid");
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
    let disk = &results[0];
    if figure.bandwidth {
        disk.mib_per_s()
    } else {
        disk.iops()
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
        "figure", "tokenbackd", "fio direct", "ratio", "target"
    );
    for (figure, m) in figures.iter().zip(measured) {
        let ours = median(&m.tokenbackd);
        let fio = (!m.fio.is_empty()).then(|| median(&m.fio));
        let fio_text = match (figure.fio, fio) {
            (None, _) => "-".to_owned(),
            (Some(_), None) => "fio missing".to_owned(),
            (Some(_), Some(f)) => show(f, figure.bandwidth),
        };
        let ratio = fio.map_or("-".to_owned(), |f| format!("{:.2}", ours / f));
        out += &format!(
            "{:<44} {:>16} {:>16} {:>6}  {}\n",
            figure.name,
            show(ours, figure.bandwidth),
            fio_text,
            ratio,
            figure.target
        );
    }
    out
}

fn show(rate: f64, bandwidth: bool) -> String {
    if bandwidth {
        format!("{rate:.0} MiB/s")
    } else {
        format!("{:.1} k IOPS", rate / 1000.0)
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
