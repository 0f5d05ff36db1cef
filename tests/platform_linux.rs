//! The Linux platform: on a machine with `/dev/xen` the devices open; without it, opening fails
//! with a typed error that names the device. Each machine runs the branch that applies to it,
//! and both assert.

#![cfg(test)]

use std::io;
use std::path::Path;
use tokenback::platform::linux::{Evtchn, Gntdev, LinuxPlatform, EVTCHN_PATH, GNTDEV_PATH};
use tokenback::platform::Platform;

#[test]
fn the_xen_devices_open_exactly_when_dev_xen_exists() {
    if Path::new("/dev/xen").exists() {
        opening_works();
    } else {
        opening_fails_with_the_device_named();
    }
}

fn opening_works() {
    Gntdev::open().unwrap();
    Evtchn::open().unwrap();
    let platform = LinuxPlatform;
    platform.grants().unwrap();
    platform.event_channel().unwrap();
}

fn opening_fails_with_the_device_named() {
    let err = Gntdev::open().unwrap_err();
    assert_eq!(err.path, Path::new(GNTDEV_PATH));
    assert_eq!(err.source.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("/dev/xen/gntdev"), "{err}");

    let err = Evtchn::open().unwrap_err();
    assert_eq!(err.path, Path::new(EVTCHN_PATH));
    assert_eq!(err.source.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("/dev/xen/evtchn"), "{err}");
    assert!(err.to_string().contains("dom0"), "{err}");

    let platform = LinuxPlatform;
    assert_eq!(platform.grants().unwrap_err().path, Path::new(GNTDEV_PATH));
    assert_eq!(
        platform.event_channel().unwrap_err().path,
        Path::new(EVTCHN_PATH)
    );
}
