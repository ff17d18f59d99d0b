//! `TaskFuture`, the handle of one task's result, and `TaskHandle`, its
//! result-less twin.

use super::cell::Outcome;
use super::{blocking, Job, TaskId, TaskRef, TaskStatus};
use crate::error::{TaskError, TaskErrorKind};
use crate::sync::SPIN_POLLS;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The result of one task, to block on, poll, `.await` on any runtime, or
/// hand to a callback.
///
/// It resolves exactly once, to the task's value or a [`TaskError`], also
/// when a worker dies, a callback panics or the system shuts down.
///
/// It has one reader: [`wait`](Self::wait), `.await` and
/// [`on_complete`](Self::on_complete) consume it. For many (several
/// threads, clones to await, several callbacks), turn it into a
/// [`SharedFuture`](crate::SharedFuture) with [`shared`](Self::shared).
///
/// Dropping a `TaskFuture` detaches the task: it still runs (with its
/// retries) and its result is discarded. Use [`cancel`](Self::cancel) to
/// stop it.
#[must_use = "dropping a TaskFuture detaches the task; its result is lost"]
pub struct TaskFuture<T> {
    pub(super) task: Arc<dyn TaskRef<T>>,
}

impl<T: Send + 'static> TaskFuture<T> {
    pub(crate) fn new(task: Arc<dyn TaskRef<T>>) -> Self {
        TaskFuture { task }
    }

    /// Blocks until the task resolves.
    ///
    /// Called from a thread task, the pool starts a thread to stand in
    /// for the waiting one while the wait lasts, so that a task waiting on
    /// tasks it submitted never deadlocks a full pool. Called from an async
    /// task (which should `.await` instead), the async runtime does the
    /// same for its thread.
    pub fn wait(self) -> Result<T, TaskError> {
        let decided = spin_until(|| self.task.is_resolved());
        wait_blocking(decided, || unboxed(self.task.completion().wait()))
    }

    /// Blocks until the task resolves or `timeout` passes; on timeout the
    /// future is handed back, still valid.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Result<T, TaskError>, TaskFuture<T>> {
        self.wait_deadline(Instant::now() + timeout)
    }

    /// Blocks until the task resolves or `deadline` passes; on timeout the
    /// future is handed back, still valid.
    pub fn wait_deadline(self, deadline: Instant) -> Result<Result<T, TaskError>, TaskFuture<T>> {
        let decided = self.task.is_resolved();
        match wait_blocking(decided, || self.task.completion().wait_deadline(deadline)) {
            Some(r) => Ok(unboxed(r)),
            None => Err(self),
        }
    }

    /// The result if the task has resolved; otherwise the future back.
    pub fn try_get(self) -> Result<Result<T, TaskError>, TaskFuture<T>> {
        if self.task.is_resolved() {
            // Decided: the result is being stored right now.
            return Ok(unboxed(self.task.completion().wait()));
        }
        match self.task.completion().try_take() {
            Some(r) => Ok(unboxed(r)),
            None => Err(self),
        }
    }

    /// A cloneable handle that can cancel the task or read its status
    /// while this future is waited on elsewhere (tokio's `AbortHandle`).
    pub fn cancel_handle(&self) -> TaskHandle {
        let job: Arc<dyn Job> = self.task.clone();
        TaskHandle { job }
    }

    /// Hands the result to `callback`, run on the system's callback
    /// executor (also when the task has already resolved). Returns a handle
    /// that can still cancel the task or read its status.
    pub fn on_complete<F>(self, callback: F) -> TaskHandle
    where
        F: FnOnce(Result<T, TaskError>) + Send + 'static,
    {
        let sched = self.task.header().sched().clone();
        self.on_resolved_inline(move |r| sched.dispatch(Box::new(move || callback(r))))
    }

    /// Hands the result to `f` on the thread that resolves the task (or on
    /// the calling thread, if it has resolved), skipping the callback
    /// executor: for language bindings that store the result and wake
    /// their own waiters. `f` must be short and must never block (it runs
    /// on the scheduler's and the executors' own threads); user callbacks
    /// belong in [`on_complete`](Self::on_complete).
    #[doc(hidden)]
    pub fn on_resolved<F>(self, f: F) -> TaskHandle
    where
        F: FnOnce(Result<T, TaskError>) + Send + 'static,
    {
        self.on_resolved_inline(f)
    }

    /// Hands the result to `f` on the thread that resolves the task (or on
    /// the calling thread, if it has resolved): for the crate's own
    /// short, non-blocking hand-offs only, never for user code.
    pub(crate) fn on_resolved_inline<F>(self, f: F) -> TaskHandle
    where
        F: FnOnce(Result<T, TaskError>) + Send + 'static,
    {
        let job: Arc<dyn Job> = self.task.clone();
        self.task
            .completion()
            .on_complete(Box::new(move |r| f(unboxed(r))));
        TaskHandle { job }
    }
}

impl<T: 'static> TaskFuture<T> {
    /// The task, as the scheduler sees it.
    pub(crate) fn job(&self) -> Arc<dyn Job> {
        self.task.clone()
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.task.header().id
    }

    /// Where the task stands.
    pub fn status(&self) -> TaskStatus {
        self.task.header().status()
    }

    /// Whether the task has resolved.
    pub fn is_done(&self) -> bool {
        self.task.is_resolved()
    }

    /// Cancels the task: it resolves [`TaskError::Cancelled`] now unless it
    /// already resolved otherwise (then this returns `false`; a task
    /// already cancelled returns `true` again). A queued task never
    /// starts; a running async task is dropped; a running thread task sees
    /// [`TaskContext::is_cancelled`](crate::TaskContext::is_cancelled).
    pub fn cancel(&self) -> bool {
        self.task.fail(TaskError::Cancelled)
            || self.status() == TaskStatus::Failed(TaskErrorKind::Cancelled)
    }
}

impl<T: Send + 'static> Future for TaskFuture<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.task.completion().poll_take(cx.waker()) {
            Some(r) => Poll::Ready(unboxed(r)),
            None => Poll::Pending,
        }
    }
}

/// Polls `decided` for a short while before a blocking wait parks: a
/// result that arrives within a few microseconds then costs no sleep and
/// wake-up on either side. Returns its last answer.
pub(crate) fn spin_until(mut decided: impl FnMut() -> bool) -> bool {
    for i in 0..SPIN_POLLS {
        if decided() {
            return true;
        }
        if i % 4 == 3 {
            std::thread::yield_now();
        } else {
            core::hint::spin_loop();
        }
    }
    decided()
}

/// Runs `f`, a wait for a task's result, as every blocking wait runs:
/// unless the task is already `decided` (its result is being stored and
/// `f` returns in a moment), the calling pool thread is reported blocked
/// while `f` lasts, so that its pool starts a thread to stand in for it
/// (see [`blocking`]), and `f` runs [`off_runtime`].
pub(crate) fn wait_blocking<R>(decided: bool, f: impl FnOnce() -> R) -> R {
    if decided {
        return f();
    }
    let _blocked = blocking();
    off_runtime(f)
}

/// Runs the blocking wait `f` so that it cannot stall an async runtime: on
/// a worker thread of a multi-thread tokio runtime (an async task that
/// blocks on a future instead of awaiting it), the runtime hands the
/// thread's other tasks to a new thread while the wait lasts, as the thread
/// pool does for its own threads. Elsewhere `f` just runs.
pub(crate) fn off_runtime<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A result as the task's record stored it, as its reader gets it.
fn unboxed<T>(r: Outcome<T>) -> Result<T, TaskError> {
    r.map_err(|e| *e)
}

impl<T: 'static> fmt::Debug for TaskFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskFuture")
            .field("id", &self.id())
            .field("status", &self.status())
            .finish()
    }
}

/// A task whose result goes to a callback: it can still be cancelled and
/// watched. Dropping it changes nothing.
#[derive(Clone)]
pub struct TaskHandle {
    job: Arc<dyn Job>,
}

impl TaskHandle {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.job.header().id
    }

    /// Where the task stands.
    pub fn status(&self) -> TaskStatus {
        self.job.header().status()
    }

    /// Whether the task has resolved.
    pub fn is_done(&self) -> bool {
        self.job.is_resolved()
    }

    /// Cancels the task; see [`TaskFuture::cancel`].
    pub fn cancel(&self) -> bool {
        self.job.fail(TaskError::Cancelled)
            || self.status() == TaskStatus::Failed(TaskErrorKind::Cancelled)
    }
}

impl fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id())
            .field("status", &self.status())
            .finish()
    }
}
