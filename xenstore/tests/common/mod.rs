//! An in-process xenstored on a unix socket in its own temp directory.
// Each test crate compiles this module and uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xenstore_wire::server::transport::{Config, Report, SocketServer, StopHandle};
use xenstore_wire::server::Quotas;

/// Generous bound for things that happen "eventually".
pub const EVENTUALLY: Duration = Duration::from_secs(20);

pub struct TestServer {
    pub dir: PathBuf,
    pub reports: Arc<Mutex<Vec<String>>>,
    stop: Option<StopHandle>,
    thread: Option<JoinHandle<()>>,
    /// Keep the directory (for a restart in the same place).
    keep_dir: bool,
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xenstore-wire-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl TestServer {
    pub fn start(name: &str) -> TestServer {
        TestServer::start_in(temp_dir(name))
    }

    /// Serves in an existing directory; domains 1..=99 exist.
    pub fn start_in(dir: PathBuf) -> TestServer {
        let config = Config {
            socket: dir.join("socket"),
            domain_dir: Some(dir.join("domain")),
            quotas: Quotas::default(),
            domain_exists: Box::new(|d| d < 100),
        };
        let mut server = SocketServer::bind(config).unwrap();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let sink = reports.clone();
        server.on_report(move |r: Report| sink.lock().unwrap().push(r.to_string()));
        let stop = server.stop_handle();
        let thread = std::thread::spawn(move || server.run().unwrap());
        TestServer {
            dir,
            reports,
            stop: Some(stop),
            thread: Some(thread),
            keep_dir: false,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("socket")
    }

    /// Stops the server and leaves its directory for a successor.
    pub fn stop_keeping_dir(mut self) -> PathBuf {
        self.keep_dir = true;
        self.dir.clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Waits until `cond` holds, failing after [`EVENTUALLY`].
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + EVENTUALLY;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}
