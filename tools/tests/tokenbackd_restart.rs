//! tokenbackd restarted under a guest that never notices (DESIGN "Restart without guest
//! errors"): the same blkfront, never reconnected, carries on through SIGTERM or kill -9 of
//! the daemon and a new one started after it; every request it had in flight is answered,
//! every acknowledged write is in the file, and throttled VBDs stay throttled.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::daemon::{attach, Tokenbackd};
use support::{eventually, pattern, storage_file, Host};
use tokenback_tools::blkfront::{Blkfront, Op, Tag};
use tokenback_tools::toolstack::DiskPaths;

const MIB: u64 = 1 << 20;

/// The VBD's state file: `<run>/state/vbd-<domid>-<devid>`.
fn state_file(host: &Host, paths: &DiskPaths) -> PathBuf {
    let mut parts = paths.backend.rsplit('/');
    let devid = parts.next().unwrap();
    let domid = parts.next().unwrap();
    host.run.root().join(format!("state/vbd-{domid}-{devid}"))
}

/// Writes at queue depth 32 for `total` requests; after `stop_after` the daemon is stopped
/// with `signal` and a new one started. Returns the blocks acknowledged; panics on any
/// request answered with an error or never answered.
fn write_burst(
    host: &Host,
    front: &mut Blkfront,
    daemon: &mut Tokenbackd,
    signal: libc::c_int,
) -> Vec<u64> {
    let total = 4000u64;
    let stop_after = 1500u64;
    let mut acked = Vec::new();
    let mut pending: Vec<(Tag, u64)> = Vec::new();
    let mut next = 0u64;
    let mut restarted = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next < total || !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} requests never answered after the restart; new daemon's log:\n{}",
            pending.len(),
            daemon.log()
        );
        while pending.len() < 32 && next < total {
            let block = next % 2048;
            let data = pattern(4096, (next % 251) as u8);
            match front.submit(Op::Write {
                sector: block * 8,
                data,
            }) {
                Ok(tag) => pending.push((tag, next)),
                Err(_) => break,
            }
            next += 1;
        }
        if next >= stop_after && !restarted {
            restarted = true;
            let status = daemon.stop_with(signal);
            if signal == libc::SIGTERM {
                assert!(status.success(), "exit 0 on SIGTERM: {status}");
            }
            // Requests published while no daemon runs wait on the ring.
            *daemon = Tokenbackd::start(&host.run, &[]);
        }
        front
            .handle_backend_events(Duration::from_millis(20))
            .unwrap();
        let completed = front.complete().unwrap_or_else(|e| {
            panic!(
                "{} requests in flight: {e}; the daemon's log:\n{}",
                pending.len(),
                daemon.log()
            )
        });
        for done in completed {
            let i = pending.iter().position(|(t, _)| *t == done.tag).unwrap();
            let (_, n) = pending.swap_remove(i);
            done.into_result()
                .unwrap_or_else(|e| panic!("write {n} failed across the restart: {e}"));
            acked.push(n);
        }
    }
    acked
}

/// Every acknowledged write is in the file; the last write of each block wins, and the
/// writes of one block are acknowledged in order (each waited for a free ring slot behind the
/// earlier ones only if they overlapped in time: compare against the latest acknowledged).
fn verify(file: &std::path::Path, front: &mut Blkfront, acked: &[u64]) {
    let mut last = std::collections::HashMap::new();
    for &n in acked {
        let e = last.entry(n % 2048).or_insert(n);
        *e = (*e).max(n);
    }
    let data = std::fs::read(file).unwrap();
    let mut buf = vec![0; 4096];
    for (&block, &n) in &last {
        let at = block as usize * 4096;
        let expected = pattern(4096, (n % 251) as u8);
        // A block with writes 2048 apart may have both in flight at once only at depth 32
        // out of 2048 blocks: never; so the latest is what the file holds.
        assert!(
            data[at..at + 4096] == expected[..],
            "block {block} (write {n})"
        );
        front.read(block * 8, &mut buf).unwrap();
        assert!(
            buf == expected,
            "block {block} read back through the new daemon"
        );
    }
}

fn restart_under_a_write_burst(signal: libc::c_int, name: &str) {
    let mut host = Host::start(name);
    let mut daemon = Tokenbackd::start(&host.run, &[]);
    let file = storage_file(&host, "disk.img", 16 * MIB);
    let (mut front, paths) = attach(&mut host, &file, &[], |o| o.max_ring_page_order = 1);
    assert!(state_file(&host, &paths).exists());
    let acked = write_burst(&host, &mut front, &mut daemon, signal);
    assert_eq!(acked.len(), 4000, "every write answered");
    verify(&file, &mut front, &acked);
    assert!(
        daemon.log().contains("\"reattach\":true") || daemon.log().contains("reattach: true"),
        "the new daemon took the VBD up again:\n{}",
        daemon.log()
    );
    assert_eq!(
        host.read(&format!("{}/state", paths.backend)).as_deref(),
        Some("4")
    );
    // The front end never reconnected: it is the same ring, still Connected.
    assert_eq!(
        host.read(&format!("{}/state", paths.frontend)).as_deref(),
        Some("4")
    );
    assert!(daemon.is_running());
}

#[test]
fn sigterm_then_a_new_daemon_carries_the_same_front_end_on() {
    restart_under_a_write_burst(libc::SIGTERM, "restart-sigterm");
}

#[test]
fn kill_9_in_a_write_burst_then_a_new_daemon_redoes_what_was_unanswered() {
    restart_under_a_write_burst(libc::SIGKILL, "restart-kill9");
}

/// `reads` 4 KiB reads one after another; how long they took.
fn timed_reads(front: &mut Blkfront, reads: u64) -> Duration {
    let mut buf = vec![0; 4096];
    let started = Instant::now();
    for i in 0..reads {
        front.read(i * 8, &mut buf).unwrap();
    }
    started.elapsed()
}

#[test]
fn bucket_levels_survive_a_restart() {
    for max in ["0", "25"] {
        let mut host = Host::start(&format!("restart-levels-{max}"));
        let mut daemon = Tokenbackd::start(&host.run, &[]);
        let file = storage_file(&host, "disk.img", 8 * MIB);
        let qos = [("tokens-refill", "50"), ("tokens-max", max)];
        let (mut front, _) = attach(&mut host, &file, &qos, |_| {});
        // Empties the bucket (25 tokens at most) and runs into pacing.
        timed_reads(&mut front, 30);
        assert!(daemon.stop_with(libc::SIGTERM).success());
        daemon = Tokenbackd::start(&host.run, &[]);
        // 25 more right away: a fresh full bucket would admit them all at once; the saved
        // (empty) one paces them 20 ms apart, about 0.5 s.
        let elapsed = timed_reads(&mut front, 25);
        assert!(
            elapsed >= Duration::from_millis(350),
            "tokens-max={max}: 25 reads after the restart took {elapsed:?}: a fresh bucket"
        );
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}: stuck");
        assert!(daemon.is_running());
    }
}

#[test]
fn a_restart_with_no_vbds_serves_new_ones() {
    let mut host = Host::start("restart-empty");
    let mut daemon = Tokenbackd::start(&host.run, &[]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(daemon.stop_with(libc::SIGTERM).success());
    let _daemon = Tokenbackd::start(&host.run, &[]);
    let file = storage_file(&host, "disk.img", 8 * MIB);
    let (mut front, _) = attach(&mut host, &file, &[], |_| {});
    front.write(8, &pattern(4096, 3)).unwrap();
    let mut buf = vec![0; 4096];
    front.read(8, &mut buf).unwrap();
    assert_eq!(buf, pattern(4096, 3));
}

#[test]
fn a_corrupt_state_file_refuses_that_vbd_and_the_others_reattach() {
    let mut host = Host::start("restart-corrupt");
    let mut daemon = Tokenbackd::start(&host.run, &[]);
    let file_a = storage_file(&host, "a.img", 8 * MIB);
    let file_b = storage_file(&host, "b.img", 8 * MIB);
    let (mut a, paths_a) = attach(&mut host, &file_a, &[], |_| {});
    let (mut b, paths_b) = attach(&mut host, &file_b, &[], |_| {});
    a.write(0, &pattern(4096, 1)).unwrap();
    b.write(0, &pattern(4096, 2)).unwrap();
    assert!(daemon.stop_with(libc::SIGTERM).success());
    // a's file cut short, as a full tmpfs or a stray truncate would leave it.
    let state_a = state_file(&host, &paths_a);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&state_a)
        .unwrap()
        .set_len(1000)
        .unwrap();
    let daemon = Tokenbackd::start(&host.run, &[]);
    // b goes on on the same ring.
    let mut buf = vec![0; 4096];
    b.read(0, &mut buf).unwrap();
    assert_eq!(buf, pattern(4096, 2));
    b.write(8, &pattern(4096, 4)).unwrap();
    // a is refused: Closing, with the reason in its error node and in the log.
    eventually("the corrupt VBD is refused", || {
        host.read(&format!("{}/state", paths_a.backend)).as_deref() == Some("5")
    });
    let error = host
        .read(&format!(
            "/local/domain/0/error/backend/vbd/{}/error",
            paths_a.backend.split("/backend/vbd/").nth(1).unwrap()
        ))
        .unwrap_or_default();
    assert!(error.contains("truncated"), "error node: {error:?}");
    assert!(daemon.log().contains("truncated"), "{}", daemon.log());
    assert_eq!(
        host.read(&format!("{}/state", paths_b.backend)).as_deref(),
        Some("4")
    );
    drop(a);
}

#[test]
fn storage_grown_while_no_daemon_ran_is_announced_by_the_next() {
    let mut host = Host::start("restart-resize");
    let mut daemon = Tokenbackd::start(&host.run, &[]);
    let file = storage_file(&host, "disk.img", 4 * MIB);
    let (mut front, paths) = attach(&mut host, &file, &[], |_| {});
    front.write(0, &pattern(4096, 1)).unwrap();
    assert!(daemon.stop_with(libc::SIGTERM).success());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    let _daemon = Tokenbackd::start(&host.run, &[]);
    let sectors = format!("{}/sectors", paths.backend);
    eventually("the new size in xenstore", || {
        host.read(&sectors).as_deref() == Some("16384")
    });
    eventually("the front end sees the new size", || {
        front
            .handle_backend_events(Duration::from_millis(50))
            .unwrap();
        front.disk().sectors == 16384
    });
    // Past the old end.
    front.write(12000, &pattern(4096, 2)).unwrap();
    let mut buf = vec![0; 4096];
    front.read(12000, &mut buf).unwrap();
    assert_eq!(buf, pattern(4096, 2));
}
