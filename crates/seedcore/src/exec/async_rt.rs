//! The async executor: an internal tokio runtime, started on first use,
//! with a priority queue in front of it.
//!
//! Up to `async.max_tasks` attempts run at once; the rest wait in the
//! priority queue, so priorities order async work exactly when there is
//! more of it than the limit allows.
//!
//! A task that finds a free slot and an empty queue is spawned at once,
//! without a trip through the queue; the others are started by whoever
//! frees a slot.
//!
//! A deadline or a cancel aborts the attempt's tokio task: the future is
//! dropped at its next await point, and its attempt guard reports the end.

use crate::error::{panic_message, TaskError};
use crate::sched::ShutdownMode;
use crate::sched::{Executor, ExecutorStats, PriorityQueue, Runnable, StopReport};
use crate::task::{Attempt, Body, ExecutorKind, Job, StopReason, TaskCell, TaskContext};
use futures_util::FutureExt;
use parking_lot::Mutex;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::runtime::{Handle, Runtime};

/// The async executor of one system.
pub(crate) struct AsyncExec {
    queue: PriorityQueue<Arc<dyn Job>>,
    running: AtomicUsize,
    limit: usize,
    threads: usize,
    name: String,
    runtime: Mutex<Option<Runtime>>,
    handle: OnceLock<Option<Handle>>,
    stopped: AtomicBool,
}

impl AsyncExec {
    pub(crate) fn new(threads: usize, limit: usize, name: String) -> Arc<Self> {
        Arc::new(AsyncExec {
            queue: PriorityQueue::new(),
            running: AtomicUsize::new(0),
            limit,
            threads,
            name,
            runtime: Mutex::new(None),
            handle: OnceLock::new(),
            stopped: AtomicBool::new(false),
        })
    }

    /// The runtime's handle, starting it on first use; `None` once stopped
    /// or if it could not start.
    fn handle(&self) -> Option<&Handle> {
        if self.stopped.load(Ordering::Acquire) {
            return None;
        }
        self.handle
            .get_or_init(|| {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(self.threads)
                    .thread_name(format!("{}-async", self.name))
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => {
                        let h = rt.handle().clone();
                        *self.runtime.lock() = Some(rt);
                        Some(h)
                    }
                    Err(e) => {
                        log::error!("seedcore: could not start the async runtime: {e}");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Takes a free slot, if there is one.
    fn take_slot(&self) -> bool {
        let mut n = self.running.load(Ordering::SeqCst);
        loop {
            if n >= self.limit {
                return false;
            }
            match self
                .running
                .compare_exchange_weak(n, n + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
    }

    /// Starts `job` in a slot already taken.
    fn start(&self, job: Arc<dyn Job>) {
        if !job.run() {
            self.running.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Starts queued attempts while there are free slots.
    fn pump(&self) {
        while !self.stopped.load(Ordering::Acquire) && !self.queue.is_empty() {
            if !self.take_slot() {
                return;
            }
            match self.queue.pop() {
                Some(job) => self.start(job),
                None => {
                    self.running.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// An attempt ended; its slot is free.
    fn slot_done(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        if !self.queue.is_empty() {
            self.pump();
        }
    }

    fn drain_jobs(&self) -> Vec<Arc<dyn Job>> {
        std::iter::from_fn(|| self.queue.pop()).collect()
    }
}

impl Executor for AsyncExec {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Async
    }

    fn accept(&self, task: Runnable) {
        let job = task.into_job();
        if self.queue.is_empty() && self.take_slot() {
            // Nothing waits ahead of it: no trip through the queue.
            self.start(job);
            return;
        }
        self.queue.push(job.header().opts.priority, job);
        self.pump();
        if self.stopped.load(Ordering::SeqCst) {
            for job in self.drain_jobs() {
                job.fail(TaskError::SystemShutdown);
            }
        }
    }

    fn drain(&self) -> Vec<Runnable> {
        self.drain_jobs().into_iter().map(Runnable::new).collect()
    }

    /// Stops the runtime; attempts still running are dropped (each resolves
    /// through its attempt guard).
    fn stop(&self, deadline: Instant, _mode: ShutdownMode) -> StopReport {
        self.stopped.store(true, Ordering::SeqCst);
        for job in self.drain_jobs() {
            job.fail(TaskError::SystemShutdown);
        }
        let Some(rt) = self.runtime.lock().take() else {
            return StopReport::default();
        };
        if Handle::try_current().is_ok() {
            // Blocking inside a runtime would panic; let it wind down alone.
            rt.shutdown_background();
        } else {
            let left = deadline.saturating_duration_since(Instant::now());
            rt.shutdown_timeout(left.max(std::time::Duration::from_millis(10)));
        }
        StopReport::default()
    }

    fn stats(&self) -> ExecutorStats {
        let mut row = ExecutorStats::new(ExecutorKind::Async);
        row.queue_depth = self.queue.depths();
        row.queued = row.queue_depth.iter().sum();
        let started = matches!(self.handle.get(), Some(Some(_)));
        row.workers = if started { self.threads } else { 0 };
        row.busy = self.running.load(Ordering::Relaxed).min(row.workers);
        row.core = self.threads;
        row.max = self.threads;
        row.target = self.threads;
        row
    }
}

/// The body of an async task: a factory, so that a retry gets a fresh
/// future.
pub(crate) struct AsyncBody<T, F, Fut> {
    factory: F,
    /// The system's async executor. Not an `Arc`: bumping one shared
    /// reference count per task costs more than the rest of a spawn.
    exec: NonNull<AsyncExec>,
    /// The running attempt's tokio task, for a deadline or a cancel.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    _out: PhantomData<fn() -> (T, Fut)>,
}

// SAFETY: `exec` is only read through `exec()`, as a shared reference to
// an `AsyncExec`, which is `Sync`; the other fields are `Send` and `Sync`
// when `F` is (the bounds of `Body` below require it).
unsafe impl<T, F: Send, Fut> Send for AsyncBody<T, F, Fut> {}
// SAFETY: as above.
unsafe impl<T, F: Sync, Fut> Sync for AsyncBody<T, F, Fut> {}

impl<T, F, Fut> AsyncBody<T, F, Fut> {
    /// A body run by `exec`, which must be the executor registered in the
    /// scheduler of the task this body goes into.
    pub(crate) fn new(exec: &Arc<AsyncExec>, factory: F) -> Self {
        AsyncBody {
            factory,
            exec: NonNull::from(&**exec),
            task: Mutex::new(None),
            _out: PhantomData,
        }
    }

    fn exec(&self) -> &AsyncExec {
        // SAFETY: the executor is registered in the task's scheduler, whose
        // table holds an `Arc` to it and never drops an entry; the task's
        // header holds an `Arc` to that scheduler for as long as the task
        // (and so this body) lives. The pointee is therefore alive here.
        unsafe { self.exec.as_ref() }
    }
}

/// Ends an async attempt however its future goes: finished, aborted by a
/// deadline or a cancel, or dropped by a runtime shutdown.
struct AttemptGuard<T, F, Fut>
where
    AsyncBody<T, F, Fut>: Body<Output = T>,
{
    cell: Arc<TaskCell<AsyncBody<T, F, Fut>>>,
    a: Attempt,
    out: Option<Result<T, TaskError>>,
}

impl<T, F, Fut> AttemptGuard<T, F, Fut>
where
    AsyncBody<T, F, Fut>: Body<Output = T>,
{
    /// The attempt's future finished with `out`; the drop reports it.
    fn finish(mut self, out: Result<T, TaskError>) {
        self.out = Some(out);
    }
}

impl<T, F, Fut> Drop for AttemptGuard<T, F, Fut>
where
    AsyncBody<T, F, Fut>: Body<Output = T>,
{
    fn drop(&mut self) {
        let out = self.out.take().unwrap_or(Err(TaskError::Cancelled));
        self.cell.end(self.a, out);
        self.cell.body().exec().slot_done();
    }
}

impl<T, F, Fut> Body for AsyncBody<T, F, Fut>
where
    T: Send + 'static,
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, TaskError>> + Send + 'static,
{
    type Output = T;

    fn start(cell: &Arc<TaskCell<Self>>, a: Attempt) -> bool {
        let mut guard = AttemptGuard {
            cell: cell.clone(),
            a,
            out: None,
        };
        let Some(rt) = cell.body().exec().handle() else {
            guard.out = Some(Err(TaskError::SystemShutdown));
            return true;
        };
        let task = rt.spawn(async move {
            // The factory runs here, inside the runtime: it may build timers
            // and I/O, and a slow one stalls no scheduler thread.
            let ctx = TaskContext::new(guard.cell.clone(), guard.a.n);
            let made = catch_unwind(AssertUnwindSafe(|| (guard.cell.body().factory)(ctx)));
            let out = match made {
                Err(p) => Err(TaskError::Panicked(panic_message(&*p))),
                Ok(fut) => match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(r) => r,
                    Err(p) => Err(TaskError::Panicked(panic_message(&*p))),
                },
            };
            guard.finish(out);
        });
        // A deadline or a cancel that came before the handle was stored.
        if cell.header.is_cancelled(a.n) {
            task.abort();
        }
        *cell.body().task.lock() = Some(task);
        true
    }

    fn stop(cell: &TaskCell<Self>, _n: u32, _why: StopReason) {
        if let Some(t) = cell.body().task.lock().take() {
            t.abort();
        }
    }
}
