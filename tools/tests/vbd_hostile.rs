//! A hostile front end against tokenback's request pipeline (src/vbd): one set of workers
//! serves 15 well-behaved guests doing verified I/O in threads and one guest that breaks the
//! rules through [`Blkfront::raw`]. Each test checks what the back end answered the hostile
//! guest, and that every neighbour kept verifying its data meanwhile. The xenbus side is
//! played by the test (support/workers.rs).
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use blkif::abi::{Segment, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE};
use blkif::abi::{BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY};
use blkif::{RawDirect, RawDiscard, RawIndirect, RawRequest, Response};
use support::neighbour::Neighbour;
use support::storage_file;
use support::workers::{attach, Disk, Served};
use support::{eventually, pattern, Host};
use tokenback::platform::sim::EndAccessError;
use tokenback::platform::{DomId, GrantRef};
use tokenback::storage::EngineKind;
use tokenback::vbd::Report;
use tokenback::xenbus::DeviceId;
use tokenback_tools::blkfront::{Blkfront, Error, Raw};

const MIB: u64 = 1 << 20;
const NEIGHBOURS: usize = 15;
/// Every disk's size, in sectors.
const SECTORS: u64 = 4 * MIB / 512;

/// The workers, the neighbours, and whatever hostile guests a test attaches.
struct Bed {
    host: Host,
    served: Served,
    stop: Arc<AtomicBool>,
    neighbours: Vec<Neighbour>,
    next_devid: u16,
}

impl Bed {
    fn start(name: &str) -> Bed {
        let mut host = Host::start(name);
        let mut served = Served::start(&host, 2, EngineKind::Uring);
        let stop = Arc::new(AtomicBool::new(false));
        let mut neighbours = Vec::new();
        for index in 0..NEIGHBOURS {
            let file = storage_file(&host, &format!("n{index}.img"), SECTORS * 512);
            let (front, _, _) = attach(&mut host, &mut served, None, &Disk::new(&file), |_| {});
            neighbours.push(Neighbour::start(front, index, SECTORS, Arc::clone(&stop)));
        }
        let bed = Bed {
            host,
            served,
            stop,
            neighbours,
            next_devid: 0,
        };
        bed.progress("before the attack");
        bed
    }

    /// A fresh guest whose disk the same workers serve, its limits set by `qos`.
    fn hostile(&mut self, qos: &'static [(&'static str, &'static str)]) -> (Blkfront, DeviceId) {
        let file = storage_file(
            &self.host,
            &format!("h{}.img", self.next_devid),
            SECTORS * 512,
        );
        self.next_devid += 1;
        let mut disk = Disk::new(&file);
        disk.qos = qos;
        let (front, _, id) = attach(&mut self.host, &mut self.served, None, &disk, |_| {});
        (front, id)
    }

    /// Round trips each neighbour has verified so far.
    fn verified(&self) -> Vec<u64> {
        self.neighbours.iter().map(Neighbour::verified).collect()
    }

    /// Waits until every neighbour verified a few more round trips; the neighbours sit on
    /// both workers, so this also says both are alive.
    fn progress(&self, when: &str) {
        let before = self.verified();
        eventually(&format!("every neighbour verifies I/O {when}"), || {
            let now = self.verified();
            let failed = self.neighbours.iter().find(|n| n.is_finished());
            assert!(failed.is_none(), "a neighbour stopped {when}");
            now.iter().zip(&before).all(|(now, then)| *now >= then + 3)
        });
    }

    /// Stops the neighbours; each must have verified every round trip it made.
    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for (index, n) in self.neighbours.drain(..).enumerate() {
            let done = n.join().unwrap_or_else(|e| panic!("{e}"));
            assert!(done > 0, "neighbour {index} verified nothing");
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        // A failed test still stops the neighbours before the host goes.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A direct request with `segs` as (gref, first_sect, last_sect).
fn direct(
    operation: u8,
    id: u64,
    sector: u64,
    nr_segments: u8,
    segs: &[(u32, u8, u8)],
) -> RawRequest {
    let mut seg = [Segment::default(); 11];
    for (s, &(gref, first, last)) in seg.iter_mut().zip(segs) {
        *s = Segment::new(gref, first, last);
    }
    RawRequest::Direct(RawDirect {
        operation,
        nr_segments,
        handle: 51712,
        id,
        sector_number: sector,
        seg,
    })
}

fn indirect(indirect_op: u8, id: u64, nr_segments: u16, gref: u32) -> RawRequest {
    RawRequest::Indirect(RawIndirect {
        indirect_op,
        nr_segments,
        handle: 51712,
        id,
        sector_number: 0,
        indirect_grefs: [gref; 8],
    })
}

fn discard(id: u64, sector: u64, nr_sectors: u64, flag: u8) -> RawRequest {
    RawRequest::Discard(RawDiscard {
        flag,
        handle: 51712,
        id,
        sector_number: sector,
        nr_sectors,
    })
}

/// Sends `cases` (what was tried, the request, the status it must get) in one batch and
/// checks each answer: its status, and the operation echoed as blkfront checks it.
fn expect(raw: &mut Raw<'_>, cases: &[(impl AsRef<str>, RawRequest, i16)]) {
    for (_, request, _) in cases {
        raw.push(request).unwrap();
    }
    raw.publish().unwrap();
    let responses = raw.wait_responses(cases.len()).unwrap();
    assert_eq!(responses.len(), cases.len(), "one answer per request");
    for (what, request, status) in cases {
        let answer = answer_to(&responses, request.id());
        assert_eq!(
            (answer.status, answer.operation),
            (*status, request.response_operation()),
            "{}: status and operation",
            what.as_ref()
        );
    }
}

fn answer_to(responses: &[Response], id: u64) -> Response {
    let mut matching = responses.iter().filter(|r| r.id == id);
    let answer = *matching
        .next()
        .unwrap_or_else(|| panic!("no answer to {id}"));
    assert!(matching.next().is_none(), "two answers to {id}");
    answer
}

#[test]
fn a_ring_overrun_breaks_that_vbd_alone() {
    let mut bed = Bed::start("hostile-overrun");
    // Paced at one request a second: the reads below wait in the limiter when the ring breaks.
    let (mut front, id) = bed.hostile(&[("tokens-refill", "1"), ("tokens-max", "0")]);
    let mut raw = front.raw(0).unwrap();
    let size = raw.ring_size();
    let page = raw.page().unwrap();
    for n in 0..4 {
        raw.push(&direct(BLKIF_OP_READ, n, 0, 1, &[(page.gref.0, 0, 7)]))
            .unwrap();
    }
    raw.publish().unwrap();
    assert_eq!(raw.wait_responses(1).unwrap()[0].status, BLKIF_RSP_OKAY);
    // More requests published than the ring holds: RING_REQUEST_PROD_OVERFLOW.
    let (_, rsp_prod) = raw.indices();
    raw.set_req_prod(rsp_prod.wrapping_add(size + 1));
    raw.notify().unwrap();
    match bed.served.report() {
        Report::Broken(broken, reason) => {
            assert_eq!(broken, id);
            assert!(!reason.is_empty(), "a reason is given");
        }
        other => panic!("req_prod {} past the ring: got {other:?}", size + 1),
    }
    // The worker dropped the VBD and the requests it held: its ring and the data page are no
    // longer mapped or copied, and nothing more was answered.
    raw.end_ring()
        .expect("the guest ends access to its ring pages");
    raw.end_access(page.gref).expect("no pin on the data page");
    assert_eq!(raw.indices().1, rsp_prod, "no answer on a broken ring");
    bed.progress("after the overrun");
    bed.finish();
}

#[test]
fn bad_grant_refs_fail_their_request() {
    let mut bed = Bed::start("hostile-grefs");
    let (mut front, _) = bed.hostile(&[]);
    let mut raw = front.raw(0).unwrap();
    let page = raw.page().unwrap();
    let never = 3000; // in the table, never granted (the front end has not got this far)
    let cases = [
        (
            "a read through ref u32::MAX",
            direct(BLKIF_OP_READ, 1, 0, 1, &[(u32::MAX, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a write through ref 2^20, past the table",
            direct(BLKIF_OP_WRITE, 2, 0, 1, &[(1 << 20, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a read through reserved ref 1, never granted",
            direct(BLKIF_OP_READ, 3, 0, 1, &[(1, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a write through ref 3000, never granted",
            direct(
                BLKIF_OP_WRITE,
                4,
                8,
                2,
                &[(page.gref.0, 0, 7), (never, 0, 7)],
            ),
            BLKIF_RSP_ERROR,
        ),
        (
            "an indirect read whose page ref was never granted",
            indirect(BLKIF_OP_READ, 5, 1, never),
            BLKIF_RSP_ERROR,
        ),
        (
            "an indirect write whose page ref is past the table",
            indirect(BLKIF_OP_WRITE, 6, 1, u32::MAX),
            BLKIF_RSP_ERROR,
        ),
        (
            "a good read among them",
            direct(BLKIF_OP_READ, 7, 0, 1, &[(page.gref.0, 0, 7)]),
            BLKIF_RSP_OKAY,
        ),
    ];
    expect(&mut raw, &cases);
    bed.progress("after the bad refs");
    bed.finish();
}

#[test]
fn refs_granted_to_another_domain_fail_their_request() {
    let mut bed = Bed::start("hostile-otherdom");
    let other = bed.host.toolstack.create_guest("other", 16, 1).unwrap();
    let (mut front, _) = bed.hostile(&[]);
    let mut raw = front.raw(0).unwrap();
    let data = raw.page().unwrap();
    let table = raw.page().unwrap();
    for page in [data, table] {
        raw.regrant(page.gref, other, page.frame).unwrap();
    }
    // The indirect page names the data page (granted elsewhere too).
    raw.write_page(table.frame, 0, &segment_bytes(data.gref, 0, 7))
        .unwrap();
    let gref = data.gref.0;
    let cases = [
        (
            "a read into a page granted to another domain",
            direct(BLKIF_OP_READ, 1, 0, 1, &[(gref, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a write from a page granted to another domain",
            direct(BLKIF_OP_WRITE, 2, 0, 1, &[(gref, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "an indirect page granted to another domain",
            indirect(BLKIF_OP_WRITE, 3, 1, table.gref.0),
            BLKIF_RSP_ERROR,
        ),
    ];
    expect(&mut raw, &cases);
    bed.progress("after refs granted elsewhere");
    bed.finish();
}

/// One indirect-page entry.
fn segment_bytes(gref: GrantRef, first: u8, last: u8) -> Vec<u8> {
    let mut bytes = gref.0.to_le_bytes().to_vec();
    bytes.extend([first, last, 0, 0]);
    bytes
}

#[test]
fn malformed_requests_fail_alone() {
    let mut bed = Bed::start("hostile-malformed");
    let (mut front, _) = bed.hostile(&[]);
    let mut raw = front.raw(0).unwrap();
    let page = raw.page().unwrap();
    let g = page.gref.0;
    let read = |id, sector, nr, segs: &[(u32, u8, u8)]| direct(BLKIF_OP_READ, id, sector, nr, segs);
    // An indirect page whose first entry is good and second reversed.
    let table = raw.page().unwrap();
    let mut entries = segment_bytes(page.gref, 0, 7);
    entries.extend(segment_bytes(page.gref, 5, 2));
    raw.write_page(table.frame, 0, &entries).unwrap();
    let t = table.gref.0;
    let cases = [
        (
            "a read crossing the disk's end",
            read(1, SECTORS - 4, 1, &[(g, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a read at the disk's end",
            read(2, SECTORS, 1, &[(g, 0, 0)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a write far past the end",
            direct(BLKIF_OP_WRITE, 3, 1 << 40, 1, &[(g, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a read at sector u64::MAX - 8 (its bytes overflow)",
            read(4, u64::MAX - 8, 1, &[(g, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a write at sector 2^55 - 1 (its bytes overflow)",
            direct(BLKIF_OP_WRITE, 5, u64::MAX / 512, 1, &[(g, 0, 0)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a read whose sectors overflow",
            read(6, u64::MAX - 2, 1, &[(g, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "last_sect < first_sect",
            read(7, 0, 1, &[(g, 5, 2)]),
            BLKIF_RSP_ERROR,
        ),
        ("last_sect 8", read(8, 0, 1, &[(g, 0, 8)]), BLKIF_RSP_ERROR),
        (
            "last_sect 255",
            direct(BLKIF_OP_WRITE, 9, 0, 1, &[(g, 0, 255)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a read of no segments",
            read(10, 0, 0, &[]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a write of no segments",
            direct(BLKIF_OP_WRITE, 11, 0, 0, &[]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a direct read of 12 segments",
            read(12, 0, 12, &[(g, 0, 0); 11]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a direct write of 255 segments",
            direct(BLKIF_OP_WRITE, 13, 0, 255, &[(g, 0, 0); 11]),
            BLKIF_RSP_ERROR,
        ),
        (
            "an indirect read of 257 segments",
            indirect(BLKIF_OP_READ, 14, 257, g),
            BLKIF_RSP_ERROR,
        ),
        (
            "an indirect write of 4096 segments",
            indirect(BLKIF_OP_WRITE, 15, 4096, g),
            BLKIF_RSP_ERROR,
        ),
        (
            "an indirect write of 65535 segments",
            indirect(BLKIF_OP_WRITE, 16, u16::MAX, g),
            BLKIF_RSP_ERROR,
        ),
        (
            "an indirect read of no segments",
            indirect(BLKIF_OP_READ, 17, 0, g),
            BLKIF_RSP_ERROR,
        ),
        (
            "an indirect barrier",
            indirect(2, 18, 1, g),
            BLKIF_RSP_ERROR,
        ),
        (
            "an indirect indirect",
            indirect(BLKIF_OP_INDIRECT, 19, 1, g),
            BLKIF_RSP_ERROR,
        ),
        (
            "an indirect read whose second entry is reversed",
            indirect(BLKIF_OP_READ, 20, 2, t),
            BLKIF_RSP_ERROR,
        ),
        (
            "an indirect read of the first, good, entry alone",
            indirect(BLKIF_OP_READ, 21, 1, t),
            BLKIF_RSP_OKAY,
        ),
        (
            "a discard crossing the disk's end",
            discard(23, SECTORS - 8, 16, 0),
            BLKIF_RSP_ERROR,
        ),
        (
            "a discard at sector 2^55 - 1 (its bytes overflow)",
            discard(24, u64::MAX / 512, 1, 0),
            BLKIF_RSP_ERROR,
        ),
        (
            "a discard whose sectors overflow",
            discard(25, 8, u64::MAX, 0),
            BLKIF_RSP_ERROR,
        ),
        (
            "a secure discard, not offered",
            discard(26, 0, 8, 1),
            BLKIF_RSP_EOPNOTSUPP,
        ),
        (
            "a good read of the last sector",
            read(22, SECTORS - 1, 1, &[(g, 3, 3)]),
            BLKIF_RSP_OKAY,
        ),
        ("a good discard", discard(27, 0, 8, 0), BLKIF_RSP_OKAY),
    ];
    expect(&mut raw, &cases);
    bed.progress("after malformed requests");
    bed.finish();
}

#[test]
fn unknown_operations_are_not_supported() {
    let mut bed = Bed::start("hostile-ops");
    let (mut front, _) = bed.hostile(&[]);
    let mut raw = front.raw(0).unwrap();
    // blkback answers any other operation, the reserved 4 included, EOPNOTSUPP.
    let cases: Vec<(String, RawRequest, i16)> = [4u8, 7, 8, 100, 255]
        .iter()
        .map(|&operation| {
            let id = u64::from(operation) << 32 | 0xdead;
            let request = RawRequest::Other { operation, id };
            (
                format!("operation {operation}"),
                request,
                BLKIF_RSP_EOPNOTSUPP,
            )
        })
        .collect();
    expect(&mut raw, &cases);
    bed.progress("after unknown operations");
    bed.finish();
}

/// Re-grants a page until the back end lets go of it: a copy in progress holds the entry.
fn regrant_when_free(raw: &Raw<'_>, gref: GrantRef, to: DomId, frame: u32) -> Instant {
    let deadline = Instant::now() + support::EVENTUALLY;
    loop {
        match raw.regrant(gref, to, frame) {
            Ok(()) => return Instant::now(),
            Err(Error::EndAccess(EndAccessError::InUse { .. })) if Instant::now() < deadline => {
                thread::yield_now()
            }
            Err(e) => panic!("re-granting ref {}: {e}", gref.0),
        }
    }
}

#[test]
fn pages_re_granted_mid_request_never_touch_another_page_and_leave_no_pin() {
    let mut bed = Bed::start("hostile-regrant");
    let other = bed.host.toolstack.create_guest("other", 16, 1).unwrap();
    let backend = DomId(0);
    // Strict pacing at 4 requests/s: each request waits about 250 ms in the limiter, long
    // after its page was re-granted.
    let (mut front, _) = bed.hostile(&[("tokens-refill", "4"), ("tokens-max", "0")]);
    let mut raw = front.raw(0).unwrap();
    let old = pattern(4096, 1);
    let new = pattern(4096, 2);
    let pages = [(); 7].map(|_| raw.page().unwrap());
    let [dummy, w_from, w_to, r_from, r_to, w_away, r_away] = pages;
    raw.write_page(w_from.frame, 0, &old).unwrap();
    raw.write_page(w_to.frame, 0, &new).unwrap();
    raw.write_page(r_from.frame, 0, &old).unwrap();
    raw.write_page(r_to.frame, 0, &old).unwrap();
    raw.write_page(w_away.frame, 0, &new).unwrap();
    raw.write_page(r_away.frame, 0, &old).unwrap();
    let requests = [
        // Takes the token there is, if any: the others wait their turn.
        direct(BLKIF_OP_READ, 0, 0, 1, &[(dummy.gref.0, 0, 7)]),
        // Written from w_from's ref, which then names w_to: the new data goes to sector 8.
        direct(BLKIF_OP_WRITE, 1, 8, 1, &[(w_from.gref.0, 0, 7)]),
        // Read into r_from's ref, which then names r_to: sector 8 lands in r_to.
        direct(BLKIF_OP_READ, 2, 8, 1, &[(r_from.gref.0, 0, 7)]),
        // Refs then granted to another domain: refused, nothing moves.
        direct(BLKIF_OP_WRITE, 3, 16, 1, &[(w_away.gref.0, 0, 7)]),
        direct(BLKIF_OP_READ, 4, 8, 1, &[(r_away.gref.0, 0, 7)]),
    ];
    for request in &requests {
        raw.push(request).unwrap();
    }
    raw.publish().unwrap();
    let published = Instant::now();
    regrant_when_free(&raw, w_from.gref, backend, w_to.frame);
    regrant_when_free(&raw, r_from.gref, backend, r_to.frame);
    regrant_when_free(&raw, w_away.gref, other, w_away.frame);
    let last = regrant_when_free(&raw, r_away.gref, other, r_away.frame);
    assert!(
        last - published < Duration::from_millis(200),
        "re-granted before the limiter let the requests through (took {:?})",
        last - published
    );
    let responses = raw.wait_responses(requests.len()).unwrap();
    let status = |id| answer_to(&responses, id).status;
    assert_eq!(status(1), BLKIF_RSP_OKAY, "write through a re-granted ref");
    assert_eq!(status(2), BLKIF_RSP_OKAY, "read through a re-granted ref");
    assert_eq!(status(3), BLKIF_RSP_ERROR, "write through a ref given away");
    assert_eq!(status(4), BLKIF_RSP_ERROR, "read through a ref given away");
    // Sector 16, which only the write given away named, read into the first page.
    raw.push(&direct(BLKIF_OP_READ, 5, 16, 1, &[(dummy.gref.0, 0, 7)]))
        .unwrap();
    raw.publish().unwrap();
    assert_eq!(raw.wait_responses(1).unwrap()[0].status, BLKIF_RSP_OKAY);
    let page = |frame| {
        let mut buf = vec![0; 4096];
        raw.read_page(frame, 0, &mut buf).unwrap();
        buf
    };
    assert_eq!(
        page(dummy.frame),
        vec![0; 4096],
        "a write given away did nothing"
    );
    assert_eq!(
        page(r_to.frame),
        new,
        "the read landed where its ref pointed then"
    );
    assert_eq!(
        page(r_from.frame),
        old,
        "the page the ref left is untouched"
    );
    assert_eq!(page(r_away.frame), old, "a page given away is untouched");
    assert_eq!(page(w_from.frame), old, "a write's page is only read");
    for page in pages {
        raw.end_access(page.gref)
            .unwrap_or_else(|e| panic!("ref {} still pinned: {e}", page.gref.0));
    }

    // Unpaced, the re-grant races the copy: either data or an error, never a third outcome,
    // and never a pin left behind. Every other round publishes without notifying and
    // re-grants before the notification, so that the re-grant lands before the copy too; the
    // others re-grant a varying while after the notification.
    let (mut racer, _) = bed.hostile(&[]);
    let mut raw = racer.raw(0).unwrap();
    let (from, to) = (raw.page().unwrap(), raw.page().unwrap());
    // Writes that took the old page, the new one, and failed.
    let mut outcomes = [0usize; 3];
    let mut round = 0u64;
    while round < 100 || outcomes[..2].contains(&0) {
        assert!(
            round < 1000,
            "the re-grant never raced both ways: {outcomes:?}"
        );
        let (a, b) = (pattern(4096, round as u8), pattern(4096, !(round as u8)));
        raw.write_page(from.frame, 0, &a).unwrap();
        raw.write_page(to.frame, 0, &b).unwrap();
        regrant_when_free(&raw, from.gref, backend, from.frame);
        raw.push(&direct(BLKIF_OP_WRITE, round, 0, 1, &[(from.gref.0, 0, 7)]))
            .unwrap();
        if round % 2 == 0 {
            raw.publish().unwrap();
            // Re-granted after 0 to 2 ms: the worker's wake-up and copy land on either side,
            // however loaded the machine.
            let delay = Duration::from_micros(round / 2 % 40 * 50);
            let published = std::time::Instant::now();
            while published.elapsed() < delay {
                std::hint::spin_loop();
            }
            regrant_when_free(&raw, from.gref, backend, to.frame);
        } else {
            let (req_prod, _) = raw.indices();
            raw.set_req_prod(req_prod.wrapping_add(1));
            regrant_when_free(&raw, from.gref, backend, to.frame);
            raw.notify().unwrap();
        }
        let answer = raw.wait_responses(1).unwrap()[0];
        assert_eq!(answer.id, round);
        // Read the sector back into `to`, where the ref points now.
        let read = direct(BLKIF_OP_READ, 1 << 32 | round, 0, 1, &[(from.gref.0, 0, 7)]);
        raw.push(&read).unwrap();
        raw.publish().unwrap();
        assert_eq!(raw.wait_responses(1).unwrap()[0].status, BLKIF_RSP_OKAY);
        let mut disk = vec![0; 4096];
        raw.read_page(to.frame, 0, &mut disk).unwrap();
        match answer.status {
            BLKIF_RSP_OKAY if disk == a => outcomes[0] += 1,
            BLKIF_RSP_OKAY if disk == b => outcomes[1] += 1,
            BLKIF_RSP_OKAY => panic!("round {round}: the disk holds neither page's data"),
            BLKIF_RSP_ERROR => outcomes[2] += 1,
            other => panic!("round {round}: status {other}"),
        }
        round += 1;
    }
    raw.end_access(from.gref)
        .expect("no pin left by the racing rounds");
    bed.progress("after re-granted pages");
    bed.finish();
}

#[test]
fn a_flood_of_garbage_leaves_the_neighbours_served() {
    let mut bed = Bed::start("hostile-flood");
    let (mut front, _) = bed.hostile(&[]);
    let mut raw = front.raw(0).unwrap();
    let page = raw.page().unwrap();
    let g = page.gref.0;
    let garbage = [
        RawRequest::Other {
            operation: 9,
            id: 0,
        },
        direct(BLKIF_OP_READ, 0, SECTORS, 1, &[(g, 0, 7)]),
        direct(BLKIF_OP_WRITE, 0, u64::MAX - 8, 1, &[(g, 0, 7)]),
        direct(BLKIF_OP_READ, 0, 0, 1, &[(u32::MAX, 0, 7)]),
        direct(BLKIF_OP_WRITE, 0, 0, 12, &[(g, 0, 7); 11]),
        direct(BLKIF_OP_READ, 0, 0, 1, &[(g, 7, 0)]),
        indirect(BLKIF_OP_READ, 0, 300, g),
        indirect(BLKIF_OP_WRITE, 0, 1, 5000),
    ];
    let baseline = measure(&bed, Duration::from_secs(1));
    let before = bed.verified();
    let start = Instant::now();
    let (mut sent, mut answered) = (0u64, 0u64);
    while start.elapsed() < Duration::from_secs(3) {
        while raw
            .push(&with_id(garbage[sent as usize % garbage.len()], sent))
            .is_ok()
        {
            sent += 1;
        }
        raw.publish().unwrap();
        for answer in raw.wait_responses(1).unwrap() {
            assert_ne!(
                answer.status, BLKIF_RSP_OKAY,
                "garbage {} succeeded",
                answer.id
            );
            answered += 1;
        }
    }
    let during: Vec<u64> = bed
        .verified()
        .iter()
        .zip(&before)
        .map(|(n, b)| n - b)
        .collect();
    let flood_rate = during.iter().sum::<u64>() as f64 / start.elapsed().as_secs_f64();
    assert!(
        answered > 1000,
        "the flood was answered: {answered} of {sent}"
    );
    for (index, done) in during.iter().enumerate() {
        assert!(
            *done > 0,
            "neighbour {index} verified nothing during the flood"
        );
    }
    assert!(
        flood_rate > baseline / 20.0,
        "neighbours verified {flood_rate:.0}/s during the flood, {baseline:.0}/s before"
    );
    bed.progress("after the flood");
    bed.finish();
}

/// Round trips per second all neighbours verify together over `window`.
fn measure(bed: &Bed, window: Duration) -> f64 {
    let before: u64 = bed.verified().iter().sum();
    thread::sleep(window);
    let after: u64 = bed.verified().iter().sum();
    (after - before) as f64 / window.as_secs_f64()
}

fn with_id(request: RawRequest, id: u64) -> RawRequest {
    match request {
        RawRequest::Direct(r) => RawRequest::Direct(RawDirect { id, ..r }),
        RawRequest::Indirect(r) => RawRequest::Indirect(RawIndirect { id, ..r }),
        RawRequest::Discard(r) => RawRequest::Discard(RawDiscard { id, ..r }),
        RawRequest::Other { operation, .. } => RawRequest::Other { operation, id },
    }
}
