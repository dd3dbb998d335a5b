//! The event queue: a binary heap of events ordered by (time, event-type priority, sequence
//! number), so that the order of events is total and independent of heap internals. Time is
//! either clock of [`super::clock`] (integer ns by default).
//!
//! Priorities settle what happens first at one instant: arrivals are dispatched to replicas,
//! pipeline stages and batches finish, and only then do replicas form new batches. That is
//! what both the real engine's loop (it admits every request that arrived by the time it
//! schedules) and Vidur's event ids produce (arrival events are created first, so at equal
//! time they precede the batch ends and replica schedules created later).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// What happens at an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The next requests of the stream arrive (all of those arriving at this instant).
    Arrival,
    /// The requests that arrived at this instant are dispatched to replicas.
    GlobalSchedule,
    /// Pipeline `stage` of `replica` finished its part of `batch` (a run-wide batch id).
    StageEnd {
        replica: u32,
        stage: u32,
        batch: u64,
    },
    /// The last stage finished `batch`: its tokens are emitted at this instant.
    BatchEnd { replica: u32, batch: u64 },
    /// `replica` forms batches while it has a free pipeline slot and work to do.
    ReplicaSchedule { replica: u32 },
}

impl EventKind {
    /// Order among events at the same time (lower first).
    pub fn priority(self) -> u8 {
        match self {
            EventKind::Arrival => 0,
            EventKind::GlobalSchedule => 1,
            EventKind::StageEnd { .. } => 2,
            EventKind::BatchEnd { .. } => 3,
            EventKind::ReplicaSchedule { .. } => 4,
        }
    }
}

/// An event at a virtual time `T` (ns since the trace's origin, or a [`super::clock`] type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<T = u64> {
    /// Virtual time.
    pub time: T,
    pub kind: EventKind,
    /// Position in push order; breaks ties between events of one time and priority.
    pub seq: u64,
}

impl<T: Ord + Copy> Event<T> {
    fn key(&self) -> (T, u8, u64) {
        (self.time, self.kind.priority(), self.seq)
    }
}

impl<T: Ord + Copy> Ord for Event<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl<T: Ord + Copy> PartialOrd for Event<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A min-queue of events.
#[derive(Debug)]
pub struct EventQueue<T = u64> {
    heap: BinaryHeap<Reverse<Event<T>>>,
    next_seq: u64,
    num_pushed: u64,
}

impl<T> Default for EventQueue<T> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
            num_pushed: 0,
        }
    }
}

impl<T: Ord + Copy> EventQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `kind` at `time`.
    pub fn push(&mut self, time: T, kind: EventKind) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.num_pushed += 1;
        self.heap.push(Reverse(Event { time, kind, seq }));
    }

    /// Removes and returns the earliest event.
    pub fn pop(&mut self) -> Option<Event<T>> {
        self.heap.pop().map(|Reverse(e)| e)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Events pushed over the queue's life.
    pub fn num_pushed(&self) -> u64 {
        self.num_pushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_time_then_priority_then_push_order() {
        let mut q = EventQueue::new();
        q.push(10, EventKind::ReplicaSchedule { replica: 0 });
        q.push(
            10,
            EventKind::BatchEnd {
                replica: 0,
                batch: 7,
            },
        );
        q.push(5, EventKind::ReplicaSchedule { replica: 1 });
        q.push(10, EventKind::Arrival);
        q.push(10, EventKind::ReplicaSchedule { replica: 2 });
        q.push(10, EventKind::GlobalSchedule);
        q.push(
            10,
            EventKind::StageEnd {
                replica: 0,
                stage: 0,
                batch: 7,
            },
        );
        let order: Vec<(u64, EventKind)> =
            std::iter::from_fn(|| q.pop().map(|e| (e.time, e.kind))).collect();
        assert_eq!(
            order,
            [
                (5, EventKind::ReplicaSchedule { replica: 1 }),
                (10, EventKind::Arrival),
                (10, EventKind::GlobalSchedule),
                (
                    10,
                    EventKind::StageEnd {
                        replica: 0,
                        stage: 0,
                        batch: 7
                    }
                ),
                (
                    10,
                    EventKind::BatchEnd {
                        replica: 0,
                        batch: 7
                    }
                ),
                (10, EventKind::ReplicaSchedule { replica: 0 }),
                (10, EventKind::ReplicaSchedule { replica: 2 }),
            ]
        );
        assert!(q.is_empty());
        assert_eq!(q.num_pushed(), 7);
    }
}
