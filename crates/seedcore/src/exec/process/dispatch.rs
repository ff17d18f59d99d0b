//! The pool and its queue: which worker gets which task, and how a task
//! that is on a worker is found and stopped there.
//!
//! # Dispatch
//!
//! Tasks wait in the pool's queue (priority, then FIFO) under the pool
//! lock. A worker takes up to `prefetch` sync tasks at a time (it runs the
//! most urgent first) or up to `concurrency` async ones; it never mixes the
//! two. Tasks sent ahead hide the round trip between short tasks, but a
//! long task sent ahead waits behind another while a worker elsewhere may
//! sit idle: so a worker is sent no more than about [`AHEAD`] of work it
//! has not started, by the pool's measured time per sync task (at least
//! the task it runs, at most `prefetch`). Whoever frees capacity — a submitter, a reader thread, a respawn —
//! runs [`ProcessPool::pump`], which hands queued tasks to workers and
//! writes each worker's batch in one write.
//!
//! # Invariants
//!
//! * A slot (`load`, `sent`) is reserved under the pool lock, where
//!   `retire` also checks that a worker holds nothing: a task picked for a
//!   worker never arrives behind its `Exit`.
//! * Every reserved slot is either entered in the worker's `inflight` or
//!   given back before `send_batch` returns; a worker found DEAD there gets
//!   nothing entered (`reap.rs` settles what was entered before).
//! * `pump` picks under the pool lock and writes after releasing it: a
//!   worker slow to read holds up no submitter.
//!
//! Starting workers is in `spawn.rs`, their death in `reap.rs`, the record
//! of one worker in `handle.rs`.

use super::handle::{InFlight, Kill, Worker, DEAD, READY, STARTING};
use super::proto::ToWorkerRef;
use super::spawn::ProcessConfig;
use super::status::now_ns;
use crate::error::{SubmitError, TaskError};
use crate::sched::timer::Timer;
use crate::sched::{Executor, ExecutorStats, Runnable, StopReport, WorkerInfo};
use crate::sched::{RankedQueue, ShutdownMode};
use crate::task::{Attempt, Deadline, ExecutorKind, Job, StopReason, TaskId};
use crate::wire::frame::OutFrame;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How much not-yet-started work (by the measured mean task time) a
/// worker is sent ahead of the task it runs.
const AHEAD: Duration = Duration::from_millis(5);

/// A task as the process pool sees it.
pub(crate) trait ProcessJob: Job {
    /// Takes the locks and begins an attempt; `None`: not now.
    fn begin_process(self: Arc<Self>) -> Option<Attempt>;
    fn task_name(&self) -> &'static str;
    fn payload(&self) -> (&[u8], &[OwnedFd]);
    /// The length of arguments that travel in the payload's last
    /// descriptor (over the frame limit), if they do.
    fn boxed(&self) -> Option<u64>;
    fn is_async(&self) -> bool;
    /// The worker reported `outcome` for attempt `a` (or died with it).
    fn finish_process(
        self: Arc<Self>,
        a: Attempt,
        outcome: Result<(Vec<u8>, Vec<OwnedFd>), TaskError>,
    );
    /// Attempt `a` was sent but never started: undo it and queue the task
    /// again.
    fn unstart(self: Arc<Self>, a: Attempt);
}

/// Tasks picked for one worker, sent in one write.
type Batch = (Arc<Worker>, Vec<Arc<dyn ProcessJob>>);

/// A task in the pool's queue (most urgent first, then the oldest).
pub(super) type Queued = Arc<dyn ProcessJob>;

/// What the pool lock guards.
pub(super) struct PoolState {
    pub(super) queue: RankedQueue<Queued>,
    pub(super) workers: Vec<Arc<Worker>>,
    pub(super) next_index: usize,
    pub(super) started: bool,
    pub(super) start_failures: u32,
    pub(super) broken: Option<Broken>,
    /// Queued tasks that can no longer run, with the reason: resolved by
    /// the next `pump`, outside the lock (resolving runs the task's code
    /// for completion, which may call back into the pool).
    pub(super) doomed: Vec<(Arc<dyn ProcessJob>, String)>,
    /// A respawn after a failed start waits on the timer.
    pub(super) respawn_scheduled: bool,
    /// Tasks each worker program says it serves (from its Hello).
    pub(super) known: Option<HashMap<String, bool>>,
}

/// Workers starting or ready: those that can still take tasks.
pub(super) fn live_workers(workers: &[Arc<Worker>]) -> usize {
    workers
        .iter()
        .filter(|w| matches!(w.state.load(Ordering::Acquire), STARTING | READY))
        .count()
}

/// Why the pool cannot run tasks.
#[derive(Debug, Clone)]
pub(super) struct Broken {
    pub(super) why: String,
    /// The cause cannot go away by itself (the initializer fails, the
    /// program lacks `seedcore::init()`, workers die before they are
    /// ready): nothing is retried. Otherwise (the OS refuses to start a
    /// process) starts are retried with back-off and the first worker that
    /// says hello mends the pool.
    pub(super) permanent: bool,
}

/// The process pool of one system.
pub(crate) struct ProcessPool {
    pub(super) cfg: ProcessConfig,
    pub(super) state: Mutex<PoolState>,
    pub(super) changed: Condvar,
    pub(super) stopping: AtomicBool,
    pub(super) timer: Weak<Timer>,
    pub(super) me: Weak<ProcessPool>,
    pub(super) monitor: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(super) threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    pub(super) next_run: std::sync::atomic::AtomicU64,
    /// Workers to keep, within `core..=max` (see `resize`).
    pub(super) target: AtomicUsize,
    /// Mean time a worker spends on one sync task (moving average, ns; 0
    /// before the first): bounds what is sent ahead.
    pub(super) task_ns: AtomicU64,
}

impl ProcessPool {
    pub(crate) fn new(cfg: ProcessConfig, timer: Weak<Timer>) -> Arc<ProcessPool> {
        Arc::new_cyclic(|me| ProcessPool {
            cfg,
            state: Mutex::new(PoolState {
                queue: RankedQueue::new(),
                workers: Vec::new(),
                next_index: 0,
                started: false,
                start_failures: 0,
                broken: None,
                doomed: Vec::new(),
                respawn_scheduled: false,
                known: None,
            }),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            timer,
            me: me.clone(),
            monitor: Mutex::new(None),
            threads: Mutex::new(Vec::new()),
            next_run: std::sync::atomic::AtomicU64::new(1),
            target: AtomicUsize::new(0),
            task_ns: AtomicU64::new(0),
        })
    }

    /// How many sync tasks a worker may hold (running and sent ahead).
    pub(super) fn sync_cap(&self) -> usize {
        let per_task = self.task_ns.load(Ordering::Relaxed);
        if per_task == 0 {
            // Nothing measured yet: the tasks may block for long, so none
            // is sent ahead; each idle worker gets one first.
            return 1;
        }
        let ahead = AHEAD.as_nanos() as u64;
        let fits = ahead / per_task;
        usize::try_from(fits.saturating_add(1))
            .unwrap_or(usize::MAX)
            .clamp(1, self.cfg.prefetch.max(1))
    }

    /// Adds one sync task's time in a worker to the moving average.
    pub(super) fn observe_task(&self, ns: u64) {
        let old = self.task_ns.load(Ordering::Relaxed);
        // The first sample stands alone; later ones weigh 1/8. Concurrent
        // readers may lose an update to each other: an estimate is enough.
        let new = if old == 0 {
            ns.max(1)
        } else {
            (old - old / 8 + ns / 8).max(1)
        };
        self.task_ns.store(new, Ordering::Relaxed);
    }

    pub(super) fn arc(&self) -> Arc<ProcessPool> {
        self.me.upgrade().expect("the pool is alive while it runs")
    }

    /// Whether the pool's workers serve `name` (once one has said hello;
    /// before that, the pool's own registry answers). `None`: unknown.
    fn serves_locked(st: &PoolState, own_program: bool, name: &str) -> Option<bool> {
        match &st.known {
            Some(k) => k.get(name).copied(),
            None if own_program => {
                super::find(name).map(|e| matches!(e.kind, super::registry::EntryKind::Async(_)))
            }
            // A separate program that has not said hello yet: trust the
            // caller until it does.
            None => Some(false),
        }
    }

    /// Whether a task called `name` may be submitted (the pool is not
    /// broken and its workers serve it), and whether it is async; one look
    /// under the pool lock.
    pub(crate) fn admit(&self, name: &str) -> Result<bool, SubmitError> {
        let st = self.state.lock();
        if let Some(b) = &st.broken {
            return Err(SubmitError::PoolBroken(b.why.clone()));
        }
        Self::serves_locked(&st, self.cfg.program.is_none(), name)
            .ok_or_else(|| SubmitError::UnknownTask(name.to_owned()))
    }

    /// Queues `job` and dispatches what can be dispatched.
    pub(crate) fn push(&self, job: Arc<dyn ProcessJob>) {
        {
            let mut st = self.state.lock();
            if self.stopping.load(Ordering::Acquire) {
                drop(st);
                job.fail(TaskError::SystemShutdown);
                return;
            }
            if let Some(b) = &st.broken {
                let why = b.why.clone();
                drop(st);
                job.fail(TaskError::PoolBroken(why));
                return;
            }
            self.ensure_started(&mut st);
            st.queue.push(job.header().priority(), job);
        }
        self.pump();
    }

    /// Hands queued tasks to workers with room for them (and resolves those
    /// that can no longer run).
    pub(crate) fn pump(&self) {
        let mut batches: Vec<Batch> = Vec::new();
        let doomed = {
            let mut st = self.state.lock();
            while let Some(top) = st.queue.peek() {
                if top.is_resolved() {
                    // Cancelled while queued: it takes no worker's slot.
                    st.queue.pop();
                    continue;
                }
                let is_async = top.is_async();
                let level = top.header().priority().level();
                let cap = if is_async {
                    self.cfg.concurrency
                } else {
                    self.sync_cap()
                };
                let max_tasks = self.cfg.max_tasks_per_worker.unwrap_or(u64::MAX) as usize;
                // A worker that has been handed its share of tasks before
                // recycling takes no more.
                let ready = |w: &&Arc<Worker>| {
                    w.state.load(Ordering::Acquire) == READY
                        && w.sent.load(Ordering::Acquire) < max_tasks
                };
                let pick = st
                    .workers
                    .iter()
                    .filter(ready)
                    .filter(|w| {
                        let load = w.load.load(Ordering::Acquire);
                        load < cap
                            && (load == 0 || w.holds_async.load(Ordering::Acquire) == is_async)
                    })
                    .min_by_key(|w| w.load.load(Ordering::Acquire))
                    .cloned()
                    .or_else(|| {
                        // Every worker is full. A sync task more urgent than
                        // one sent ahead to a worker goes to that worker
                        // anyway: its queue is ordered by priority, so the
                        // urgent task runs next there instead of waiting
                        // here behind work that has not started.
                        if is_async {
                            return None;
                        }
                        st.workers
                            .iter()
                            .filter(ready)
                            .filter(|w| {
                                if w.holds_async.load(Ordering::Acquire)
                                    || w.load.load(Ordering::Acquire) >= 2 * cap
                                {
                                    return false;
                                }
                                let running = w.status.running().map(|(id, _)| id);
                                w.inflight.lock().iter().any(|(id, f)| {
                                    Some(*id) != running
                                        && f.job.header().priority().level() > level
                                })
                            })
                            .min_by_key(|w| w.load.load(Ordering::Acquire))
                            .cloned()
                    });
                let Some(w) = pick else { break };
                let q = st.queue.pop().expect("peeked");
                w.load.fetch_add(1, Ordering::AcqRel);
                w.sent.fetch_add(1, Ordering::AcqRel);
                w.holds_async.store(is_async, Ordering::Release);
                match batches.iter_mut().find(|(b, _)| Arc::ptr_eq(b, &w)) {
                    Some((_, jobs)) => jobs.push(q),
                    None => batches.push((w, vec![q])),
                }
            }
            std::mem::take(&mut st.doomed)
        };
        for (job, why) in doomed {
            job.fail(TaskError::PoolBroken(why));
        }
        let mut skipped = false;
        for (w, jobs) in batches {
            skipped |= self.send_batch(&w, jobs);
        }
        if skipped {
            // Slots reserved for tasks that turned out not to run are free
            // again: hand them out.
            self.pump();
        }
    }

    /// Sends `jobs` to `w`; `true` if some of them did not start (their
    /// slots were given back).
    fn send_batch(&self, w: &Arc<Worker>, jobs: Vec<Arc<dyn ProcessJob>>) -> bool {
        let mut skipped = false;
        let mut sent: Vec<(Arc<dyn ProcessJob>, Vec<u8>)> = Vec::with_capacity(jobs.len());
        for job in jobs {
            let Some(attempt) = job.clone().begin_process() else {
                w.load.fetch_sub(1, Ordering::AcqRel);
                w.sent.fetch_sub(1, Ordering::AcqRel);
                skipped = true;
                continue;
            };
            let id = self.next_run.fetch_add(1, Ordering::Relaxed);
            let (args, _) = job.payload();
            let msg = ToWorkerRef::Run {
                id,
                priority: job.header().priority().level(),
                task: job.task_name(),
                args,
                boxed: job.boxed(),
            };
            let bytes =
                crate::wire::codec::to_vec(&msg, args.len() + 64).expect("run messages encode");
            {
                // DEAD is set under this lock before the worker's tasks are
                // taken out: a task is either settled by `bury` or never
                // entered for a dead worker.
                let mut inflight = w.inflight.lock();
                if w.state.load(Ordering::Acquire) == DEAD {
                    drop(inflight);
                    w.load.fetch_sub(1, Ordering::AcqRel);
                    w.sent.fetch_sub(1, Ordering::AcqRel);
                    job.clone().unstart(attempt);
                    skipped = true;
                    continue;
                }
                inflight.insert(
                    id,
                    InFlight {
                        job: job.clone(),
                        attempt,
                    },
                );
            }
            sent.push((job, bytes));
        }
        if sent.is_empty() {
            return skipped;
        }
        let frames: Vec<OutFrame<'_>> = sent
            .iter()
            .map(|(job, bytes)| OutFrame {
                payload: bytes,
                fds: job.payload().1.iter().map(|f| f.as_fd()).collect(),
            })
            .collect();
        if !w.send(&frames) {
            // The worker is gone: its reader settles everything in flight.
            log::debug!("seedcore: worker {} did not take its tasks", w.index);
        }
        skipped
    }

    /// Where attempt `n` of task `task` stands when its deadline fires:
    /// a sync task's clock starts when its worker starts it (the status
    /// page says when), an async one's when it was sent.
    pub(crate) fn deadline_of(&self, task: TaskId, n: u32, limit: Duration) -> Deadline {
        let Some((w, run, is_async)) = self.holder(task, Some(n)) else {
            // On no worker: being handed to one, or taken from a worker that
            // died and about to be settled or sent again. Either way its
            // code does not run now; look again shortly rather than call a
            // task that waited its turn timed out.
            return Deadline::NotBefore(Instant::now() + limit.min(Duration::from_millis(5)));
        };
        if is_async {
            return Deadline::Passed;
        }
        match w.status.running() {
            Some((running, started_ns)) if running == run => {
                let ran = Duration::from_nanos(now_ns().saturating_sub(started_ns));
                match limit.checked_sub(ran) {
                    Some(left) if !left.is_zero() => Deadline::NotBefore(Instant::now() + left),
                    _ => Deadline::Passed,
                }
            }
            // Not started yet (it waits in the worker's queue): its clock
            // has not begun.
            _ => Deadline::NotBefore(Instant::now() + limit),
        }
    }

    /// The worker holding task `task` (attempt `n`, if given), its run id
    /// there and whether the task is async.
    fn holder(&self, task: TaskId, n: Option<u32>) -> Option<(Arc<Worker>, u64, bool)> {
        let st = self.state.lock();
        st.workers.iter().find_map(|w| {
            let inflight = w.inflight.lock();
            let (run, f) = inflight
                .iter()
                .find(|(_, f)| f.job.header().id == task && n.map_or(true, |n| f.attempt.n == n))?;
            Some((w.clone(), *run, f.job.is_async()))
        })
    }

    /// Stops attempt `n` of task `task` where it is. A sync task that is
    /// running costs its worker; one that waits in a worker's queue is
    /// dropped from it; an async one is aborted there.
    fn stop_run(&self, task: TaskId, n: Option<u32>, why: Kill) {
        let Some((w, id, is_async)) = self.holder(task, n) else {
            return;
        };
        if !is_async && w.status.cancel(id) {
            w.kill(why);
        } else {
            w.send_msg(&ToWorkerRef::Cancel { id });
        }
    }

    /// Sets how many workers to keep (clamped to `core..=max`): workers
    /// start at once to reach it; idle workers above it exit now, busy ones
    /// when they become idle. Returns the value set.
    fn set_target(&self, target: usize) -> usize {
        let target = target.clamp(self.cfg.core, self.cfg.max);
        self.target.store(target, Ordering::Release);
        let mut st = self.state.lock();
        if !st.started {
            self.ensure_started(&mut st);
            return target;
        }
        let live = live_workers(&st.workers);
        if live < target {
            for _ in live..target {
                self.spawn_locked(&mut st);
            }
            drop(st);
            // A failed start may have doomed queued tasks.
            self.pump();
        } else {
            drop(st);
            self.trim();
        }
        target
    }

    /// Retires idle workers above the target.
    pub(super) fn trim(&self) {
        let workers: Vec<Arc<Worker>> = self.state.lock().workers.clone();
        let live = live_workers(&workers);
        let keep = self.target.load(Ordering::Acquire).max(self.cfg.core);
        let mut extra = live.saturating_sub(keep);
        for w in &workers {
            if extra == 0 {
                break;
            }
            if w.load.load(Ordering::Acquire) == 0
                && w.state.load(Ordering::Acquire) == READY
                && self.retire(w)
            {
                extra -= 1;
            }
        }
    }

    /// Removes every queued task (immediate shutdown).
    fn drain_jobs(&self) -> Vec<Arc<dyn Job>> {
        let mut st = self.state.lock();
        st.queue.drain().map(|q| q as Arc<dyn Job>).collect()
    }
}

impl Executor for ProcessPool {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Processes
    }

    /// Process tasks reach the pool through their own body; a closure task
    /// cannot cross into a worker process.
    fn accept(&self, task: Runnable) {
        match task.route::<Arc<dyn ProcessJob>>() {
            Some(job) => self.push(job),
            None => {
                task.fail(TaskError::failed(
                    "the process pool runs registered process tasks only",
                ));
            }
        }
    }

    fn stop_attempt(&self, task: TaskId, attempt: u32, why: StopReason) {
        match why {
            StopReason::Timeout => self.stop_run(task, Some(attempt), Kill::Timeout),
            _ => self.stop_run(task, None, Kill::Cancel),
        }
    }

    fn drain(&self) -> Vec<Runnable> {
        self.drain_jobs().into_iter().map(Runnable::new).collect()
    }

    /// Queued tasks resolve `SystemShutdown`; immediate: every worker is
    /// killed at once (its running task resolves `Cancelled`); graceful:
    /// idle workers are asked to exit as they become idle and whatever is
    /// left at `deadline` is killed. Waits for every reader and reaps every
    /// process.
    fn stop(&self, deadline: Instant, mode: ShutdownMode) -> StopReport {
        self.stop_workers(deadline, mode == ShutdownMode::Immediate);
        StopReport::default()
    }

    fn stats(&self) -> ExecutorStats {
        let mut row = ExecutorStats::new(ExecutorKind::Processes);
        let st = self.state.lock();
        row.queue_depth = st.queue.depths();
        row.queued = st.queue.len();
        let live = st
            .workers
            .iter()
            .filter(|w| w.state.load(Ordering::Acquire) != DEAD);
        for w in live {
            row.workers += 1;
            row.busy += usize::from(w.load.load(Ordering::Acquire) > 0);
            row.pids.push(w.pid());
        }
        row.core = self.cfg.core;
        row.max = self.cfg.max;
        row.target = self.target.load(Ordering::Acquire).max(self.cfg.core);
        row
    }

    fn resize(&self, target: usize) -> usize {
        self.set_target(target)
    }

    /// The live workers: what each has run and runs now.
    fn workers(&self) -> Vec<WorkerInfo> {
        let workers = self.state.lock().workers.clone();
        workers
            .iter()
            .filter(|w| w.state.load(Ordering::Acquire) != DEAD)
            .map(|w| {
                let running = w.status.running().map(|(id, _)| id);
                let mut info = WorkerInfo::process(w.pid(), format!("worker-{}", w.index));
                info.tasks_done = w.done.load(Ordering::Acquire) as u64;
                info.current_task =
                    running.and_then(|id| w.inflight.lock().get(&id).map(|f| f.job.header().id));
                info
            })
            .collect()
    }
}
