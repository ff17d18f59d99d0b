//! The thread pool: core threads started up front, replacements for threads
//! stuck past a deadline (up to max), idle retirement above core.
//!
//! # Capacity
//!
//! `alive` counts threads; `abandoned` those whose attempt passed its
//! deadline but which still run it (thread code cannot be stopped from
//! outside). Capacity is `alive - abandoned`. When a thread is abandoned and
//! capacity falls under `core`, a replacement starts, as long as `alive`
//! stays within `max`. When an abandoned thread finally returns, it rejoins
//! the pool if capacity is short, and exits otherwise. These counters change
//! only under `state`, never on the per-task path.
//!
//! # Shutdown
//!
//! 1. The system resolves or drains every queued task first.
//! 2. [`ThreadPool::stop`] sets `stopping` and wakes every sleeper.
//! 3. Each thread exits after its current task; `stop` joins those that
//!    exit before the deadline and detaches (and reports) the rest.

pub(crate) mod join;

use crate::options::{Priority, TaskOptions, LEVELS};
use crate::sched::idle::Idle;
use crate::sched::ShutdownMode;
use crate::sched::{Executor, ExecutorStats, PriorityQueue, Runnable, StopReport, WorkerInfo};
use crate::task::{
    off_runtime, set_blocker, spin_until, Blocker, EnvRef, ExecutorKind, Header, Job, StopReason,
    TaskId,
};
use crossbeam_deque::{Steal, Stealer, Worker};
use join::JoinJob;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Rounds of busy-polling before a thread with nothing to do sleeps: most
/// gaps in a stream of tasks are shorter than a futex wake-up.
const SPIN_ROUNDS: u32 = 64;

/// One pool thread, as a deadline sees it when the thread's task overruns
/// and as the shutdown sees it when the thread does not stop.
struct WorkerSlot {
    abandoned: AtomicBool,
    /// The id of the task whose attempt this thread runs now (0: none).
    running: AtomicU64,
    thread: std::thread::ThreadId,
    /// The OS thread id (0 where the OS has none to give).
    tid: u32,
    /// The thread's name (`{system}-{index}`).
    name: String,
    /// The task this thread runs now.
    current: Mutex<Option<Arc<dyn Job>>>,
    /// Tasks this thread has run.
    done: AtomicU64,
    /// The priority level of the task this thread runs (the level a join
    /// inside it queues its half at).
    level: std::sync::atomic::AtomicU8,
    /// The far end of this thread's deque of join halves, where idle
    /// threads steal from.
    halves: Stealer<Arc<JoinJob>>,
}

thread_local! {
    /// Whether this thread is a pool thread (a shutdown started from a task
    /// must not wait for that task, nor for its own thread).
    static IN_POOL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The pool (by address), slot and deque of join halves of the
    /// calling pool thread: a join inside a task queues its half there,
    /// and a join waiting on it runs that pool's queued work meanwhile.
    static WORKER: std::cell::RefCell<Option<PoolThread>> =
        const { std::cell::RefCell::new(None) };
}

/// A pool thread as it knows itself.
struct PoolThread {
    /// Its pool, by address.
    pool: usize,
    slot: Arc<WorkerSlot>,
    /// The near end of its deque of join halves.
    halves: Worker<Arc<JoinJob>>,
    /// The other threads of its pool as of `ThreadPool::slots_epoch`
    /// `.0`: looking at their deques between two tasks then takes no lock.
    peers: std::cell::RefCell<(u64, Vec<Arc<WorkerSlot>>)>,
}

/// The calling thread's OS id, for the monitor.
pub(crate) fn os_thread_id() -> u32 {
    #[cfg(target_os = "linux")]
    {
        rustix::thread::gettid().as_raw_nonzero().get() as u32
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Whether the calling thread is a pool thread.
fn in_pool_thread() -> bool {
    IN_POOL.with(|c| c.get())
}

struct PoolState {
    alive: usize,
    abandoned: usize,
    /// Threads blocked in a wait on a future (see [`Blocker`]).
    blocked: usize,
    next_index: usize,
    handles: Vec<JoinHandle<()>>,
    /// Threads that left `work` and only have to be joined.
    exited: Vec<std::thread::ThreadId>,
    /// The slots of the threads in `work`.
    slots: Vec<Arc<WorkerSlot>>,
}

impl PoolState {
    /// Threads free to take work: neither stuck past a deadline nor
    /// blocked in a wait (a thread can be both; it counts out once).
    fn capacity(&self) -> usize {
        self.alive.saturating_sub(self.abandoned + self.blocked)
    }
}

/// Most threads the pool starts past `max` to stand in for threads blocked
/// in nested waits; past that a nested wait waits for a thread to free up.
const MAX_COMPENSATING: usize = 256;

/// A pool thread that waits on a future (a nested task, a process or an
/// async task) would hold its place while the work it waits for sits in the
/// queue behind it: with every thread waiting, nothing runs. As tokio's
/// `block_in_place` and ForkJoinPool's `ManagedBlocker` do, the pool starts
/// a compensating thread past `max` for the time of the wait; once the
/// wait ends, the extra thread retires after `keep_alive` idle.
///
/// The other way, running queued work on the waiting thread (rayon's), is
/// not taken: a queued task run inside the wait would run to its end before
/// the wait could return, so a `wait_timeout` would overrun its timeout by
/// that task's run time, the waiting task's own deadline and cancel would
/// be tracked against the wrong task (the thread's slot records one running
/// task), and a low-priority queued task could run ahead of a higher one
/// that another thread would have taken first.
///
/// A join's wait does help (`join.rs`, [`ThreadPool::wait_helping`]): it
/// has no timeout, and the half it waits for already runs on another
/// thread, so the waiting thread's place is free to lend.
impl Blocker for ThreadPool {
    fn begin(&self) {
        let Some(me) = self.me.upgrade() else { return };
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let mut st = self.state.lock();
        st.blocked += 1;
        if st.capacity() < self.target() && st.alive < self.max + MAX_COMPENSATING {
            if let Err(e) = me.spawn_locked(&mut st) {
                log::error!("seedcore: could not start a thread for a blocked one: {e}");
            }
        }
    }

    fn end(&self) {
        let mut st = self.state.lock();
        st.blocked = st.blocked.saturating_sub(1);
    }
}

/// The thread pool of one system.
pub(crate) struct ThreadPool {
    queue: PriorityQueue<Arc<dyn Job>>,
    idle: Idle,
    state: Mutex<PoolState>,
    /// A thread entered `work`.
    started: Condvar,
    exited: Condvar,
    stopping: AtomicBool,
    core: usize,
    max: usize,
    /// The capacity the pool keeps, within `core..=max` (see `resize`).
    target: AtomicUsize,
    /// Idle threads asked to exit by a shrink and not yet gone.
    shrink: AtomicUsize,
    keep_alive: Duration,
    name: String,
    stack_size: Option<usize>,
    init: Option<ThreadInit>,
    /// Why the pool cannot run tasks (its initializer failed).
    broken: Mutex<Option<String>>,
    /// `broken` is set (read on the submit path without the lock).
    is_broken: AtomicBool,
    /// Pool threads parked in a join's wait; a push with no idle thread
    /// to wake wakes one of these.
    helpers: Mutex<Vec<std::thread::Thread>>,
    /// `helpers.len()`, read without the lock on the submit path.
    helping: AtomicUsize,
    /// Changes of `state.slots` (counted under the pool's lock), so that
    /// a thread looks at the others' deques through its own copy of the
    /// list and takes the lock only when it changed.
    slots_epoch: AtomicU64,
    /// The headers of join halves, one per priority level, made at the
    /// first join (see `join.rs`).
    join_headers: std::sync::OnceLock<Box<[Header]>>,
    me: std::sync::Weak<ThreadPool>,
}

/// Code each pool thread runs when it starts; an error is its message.
#[derive(Clone)]
pub(crate) struct ThreadInit(Arc<dyn Fn() -> Result<(), String> + Send + Sync>);

impl ThreadInit {
    pub(crate) fn new(f: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Self {
        ThreadInit(Arc::new(f))
    }

    /// Runs it; a panic counts as a failure with its message.
    fn run(&self) -> Result<(), String> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.0)())) {
            Ok(r) => r,
            Err(p) => Err(format!("panicked: {}", crate::error::panic_message(&*p))),
        }
    }
}

impl std::fmt::Debug for ThreadInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThreadInit")
    }
}

/// The thread pool's settings.
pub(crate) struct PoolConfig {
    pub(crate) init: Option<ThreadInit>,
    pub(crate) core: usize,
    pub(crate) max: usize,
    pub(crate) keep_alive: Duration,
    pub(crate) name: String,
    pub(crate) stack_size: Option<usize>,
}

impl ThreadPool {
    pub(crate) fn start(cfg: PoolConfig) -> std::io::Result<Arc<ThreadPool>> {
        let pool = Arc::new_cyclic(|me| ThreadPool {
            queue: PriorityQueue::new(),
            idle: Idle::new(),
            state: Mutex::new(PoolState {
                alive: 0,
                abandoned: 0,
                blocked: 0,
                next_index: 0,
                handles: Vec::new(),
                exited: Vec::new(),
                slots: Vec::new(),
            }),
            started: Condvar::new(),
            exited: Condvar::new(),
            stopping: AtomicBool::new(false),
            core: cfg.core,
            max: cfg.max,
            target: AtomicUsize::new(cfg.core),
            shrink: AtomicUsize::new(0),
            keep_alive: cfg.keep_alive,
            name: cfg.name,
            stack_size: cfg.stack_size,
            init: cfg.init,
            broken: Mutex::new(None),
            is_broken: AtomicBool::new(false),
            helpers: Mutex::new(Vec::new()),
            helping: AtomicUsize::new(0),
            slots_epoch: AtomicU64::new(0),
            join_headers: std::sync::OnceLock::new(),
            me: me.clone(),
        });
        {
            let mut st = pool.state.lock();
            for _ in 0..pool.core {
                pool.spawn_locked(&mut st)?;
            }
            // The core threads are ready (and visible to the monitor) when
            // the system is; a thread takes well under a millisecond to start.
            let deadline = Instant::now() + Duration::from_secs(5);
            while st.slots.len() < pool.core
                && !pool.is_broken.load(Ordering::Acquire)
                && !pool.started.wait_until(&mut st, deadline).timed_out()
            {}
        }
        Ok(pool)
    }

    fn spawn_locked(self: &Arc<Self>, st: &mut PoolState) -> std::io::Result<()> {
        if self.is_broken.load(Ordering::Acquire) {
            // A failing initializer fails every thread: start none.
            return Ok(());
        }
        let pool = self.clone();
        let mut b = std::thread::Builder::new().name(format!("{}-{}", self.name, st.next_index));
        if let Some(s) = self.stack_size {
            b = b.stack_size(s);
        }
        let h = b.spawn(move || pool.work())?;
        st.next_index += 1;
        st.alive += 1;
        let exited = std::mem::take(&mut st.exited);
        st.handles.retain(|h| !exited.contains(&h.thread().id()));
        st.handles.push(h);
        Ok(())
    }

    /// Queues `job` and wakes a sleeping thread if there is one (else a
    /// thread parked in a join, which helps meanwhile).
    fn push(&self, job: Arc<dyn Job>) {
        let p = job.header().priority();
        self.queue.push(p, job);
        if !self.idle.notify_one() {
            self.wake_helper();
        }
        // SeqCst, as the store in `initialize`: either this sees the flag,
        // or the initializer's drain sees this task.
        if self.is_broken.load(Ordering::SeqCst) {
            self.fail_broken();
        }
        // After the SeqCst fence in `notify_one`: either the shutdown's last
        // drain sees this task, or this sees the shutdown and drains.
        if self.stopping.load(Ordering::SeqCst) {
            for job in self.drain_jobs() {
                job.fail(crate::TaskError::SystemShutdown);
            }
        }
    }

    /// Resolves every queued task with the pool's breakage.
    fn fail_broken(&self) {
        let Some(why) = self.broken.lock().clone() else {
            return;
        };
        for job in self.drain_jobs() {
            job.fail(crate::TaskError::PoolBroken(why.clone()));
        }
    }

    /// Runs the initializer on a new thread; `false` if it failed (the
    /// pool is then broken and the thread must exit).
    fn initialize(&self) -> bool {
        let Some(init) = &self.init else { return true };
        match init.run() {
            Ok(()) => true,
            Err(e) => {
                let why = format!("the thread initializer failed: {e}");
                log::error!("seedcore: {why}");
                self.broken.lock().get_or_insert(why);
                self.is_broken.store(true, Ordering::SeqCst);
                self.fail_broken();
                false
            }
        }
    }

    /// Runs `job` on the calling thread, recorded in its `slot`.
    fn run_job(slot: &WorkerSlot, job: Arc<dyn Job>) {
        // The slot keeps the task until the next one replaces it, or until
        // the thread goes idle: one lock per task, not two. A finished
        // task found there at shutdown is already resolved, and failing it
        // again is a no-op.
        *slot.current.lock() = Some(job.clone());
        slot.running
            .store(job.header().id.as_u64(), Ordering::Release);
        slot.level
            .store(job.header().state.level, Ordering::Relaxed);
        job.run();
        slot.running.store(0, Ordering::Release);
        slot.done.fetch_add(1, Ordering::Relaxed);
    }

    /// `f` of the calling thread, if it is a thread of this pool.
    fn with_own<R>(&self, f: impl FnOnce(&PoolThread) -> R) -> Option<R> {
        let me = self as *const ThreadPool as usize;
        WORKER.with(|w| w.borrow().as_ref().filter(|t| t.pool == me).map(f))
    }

    /// `f` of the calling thread's slot, if it is a thread of this pool.
    fn with_own_slot<R>(&self, f: impl FnOnce(&Arc<WorkerSlot>) -> R) -> Option<R> {
        self.with_own(|t| f(&t.slot))
    }

    /// The priority of the task the calling thread runs, if it is a
    /// thread of this pool.
    fn current_priority(&self) -> Option<Priority> {
        self.with_own_slot(|s| Priority::from_level(s.level.load(Ordering::Relaxed)))
    }

    /// The header a join half queued at `p` shares with every other one:
    /// it lives as long as the pool.
    fn join_header(&self, env: &EnvRef, exec: u8, p: Priority) -> *const Header {
        let headers = self.join_headers.get_or_init(|| {
            (0..LEVELS as u8)
                .map(|level| {
                    let p = Priority::new(level).unwrap_or(Priority::NORMAL);
                    Header::new(TaskId(0), TaskOptions::new().priority(p), env, exec)
                })
                .collect()
        });
        &headers[usize::from(p.level()).min(headers.len() - 1)]
    }

    /// Blocks until `done()`. A thread of this pool runs the pool's queued
    /// work meanwhile (most urgent first; a task that needs a lock the
    /// waiting task holds parks as a lock waiter, as anywhere) and parks
    /// when there is none; any other thread parks. Whoever makes `done()`
    /// true must unpark the waiting thread.
    fn wait_helping(&self, done: &dyn Fn() -> bool) {
        let Some(slot) = self.with_own_slot(Arc::clone) else {
            if !spin_until(done) {
                off_runtime(|| {
                    while !done() {
                        std::thread::park();
                    }
                });
            }
            return;
        };
        // What the slot recorded before: restored after each helped job,
        // so that the monitor and a deadline see the waiting task again.
        let outer_job = slot.current.lock().clone();
        let outer_id = slot.running.load(Ordering::Acquire);
        let outer_level = slot.level.load(Ordering::Relaxed);
        loop {
            if done() {
                return;
            }
            if let Some(job) = self.next_job() {
                Self::run_job(&slot, job);
                *slot.current.lock() = outer_job.clone();
                slot.running.store(outer_id, Ordering::Release);
                slot.level.store(outer_level, Ordering::Relaxed);
                continue;
            }
            if self.has_work() || spin_until(|| done() || self.has_work()) {
                continue;
            }
            // Announce, then look again: a push either sees the count or
            // its job is seen here (the fences pair with `notify_one`'s).
            self.helping.fetch_add(1, Ordering::SeqCst);
            self.helpers.lock().push(std::thread::current());
            std::sync::atomic::fence(Ordering::SeqCst);
            if !done() && !self.has_work() {
                std::thread::park();
            }
            let me = std::thread::current().id();
            self.helpers.lock().retain(|t| t.id() != me);
            self.helping.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Queues a join's half: on the calling thread's own deque if it is a
    /// thread of this pool (`true`), else on the pool's queue. Wakes a
    /// sleeping thread either way, so that it can take it.
    fn push_half(&self, job: &Arc<JoinJob>) -> bool {
        let local = self.with_own(|t| t.halves.push(job.clone())).is_some();
        if !local {
            self.push(job.clone());
        } else if !self.idle.notify_one() {
            self.wake_helper();
        }
        local
    }

    /// Takes `job` back off the calling thread's deque if nobody took it
    /// (it is then on top: the joins inside its `a` took theirs off).
    fn take_back_half(&self, job: &Arc<JoinJob>) {
        self.with_own(|t| match t.halves.pop() {
            Some(top) if Arc::ptr_eq(&top, job) => {}
            // Ours was taken; this one is older: it stays on top.
            Some(older) => t.halves.push(older),
            None => {}
        });
    }

    /// The next job for the calling thread of this pool: its own newest
    /// join half, then a half of another thread running work at least as
    /// urgent as anything queued, then the most urgent queued job, then any
    /// half.
    fn next_job(&self) -> Option<Arc<dyn Job>> {
        self.with_own(|t| {
            if let Some(j) = t.halves.pop() {
                return Some(j as Arc<dyn Job>);
            }
            let peers = self.peers(t);
            if peers.iter().all(|s| s.halves.is_empty()) {
                return self.queue.pop();
            }
            let urgent = self.queue.most_urgent_level();
            urgent
                .and_then(|level| Self::steal_half(&peers, Some(level)))
                .or_else(|| self.queue.pop())
                .or_else(|| Self::steal_half(&peers, None))
        })
        .flatten()
    }

    /// The other threads of this pool, as `t` (the calling thread) last
    /// saw them, refreshed if they changed since.
    fn peers<'a>(&self, t: &'a PoolThread) -> std::cell::Ref<'a, Vec<Arc<WorkerSlot>>> {
        let epoch = self.slots_epoch.load(Ordering::Acquire);
        if t.peers.borrow().0 != epoch {
            let st = self.state.lock();
            let others = st
                .slots
                .iter()
                .filter(|s| !Arc::ptr_eq(s, &t.slot))
                .cloned()
                .collect();
            *t.peers.borrow_mut() = (self.slots_epoch.load(Ordering::Acquire), others);
        }
        std::cell::Ref::map(t.peers.borrow(), |p| &p.1)
    }

    /// A join half from one of `peers`' deques whose task's level is at
    /// most `up_to` (any, without it).
    fn steal_half(peers: &[Arc<WorkerSlot>], up_to: Option<u8>) -> Option<Arc<dyn Job>> {
        for s in peers {
            if s.halves.is_empty() || up_to.is_some_and(|l| s.level.load(Ordering::Relaxed) > l) {
                continue;
            }
            loop {
                match s.halves.steal() {
                    Steal::Success(j) => return Some(j),
                    Steal::Empty => break,
                    Steal::Retry => std::hint::spin_loop(),
                }
            }
        }
        None
    }

    /// Whether anything waits for the calling thread of this pool: a
    /// queued job or a join half on a deque.
    fn has_work(&self) -> bool {
        if !self.queue.is_empty() {
            return true;
        }
        self.with_own(|t| {
            !t.halves.is_empty() || self.peers(t).iter().any(|s| !s.halves.is_empty())
        })
        .unwrap_or_else(|| self.state.lock().slots.iter().any(|s| !s.halves.is_empty()))
    }

    /// Unparks one pool thread parked in a join's wait, if there is one.
    fn wake_helper(&self) {
        if self.helping.load(Ordering::SeqCst) == 0 {
            return;
        }
        if let Some(t) = self.helpers.lock().pop() {
            t.unpark();
        }
    }

    /// Removes every queued task (shutdown).
    fn drain_jobs(&self) -> Vec<Arc<dyn Job>> {
        std::iter::from_fn(|| self.queue.pop()).collect()
    }

    /// `slot`'s thread is stuck in a task past its deadline: count it out
    /// of capacity and start a replacement if capacity is short.
    fn abandon(self: &Arc<Self>, slot: &WorkerSlot) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let mut st = self.state.lock();
        if slot.abandoned.swap(true, Ordering::AcqRel) {
            return;
        }
        st.abandoned += 1;
        if st.capacity() < self.target() && st.alive < self.max {
            if let Err(e) = self.spawn_locked(&mut st) {
                log::error!("seedcore: could not start a replacement thread: {e}");
            }
        }
    }

    /// An abandoned thread came back; `true` if it should exit.
    fn rejoin(&self, slot: &WorkerSlot) -> bool {
        let mut st = self.state.lock();
        slot.abandoned.store(false, Ordering::Release);
        st.abandoned -= 1;
        self.above_target(&st)
    }

    /// A thread idle for `keep_alive` above core; `true` if it should exit.
    fn may_retire(&self) -> bool {
        self.above_target(&self.state.lock())
    }

    /// Whether the pool's capacity (threads not stuck) is above its target.
    fn above_target(&self, st: &PoolState) -> bool {
        st.capacity() > self.target()
    }

    fn target(&self) -> usize {
        self.target.load(Ordering::Acquire)
    }

    /// Sets the capacity to keep (clamped to `core..=max`): threads start
    /// at once to reach it; idle threads above it exit now rather than
    /// after `keep_alive`. Returns the new target.
    fn set_target(self: &Arc<Self>, target: usize) -> usize {
        let target = target.clamp(self.core, self.max);
        self.target.store(target, Ordering::Release);
        let mut st = self.state.lock();
        let capacity = st.capacity();
        if capacity < target {
            for _ in capacity..target {
                if st.alive >= self.max {
                    break;
                }
                if let Err(e) = self.spawn_locked(&mut st) {
                    log::error!("seedcore: could not start a pool thread: {e}");
                    break;
                }
            }
        } else if capacity > target {
            self.shrink.store(capacity - target, Ordering::Release);
            drop(st);
            self.idle.notify_all();
        }
        target
    }

    /// Takes one pending shrink request, if this thread may exit for it.
    fn take_shrink(&self) -> bool {
        let mut n = self.shrink.load(Ordering::Acquire);
        while n > 0 {
            if !self.may_retire() {
                self.shrink.store(0, Ordering::Release);
                return false;
            }
            match self
                .shrink
                .compare_exchange(n, n - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
        false
    }

    fn work(self: Arc<Self>) {
        IN_POOL.with(|c| c.set(true));
        let me: std::sync::Weak<dyn Blocker> = self.me.clone();
        set_blocker(me);
        if !self.initialize() {
            let mut st = self.state.lock();
            st.alive -= 1;
            st.exited.push(std::thread::current().id());
            self.started.notify_all();
            self.exited.notify_all();
            return;
        }
        let halves = Worker::new_lifo();
        let slot = Arc::new(WorkerSlot {
            abandoned: AtomicBool::new(false),
            running: AtomicU64::new(0),
            thread: std::thread::current().id(),
            tid: os_thread_id(),
            name: std::thread::current().name().unwrap_or_default().to_owned(),
            current: Mutex::new(None),
            done: AtomicU64::new(0),
            level: std::sync::atomic::AtomicU8::new(Priority::NORMAL.level()),
            halves: halves.stealer(),
        });
        {
            let mut st = self.state.lock();
            st.slots.push(slot.clone());
            self.slots_epoch.fetch_add(1, Ordering::Release);
        }
        let me = Arc::as_ptr(&self) as usize;
        WORKER.with(|w| {
            *w.borrow_mut() = Some(PoolThread {
                pool: me,
                slot: slot.clone(),
                halves,
                peers: std::cell::RefCell::new((u64::MAX, Vec::new())),
            })
        });
        self.started.notify_all();
        'outer: loop {
            if let Some(job) = self.next_job() {
                Self::run_job(&slot, job);
                if slot.abandoned.load(Ordering::Acquire) && self.rejoin(&slot) {
                    break;
                }
                continue;
            }
            if self.stopping.load(Ordering::Acquire) {
                break;
            }
            for i in 0..SPIN_ROUNDS {
                if self.has_work() {
                    continue 'outer;
                }
                if i < SPIN_ROUNDS / 2 {
                    for _ in 0..(1 << (i / 8)) {
                        std::hint::spin_loop();
                    }
                } else {
                    std::thread::yield_now();
                }
            }
            slot.current.lock().take();
            self.idle.prepare();
            if self.has_work() || self.stopping.load(Ordering::Acquire) {
                self.idle.cancel();
                continue;
            }
            // A shrink asked for while this thread was busy or spinning woke
            // only the threads asleep then: look before sleeping, or this
            // one would stay until its keep-alive. (The request is stored
            // before the wake-up's fence, which pairs with `prepare`'s.)
            if self.take_shrink() {
                self.idle.cancel();
                break;
            }
            let above_target = self.above_target(&self.state.lock());
            let timeout = above_target.then_some(self.keep_alive);
            let notified = self.idle.sleep(timeout);
            if !notified && self.may_retire() {
                break;
            }
            if self.take_shrink() {
                if notified {
                    // The wake-up may have been meant for work: pass it on.
                    self.idle.notify_one();
                }
                break;
            }
        }
        WORKER.with(|w| w.borrow_mut().take());
        let mut st = self.state.lock();
        st.alive -= 1;
        if slot.abandoned.load(Ordering::Acquire) {
            st.abandoned -= 1;
        }
        st.exited.push(std::thread::current().id());
        st.slots.retain(|s| !Arc::ptr_eq(s, &slot));
        self.slots_epoch.fetch_add(1, Ordering::Release);
        self.exited.notify_all();
    }

    /// Steps 2 and 3 of shutdown; returns how many threads were detached
    /// because they were still running at `deadline`.
    fn stop_threads(&self, deadline: Instant) -> usize {
        self.stopping.store(true, Ordering::SeqCst);
        self.idle.notify_all();
        // A shutdown started by a task does not wait for its own thread.
        let own = usize::from(in_pool_thread());
        let mut st = self.state.lock();
        while st.alive > own {
            if self.exited.wait_until(&mut st, deadline).timed_out() {
                break;
            }
            // A thread may have gone to sleep between the flag and the
            // wake-up above; wake again until all are out.
            self.idle.notify_all();
        }
        let current = std::thread::current().id();
        let handles = std::mem::take(&mut st.handles);
        let exited = std::mem::take(&mut st.exited);
        let detached = st.alive - own;
        let stuck: Vec<Arc<dyn Job>> = st
            .slots
            .iter()
            .filter(|s| s.thread != current)
            .filter_map(|s| s.current.lock().clone())
            .collect();
        drop(st);
        // Tasks still running on detached threads resolve now; their
        // threads finish on their own.
        for job in stuck {
            job.fail(crate::TaskError::SystemShutdown);
        }
        for h in handles {
            let id = h.thread().id();
            if exited.contains(&id) && id != current {
                let _ = h.join();
            }
        }
        if detached > 0 {
            log::warn!("seedcore: {detached} pool thread(s) still running a task at shutdown were detached");
        }
        detached
    }
}

impl Executor for ThreadPool {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Threads
    }

    fn accept(&self, task: Runnable) {
        self.push(task.into_job());
    }

    /// A timeout replaces the thread that runs the attempt (its code cannot
    /// be stopped from outside); a cancel only sets the token.
    fn stop_attempt(&self, task: TaskId, _attempt: u32, why: StopReason) {
        if why != StopReason::Timeout {
            return;
        }
        let id = task.as_u64();
        let slot = {
            let st = self.state.lock();
            st.slots
                .iter()
                .find(|s| s.running.load(Ordering::Acquire) == id)
                .cloned()
        };
        if let (Some(slot), Some(me)) = (slot, self.me.upgrade()) {
            me.abandon(&slot);
        }
    }

    fn drain(&self) -> Vec<Runnable> {
        self.drain_jobs().into_iter().map(Runnable::new).collect()
    }

    fn stop(&self, deadline: Instant, _mode: ShutdownMode) -> StopReport {
        StopReport::detached(self.stop_threads(deadline))
    }

    fn stats(&self) -> ExecutorStats {
        let mut row = ExecutorStats::new(ExecutorKind::Threads);
        row.queue_depth = self.queue.depths();
        row.queued = row.queue_depth.iter().sum();
        let st = self.state.lock();
        row.workers = st.alive;
        row.stuck = st.abandoned;
        row.busy = st
            .slots
            .iter()
            .filter(|s| {
                s.running.load(Ordering::Acquire) != 0 && !s.abandoned.load(Ordering::Acquire)
            })
            .count();
        row.core = self.core;
        row.max = self.max;
        row.target = self.target();
        row
    }

    fn resize(&self, target: usize) -> usize {
        match self.me.upgrade() {
            Some(me) => me.set_target(target),
            None => self.target(),
        }
    }

    /// The threads working for the pool (not those detached with a stuck
    /// task): what each has run and runs now.
    fn workers(&self) -> Vec<WorkerInfo> {
        let slots = self.state.lock().slots.clone();
        slots
            .iter()
            .filter(|s| !s.abandoned.load(Ordering::Acquire))
            .map(|s| {
                let mut w = WorkerInfo::thread(s.tid, s.name.clone());
                w.tasks_done = s.done.load(Ordering::Relaxed);
                let running = s.running.load(Ordering::Acquire);
                w.current_task = (running != 0).then_some(TaskId(running));
                w
            })
            .collect()
    }
}
