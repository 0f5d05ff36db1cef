//! A throttled workload through the real blkif ring code and the real QoS limiter, in one
//! process, on the real monotonic clock.
//!
//! There is no simulated host here, no xenstore and no grant copies: each virtual disk is a
//! `blkif::mock::MockRing`, a shared ring in process memory whose front end (the ring crate's,
//! standing in for a guest) keeps the ring full: `xvda` reads 4 KiB under `iops-total`, `xvdb`
//! writes 32 KiB under `bps-write` with a burst. The back end copies each request out of the
//! ring once, validates it, queues it in the VBD's limiter, and answers it as soon as the
//! limiter admits it (null storage), so the table shows the limiter's pacing and nothing else.
//! The loop sleeps until the limiter's next deadline and, on waking, admits every request that
//! fell due meanwhile at the instant it was due (`Vbd::poll_admit_due`), as the daemon's worker
//! will. Half way through, `xvda` is retuned by an in-process call, the same change a
//! `xenstore-write` of its `iops-total` key will make once the daemon serves disks.
//!
//! Run: `cargo run --release --example qos_demo [-- SECONDS]` (default 8).

use std::collections::VecDeque;
use std::thread;
use std::time::{Duration, Instant};

use blkif::abi::Segment;
use blkif::mock::MockRing;
use blkif::{Limits, Protocol, RawDirect, RawRequest, RequestKind, Status};
use tokenback::limiter::{Admitted, Op, Request, Vbd, VbdConfig};

/// A virtual disk: its mock ring, its limiter and what the table shows of it.
struct Disk {
    name: &'static str,
    ring: MockRing,
    limiter: Vbd,
    /// Validated requests held by the limiter, in its FIFO order.
    held: VecDeque<blkif::Request>,
    /// What the limiter admitted in one step (reused, so the loop does not allocate).
    admitted: Vec<Admitted>,
    /// The limiter's next deadline, if a request is held.
    wake: Option<u64>,
    keys: Vec<(&'static str, &'static str)>,
    op: u8,
    segments: u8,
    next_id: u64,
}

impl Disk {
    fn new(
        name: &'static str,
        op: u8,
        segments: u8,
        keys: Vec<(&'static str, &'static str)>,
    ) -> Disk {
        let ring = MockRing::new(0, Protocol::Native, Limits::DIRECT_ONLY).expect("ring");
        let config = VbdConfig::parse(keys.iter().copied()).expect("valid demo keys");
        Disk {
            name,
            ring,
            limiter: Vbd::new(&config, 0),
            held: VecDeque::new(),
            admitted: Vec::new(),
            wake: None,
            keys,
            op,
            segments,
            next_id: 0,
        }
    }

    /// The front end: fill every free slot with a request and publish them.
    fn front_submit(&mut self) {
        while self.ring.front.free_requests() > 0 {
            let mut seg = [Segment::default(); blkif::abi::BLKIF_MAX_SEGMENTS_PER_REQUEST];
            for (i, s) in seg.iter_mut().take(usize::from(self.segments)).enumerate() {
                *s = Segment::new(i as u32 + 8, 0, 7);
            }
            let request = RawRequest::Direct(RawDirect {
                operation: self.op,
                nr_segments: self.segments,
                handle: 0,
                id: self.next_id,
                sector_number: self.next_id * u64::from(self.segments) * 8,
                seg,
            });
            self.next_id += 1;
            self.ring.front.push_request(&request).expect("free slot");
        }
        self.ring.front.push_requests_and_check_notify();
    }

    /// The back end: take new requests into the limiter, answer everything it admits as due by
    /// `now`, and note its next deadline.
    fn backend_step(&mut self, now: u64) {
        let requests = self.ring.back.requests().expect("well-behaved front end");
        for request in requests {
            let request = request.expect("valid request");
            let (op, bytes) = match request.kind() {
                RequestKind::Read(s) => (Op::Read, s.nr_sectors() * 512),
                RequestKind::Write(s) => (Op::Write, s.nr_sectors() * 512),
                other => unreachable!("the demo front end sends only reads and writes: {other:?}"),
            };
            let id = request.id();
            self.limiter.enqueue(Request { id, op, bytes }, now);
            self.held.push_back(request);
        }
        self.admitted.clear();
        self.wake = self.limiter.poll_admit_due(now, &mut self.admitted);
        for admitted in &self.admitted {
            let request = self.held.pop_front().expect("admitted requests were held");
            assert_eq!(
                request.id(),
                admitted.request.id,
                "the limiter keeps FIFO order"
            );
            let response = request.response(Status::Okay);
            self.ring
                .back
                .push_response(&response)
                .expect("outstanding");
            self.limiter.complete(now);
        }
        self.ring.back.push_responses_and_check_notify();
        // The front end consumes its responses at once.
        self.ring.front.responses().expect("sane back end").count();
    }

    fn retune(&mut self, keys: Vec<(&'static str, &'static str)>, now: u64) {
        let config = VbdConfig::parse(keys.iter().copied()).expect("valid demo keys");
        self.limiter.retune(&config, now);
        self.wake = self.limiter.next_admit_at(now);
        self.keys = keys;
    }

    /// One table row from the limiter's own counters over the second that ends at `now`, then a
    /// reset.
    fn report(&mut self, t: u64, now: u64) {
        let stats = self.limiter.stats(now);
        let c = &stats.counters;
        let requests = c.requests.read + c.requests.write;
        let mib = (c.sectors.read + c.sectors.write) as f64 * 512.0 / (1024.0 * 1024.0);
        let p99 = c.delay_p99_ns.map_or(0.0, |ns| ns as f64 / 1e6);
        let keys: Vec<String> = self.keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{t:>4}  {:<5} {requests:>7} {mib:>8.2} {:>6} {p99:>9.2}  {}",
            self.name,
            stats.queued,
            keys.join(" "),
        );
        self.limiter.reset_counters(now);
    }
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SECONDS must be a whole number"))
        .unwrap_or(8);
    let mut disks = [
        Disk::new(
            "xvda",
            blkif::abi::BLKIF_OP_READ,
            1,
            vec![("iops-total", "2000")],
        ),
        Disk::new(
            "xvdb",
            blkif::abi::BLKIF_OP_WRITE,
            8,
            vec![
                ("bps-write", "4194304"),
                ("bps-write-max", "16777216"),
                ("bps-write-max-length", "2"),
            ],
        ),
    ];
    println!(
        "tokenback QoS demo: two mock blkif rings kept full for {seconds} s, \
         paced by the limiter on the real clock."
    );
    println!(
        "{:>4}  {:<5} {:>7} {:>8} {:>6} {:>9}  limits (QoS keys)",
        "t(s)", "disk", "IOPS", "MiB/s", "queue", "p99(ms)"
    );
    let start = Instant::now();
    let ns = |i: Instant| i.duration_since(start).as_nanos() as u64;
    const SECOND: u64 = 1_000_000_000;
    let mut next_report = SECOND;
    loop {
        let now = ns(Instant::now());
        if now >= next_report {
            // Close the second first: take the decisions that fell due before it ended, so that
            // a row counts what was due in [t - 1 s, t), however late this wake-up is.
            for disk in &mut disks {
                disk.front_submit();
                disk.backend_step(next_report - 1);
            }
            let t = next_report / SECOND;
            for disk in &mut disks {
                disk.report(t, next_report);
            }
            if t >= seconds {
                break;
            }
            if t == seconds / 2 {
                println!(
                    "      retune xvda: iops-total=500 (an in-process call; the daemon will make \
                     it on a xenstore-write of the key)"
                );
                disks[0].retune(vec![("iops-total", "500")], next_report);
            }
            next_report += SECOND;
        }
        for disk in &mut disks {
            disk.front_submit();
            disk.backend_step(now);
        }
        // Sleep until the first instant a held request becomes admissible, or the next report.
        let wake = disks
            .iter()
            .filter_map(|d| d.wake)
            .fold(next_report, u64::min);
        let now = ns(Instant::now());
        if wake > now {
            thread::sleep(Duration::from_nanos(wake - now));
        }
    }
}
