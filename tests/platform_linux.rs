//! The Linux platform off Xen: opening the devices fails with a typed error naming them.

#![cfg(test)]

use std::path::Path;
use tokenback::platform::linux::{Evtchn, Gntdev, LinuxPlatform, EVTCHN_PATH, GNTDEV_PATH};
use tokenback::platform::Platform;

#[test]
fn without_dev_xen_opening_fails_with_the_device_named() {
    if Path::new("/dev/xen").exists() {
        eprintln!("skipped: this machine has /dev/xen");
        return;
    }
    let err = Gntdev::open().unwrap_err();
    assert_eq!(err.path, Path::new(GNTDEV_PATH));
    assert!(err.to_string().contains("/dev/xen/gntdev"), "{err}");

    let err = Evtchn::open().unwrap_err();
    assert_eq!(err.path, Path::new(EVTCHN_PATH));
    assert!(err.to_string().contains("/dev/xen/evtchn"), "{err}");
    assert!(err.to_string().contains("dom0"), "{err}");

    let platform = LinuxPlatform;
    assert_eq!(platform.grants().unwrap_err().path, Path::new(GNTDEV_PATH));
    assert_eq!(
        platform.event_channel().unwrap_err().path,
        Path::new(EVTCHN_PATH)
    );
}
