//! The boundary between the scheduler and the executors: the [`Executor`]
//! trait, the [`Runnable`] tasks it is handed, and what it reports.
//!
//! An executor is the part of running a task that differs: where the
//! attempt runs and how it is stopped. Priorities, timeouts, retries,
//! locks, cancellation, callbacks and stats come from the scheduler and
//! the task core, the same for every executor.
//!
//! ```
//! use seedcore::exec::{Executor, ExecutorStats, PriorityQueue, Runnable, StopReport};
//! use seedcore::{ConcurrentSystem, ExecutorKind, ShutdownMode, TaskOptions};
//! use std::time::Instant;
//!
//! /// Runs each task on the thread that submits it: the smallest executor.
//! #[derive(Debug, Default)]
//! struct Inline(PriorityQueue<Runnable>);
//!
//! impl Executor for Inline {
//!     fn kind(&self) -> ExecutorKind {
//!         ExecutorKind::Custom("inline")
//!     }
//!     fn accept(&self, task: Runnable) {
//!         self.0.push(task.priority(), task);
//!         while let Some(t) = self.0.pop() {
//!             t.run();
//!         }
//!     }
//!     fn drain(&self) -> Vec<Runnable> {
//!         std::iter::from_fn(|| self.0.pop()).collect()
//!     }
//!     fn stop(&self, _deadline: Instant, _mode: ShutdownMode) -> StopReport {
//!         StopReport::default()
//!     }
//!     fn stats(&self) -> ExecutorStats {
//!         ExecutorStats::new(self.kind())
//!     }
//! }
//!
//! let system = ConcurrentSystem::builder().build()?;
//! let inline = system.add_executor(Inline::default())?;
//! let f = system.submit_on(&inline, TaskOptions::new(), |_| 6 * 7)?;
//! assert_eq!(f.wait()?, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::ShutdownMode;
use crate::error::TaskError;
use crate::options::Priority;
use crate::snapshot::{ExecutorStats, WorkerInfo};
use crate::task::{caught, Attempt, Body, InTask, Job, TaskCell, TaskContext};
use crate::task::{ExecutorKind, StopReason, TaskId};
use std::fmt;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

/// An executor of a [`ConcurrentSystem`](crate::ConcurrentSystem): the
/// thread pool, the async runtime, service threads and the process pool
/// implement it, and so can an application's own
/// ([`ConcurrentSystem::add_executor`](crate::ConcurrentSystem::add_executor)).
///
/// The scheduler calls it from any thread; it must not block in
/// [`accept`](Self::accept) on work of its own.
pub trait Executor: Send + Sync + 'static {
    /// Which executor this is: its row in stats, the monitor and metrics.
    fn kind(&self) -> ExecutorKind;

    /// A task is ready to run: queue it (by [`Runnable::priority`]) and
    /// call [`Runnable::run`] on a worker of this executor. A task is
    /// handed over again for each retry and after each lock wait.
    fn accept(&self, task: Runnable);

    /// Really stops attempt `attempt` of task `task`, which is running on
    /// this executor: its deadline passed or it was cancelled. The task's
    /// outcome is already decided and its
    /// [`TaskContext::is_cancelled`] is set; the executor does what only it
    /// can (replace a stuck thread, drop a future, kill a worker process).
    /// The default does nothing more: the attempt stops when its code looks
    /// at its token.
    fn stop_attempt(&self, task: TaskId, attempt: u32, why: StopReason) {
        let _ = (task, attempt, why);
    }

    /// Takes every task queued here and not started (shutdown); the
    /// scheduler resolves them.
    fn drain(&self) -> Vec<Runnable>;

    /// First step of a shutdown: no new task will come. An executor of
    /// long-lived tasks tells them to stop here.
    fn close(&self) {}

    /// Tasks that run until shutdown (services) and that a graceful
    /// shutdown must not wait for; 0 for executors of ordinary tasks.
    fn lingering(&self) -> usize {
        0
    }

    /// Stops the executor's workers: with [`ShutdownMode::Graceful`], after
    /// their current task; with [`ShutdownMode::Immediate`] at once; either
    /// way by `deadline`. Tasks still running then are resolved by the
    /// executor ([`Runnable::fail`]) and their workers counted as detached.
    fn stop(&self, deadline: Instant, mode: ShutdownMode) -> StopReport;

    /// Sizes, queue depths and busy workers, for stats and the balancer.
    /// `running` is filled in by the scheduler.
    fn stats(&self) -> ExecutorStats;

    /// Sets how many workers to keep (clamped to the executor's core and
    /// max) and returns the value set; executors of a fixed size return
    /// their size.
    fn resize(&self, target: usize) -> usize {
        let _ = target;
        self.stats().target
    }

    /// The executor's workers, for the monitor.
    fn workers(&self) -> Vec<WorkerInfo> {
        Vec::new()
    }
}

/// A task handed to an [`Executor`], ready for its next attempt.
///
/// Dropping it unrun loses nothing only if the system's shutdown resolves
/// the task; an executor should hand every `Runnable` back through
/// [`Executor::drain`] or run it.
pub struct Runnable {
    job: Arc<dyn Job>,
}

impl Runnable {
    pub(crate) fn new(job: Arc<dyn Job>) -> Self {
        Runnable { job }
    }

    pub(crate) fn into_job(self) -> Arc<dyn Job> {
        self.job
    }

    pub(crate) fn job(&self) -> &Arc<dyn Job> {
        &self.job
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.job.header().id
    }

    /// The task's priority: queue by it.
    pub fn priority(&self) -> Priority {
        self.job.header().priority()
    }

    /// The task's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.job.header().opts().get_name()
    }

    /// Whether the task has resolved (for example cancelled while queued):
    /// running it then is a no-op.
    pub fn is_done(&self) -> bool {
        self.job.is_resolved()
    }

    /// Runs the task's next attempt on the calling thread: takes its locks
    /// (or parks it until they are free), runs its code, then resolves it
    /// or schedules its retry. Panics in the task are caught.
    pub fn run(self) {
        self.job.run();
    }

    /// Resolves the task with `error` unless it already resolved (an
    /// executor that cannot run it any more, for example at shutdown).
    pub fn fail(&self, error: TaskError) -> bool {
        self.job.fail(error)
    }

    /// What the built-in executor of this task needs beyond [`run`](Self::run)
    /// (the process pool's view of a process task, a GPU task's
    /// placement), if the task carries a value of type `R`.
    pub(crate) fn route<R: std::any::Any + Clone>(&self) -> Option<R> {
        let mut found = None;
        self.job
            .clone()
            .route(&mut |v| found = v.downcast_ref::<R>().cloned());
        found
    }
}

impl fmt::Debug for Runnable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runnable")
            .field("id", &self.id())
            .field("priority", &self.priority())
            .finish()
    }
}

/// What an executor's [`stop`](Executor::stop) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StopReport {
    /// Workers still running user code at the deadline, left to finish on
    /// their own (thread code cannot be stopped from outside).
    pub detached: usize,
}

impl StopReport {
    /// A report of `detached` workers left running.
    pub fn detached(detached: usize) -> Self {
        StopReport { detached }
    }
}

/// The body of a task whose code is a closure run on a worker's thread:
/// thread-pool tasks, services and custom executors' tasks.
pub(crate) struct ClosureBody<T, F> {
    f: F,
    _out: PhantomData<fn() -> T>,
}

impl<T, F> ClosureBody<T, F> {
    pub(crate) fn new(f: F) -> Self {
        ClosureBody {
            f,
            _out: PhantomData,
        }
    }
}

impl<T, F> Body for ClosureBody<T, F>
where
    T: Send + 'static,
    F: Fn(&TaskContext) -> Result<T, TaskError> + Send + Sync + 'static,
{
    type Output = T;

    fn start(cell: &Arc<TaskCell<Self>>, a: Attempt) -> bool {
        let ctx = TaskContext::new(cell.clone(), a.n);
        let out = {
            let _in_task = InTask::enter();
            caught(catch_unwind(AssertUnwindSafe(|| (cell.body().f)(&ctx))))
        };
        drop(ctx);
        cell.end(a, out);
        false
    }
}
