//! Waiting for threads and for counts of work to end, without polling.
//!
//! A [`Latch`] opens when its count reaches zero; a waiter blocks on a
//! condition variable until then or until its deadline (rayon-core's
//! `LockLatch` and `CountLatch` in one). A [`LatchHold`] counts one unit
//! for as long as it lives, so work that ends by unwinding still counts
//! down.
//!
//! Every thread that a shutdown joins by a deadline is started with
//! [`spawn_latched`]: its last act, even in a panic, is to open its latch,
//! and [`join_by`] waits on that latch and only then joins.
//!
//! The count is read without the lock, so hot paths may use it as a
//! plain counter; opening takes the lock before it notifies, so a waiter
//! that saw the count above zero under the lock is already waiting and is
//! woken.

use crate::sync::{lock, AtomicUsize, Condvar, Mutex, Ordering};
use std::sync::Arc;
use std::thread::{Builder, JoinHandle, Thread};
use std::time::Instant;

/// A count that waiters wait to see at zero.
pub(crate) struct Latch {
    count: AtomicUsize,
    lock: Mutex<()>,
    opened: Condvar,
}

impl Latch {
    /// A latch counting `count` (open at once if 0).
    pub(crate) fn new(count: usize) -> Self {
        Latch {
            count: AtomicUsize::new(count),
            lock: Mutex::new(()),
            opened: Condvar::new(),
        }
    }

    /// Counts `n` more units of work.
    pub(crate) fn add(&self, n: usize) {
        self.count.fetch_add(n, Ordering::AcqRel);
    }

    /// Counts `n` units as done; opens the latch if none is left.
    pub(crate) fn sub(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = self.count.fetch_sub(n, Ordering::AcqRel);
        debug_assert!(before >= n, "a latch counted below zero");
        if before == n {
            // Under the lock: a waiter between its check and its wait
            // holds it, so the notification cannot fall in that gap.
            let _g = lock(&self.lock);
            self.opened.notify_all();
        }
    }

    /// The units not yet done.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// One unit, counted until the returned hold is dropped.
    pub(crate) fn hold(self: &Arc<Self>) -> LatchHold {
        self.add(1);
        LatchHold(self.clone())
    }

    /// Blocks until the count is zero.
    #[cfg(test)]
    fn wait(&self) {
        let mut g = lock(&self.lock);
        while self.count() > 0 {
            g = self.opened.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks until the count is zero (`true`) or `deadline` passes first
    /// (`false`).
    pub(crate) fn wait_until(&self, deadline: Instant) -> bool {
        if self.count() == 0 {
            return true;
        }
        let mut g = lock(&self.lock);
        loop {
            if self.count() == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .opened
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl std::fmt::Debug for Latch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latch")
            .field("count", &self.count())
            .finish()
    }
}

/// One unit of a [`Latch`], done when dropped.
#[derive(Debug)]
pub(crate) struct LatchHold(Arc<Latch>);

impl Drop for LatchHold {
    fn drop(&mut self) {
        self.0.sub(1);
    }
}

/// A thread started by [`spawn_latched`]: its handle and the latch it
/// opens as its last act.
#[derive(Debug)]
pub(crate) struct Latched {
    handle: JoinHandle<()>,
    exited: Arc<Latch>,
}

impl Latched {
    pub(crate) fn thread(&self) -> &Thread {
        self.handle.thread()
    }

    /// Whether its code has ended (normally or by a panic).
    pub(crate) fn is_finished(&self) -> bool {
        self.exited.count() == 0
    }

    /// Blocks until its code has ended (`true`) or `deadline` passes.
    pub(crate) fn wait_until(&self, deadline: Instant) -> bool {
        self.exited.wait_until(deadline)
    }
}

/// Starts `f` on a thread made by `b`; the thread opens its latch when
/// `f` returns or unwinds.
pub(crate) fn spawn_latched<F>(b: Builder, f: F) -> std::io::Result<Latched>
where
    F: FnOnce() + Send + 'static,
{
    let exited = Arc::new(Latch::new(0));
    // Taken before the thread starts, so a waiter never sees it open early.
    let hold = exited.hold();
    let handle = b.spawn(move || {
        let _exit = hold;
        f()
    })?;
    Ok(Latched { handle, exited })
}

/// Joins `t` if its thread ends by `deadline`; `false` if it still runs
/// then, and is left detached (user code cannot be stopped from outside).
/// The calling thread's own handle counts as joined: a thread cannot wait
/// for itself, and a shutdown may run on one of the threads it stops.
pub(crate) fn join_by(t: Latched, deadline: Instant) -> bool {
    if t.thread().id() == std::thread::current().id() {
        return true;
    }
    if !t.wait_until(deadline) {
        return false;
    }
    // Its code has ended; what is left is the thread's own teardown.
    let _ = t.handle.join();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_latch_opens_when_its_count_reaches_zero() {
        let l = Arc::new(Latch::new(2));
        assert!(!l.wait_until(Instant::now()));
        let h = l.hold();
        l.sub(2);
        assert_eq!(l.count(), 1);
        let waiter = {
            let l = l.clone();
            std::thread::spawn(move || l.wait())
        };
        drop(h);
        waiter.join().unwrap();
        assert!(l.wait_until(Instant::now()));
    }

    #[test]
    fn a_thread_that_panics_opens_its_latch() {
        let t = spawn_latched(Builder::new(), || panic!("on purpose")).unwrap();
        t.exited.wait();
        assert!(t.is_finished());
        assert!(join_by(t, Instant::now()));
    }

    #[test]
    fn join_by_leaves_a_running_thread_detached() {
        let gate = Arc::new(Latch::new(1));
        let g = gate.clone();
        let t = spawn_latched(Builder::new(), move || g.wait()).unwrap();
        assert!(!t.wait_until(Instant::now() + Duration::from_millis(1)));
        let exited = t.exited.clone();
        assert!(!join_by(t, Instant::now()));
        gate.sub(1);
        exited.wait();
    }
}
