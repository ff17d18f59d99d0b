//! The async executor: seedcore's own driver threads poll async tasks in
//! priority order, inside a tokio runtime that drives their timers and I/O.
//!
//! # Shape
//!
//! * A submitted attempt waits in `new`, the priority queue, until a driver
//!   has a free slot (`async.max_tasks` attempts run at once) and starts
//!   it: the attempt's future is built and polled once, on the driver,
//!   at once. Most futures finish in that first poll, and then the attempt
//!   has cost one task allocation (async-task's) and no trip through
//!   tokio's scheduler.
//! * A future that returns `Pending` is woken like any other: its waker
//!   pushes it on `woken`, and a driver polls it again. Drivers serve
//!   `woken` before `new` (started attempts before waiting ones).
//! * Drivers run inside the runtime's context (`Handle::enter`), so a
//!   future may use tokio's timers, I/O and `tokio::spawn`; the runtime's
//!   own workers drive the timers and the I/O and run what is spawned.
//!
//! # Stopping an attempt
//!
//! An attempt still pending after its first poll registers its async-task
//! handle in `pending`; a deadline, a cancel or a shutdown takes it out and
//! drops it, which cancels the task: its future is dropped by a driver (or
//! at once if it is idle), and the attempt guard inside the future reports
//! the end. The guard and the registration agree under `pending`'s lock
//! and the attempt's `finished` and `registered` marks (`SeqCst`), so a
//! handle is never left registered for an attempt that ended.
//!
//! # Shutdown
//!
//! 1. `stopped`: no new attempt starts; queued ones resolve
//!    `SystemShutdown`.
//! 2. Every pending attempt is cancelled (its handle dropped); drivers drop
//!    the futures as they come round.
//! 3. Drivers exit once `woken` is empty, and are joined up to the
//!    deadline (one stuck in a poll is detached and counted).
//! 4. What is left in `woken` is dropped here; the runtime stops.

use crate::error::{panic_message, TaskError};
use crate::sched::idle::Idle;
use crate::sched::WorkerInfo;
use crate::sched::{join_by, spawn_latched, Latched};
use crate::sched::{Executor, ExecutorStats, PriorityQueue, Runnable, ShutdownMode, StopReport};
use crate::task::{
    set_blocker, Attempt, Blocker, Body, ExecutorKind, InTask, Job, StopReason, TaskCell,
    TaskContext, TaskId,
};
use crossbeam_deque::{Injector, Steal};
use futures_util::FutureExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, Runtime};

/// Rounds of busy-polling before an idle driver sleeps.
const SPIN_ROUNDS: u32 = 32;

/// The most stand-in drivers at once (see [`Blocker`] for [`AsyncExec`]).
const MAX_STANDINS: usize = 256;

/// How long an idle stand-in sleeps before it looks whether it is still
/// needed.
const STANDIN_NAP: Duration = Duration::from_millis(20);

/// The async executor of one system.
pub(crate) struct AsyncExec {
    /// Attempts waiting for a slot, by priority.
    new: PriorityQueue<Arc<dyn Job>>,
    /// Started attempts whose futures were woken.
    woken: Injector<async_task::Runnable>,
    idle: Idle,
    /// Attempts begun and not ended.
    running: AtomicUsize,
    limit: usize,
    threads: usize,
    name: String,
    drivers: Mutex<Vec<Latched>>,
    /// Drivers blocked in a wait on a future, and the stand-ins started
    /// for them (see [`Blocker`]).
    blocked: AtomicUsize,
    standins: AtomicUsize,
    standin_threads: Mutex<Vec<Latched>>,
    /// Driver thread ids with the tasks each has polled, for the monitor.
    driver_info: Mutex<Vec<(u32, String, Arc<AtomicU64>)>>,
    started: OnceLock<Option<Handle>>,
    runtime: Mutex<Option<Runtime>>,
    /// Attempts pending past their first poll: their tasks, to cancel.
    pending: Mutex<HashMap<TaskId, async_task::Task<()>>>,
    /// No new attempt starts.
    stopped: AtomicBool,
    /// Drivers exit once `woken` is empty.
    exiting: AtomicBool,
    me: Weak<AsyncExec>,
}

impl AsyncExec {
    pub(crate) fn new(threads: usize, limit: usize, name: String) -> Arc<Self> {
        Arc::new_cyclic(|me| AsyncExec {
            new: PriorityQueue::new(),
            woken: Injector::new(),
            idle: Idle::new(),
            running: AtomicUsize::new(0),
            limit,
            threads,
            name,
            drivers: Mutex::new(Vec::new()),
            blocked: AtomicUsize::new(0),
            standins: AtomicUsize::new(0),
            standin_threads: Mutex::new(Vec::new()),
            driver_info: Mutex::new(Vec::new()),
            started: OnceLock::new(),
            runtime: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            stopped: AtomicBool::new(false),
            exiting: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    /// A handle on the system's tokio runtime, started on first use; `None`
    /// if it could not start.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn runtime_handle(&self) -> Option<Handle> {
        self.ensure_started();
        self.started.get().cloned().flatten()
    }

    /// Starts the runtime and the drivers on first use; `false` if they
    /// could not start.
    fn ensure_started(&self) -> bool {
        self.started
            .get_or_init(|| {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(self.threads)
                    .thread_name(format!("{}-async", self.name))
                    .enable_all()
                    .build();
                let rt = match rt {
                    Ok(rt) => rt,
                    Err(e) => {
                        log::error!("seedcore: could not start the async runtime: {e}");
                        return None;
                    }
                };
                let handle = rt.handle().clone();
                *self.runtime.lock() = Some(rt);
                let mut drivers = self.drivers.lock();
                for i in 0..self.threads {
                    match self.spawn_driver(format!("{}-async-{i}", self.name), &handle, false) {
                        Ok(t) => drivers.push(t),
                        Err(e) => log::error!("seedcore: could not start an async driver: {e}"),
                    }
                }
                (!drivers.is_empty()).then_some(handle)
            })
            .is_some()
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

    /// An attempt ended; its slot is free.
    fn slot_done(&self) {
        // Only a full executor leaves queued work for a driver that sleeps;
        // below the limit, a driver that takes work does not sleep.
        let was = self.running.fetch_sub(1, Ordering::SeqCst);
        if was >= self.limit && !self.new.is_empty() {
            self.idle.notify_one();
        }
    }

    /// A woken future to poll, or an attempt to start.
    fn next(&self) -> Option<Work> {
        loop {
            match self.woken.steal() {
                Steal::Success(r) => return Some(Work::Poll(r)),
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
        if self.stopped.load(Ordering::Acquire) || self.new.is_empty() || !self.take_slot() {
            return None;
        }
        match self.new.pop() {
            Some(job) => Some(Work::Start(job)),
            None => {
                self.running.fetch_sub(1, Ordering::SeqCst);
                None
            }
        }
    }

    fn has_work(&self) -> bool {
        !self.woken.is_empty()
            || (!self.new.is_empty()
                && !self.stopped.load(Ordering::SeqCst)
                && self.running.load(Ordering::SeqCst) < self.limit)
    }

    /// Starts a thread named `name` that runs [`drive`](Self::drive).
    fn spawn_driver(
        &self,
        name: String,
        handle: &Handle,
        standin: bool,
    ) -> std::io::Result<Latched> {
        let (me, handle) = (self.me.clone(), handle.clone());
        spawn_latched(std::thread::Builder::new().name(name), move || {
            if let Some(me) = me.upgrade() {
                me.drive(&handle, standin);
            }
        })
    }

    /// A driver thread: poll and start until the executor exits.
    /// A stand-in (`standin`) exits once no driver is blocked for it.
    fn drive(&self, handle: &Handle, standin: bool) {
        let _rt = handle.enter();
        let me: Weak<dyn Blocker> = self.me.clone();
        set_blocker(me);
        let done = Arc::new(AtomicU64::new(0));
        if !standin {
            self.driver_info.lock().push((
                crate::exec::thread::os_thread_id(),
                std::thread::current().name().unwrap_or_default().to_owned(),
                done.clone(),
            ));
        }
        'outer: loop {
            if let Some(w) = self.next() {
                // A future that blocks on another task's future then keeps
                // the executor's capacity (see `Blocker`).
                let _in_task = InTask::enter();
                match w {
                    Work::Poll(r) => {
                        r.run();
                    }
                    Work::Start(job) => {
                        if !job.run() {
                            // Not begun (resolved while queued, or parked on
                            // a lock): its slot is free again.
                            self.running.fetch_sub(1, Ordering::SeqCst);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                continue;
            }
            if self.exiting.load(Ordering::Acquire) || (standin && self.standin_retires()) {
                break;
            }
            for i in 0..SPIN_ROUNDS {
                if self.has_work() {
                    continue 'outer;
                }
                if i < SPIN_ROUNDS / 2 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            self.idle.prepare();
            if self.has_work() || self.exiting.load(Ordering::SeqCst) {
                self.idle.cancel();
                continue;
            }
            self.idle.sleep(standin.then_some(STANDIN_NAP));
        }
    }

    /// Whether the calling stand-in may exit: there are more stand-ins
    /// than blocked drivers. It then no longer counts as one.
    fn standin_retires(&self) -> bool {
        self.standins
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n > self.blocked.load(Ordering::SeqCst)).then(|| n - 1)
            })
            .is_ok()
    }

    /// Starts a stand-in driver while `blocked` drivers are blocked.
    fn add_standin(&self, blocked: usize) {
        let Some(Some(handle)) = self.started.get().cloned() else {
            return;
        };
        let counted = self
            .standins
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < blocked && n < MAX_STANDINS).then(|| n + 1)
            });
        if counted.is_err() {
            return;
        }
        match self.spawn_driver(format!("{}-async-standin", self.name), &handle, true) {
            Ok(t) => {
                let mut threads = self.standin_threads.lock();
                threads.retain(|t| !t.is_finished());
                threads.push(t);
            }
            Err(e) => {
                self.standins.fetch_sub(1, Ordering::SeqCst);
                log::error!("seedcore: could not start a driver for a blocked one: {e}");
            }
        }
    }

    /// Cancels the pending attempt of `task` (its future is dropped).
    fn cancel_pending(&self, task: TaskId) {
        let t = self.pending.lock().remove(&task);
        drop(t);
    }

    fn drain_new(&self) -> Vec<Arc<dyn Job>> {
        std::iter::from_fn(|| self.new.pop()).collect()
    }
}

enum Work {
    Poll(async_task::Runnable),
    Start(Arc<dyn Job>),
}

/// A driver that blocks in a wait on a future (an async task calling
/// `TaskFuture::wait` instead of awaiting) gets a stand-in driver while the
/// wait lasts, as the thread pool's threads do, so the tasks it waits for
/// still run when every driver is blocked.
impl Blocker for AsyncExec {
    fn begin(&self) {
        let blocked = self.blocked.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.stopped.load(Ordering::Acquire) {
            self.add_standin(blocked);
        }
    }

    fn end(&self) {
        self.blocked.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Executor for AsyncExec {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Async
    }

    fn accept(&self, task: Runnable) {
        let job = task.into_job();
        if self.stopped.load(Ordering::Acquire) || !self.ensure_started() {
            job.fail(TaskError::SystemShutdown);
            return;
        }
        self.new.push(job.header().priority(), job);
        self.idle.notify_one();
        // After the fence in `notify_one`: either `stop` drains this task,
        // or this sees the stop and drains.
        if self.stopped.load(Ordering::SeqCst) {
            for job in self.drain_new() {
                job.fail(TaskError::SystemShutdown);
            }
        }
    }

    fn stop_attempt(&self, task: TaskId, _attempt: u32, _why: StopReason) {
        self.cancel_pending(task);
    }

    fn drain(&self) -> Vec<Runnable> {
        self.drain_new().into_iter().map(Runnable::new).collect()
    }

    /// The shutdown steps of the module docs.
    fn stop(&self, deadline: Instant, _mode: ShutdownMode) -> StopReport {
        self.stopped.store(true, Ordering::SeqCst);
        for job in self.drain_new() {
            job.fail(TaskError::SystemShutdown);
        }
        let pending: Vec<async_task::Task<()>> =
            self.pending.lock().drain().map(|(_, t)| t).collect();
        drop(pending);
        self.exiting.store(true, Ordering::SeqCst);
        self.idle.notify_all();
        let mut detached = 0;
        let standins = std::mem::take(&mut *self.standin_threads.lock());
        for t in std::mem::take(&mut *self.drivers.lock())
            .into_iter()
            .chain(standins)
        {
            if !join_by(t, deadline) {
                detached += 1;
            }
        }
        // Futures woken after the drivers left: dropped here.
        loop {
            match self.woken.steal() {
                Steal::Success(r) => drop(r),
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
        if let Some(rt) = self.runtime.lock().take() {
            if Handle::try_current().is_ok() {
                // Blocking inside a runtime would panic; let it wind down.
                rt.shutdown_background();
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                rt.shutdown_timeout(left.max(Duration::from_millis(10)));
            }
        }
        if detached > 0 {
            log::warn!(
                "seedcore: {detached} async driver(s) still polling at shutdown were detached"
            );
        }
        StopReport::detached(detached)
    }

    fn stats(&self) -> ExecutorStats {
        let mut row = ExecutorStats::new(ExecutorKind::Async);
        row.queue_depth = self.new.depths();
        row.queued = row.queue_depth.iter().sum();
        let started = matches!(self.started.get(), Some(Some(_)));
        row.workers = if started {
            self.drivers.lock().len() + self.standins.load(Ordering::Relaxed)
        } else {
            0
        };
        row.busy = self.running.load(Ordering::Relaxed).min(row.workers);
        row.core = self.threads;
        row.max = self.threads;
        row.target = self.threads;
        row
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        self.driver_info
            .lock()
            .iter()
            .map(|(tid, name, done)| {
                let mut w = WorkerInfo::thread(*tid, name.clone());
                w.tasks_done = done.load(Ordering::Relaxed);
                w
            })
            .collect()
    }
}

thread_local! {
    /// The attempt whose first poll runs on this thread now.
    static FIRST_POLL: std::cell::Cell<Option<(TaskId, u32)>> = const { std::cell::Cell::new(None) };
}

/// The executor as a waker's schedule function sees it.
#[derive(Clone, Copy)]
struct ExecRef(NonNull<AsyncExec>);

// SAFETY: `AsyncExec` is `Sync`; the pointer is only read as a shared
// reference, while the executor is alive (see `AsyncBody::exec`).
unsafe impl Send for ExecRef {}
// SAFETY: as above.
unsafe impl Sync for ExecRef {}

impl ExecRef {
    fn get(&self) -> &AsyncExec {
        // SAFETY: the executor is registered in its scheduler's table, which
        // holds an `Arc` to it and never drops an entry; every task that can
        // reach this pointer (its body, or the schedule function of its
        // attempt's future, which runs only while that future exists and
        // holds the task) holds an `Arc` to that scheduler.
        unsafe { self.0.as_ref() }
    }
}

/// The body of an async task: a factory, so that a retry gets a fresh
/// future.
pub(crate) struct AsyncBody<T, F, Fut> {
    factory: F,
    /// Not an `Arc`: one shared reference count bumped per task costs more
    /// than the rest of a start.
    exec: ExecRef,
    /// The last attempt whose future ended, and the last one registered in
    /// `pending` (see the module docs).
    finished: AtomicU32,
    registered: AtomicU32,
    _out: PhantomData<fn() -> (T, Fut)>,
}

impl<T, F, Fut> AsyncBody<T, F, Fut> {
    /// A body run by `exec`, which must be the executor registered in the
    /// scheduler of the task this body goes into.
    pub(crate) fn new(exec: &AsyncExec, factory: F) -> Self {
        AsyncBody {
            factory,
            exec: ExecRef(NonNull::from(exec)),
            finished: AtomicU32::new(0),
            registered: AtomicU32::new(0),
            _out: PhantomData,
        }
    }

    fn exec(&self) -> &AsyncExec {
        self.exec.get()
    }
}

/// Ends an async attempt however its future goes: finished, or dropped by
/// a deadline, a cancel or a shutdown.
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
        let body = self.cell.body();
        let n = self.a.n;
        let id = self.cell.header.id;
        if FIRST_POLL.with(|p| p.get()) == Some((id, n)) {
            // Ended in its first poll, on the thread that started it:
            // nothing is registered yet, and that thread reads this mark
            // after the poll.
            body.finished.store(n, Ordering::Relaxed);
        } else {
            body.finished.store(n, Ordering::SeqCst);
        }
        if body.registered.load(Ordering::SeqCst) == n {
            let exec = body.exec();
            let t = exec.pending.lock().remove(&id);
            // Dropping our own finished task is a no-op for it.
            drop(t);
        }
        let out = self.out.take().unwrap_or(Err(TaskError::Cancelled));
        self.cell.end(self.a, out);
        body.exec().slot_done();
    }
}

impl<T, F, Fut> Body for AsyncBody<T, F, Fut>
where
    T: Send + 'static,
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, TaskError>> + Send + 'static,
{
    type Output = T;

    /// Builds the attempt's future and polls it once, here, on the driver.
    fn start(cell: &Arc<TaskCell<Self>>, a: Attempt) -> bool {
        let guard = AttemptGuard {
            cell: cell.clone(),
            a,
            out: None,
        };
        let fut = async move {
            // The factory runs here, inside the runtime's context: it may
            // build timers and I/O.
            let ctx = TaskContext::new(guard.cell.clone(), guard.a.n);
            let made = catch_unwind(AssertUnwindSafe(|| (guard.cell.body().factory)(ctx)));
            let out = match made {
                Err(p) => Err(TaskError::Panicked(panic_message(&*p).into())),
                Ok(fut) => match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(r) => r,
                    Err(p) => Err(TaskError::Panicked(panic_message(&*p).into())),
                },
            };
            guard.finish(out);
        };
        let exec = cell.body().exec;
        let schedule = move |r: async_task::Runnable| {
            let e = exec.get();
            e.woken.push(r);
            e.idle.notify_one();
        };
        let (runnable, task) = async_task::spawn(fut, schedule);
        let id = cell.header.id;
        let outer = FIRST_POLL.with(|p| p.replace(Some((id, a.n))));
        runnable.run();
        FIRST_POLL.with(|p| p.set(outer));
        let body = cell.body();
        if body.finished.load(Ordering::SeqCst) >= a.n {
            // Done in its first poll: nothing to register.
            return true;
        }
        body.registered.store(a.n, Ordering::SeqCst);
        {
            let mut pending = body.exec().pending.lock();
            if body.finished.load(Ordering::SeqCst) < a.n {
                pending.insert(id, task);
            }
        }
        // A deadline or a cancel that came during the first poll.
        if cell.header.is_cancelled(a.n) {
            body.exec().cancel_pending(id);
        }
        true
    }
}
