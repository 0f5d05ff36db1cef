//! The simulated toolstack against tokenback-xenstored: what libxl and Xen do around a
//! guest's xenstore connection.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

mod support;

use support::{BackendConfig, Host};
use tokenback::platform::sim::{PortStatus, SimEventChannel};
use tokenback::platform::DomId;
use xenstore_wire::client::TxId;

#[test]
fn a_guest_is_introduced_with_a_real_store_port() {
    // Before: XS_INTRODUCE carried port 0, which Xen's xenstored refuses.
    let mut host = Host::start("store-port");
    let domid = host.toolstack.create_guest("g", 16, 1).unwrap();
    let port = host.toolstack.store_port(domid).expect("a store port");
    assert_ne!(port.0, 0);
    let guest = SimEventChannel::open(&host.run, domid).unwrap();
    assert_eq!(
        guest.status(port).unwrap(),
        PortStatus::Unbound { remote: DomId(0) }
    );
    assert!(host
        .toolstack
        .xenstore()
        .is_domain_introduced(domid.0)
        .unwrap());
}

#[test]
fn destroying_a_guest_releases_it_in_xenstored() {
    // The toolstack sends no XS_RELEASE, as libxl sends none: xenstored must notice the
    // destruction itself (else destroy_guest times out with NotReleased).
    let mut host = Host::start("destroy-release");
    let domid = host.toolstack.create_guest("g", 16, 1).unwrap();
    let socket = host.run.domain_xenstored_socket(domid);
    assert!(socket.exists());
    host.toolstack.destroy_guest(domid).unwrap();
    assert!(!socket.exists());
    assert!(!host.run.domain_exists(domid));
    let xs = host.toolstack.xenstore();
    assert!(!xs.is_domain_introduced(domid.0).unwrap());
}

#[test]
fn a_guests_device_directories_are_as_libxl_makes_them() {
    // Seen under real Xen 4.17 (tests/xen, scenario kernel-blkback): `device` and `device/vbd`
    // are dom0's and readable by the guest; only `device/vbd/<devid>` is the guest's. Before,
    // the simulated toolstack gave the guest `device` itself, so it could add or remove
    // devices there, which a real guest cannot.
    let mut host = Host::start("device-perms");
    let (domid, paths, _backend) = host.guest_with_disk(BackendConfig::default());
    let home = format!("/local/domain/{}", domid.0);
    let listed = |host: &mut Host, path: &str| {
        let perms = host
            .toolstack
            .xenstore()
            .get_perms(TxId::NONE, path)
            .unwrap();
        let entries: Vec<String> = perms.entries().iter().map(|p| p.to_string()).collect();
        entries.join(" ")
    };
    let guest_reads = format!("n0 r{}", domid.0);
    assert_eq!(listed(&mut host, &format!("{home}/device")), guest_reads);
    assert_eq!(
        listed(&mut host, &format!("{home}/device/vbd")),
        guest_reads
    );
    assert_eq!(
        listed(&mut host, &paths.frontend),
        format!("n{} r0", domid.0)
    );
}
