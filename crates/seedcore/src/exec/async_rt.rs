//! The async executor: seedcore's own driver threads poll async tasks in
//! priority order, inside a tokio runtime that drives their timers and I/O.
//!
//! # Shape
//!
//! * A submitted attempt waits in `new`, the priority queue, until a driver
//!   has a free slot (`async.max_tasks` attempts run at once) and starts
//!   it: the attempt's future is built in the task record and polled once,
//!   on the driver, at once. Most futures finish in that first poll, and
//!   then the task has cost its one allocation and no trip through tokio's
//!   scheduler; the driver keeps the attempt's slot for its next start.
//! * A future that returns `Pending` is woken like any other: its waker is
//!   the task record, which waking pushes on `woken`, and a driver polls
//!   it again. Drivers serve `woken` before `new` (started attempts before
//!   waiting ones).
//! * Drivers run inside the runtime's context (`Handle::enter`), so a
//!   future may use tokio's timers, I/O and `tokio::spawn`; the runtime's
//!   own workers drive the timers and the I/O and run what is spawned.
//!
//! # Stopping an attempt
//!
//! An attempt still pending after its first poll is registered in
//! `pending`, by task id. A deadline or a cancel finds it there and marks
//! its future to be dropped (`CANCEL`, see [`AsyncBody`]); a driver drops
//! it in place and reports the end. A stop that came during the first poll
//! found nothing registered: the first poll looks at the task's cancel
//! token once it returns. A retry that begins while the timed-out future
//! is still there (its poll blocks) waits for it to be dropped: two
//! attempts of one task never run at once.
//!
//! # Shutdown
//!
//! 1. `stopped`: no new attempt starts; queued ones resolve
//!    `SystemShutdown`.
//! 2. Every pending attempt is cancelled; drivers drop the futures as they
//!    come round.
//! 3. Drivers exit once `woken` is empty, and are joined up to the
//!    deadline (one stuck in a poll is detached and counted).
//! 4. What is left in `woken` is dropped here; the runtime stops, and what
//!    it woke or left pending is dropped here too (a future holds its own
//!    task record, so none may be left behind).

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
use parking_lot::Mutex;
use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};
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
    woken: Injector<Arc<dyn Started>>,
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
    /// Attempts pending past their first poll: their task records, for a
    /// stop or a shutdown to find.
    pending: Mutex<HashMap<TaskId, Arc<dyn Started>>>,
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

    /// A woken future to poll, or an attempt to start. `spare`: the
    /// calling driver holds a free slot (see [`drive`](Self::drive)).
    fn next(&self, spare: &mut bool) -> Option<Work> {
        loop {
            match self.woken.steal() {
                Steal::Success(r) => {
                    // A poll may block the driver: its spare slot should
                    // not be held meanwhile.
                    self.give_back(spare);
                    return Some(Work::Poll(r));
                }
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
        if self.stopped.load(Ordering::Acquire)
            || self.new.is_empty()
            || !(std::mem::take(spare) || self.take_slot())
        {
            return None;
        }
        match self.new.pop() {
            Some(job) => Some(Work::Start(job)),
            None => {
                *spare = true;
                None
            }
        }
    }

    /// Frees the driver's spare slot, if it holds one.
    fn give_back(&self, spare: &mut bool) {
        if std::mem::take(spare) {
            self.slot_done();
        }
    }

    fn has_work(&self, spare: bool) -> bool {
        !self.woken.is_empty()
            || (!self.new.is_empty()
                && !self.stopped.load(Ordering::SeqCst)
                && (spare || self.running.load(Ordering::SeqCst) < self.limit))
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
        // A slot this driver took and still holds: an attempt that ends in
        // its first poll hands its slot back to the driver, for the next
        // start, so that a stream of short tasks does not bounce `running`
        // between the drivers. Given back before a poll of a woken future
        // (which may block) and before the driver sleeps.
        let mut spare = false;
        'outer: loop {
            if let Some(w) = self.next(&mut spare) {
                // A future that blocks on another task's future then keeps
                // the executor's capacity (see `Blocker`).
                let _in_task = InTask::enter();
                match w {
                    Work::Poll(r) => r.poll_again(),
                    Work::Start(job) => {
                        KEEP_SLOT.with(|k| k.set(KeepSlot::Offered));
                        let begun = job.run();
                        let back = KEEP_SLOT.with(|k| k.replace(KeepSlot::No));
                        // Not begun (resolved while queued, or parked on a
                        // lock), or ended in its first poll: the slot is
                        // free again.
                        spare = !begun || back == KeepSlot::Back;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                continue;
            }
            if self.exiting.load(Ordering::Acquire) || (standin && self.standin_retires()) {
                break;
            }
            for i in 0..SPIN_ROUNDS {
                if self.has_work(spare) {
                    continue 'outer;
                }
                if i < SPIN_ROUNDS / 2 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            self.give_back(&mut spare);
            self.idle.prepare();
            if self.has_work(false) || self.exiting.load(Ordering::SeqCst) {
                self.idle.cancel();
                continue;
            }
            self.idle.sleep(standin.then_some(STANDIN_NAP));
        }
        self.give_back(&mut spare);
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

    /// Puts a woken attempt on `woken` for a driver.
    fn push_woken(&self, started: Arc<dyn Started>) {
        self.woken.push(started);
        self.idle.notify_one();
    }

    /// The attempts registered in `pending` now.
    fn pending_now(&self) -> Vec<Arc<dyn Started>> {
        self.pending.lock().values().cloned().collect()
    }

    /// Drops every future left on `woken` or in `pending` (once the
    /// drivers have gone): a future holds its own record, so none may be
    /// left behind.
    fn close_left(&self) {
        loop {
            match self.woken.steal() {
                Steal::Success(r) => r.close(),
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
        for started in self.pending_now() {
            started.close();
        }
    }

    fn drain_new(&self) -> Vec<Arc<dyn Job>> {
        std::iter::from_fn(|| self.new.pop()).collect()
    }
}

/// Whether the driver on this thread takes back the slot of the attempt
/// it starts, if that attempt ends in its first poll.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeepSlot {
    No,
    Offered,
    /// The attempt ended and left its slot to the driver.
    Back,
}

thread_local! {
    static KEEP_SLOT: std::cell::Cell<KeepSlot> = const { std::cell::Cell::new(KeepSlot::No) };
}

/// Hands the slot of an attempt that ended in its first poll back to the
/// driver on this thread, if it offered to take it; `false` if not.
fn hand_slot_back() -> bool {
    KEEP_SLOT.with(|k| {
        k.get() == KeepSlot::Offered && {
            k.set(KeepSlot::Back);
            true
        }
    })
}

enum Work {
    Poll(Arc<dyn Started>),
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

    fn stop_attempt(&self, task: TaskId, attempt: u32, _why: StopReason) {
        // Not registered: in its first poll, which looks at the task's
        // cancel token once the poll returns.
        let started = self.pending.lock().get(&task).cloned();
        if let Some(started) = started {
            started.cancel(Some(attempt));
        }
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
        for started in self.pending_now() {
            started.cancel(None);
        }
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
        // What the drivers left: futures woken after they went, and any
        // still registered.
        self.close_left();
        if let Some(rt) = self.runtime.lock().take() {
            if Handle::try_current().is_ok() {
                // Blocking inside a runtime would panic; let it wind down.
                rt.shutdown_background();
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                rt.shutdown_timeout(left.max(Duration::from_millis(10)));
            }
        }
        // And those the runtime's wind-down woke.
        self.close_left();
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

/// The executor as an async task's body sees it.
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
        // holds an `Arc` to it and never drops an entry; the pointer is
        // reached only through a task record (its body; a waker is the
        // record itself), and every task holds an `Arc` to its scheduler.
        unsafe { self.0.as_ref() }
    }
}

/// A started attempt, as the drivers and the waker see its task record:
/// the record holds the attempt's future, so a start allocates nothing.
trait Started: Send + Sync {
    /// A driver polls the attempt's future again, or drops it if it was
    /// stopped.
    fn poll_again(self: Arc<Self>);
    /// Stops the live future if it belongs to an attempt up to `n` (any
    /// attempt if `None`): a driver drops it.
    fn cancel(self: Arc<Self>, n: Option<u32>);
    /// Drops the live future here, unless a driver is polling it (a
    /// shutdown's last step, once the drivers have gone).
    fn close(self: Arc<Self>);
}

/// The bits of [`AsyncBody::state`]; the attempt of the live future is
/// the upper half.
mod bits {
    /// A thread owns the future slot: it polls, installs or drops.
    pub(super) const RUNNING: u64 = 1;
    /// The record is in `woken`, or its owner puts it there on release.
    pub(super) const SCHEDULED: u64 = 2;
    /// The slot holds an attempt's future.
    pub(super) const LIVE: u64 = 4;
    /// The live future is to be dropped, not polled.
    pub(super) const CANCEL: u64 = 8;
    /// The record is in `pending` (it outlived its first poll).
    pub(super) const REGISTERED: u64 = 16;
    /// The attempt number in a state word.
    pub(super) fn attempt(s: u64) -> u32 {
        (s >> 32) as u32
    }
}
use bits::{CANCEL, LIVE, REGISTERED, RUNNING, SCHEDULED};

/// The body of an async task: a factory, so that a retry gets a fresh
/// future, and the slot of the live attempt's future.
///
/// # The slot
///
/// `live` is read and written only by the thread that set `RUNNING` in
/// `state` (or that installed a future into an empty slot, which sets
/// `RUNNING` with `LIVE`): a driver polling it, a driver dropping it, or a
/// shutdown closing it once the drivers have gone. Wakers and cancels only
/// set bits, and put the record on `woken` when they set `SCHEDULED` on a
/// record nobody runs, so the record is on `woken` at most once. A future
/// is never moved once installed: it is polled and dropped in place.
///
/// An attempt whose predecessor's future is still in the slot (a timed
/// out attempt still being dropped) waits in `next`; the thread that
/// empties the slot starts it.
pub(crate) struct AsyncBody<T, F, Fut> {
    factory: F,
    /// Not an `Arc`: one shared reference count bumped per task costs more
    /// than the rest of a start.
    exec: ExecRef,
    state: AtomicU64,
    next: Mutex<Option<Attempt>>,
    live: UnsafeCell<Option<(Attempt, Fut)>>,
    _out: PhantomData<fn() -> T>,
}

// SAFETY: the future is reached only by the one thread that owns the slot
// (see the type's docs), so it needs only to be `Send`; the factory is
// shared and called from any driver.
unsafe impl<T, F: Send + Sync, Fut: Send> Sync for AsyncBody<T, F, Fut> {}

impl<T, F, Fut> AsyncBody<T, F, Fut> {
    /// A body run by `exec`, which must be the executor registered in the
    /// scheduler of the task this body goes into.
    pub(crate) fn new(exec: &AsyncExec, factory: F) -> Self {
        AsyncBody {
            factory,
            exec: ExecRef(NonNull::from(exec)),
            state: AtomicU64::new(0),
            next: Mutex::new(None),
            live: UnsafeCell::new(None),
            _out: PhantomData,
        }
    }

    fn exec(&self) -> &AsyncExec {
        self.exec.get()
    }

    /// Moves `state` by `f` (`None`: leaves it); the state it moved from.
    fn update(&self, f: impl FnMut(u64) -> Option<u64>) -> Result<u64, u64> {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, f)
    }

    /// Takes the slot of a live future nobody owns, setting `also`
    /// (and taking the record off its `SCHEDULED` mark); the state before.
    fn own(&self, also: u64) -> Result<u64, u64> {
        self.update(|s| {
            (s & LIVE != 0 && s & RUNNING == 0).then_some((s | RUNNING | also) & !SCHEDULED)
        })
    }
}

type Cell<T, F, Fut> = TaskCell<AsyncBody<T, F, Fut>>;

impl<T, F, Fut> AsyncBody<T, F, Fut>
where
    T: Send + 'static,
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, TaskError>> + Send + 'static,
{
    /// Installs attempt `a`'s future into the empty slot and polls it
    /// once, here; or leaves `a` in `next` while the slot is taken.
    fn begin_attempt(cell: &Arc<Cell<T, F, Fut>>, a: Attempt) {
        let body = cell.body();
        if body.exec().stopped.load(Ordering::SeqCst) {
            // No new attempt starts once the executor stops.
            cell.end(a, Err(TaskError::Cancelled));
            body.exec().slot_done();
            return;
        }
        let owned = RUNNING | LIVE | (u64::from(a.n) << 32);
        while body.update(|s| (s & LIVE == 0).then_some(owned)).is_err() {
            let mut next = body.next.lock();
            // Under the lock: the thread that empties the slot clears
            // `LIVE` before it looks at `next`.
            if body.state.load(Ordering::Acquire) & LIVE != 0 {
                *next = Some(a);
                drop(next);
                // The old attempt has ended; make sure its future goes.
                cell.clone().cancel(Some(a.n));
                return;
            }
        }
        // The factory runs here, inside the runtime's context: it may build
        // timers and I/O.
        let ctx = TaskContext::new(cell.clone(), a.n);
        let fut = match catch_unwind(AssertUnwindSafe(|| (body.factory)(ctx))) {
            Ok(fut) => fut,
            Err(p) => {
                let out = Err(TaskError::Panicked(panic_message(&*p).into()));
                return Self::ended(cell, a, out, true);
            }
        };
        // SAFETY: this thread owns the slot (`RUNNING`), which is empty.
        unsafe { *body.live.get() = Some((a, fut)) };
        match Self::poll_live(cell) {
            Some(out) => Self::finish(cell, out, true),
            None => {
                // Pending: registered, so that a stop or a shutdown finds it.
                let exec = body.exec();
                let me: Arc<dyn Started> = cell.clone();
                exec.pending.lock().insert(cell.header.id, me);
                // A deadline or a cancel that came during the first poll
                // found nothing registered; a shutdown drained `pending`.
                let stop = cell.header.is_cancelled(a.n) || exec.stopped.load(Ordering::SeqCst);
                let cancel = if stop { CANCEL } else { 0 };
                body.state.fetch_or(REGISTERED | cancel, Ordering::SeqCst);
                Self::release(cell);
            }
        }
    }

    /// Polls the live future once; its output if it finished (or
    /// panicked). The caller owns the slot, which holds a future.
    fn poll_live(cell: &Arc<Cell<T, F, Fut>>) -> Option<Result<T, TaskError>> {
        let waker = futures_util::task::waker_ref(cell);
        let mut cx = Context::from_waker(&waker);
        // SAFETY: the caller owns the slot; the future lives in the task
        // record, which never moves, until it is dropped in place.
        let fut = unsafe {
            let (_, fut) = (*cell.body().live.get())
                .as_mut()
                .expect("a live attempt has a future");
            Pin::new_unchecked(fut)
        };
        match catch_unwind(AssertUnwindSafe(|| fut.poll(&mut cx))) {
            Ok(Poll::Ready(out)) => Some(out),
            Ok(Poll::Pending) => None,
            Err(p) => Some(Err(TaskError::Panicked(panic_message(&*p).into()))),
        }
    }

    /// Gives up the slot after a poll that left the future pending: the
    /// record goes back on `woken` if it was woken meanwhile, and the
    /// future is dropped here if it was stopped.
    fn release(cell: &Arc<Cell<T, F, Fut>>) {
        let body = cell.body();
        match body.update(|s| (s & CANCEL == 0).then_some(s & !RUNNING)) {
            Err(_) => Self::finish(cell, Err(TaskError::Cancelled), false),
            Ok(s) if s & SCHEDULED != 0 => body.exec().push_woken(cell.clone()),
            Ok(_) => {}
        }
    }

    /// Ends the live attempt with `out`: drops its future in place, empties
    /// the slot, reports the end, frees the executor slot, and starts the
    /// attempt waiting in `next`. The caller owns the slot.
    fn finish(cell: &Arc<Cell<T, F, Fut>>, out: Result<T, TaskError>, first: bool) {
        let body = cell.body();
        // SAFETY: the caller owns the slot.
        let a = unsafe { drop_in_slot(body.live.get()) };
        Self::ended(cell, a.expect("a live attempt has a future"), out, first);
    }

    /// The rest of [`finish`](Self::finish), for attempt `a`, whose slot
    /// holds no future now (or never held one: its factory panicked).
    /// `first`: it ends in the first poll, which the driver's start runs
    /// (the driver may take its slot back).
    fn ended(cell: &Arc<Cell<T, F, Fut>>, a: Attempt, out: Result<T, TaskError>, first: bool) {
        let body = cell.body();
        let exec = body.exec();
        if body.state.load(Ordering::Acquire) & REGISTERED != 0 {
            // Before the slot empties: the next attempt registers under the
            // same id once it is installed.
            exec.pending.lock().remove(&cell.header.id);
        }
        body.state.store(u64::from(a.n) << 32, Ordering::Release);
        cell.end(a, out);
        if !(first && hand_slot_back()) {
            exec.slot_done();
        }
        let next = body.next.lock().take();
        if let Some(next) = next {
            Self::begin_attempt(cell, next);
        }
    }
}

/// Drops the future in `slot` in place (a panic in its drop is caught) and
/// empties the slot; the attempt it belonged to.
///
/// # Safety
///
/// The caller owns the slot.
unsafe fn drop_in_slot<Fut>(slot: *mut Option<(Attempt, Fut)>) -> Option<Attempt> {
    /// Empties the slot even if the future's drop panics, so that it is
    /// never dropped twice.
    struct Empty<Fut>(*mut Option<(Attempt, Fut)>);
    impl<Fut> Drop for Empty<Fut> {
        fn drop(&mut self) {
            // SAFETY: the value was dropped in place (or is being
            // unwound from); writing does not drop it again.
            unsafe { std::ptr::write(self.0, None) };
        }
    }
    // SAFETY: as the caller promises.
    let a = unsafe { (*slot).as_ref().map(|(a, _)| *a) }?;
    let dropped = catch_unwind(AssertUnwindSafe(|| {
        let _empty = Empty(slot);
        // SAFETY: the future is dropped where it was pinned; `_empty`
        // marks the slot empty afterwards.
        unsafe { std::ptr::drop_in_place(slot) };
    }));
    if let Err(p) = dropped {
        log::error!(
            "seedcore: an async task's future panicked while dropped: {}",
            panic_message(&*p)
        );
    }
    Some(a)
}

impl<T, F, Fut> Started for Cell<T, F, Fut>
where
    T: Send + 'static,
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, TaskError>> + Send + 'static,
{
    fn poll_again(self: Arc<Self>) {
        // Not live or owned: not reached while the record is on `woken`
        // (see the body's docs); nothing to poll.
        let Ok(s) = self.body().own(0) else {
            return;
        };
        if s & CANCEL != 0 {
            return AsyncBody::finish(&self, Err(TaskError::Cancelled), false);
        }
        match AsyncBody::poll_live(&self) {
            Some(out) => AsyncBody::finish(&self, out, false),
            None => AsyncBody::release(&self),
        }
    }

    fn cancel(self: Arc<Self>, n: Option<u32>) {
        let exec = self.body().exec;
        let Ok(s) = self.body().update(|s| {
            let newer = n.is_some_and(|n| bits::attempt(s) > n);
            if s & LIVE == 0 || s & CANCEL != 0 || newer {
                return None;
            }
            // Nobody runs it and it is not on `woken`: it goes there.
            let idle = s & (RUNNING | SCHEDULED) == 0;
            Some(s | CANCEL | if idle { SCHEDULED } else { 0 })
        }) else {
            return;
        };
        if s & (RUNNING | SCHEDULED) == 0 {
            exec.get().push_woken(self);
        }
    }

    fn close(self: Arc<Self>) {
        if self.body().own(CANCEL).is_ok() {
            AsyncBody::finish(&self, Err(TaskError::Cancelled), false);
        }
    }
}

/// The waker of an async task is its record: waking puts it on `woken`
/// unless it is there already or being polled (its poller then puts it
/// back).
impl<T, F, Fut> futures_util::task::ArcWake for Cell<T, F, Fut>
where
    T: Send + 'static,
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, TaskError>> + Send + 'static,
{
    fn wake_by_ref(me: &Arc<Self>) {
        let body = me.body();
        // Not live (a late waker), or already due for a poll: nothing to do.
        let woke = body.update(|s| (s & LIVE != 0 && s & SCHEDULED == 0).then_some(s | SCHEDULED));
        if woke.is_ok_and(|s| s & RUNNING == 0) {
            body.exec().push_woken(me.clone());
        }
    }
}

impl<T, F, Fut> Body for AsyncBody<T, F, Fut>
where
    T: Send + 'static,
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, TaskError>> + Send + 'static,
{
    type Output = T;

    /// Builds the attempt's future in the task record and polls it once,
    /// here, on the driver.
    fn start(cell: &Arc<TaskCell<Self>>, a: Attempt) -> bool {
        Self::begin_attempt(cell, a);
        true
    }
}
