//! Shared by the blkfront tests: a simulated host (run directory, its own
//! tokenback-xenstored, the toolstack) and a scripted back end that plays Linux blkback.
// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

pub mod backend;
pub mod config;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tokenback::platform::sim::RunDir;
use tokenback::platform::DomId;
use tokenback_tools::blkfront::{Blkfront, Options};
use tokenback_tools::toolstack::{DiskPaths, DiskSpec, Toolstack};

pub use backend::ScriptedBackend;
pub use config::BackendConfig;

/// Generous bound for what happens "eventually".
pub const EVENTUALLY: Duration = Duration::from_secs(20);

/// Guest memory and grant table: room for 4 queues of 16 ring pages and a full ring of
/// large requests.
const GUEST_PAGES: usize = 8192;
const GRANT_FRAMES: usize = 32;

/// A simulated host with its own xenstored, removed on drop.
pub struct Host {
    pub run: RunDir,
    pub toolstack: Toolstack,
    // Last: the toolstack's connection goes before xenstored does.
    _xenstored: Xenstored,
}

/// A tokenback-xenstored process and its run directory, both gone on drop, also when the
/// host fails to start.
struct Xenstored {
    child: Child,
    dir: PathBuf,
}

impl Drop for Xenstored {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Host {
    pub fn start(name: &str) -> Host {
        // Short: unix socket paths below it must stay under 108 bytes.
        let dir = std::env::temp_dir().join(format!("tbbf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let run = RunDir::create(&dir).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tokenback-xenstored"))
            .arg("--run-dir")
            .arg(&dir)
            .spawn()
            .unwrap();
        let xenstored = Xenstored { child, dir };
        // The socket file appears when bound, a moment before xenstored listens on it.
        let mut toolstack = None;
        eventually("xenstored accepting connections", || {
            toolstack = Toolstack::new(run.clone()).ok();
            toolstack.is_some()
        });
        Host {
            run,
            toolstack: toolstack.unwrap(),
            _xenstored: xenstored,
        }
    }

    /// A guest with one disk (xvda) whose back end `backend` serves.
    pub fn guest_with_disk(
        &mut self,
        config: BackendConfig,
    ) -> (DomId, DiskPaths, ScriptedBackend) {
        let domid = self
            .toolstack
            .create_guest("guest", GUEST_PAGES, GRANT_FRAMES)
            .unwrap();
        let paths = self
            .toolstack
            .add_disk(domid, &DiskSpec::xvda("/dev/null"))
            .unwrap();
        let backend = ScriptedBackend::start(&self.run, domid, &paths, config);
        (domid, paths, backend)
    }

    pub fn options(&self, domid: DomId) -> Options {
        let mut opts = Options::new(self.run.clone(), domid, 51712);
        opts.timeout = EVENTUALLY;
        opts
    }

    /// A guest, its disk's back end and a connected front end.
    pub fn connected(
        &mut self,
        config: BackendConfig,
        tune: impl FnOnce(&mut Options),
    ) -> (Blkfront, ScriptedBackend, DiskPaths) {
        let (domid, paths, backend) = self.guest_with_disk(config);
        let mut opts = self.options(domid);
        tune(&mut opts);
        let front = Blkfront::connect(opts).unwrap();
        (front, backend, paths)
    }

    /// Reads a node as dom0.
    pub fn read(&mut self, path: &str) -> Option<String> {
        self.toolstack
            .xenstore()
            .read(xenstore_wire::client::TxId::NONE, path)
            .ok()
            .map(|v| String::from_utf8(v).unwrap())
    }
}

/// Polls `done` until it holds, failing after [`EVENTUALLY`].
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + EVENTUALLY;
    while !done() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Bytes that differ from sector to sector and from run to run of `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}
