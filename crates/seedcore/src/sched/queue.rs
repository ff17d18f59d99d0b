//! The priority queue: one lock-free FIFO per level, the one queue type
//! every executor orders its tasks with.
//!
//! A pop scans the levels from the most urgent, so a task never waits behind
//! a less urgent one that has not started, and each level is served in
//! submission order. Reading an empty level touches two cache lines that
//! nobody writes, so the scan stays cheap.

use crate::options::{Priority, LEVELS};
use crossbeam_deque::{Injector, Steal};
use std::fmt;

/// A multi-producer multi-consumer queue that pops the most urgent
/// [`Priority`] first and is FIFO within a level. Lock-free.
///
/// ```
/// use seedcore::exec::PriorityQueue;
/// use seedcore::Priority;
///
/// let q = PriorityQueue::new();
/// q.push(Priority::LOW, "later");
/// q.push(Priority::HIGH, "first");
/// q.push(Priority::LOW, "last");
/// assert_eq!(q.pop(), Some("first"));
/// assert_eq!(q.pop(), Some("later"));
/// assert_eq!(q.pop(), Some("last"));
/// assert!(q.is_empty());
/// ```
pub struct PriorityQueue<T> {
    levels: [Injector<T>; LEVELS],
}

impl<T> PriorityQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        PriorityQueue {
            levels: std::array::from_fn(|_| Injector::new()),
        }
    }

    /// Adds `item` at the end of level `p`.
    pub fn push(&self, p: Priority, item: T) {
        self.levels[p.level() as usize].push(item);
    }

    /// Takes the oldest item of the most urgent non-empty level.
    pub fn pop(&self) -> Option<T> {
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

    /// Whether every level is empty.
    pub fn is_empty(&self) -> bool {
        self.levels.iter().all(Injector::is_empty)
    }

    /// Items per level (index = level).
    pub fn depths(&self) -> [usize; LEVELS] {
        std::array::from_fn(|i| self.levels[i].len())
    }

    /// Items, all levels together.
    pub fn len(&self) -> usize {
        self.levels.iter().map(Injector::len).sum()
    }
}

/// An item with its priority level and arrival number, ordered for a
/// `BinaryHeap` the way [`PriorityQueue`] pops (most urgent level, then the
/// oldest), for queues that look at their head before they take it.
pub(crate) struct Ranked<T> {
    pub(crate) level: u8,
    pub(crate) seq: u64,
    pub(crate) item: T,
}

impl<T> PartialEq for Ranked<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.level, self.seq) == (o.level, o.seq)
    }
}

impl<T> Eq for Ranked<T> {}

impl<T> PartialOrd for Ranked<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl<T> Ord for Ranked<T> {
    // Reversed: `BinaryHeap` is a max-heap.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.level, o.seq).cmp(&(self.level, self.seq))
    }
}

impl<T> Default for PriorityQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for PriorityQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriorityQueue")
            .field("depths", &self.depths())
            .finish()
    }
}
