//! Shared by the tools' integration tests: a tokenback-xenstored process on its own simulated
//! host, that host with the toolstack, a scripted back end that plays Linux blkback, and
//! Debian's xenstore-utils run against the simulated xenstored.
// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

pub mod backend;
pub mod config;
pub mod control;
pub mod daemon;
pub mod driver;
pub mod load;
pub mod loop_device;
pub mod neighbour;
pub mod workers;
pub mod xenstored;

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tokenback::platform::sim::RunDir;
use tokenback::platform::DomId;
use tokenback_tools::blkfront::{Blkfront, Options};
use tokenback_tools::toolstack::{DiskPaths, DiskSpec, Toolstack};

pub use backend::ScriptedBackend;
pub use config::BackendConfig;
pub use xenstored::Xenstored;

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

impl Host {
    pub fn start(name: &str) -> Host {
        let xenstored = Xenstored::start(name);
        let run = xenstored.run.clone();
        let toolstack = Toolstack::new(run.clone()).unwrap();
        Host {
            run,
            toolstack,
            _xenstored: xenstored,
        }
    }

    /// A guest with one disk (xvda) whose back end `backend` serves.
    pub fn guest_with_disk(
        &mut self,
        config: BackendConfig,
    ) -> (DomId, DiskPaths, ScriptedBackend) {
        let domid = self.new_guest();
        let paths = self
            .toolstack
            .add_disk(domid, &DiskSpec::xvda("/dev/null"))
            .unwrap();
        let backend = ScriptedBackend::start(&self.run, domid, &paths, config);
        (domid, paths, backend)
    }

    /// A new guest with room for 4 queues of order-4 rings and large requests.
    pub fn new_guest(&mut self) -> DomId {
        self.new_named_guest("guest")
    }

    /// As [`Host::new_guest`], its domain named `name`.
    pub fn new_named_guest(&mut self, name: &str) -> DomId {
        self.toolstack
            .create_guest(name, GUEST_PAGES, GRANT_FRAMES)
            .unwrap()
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

/// Writes then reads back `len` bytes at `sector` through `front`, and checks that `storage`
/// (a file or block device) holds them.
pub fn round_trip(front: &mut Blkfront, storage: &Path, sector: u64, len: usize, seed: u8) {
    use std::os::unix::fs::FileExt;
    let data = pattern(len, seed);
    front.write(sector, &data).unwrap();
    let mut back = vec![0; len];
    front.read(sector, &mut back).unwrap();
    assert!(back == data, "{len} bytes at sector {sector} read back");
    let mut stored = vec![0; len];
    std::fs::File::open(storage)
        .unwrap()
        .read_exact_at(&mut stored, sector * 512)
        .unwrap();
    assert!(
        stored == data,
        "{len} bytes at sector {sector} in the storage"
    );
}

/// A sparse file of `bytes` in the host's run directory.
pub fn storage_file(host: &Host, name: &str, bytes: u64) -> std::path::PathBuf {
    let path = host.run.root().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .set_len(bytes)
        .unwrap();
    path
}

/// Bytes that differ from sector to sector and from run to run of `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// Runs one of Debian's xenstore-utils against `socket`.
pub fn xs(socket: &Path, tool: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .env("XENSTORED_PATH", socket)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e} (is xenstore-utils installed?)"))
}

/// Its stdout, asserting it succeeded.
pub fn xs_ok(socket: &Path, tool: &str, args: &[&str]) -> String {
    let out = xs(socket, tool, args);
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Debian's `xenstore-watch -n COUNT PATH`, its registration event already seen: the watch is
/// in place once [`XsWatch::start`] returns.
pub struct XsWatch {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl XsWatch {
    pub fn start(socket: &Path, path: &str, count: u32) -> XsWatch {
        let mut child = Command::new("xenstore-watch")
            .args(["-n", &count.to_string(), path])
            .env("XENSTORED_PATH", socket)
            .stdout(Stdio::piped())
            .spawn()
            .expect("xenstore-watch (is xenstore-utils installed?)");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut watch = XsWatch { child, lines };
        assert_eq!(watch.next(), path, "the registration event comes first");
        watch
    }

    /// The path of the next event.
    pub fn next(&mut self) -> String {
        self.lines.next().expect("an event").unwrap()
    }

    /// Asserts that the watcher exits 0 (it has seen its COUNT events).
    pub fn finish(mut self) {
        assert!(self.child.wait().unwrap().success());
    }
}
