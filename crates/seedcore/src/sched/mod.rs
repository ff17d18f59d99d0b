//! The scheduler core, shared by every executor: task ids, the closed and
//! cancel-all flags, the executor table, named locks and limits, the timer
//! (deadlines, lock timeouts, back-offs), callbacks, counters, and the
//! steps of a shutdown. It implements the task core's [`Schedule`] and
//! names no executor: executors are entries of its table, reached through
//! the [`Executor`] trait.
//!
//! # Shutdown steps
//!
//! 1. `closed` is set: submissions fail with [`SubmitError::SystemClosed`].
//!    A submission racing with this re-checks `closed` after queueing
//!    (behind the queue's `SeqCst` fence) and resolves its own task
//!    [`TaskError::SystemShutdown`] if it lost, so no accepted task is left
//!    behind in a queue nobody drains.
//! 2. Every executor is closed ([`Executor::close`]: services see their
//!    token set).
//! 3. Graceful: wait until every accepted task has resolved (but the
//!    caller's own task and lingering services), up to the shutdown
//!    timeout. Immediate (or out of time): queued work is drained from
//!    every executor and the lock table and resolves `Cancelled`;
//!    `cancel_all` is set (running attempts see their token, no retry is
//!    scheduled), pending back-offs fire (and resolve), and what they put
//!    back is drained again.
//! 4. Every executor stops, in the order of the table
//!    ([`Executor::stop`]); what slipped into a queue meanwhile is drained.
//! 5. The timer stops, then the callback thread (the last results'
//!    callbacks still run).

mod background;
pub(crate) mod callback;
pub(crate) mod counters;
mod executor;
pub(crate) mod idle;
mod latch;
pub(crate) mod locks;
mod queue;
pub(crate) mod registry;
pub(crate) mod timer;

pub use crate::snapshot::{ExecutorStats, WorkerInfo};
pub use background::ShutdownHandle;
pub(crate) use executor::ClosureBody;
pub use executor::{Executor, Runnable, StopReport};
pub(crate) use latch::{join_by, spawn_latched, Latched};
#[cfg(feature = "remote")]
pub(crate) use latch::{Latch, LatchHold};
pub use queue::PriorityQueue;
pub(crate) use queue::RankedQueue;

use crate::error::{SubmitError, TaskError, TaskErrorKind};
use crate::options::TaskOptions;
use crate::task::StopReason;
use crate::task::{
    in_task, Acquire, Body, EnvRef, Header, Job, Schedule, TaskCell, TaskFuture, TaskId,
};
use callback::Dispatcher;
use counters::Counters;
use crossbeam_utils::CachePadded;
use locks::LockTable;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timer::Timer;

/// How long cancelled work gets to notice its token once a shutdown has
/// used its timeout, and the callback thread to run the last callbacks.
const STOP_GRACE: Duration = Duration::from_millis(100);

/// What dropping the system, or a graceful shutdown that runs out of time,
/// does with the work that is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownMode {
    /// Stop accepting tasks, finish queued and running work, then stop.
    #[default]
    Graceful,
    /// Stop accepting tasks, resolve queued work [`Cancelled`], signal
    /// running work to stop, then stop.
    ///
    /// [`Cancelled`]: crate::TaskError::Cancelled
    Immediate,
    /// Stop accepting tasks, resolve queued work [`Cancelled`] at once, let
    /// running work finish (within the timeout), then stop: Python's
    /// `shutdown(wait=True, cancel_futures=True)`. A running task's retry
    /// still runs; a process task is not killed.
    ///
    /// [`Cancelled`]: crate::TaskError::Cancelled
    CancelQueued,
}

/// What a shutdown did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The mode that was asked for.
    pub mode: ShutdownMode,
    /// Whether a graceful shutdown ran out of time and cancelled the rest.
    pub timed_out: bool,
    /// Tasks resolved `Cancelled` by the shutdown.
    pub cancelled: usize,
    /// Threads still running user code at the deadline, left to finish on
    /// their own (thread code cannot be stopped from outside).
    pub detached_threads: usize,
    /// How long the shutdown took.
    pub took: Duration,
}

/// The scheduler of one system.
///
/// Aligned to two cache lines so that the `Arc`'s reference counts, bumped
/// by every submission, do not share a line with the fields the workers
/// read for every task.
#[repr(align(128))]
pub(crate) struct Scheduler {
    pub(crate) stats: Arc<Counters>,
    pub(crate) locks: LockTable,
    pub(crate) timer: Arc<Timer>,
    pub(crate) callbacks: Dispatcher,
    closed: AtomicBool,
    /// Set by an immediate shutdown: every attempt is cancelled and no
    /// retry is scheduled.
    cancel_all: AtomicBool,
    /// Set by an immediate shutdown asked for while a graceful one waits:
    /// the waiting one stops waiting and stops the work instead.
    escalate: AtomicBool,
    /// The executors, by slot and by kind.
    pub(crate) registry: registry::Registry,
    /// Written by every submission: kept on a line of its own.
    next_id: CachePadded<AtomicU64>,
    shutdown_done: Mutex<Option<ShutdownReport>>,
}

impl Scheduler {
    pub(crate) fn new(stats: Arc<Counters>, timer: Arc<Timer>, callbacks: Dispatcher) -> Self {
        Scheduler {
            stats,
            locks: LockTable::new(),
            timer,
            callbacks,
            closed: AtomicBool::new(false),
            cancel_all: AtomicBool::new(false),
            escalate: AtomicBool::new(false),
            registry: registry::Registry::new(),
            next_id: CachePadded::new(AtomicU64::new(1)),
            shutdown_done: Mutex::new(None),
        }
    }

    /// Adds `e` to the table; its slot, which its tasks carry.
    pub(crate) fn register<E: Executor>(&self, e: Arc<E>) -> Result<u8, SubmitError> {
        self.registry.add(e, || self.check_open())
    }

    /// The registered executors with their slots, in registration order.
    pub(crate) fn executors(&self) -> impl Iterator<Item = (u8, &Arc<dyn Executor>)> {
        self.registry.iter()
    }

    fn executor(&self, slot: u8) -> &Arc<dyn Executor> {
        self.registry.get(slot)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Fails at once when the system no longer accepts tasks.
    pub(crate) fn check_open(&self) -> Result<(), SubmitError> {
        if self.is_closed() {
            return Err(SubmitError::SystemClosed);
        }
        Ok(())
    }

    /// Creates the record of an accepted task for the executor in `slot`
    /// (the options were validated and the task admitted).
    pub(crate) fn create<B: Body>(
        &self,
        env: &EnvRef,
        opts: TaskOptions,
        slot: u8,
        body: B,
    ) -> Result<Arc<TaskCell<B>>, SubmitError> {
        if !opts.locks().is_empty() {
            self.locks
                .check(opts.locks())
                .map_err(SubmitError::InvalidOptions)?;
        }
        let id = TaskId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let header = Header::new(id, opts, env, slot);
        self.stats.submitted();
        Ok(Arc::new(TaskCell::new(header, body)))
    }

    /// Queues a fresh task, then closes the race with a concurrent
    /// shutdown (step 1).
    pub(crate) fn enqueue<B: Body>(&self, cell: Arc<TaskCell<B>>) -> TaskFuture<B::Output> {
        Schedule::enqueue(self, cell.clone());
        if self.closed.load(Ordering::SeqCst) {
            cell.resolve(Err(TaskError::SystemShutdown));
        }
        TaskFuture::new(cell)
    }

    /// A snapshot of the counters with one row per executor.
    pub(crate) fn snapshot(&self) -> crate::Stats {
        let mut st = self.stats.snapshot();
        st.executors = self
            .executors()
            .map(|(slot, e)| {
                let mut row = e.stats();
                row.running = self.stats.running(slot);
                row
            })
            .collect();
        st
    }

    /// Runs the shutdown steps (module docs); `mode` and `timeout` as
    /// configured or asked. Calling it again returns the first report.
    pub(crate) fn shutdown(&self, mode: ShutdownMode, timeout: Duration) -> ShutdownReport {
        if self.closed.swap(true, Ordering::SeqCst) {
            // Someone else is shutting down: an immediate shutdown turns a
            // graceful one under way into an immediate one (a second Ctrl-C);
            // either way, wait for its report.
            if mode == ShutdownMode::Immediate {
                self.escalate.store(true, Ordering::SeqCst);
            }
            loop {
                if let Some(r) = self.shutdown_done.lock().clone() {
                    return r;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let start = Instant::now();
        let deadline = start + timeout;
        let cancelled_before = self.stats.snapshot().cancelled;
        // Step 2.
        for (_, e) in self.executors() {
            e.close();
        }
        // Step 3. A shutdown from inside a task: that task stays pending
        // until this returns.
        let own = u64::from(in_task());
        let mut timed_out = false;
        if mode == ShutdownMode::CancelQueued {
            self.cancel_queued();
        }
        if mode != ShutdownMode::Immediate {
            let mut nap = Duration::from_micros(50);
            loop {
                let lingering: usize = self.executors().map(|(_, e)| e.lingering()).sum();
                if self.stats.pending() <= own + lingering as u64 {
                    break;
                }
                if Instant::now() >= deadline || self.escalate.load(Ordering::SeqCst) {
                    timed_out = true;
                    break;
                }
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(5));
            }
        }
        let mut stop_by = deadline;
        if mode == ShutdownMode::Immediate || timed_out {
            // Queued work first, so that no worker freed by the
            // cancellation below picks it up; then the running work and the
            // retries; then whatever those put back meanwhile.
            self.cancel_queued();
            self.cancel_all.store(true, Ordering::SeqCst);
            self.timer.fire_backoffs();
            self.cancel_queued();
            // Running tasks get a moment to see their token, even when the
            // graceful part used the whole timeout.
            stop_by = deadline.max(Instant::now() + STOP_GRACE);
        }
        // Step 4.
        let stop_mode = if mode == ShutdownMode::Immediate || timed_out {
            ShutdownMode::Immediate
        } else {
            ShutdownMode::Graceful
        };
        let mut detached = 0;
        for (_, e) in self.executors() {
            detached += e.stop(stop_by, stop_mode).detached;
            for r in e.drain() {
                r.fail(TaskError::Cancelled);
            }
        }
        // Step 5.
        self.timer.stop();
        if !self
            .callbacks
            .stop(stop_by.max(Instant::now() + STOP_GRACE))
        {
            detached += 1;
        }
        let cancelled = (self.stats.snapshot().cancelled - cancelled_before) as usize;
        let report = ShutdownReport {
            mode,
            timed_out,
            cancelled,
            detached_threads: detached,
            took: start.elapsed(),
        };
        *self.shutdown_done.lock() = Some(report.clone());
        report
    }

    fn cancel_queued(&self) {
        let queued: Vec<Arc<dyn Job>> = self
            .executors()
            .flat_map(|(_, e)| e.drain())
            .map(Runnable::into_job)
            .chain(self.locks.drain_waiters())
            .collect();
        for job in queued {
            job.fail(TaskError::Cancelled);
        }
    }
}

impl Schedule for Scheduler {
    fn is_cancelling(&self) -> bool {
        self.cancel_all.load(Ordering::Acquire)
    }

    fn attempt_started(&self, h: &Header, waited: Option<Duration>) {
        self.stats.attempt_started(h.exec(), h.priority(), waited);
    }

    fn attempt_ended(&self, h: &Header, ran: Duration) {
        self.stats.attempt_ended(h.exec(), h.priority(), ran);
    }

    fn attempt_reverted(&self, h: &Header) {
        self.stats.attempt_undone(h.exec());
    }

    fn retried(&self, _h: &Header) {
        self.stats.retried();
    }

    fn resolved(&self, _h: &Header, outcome: Result<(), TaskErrorKind>) {
        self.stats.resolved(outcome);
    }

    fn acquire(&self, job: &Arc<dyn Job>) -> Acquire {
        self.locks.acquire(job)
    }

    fn release(&self, h: &Header) {
        self.locks.release(h.opts().locks());
    }

    fn forget_waiter(&self, h: &Header) {
        self.locks.forget(h);
    }

    fn schedule_at(&self, at: Instant, backoff: bool, action: Box<dyn FnOnce() + Send>) {
        if backoff {
            self.timer.schedule_backoff(at, action);
        } else {
            self.timer.schedule(at, action);
        }
    }

    fn enqueue(&self, job: Arc<dyn Job>) {
        self.executor(job.header().exec())
            .accept(Runnable::new(job));
    }

    fn stop_attempt(&self, exec: u8, id: TaskId, n: u32, why: StopReason) {
        self.executor(exec).stop_attempt(id, n, why);
    }

    fn dispatch(&self, callback: Box<dyn FnOnce() + Send>) {
        self.callbacks.dispatch(callback);
    }

    fn kind_of(&self, exec: u8) -> crate::task::ExecutorKind {
        self.executor(exec).kind()
    }
}
