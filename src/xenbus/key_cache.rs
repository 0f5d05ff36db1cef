//! Reading a set of keys whose names depend on other keys' values (a front end's ring refs
//! depend on its order and queue count) over a connection that answers asynchronously: run the
//! validator over what has been fetched; if it asked for keys not fetched yet, fetch those and
//! run it again. The validators stay plain functions of a lookup.

use std::cell::RefCell;
use std::collections::HashMap;

/// Keys fetched so far, relative to one directory; `None` records an absent key.
#[derive(Debug, Default)]
pub struct KeyCache {
    values: HashMap<String, Option<String>>,
}

/// The validator's result, or the keys it still needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    Done(T),
    Need(Vec<String>),
}

impl KeyCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a fetched key: its value, or `None` when xenstore said it does not exist.
    pub fn insert(&mut self, key: String, value: Option<String>) {
        self.values.insert(key, value);
    }

    /// Runs `validate` over the cache. Its result stands only if it asked for nothing unfetched
    /// (an unfetched key looks absent to it, so its verdict may be wrong).
    pub fn run<T>(&self, validate: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> T) -> Lookup<T> {
        let need = RefCell::new(Vec::new());
        let read = |key: &str| match self.values.get(key) {
            Some(value) => value.clone(),
            None => {
                need.borrow_mut().push(key.to_owned());
                None
            }
        };
        let result = validate(&read);
        let need = need.into_inner();
        if need.is_empty() {
            Lookup::Done(result)
        } else {
            Lookup::Need(need)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xenbus::device::read_device;
    use crate::xenbus::frontend::{read_frontend_rings, FrontendError, Limits};

    const LIMITS: Limits = Limits {
        max_ring_page_order: 4,
        max_queues: 4,
    };

    /// Fetches what is asked for from `store` until the validator is done; returns the result
    /// and the number of rounds.
    fn fetch_rounds<T>(
        store: &HashMap<&str, &str>,
        validate: impl Fn(&dyn Fn(&str) -> Option<String>) -> T,
    ) -> (T, usize) {
        let mut cache = KeyCache::new();
        for round in 1..=10 {
            match cache.run(&validate) {
                Lookup::Done(result) => return (result, round),
                Lookup::Need(keys) => {
                    for key in keys {
                        let value = store.get(key.as_str()).map(|v| v.to_string());
                        cache.insert(key, value);
                    }
                }
            }
        }
        panic!("validator still asking after 10 rounds");
    }

    #[test]
    fn two_queues_of_two_pages_in_three_rounds() {
        let store: HashMap<&str, &str> = [
            ("protocol", "x86_32-abi"),
            ("ring-page-order", "1"),
            ("multi-queue-num-queues", "2"),
            ("queue-0/ring-ref0", "8"),
            ("queue-0/ring-ref1", "9"),
            ("queue-0/event-channel", "3"),
            ("queue-1/ring-ref0", "10"),
            ("queue-1/ring-ref1", "11"),
            ("queue-1/event-channel", "4"),
        ]
        .into();
        // Top-level keys, then every queue's keys at once.
        let (result, rounds) = fetch_rounds(&store, |read| read_frontend_rings(LIMITS, read));
        let direct = read_frontend_rings(LIMITS, |k| store.get(k).map(|v| v.to_string()));
        assert_eq!(result, direct);
        assert_eq!(result.unwrap().queues.len(), 2);
        assert_eq!(rounds, 3);
    }

    #[test]
    fn toolstack_keys_in_two_rounds() {
        let store: HashMap<&str, &str> = [
            ("frontend", "/local/domain/5/device/vbd/51712"),
            ("frontend-id", "5"),
            ("mode", "r"),
        ]
        .into();
        let (result, rounds) = fetch_rounds(&store, |read| read_device(read));
        assert_eq!(rounds, 2);
        let device = result.unwrap();
        assert!(!device.writable && !device.cdrom && !device.discard_enable);
    }

    #[test]
    fn an_absent_key_fetched_is_a_verdict_not_a_need() {
        // event-channel absent: once fetched as absent, the validator's Missing stands.
        let store: HashMap<&str, &str> = [("ring-ref", "8")].into();
        let (result, _) = fetch_rounds(&store, |read| read_frontend_rings(LIMITS, read));
        assert_eq!(
            result,
            Err(FrontendError::Missing {
                key: "event-channel".into()
            })
        );
    }

    #[test]
    fn unfetched_keys_withhold_the_verdict() {
        let cache = KeyCache::new();
        match cache.run(|read| read_frontend_rings(LIMITS, read)) {
            Lookup::Need(keys) => assert!(keys.contains(&"protocol".to_owned()), "{keys:?}"),
            Lookup::Done(result) => panic!("verdict on an empty cache: {result:?}"),
        }
    }
}
