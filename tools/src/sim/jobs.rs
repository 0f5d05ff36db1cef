//! One thread per disk: connect its guest's blkfront, run the disk's workload, and at its
//! retune time write the new limit with `xenstore-write` while the workload runs on.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use blkif::abi::SECTOR_SIZE;

use super::spec::DiskSpec;
use super::{retune, SimError};
use crate::blkfront::{Blkfront, Options};
use crate::workload::{Runner, Stats, Workload};

/// What a job needs to run.
pub struct JobSetup {
    /// `guest/vdev`, for the output.
    pub name: String,
    pub spec: DiskSpec,
    pub options: Options,
    /// The disk's backend directory.
    pub backend: String,
    /// dom0's xenstored socket, for `xenstore-write`.
    pub socket: PathBuf,
    pub duration: Duration,
    pub stop: Arc<AtomicBool>,
    /// The CPU the job's thread is pinned to, if any.
    pub cpu: Option<usize>,
}

/// A running job and what it shows while running.
pub struct Job {
    pub name: String,
    pub spec: DiskSpec,
    pub stats: Arc<Stats>,
    limit: Arc<Mutex<String>>,
    thread: JoinHandle<Result<(), SimError>>,
}

impl Job {
    /// Starts the job's thread.
    pub fn start(setup: JobSetup) -> Job {
        let stats = Arc::new(Stats::default());
        let limit = Arc::new(Mutex::new(describe(&setup.spec.qos)));
        let (name, spec) = (setup.name.clone(), setup.spec.clone());
        let (s, l) = (Arc::clone(&stats), Arc::clone(&limit));
        let thread = std::thread::spawn(move || body(&setup, &s, &l));
        Job {
            name,
            spec,
            stats,
            limit,
            thread,
        }
    }

    /// The limit in force now.
    pub fn limit(&self) -> String {
        self.limit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the end; the job's error if it failed.
    pub fn join(self) -> (String, Arc<Stats>, DiskSpec, Result<(), SimError>) {
        let result = self
            .thread
            .join()
            .unwrap_or_else(|_| Err(SimError::Panicked(self.name.clone())));
        (self.name, self.stats, self.spec, result)
    }
}

/// `k=v k=v`, or `unlimited`.
pub fn describe(qos: &[(String, String)]) -> String {
    if qos.is_empty() {
        return "unlimited".into();
    }
    let keys: Vec<String> = qos.iter().map(|(k, v)| format!("{k}={v}")).collect();
    keys.join(" ")
}

fn body(setup: &JobSetup, stats: &Stats, limit: &Mutex<String>) -> Result<(), SimError> {
    if let Some(cpu) = setup.cpu {
        super::pin::pin_current(cpu)?;
    }
    let connect = |opts: &Options| {
        Blkfront::connect(opts.clone()).map_err(|e| SimError::Connect(setup.name.clone(), e))
    };
    let mut front = connect(&setup.options)?;
    let workload = Workload {
        mode: setup.spec.mode,
        block_size: setup.spec.block_size,
        queue_depth: setup.spec.queue_depth,
        duration: setup.duration,
        verify: setup.spec.verify,
        seed: u64::from(setup.options.domid.0) << 16 | u64::from(setup.options.devid),
    };
    let disk_bytes = front.disk().sectors * SECTOR_SIZE;
    let mut runner = Runner::new(workload, disk_bytes, stats).map_err(job_err(setup))?;
    let stop = &setup.stop;
    let Some(change) = setup.spec.retune.as_ref().filter(|r| r.at < setup.duration) else {
        return runner
            .run_for(&mut front, setup.duration, stats, stop)
            .map_err(job_err(setup));
    };
    // The write comes from a thread of its own, as an operator's does: the workload keeps
    // its requests in flight across it.
    let key = format!("{}/{}", setup.backend, change.key);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            std::thread::sleep(change.at);
            retune::xenstore_write(&setup.socket, &key, &change.value)?;
            *limit.lock().unwrap_or_else(PoisonError::into_inner) =
                describe(&setup.spec.qos_after_retune(change));
            Ok(())
        });
        let ran = runner.run_for(&mut front, setup.duration, stats, stop);
        writer
            .join()
            .unwrap_or_else(|_| Err(SimError::Panicked(setup.name.clone())))?;
        ran.map_err(job_err(setup))
    })
}

fn job_err(setup: &JobSetup) -> impl Fn(crate::workload::WorkloadError) -> SimError + '_ {
    |e| SimError::Workload(setup.name.clone(), e)
}
