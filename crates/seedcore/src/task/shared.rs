//! `SharedFuture`, a cloneable view of one task's result for any number of
//! waiters, awaiters and callbacks.
//!
//! The task's own completion has one reader: [`TaskFuture::shared`] takes
//! it, through the inline hand-off, and keeps the result here, where every
//! clone reads a copy of it.

use super::{SchedRef, TaskFuture, TaskHandle, TaskId, TaskStatus};
use crate::error::TaskError;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

type Callback<T> = Box<dyn FnOnce(Result<T, TaskError>) + Send>;

/// The result, once it is there, and who waits for it until then.
struct State<T> {
    result: Option<Result<T, TaskError>>,
    /// One waker per clone that polled (or was watched), keyed by the
    /// clone's key, so that a task polling again replaces its own waker.
    wakers: HashMap<u64, Waker>,
    /// Callbacks attached before the result came, in attach order.
    callbacks: Vec<Callback<T>>,
}

/// What every clone shares.
struct Shared<T> {
    // The result lives under the lock, so that `T` need only be `Send`:
    // a reader copies it there.
    state: Mutex<State<T>>,
    resolved: Condvar,
    next_key: AtomicU64,
    sched: SchedRef,
}

/// A copy for one reader.
fn copy<T: Clone>(r: &Result<T, TaskError>) -> Result<T, TaskError> {
    match r {
        Ok(v) => Ok(v.clone()),
        Err(e) => Err(e.duplicate()),
    }
}

/// Makes `waker` the one of the clone keyed `key`; returns the waker it
/// replaces, to be dropped once the lock is released.
fn register<T>(st: &mut State<T>, key: u64, waker: &Waker) -> Option<Waker> {
    match st.wakers.get(&key) {
        Some(old) if old.will_wake(waker) => None,
        _ => st.wakers.insert(key, waker.clone()),
    }
}

impl<T: Clone + Send + 'static> Shared<T> {
    /// A copy of the result, if it is there.
    fn get(&self) -> Option<Result<T, TaskError>> {
        self.state.lock().result.as_ref().map(copy)
    }

    /// Stores the result and releases every waiter. Runs on the thread that
    /// resolves the task, so it runs no user code: callbacks (and the
    /// copies of the value they get) go through the callback executor.
    fn resolve(self: &Arc<Self>, r: Result<T, TaskError>) {
        let (wakers, callbacks) = {
            let mut st = self.state.lock();
            st.result = Some(r);
            self.resolved.notify_all();
            (
                std::mem::take(&mut st.wakers),
                std::mem::take(&mut st.callbacks),
            )
        };
        for (_, waker) in wakers {
            waker.wake();
        }
        for cb in callbacks {
            self.dispatch(cb);
        }
    }

    /// Runs `cb` with a copy of the (stored) result on the callback executor.
    fn dispatch(self: &Arc<Self>, cb: Callback<T>) {
        let me = self.clone();
        self.sched.dispatch(Box::new(move || {
            if let Some(r) = me.get() {
                cb(r);
            }
        }));
    }

    /// Blocks until the result is stored or `deadline` passes.
    fn block(&self, deadline: Option<Instant>) -> Option<Result<T, TaskError>> {
        let mut st = self.state.lock();
        while st.result.is_none() {
            match deadline {
                None => self.resolved.wait(&mut st),
                Some(d) => {
                    if self.resolved.wait_until(&mut st, d).timed_out() {
                        break;
                    }
                }
            }
        }
        st.result.as_ref().map(copy)
    }
}

/// The result of one task for many readers: clone it freely; every clone
/// can block on it, `.await` it, or attach any number of callbacks, and
/// every one sees the same outcome (concurrent.futures' `Future`,
/// `futures::future::Shared`).
///
/// Made by [`TaskFuture::shared`]. Each reader gets its own copy of the
/// value (`T: Clone`) or of the error; a task's own error
/// ([`TaskError::Failed`]) is copied as its message. Dropping every clone
/// detaches the task: it still runs, and its result is discarded once the
/// callbacks attached so far have had it.
///
/// ```
/// use seedcore::{ConcurrentSystem, TaskOptions};
/// use std::sync::mpsc;
///
/// let system = ConcurrentSystem::builder().core_threads(2).build()?;
/// let answer = system.submit_thread(TaskOptions::new(), |_| 6 * 7)?.shared();
///
/// // Several callbacks, each with its own copy of the value.
/// let (tx, rx) = mpsc::channel();
/// for name in ["log", "metrics"] {
///     let tx = tx.clone();
///     answer.on_complete(move |r| tx.send((name, r.unwrap())).unwrap());
/// }
///
/// // Several threads waiting on clones.
/// let waiters: Vec<_> = (0..3)
///     .map(|_| {
///         let f = answer.clone();
///         std::thread::spawn(move || f.wait())
///     })
///     .collect();
/// for w in waiters {
///     assert_eq!(w.join().unwrap()?, 42);
/// }
/// assert_eq!(answer.try_get().unwrap()?, 42);
/// let mut got: Vec<_> = rx.iter().take(2).collect();
/// got.sort();
/// assert_eq!(got, [("log", 42), ("metrics", 42)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping every SharedFuture detaches the task; its result is lost"]
pub struct SharedFuture<T> {
    shared: Arc<Shared<T>>,
    handle: TaskHandle,
    /// This clone's slot among the wakers.
    key: u64,
}

impl<T: Clone + Send + 'static> TaskFuture<T> {
    /// Turns this future, which has one reader, into a [`SharedFuture`]
    /// that any number of clones, threads, awaiters and callbacks can read.
    pub fn shared(self) -> SharedFuture<T> {
        let sched = Arc::clone(self.job().header().sched());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                result: None,
                wakers: HashMap::new(),
                callbacks: Vec::new(),
            }),
            resolved: Condvar::new(),
            next_key: AtomicU64::new(1),
            sched,
        });
        let to = shared.clone();
        let handle = self.on_resolved_inline(move |r| to.resolve(r));
        SharedFuture {
            shared,
            handle,
            key: 0,
        }
    }
}

impl<T: Clone + Send + 'static> SharedFuture<T> {
    /// Blocks until the task resolves; returns a copy of its result.
    ///
    /// Called from a thread task, the pool starts a thread to stand in for
    /// the waiting one while the wait lasts (see [`TaskFuture::wait`]).
    pub fn wait(&self) -> Result<T, TaskError> {
        self.wait_until(None)
            .expect("an untimed wait returns with the result")
    }

    /// Blocks until the task resolves or `timeout` passes; `None` on
    /// timeout (the future stays valid).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<T, TaskError>> {
        self.wait_deadline(Instant::now() + timeout)
    }

    /// Blocks until the task resolves or `deadline` passes; `None` on
    /// timeout (the future stays valid).
    pub fn wait_deadline(&self, deadline: Instant) -> Option<Result<T, TaskError>> {
        self.wait_until(Some(deadline))
    }

    /// Blocks until the task resolves or `deadline`, if any, passes.
    fn wait_until(&self, deadline: Option<Instant>) -> Option<Result<T, TaskError>> {
        if let Some(r) = self.shared.get() {
            return Some(r);
        }
        // A task already decided hands its result over in a moment.
        super::wait_blocking(self.handle.is_done(), || self.shared.block(deadline))
    }

    /// A copy of the result if the task has resolved.
    pub fn try_get(&self) -> Option<Result<T, TaskError>> {
        if let Some(r) = self.shared.get() {
            return Some(r);
        }
        if self.handle.is_done() {
            // Decided: the result is being handed over right now.
            return self.shared.block(None);
        }
        None
    }

    /// Hands a copy of the result to `callback`, run on the system's
    /// callback executor, once the task resolves (at once if it has).
    /// Attach as many as you like; each runs once.
    pub fn on_complete<F>(&self, callback: F)
    where
        F: FnOnce(Result<T, TaskError>) + Send + 'static,
    {
        let cb: Callback<T> = Box::new(callback);
        {
            let mut st = self.shared.state.lock();
            if st.result.is_none() {
                st.callbacks.push(cb);
                return;
            }
        }
        self.shared.dispatch(cb);
    }

    /// Whether the result is there; if not, `waker` is woken when it is
    /// (in place of this clone's earlier waker).
    pub(crate) fn watch(&self, waker: &Waker) -> bool {
        let mut st = self.shared.state.lock();
        if st.result.is_some() {
            return true;
        }
        let replaced = register(&mut st, self.key, waker);
        // A waker's drop may drop a clone, which takes this lock.
        drop(st);
        drop(replaced);
        false
    }
}

impl<T> SharedFuture<T> {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.handle.id()
    }

    /// Where the task stands.
    pub fn status(&self) -> TaskStatus {
        self.handle.status()
    }

    /// Whether the task has resolved.
    pub fn is_done(&self) -> bool {
        self.handle.is_done()
    }

    /// Cancels the task, for every clone; see [`TaskFuture::cancel`].
    pub fn cancel(&self) -> bool {
        self.handle.cancel()
    }

    /// A handle that can cancel the task or read its status.
    pub fn cancel_handle(&self) -> TaskHandle {
        self.handle.clone()
    }
}

impl<T> Clone for SharedFuture<T> {
    fn clone(&self) -> Self {
        SharedFuture {
            shared: self.shared.clone(),
            handle: self.handle.clone(),
            key: self.shared.next_key.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl<T> Drop for SharedFuture<T> {
    fn drop(&mut self) {
        // A clone dropped while pending takes its waker, if any, along
        // (dropped outside the lock: a waker's drop may drop a clone).
        let waker = self.shared.state.lock().wakers.remove(&self.key);
        drop(waker);
    }
}

impl<T: Clone + Send + 'static> Future for SharedFuture<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.shared.state.lock();
        if let Some(r) = &st.result {
            return Poll::Ready(copy(r));
        }
        let replaced = register(&mut st, self.key, cx.waker());
        drop(st);
        drop(replaced);
        Poll::Pending
    }
}

impl<T> fmt::Debug for SharedFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedFuture")
            .field("id", &self.id())
            .field("status", &self.status())
            .finish()
    }
}
