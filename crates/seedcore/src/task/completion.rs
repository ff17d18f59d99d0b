//! The completion state machine of one task.
//!
//! # Invariants
//!
//! * The slot moves `Empty → Waiting → Ready → Taken` (a step may be
//!   skipped) and never back, except that a waiter that gives up takes its
//!   registration back (`Waiting → Empty`). The one caller of
//!   [`Completion::complete`] that finds it neither `Ready` nor `Taken` is
//!   the only writer of the result: "resolves exactly once" is that one
//!   look under the lock, and [`Resolve`] tells every caller whether it won.
//! * The result and the waiter share one slot under one mutex, so a waiter
//!   that registers itself either sees the result or is seen by the
//!   completer; a wake-up cannot be lost between the two.
//! * A registered callback consumes the result: the future that registered
//!   it was consumed too, so nobody else can wait for it.
//!
//! # Size
//!
//! A task record holds one of these for every queued task, so it is one
//! word of lock and two of slot: a waiter is boxed, because most results
//! are taken without anyone having to wait for them.
//!
//! This file names its primitives only through `crate::sync`, so that the
//! model-checking tests can compile it against loom.

use crate::sync::{lock, thread, Mutex};
use std::task::Waker;
use std::time::Instant;

/// Who is waiting for the result.
enum Waiter<R> {
    Thread(thread::Thread),
    Waker(Waker),
    Callback(Box<dyn FnOnce(R) + Send>),
}

enum Slot<R> {
    Empty,
    Waiting(Box<Waiter<R>>),
    Ready(R),
    /// The result was handed out.
    Taken,
}

/// The outcome of an attempt to resolve a [`Completion`].
#[must_use = "the loser of a resolution race must not act as if it resolved the task"]
pub(crate) enum Resolve<R> {
    /// This call stored the result.
    Won,
    /// The completion was already resolved; the value is handed back.
    Lost(R),
}

impl<R> Resolve<R> {
    pub(crate) fn won(&self) -> bool {
        matches!(self, Resolve::Won)
    }
}

/// A write-once slot with blocking, async and callback readers.
pub(crate) struct Completion<R> {
    slot: Mutex<Slot<R>>,
}

impl<R> Completion<R> {
    pub(crate) fn new() -> Self {
        Completion {
            slot: Mutex::new(Slot::Empty),
        }
    }

    /// Stores `r` if nobody has yet; wakes the waiter or runs the callback.
    pub(crate) fn complete(&self, r: R) -> Resolve<R> {
        let mut g = lock(&self.slot);
        let waiter = match std::mem::replace(&mut *g, Slot::Taken) {
            Slot::Empty => None,
            Slot::Waiting(w) => Some(w),
            done @ (Slot::Ready(_) | Slot::Taken) => {
                *g = done;
                return Resolve::Lost(r);
            }
        };
        match waiter.map(|w| *w) {
            Some(Waiter::Callback(cb)) => {
                drop(g);
                cb(r);
            }
            Some(Waiter::Thread(t)) => {
                *g = Slot::Ready(r);
                drop(g);
                t.unpark();
            }
            Some(Waiter::Waker(w)) => {
                *g = Slot::Ready(r);
                drop(g);
                w.wake();
            }
            None => *g = Slot::Ready(r),
        }
        Resolve::Won
    }

    /// Takes the result out of `g` if it is there.
    fn take(g: &mut Slot<R>) -> Option<R> {
        if !matches!(g, Slot::Ready(_)) {
            return None;
        }
        match std::mem::replace(g, Slot::Taken) {
            Slot::Ready(r) => Some(r),
            _ => unreachable!("checked above"),
        }
    }

    /// Registers the calling thread as the waiter, reusing its box.
    fn wait_here(g: &mut Slot<R>) {
        match g {
            Slot::Waiting(w) if matches!(**w, Waiter::Thread(_)) => {}
            Slot::Taken => panic!("task result already taken"),
            _ => *g = Slot::Waiting(Box::new(Waiter::Thread(thread::current()))),
        }
    }

    /// Blocks the calling thread until the result is there and takes it.
    pub(crate) fn wait(&self) -> R {
        loop {
            {
                let mut g = lock(&self.slot);
                if let Some(r) = Self::take(&mut g) {
                    return r;
                }
                Self::wait_here(&mut g);
            }
            thread::park();
        }
    }

    /// Like [`wait`](Self::wait), but gives up at `deadline`.
    pub(crate) fn wait_deadline(&self, deadline: Instant) -> Option<R> {
        loop {
            {
                let mut g = lock(&self.slot);
                if let Some(r) = Self::take(&mut g) {
                    return Some(r);
                }
                if Instant::now() >= deadline {
                    if matches!(*g, Slot::Waiting(_)) {
                        *g = Slot::Empty;
                    }
                    return None;
                }
                Self::wait_here(&mut g);
            }
            thread::park_timeout(deadline.saturating_duration_since(Instant::now()));
        }
    }

    /// Takes the result if it is there, without blocking.
    pub(crate) fn try_take(&self) -> Option<R> {
        Self::take(&mut lock(&self.slot))
    }

    /// The `Future::poll` half: takes the result or registers `waker`.
    pub(crate) fn poll_take(&self, waker: &Waker) -> Option<R> {
        let mut g = lock(&self.slot);
        if let Some(r) = Self::take(&mut g) {
            return Some(r);
        }
        match &mut *g {
            Slot::Taken => panic!("TaskFuture polled after it returned its result"),
            Slot::Waiting(w) => match &mut **w {
                Waiter::Waker(old) if old.will_wake(waker) => {}
                other => *other = Waiter::Waker(waker.clone()),
            },
            g => *g = Slot::Waiting(Box::new(Waiter::Waker(waker.clone()))),
        }
        None
    }

    /// Hands the result to `cb` once it is there (at once if it already is,
    /// on the calling thread; otherwise on the thread that completes).
    pub(crate) fn on_complete(&self, cb: Box<dyn FnOnce(R) + Send>) {
        let mut g = lock(&self.slot);
        if let Some(r) = Self::take(&mut g) {
            drop(g);
            cb(r);
            return;
        }
        assert!(!matches!(*g, Slot::Taken), "task result already taken");
        *g = Slot::Waiting(Box::new(Waiter::Callback(cb)));
    }

    /// Whether the result is there; if not, `waker` is woken when it is
    /// (it takes the place of an earlier waker, never of a blocked thread
    /// or a callback, which the owner of the future cannot have now).
    pub(crate) fn watch(&self, waker: &Waker) -> bool {
        let mut g = lock(&self.slot);
        match &mut *g {
            Slot::Ready(_) | Slot::Taken => true,
            Slot::Waiting(w) => {
                if let Waiter::Waker(old) = &mut **w {
                    if !old.will_wake(waker) {
                        *old = waker.clone();
                    }
                }
                false
            }
            Slot::Empty => {
                *g = Slot::Waiting(Box::new(Waiter::Waker(waker.clone())));
                false
            }
        }
    }
}
