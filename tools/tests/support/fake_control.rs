//! A stand-in for tokenbackd's control socket, following the protocol exactly (docs/qos.md,
//! "Control socket"): JSON lines, one reply per request in order, `ok:false` for bad
//! requests. It serves snapshots the test scripts, records what it was asked, and can be
//! made to answer garbage, so tokentop's edge cases (a daemon gone, garbage, huge numbers)
//! are tested without a daemon.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

/// What the fake serves and what it was asked.
#[derive(Default)]
pub struct Script {
    /// `stats` replies in turn (without "ok"); the last is repeated.
    pub snapshots: Vec<Value>,
    served: usize,
    /// Every request, in arrival order.
    pub requests: Vec<Value>,
    /// Answer this line to everything instead (garbage, another protocol).
    pub raw_reply: Option<String>,
    /// The protocol version claimed.
    pub protocol: u32,
}

pub struct FakeControl {
    pub path: PathBuf,
    pub script: Arc<Mutex<Script>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeControl {
    /// Listens at `path` (a stale file there is replaced, as the daemon does).
    pub fn start(path: &Path, snapshots: Vec<Value>) -> FakeControl {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let script = Arc::new(Mutex::new(Script {
            snapshots,
            protocol: 1,
            ..Script::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (script, stop) = (script.clone(), stop.clone());
            std::thread::spawn(move || accept(listener, script, stop))
        };
        FakeControl {
            path: path.to_owned(),
            script,
            stop,
            thread: Some(thread),
        }
    }

    /// The requests with this op, in order.
    pub fn requests(&self, op: &str) -> Vec<Value> {
        let script = self.script.lock().unwrap();
        script
            .requests
            .iter()
            .filter(|r| r["op"] == op)
            .cloned()
            .collect()
    }

    /// Stops listening and removes the socket, as a daemon that exits; connections made
    /// before are closed when their threads next look.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // A panic in the fake is a failure of the test, not something to drop.
            if thread.join().is_err() && !std::thread::panicking() {
                panic!("the fake control socket's thread panicked");
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for FakeControl {
    fn drop(&mut self) {
        self.shut();
    }
}

fn accept(listener: UnixListener, script: Arc<Mutex<Script>>, stop: Arc<AtomicBool>) {
    let mut connections = vec![];
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (script, stop) = (script.clone(), stop.clone());
                connections.push(std::thread::spawn(move || serve(stream, script, stop)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    for connection in connections {
        connection.join().unwrap();
    }
}

fn serve(stream: UnixStream, script: Arc<Mutex<Script>>, stop: Arc<AtomicBool>) {
    // Short reads so the thread notices `stop`; the client sees the connection close.
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                let reply = answer(&line, &mut script.lock().unwrap());
                line.clear();
                if writer.write_all(format!("{reply}\n").as_bytes()).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

fn answer(line: &str, script: &mut Script) -> String {
    let request: Value = match serde_json::from_str(line) {
        Ok(request) => request,
        Err(e) => return json!({"ok": false, "error": format!("not JSON: {e}")}).to_string(),
    };
    script.requests.push(request.clone());
    if let Some(raw) = &script.raw_reply {
        return raw.clone();
    }
    match request["op"].as_str() {
        Some("version") => {
            json!({"ok": true, "protocol": script.protocol, "daemon": "tokenbackd fake"})
        }
        Some("list") => json!({"ok": true, "vbds": [], "groups": []}),
        Some("stats") => {
            let at = script.served.min(script.snapshots.len() - 1);
            script.served += 1;
            let mut reply = script.snapshots[at].clone();
            reply["ok"] = Value::Bool(true);
            reply
        }
        Some("reset") => {
            let snapshot = script.snapshots.last().unwrap();
            let vbds = snapshot["vbds"].as_array().map_or(0, |v| v.len());
            json!({"ok": true, "reset": {"vbds": vbds, "groups": 0}})
        }
        _ => json!({"ok": false, "error": "unknown op"}),
    }
    .to_string()
}

/// A VBD as the daemon reports it, with the figures a test varies.
pub struct VbdFigures<'a> {
    pub domid: u16,
    pub domain: &'a str,
    pub vdev: &'a str,
    pub keys: Value,
    pub reads: u64,
    pub writes: u64,
    /// Sectors per request.
    pub sectors: u64,
    pub delayed: u64,
    pub read_iops: f64,
    pub since_reset_ns: u64,
}

pub fn vbd(f: &VbdFigures) -> Value {
    json!({
        "domid": f.domid, "devid": 51712, "vdev": f.vdev, "domain": f.domain,
        "backend": format!("/local/domain/0/backend/vbd/{}/51712", f.domid),
        "target": format!("/srv/{}.img", f.domain), "state": "connected", "queues": 1,
        "qos": {"keys": f.keys, "error": null, "group": null, "weight": 1},
        "counters": {
            "requests": {"read": f.reads, "write": f.writes},
            "sectors": {"read": f.reads * f.sectors, "write": f.writes * f.sectors},
            "delayed": {"read": f.delayed, "write": 0}, "throttled_ns": 1_500_000_000u64,
            "admission_delay_p50_ns": 1000, "admission_delay_p99_ns": 2_000_000
        },
        "storage": {"latency_p50_ns": 50_000, "latency_p99_ns": 900_000, "errors": 0},
        "balances": [{"limit": "iops-read", "burst": false, "balance": -3.5, "capacity": 50.0}],
        "queued": 7, "in_flight": 16,
        "rates": {"read_iops": f.read_iops, "write_iops": 0.0,
                  "read_bps": f.read_iops * 4096.0, "write_bps": 0.0},
        "since_reset_ns": f.since_reset_ns
    })
}

/// A fresh scratch directory for test `name`, for the stand-in's socket.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
