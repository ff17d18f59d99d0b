//! The priority queue: one lock-free FIFO per level.
//!
//! A pop scans the levels from the most urgent, so a task never waits behind
//! a less urgent one that has not started, and each level is served in
//! submission order. Reading an empty level touches two cache lines that
//! nobody writes, so the scan stays cheap.

use crate::options::{Priority, LEVELS};
use crossbeam_deque::{Injector, Steal};

pub(crate) struct PriorityQueue<T> {
    levels: [Injector<T>; LEVELS],
}

impl<T> PriorityQueue<T> {
    pub(crate) fn new() -> Self {
        PriorityQueue {
            levels: std::array::from_fn(|_| Injector::new()),
        }
    }

    pub(crate) fn push(&self, p: Priority, item: T) {
        self.levels[p.level() as usize].push(item);
    }

    pub(crate) fn pop(&self) -> Option<T> {
        for level in &self.levels {
            loop {
                match level.steal() {
                    Steal::Success(t) => return Some(t),
                    Steal::Empty => break,
                    Steal::Retry => std::hint::spin_loop(),
                }
            }
        }
        None
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.levels.iter().all(Injector::is_empty)
    }

    pub(crate) fn depths(&self) -> [usize; LEVELS] {
        std::array::from_fn(|i| self.levels[i].len())
    }
}
