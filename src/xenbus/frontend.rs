//! The front end's connect keys (reference xenbus-vbd.md section 6), read once and validated
//! into a `FrontendRings` the pipeline maps. Every value is the guest's and untrusted: a bad one
//! is a `FrontendError` naming the key and why, as Linux's `connect_ring` and
//! `read_per_ring_refs` fail the device with `xenbus_dev_fatal`.

use blkif::{Protocol, UnknownProtocol};
use thiserror::Error;

use crate::platform::{GrantRef, Port};

/// What we advertise before InitWait, and so the bounds a front end must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `max-ring-page-order` (at most `blkif::MAX_RING_ORDER`).
    pub max_ring_page_order: u8,
    /// `multi-queue-max-queues` (at least 1).
    pub max_queues: u32,
}

/// One queue's ring pages (2^order grant refs, in order) and its event channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRing {
    pub ring_refs: Vec<GrantRef>,
    pub port: Port,
}

/// A front end's rings, validated: what the pipeline maps and binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendRings {
    pub protocol: Protocol,
    pub ring_page_order: u8,
    pub queues: Vec<QueueRing>,
    /// The front end offers persistent grants (`feature-persistent` = 1).
    pub persistent: bool,
}

/// Why the front end's keys cannot be used. `key` is relative to the frontend directory.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrontendError {
    #[error("{key}: missing")]
    Missing { key: String },
    #[error("{key}: {value:?} is not a decimal number")]
    NotANumber { key: String, value: String },
    #[error("ring-page-order: {order} is above our max-ring-page-order {max}")]
    OrderTooLarge { order: u32, max: u8 },
    #[error("multi-queue-num-queues: {queues} is not in 1..={max}")]
    BadQueueCount { queues: u32, max: u32 },
    #[error("{key}: event channel port 0 is reserved")]
    PortZero { key: String },
    #[error("protocol: {0}")]
    Protocol(#[from] UnknownProtocol),
    #[error("feature-persistent: {value:?} is neither 0 nor 1")]
    BadPersistent { value: String },
}

/// Reads and validates the front end's keys. `read(key)` returns the value of `key` relative
/// to the frontend directory, `None` when absent.
pub fn read_frontend_rings(
    limits: Limits,
    read: impl Fn(&str) -> Option<String>,
) -> Result<FrontendRings, FrontendError> {
    let protocol = Protocol::from_xenstore(read("protocol").as_deref())?;
    let persistent = match read("feature-persistent").as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(other) => {
            return Err(FrontendError::BadPersistent {
                value: other.to_owned(),
            })
        }
    };
    let queue_count = optional_number(&read, "multi-queue-num-queues")?.unwrap_or(1);
    if queue_count == 0 || queue_count > limits.max_queues {
        return Err(FrontendError::BadQueueCount {
            queues: queue_count,
            max: limits.max_queues,
        });
    }
    // As Linux: an absent ring-page-order means one page named `ring-ref`; a present one (even
    // 0) means `ring-ref0..2^order-1`.
    let order = optional_number(&read, "ring-page-order")?;
    if let Some(order) = order {
        if order > u32::from(limits.max_ring_page_order) {
            return Err(FrontendError::OrderTooLarge {
                order,
                max: limits.max_ring_page_order,
            });
        }
    }
    // Every queue is read before the first error is reported, so that a caller fetching
    // keys asynchronously learns all the names it needs in one round (see `key_cache`).
    let queues: Vec<_> = (0..queue_count)
        .map(|q| {
            // One queue keeps its keys at the top; several under queue-<i>/.
            let prefix = if queue_count == 1 {
                String::new()
            } else {
                format!("queue-{q}/")
            };
            read_queue(&read, &prefix, order)
        })
        .collect();
    let queues = queues.into_iter().collect::<Result<_, _>>()?;
    Ok(FrontendRings {
        protocol,
        // Checked against limits.max_ring_page_order (a u8) above.
        ring_page_order: order.unwrap_or(0) as u8,
        queues,
        persistent,
    })
}

fn read_queue(
    read: &impl Fn(&str) -> Option<String>,
    prefix: &str,
    order: Option<u32>,
) -> Result<QueueRing, FrontendError> {
    let ref_keys: Vec<String> = match order {
        None => vec![format!("{prefix}ring-ref")],
        Some(order) => (0..1u32 << order)
            .map(|i| format!("{prefix}ring-ref{i}"))
            .collect(),
    };
    // All read before the first error, as above.
    let ring_refs: Vec<_> = ref_keys.iter().map(|key| number(read, key)).collect();
    let port_key = format!("{prefix}event-channel");
    let port = number(read, &port_key);
    let ring_refs = ring_refs
        .into_iter()
        .map(|r| r.map(GrantRef))
        .collect::<Result<_, _>>()?;
    let port = port?;
    if port == 0 {
        return Err(FrontendError::PortZero { key: port_key });
    }
    Ok(QueueRing {
        ring_refs,
        port: Port(port),
    })
}

fn number(read: &impl Fn(&str) -> Option<String>, key: &str) -> Result<u32, FrontendError> {
    optional_number(read, key)?.ok_or_else(|| FrontendError::Missing {
        key: key.to_owned(),
    })
}

/// A u32 in decimal digits only: no sign, space or prefix (Linux's `%u` is laxer; a front end
/// that writes anything else is broken or hostile).
fn optional_number(
    read: &impl Fn(&str) -> Option<String>,
    key: &str,
) -> Result<Option<u32>, FrontendError> {
    let Some(value) = read(key) else {
        return Ok(None);
    };
    parse_decimal(&value)
        .map(Some)
        .ok_or_else(|| FrontendError::NotANumber {
            key: key.to_owned(),
            value,
        })
}

/// Decimal digits only, fitting in a u32.
pub(crate) fn parse_decimal(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::xenbus::tests::read_from;

    const LIMITS: Limits = Limits {
        max_ring_page_order: 4,
        max_queues: 4,
    };

    /// The keys a front end with `queues` queues and `order` writes, refs numbered from 8.
    fn good_keys(queues: u32, order: Option<u32>) -> Vec<(String, String)> {
        let mut keys = vec![("protocol".to_owned(), "x86_64-abi".to_owned())];
        if let Some(order) = order {
            keys.push(("ring-page-order".into(), order.to_string()));
        }
        if queues > 1 {
            keys.push(("multi-queue-num-queues".into(), queues.to_string()));
        }
        let mut next_ref = 8;
        for q in 0..queues {
            let prefix = if queues == 1 {
                String::new()
            } else {
                format!("queue-{q}/")
            };
            match order {
                None => {
                    keys.push((format!("{prefix}ring-ref"), next_ref.to_string()));
                    next_ref += 1;
                }
                Some(order) => {
                    for i in 0..1u32 << order {
                        keys.push((format!("{prefix}ring-ref{i}"), next_ref.to_string()));
                        next_ref += 1;
                    }
                }
            }
            keys.push((format!("{prefix}event-channel"), (q + 3).to_string()));
        }
        keys
    }

    fn read_owned(keys: Vec<(String, String)>) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = keys.into_iter().collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn every_order_and_queue_count_within_limits_reads_back() {
        for queues in 1..=4 {
            for order in [None, Some(0), Some(1), Some(2), Some(3), Some(4)] {
                let rings = read_frontend_rings(LIMITS, read_owned(good_keys(queues, order)))
                    .unwrap_or_else(|e| panic!("{queues} queues, order {order:?}: {e}"));
                assert_eq!(rings.queues.len(), queues as usize);
                assert_eq!(u32::from(rings.ring_page_order), order.unwrap_or(0));
                let mut next_ref = 8;
                for (q, queue) in rings.queues.iter().enumerate() {
                    assert_eq!(queue.ring_refs.len(), 1 << rings.ring_page_order);
                    for r in &queue.ring_refs {
                        assert_eq!(*r, GrantRef(next_ref));
                        next_ref += 1;
                    }
                    assert_eq!(queue.port, Port(q as u32 + 3));
                }
                assert_eq!(rings.protocol.name(), "x86_64-abi");
                assert!(!rings.persistent);
            }
        }
    }

    #[test]
    fn protocols_by_name_and_absent_means_the_default() {
        // The native name means the native layout (Linux checks it first), whichever x86
        // name that is.
        let x86 = |name, layout| {
            if name == Protocol::NATIVE_NAME {
                Protocol::Native
            } else {
                layout
            }
        };
        for (name, protocol) in [
            (Some("x86_32-abi"), x86("x86_32-abi", Protocol::X86_32)),
            (Some("x86_64-abi"), x86("x86_64-abi", Protocol::X86_64)),
            (Some(Protocol::NATIVE_NAME), Protocol::Native),
            (None, Protocol::DEFAULT),
        ] {
            let mut keys = vec![("ring-ref", "8"), ("event-channel", "3")];
            if let Some(name) = name {
                keys.push(("protocol", name));
            }
            let rings = read_frontend_rings(LIMITS, read_from(&keys)).unwrap();
            assert_eq!(rings.protocol, protocol, "protocol key {name:?}");
        }
    }

    #[test]
    fn hostile_values_name_the_key_and_why() {
        let base = [("ring-ref", "8"), ("event-channel", "3")];
        let cases: Vec<(Vec<(&str, &str)>, FrontendError)> = vec![
            // An order above what we advertised.
            (
                vec![("ring-page-order", "5"), ("event-channel", "3")],
                FrontendError::OrderTooLarge { order: 5, max: 4 },
            ),
            // More queues than we offer, and zero queues.
            (
                vec![("multi-queue-num-queues", "5")],
                FrontendError::BadQueueCount { queues: 5, max: 4 },
            ),
            (
                vec![("multi-queue-num-queues", "0")],
                FrontendError::BadQueueCount { queues: 0, max: 4 },
            ),
            // A multi-page ring missing its last page.
            (
                vec![
                    ("ring-page-order", "1"),
                    ("ring-ref0", "8"),
                    ("event-channel", "3"),
                ],
                FrontendError::Missing {
                    key: "ring-ref1".into(),
                },
            ),
            // No ring-ref at all.
            (
                vec![("event-channel", "3")],
                FrontendError::Missing {
                    key: "ring-ref".into(),
                },
            ),
            // Garbage and reserved event channels.
            (
                vec![("ring-ref", "8"), ("event-channel", "-1")],
                FrontendError::NotANumber {
                    key: "event-channel".into(),
                    value: "-1".into(),
                },
            ),
            (
                vec![("ring-ref", "8"), ("event-channel", "0")],
                FrontendError::PortZero {
                    key: "event-channel".into(),
                },
            ),
            (
                vec![("ring-ref", "8"), ("event-channel", "4294967296")],
                FrontendError::NotANumber {
                    key: "event-channel".into(),
                    value: "4294967296".into(),
                },
            ),
            // A grant ref with a sign, and an unknown protocol.
            (
                vec![("ring-ref", "+8"), ("event-channel", "3")],
                FrontendError::NotANumber {
                    key: "ring-ref".into(),
                    value: "+8".into(),
                },
            ),
            (
                [&base[..], &[("protocol", "sparc-abi")]].concat(),
                FrontendError::Protocol(UnknownProtocol("sparc-abi".into())),
            ),
            (
                [&base[..], &[("feature-persistent", "yes")]].concat(),
                FrontendError::BadPersistent {
                    value: "yes".into(),
                },
            ),
        ];
        for (keys, expected) in cases {
            let got = read_frontend_rings(LIMITS, read_from(&keys));
            assert_eq!(got, Err(expected.clone()), "keys {keys:?}");
            assert!(!expected.to_string().is_empty());
        }
    }

    #[test]
    fn several_queues_need_every_queue_directory() {
        // Two queues announced, queue-1's keys absent.
        let keys = [
            ("multi-queue-num-queues", "2"),
            ("queue-0/ring-ref", "8"),
            ("queue-0/event-channel", "3"),
        ];
        assert_eq!(
            read_frontend_rings(LIMITS, read_from(&keys)),
            Err(FrontendError::Missing {
                key: "queue-1/ring-ref".into()
            })
        );
    }

    #[test]
    fn persistent_grants_offered() {
        let keys = [
            ("ring-ref", "8"),
            ("event-channel", "3"),
            ("feature-persistent", "1"),
        ];
        assert!(
            read_frontend_rings(LIMITS, read_from(&keys))
                .unwrap()
                .persistent
        );
    }
}
