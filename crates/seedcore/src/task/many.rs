//! Waiting on many futures at once: [`wait`] (concurrent.futures' `wait`)
//! and [`as_completed`], over [`TaskFuture`]s or [`SharedFuture`]s.
//!
//! One notifier serves the whole set: each pending future holds a waker that
//! unparks the waiting thread, which then looks at the futures again. No
//! polling: the thread sleeps until a future resolves or the timeout ends.

use super::{SharedFuture, TaskFuture};
use crate::error::TaskError;
use crate::task::TaskStatus;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

mod sealed {
    /// Keeps [`Waitable`](super::Waitable) to the crate's futures: its
    /// methods reach into their internals.
    pub trait Sealed {}
}

/// A future that [`wait`] and [`as_completed`] take: a [`TaskFuture`] or
/// a [`SharedFuture`].
pub trait Waitable: sealed::Sealed {
    /// The task's value.
    type Value;

    /// Whether the task has resolved.
    fn is_done(&self) -> bool;

    /// Where the task stands.
    fn status(&self) -> TaskStatus;

    /// Whether the task has resolved; if not, `waker` is woken when it
    /// does (in place of the waker this future was last watched with).
    #[doc(hidden)]
    fn watch(&self, waker: &Waker) -> bool;

    /// The result of a resolved task.
    #[doc(hidden)]
    fn take(self) -> Result<Self::Value, TaskError>;
}

impl<T> sealed::Sealed for TaskFuture<T> {}

impl<T: Send + 'static> Waitable for TaskFuture<T> {
    type Value = T;

    fn is_done(&self) -> bool {
        TaskFuture::is_done(self)
    }

    fn status(&self) -> TaskStatus {
        TaskFuture::status(self)
    }

    fn watch(&self, waker: &Waker) -> bool {
        self.task.completion().watch(waker)
    }

    fn take(self) -> Result<T, TaskError> {
        // Resolved: the wait returns at once.
        self.wait()
    }
}

impl<T> sealed::Sealed for SharedFuture<T> {}

impl<T: Clone + Send + 'static> Waitable for SharedFuture<T> {
    type Value = T;

    fn is_done(&self) -> bool {
        SharedFuture::is_done(self)
    }

    fn status(&self) -> TaskStatus {
        SharedFuture::status(self)
    }

    fn watch(&self, waker: &Waker) -> bool {
        SharedFuture::watch(self, waker)
    }

    fn take(self) -> Result<T, TaskError> {
        // Resolved: the wait returns at once.
        self.wait()
    }
}

/// When [`wait`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// As soon as any future resolves.
    FirstCompleted,
    /// As soon as any future fails (any error, a cancel included), or when
    /// all have resolved.
    FirstException,
    /// When every future has resolved.
    AllCompleted,
}

/// What [`wait`] found: indices into the slice it was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitSet {
    /// Futures that have resolved, in slice order.
    pub done: Vec<usize>,
    /// Futures still pending, in slice order.
    pub pending: Vec<usize>,
}

/// Unparks the thread that waits on a set of futures.
struct Notifier {
    thread: std::thread::Thread,
    woken: AtomicBool,
}

impl Wake for Notifier {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

impl Notifier {
    fn new() -> (Arc<Notifier>, Waker) {
        let n = Arc::new(Notifier {
            thread: std::thread::current(),
            woken: AtomicBool::new(false),
        });
        let w = Waker::from(n.clone());
        (n, w)
    }

    /// Sleeps until woken or `deadline`; `false` once the deadline passed.
    fn sleep(&self, deadline: Option<Instant>) -> bool {
        while !self.woken.swap(false, Ordering::AcqRel) {
            match deadline {
                None => std::thread::park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    std::thread::park_timeout(d - now);
                }
            }
        }
        true
    }
}

/// Blocks until `what` holds for `futures` or `timeout` passes, and says
/// which have resolved and which not. No future is consumed: read results
/// with [`TaskFuture::try_get`] or [`SharedFuture::try_get`], or `wait`.
///
/// Called from a thread task, the pool keeps its capacity while this waits
/// (see [`TaskFuture::wait`]).
pub fn wait<F: Waitable>(futures: &[F], what: WaitFor, timeout: Option<Duration>) -> WaitSet {
    let deadline = timeout.map(|t| Instant::now() + t);
    let (notifier, waker) = Notifier::new();
    let mut blocked = None;
    loop {
        let mut set = WaitSet::default();
        let mut failed = false;
        for (i, f) in futures.iter().enumerate() {
            if f.watch(&waker) {
                failed |= matches!(f.status(), TaskStatus::Failed(_));
                set.done.push(i);
            } else {
                set.pending.push(i);
            }
        }
        let met = set.pending.is_empty()
            || match what {
                WaitFor::FirstCompleted => !set.done.is_empty(),
                WaitFor::FirstException => failed,
                WaitFor::AllCompleted => false,
            };
        if met {
            return set;
        }
        if blocked.is_none() {
            blocked = Some(super::blocking());
        }
        if !notifier.sleep(deadline) {
            // One last look: a future may have resolved at the deadline.
            let mut last = WaitSet::default();
            for (i, f) in futures.iter().enumerate() {
                if f.is_done() {
                    last.done.push(i);
                } else {
                    last.pending.push(i);
                }
            }
            return last;
        }
    }
}

/// Yields each future's index and result as it resolves, in the order
/// they resolve (concurrent.futures' `as_completed`). With a timeout, the
/// iteration ends when it passes; [`AsCompleted::into_pending`] then hands
/// back the futures not yet resolved.
pub fn as_completed<F: Waitable>(
    futures: Vec<F>,
    timeout: Option<Duration>,
) -> AsCompleted<F::Value, F> {
    AsCompleted {
        futures: futures.into_iter().map(Some).collect(),
        deadline: timeout.map(|t| Instant::now() + t),
        timed_out: false,
        value: PhantomData,
    }
}

/// The iterator of [`as_completed`], over futures `F` of tasks whose
/// value is `T`.
#[derive(Debug)]
pub struct AsCompleted<T: 'static, F = TaskFuture<T>> {
    futures: Vec<Option<F>>,
    deadline: Option<Instant>,
    timed_out: bool,
    value: PhantomData<fn() -> T>,
}

impl<T, F: Waitable<Value = T>> AsCompleted<T, F> {
    /// Whether the iteration ended at its timeout with futures pending.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// The futures not yet yielded, with their indices.
    pub fn into_pending(self) -> Vec<(usize, F)> {
        self.futures
            .into_iter()
            .enumerate()
            .filter_map(|(i, f)| f.map(|f| (i, f)))
            .collect()
    }

    fn take_done(&mut self) -> Option<(usize, Result<T, TaskError>)> {
        for (i, slot) in self.futures.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|f| f.is_done()) {
                let f = slot.take()?;
                return Some((i, f.take()));
            }
        }
        None
    }
}

impl<T, F: Waitable<Value = T>> Iterator for AsCompleted<T, F> {
    type Item = (usize, Result<T, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.timed_out {
            return None;
        }
        let (notifier, waker) = Notifier::new();
        let mut blocked = None;
        loop {
            if let Some(out) = self.take_done() {
                return Some(out);
            }
            let mut pending = false;
            for f in self.futures.iter().flatten() {
                pending = true;
                if f.watch(&waker) {
                    break;
                }
            }
            if !pending {
                return None;
            }
            if notifier.woken.load(Ordering::Acquire) || self.any_done() {
                continue;
            }
            if blocked.is_none() {
                blocked = Some(super::blocking());
            }
            if !notifier.sleep(self.deadline) {
                if let Some(out) = self.take_done() {
                    return Some(out);
                }
                self.timed_out = true;
                return None;
            }
        }
    }
}

impl<T, F: Waitable<Value = T>> AsCompleted<T, F> {
    fn any_done(&self) -> bool {
        self.futures.iter().flatten().any(|f| f.is_done())
    }
}
