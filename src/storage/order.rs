//! Ordering of one VBD's requests around flushes and barriers, for the pipeline to use between
//! the ring and the engine (engines themselves complete in any order).
//!
//! - A flush goes to storage only after every request admitted before it completed, so its
//!   fdatasync covers exactly those writes (blkback: a PREFLUSH write).
//! - A barrier likewise waits for everything before it, and nothing after it starts until it
//!   completed (the pipeline runs a barrier as a flush and then its data write).
//! - Other requests go at once unless something is held before them: holding is first in,
//!   first out, so a stream of later writes cannot starve a waiting flush.

use std::collections::VecDeque;

/// How a request is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Read, write, discard: no ordering of its own.
    Plain,
    /// Flush: after the requests before it.
    Flush,
    /// Barrier: after the requests before it, before the requests after it.
    Barrier,
}

/// The per-VBD gate; `T` is whatever names a request for the pipeline (its id).
#[derive(Debug)]
pub struct OrderGate<T> {
    in_flight: usize,
    barrier_in_flight: bool,
    held: VecDeque<(T, Class)>,
}

impl<T> Default for OrderGate<T> {
    fn default() -> Self {
        OrderGate {
            in_flight: 0,
            barrier_in_flight: false,
            held: VecDeque::new(),
        }
    }
}

impl<T> OrderGate<T> {
    /// A gate with nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new request: `Some` to submit now, `None` when held until a completion releases it.
    pub fn admit(&mut self, item: T, class: Class) -> Option<T> {
        if self.held.is_empty() && self.may_start(class) {
            self.start(class);
            Some(item)
        } else {
            self.held.push_back((item, class));
            None
        }
    }

    /// An admitted request completed; the held requests that may start now are appended to
    /// `release`, in arrival order, and count as in flight.
    pub fn completed(&mut self, class: Class, release: &mut Vec<T>) {
        debug_assert!(self.in_flight > 0, "completion of nothing in flight");
        self.in_flight -= 1;
        if class == Class::Barrier {
            self.barrier_in_flight = false;
        }
        while let Some(&(_, next)) = self.held.front() {
            if !self.may_start(next) {
                break;
            }
            self.start(next);
            release.extend(self.held.pop_front().map(|(item, _)| item));
        }
    }

    /// Requests admitted and not yet completed (what closing the VBD drains).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Requests held back.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn may_start(&self, class: Class) -> bool {
        match class {
            Class::Plain => !self.barrier_in_flight,
            Class::Flush | Class::Barrier => self.in_flight == 0,
        }
    }

    fn start(&mut self, class: Class) {
        self.in_flight += 1;
        self.barrier_in_flight |= class == Class::Barrier;
    }
}

#[cfg(test)]
mod tests {
    use super::{Class, OrderGate};

    fn done(g: &mut OrderGate<u32>, class: Class) -> Vec<u32> {
        let mut out = Vec::new();
        g.completed(class, &mut out);
        out
    }

    #[test]
    fn plain_requests_go_at_once() {
        let mut g = OrderGate::new();
        assert_eq!(
            (0..5).map(|i| g.admit(i, Class::Plain)).collect::<Vec<_>>(),
            (0..5).map(Some).collect::<Vec<_>>()
        );
        assert_eq!(g.in_flight(), 5);
    }

    #[test]
    fn flush_waits_for_earlier_writes_and_holds_later_ones_behind_it() {
        let mut g = OrderGate::new();
        assert_eq!(g.admit(1, Class::Plain), Some(1));
        assert_eq!(g.admit(2, Class::Plain), Some(2));
        assert_eq!(
            g.admit(3, Class::Flush),
            None,
            "two writes before it are in flight"
        );
        assert_eq!(
            g.admit(4, Class::Plain),
            None,
            "held behind the waiting flush"
        );
        assert_eq!(
            done(&mut g, Class::Plain),
            Vec::<u32>::new(),
            "one write still in flight"
        );
        // The last earlier write completes: the flush starts, and the write after it too,
        // since a flush orders only what came before it.
        assert_eq!(done(&mut g, Class::Plain), vec![3, 4]);
        assert_eq!((g.in_flight(), g.held()), (2, 0));
    }

    #[test]
    fn barrier_orders_both_sides() {
        let mut g = OrderGate::new();
        assert_eq!(g.admit(1, Class::Plain), Some(1));
        assert_eq!(g.admit(2, Class::Barrier), None);
        assert_eq!(g.admit(3, Class::Plain), None);
        assert_eq!(
            done(&mut g, Class::Plain),
            vec![2],
            "the write after waits for the barrier"
        );
        assert_eq!(g.admit(4, Class::Plain), None, "still behind the barrier");
        assert_eq!(done(&mut g, Class::Barrier), vec![3, 4]);
        assert_eq!(g.in_flight(), 2);
    }

    #[test]
    fn flush_with_nothing_in_flight_goes_at_once_and_consecutive_flushes_serialise() {
        let mut g = OrderGate::new();
        assert_eq!(g.admit(1, Class::Flush), Some(1));
        assert_eq!(
            g.admit(2, Class::Flush),
            None,
            "the first flush is before it"
        );
        assert_eq!(done(&mut g, Class::Flush), vec![2]);
        assert_eq!(done(&mut g, Class::Flush), Vec::<u32>::new());
        assert_eq!((g.in_flight(), g.held()), (0, 0));
    }
}
