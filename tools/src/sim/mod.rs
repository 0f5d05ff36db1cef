//! tokenback-sim: a simulated Xen host in a run directory (xenstored, guests, the
//! toolstack's and hotplug script's parts for each disk), tokenbackd serving it as a
//! separate process, a workload on each disk's blkfront, live progress and a summary.

pub mod host;
pub mod jobs;
pub mod pin;
pub mod process;
pub mod report;
pub mod retune;
pub mod spec;
pub mod table;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokenback::platform::{DomId, PAGE_SIZE};

use crate::blkfront::{self, GuestAllocator, Options};
use crate::toolstack::{self, xl_disk};
use crate::workload::{Sample, Snapshot, WorkloadError};
use host::SimHost;
use jobs::{Job, JobSetup};
pub use pin::Placement;
use process::Daemon;
pub use spec::DiskSpec;

/// Guest memory and grant table: room for 4 queues of 16 ring pages and deep queues of
/// large requests, for every disk of a guest.
const GUEST_PAGES: usize = 32768;
const GRANT_FRAMES: usize = 64;

/// Why a run failed.
#[derive(Debug, Error)]
pub enum SimError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("simulated host: {0}")]
    Host(String),
    #[error("{} not found (it is installed beside tokenback-sim; give another with --tokenbackd)", .0.display())]
    Missing(PathBuf),
    #[error("cannot start {}: {source}", path.display())]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tokenbackd exited ({status}); its log: {}", log.display())]
    DaemonDied { status: ExitStatus, log: PathBuf },
    #[error("tokenbackd did not exit within its time after SIGTERM; its log: {}", .0.display())]
    StopTimeout(PathBuf),
    #[error("tokenbackd was already stopped")]
    Stopped,
    #[error("xenstore: {0}")]
    Xenstore(String),
    #[error("{0} did not connect: {1}")]
    Connect(String, blkfront::Error),
    #[error("{0}: {1}")]
    Workload(String, WorkloadError),
    #[error("xenstore-write: {0}")]
    XenstoreWrite(String),
    #[error("{0}: the job panicked")]
    Panicked(String),
    #[error("toolstack: {0}")]
    Toolstack(#[from] toolstack::ToolstackError),
    #[error("{0} of the disks failed")]
    Failed(usize),
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub disks: Vec<DiskSpec>,
    pub duration: Duration,
    /// The run directory; default a fresh one in the temporary directory.
    pub dir: Option<PathBuf>,
    /// Keep the run directory afterwards.
    pub keep: bool,
    pub tokenbackd: Option<PathBuf>,
    pub io_engine: String,
    pub workers: u16,
    pub connect_timeout: Duration,
    /// Where the hotplug scripts are; default [`toolstack::default_script_dir`].
    pub script_dir: Option<PathBuf>,
    /// Print live progress lines.
    pub live: bool,
    /// Pin the guests and tokenbackd to CPUs of their own; default where the scheduler puts them.
    pub placement: Option<Placement>,
}

/// What one disk did.
#[derive(Debug)]
pub struct DiskResult {
    pub name: String,
    pub spec: DiskSpec,
    pub totals: Snapshot,
    pub samples: Vec<Sample>,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub limit_before: String,
    pub retune: Option<RetuneResult>,
    pub seconds: f64,
    pub error: Option<String>,
}

/// What a run measured.
#[derive(Debug)]
pub struct RunResult {
    pub disks: Vec<DiskResult>,
    /// Seconds from the workloads' start to their end.
    pub seconds: f64,
    /// tokenbackd's CPU time over those seconds, in cores (0.01 = 1% of one core).
    pub daemon_cpu: f64,
}

/// The rates (ops/s, bytes/s) around a retune.
#[derive(Debug)]
pub struct RetuneResult {
    pub at: Duration,
    pub limit: String,
    pub before: (f64, f64),
    pub after: (f64, f64),
}

impl DiskResult {
    pub fn iops(&self) -> f64 {
        self.totals.ops() as f64 / self.seconds
    }

    pub fn mib_per_s(&self) -> f64 {
        self.totals.bytes() as f64 / self.seconds / (1024.0 * 1024.0)
    }
}

/// The demo: three guests, unlimited, 2000 read IOPS (cut to 500 half way), 8 MiB/s.
pub fn demo_disks(duration: Duration) -> Vec<DiskSpec> {
    let half = duration.as_millis() / 2;
    [
        "size=64M,rw=randrw,bs=4k,qd=16".to_owned(),
        format!("size=64M,rw=randread,bs=4k,qd=16,iops-read=2000,retune-at={half}ms:iops-read=500"),
        "size=64M,rw=randrw,bs=64k,qd=8,bps-total=8388608".to_owned(),
    ]
    .iter()
    .map(|s| DiskSpec::parse(s).expect("the demo's specs are valid"))
    .collect()
}

/// Runs `config`, printing progress and the summary to `out` unless `json`, then the JSON.
pub fn run(config: &RunConfig, out: &mut dyn Write, json: bool) -> Result<RunResult, SimError> {
    let dir = config.dir.clone().unwrap_or_else(|| {
        // Short: unix socket paths below it must stay under 108 bytes.
        std::env::temp_dir().join(format!("tokenback-sim-{}", std::process::id()))
    });
    let result = run_in(config, &dir, out, json);
    if config.keep || result.is_err() {
        let _ = writeln!(out, "run directory kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(
    config: &RunConfig,
    dir: &std::path::Path,
    out: &mut dyn Write,
    json: bool,
) -> Result<RunResult, SimError> {
    let mut host = SimHost::start(dir)?;
    if let Some(scripts) = &config.script_dir {
        host.toolstack.set_script_dir(scripts);
    }
    let exe = match &config.tokenbackd {
        Some(path) => path.clone(),
        None => host::beside_me("tokenbackd")?,
    };
    let daemon_cpu = config.placement.map(|p| p.daemon);
    let mut daemon = Daemon::start(&exe, dir, config.workers, &config.io_engine, daemon_cpu)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut guests: HashMap<String, (DomId, GuestAllocator, u16)> = HashMap::new();
    let mut setups = Vec::new();
    let mut paths_of = Vec::new();
    for (i, spec) in config.disks.iter().enumerate() {
        let guest = spec
            .guest
            .clone()
            .unwrap_or_else(|| format!("guest{}", i + 1));
        if !guests.contains_key(&guest) {
            let domid = host
                .toolstack
                .create_guest(&guest, GUEST_PAGES, GRANT_FRAMES)?;
            let allocator = GuestAllocator::open(&host.run, domid)
                .map_err(|e| SimError::Host(e.to_string()))?;
            guests.insert(guest.clone(), (domid, allocator, 0));
        }
        let (domid, allocator, next) = guests.get_mut(&guest).ok_or(SimError::Stopped)?;
        let disk = match &spec.xl {
            Some(xl) => xl.spec(),
            None => {
                let index = *next;
                *next += 1;
                let vdev = format!("xvd{}", char::from(b'a' + (index % 26) as u8));
                let storage = match &spec.file {
                    Some(file) => file.clone(),
                    None => {
                        let storage = dir.join(format!("{guest}-{vdev}.img"));
                        std::fs::File::create(&storage)?.set_len(spec.size)?;
                        storage
                    }
                };
                let mut disk = toolstack::DiskSpec::xvda(&xl_disk::target(
                    &storage.display().to_string(),
                    &spec.qos,
                ));
                disk.devid = 51712 + 16 * index;
                disk.vdev = vdev;
                disk
            }
        };
        let paths = host.toolstack.add_disk(*domid, &disk)?;
        let mut options = Options::new(host.run.clone(), *domid, disk.devid);
        options.timeout = config.connect_timeout;
        options.allocator = Some(allocator.clone());
        if let Some(queues) = spec.queues {
            options.max_queues = queues;
        }
        // The workload does not split blocks as a guest's block layer would: a block beyond
        // Linux's default of 32 segments goes as one request, as with blkfront's
        // max_indirect_segments raised.
        let segments = u32::try_from(spec.block_size.div_ceil(PAGE_SIZE)).unwrap_or(u32::MAX);
        options.max_indirect_segments = options.max_indirect_segments.max(segments);
        setups.push(JobSetup {
            name: format!("{guest}/{}", disk.vdev),
            spec: spec.clone(),
            options,
            backend: paths.backend.clone(),
            socket: host.run.xenstored_socket(),
            duration: config.duration,
            stop: Arc::clone(&stop),
            cpu: config.placement.map(|p| p.guests),
        });
        paths_of.push(paths);
    }
    // As libxl: the script runs once the back end is in InitWait, and the guest starts after.
    for paths in &paths_of {
        daemon.check_alive()?;
        host.toolstack.hotplug_add(paths, config.connect_timeout)?;
    }
    if !json {
        let _ = writeln!(
            out,
            "tokenback-sim: {} disk(s) for {:.0}s on {} (tokenbackd log: {})",
            setups.len(),
            config.duration.as_secs_f64(),
            dir.display(),
            daemon.log().display()
        );
    }
    let (started, cpu_at_start) = (Instant::now(), daemon.cpu_seconds()?);
    let jobs: Vec<Job> = setups.into_iter().map(Job::start).collect();
    let watched = watch(&jobs, &mut daemon, out, config.live && !json, started);
    if watched.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    let seconds = started.elapsed().as_secs_f64().max(0.001);
    let disks: Vec<DiskResult> = jobs.into_iter().map(|j| result_of(j, seconds)).collect();
    // Before the stop: its drain is not the workload's.
    let cpu = daemon.cpu_seconds();
    let stopped = daemon.stop();
    watched?;
    let result = RunResult {
        disks,
        seconds,
        daemon_cpu: (cpu? - cpu_at_start).max(0.0) / seconds,
    };
    if json {
        let _ = writeln!(out, "{}", report::json(&result));
    } else {
        let _ = write!(out, "\n{}", table::summary(&result));
    }
    stopped?;
    let failed = result.disks.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        return Err(SimError::Failed(failed));
    }
    Ok(result)
}

/// Prints a line per disk each second until every job ends; fails if the daemon dies.
fn watch(
    jobs: &[Job],
    daemon: &mut Daemon,
    out: &mut dyn Write,
    live: bool,
    started: Instant,
) -> Result<(), SimError> {
    let mut last: Vec<Snapshot> = jobs.iter().map(|j| j.stats.snapshot()).collect();
    let mut second = 0u64;
    while !jobs.iter().all(Job::is_finished) {
        let next = started + Duration::from_secs(second + 1);
        while Instant::now() < next && !jobs.iter().all(Job::is_finished) {
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon.check_alive()?;
        second += 1;
        // The jobs ended inside this second: a part of a second is not a rate.
        let whole = Instant::now() >= next;
        for (job, last) in jobs.iter().zip(&mut last) {
            let now = job.stats.snapshot();
            if live && whole {
                let line = table::live_line(
                    second,
                    &job.name,
                    now.ops() - last.ops(),
                    now.bytes() - last.bytes(),
                    &job.limit(),
                );
                let _ = writeln!(out, "{line}");
            }
            *last = now;
        }
    }
    Ok(())
}

fn result_of(job: Job, seconds: f64) -> DiskResult {
    let limit_before = jobs::describe(&job.spec.qos);
    let (name, stats, spec, outcome) = job.join();
    let samples = stats.samples();
    let retune = spec.retune.as_ref().map(|r| {
        let at = r.at.as_secs_f64();
        // Whole seconds on either side, skipping the one of the reconnect.
        let before = average(samples.iter().filter(|s| f64::from(s.second + 1) <= at));
        let after = average(samples.iter().filter(|s| f64::from(s.second) >= at + 1.0));
        RetuneResult {
            at: r.at,
            limit: jobs::describe(&spec.qos_after_retune(r)),
            before,
            after,
        }
    });
    DiskResult {
        name,
        totals: stats.snapshot(),
        p50: stats.latency_percentile(50.0),
        p99: stats.latency_percentile(99.0),
        samples,
        limit_before,
        retune,
        seconds,
        error: outcome.err().map(|e| e.to_string()),
        spec,
    }
}

/// Mean ops/s and bytes/s of per-second samples.
fn average<'a>(samples: impl Iterator<Item = &'a Sample>) -> (f64, f64) {
    let (mut n, mut ops, mut bytes) = (0u32, 0u64, 0u64);
    for s in samples {
        n += 1;
        ops += s.ops;
        bytes += s.bytes;
    }
    let n = f64::from(n.max(1));
    (ops as f64 / n, bytes as f64 / n)
}
