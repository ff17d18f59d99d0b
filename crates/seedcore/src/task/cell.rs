//! The task record shared by every executor, and the one lifecycle driver
//! that every executor calls.
//!
//! # Who does what
//!
//! * The scheduler (behind [`Schedule`]) owns what is shared: ids, stats,
//!   locks, the timer, callbacks, the executor table.
//! * The body ([`Body`]) is what differs per executor: how an attempt runs,
//!   how the task is queued, how a running attempt is stopped.
//! * Everything in between is here, once: [`TaskCell::begin`] (locks, the
//!   attempt's start, its deadline), [`TaskCell::end`] (the attempt's code
//!   stopped: stats, locks, then the result if the attempt still owns its
//!   outcome), [`TaskCell::settle`] (retry or resolve),
//!   [`TaskCell::revert`] (an attempt handed out but never started) and
//!   [`TaskCell::resolve`] (the only way a task resolves).
//!
//! # Deadlines and cancels
//!
//! Both go through one path: the deadline of attempt `n` fires on the
//! scheduler's timer, asks the body whether the attempt really ran that
//! long ([`Body::deadline`]: a worker process may not have started it yet),
//! takes the end of attempt `n` and asks the executor to stop it
//! ([`Body::stop`]); a cancel resolves the task and asks the same.
//!
//! Locks and the attempt counters are released by [`TaskCell::end`] alone,
//! when the executor reports that the attempt's code has stopped (a thread
//! returned, a future was dropped, a worker process reported or died), so
//! a lock is never free while code that holds it still runs.
//!
//! # Tracing
//!
//! Each attempt is a `tracing` span named `attempt` (level DEBUG, fields
//! `task`, `name`, `priority`, `executor`, `attempt`), opened by
//! [`TaskCell::begin`], entered while the executor starts the attempt (a
//! thread task's whole run) and while it ends, and closed by
//! [`TaskCell::end`]. Inside it: an event for the attempt's outcome, for a
//! timeout (WARN), a crashed worker (WARN) and a scheduled retry (INFO).
//! When no subscriber wants DEBUG, [`TaskCell::begin`] makes no span: one
//! load of tracing's global level filter is all it costs.

use super::completion::Completion;
use super::state::{Begin, LockWait, Phase, Resolve, TaskState};
use super::{StopReason, TaskId, TaskStatus};
use crate::error::{TaskError, TaskErrorKind};
use crate::options::{Opts, Priority, TaskOptions};
use parking_lot::Mutex;
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// What taking a task's locks found.
pub(crate) enum Acquire {
    Taken,
    /// Parked as a waiter of this lock.
    Waiting(Arc<str>),
    /// The task names a limit with another permit count than earlier tasks.
    Conflict(String),
}

/// What the task core needs of its scheduler. The scheduler implements it;
/// the core names nothing above itself.
pub(crate) trait Schedule: Send + Sync + 'static {
    /// Whether an immediate shutdown is cancelling everything.
    fn is_cancelling(&self) -> bool;
    /// Attempt started (`waited`: queue wait of a first attempt).
    fn attempt_started(&self, h: &Header, waited: Option<Duration>);
    /// Attempt ended after running `ran`.
    fn attempt_ended(&self, h: &Header, ran: Duration);
    /// Attempt handed out but never started; it does not count.
    fn attempt_reverted(&self, h: &Header);
    /// A retry was scheduled.
    fn retried(&self, h: &Header);
    /// The task resolved (called once, by the winner).
    fn resolved(&self, h: &Header, outcome: Result<(), TaskErrorKind>);
    /// Takes every lock of `job`, or parks it.
    fn acquire(&self, job: &Arc<dyn Job>) -> Acquire;
    /// Releases the locks of `h`, waking their waiters.
    fn release(&self, h: &Header);
    /// Drops `h` from the waiters of its locks.
    fn forget_waiter(&self, h: &Header);
    /// Runs `action` at `at` on the timer; a `backoff` action also runs
    /// (early) when the system stops, a deadline is dropped then.
    fn schedule_at(&self, at: Instant, backoff: bool, action: Box<dyn FnOnce() + Send>);
    /// Queues `job` on the executor in its slot.
    fn enqueue(&self, job: Arc<dyn Job>);
    /// Asks the executor in slot `exec` to stop attempt `n` of task `id`.
    fn stop_attempt(&self, exec: u8, id: TaskId, n: u32, why: StopReason);
    /// Runs `callback` on the callback executor.
    fn dispatch(&self, callback: Box<dyn FnOnce() + Send>);
    /// The kind of the executor in slot `exec` (for tracing).
    fn kind_of(&self, exec: u8) -> super::ExecutorKind;
}

/// Whether attempt spans are wanted: tracing's global level filter (`OFF`
/// while no subscriber is installed) lets DEBUG through.
#[inline]
fn spans_wanted() -> bool {
    tracing::level_enabled!(tracing::Level::DEBUG)
}

/// The clock of the run-time and queue-wait figures: read three times per
/// task, and `quanta`'s (the TSC, where it is invariant) costs a third of
/// the OS clock's. Deadlines stay on `std::time::Instant`.
pub(crate) type StatClock = quanta::Instant;

/// The origin of [`stamp`]s.
static EPOCH: LazyLock<StatClock> = LazyLock::new(StatClock::now);

/// `t` as one word: nanoseconds since [`EPOCH`] (584 years of range).
fn stamp(t: StatClock) -> u64 {
    u64::try_from(t.saturating_duration_since(*EPOCH).as_nanos()).unwrap_or(u64::MAX)
}

/// One attempt, as its executor holds it between begin and end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt {
    pub(crate) n: u32,
    pub(crate) started: StatClock,
}

/// What the body says when the deadline of an attempt fires.
pub(crate) enum Deadline {
    /// The attempt has run its whole timeout: stop it.
    Passed,
    /// It started later than it began (it waited in a worker's queue):
    /// look again then.
    NotBefore(Instant),
}

/// What every executor knows about a task.
///
/// Every queued task holds one, so it is kept to what every task needs:
/// the scheduler and the options other than the priority are one shared
/// pointer ([`TaskEnv`]), the executor's slot and the priority sit in the
/// padding of the state, the submission time waits in the task's
/// completion until the first attempt starts, and an attempt's tracing
/// span lives in a side table while a subscriber wants it.
pub(crate) struct Header {
    pub(crate) id: TaskId,
    env: EnvRef,
    pub(crate) state: TaskState,
}

/// A task's scheduler (a task record reaches it through its [`TaskEnv`]).
pub(crate) type SchedRef = Arc<dyn Schedule>;

/// What a task shares with others: its scheduler and its options other
/// than the priority. Every task of a system submitted with default
/// options points at the system's one; a task with options of its own has
/// one of its own. A task record holds one pointer for both.
pub(crate) struct TaskEnv {
    pub(crate) sched: SchedRef,
    pub(crate) opts: Opts,
}

/// A shared [`TaskEnv`].
pub(crate) type EnvRef = Arc<TaskEnv>;

impl TaskEnv {
    /// The environment of a system's tasks with default options.
    pub(crate) fn new(sched: SchedRef) -> EnvRef {
        Arc::new(TaskEnv {
            sched,
            opts: Opts::default(),
        })
    }
}

/// The spans of the attempts that run now, by the address of their task's
/// header; see [`Header::open_span`].
static SPANS: LazyLock<Mutex<HashMap<usize, tracing::Span>>> = LazyLock::new(Default::default);

/// How many entries [`SPANS`] holds: closing an attempt looks there only
/// when it is not empty, so that spans cost nothing while nobody traces.
static OPEN_SPANS: AtomicUsize = AtomicUsize::new(0);

impl Header {
    /// `env`: the system's environment for tasks with default options.
    pub(crate) fn new(id: TaskId, opts: TaskOptions, env: &EnvRef, exec: u8) -> Self {
        let (priority, opts) = opts.into_parts();
        let env = if opts.is_default() {
            env.clone()
        } else {
            Arc::new(TaskEnv {
                sched: env.sched.clone(),
                opts,
            })
        };
        Header {
            id,
            env,
            state: TaskState::new(exec, priority.level()),
        }
    }

    /// The task's scheduler.
    #[inline]
    pub(crate) fn sched(&self) -> &SchedRef {
        &self.env.sched
    }

    /// The task's options other than the priority.
    #[inline]
    pub(crate) fn opts(&self) -> &Opts {
        &self.env.opts
    }

    /// The executor's slot in the scheduler's table.
    pub(crate) fn exec(&self) -> u8 {
        self.state.exec
    }

    /// The task's priority.
    pub(crate) fn priority(&self) -> Priority {
        Priority::from_level(self.state.level)
    }

    fn span_key(&self) -> usize {
        self as *const Header as usize
    }

    /// Opens the span of attempt `n`.
    #[cold]
    fn open_span(&self, n: u32) {
        // A root: an attempt that starts while another one's span is
        // entered on this thread is not part of it.
        let span = tracing::debug_span!(
            parent: None,
            "attempt",
            task = self.id.0,
            name = self.opts().get_name(),
            priority = self.state.level,
            executor = self.sched().kind_of(self.exec()).name(),
            attempt = n,
        );
        if SPANS.lock().insert(self.span_key(), span).is_none() {
            OPEN_SPANS.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The current attempt's span, if one is open.
    fn span(&self) -> Option<tracing::Span> {
        if OPEN_SPANS.load(Ordering::Relaxed) == 0 {
            return None;
        }
        SPANS.lock().get(&self.span_key()).cloned()
    }

    /// Closes the current attempt's span: the caller's is the last handle.
    /// It looks whenever a span is open anywhere, not only while spans are
    /// wanted, so that no entry outlives its task.
    fn take_span(&self) -> Option<tracing::Span> {
        if OPEN_SPANS.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let span = SPANS.lock().remove(&self.span_key());
        if span.is_some() {
            OPEN_SPANS.fetch_sub(1, Ordering::Relaxed);
        }
        span
    }

    pub(crate) fn is_resolved(&self) -> bool {
        self.state.is_resolved()
    }

    pub(crate) fn is_cancelled(&self, attempt: u32) -> bool {
        self.state.is_cancelled(attempt) || self.sched().is_cancelling()
    }

    /// Sets the cancellation token of every attempt, present and future.
    pub(crate) fn cancel_all_attempts(&self) {
        self.state.cancel_through(u32::MAX);
    }

    pub(crate) fn status(&self) -> TaskStatus {
        match outcome_kind(self.state.outcome()) {
            None => match self.state.phase().1 {
                Phase::Queued => TaskStatus::Queued,
                Phase::WaitingLock => TaskStatus::WaitingForLock,
                Phase::Running => TaskStatus::Running,
                // ENDED while unresolved: the next step is being decided.
                Phase::Backoff | Phase::Ended => TaskStatus::RetryPending,
            },
            Some(Ok(())) => TaskStatus::Succeeded,
            Some(Err(k)) => TaskStatus::Failed(k),
        }
    }
}

/// The outcome as the state word stores it: 0 unresolved, 1 a value,
/// 2 + the error kind's code.
fn outcome_code(o: Result<(), TaskErrorKind>) -> u8 {
    match o {
        Ok(()) => 1,
        Err(k) => 2 + k.code(),
    }
}

fn outcome_kind(code: u8) -> Option<Result<(), TaskErrorKind>> {
    match code {
        0 => None,
        1 => Some(Ok(())),
        c => Some(Err(TaskErrorKind::from_code(c - 2).expect(
            "the state word holds only codes written by outcome_code",
        ))),
    }
}

impl Drop for Header {
    fn drop(&mut self) {
        // An attempt span left open (a task dropped mid-attempt) must not
        // be found by a later task at the same address.
        drop(self.take_span());
    }
}

/// A task as the scheduler, the lock table, the timer and the executors'
/// queues see it.
pub(crate) trait Job: Send + Sync + 'static {
    fn header(&self) -> &Header;

    /// Begins an attempt and runs it on the calling thread (or starts it,
    /// for async bodies). `true`: an attempt was started that has not
    /// ended yet and will report its end itself.
    fn run(self: Arc<Self>) -> bool;

    /// Puts the task (back) on its executor's queue: after a back-off or
    /// when a lock it waits for is released.
    fn schedule(self: Arc<Self>);

    /// Resolves the task with `e` unless it already resolved, and asks the
    /// executor to stop an attempt that is running. `true` if it resolved.
    fn fail(&self, e: TaskError) -> bool;

    /// The deadline of attempt `n` fired.
    fn deadline(self: Arc<Self>, n: u32);

    /// The lock timeout of the wait keyed by `wait` passed.
    /// (`since`: when the wait began).
    fn lock_deadline(&self, wait: u64, lock: Arc<str>, since: Instant);

    /// Shows `visit` what the task's executor needs of it beyond
    /// [`run`](Self::run) (see [`Body::route`]); nothing for most tasks.
    fn route(self: Arc<Self>, visit: &mut dyn FnMut(&dyn Any));

    fn is_resolved(&self) -> bool {
        self.header().is_resolved()
    }
}

/// A task's typed half: what its future reads.
pub(crate) trait TaskRef<T>: Job {
    fn completion(&self) -> &Completion<Outcome<T>>;
}

/// What differs per executor: the task's code and how its executor queues,
/// runs and stops it.
pub(crate) trait Body: Sized + Send + Sync + 'static {
    type Output: Send + 'static;

    /// Runs (or starts) the begun attempt `a`; see [`Job::run`].
    fn start(cell: &Arc<TaskCell<Self>>, a: Attempt) -> bool;

    /// What the executor needs of the task beyond running it, shown to
    /// `visit` as a value of the executor's own type (the process pool's
    /// view of a process task, a GPU task's placement): it travels with
    /// the task's `Runnable` into `Executor::accept`, the one way in.
    /// Nothing by default.
    fn route(cell: Arc<TaskCell<Self>>, visit: &mut dyn FnMut(&dyn Any)) {
        let _ = (cell, visit);
    }

    /// Asks the executor to really stop attempt `n`; by default the
    /// executor in the task's slot.
    fn stop(cell: &TaskCell<Self>, n: u32, why: StopReason) {
        let h = &cell.header;
        h.sched().stop_attempt(h.exec(), h.id, n, why);
    }

    /// Whether attempt `n` has run for `limit` when its deadline fires.
    fn deadline(_cell: &TaskCell<Self>, _n: u32, _limit: Duration) -> Deadline {
        Deadline::Passed
    }
}

/// One allocation per task: header, result slot and body.
pub(crate) struct TaskCell<B: Body> {
    pub(crate) header: Header,
    completion: Completion<Outcome<B::Output>>,
    body: B,
}

/// A result as a task record stores it: the error boxed, so that the slot
/// of a task that returns nothing is one word.
pub(crate) type Outcome<T> = Result<T, Box<TaskError>>;

pub(crate) fn caught<T>(r: std::thread::Result<Result<T, TaskError>>) -> Result<T, TaskError> {
    r.unwrap_or_else(|p| Err(TaskError::Panicked(crate::error::panic_message(&*p).into())))
}

impl<B: Body> TaskCell<B> {
    pub(crate) fn new(header: Header, body: B) -> Self {
        TaskCell {
            header,
            completion: Completion::with_note(stamp(StatClock::now())),
            body,
        }
    }

    pub(crate) fn body(&self) -> &B {
        &self.body
    }

    /// The only way a task resolves.
    pub(crate) fn resolve(&self, r: Result<B::Output, TaskError>) -> bool {
        let kind = match &r {
            Ok(_) => Ok(()),
            Err(e) => Err(e.kind()),
        };
        let h = &self.header;
        if h.state.transition_to_resolved(outcome_code(kind)) == Resolve::Lost {
            return false;
        }
        if kind.is_err() {
            // A still-running attempt (a timed-out thread, a cancelled
            // task) sees its token set.
            h.cancel_all_attempts();
            if !h.opts().locks().is_empty() && h.state.phase().1 == Phase::WaitingLock {
                h.sched().forget_waiter(h);
            }
        }
        h.sched().resolved(h, kind);
        let won = self.completion.complete(r.map_err(Box::new)).won();
        debug_assert!(won, "the outcome CAS decides the only completer");
        true
    }

    /// Takes the task's locks, or parks it. `false`: do not run now.
    fn take_locks(self: &Arc<Self>) -> bool {
        let h = &self.header;
        if h.opts().locks().is_empty() {
            return true;
        }
        let me: Arc<dyn Job> = self.clone();
        match h.sched().acquire(&me) {
            Acquire::Taken => true,
            Acquire::Waiting(lock) => {
                if let LockWait::First(w) = h.state.transition_to_lock_wait() {
                    if let Some(lt) = h.opts().get_lock_timeout() {
                        let weak = Arc::downgrade(&me);
                        let since = Instant::now();
                        h.sched().schedule_at(
                            since + lt,
                            false,
                            Box::new(move || {
                                if let Some(j) = weak.upgrade() {
                                    j.lock_deadline(w, lock, since);
                                }
                            }),
                        );
                    }
                }
                false
            }
            Acquire::Conflict(msg) => {
                self.resolve(Err(TaskError::failed(msg)));
                false
            }
        }
    }

    fn release_locks(&self) {
        let h = &self.header;
        if !h.opts().locks().is_empty() {
            h.sched().release(h);
        }
    }

    /// Takes the locks and begins an attempt, arming its deadline; `None`:
    /// nothing to run now.
    pub(crate) fn begin(self: &Arc<Self>) -> Option<Attempt> {
        let h = &self.header;
        if h.is_resolved() || !self.take_locks() {
            return None;
        }
        let n = match h.state.transition_to_running() {
            Begin::Started { n, .. } => n,
            Begin::NotQueued => {
                self.release_locks();
                return None;
            }
        };
        let started = StatClock::now();
        // A first attempt's queue wait: the completion keeps the submission
        // time until a result comes.
        let waited = if n == 1 {
            let submitted = self.completion.note().unwrap_or(u64::MAX);
            Some(Duration::from_nanos(
                stamp(started).saturating_sub(submitted),
            ))
        } else {
            None
        };
        h.sched().attempt_started(h, waited);
        if spans_wanted() {
            h.open_span(n);
        }
        if let Some(t) = h.opts().get_timeout() {
            self.arm_deadline(n, Instant::now() + t);
        }
        Some(Attempt { n, started })
    }

    fn arm_deadline(self: &Arc<Self>, n: u32, at: Instant) {
        let me: Arc<dyn Job> = self.clone();
        let weak = Arc::downgrade(&me);
        self.header.sched().schedule_at(
            at,
            false,
            Box::new(move || {
                if let Some(j) = weak.upgrade() {
                    j.deadline(n);
                }
            }),
        );
    }

    /// Attempt `a`'s code has stopped with `out`: stats, locks, then the
    /// result if nobody ended the attempt before (a deadline, a cancel).
    pub(crate) fn end(self: &Arc<Self>, a: Attempt, out: Result<B::Output, TaskError>) {
        self.end_with(a, out, true);
    }

    /// [`end`](Self::end) with an outcome that is final: no retry follows
    /// (the executor retried already, as a remote worker does).
    #[cfg(feature = "remote")]
    pub(crate) fn end_final(self: &Arc<Self>, a: Attempt, out: Result<B::Output, TaskError>) {
        self.end_with(a, out, false);
    }

    fn end_with(self: &Arc<Self>, a: Attempt, out: Result<B::Output, TaskError>, retry: bool) {
        let h = &self.header;
        let ran = a.started.elapsed();
        h.sched().attempt_ended(h, ran);
        self.release_locks();
        let span = h.take_span();
        let _in_span = span.as_ref().map(tracing::Span::enter);
        if h.state.transition_to_ended(a.n).won() {
            if span.is_some() {
                trace_outcome(&out, ran);
            }
            match out {
                Err(e) if !retry => {
                    self.resolve(Err(e));
                }
                out => self.settle(a.n, out),
            }
        }
    }

    /// Attempt `a` was handed to a worker that never started it: undo it
    /// and queue the task again. If a deadline or a cancel ended it
    /// meanwhile, it is closed instead (its code has stopped: it never ran).
    pub(crate) fn revert(self: Arc<Self>, a: Attempt) {
        let h = &self.header;
        drop(h.take_span());
        if !h.state.revert(a.n).won() {
            h.sched().attempt_ended(h, Duration::ZERO);
            self.release_locks();
            return;
        }
        h.sched().attempt_reverted(h);
        self.release_locks();
        if !h.is_resolved() {
            let sched = h.sched().clone();
            sched.enqueue(self);
        }
    }

    /// Attempt `n` ended with `out` and this caller owns that end: resolve,
    /// or schedule the next attempt.
    fn settle(self: &Arc<Self>, n: u32, out: Result<B::Output, TaskError>) {
        let e = match out {
            Ok(v) => {
                self.resolve(Ok(v));
                return;
            }
            Err(e) => e,
        };
        let h = &self.header;
        let retry = h.opts().get_retry();
        if !retry.should_retry(n, &e) || h.is_resolved() || h.sched().is_cancelling() {
            self.resolve(Err(e));
            return;
        }
        h.sched().retried(h);
        h.state.transition_to_backoff(n);
        let delay = retry.delay(n);
        tracing::info!(
            task = h.id.0,
            attempt = n,
            delay_ms = delay.as_millis() as u64,
            error = %e,
            "retry scheduled",
        );
        let me: Arc<dyn Job> = self.clone();
        if delay.is_zero() {
            me.schedule();
        } else {
            // A strong reference: a detached task still runs its retries.
            h.sched().schedule_at(
                Instant::now() + delay,
                true,
                Box::new(move || me.schedule()),
            );
        }
    }

    /// Leaves BACKOFF for QUEUED; `false` if the system is cancelling (the
    /// task was then resolved `Cancelled`).
    fn requeue(&self) -> bool {
        let h = &self.header;
        if h.sched().is_cancelling() {
            self.resolve(Err(TaskError::Cancelled));
            return false;
        }
        h.state.transition_to_queued();
        true
    }
}

impl<B: Body> Job for TaskCell<B> {
    fn header(&self) -> &Header {
        &self.header
    }

    fn run(self: Arc<Self>) -> bool {
        match self.begin() {
            Some(a) => match self.header.span() {
                Some(span) => span.in_scope(|| B::start(&self, a)),
                None => B::start(&self, a),
            },
            None => false,
        }
    }

    fn schedule(self: Arc<Self>) {
        if self.requeue() {
            let sched = self.header.sched().clone();
            sched.enqueue(self);
        }
    }

    fn fail(&self, e: TaskError) -> bool {
        let won = self.resolve(Err(e));
        if won {
            if let (n, Phase::Running) = self.header.state.phase() {
                B::stop(self, n, StopReason::Cancel);
            }
        }
        won
    }

    fn deadline(self: Arc<Self>, n: u32) {
        let h = &self.header;
        if h.is_resolved() || h.state.phase() != (n, Phase::Running) {
            return;
        }
        let limit = h.opts().get_timeout().unwrap_or_default();
        match B::deadline(&self, n, limit) {
            Deadline::NotBefore(at) => self.arm_deadline(n, at),
            Deadline::Passed => {
                if h.state.transition_to_ended(n).won() {
                    let span = h.span();
                    let _in_span = span.as_ref().map(tracing::Span::enter);
                    tracing::warn!(
                        task = h.id.0,
                        attempt = n,
                        timeout_ms = limit.as_millis() as u64,
                        "attempt timed out",
                    );
                    h.state.cancel_through(n);
                    B::stop(&self, n, StopReason::Timeout);
                    self.settle(n, Err(TaskError::TimedOut(limit)));
                }
            }
        }
    }

    fn route(self: Arc<Self>, visit: &mut dyn FnMut(&dyn Any)) {
        B::route(self, visit);
    }

    fn lock_deadline(&self, wait: u64, lock: Arc<str>, since: Instant) {
        let h = &self.header;
        if !h.state.end_lock_wait(wait).won() {
            return;
        }
        let waited = since.elapsed();
        h.sched().forget_waiter(h);
        self.resolve(Err(TaskError::LockTimeout {
            lock: lock.to_string(),
            waited,
        }));
    }
}

impl<B: Body> TaskRef<B::Output> for TaskCell<B> {
    fn completion(&self) -> &Completion<Outcome<B::Output>> {
        &self.completion
    }
}

thread_local! {
    /// Whether this thread is running a task's code now (a shutdown or a
    /// full queue must not make a task wait for itself).
    static IN_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread runs a task's code (of any executor that
/// runs tasks on its own threads).
pub(crate) fn in_task() -> bool {
    IN_TASK.with(|c| c.get())
}

/// Marks the calling thread as running a task for the guard's life.
pub(crate) struct InTask(bool);

impl InTask {
    pub(crate) fn enter() -> InTask {
        InTask(IN_TASK.with(|c| c.replace(true)))
    }
}

impl Drop for InTask {
    fn drop(&mut self) {
        let was = self.0;
        IN_TASK.with(|c| c.set(was));
    }
}

/// The outcome event of an attempt, inside its span.
#[cold]
fn trace_outcome<T>(out: &Result<T, TaskError>, ran: Duration) {
    let ran_us = ran.as_micros() as u64;
    match out {
        Ok(_) => tracing::debug!(ran_us, "attempt succeeded"),
        Err(e @ TaskError::WorkerDied { .. }) => {
            tracing::warn!(ran_us, error = %e, "worker died")
        }
        Err(e @ TaskError::Panicked(_)) => tracing::warn!(ran_us, error = %e, "attempt panicked"),
        Err(e) => tracing::debug!(ran_us, kind = ?e.kind(), error = %e, "attempt failed"),
    }
}

/// What a pool does while one of its threads blocks on a future: it keeps
/// its capacity by starting a compensating thread (see [`blocking`]).
pub(crate) trait Blocker: Send + Sync {
    /// The calling pool thread is about to block.
    fn begin(&self);
    /// It runs again.
    fn end(&self);
}

thread_local! {
    /// The pool the calling thread works for, if it is a pool thread that
    /// a blocking wait must report to.
    static BLOCKER: std::cell::RefCell<Option<std::sync::Weak<dyn Blocker>>> =
        const { std::cell::RefCell::new(None) };
}

/// Registers the calling thread as a thread of `pool` for blocking waits.
pub(crate) fn set_blocker(pool: std::sync::Weak<dyn Blocker>) {
    BLOCKER.with(|b| *b.borrow_mut() = Some(pool));
}

/// Tells the calling thread's pool, if it has one, that the thread blocks
/// until the guard drops.
pub(crate) fn blocking() -> Option<BlockGuard> {
    if !in_task() {
        return None;
    }
    let pool = BLOCKER.with(|b| b.borrow().as_ref().and_then(|w| w.upgrade()))?;
    pool.begin();
    Some(BlockGuard(pool))
}

/// The pool thread blocks while this lives.
pub(crate) struct BlockGuard(Arc<dyn Blocker>);

impl Drop for BlockGuard {
    fn drop(&mut self) {
        self.0.end();
    }
}

#[cfg(test)]
mod tests {
    use super::{Outcome, TaskCell};
    use crate::error::TaskError;
    use crate::sched::ClosureBody;
    use crate::TaskContext;
    use std::mem::size_of;

    fn record_bytes<F>(_: &F) -> usize
    where
        F: Fn(&TaskContext) -> Result<(), TaskError> + Send + Sync + 'static,
    {
        // The allocation: the record and the two reference counts of its Arc.
        size_of::<TaskCell<ClosureBody<(), F>>>() + 2 * size_of::<usize>()
    }

    #[test]
    fn a_no_op_task_record_fits_a_64_byte_allocation() {
        // 64 bytes is an allocator's size class (mimalloc's included), so
        // with the queue's 24 bytes a slot a queued no-op task costs 88.
        assert!(record_bytes(&|_: &TaskContext| Ok(())) <= 64);
        assert!(size_of::<Outcome<()>>() == size_of::<usize>());
    }
}
