//! tokenback-sim's `--disk` specs: defaults, every key, and the errors.
// An integration test crate is compiled only for tests; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]

use std::time::Duration;

use tokenback_tools::sim::spec::{parse_bytes, DiskSpec, Retune, SpecError};
use tokenback_tools::workload::Mode;

#[test]
fn a_full_spec_parses() {
    let spec = DiskSpec::parse(
        "size=256M,rw=randrw,bs=64k,qd=8,guest=web,verify=0,iops-read=2000,\
         retune-at=5s:iops-read=500",
    )
    .unwrap();
    assert_eq!(spec.size, 256 << 20);
    assert_eq!(spec.mode, Mode::RandRw);
    assert_eq!((spec.block_size, spec.queue_depth), (65536, 8));
    assert_eq!(spec.guest.as_deref(), Some("web"));
    assert!(!spec.verify);
    assert_eq!(spec.qos, [("iops-read".to_owned(), "2000".to_owned())]);
    let retune = Retune {
        at: Duration::from_secs(5),
        key: "iops-read".into(),
        value: "500".into(),
    };
    assert_eq!(spec.retune.as_ref(), Some(&retune));
    assert_eq!(
        spec.qos_after_retune(&retune),
        [("iops-read".to_owned(), "500".to_owned())]
    );
}

#[test]
fn defaults_and_sizes() {
    let spec = DiskSpec::parse("").unwrap();
    assert_eq!(
        (spec.size, spec.mode, spec.block_size, spec.queue_depth),
        (64 << 20, Mode::RandRead, 4096, 16)
    );
    assert!(spec.verify && spec.qos.is_empty() && spec.retune.is_none());
    assert!(spec.file.is_none() && spec.queues.is_none());
    assert_eq!(parse_bytes("4k"), Some(4096));
    assert_eq!(parse_bytes("1G"), Some(1 << 30));
    assert_eq!(parse_bytes("12"), Some(12));
    assert_eq!(parse_bytes("x"), None);
}

#[test]
fn existing_storage_and_queues() {
    let spec = DiskSpec::parse("file=/dev/loop3,queues=1").unwrap();
    assert_eq!(
        spec.file.as_deref(),
        Some(std::path::Path::new("/dev/loop3"))
    );
    assert_eq!(spec.queues, Some(1));
    assert!(matches!(
        DiskSpec::parse("queues=0").unwrap_err(),
        SpecError::BadValue { key, .. } if key == "queues"
    ));
}

#[test]
fn errors_name_what_is_wrong() {
    let err = |s| DiskSpec::parse(s).unwrap_err();
    assert_eq!(err("size"), SpecError::NotKeyValue("size".into()));
    assert!(matches!(
        err("rw=sideways"),
        SpecError::BadValue { what: "a mode", .. }
    ));
    assert!(matches!(err("qd=0"), SpecError::BadValue { .. }));
    assert_eq!(
        err("bs=1000"),
        SpecError::BlockSize {
            bs: 1000,
            size: 64 << 20
        }
    );
    assert_eq!(err("qd=1,qd=2"), SpecError::Repeated("qd".into()));
    assert!(matches!(err("iops-raed=5"), SpecError::Qos(m) if m.contains("iops-raed")));
    // tokens-max needs tokens-refill, as tokenbackd checks it.
    assert!(matches!(err("tokens-max=5"), SpecError::Qos(_)));
    // The retuned set is checked too.
    assert!(matches!(err("retune-at=1s:bogus=1"), SpecError::Qos(_)));
    assert!(matches!(err("retune-at=soon"), SpecError::BadValue { .. }));
}
