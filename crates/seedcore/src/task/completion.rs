//! The completion state machine of one task.
//!
//! # Invariants
//!
//! * `state` moves `PENDING → COMPLETING → COMPLETE` and never back. The one
//!   caller of [`Completion::complete`] whose compare-exchange moves it out of
//!   `PENDING` is the only writer of the result: "resolves exactly once" is
//!   this single CAS, and [`Resolve`] tells every caller whether it won.
//! * The result and the waiter live under one mutex, so a waiter that
//!   registers itself either sees the result or is seen by the completer; a
//!   wake-up cannot be lost between the two.
//! * A registered callback consumes the result: the future that registered
//!   it was consumed too, so nobody else can wait for it.
//!
//! This file names its primitives only through `crate::sync`, so that the
//! model-checking tests can compile it against loom.

use crate::sync::{lock, thread, AtomicU8, Mutex, Ordering, SPIN_POLLS};
use std::task::Waker;
use std::time::Instant;

const PENDING: u8 = 0;
const COMPLETING: u8 = 1;
const COMPLETE: u8 = 2;

/// Who is waiting for the result.
enum Waiter<R> {
    None,
    Thread(thread::Thread),
    Waker(Waker),
    Callback(Box<dyn FnOnce(R) + Send>),
}

struct Inner<R> {
    result: Option<R>,
    waiter: Waiter<R>,
    taken: bool,
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
    state: AtomicU8,
    inner: Mutex<Inner<R>>,
}

impl<R> Completion<R> {
    pub(crate) fn new() -> Self {
        Completion {
            state: AtomicU8::new(PENDING),
            inner: Mutex::new(Inner {
                result: None,
                waiter: Waiter::None,
                taken: false,
            }),
        }
    }

    /// Whether a result has been decided (it may still be being stored).
    pub(crate) fn is_resolved(&self) -> bool {
        self.state.load(Ordering::Acquire) != PENDING
    }

    /// Stores `r` if nobody has yet; wakes the waiter or runs the callback.
    pub(crate) fn complete(&self, r: R) -> Resolve<R> {
        if self
            .state
            .compare_exchange(PENDING, COMPLETING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Resolve::Lost(r);
        }
        let mut g = lock(&self.inner);
        let waiter = std::mem::replace(&mut g.waiter, Waiter::None);
        if let Waiter::Callback(cb) = waiter {
            g.taken = true;
            self.state.store(COMPLETE, Ordering::Release);
            drop(g);
            cb(r);
            return Resolve::Won;
        }
        g.result = Some(r);
        self.state.store(COMPLETE, Ordering::Release);
        drop(g);
        match waiter {
            Waiter::Thread(t) => t.unpark(),
            Waiter::Waker(w) => w.wake(),
            Waiter::None | Waiter::Callback(_) => {}
        }
        Resolve::Won
    }

    /// Blocks the calling thread until the result is there and takes it.
    ///
    /// It first polls for a short while: a result that arrives within a
    /// few microseconds then costs no sleep and wake-up on either side.
    pub(crate) fn wait(&self) -> R {
        for i in 0..SPIN_POLLS {
            if self.state.load(Ordering::Acquire) == COMPLETE {
                break;
            }
            if i % 4 == 3 {
                thread::yield_now();
            } else {
                core::hint::spin_loop();
            }
        }
        loop {
            {
                let mut g = lock(&self.inner);
                if let Some(r) = g.result.take() {
                    g.taken = true;
                    return r;
                }
                assert!(!g.taken, "task result already taken");
                g.waiter = Waiter::Thread(thread::current());
            }
            thread::park();
        }
    }

    /// Like [`wait`](Self::wait), but gives up at `deadline`.
    pub(crate) fn wait_deadline(&self, deadline: Instant) -> Option<R> {
        loop {
            {
                let mut g = lock(&self.inner);
                if let Some(r) = g.result.take() {
                    g.taken = true;
                    return Some(r);
                }
                let now = Instant::now();
                if now >= deadline {
                    g.waiter = Waiter::None;
                    return None;
                }
                g.waiter = Waiter::Thread(thread::current());
            }
            thread::park_timeout(deadline.saturating_duration_since(Instant::now()));
        }
    }

    /// Takes the result if it is there, without blocking.
    pub(crate) fn try_take(&self) -> Option<R> {
        if !self.is_resolved() {
            return None;
        }
        // Decided but not yet stored: the completer is between its CAS and
        // its store, a few instructions away.
        while self.state.load(Ordering::Acquire) == COMPLETING {
            core::hint::spin_loop();
            thread::yield_now();
        }
        let mut g = lock(&self.inner);
        let r = g.result.take();
        if r.is_some() {
            g.taken = true;
        }
        r
    }

    /// The `Future::poll` half: takes the result or registers `waker`.
    pub(crate) fn poll_take(&self, waker: &Waker) -> Option<R> {
        let mut g = lock(&self.inner);
        if let Some(r) = g.result.take() {
            g.taken = true;
            return Some(r);
        }
        assert!(!g.taken, "TaskFuture polled after it returned its result");
        match &g.waiter {
            Waiter::Waker(w) if w.will_wake(waker) => {}
            _ => g.waiter = Waiter::Waker(waker.clone()),
        }
        None
    }

    /// Hands the result to `cb` once it is there (at once if it already is,
    /// on the calling thread; otherwise on the thread that completes).
    pub(crate) fn on_complete(&self, cb: Box<dyn FnOnce(R) + Send>) {
        let mut g = lock(&self.inner);
        if let Some(r) = g.result.take() {
            g.taken = true;
            drop(g);
            cb(r);
            return;
        }
        assert!(!g.taken, "task result already taken");
        g.waiter = Waiter::Callback(cb);
    }
}

impl<R> Completion<R> {
    /// Whether the result is decided; if not, `waker` is woken when it is
    /// (it takes the place of an earlier waker, never of a blocked thread
    /// or a callback, which the owner of the future cannot have now).
    pub(crate) fn watch(&self, waker: &Waker) -> bool {
        let mut g = lock(&self.inner);
        if self.is_resolved() || g.result.is_some() {
            return true;
        }
        match &g.waiter {
            Waiter::Waker(w) if w.will_wake(waker) => {}
            Waiter::None | Waiter::Waker(_) => g.waiter = Waiter::Waker(waker.clone()),
            Waiter::Thread(_) | Waiter::Callback(_) => {}
        }
        false
    }
}
