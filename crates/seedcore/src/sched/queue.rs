//! The one order of every queue: the most urgent [`Priority`] first, then
//! the oldest ([`Rank`]), kept by two queue types.
//!
//! - [`PriorityQueue`]: lock-free, one FIFO per level, for the pools whose
//!   workers only pop (threads, async, commands, GPU). A pop scans the
//!   levels from the most urgent, so a task never waits behind a less
//!   urgent one that has not started, and each level is served in
//!   submission order. Reading an empty level touches two cache lines that
//!   nobody writes, so the scan stays cheap.
//! - [`RankedQueue`]: a heap under its owner's lock, for queues that look
//!   at their head before they take it or remove items from the middle
//!   (the process pool, the process worker).
//!
//! The tests below hold both to [`Rank`]'s order.

use crate::options::{Priority, LEVELS};
use crossbeam_deque::{Injector, Steal};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;

/// Where a queued item stands: the lesser rank goes first. Its level
/// (`0` the most urgent), then its arrival number within its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rank {
    level: u8,
    seq: u64,
}

impl Rank {
    /// The rank of the `seq`-th item pushed at priority `p`.
    pub(crate) fn new(p: Priority, seq: u64) -> Self {
        Rank {
            level: p.level(),
            seq,
        }
    }
}

/// A multi-producer multi-consumer queue that pops the most urgent
/// [`Priority`] first and is FIFO within a level. Lock-free.
///
/// Its levels are an array of FIFOs rather than a heap of ranks: the
/// order is the same, and pushes and pops of different levels do not
/// contend.
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

    /// The most urgent level that holds an item (`0` the most urgent).
    pub fn most_urgent_level(&self) -> Option<u8> {
        self.levels
            .iter()
            .position(|l| !l.is_empty())
            .map(|i| i as u8)
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

/// An item with its rank; `BinaryHeap` is a max-heap, so the greater
/// `Ranked` is the lesser rank.
struct Ranked<T> {
    rank: Rank,
    item: T,
}

impl<T> PartialEq for Ranked<T> {
    fn eq(&self, o: &Self) -> bool {
        self.rank == o.rank
    }
}

impl<T> Eq for Ranked<T> {}

impl<T> PartialOrd for Ranked<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl<T> Ord for Ranked<T> {
    fn cmp(&self, o: &Self) -> Ordering {
        o.rank.cmp(&self.rank)
    }
}

/// A queue in [`Rank`] order, for an owner that holds it under its own
/// lock and looks at the head before taking it.
pub(crate) struct RankedQueue<T> {
    heap: BinaryHeap<Ranked<T>>,
    /// Arrival numbers: FIFO within a level.
    seq: u64,
}

impl<T> RankedQueue<T> {
    pub(crate) fn new() -> Self {
        RankedQueue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Adds `item` after every item of priority `p` already queued.
    pub(crate) fn push(&mut self, p: Priority, item: T) {
        self.seq += 1;
        let rank = Rank::new(p, self.seq);
        self.heap.push(Ranked { rank, item });
    }

    /// The item [`pop`](Self::pop) would take.
    pub(crate) fn peek(&self) -> Option<&T> {
        self.heap.peek().map(|r| &r.item)
    }

    /// Takes the oldest item of the most urgent level.
    pub(crate) fn pop(&mut self) -> Option<T> {
        self.heap.pop().map(|r| r.item)
    }

    /// Keeps only the items `keep` accepts.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.heap.retain(|r| keep(&r.item));
    }

    /// Takes every item, in no particular order.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.heap.drain().map(|r| r.item)
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Items per level (index = level).
    pub(crate) fn depths(&self) -> [usize; LEVELS] {
        let mut d = [0; LEVELS];
        for r in self.heap.iter() {
            d[usize::from(r.rank.level).min(LEVELS - 1)] += 1;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes of mixed levels, each item naming its own rank.
    fn pushes() -> Vec<(Priority, Rank)> {
        let levels = [8, 2, 5, 2, 0, 10, 5, 8, 0, 2, 10, 5];
        levels
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let p = Priority::new(l).expect("a level");
                (p, Rank::new(p, i as u64 + 1))
            })
            .collect()
    }

    #[test]
    fn rank_orders_by_level_then_arrival() {
        let mut want: Vec<Rank> = pushes().into_iter().map(|(_, r)| r).collect();
        want.sort();
        let levels: Vec<u8> = want.iter().map(|r| r.level).collect();
        assert_eq!(levels, [0, 0, 2, 2, 2, 5, 5, 5, 8, 8, 10, 10]);
        assert!(want
            .windows(2)
            .all(|w| w[0].level < w[1].level || w[0].seq < w[1].seq));
    }

    #[test]
    fn both_queues_pop_in_rank_order() {
        let mut want: Vec<Rank> = pushes().into_iter().map(|(_, r)| r).collect();
        want.sort();
        let lock_free = PriorityQueue::new();
        let mut ranked = RankedQueue::new();
        for (p, r) in pushes() {
            lock_free.push(p, r);
            ranked.push(p, r);
        }
        assert_eq!(ranked.depths(), lock_free.depths());
        assert_eq!(ranked.peek(), want.first());
        let popped: Vec<Rank> = std::iter::from_fn(|| lock_free.pop()).collect();
        assert_eq!(popped, want);
        let popped: Vec<Rank> = std::iter::from_fn(|| ranked.pop()).collect();
        assert_eq!(popped, want);
    }

    #[test]
    fn a_removed_item_leaves_the_order_of_the_rest() {
        let mut q = RankedQueue::new();
        for (p, r) in pushes() {
            q.push(p, r);
        }
        q.retain(|r| r.level != 2);
        let mut want: Vec<Rank> = pushes()
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| r.level != 2)
            .collect();
        want.sort();
        assert_eq!(q.len(), want.len());
        let popped: Vec<Rank> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(popped, want);
        assert!(q.is_empty());
    }
}
