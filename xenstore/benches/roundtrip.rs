//! Figures for the xenstore path over the unix socket: read round trips per second (one
//! client, a small key) with client and server on the same core and on different cores, and
//! watch events delivered per second. Prints figures; target: >= 50,000 round trips/s.
//!
//! Only the threads of a measurement are pinned, never the main thread: threads inherit
//! their creator's CPU mask, so a pinned main thread would put every later server and
//! watcher thread on its core. Each measurement checks that the main thread's mask is what
//! it was at the start.
//!
//! Run with `cargo bench -p xenstore-wire --bench roundtrip`.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xenstore_wire::client::blocking::Client;
use xenstore_wire::client::{Endpoint, TxId};
use xenstore_wire::server::transport::{Config, SocketServer, StopHandle};
use xenstore_wire::server::Quotas;

const ROUND_TRIPS: u32 = 50_000;
const WARM_UP: u32 = 2_000;
const EVENTS: u32 = 20_000;

/// The calling thread's CPU mask.
fn affinity() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; the call only writes to it.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(
        r,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    set
}

/// How many CPUs a mask holds.
fn cpu_count(set: &libc::cpu_set_t) -> u32 {
    // SAFETY: CPU_COUNT only reads the set.
    let n = unsafe { libc::CPU_COUNT(set) };
    u32::try_from(n).unwrap_or(0)
}

/// Pins the calling thread to one CPU; `None` leaves it to the scheduler.
fn pin(cpu: Option<usize>) {
    let Some(cpu) = cpu else { return };
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t and `cpu` is below CPU_SETSIZE on this machine.
    let r = unsafe {
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r != 0 {
        eprintln!(
            "cannot pin to cpu {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

struct Bench {
    dir: PathBuf,
    stop: StopHandle,
    thread: Option<JoinHandle<()>>,
}

impl Bench {
    fn start(name: &str, server_cpu: Option<usize>) -> Bench {
        let dir =
            std::env::temp_dir().join(format!("xenstore-bench-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = SocketServer::bind(Config {
            socket: dir.join("socket"),
            domain_dir: None,
            quotas: Quotas::default(),
            domain_exists: Box::new(|_| false),
        })
        .unwrap();
        let stop = server.stop_handle();
        let thread = std::thread::spawn(move || {
            pin(server_cpu);
            server.run().unwrap();
        });
        Bench {
            dir,
            stop,
            thread: Some(thread),
        }
    }

    fn client(&self) -> Client {
        Client::connect(Endpoint::Socket(self.dir.join("socket"))).unwrap()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn round_trips(placement: &str, server_cpu: Option<usize>, client_cpu: Option<usize>) {
    let bench = Bench::start(placement, server_cpu);
    let mut c = bench.client();
    // The client runs in its own thread, which alone is pinned.
    let elapsed = std::thread::scope(|s| {
        s.spawn(|| {
            pin(client_cpu);
            c.write(TxId::NONE, "/bench/key", b"small value").unwrap();
            for _ in 0..WARM_UP {
                c.read(TxId::NONE, "/bench/key").unwrap();
            }
            let start = Instant::now();
            for _ in 0..ROUND_TRIPS {
                c.read(TxId::NONE, "/bench/key").unwrap();
            }
            start.elapsed()
        })
        .join()
        .unwrap()
    });
    report(
        &format!("read round trips/s, {placement}"),
        ROUND_TRIPS,
        elapsed,
    );
}

fn watch_events(watchers: usize) {
    let bench = Bench::start(&format!("events-{watchers}"), None);
    let mut threads = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for _ in 0..watchers {
        let mut w = bench.client();
        let ready = ready_tx.clone();
        threads.push(std::thread::spawn(move || {
            w.watch("/ev", "t").unwrap();
            // The registration event, then one per write.
            w.next_event(None).unwrap();
            ready.send(()).unwrap();
            for _ in 0..EVENTS {
                w.next_event(Some(Duration::from_secs(30)))
                    .unwrap()
                    .expect("event");
            }
        }));
    }
    for _ in 0..watchers {
        ready_rx.recv().unwrap();
    }
    let mut writer = bench.client();
    let start = Instant::now();
    for i in 0..EVENTS {
        writer
            .write(TxId::NONE, "/ev/k", i.to_string().as_bytes())
            .unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    report(
        &format!("watch events delivered/s, 1 writer, {watchers} watcher(s)"),
        EVENTS * watchers as u32,
        start.elapsed(),
    );
}

fn report(what: &str, count: u32, elapsed: Duration) {
    let rate = f64::from(count) / elapsed.as_secs_f64();
    println!("{what}: {rate:.0} ({count} in {elapsed:.2?})");
}

fn main() {
    // `cargo bench -- --list` and test-mode runs expect no work.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mask = affinity();
    println!("main thread may run on {} CPU(s)", cpu_count(&mask));
    let unchanged = || {
        let now = affinity();
        // SAFETY: CPU_EQUAL only reads both sets.
        let same = unsafe { libc::CPU_EQUAL(&now, &mask) };
        assert!(same, "the main thread was pinned");
    };
    round_trips("unpinned", None, None);
    round_trips("same core", Some(0), Some(0));
    unchanged();
    if cpus > 1 {
        round_trips("different cores", Some(0), Some(1));
        unchanged();
    }
    watch_events(1);
    watch_events(4);
    unchanged();
}
