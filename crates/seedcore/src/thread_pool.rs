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

use crate::idle::Idle;
use crate::queue::PriorityQueue;
use crate::task::Job;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Rounds of busy-polling before a thread with nothing to do sleeps: most
/// gaps in a stream of tasks are shorter than a futex wake-up.
const SPIN_ROUNDS: u32 = 64;

/// One pool thread, as the timer sees it when the thread's task overruns.
pub(crate) struct WorkerSlot {
    abandoned: AtomicBool,
}

struct PoolState {
    alive: usize,
    abandoned: usize,
    next_index: usize,
    handles: Vec<JoinHandle<()>>,
    /// Threads that left `work` and only have to be joined.
    exited: Vec<std::thread::ThreadId>,
}

pub(crate) struct ThreadPool {
    queue: PriorityQueue<Arc<dyn Job>>,
    idle: Idle,
    state: Mutex<PoolState>,
    exited: Condvar,
    stopping: AtomicBool,
    core: usize,
    max: usize,
    keep_alive: Duration,
    name: String,
    stack_size: Option<usize>,
}

pub(crate) struct PoolConfig {
    pub(crate) core: usize,
    pub(crate) max: usize,
    pub(crate) keep_alive: Duration,
    pub(crate) name: String,
    pub(crate) stack_size: Option<usize>,
}

impl ThreadPool {
    pub(crate) fn start(cfg: PoolConfig) -> std::io::Result<Arc<ThreadPool>> {
        let pool = Arc::new(ThreadPool {
            queue: PriorityQueue::new(),
            idle: Idle::new(),
            state: Mutex::new(PoolState {
                alive: 0,
                abandoned: 0,
                next_index: 0,
                handles: Vec::new(),
                exited: Vec::new(),
            }),
            exited: Condvar::new(),
            stopping: AtomicBool::new(false),
            core: cfg.core,
            max: cfg.max,
            keep_alive: cfg.keep_alive,
            name: cfg.name,
            stack_size: cfg.stack_size,
        });
        {
            let mut st = pool.state.lock();
            for _ in 0..pool.core {
                pool.spawn_locked(&mut st)?;
            }
        }
        Ok(pool)
    }

    fn spawn_locked(self: &Arc<Self>, st: &mut PoolState) -> std::io::Result<()> {
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

    /// Queues `job` and wakes a sleeping thread if there is one.
    pub(crate) fn push(&self, job: Arc<dyn Job>) {
        let p = job.header().opts.priority;
        self.queue.push(p, job);
        self.idle.notify_one();
    }

    /// Removes every queued task (shutdown).
    pub(crate) fn drain(&self) -> Vec<Arc<dyn Job>> {
        std::iter::from_fn(|| self.queue.pop()).collect()
    }

    pub(crate) fn depths(&self) -> [usize; crate::options::LEVELS] {
        self.queue.depths()
    }

    pub(crate) fn alive(&self) -> usize {
        self.state.lock().alive
    }

    /// `slot`'s thread is stuck in a task past its deadline: count it out
    /// of capacity and start a replacement if capacity is short.
    pub(crate) fn abandon(self: &Arc<Self>, slot: &WorkerSlot) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let mut st = self.state.lock();
        if slot.abandoned.swap(true, Ordering::AcqRel) {
            return;
        }
        st.abandoned += 1;
        if st.alive - st.abandoned < self.core && st.alive < self.max {
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
        st.alive - st.abandoned > self.core
    }

    /// A thread idle for `keep_alive` above core; `true` if it should exit.
    fn may_retire(&self) -> bool {
        let st = self.state.lock();
        st.alive - st.abandoned > self.core
    }

    fn work(self: Arc<Self>) {
        let slot = Arc::new(WorkerSlot {
            abandoned: AtomicBool::new(false),
        });
        'outer: loop {
            if let Some(job) = self.queue.pop() {
                job.run(Some(&slot));
                if slot.abandoned.load(Ordering::Acquire) && self.rejoin(&slot) {
                    break;
                }
                continue;
            }
            if self.stopping.load(Ordering::Acquire) {
                break;
            }
            for i in 0..SPIN_ROUNDS {
                if !self.queue.is_empty() {
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
            self.idle.prepare();
            if !self.queue.is_empty() || self.stopping.load(Ordering::Acquire) {
                self.idle.cancel();
                continue;
            }
            let above_core = {
                let st = self.state.lock();
                st.alive - st.abandoned > self.core
            };
            let timeout = above_core.then_some(self.keep_alive);
            if !self.idle.sleep(timeout) && self.may_retire() {
                break;
            }
        }
        let mut st = self.state.lock();
        st.alive -= 1;
        if slot.abandoned.load(Ordering::Acquire) {
            st.abandoned -= 1;
        }
        st.exited.push(std::thread::current().id());
        self.exited.notify_all();
    }

    /// Steps 2 and 3 of shutdown; returns how many threads were detached
    /// because they were still running at `deadline`.
    pub(crate) fn stop(&self, deadline: Instant) -> usize {
        self.stopping.store(true, Ordering::Release);
        self.idle.notify_all();
        let mut st = self.state.lock();
        while st.alive > 0 {
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
        let detached = st.alive;
        drop(st);
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
