//! The simulated host across separate processes: this test binary re-runs itself as the
//! guest (or as a back end that dies), running one of its ignored tests in the child.

#![cfg(test)]

mod platform_sim_common;

use platform_sim_common::{readable, TempRun};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tokenback::platform::sim::{
    EndAccessError, GuestDomain, PortStatus, RunDir, SimEventChannel, SimGrants,
};
use tokenback::platform::{
    CopyOp, DomId, EventChannel, GrantAccess, GrantMapping, GrantRef, GuestRange, Port, PAGE_SIZE,
};

const DOM0: DomId = DomId(0);
const GUEST_ENV: &str = "TOKENBACK_TEST_SIM_GUEST";
const DEAD_BACK_END_ENV: &str = "TOKENBACK_TEST_SIM_DEAD_BACK_END";
const COPIER_ENV: &str = "TOKENBACK_TEST_SIM_COPIER";
/// Back ends killed while copying, in the test of that.
const KILLS: u64 = 40;
/// Generous bound for "eventually": only reached when something is broken.
const PATIENCE_MS: u64 = 30_000;

const GREETING: &[u8] = b"hello from the guest";
const REPLY: &[u8] = b"hello from dom0";
const ACK: &[u8] = b"ack";
const GREF: GrantRef = GrantRef(8);

/// Runs this test binary's ignored test `name` in a child process with `env` set.
fn spawn_self(name: &str, env: (&str, String)) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", name, "--nocapture"])
        .env(env.0, env.1)
        .spawn()
        .unwrap()
}

/// Waits for the child's handshake file, written atomically with rename.
fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_millis(PATIENCE_MS);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn write_file_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// Waits until `ch` reports an event, and re-enables what fired.
fn wait_event(ch: &mut SimEventChannel) -> Vec<Port> {
    let mut fired = Vec::new();
    while fired.is_empty() {
        assert!(readable(&ch, PATIENCE_MS), "no event came");
        ch.read_pending(&mut fired).unwrap();
    }
    ch.unmask(&fired).unwrap();
    fired
}

fn page_bytes(mapping: &impl GrantMapping, offset: usize, len: usize) -> Vec<u8> {
    assert!(offset + len <= mapping.pages() * PAGE_SIZE);
    // SAFETY: the range is inside the mapping, which outlives this copy.
    unsafe { std::slice::from_raw_parts(mapping.as_ptr().as_ptr().add(offset), len) }.to_vec()
}

#[test]
fn a_guest_and_the_back_end_share_a_page_and_events_across_processes() {
    let run = TempRun::new();
    let ready = run.dir().root().join("guest-ready");
    let mut guest = spawn_self(
        "guest_process",
        (GUEST_ENV, run.dir().root().display().to_string()),
    );
    let text = wait_for_file(&ready);
    let fields: Vec<u32> = text.split(' ').map(|f| f.parse().unwrap()).collect();
    let (domid, guest_port) = (DomId(fields[0] as u16), Port(fields[1]));

    let mut events = SimEventChannel::open(run.dir(), DOM0).unwrap();
    let port = events.bind_interdomain(domid, guest_port).unwrap();
    let mut grants = SimGrants::new(run.dir(), DOM0);
    let mut copied = vec![0u8; GREETING.len()];
    let from_guest = GuestRange {
        domid,
        gref: GREF,
        offset: 0,
    };
    assert_eq!(
        grants.copy(&mut [CopyOp::from_guest(from_guest, &mut copied)]),
        0
    );
    assert_eq!(copied, GREETING);
    let mapping = grants.map(domid, &[GREF], true).unwrap();
    assert_eq!(page_bytes(&mapping, 0, GREETING.len()), GREETING);

    // SAFETY: offset 100 + REPLY.len() is inside the one writable mapped page.
    unsafe {
        let at = mapping.as_ptr().as_ptr().add(100);
        std::ptr::copy_nonoverlapping(REPLY.as_ptr(), at, REPLY.len());
    }
    events.notify(port).unwrap();

    // The guest answers through the page and an event (the bind's own event may come first).
    while page_bytes(&mapping, 200, ACK.len()) != ACK {
        assert_eq!(wait_event(&mut events), [port]);
    }
    drop(mapping);
    events.notify(port).unwrap();

    let status = guest.wait().unwrap();
    assert!(status.success(), "guest process failed: {status}");
}

/// The guest's side, run only by the test above in a process of its own.
#[test]
#[ignore = "the guest process of a_guest_and_the_back_end_share_a_page_and_events_across_processes"]
fn guest_process() {
    let root = std::env::var_os(GUEST_ENV).unwrap();
    let run = RunDir::open(Path::new(&root)).unwrap();
    let guest = GuestDomain::create(&run, 4, 1).unwrap();
    guest.write(1, 0, GREETING).unwrap();
    guest.grant(GREF, DOM0, 1, false).unwrap();
    let mut events = SimEventChannel::open(&run, guest.domid()).unwrap();
    let port = events.alloc_unbound(DOM0).unwrap();
    write_file_atomically(
        &run.root().join("guest-ready"),
        &format!("{} {}", guest.domid().0, port.0),
    );

    let mut reply = vec![0u8; REPLY.len()];
    while reply != REPLY {
        assert_eq!(wait_event(&mut events), [port]);
        guest.read(1, 100, &mut reply).unwrap();
    }
    // The back end maps the page: the guest cannot take it back.
    assert_eq!(
        guest.end_access(GREF),
        Err(EndAccessError::InUse { gref: GREF.0 })
    );
    guest.write(1, 200, ACK).unwrap();
    events.notify(port).unwrap();

    // Once the back end has unmapped and said so, access can end.
    assert_eq!(wait_event(&mut events), [port]);
    assert_eq!(guest.end_access(GREF), Ok(()));
}

#[test]
fn a_restarted_back_end_rebinds_and_a_dead_ones_maps_are_released() {
    let run = TempRun::new();
    let guest = GuestDomain::create(run.dir(), 2, 1).unwrap();
    guest.grant(GREF, DOM0, 1, false).unwrap();
    let mut front = SimEventChannel::open(run.dir(), guest.domid()).unwrap();
    let guest_port = front.alloc_unbound(DOM0).unwrap();
    // A live accessor maps the same grant: its pin must survive the dead one's release.
    let mut live_grants = SimGrants::new(run.dir(), DOM0);
    let live_mapping = live_grants.map(guest.domid(), &[GREF], false).unwrap();

    let status = dead_back_end(run.dir(), &[(guest.domid(), guest_port)])
        .wait()
        .unwrap();
    assert!(status.success(), "back end process failed: {status}");
    // The dead back end's port is still recorded as connected.
    assert!(matches!(
        front.status(guest_port).unwrap(),
        PortStatus::Interdomain { remote: DOM0, .. }
    ));

    // Its mapping is released (as gntdev does at exit), the live one is not.
    assert_eq!(
        guest.end_access(GREF),
        Err(EndAccessError::InUse { gref: GREF.0 })
    );
    drop(live_mapping);
    assert_eq!(guest.end_access(GREF), Ok(()));

    let mut back = SimEventChannel::open(run.dir(), DOM0).unwrap();
    let port = back.bind_interdomain(guest.domid(), guest_port).unwrap();
    assert_eq!(
        front.status(guest_port).unwrap(),
        PortStatus::Interdomain {
            remote: DOM0,
            remote_port: port
        }
    );
    assert_eq!(wait_event(&mut back), [port], "the bind's own event");
    front.notify(guest_port).unwrap();
    assert_eq!(wait_event(&mut back), [port]);
}

#[test]
fn destroying_guests_frees_the_ports_of_a_dead_back_end() {
    // Before: each guest destroyed after its back end died left that back end's dom0 port
    // unbound forever, so a restarted back end ran out of ports after enough guests.
    let run = TempRun::new();
    let guests: Vec<_> = (0..2)
        .map(|_| GuestDomain::create(run.dir(), 2, 1).unwrap())
        .collect();
    let offers: Vec<_> = guests
        .iter()
        .map(|guest| {
            guest.grant(GREF, DOM0, 1, false).unwrap();
            let mut front = SimEventChannel::open(run.dir(), guest.domid()).unwrap();
            let port = front.alloc_unbound(DOM0).unwrap();
            (front, (guest.domid(), port))
        })
        .collect();
    let pairs: Vec<_> = offers.iter().map(|(_, pair)| *pair).collect();
    let mut child = dead_back_end(run.dir(), &pairs);
    assert!(child.wait().unwrap().success());
    let dead_ports: Vec<Port> = wait_for_file(&run.dir().root().join(DEAD_PORTS))
        .split(' ')
        .map(|p| Port(p.parse().unwrap()))
        .collect();
    assert_eq!(dead_ports.len(), 2);

    let observer = SimEventChannel::open(run.dir(), DOM0).unwrap();
    for &port in &dead_ports {
        assert!(matches!(
            observer.status(port).unwrap(),
            PortStatus::Interdomain { .. }
        ));
    }
    // One guest crashes (its handle never closes), the other closes its handle first.
    let mut offers = offers.into_iter();
    std::mem::forget(offers.next());
    drop(offers.next());
    for guest in &guests {
        run.dir().destroy_domain(guest.domid()).unwrap();
    }
    for &port in &dead_ports {
        assert_eq!(observer.status(port).unwrap(), PortStatus::Free, "{port}");
    }
}

/// Where the dead back end writes the ports it bound.
const DEAD_PORTS: &str = "dead-ports";

/// Starts a back end that binds each offered port and maps `GREF` of each guest writable,
/// then dies without closing anything.
fn dead_back_end(run: &RunDir, offers: &[(DomId, Port)]) -> Child {
    let mut args = run.root().display().to_string();
    for (domid, port) in offers {
        args += &format!(" {}:{}", domid.0, port.0);
    }
    spawn_self("dead_back_end_process", (DEAD_BACK_END_ENV, args))
}

/// The back end of `dead_back_end`, run only in a process of its own.
#[test]
#[ignore = "the dying back end of the tests above"]
fn dead_back_end_process() {
    let args = std::env::var(DEAD_BACK_END_ENV).unwrap();
    let mut fields = args.split(' ');
    let run = RunDir::open(&PathBuf::from(fields.next().unwrap())).unwrap();
    let mut back = SimEventChannel::open(&run, DOM0).unwrap();
    let mut grants = SimGrants::new(&run, DOM0);
    let mut mappings = Vec::new();
    let mut bound = Vec::new();
    for offer in fields {
        let (domid, port) = offer.split_once(':').unwrap();
        let domid = DomId(domid.parse().unwrap());
        let port = back
            .bind_interdomain(domid, Port(port.parse().unwrap()))
            .unwrap();
        bound.push(port.0.to_string());
        mappings.push(grants.map(domid, &[GREF], true).unwrap());
    }
    write_file_atomically(&run.root().join(DEAD_PORTS), &bound.join(" "));
    std::hint::black_box(&mappings);
    // Exit as a crash would: no destructor runs, the handle's ports and pins stay recorded.
    std::process::exit(0);
}

#[test]
fn a_back_end_killed_while_copying_never_keeps_the_guest_from_ending_access() {
    // Before: copies did not record their pins, so a back end killed during one left a pin
    // that nobody could release: in about a quarter of the kills the guest could never end
    // access again.
    let run = TempRun::new();
    let guest = GuestDomain::create(run.dir(), 2, 1).unwrap();
    let args = format!("{} {}", run.dir().root().display(), guest.domid().0);
    let mut during_copy = 0;
    for round in 0..KILLS {
        guest.grant(GREF, DOM0, 1, false).unwrap();
        let mut copier = spawn_self("copying_back_end_process", (COPIER_ENV, args.clone()));
        // Wait until it copies, then let it go on for a varying while.
        let deadline = Instant::now() + Duration::from_millis(PATIENCE_MS);
        while !guest.in_use(GREF).unwrap() {
            assert!(Instant::now() < deadline, "the copier never copied");
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_micros(round * 97 % 1000));
        copier.kill().unwrap();
        copier.wait().unwrap();
        during_copy += u32::from(guest.in_use(GREF).unwrap());
        assert_eq!(guest.end_access(GREF), Ok(()), "round {round}");
    }
    assert!(during_copy > 0, "no kill landed during a copy");
}

/// A back end copying from and to `GREF` until it is killed, run only by the test above.
#[test]
#[ignore = "the back end killed by a_back_end_killed_while_copying_never_keeps_the_guest_from_ending_access"]
fn copying_back_end_process() {
    let args = std::env::var(COPIER_ENV).unwrap();
    let (root, domid) = args.split_once(' ').unwrap();
    let run = RunDir::open(Path::new(root)).unwrap();
    let at = GuestRange {
        domid: DomId(domid.parse().unwrap()),
        gref: GREF,
        offset: 0,
    };
    let mut grants = SimGrants::new(&run, DOM0);
    let mut page = vec![0u8; PAGE_SIZE];
    loop {
        assert_eq!(grants.copy(&mut [CopyOp::from_guest(at, &mut page)]), 0);
        assert_eq!(grants.copy(&mut [CopyOp::to_guest(&page, at)]), 0);
    }
}
