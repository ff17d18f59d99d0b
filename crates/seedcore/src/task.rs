//! The task record shared by every executor, and its attempt state machine.
//!
//! # The attempt word
//!
//! `Header::phase` packs `(attempt << 8) | phase`. Attempts count from 1.
//! The transitions, each a compare-exchange so that exactly one party acts:
//!
//! ```text
//! QUEUED ──begin──▶ RUNNING(n) ──end(n)──▶ ENDED(n) ──retry──▶ BACKOFF(n) ──▶ QUEUED
//!   │  ▲                                      │
//!   ▼  │ (lock released, tried again)         └── final: the task resolves
//! WAITING_LOCK ──lock timeout──▶ ENDED
//! ```
//!
//! `end(n)` is raced by the code that ran attempt `n` (its result) and the
//! timer (its deadline); whoever wins decides between a retry and the
//! final result, and the loser drops what it has.
//!
//! # Resolution
//!
//! `Header::outcome` goes from 0 to the outcome code once, by
//! compare-exchange; only the winner stores the result, counts it in the
//! stats and wakes the waiter. Cancellation, deadlines, lock timeouts and
//! shutdown all resolve through [`TaskCell::resolve`], so a task can be
//! resolved by any of them but only once.

use crate::completion::Completion;
use crate::context::TaskContext;
use crate::error::{panic_message, TaskError, TaskErrorKind};
use crate::locks::Acquire;
use crate::options::TaskOptions;
use crate::stats::Lane;
use crate::system::Shared;
use crate::thread_pool::WorkerSlot;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use parking_lot::Mutex;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The identifier of a task, unique within its system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub(crate) u64);

impl TaskId {
    /// The number behind the id.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

const QUEUED: u64 = 0;
const WAITING_LOCK: u64 = 1;
const RUNNING: u64 = 2;
const BACKOFF: u64 = 3;
const ENDED: u64 = 4;

fn word(attempt: u32, phase: u64) -> u64 {
    ((attempt as u64) << 8) | phase
}

fn split(w: u64) -> (u32, u64) {
    ((w >> 8) as u32, w & 0xff)
}

const OUTCOME_PENDING: u8 = 0;
const OUTCOME_OK: u8 = 1;

fn outcome_code(o: Result<(), TaskErrorKind>) -> u8 {
    match o {
        Ok(()) => OUTCOME_OK,
        Err(TaskErrorKind::Panicked) => 2,
        Err(TaskErrorKind::Failed) => 3,
        Err(TaskErrorKind::TimedOut) => 4,
        Err(TaskErrorKind::Cancelled) => 5,
        Err(TaskErrorKind::LockTimeout) => 6,
        Err(TaskErrorKind::SystemShutdown) => 7,
        Err(TaskErrorKind::WorkerDied) => 8,
        Err(TaskErrorKind::MemoryLimit) => 9,
    }
}

/// Where a task stands, from [`TaskFuture::status`](crate::TaskFuture::status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskStatus {
    /// Waiting in a queue for a worker.
    Queued,
    /// Waiting for a named lock or limit.
    WaitingForLock,
    /// An attempt is running.
    Running,
    /// An attempt failed and the next one waits for its back-off.
    RetryPending,
    /// Resolved with a value.
    Succeeded,
    /// Resolved with an error of this kind.
    Failed(TaskErrorKind),
}

impl TaskStatus {
    /// Whether the task is resolved.
    pub fn is_done(self) -> bool {
        matches!(self, TaskStatus::Succeeded | TaskStatus::Failed(_))
    }
}

/// What every executor knows about a task.
pub(crate) struct Header {
    pub(crate) id: TaskId,
    pub(crate) opts: TaskOptions,
    pub(crate) shared: Arc<Shared>,
    pub(crate) lane: Lane,
    phase: AtomicU64,
    outcome: AtomicU8,
    /// Attempts up to this number are cancelled (`u32::MAX`: all of them).
    cancel_epoch: AtomicU32,
    submitted_at: Instant,
    /// The pool thread running the current attempt, for tasks with a
    /// timeout (so that a stuck thread can be replaced).
    running_on: Mutex<Option<Arc<WorkerSlot>>>,
    /// When the current attempt started waiting for its locks.
    lock_wait: Mutex<Option<Instant>>,
}

impl Header {
    pub(crate) fn new(id: TaskId, opts: TaskOptions, shared: Arc<Shared>, lane: Lane) -> Self {
        Header {
            id,
            opts,
            shared,
            lane,
            phase: AtomicU64::new(word(0, QUEUED)),
            outcome: AtomicU8::new(OUTCOME_PENDING),
            cancel_epoch: AtomicU32::new(0),
            submitted_at: Instant::now(),
            running_on: Mutex::new(None),
            lock_wait: Mutex::new(None),
        }
    }

    pub(crate) fn is_resolved(&self) -> bool {
        self.outcome.load(Ordering::Acquire) != OUTCOME_PENDING
    }

    pub(crate) fn is_cancelled(&self, attempt: u32) -> bool {
        self.cancel_epoch.load(Ordering::Acquire) >= attempt
            || self.shared.cancel_all.load(Ordering::Acquire)
    }

    pub(crate) fn cancel_through(&self, attempt: u32) {
        self.cancel_epoch.fetch_max(attempt, Ordering::AcqRel);
    }

    /// Sets the cancellation token of every attempt, present and future.
    pub(crate) fn cancel_all_attempts(&self) {
        self.cancel_through(u32::MAX);
    }

    /// QUEUED or WAITING_LOCK → RUNNING(n + 1); `None` if the task ended.
    fn begin_attempt(&self) -> Option<u32> {
        let mut cur = self.phase.load(Ordering::Acquire);
        loop {
            let (n, ph) = split(cur);
            if ph != QUEUED && ph != WAITING_LOCK {
                return None;
            }
            match self.phase.compare_exchange_weak(
                cur,
                word(n + 1, RUNNING),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if ph == WAITING_LOCK {
                        *self.lock_wait.lock() = None;
                    }
                    return Some(n + 1);
                }
                Err(w) => cur = w,
            }
        }
    }

    /// RUNNING(n) → ENDED(n): whoever wins decides what follows attempt `n`.
    fn try_end_attempt(&self, n: u32) -> bool {
        self.phase
            .compare_exchange(
                word(n, RUNNING),
                word(n, ENDED),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Enters WAITING_LOCK; returns the attempt word to time out on, when
    /// this is the first wait of the attempt.
    fn enter_lock_wait(&self) -> Option<u64> {
        let mut cur = self.phase.load(Ordering::Acquire);
        loop {
            let (n, ph) = split(cur);
            if ph != QUEUED && ph != WAITING_LOCK {
                return None;
            }
            let next = word(n, WAITING_LOCK);
            match self
                .phase
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    let mut since = self.lock_wait.lock();
                    return if since.is_none() {
                        *since = Some(Instant::now());
                        Some(next)
                    } else {
                        None
                    };
                }
                Err(w) => cur = w,
            }
        }
    }

    pub(crate) fn status(&self) -> TaskStatus {
        match self.outcome.load(Ordering::Acquire) {
            OUTCOME_PENDING => match split(self.phase.load(Ordering::Acquire)).1 {
                QUEUED => TaskStatus::Queued,
                WAITING_LOCK => TaskStatus::WaitingForLock,
                RUNNING => TaskStatus::Running,
                // ENDED while unresolved: the next step is being decided.
                _ => TaskStatus::RetryPending,
            },
            OUTCOME_OK => TaskStatus::Succeeded,
            2 => TaskStatus::Failed(TaskErrorKind::Panicked),
            3 => TaskStatus::Failed(TaskErrorKind::Failed),
            4 => TaskStatus::Failed(TaskErrorKind::TimedOut),
            5 => TaskStatus::Failed(TaskErrorKind::Cancelled),
            6 => TaskStatus::Failed(TaskErrorKind::LockTimeout),
            7 => TaskStatus::Failed(TaskErrorKind::SystemShutdown),
            8 => TaskStatus::Failed(TaskErrorKind::WorkerDied),
            _ => TaskStatus::Failed(TaskErrorKind::MemoryLimit),
        }
    }
}

/// A task as the queues, the lock table and the timer see it.
pub(crate) trait Job: Send + Sync + 'static {
    fn header(&self) -> &Header;

    /// Starts one attempt: runs it to the end on the calling pool thread,
    /// or spawns it. Returns `true` if it spawned an async attempt that
    /// will report its end to the async executor.
    fn run(self: Arc<Self>, slot: Option<&Arc<WorkerSlot>>) -> bool;

    /// Puts the task (back) on the queue of its executor.
    fn schedule(self: Arc<Self>);

    /// Resolves the task with `e` unless it is already resolved.
    fn fail(&self, e: TaskError) -> bool;

    /// The deadline of attempt `n` passed (thread tasks).
    fn deadline_passed(self: Arc<Self>, n: u32);

    /// The lock timeout of the wait recorded in `word` passed.
    fn lock_deadline(&self, word: u64, lock: Arc<str>);

    fn is_resolved(&self) -> bool {
        self.header().is_resolved()
    }
}

/// A task's typed half: what its future reads.
pub(crate) trait TaskRef<T>: Job {
    fn completion(&self) -> &Completion<Result<T, TaskError>>;
}

/// The body of a thread task (also service tasks).
pub(crate) struct ThreadBody<F>(pub(crate) F);

/// The body of an async task: a factory, so that a retry gets a fresh
/// future.
pub(crate) struct AsyncBody<F> {
    pub(crate) factory: F,
    abort: Mutex<Option<tokio::task::AbortHandle>>,
}

impl<F> AsyncBody<F> {
    pub(crate) fn new(factory: F) -> Self {
        AsyncBody {
            factory,
            abort: Mutex::new(None),
        }
    }
}

/// One allocation per task: header, result slot and body.
pub(crate) struct TaskCell<T, B> {
    pub(crate) header: Header,
    completion: Completion<Result<T, TaskError>>,
    body: B,
}

impl<T: Send + 'static, B: Send + Sync + 'static> TaskCell<T, B>
where
    TaskCell<T, B>: Job,
{
    pub(crate) fn new(header: Header, body: B) -> Self {
        TaskCell {
            header,
            completion: Completion::new(),
            body,
        }
    }

    /// The only way a task resolves.
    pub(crate) fn resolve(&self, r: Result<T, TaskError>) -> bool {
        let kind = match &r {
            Ok(_) => Ok(()),
            Err(e) => Err(e.kind()),
        };
        let h = &self.header;
        if h.outcome
            .compare_exchange(
                OUTCOME_PENDING,
                outcome_code(kind),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return false;
        }
        if kind.is_err() {
            // A still-running attempt (a timed-out thread, a cancelled
            // task) sees its token set.
            h.cancel_through(u32::MAX);
            if !h.opts.locks().is_empty()
                && split(h.phase.load(Ordering::Acquire)).1 == WAITING_LOCK
            {
                h.shared.locks.forget(self);
            }
        }
        h.shared.stats.resolved(kind);
        let won = self.completion.complete(r).won();
        debug_assert!(won, "outcome CAS decides the only completer");
        true
    }

    /// Takes the task's locks, or parks it. `false`: do not run now.
    fn take_locks(self: &Arc<Self>) -> bool {
        let h = &self.header;
        if h.opts.locks().is_empty() {
            return true;
        }
        let me: Arc<dyn Job> = self.clone();
        match h.shared.locks.acquire(&me) {
            Acquire::Taken => true,
            Acquire::Waiting(lock) => {
                if let (Some(w), Some(lt)) = (h.enter_lock_wait(), h.opts.get_lock_timeout()) {
                    let weak = Arc::downgrade(&me);
                    h.shared.timer.schedule(Instant::now() + lt, move || {
                        if let Some(j) = weak.upgrade() {
                            j.lock_deadline(w, lock);
                        }
                    });
                }
                false
            }
            Acquire::Conflict(msg) => {
                self.resolve(Err(TaskError::failed(msg)));
                false
            }
        }
    }

    /// Takes the locks and begins an attempt; `None`: nothing to run now.
    fn begin(self: &Arc<Self>) -> Option<(u32, Instant)> {
        let h = &self.header;
        if h.is_resolved() || !self.take_locks() {
            return None;
        }
        let Some(n) = h.begin_attempt() else {
            self.release_locks();
            return None;
        };
        let started = Instant::now();
        let waited = (n == 1).then(|| started.saturating_duration_since(h.submitted_at));
        h.shared
            .stats
            .attempt_started(h.lane, h.opts.priority, waited);
        Some((n, started))
    }

    fn release_locks(&self) {
        let h = &self.header;
        if !h.opts.locks().is_empty() {
            h.shared.locks.release(h.opts.locks());
        }
    }

    /// The common end of attempt `n`: stats, locks, then the result if the
    /// attempt still owns its outcome.
    fn end_attempt(self: &Arc<Self>, n: u32, started: Instant, out: Result<T, TaskError>) {
        let h = &self.header;
        h.shared
            .stats
            .attempt_ended(h.lane, h.opts.priority, started.elapsed());
        self.release_locks();
        if h.try_end_attempt(n) {
            self.settle(n, out);
        }
    }

    /// Attempt `n` ended with `out` (and this caller owns that end):
    /// resolve, or schedule the next attempt.
    fn settle(self: &Arc<Self>, n: u32, out: Result<T, TaskError>) {
        let e = match out {
            Ok(v) => {
                self.resolve(Ok(v));
                return;
            }
            Err(e) => e,
        };
        let h = &self.header;
        let retry = h.opts.get_retry();
        if !retry.should_retry(n, &e) || h.is_resolved() || h.shared.is_cancelling() {
            self.resolve(Err(e));
            return;
        }
        h.shared.stats.retried();
        h.phase.store(word(n, BACKOFF), Ordering::Release);
        let delay = retry.delay(n);
        let me: Arc<dyn Job> = self.clone();
        if delay.is_zero() {
            me.schedule();
        } else {
            // A strong reference: a detached task still runs its retries.
            h.shared
                .timer
                .schedule_backoff(Instant::now() + delay, move || me.schedule());
        }
    }

    /// Leaves BACKOFF for QUEUED; `false` if the system is cancelling (the
    /// task was then resolved `Cancelled`).
    fn requeue(&self) -> bool {
        let h = &self.header;
        if h.shared.is_cancelling() {
            self.resolve(Err(TaskError::Cancelled));
            return false;
        }
        let cur = h.phase.load(Ordering::Acquire);
        let (n, ph) = split(cur);
        if ph == BACKOFF {
            let _ =
                h.phase
                    .compare_exchange(cur, word(n, QUEUED), Ordering::AcqRel, Ordering::Acquire);
        }
        true
    }

    fn timed_out(self: Arc<Self>, n: u32) {
        let h = &self.header;
        if !h.try_end_attempt(n) {
            return;
        }
        h.cancel_through(n);
        if let Some(slot) = h.running_on.lock().take() {
            h.shared.pool.abandon(&slot);
        }
        let d = h.opts.timeout.unwrap_or_default();
        self.settle(n, Err(TaskError::TimedOut(d)));
    }

    fn lock_timed_out(&self, w: u64, lock: Arc<str>) {
        let h = &self.header;
        let (n, _) = split(w);
        if h.phase
            .compare_exchange(w, word(n, ENDED), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let waited = h.lock_wait.lock().map(|t| t.elapsed()).unwrap_or_default();
        h.shared.locks.forget(self);
        self.resolve(Err(TaskError::LockTimeout {
            lock: lock.to_string(),
            waited,
        }));
    }
}

fn caught<T>(r: std::thread::Result<Result<T, TaskError>>) -> Result<T, TaskError> {
    r.unwrap_or_else(|p| Err(TaskError::Panicked(panic_message(&*p))))
}

impl<T, F> Job for TaskCell<T, ThreadBody<F>>
where
    T: Send + 'static,
    F: Fn(&TaskContext) -> Result<T, TaskError> + Send + Sync + 'static,
{
    fn header(&self) -> &Header {
        &self.header
    }

    fn run(self: Arc<Self>, slot: Option<&Arc<WorkerSlot>>) -> bool {
        let Some((n, started)) = self.begin() else {
            return false;
        };
        let h = &self.header;
        if let Some(t) = h.opts.timeout {
            if let Some(s) = slot {
                *h.running_on.lock() = Some(s.clone());
            }
            let me: Arc<dyn Job> = self.clone();
            let weak = Arc::downgrade(&me);
            h.shared.timer.schedule(started + t, move || {
                if let Some(j) = weak.upgrade() {
                    j.deadline_passed(n);
                }
            });
        }
        let ctx = TaskContext::new(self.clone(), n);
        let out = caught(catch_unwind(AssertUnwindSafe(|| (self.body.0)(&ctx))));
        drop(ctx);
        if h.opts.timeout.is_some() {
            h.running_on.lock().take();
        }
        self.end_attempt(n, started, out);
        false
    }

    fn schedule(self: Arc<Self>) {
        if self.requeue() {
            let pool = self.header.shared.pool.clone();
            pool.push(self);
        }
    }

    fn fail(&self, e: TaskError) -> bool {
        self.resolve(Err(e))
    }

    fn deadline_passed(self: Arc<Self>, n: u32) {
        self.timed_out(n);
    }

    fn lock_deadline(&self, w: u64, lock: Arc<str>) {
        self.lock_timed_out(w, lock);
    }
}

impl<T, F> TaskRef<T> for TaskCell<T, ThreadBody<F>>
where
    T: Send + 'static,
    F: Fn(&TaskContext) -> Result<T, TaskError> + Send + Sync + 'static,
{
    fn completion(&self) -> &Completion<Result<T, TaskError>> {
        &self.completion
    }
}

/// Ends an async attempt however its future goes: finished, timed out,
/// aborted by a cancel, or dropped by a runtime shutdown.
struct AttemptGuard<T, F>
where
    T: Send + 'static,
    F: Fn(TaskContext) -> BoxFuture<'static, Result<T, TaskError>> + Send + Sync + 'static,
{
    cell: Arc<TaskCell<T, AsyncBody<F>>>,
    n: u32,
    started: Instant,
    out: Option<Result<T, TaskError>>,
}

impl<T, F> AttemptGuard<T, F>
where
    T: Send + 'static,
    F: Fn(TaskContext) -> BoxFuture<'static, Result<T, TaskError>> + Send + Sync + 'static,
{
    /// The attempt's future finished with `out`; the drop reports it.
    fn finish(mut self, out: Result<T, TaskError>) {
        self.out = Some(out);
    }
}

impl<T, F> Drop for AttemptGuard<T, F>
where
    T: Send + 'static,
    F: Fn(TaskContext) -> BoxFuture<'static, Result<T, TaskError>> + Send + Sync + 'static,
{
    fn drop(&mut self) {
        let out = self.out.take().unwrap_or(Err(TaskError::Cancelled));
        self.cell.end_attempt(self.n, self.started, out);
        self.cell.header.shared.async_exec.slot_done();
    }
}

impl<T, F> Job for TaskCell<T, AsyncBody<F>>
where
    T: Send + 'static,
    F: Fn(TaskContext) -> BoxFuture<'static, Result<T, TaskError>> + Send + Sync + 'static,
{
    fn header(&self) -> &Header {
        &self.header
    }

    fn run(self: Arc<Self>, _slot: Option<&Arc<WorkerSlot>>) -> bool {
        let Some((n, started)) = self.begin() else {
            return false;
        };
        let h = &self.header;
        let timeout = h.opts.timeout;
        let mut guard = AttemptGuard {
            cell: self.clone(),
            n,
            started,
            out: None,
        };
        let Some(rt) = h.shared.async_exec.handle() else {
            guard.out = Some(Err(TaskError::SystemShutdown));
            return true;
        };
        let task = rt.spawn(async move {
            // The factory runs here, inside the runtime: it may build timers
            // and I/O, and a slow one stalls no scheduler thread.
            let cell = guard.cell.clone();
            let ctx = TaskContext::new(cell.clone(), n);
            let fut = catch_unwind(AssertUnwindSafe(|| (cell.body.factory)(ctx)));
            let out = match fut {
                Err(p) => Err(TaskError::Panicked(panic_message(&*p))),
                Ok(fut) => {
                    let fut = AssertUnwindSafe(fut).catch_unwind().map(caught);
                    match timeout {
                        Some(d) => tokio::time::timeout(d, fut)
                            .await
                            .unwrap_or(Err(TaskError::TimedOut(d))),
                        None => fut.await,
                    }
                }
            };
            guard.finish(out);
        });
        *self.body.abort.lock() = Some(task.abort_handle());
        if self.header.is_resolved() {
            task.abort();
        }
        true
    }

    fn schedule(self: Arc<Self>) {
        if self.requeue() {
            let shared = self.header.shared.clone();
            shared.async_exec.push(self);
        }
    }

    fn fail(&self, e: TaskError) -> bool {
        let won = self.resolve(Err(e));
        if won {
            if let Some(a) = self.body.abort.lock().take() {
                a.abort();
            }
        }
        won
    }

    fn deadline_passed(self: Arc<Self>, n: u32) {
        self.timed_out(n);
    }

    fn lock_deadline(&self, w: u64, lock: Arc<str>) {
        self.lock_timed_out(w, lock);
    }
}

impl<T, F> TaskRef<T> for TaskCell<T, AsyncBody<F>>
where
    T: Send + 'static,
    F: Fn(TaskContext) -> BoxFuture<'static, Result<T, TaskError>> + Send + Sync + 'static,
{
    fn completion(&self) -> &Completion<Result<T, TaskError>> {
        &self.completion
    }
}

/// Decodes a process task's result bytes.
pub(crate) type Decode<T> = fn(&[u8], Vec<std::os::fd::OwnedFd>) -> Result<T, TaskError>;

/// The body of a process task: its registered name and its encoded
/// arguments (kept for retries), with the shared buffers they refer to.
pub(crate) struct ProcessBody<T> {
    pub(crate) task: &'static str,
    pub(crate) args: Vec<u8>,
    pub(crate) fds: Vec<std::os::fd::OwnedFd>,
    pub(crate) is_async: bool,
    pub(crate) decode: Decode<T>,
}

impl<T: Send + 'static> TaskCell<T, ProcessBody<T>>
where
    TaskCell<T, ProcessBody<T>>: Job,
{
    /// Ends attempt `n` if nobody has yet: stats, locks, then `out`.
    fn end_process_attempt(
        self: &Arc<Self>,
        n: u32,
        started: Instant,
        out: Result<T, TaskError>,
    ) -> bool {
        let h = &self.header;
        if !h.try_end_attempt(n) {
            return false;
        }
        h.shared
            .stats
            .attempt_ended(h.lane, h.opts.priority, started.elapsed());
        self.release_locks();
        self.settle(n, out);
        true
    }
}

impl<T: Send + 'static> Job for TaskCell<T, ProcessBody<T>> {
    fn header(&self) -> &Header {
        &self.header
    }

    fn run(self: Arc<Self>, _slot: Option<&Arc<WorkerSlot>>) -> bool {
        // The process pool starts attempts through `begin_process`.
        false
    }

    fn schedule(self: Arc<Self>) {
        if self.requeue() {
            let pool = self.header.shared.process.clone();
            pool.push(self);
        }
    }

    fn fail(&self, e: TaskError) -> bool {
        let won = self.resolve(Err(e));
        if won {
            self.header
                .shared
                .process
                .cancel(self.header.id.0, self.body.is_async);
        }
        won
    }

    fn deadline_passed(self: Arc<Self>, _n: u32) {}

    fn lock_deadline(&self, w: u64, lock: Arc<str>) {
        self.lock_timed_out(w, lock);
    }
}

impl<T: Send + 'static> TaskRef<T> for TaskCell<T, ProcessBody<T>> {
    fn completion(&self) -> &Completion<Result<T, TaskError>> {
        &self.completion
    }
}

impl<T: Send + 'static> crate::process::ProcessJob for TaskCell<T, ProcessBody<T>> {
    fn begin_process(self: Arc<Self>) -> Option<(u32, Instant)> {
        self.begin()
    }

    fn task_name(&self) -> &'static str {
        self.body.task
    }

    fn payload(&self) -> (&[u8], &[std::os::fd::OwnedFd]) {
        (&self.body.args, &self.body.fds)
    }

    fn is_async(&self) -> bool {
        self.body.is_async
    }

    fn finish_process(
        self: Arc<Self>,
        n: u32,
        started: Instant,
        outcome: Result<(Vec<u8>, Vec<std::os::fd::OwnedFd>), TaskError>,
    ) {
        let out = outcome.and_then(|(bytes, fds)| (self.body.decode)(&bytes, fds));
        self.end_process_attempt(n, started, out);
    }

    fn expire(self: Arc<Self>, n: u32) -> bool {
        let d = self.header.opts.timeout.unwrap_or_default();
        // Started-at is only for the run-time histogram; the worker's own
        // clock decided the deadline.
        let started = Instant::now().checked_sub(d).unwrap_or_else(Instant::now);
        self.header.cancel_through(n);
        self.end_process_attempt(n, started, Err(TaskError::TimedOut(d)))
    }

    fn unstart(self: Arc<Self>, n: u32) {
        let h = &self.header;
        if h.phase
            .compare_exchange(
                word(n, RUNNING),
                word(n - 1, QUEUED),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return;
        }
        h.shared.stats.attempt_undone();
        self.release_locks();
        if !h.is_resolved() {
            let pool = h.shared.process.clone();
            pool.push(self);
        }
    }
}
