//! The parent side of the process pool: worker processes, what each one has
//! been sent, and what happens when one dies.
//!
//! # Workers
//!
//! Each worker is a process of the pool's program in its own process group,
//! with a socket pair for frames, a status page (`status.rs`), and one pipe
//! for its stdout and stderr. One reader thread per worker takes its frames
//! and, at the end of the stream, reaps the process, so no zombie is left.
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
//! # Death
//!
//! A worker is killed (its whole group, SIGKILL) when its running task
//! passes its deadline, is cancelled, or grows past the memory limit; it
//! may also crash by itself. Its reader then settles what it had: the task
//! it was running (from the status page) ends `TimedOut`, `MemoryLimit` or
//! `WorkerDied` as the cause says (or is retried, by its policy); tasks it
//! had been sent but had not started go back to the queue as they were; a
//! replacement starts if the pool is below its core size.

use super::proto::{FromWorker, ToWorkerRef};
use super::registry::Outcome;
use super::status::{now_ns, StatusPage};
use super::worker::{FINI_ENV, INIT_ENV, MAX_FRAME_ENV};
use super::{INDEX_ENV, STATUS_ENV, WORKER_ENV};
use crate::config::ShutdownMode;
use crate::error::TaskError;
use crate::options::Priority;
use crate::sched::timer::Timer;
use crate::sched::{Executor, ExecutorStats, Runnable, StopReport, WorkerInfo};
use crate::task::{Attempt, Deadline, ExecutorKind, Job, StopReason, TaskId};
use crate::wire::frame::{write_frames, FrameError, FrameReader, OutFrame};
use parking_lot::{Condvar, Mutex};
use std::collections::{BinaryHeap, HashMap};
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How much not-yet-started work (by the measured mean task time) a
/// worker is sent ahead of the task it runs.
const AHEAD: Duration = Duration::from_millis(5);

/// OS scheduling priority of worker processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessPriority {
    /// Runs only when nothing else wants the CPU (nice 19).
    Idle,
    /// nice 10.
    BelowNormal,
    /// The parent's priority (nice 0).
    #[default]
    Normal,
    /// nice -5 (needs privileges on most systems).
    AboveNormal,
    /// nice -10 (needs privileges on most systems).
    High,
    /// Real-time FIFO scheduling, where the OS allows it.
    Realtime,
}

/// Where worker processes' stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerOutput {
    /// Line by line to this process's stderr, each line prefixed with the
    /// worker's index and pid and the task it was running.
    #[default]
    Forward,
    /// Straight to this process's stdout and stderr.
    Inherit,
    /// Dropped.
    Discard,
}

/// The process pool's part of [`Config`](crate::Config).
#[derive(Debug, Clone)]
pub(crate) struct ProcessConfig {
    pub(crate) core: usize,
    pub(crate) max: usize,
    pub(crate) program: Option<PathBuf>,
    pub(crate) args: Vec<OsString>,
    pub(crate) prefetch: usize,
    pub(crate) concurrency: usize,
    pub(crate) max_tasks_per_worker: Option<u64>,
    pub(crate) max_memory: Option<u64>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) priority: ProcessPriority,
    pub(crate) init: Option<String>,
    pub(crate) fini: Option<String>,
    pub(crate) max_frame: usize,
    pub(crate) output: WorkerOutput,
    pub(crate) start_timeout: Duration,
    pub(crate) name: String,
}

/// A task as the process pool sees it.
pub(crate) trait ProcessJob: Job {
    /// Takes the locks and begins an attempt; `None`: not now.
    fn begin_process(self: Arc<Self>) -> Option<Attempt>;
    fn task_name(&self) -> &'static str;
    fn payload(&self) -> (&[u8], &[OwnedFd]);
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

/// Why the pool killed a worker.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kill {
    Timeout,
    Cancel,
    Memory { rss: u64 },
    StartTimeout,
    Shutdown,
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const RETIRING: u8 = 2;
const DEAD: u8 = 3;

/// One task sent to a worker, under its run id (one per sending, so a
/// late report of an earlier attempt can never be taken for a later one).
struct InFlight {
    job: Arc<dyn ProcessJob>,
    attempt: Attempt,
}

/// One worker process, as the parent sees it.
pub(crate) struct Worker {
    index: usize,
    pid: u32,
    tx: Mutex<UnixStream>,
    status: StatusPage,
    state: AtomicU8,
    /// Tasks sent and not yet reported.
    load: AtomicUsize,
    /// Whether what it holds now is async work.
    holds_async: AtomicBool,
    inflight: Mutex<HashMap<u64, InFlight>>,
    killed: Mutex<Option<Kill>>,
    child: Mutex<Option<Child>>,
    idle_since: Mutex<Instant>,
    /// When it last reported a sync task.
    last_done: Mutex<Instant>,
    done: AtomicUsize,
    /// Tasks handed to it so far (recycling counts these).
    sent: AtomicUsize,
}

impl Worker {
    fn kill(&self, why: Kill) {
        let mut k = self.killed.lock();
        if k.is_none() {
            *k = Some(why);
        }
        drop(k);
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }

    fn send(&self, frames: &[OutFrame<'_>]) -> bool {
        let tx = self.tx.lock();
        write_frames(&tx, frames).is_ok()
    }

    /// Sends one control message (no shared buffers).
    fn send_msg(&self, msg: &ToWorkerRef<'_>) -> bool {
        let payload = postcard::to_allocvec(msg).expect("control messages encode");
        self.send(&[OutFrame {
            payload: &payload,
            fds: Vec::new(),
        }])
    }

    /// The pid of the worker process.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }
}

/// Tasks picked for one worker, sent in one write.
type Batch = (Arc<Worker>, Vec<Arc<dyn ProcessJob>>);

struct Queued {
    priority: Priority,
    seq: u64,
    job: Arc<dyn ProcessJob>,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.priority, self.seq) == (o.priority, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.priority, o.seq).cmp(&(self.priority, self.seq))
    }
}

struct PoolState {
    queue: BinaryHeap<Queued>,
    seq: u64,
    workers: Vec<Arc<Worker>>,
    next_index: usize,
    started: bool,
    start_failures: u32,
    broken: Option<String>,
    /// Tasks each worker program says it serves (from its Hello).
    known: Option<HashMap<String, bool>>,
}

/// The process pool of one system.
pub(crate) struct ProcessPool {
    cfg: ProcessConfig,
    state: Mutex<PoolState>,
    changed: Condvar,
    stopping: AtomicBool,
    timer: Weak<Timer>,
    me: Weak<ProcessPool>,
    monitor: Mutex<Option<std::thread::JoinHandle<()>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    next_run: std::sync::atomic::AtomicU64,
    /// Workers to keep, within `core..=max` (see `resize`).
    target: AtomicUsize,
    /// Mean time a worker spends on one sync task (moving average, ns; 0
    /// before the first): bounds what is sent ahead.
    task_ns: AtomicU64,
}

impl ProcessPool {
    pub(crate) fn new(cfg: ProcessConfig, timer: Weak<Timer>) -> Arc<ProcessPool> {
        Arc::new_cyclic(|me| ProcessPool {
            cfg,
            state: Mutex::new(PoolState {
                queue: BinaryHeap::new(),
                seq: 0,
                workers: Vec::new(),
                next_index: 0,
                started: false,
                start_failures: 0,
                broken: None,
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
    fn sync_cap(&self) -> usize {
        let per_task = self.task_ns.load(Ordering::Relaxed);
        let ahead = AHEAD.as_nanos() as u64;
        // 0: nothing measured yet.
        let fits = ahead.checked_div(per_task).unwrap_or(u64::MAX);
        usize::try_from(fits.saturating_add(1))
            .unwrap_or(usize::MAX)
            .clamp(1, self.cfg.prefetch.max(1))
    }

    /// Adds one sync task's time in a worker to the moving average.
    fn observe_task(&self, ns: u64) {
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

    fn arc(&self) -> Arc<ProcessPool> {
        self.me.upgrade().expect("the pool is alive while it runs")
    }

    /// Whether the pool's workers serve `name` (once one has said hello;
    /// before that, the pool's own registry answers). `None`: unknown.
    pub(crate) fn serves(&self, name: &str) -> Option<bool> {
        let st = self.state.lock();
        match &st.known {
            Some(k) => k.get(name).copied(),
            None if self.cfg.program.is_none() => {
                super::find(name).map(|e| matches!(e.kind, super::registry::EntryKind::Async(_)))
            }
            // A separate program that has not said hello yet: trust the
            // caller until it does.
            None => Some(false),
        }
    }

    /// Starts the core workers (first use).
    fn ensure_started(&self, st: &mut PoolState) {
        if st.started {
            return;
        }
        st.started = true;
        self.target.fetch_max(self.cfg.core, Ordering::AcqRel);
        for _ in 0..self.target.load(Ordering::Acquire) {
            self.spawn_locked(st);
        }
        if self.cfg.max_memory.is_some() || self.cfg.idle_timeout.is_some() {
            let me = self.me.clone();
            let h = std::thread::Builder::new()
                .name(format!("{}-procmon", self.cfg.name))
                .spawn(move || monitor(me));
            match h {
                Ok(h) => *self.monitor.lock() = Some(h),
                Err(e) => log::error!("seedcore: cannot start the process monitor: {e}"),
            }
        }
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
            if let Some(why) = &st.broken {
                let why = why.clone();
                drop(st);
                job.fail(TaskError::WorkerDied {
                    exit_code: None,
                    signal: None,
                    detail: why,
                });
                return;
            }
            self.ensure_started(&mut st);
            st.seq += 1;
            let seq = st.seq;
            st.queue.push(Queued {
                priority: job.header().opts.priority,
                seq,
                job,
            });
        }
        self.pump();
    }

    /// Hands queued tasks to workers with room for them.
    pub(crate) fn pump(&self) {
        let mut batches: Vec<Batch> = Vec::new();
        {
            let mut st = self.state.lock();
            while let Some(top) = st.queue.peek() {
                if top.job.is_resolved() {
                    // Cancelled while queued: it takes no worker's slot.
                    st.queue.pop();
                    continue;
                }
                let is_async = top.job.is_async();
                let level = top.priority.level();
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
                                        && f.job.header().opts.priority.level() > level
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
                    Some((_, jobs)) => jobs.push(q.job),
                    None => batches.push((w, vec![q.job])),
                }
            }
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
                priority: job.header().opts.priority.level(),
                task: job.task_name(),
                args,
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
            // Not on a worker (being settled right now): nothing to stop.
            return Deadline::Passed;
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
        if !is_async && w.status.running().is_some_and(|(r, _)| r == id) {
            w.kill(why);
        } else {
            w.send_msg(&ToWorkerRef::Cancel { id });
        }
    }

    fn spawn_locked(&self, st: &mut PoolState) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let index = st.next_index;
        st.next_index += 1;
        match self.spawn(index) {
            Ok(w) => st.workers.push(w),
            Err(e) => {
                log::error!("seedcore: cannot start worker process {index}: {e}");
                self.start_failed(st, format!("cannot start a worker process: {e}"));
            }
        }
    }

    fn start_failed(&self, st: &mut PoolState, why: String) {
        st.start_failures += 1;
        if st.start_failures >= 3 && st.broken.is_none() {
            log::error!(
                "seedcore: worker processes keep failing to start; failing process tasks: {why}"
            );
            st.broken = Some(why.clone());
            let queued: Vec<Queued> = st.queue.drain().collect();
            for q in queued {
                q.job.fail(TaskError::WorkerDied {
                    exit_code: None,
                    signal: None,
                    detail: why.clone(),
                });
            }
        }
    }

    fn spawn(&self, index: usize) -> std::io::Result<Arc<Worker>> {
        let cfg = &self.cfg;
        let program = match &cfg.program {
            Some(p) => p.clone(),
            None => std::env::current_exe()?,
        };
        let (parent, child_sock) = UnixStream::pair()?;
        let status = StatusPage::create()?;
        let mut cmd = Command::new(&program);
        cmd.args(&cfg.args)
            .env(WORKER_ENV, "3")
            .env(STATUS_ENV, "4")
            .env(INDEX_ENV, index.to_string())
            .env(MAX_FRAME_ENV, cfg.max_frame.to_string())
            .stdin(Stdio::null())
            .process_group(0);
        if let Some(h) = &cfg.init {
            cmd.env(INIT_ENV, h);
        }
        if let Some(h) = &cfg.fini {
            cmd.env(FINI_ENV, h);
        }
        let out_read = match cfg.output {
            WorkerOutput::Inherit => None,
            WorkerOutput::Discard => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
                None
            }
            WorkerOutput::Forward => {
                let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
                cmd.stdout(Stdio::from(w.try_clone()?))
                    .stderr(Stdio::from(w));
                Some(r)
            }
        };
        let sock_fd = child_sock.as_raw_fd();
        let status_fd = status.fd().as_raw_fd();
        let nice = match cfg.priority {
            ProcessPriority::Idle => Some(19),
            ProcessPriority::BelowNormal => Some(10),
            ProcessPriority::Normal => None,
            ProcessPriority::AboveNormal => Some(-5),
            ProcessPriority::High => Some(-10),
            ProcessPriority::Realtime => None,
        };
        let realtime = cfg.priority == ProcessPriority::Realtime;
        // SAFETY: the closure runs in the child between fork and exec and
        // calls only async-signal-safe functions (fcntl, dup2, close,
        // setpriority, sched_setscheduler) on descriptors that are open in
        // the parent and so in the child.
        unsafe {
            cmd.pre_exec(move || {
                // Move both descriptors out of the way first, so that the
                // dup2 to 3 cannot clobber the status page (or the reverse).
                let a = libc::fcntl(sock_fd, libc::F_DUPFD, 10);
                let b = libc::fcntl(status_fd, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(a);
                libc::close(b);
                if let Some(n) = nice {
                    if libc::setpriority(libc::PRIO_PROCESS, 0, n) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if realtime {
                    let p = libc::sched_param { sched_priority: 1 };
                    if libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(child_sock);
        let w = Arc::new(Worker {
            index,
            pid: child.id(),
            tx: Mutex::new(parent.try_clone()?),
            status,
            state: AtomicU8::new(STARTING),
            load: AtomicUsize::new(0),
            holds_async: AtomicBool::new(false),
            inflight: Mutex::new(HashMap::new()),
            killed: Mutex::new(None),
            child: Mutex::new(Some(child)),
            idle_since: Mutex::new(Instant::now()),
            last_done: Mutex::new(Instant::now()),
            done: AtomicUsize::new(0),
            sent: AtomicUsize::new(0),
        });
        if let Some(r) = out_read {
            let (wk, name) = (Arc::downgrade(&w), cfg.name.clone());
            let h = std::thread::Builder::new()
                .name(format!("{name}-out-{index}"))
                .spawn(move || forward_output(r, wk, index))?;
            self.threads.lock().push(h);
        }
        let reader = FrameReader::new(parent, cfg.max_frame);
        let (pool, wr) = (self.arc(), w.clone());
        let h = std::thread::Builder::new()
            .name(format!("{}-proc-{index}", cfg.name))
            .spawn(move || pool.read_loop(wr, reader))?;
        self.threads.lock().push(h);
        if let Some(timer) = self.timer.upgrade() {
            let wk = Arc::downgrade(&w);
            timer.schedule(Instant::now() + cfg.start_timeout, move || {
                if let Some(w) = wk.upgrade() {
                    if w.state.load(Ordering::Acquire) == STARTING {
                        w.kill(Kill::StartTimeout);
                    }
                }
            });
        }
        Ok(w)
    }

    fn read_loop(self: Arc<Self>, w: Arc<Worker>, mut reader: FrameReader) {
        let broke = loop {
            match reader.next() {
                Ok((payload, fds)) => match postcard::from_bytes::<FromWorker>(&payload) {
                    Ok(FromWorker::Hello { pid, tasks }) => {
                        if pid != w.pid {
                            break Some(format!("said hello as pid {pid}, started as {}", w.pid));
                        }
                        {
                            let mut st = self.state.lock();
                            st.start_failures = 0;
                            st.known.get_or_insert_with(|| tasks.into_iter().collect());
                        }
                        w.state.store(READY, Ordering::Release);
                        self.changed.notify_all();
                        self.pump();
                    }
                    Ok(FromWorker::Done { id, outcome }) => self.done(&w, id, outcome, fds),
                    Err(e) => break Some(format!("undecodable message: {e}")),
                },
                Err(FrameError::Closed) => break None,
                // A worker that dies mid-write resets the connection: that
                // is its death, not a protocol breach.
                Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    break None
                }
                Err(FrameError::Io(e)) => break Some(format!("i/o error: {e}")),
                Err(FrameError::Malformed(m)) => break Some(m),
            }
        };
        if let Some(why) = &broke {
            log::error!(
                "seedcore: worker {} broke the protocol ({why}); killing it",
                w.index
            );
        }
        self.bury(&w);
    }

    fn done(&self, w: &Arc<Worker>, id: u64, outcome: Outcome, fds: Vec<OwnedFd>) {
        let Some(f) = w.inflight.lock().remove(&id) else {
            return;
        };
        let left = w.load.fetch_sub(1, Ordering::AcqRel) - 1;
        let n = w.done.fetch_add(1, Ordering::AcqRel) + 1;
        if !f.job.is_async() {
            // A worker runs its sync tasks one after another: this one began
            // when it arrived or when the one before it ended, if later.
            let now = Instant::now();
            let since = std::mem::replace(&mut *w.last_done.lock(), now).max(f.attempt.started);
            self.observe_task(now.saturating_duration_since(since).as_nanos() as u64);
        }
        let result = match outcome {
            Outcome::Ok(bytes) => Ok((bytes, fds)),
            Outcome::Panicked(m) => Err(TaskError::Panicked(m)),
            Outcome::Failed(m) => Err(TaskError::failed(m)),
            Outcome::BadArgs(m) => Err(TaskError::failed(format!(
                "the worker could not decode the arguments of `{}`: {m}",
                f.job.task_name()
            ))),
            Outcome::Unknown(name) => Err(TaskError::failed(format!(
                "the worker has no process task `{name}`"
            ))),
            Outcome::Cancelled => Err(TaskError::Cancelled),
        };
        let was_async = f.job.is_async();
        // Recycle before the result is out, so that no task submitted in
        // reaction to it can reach this worker.
        let recycle = self
            .cfg
            .max_tasks_per_worker
            .is_some_and(|max| n as u64 >= max);
        if left == 0 {
            *w.idle_since.lock() = Instant::now();
            if recycle {
                // Nothing new can have been sent: it takes no more tasks.
                self.retire(w);
            }
        }
        if matches!(&result, Err(TaskError::Cancelled)) {
            // Dropped from the worker's queue before it started.
            f.job.clone().unstart(f.attempt);
        } else {
            f.job.finish_process(f.attempt, result);
        }
        if left == 0 && !recycle {
            self.trim();
        }
        // Refill a worker in batches (one write for several tasks) rather
        // than one task per result; an idle or half-empty worker is
        // refilled at once.
        let cap = if was_async {
            self.cfg.concurrency
        } else {
            self.sync_cap()
        };
        if left * 2 <= cap {
            self.pump();
        }
    }

    /// Asks an idle worker to exit; its reader starts a replacement.
    ///
    /// The check that it holds nothing and the switch out of READY happen
    /// under the pool lock, where `pump` reserves slots: a task picked for
    /// it can never arrive behind its `Exit`.
    fn retire(&self, w: &Arc<Worker>) -> bool {
        let st = self.state.lock();
        let retired = self.retire_locked(&st, w);
        drop(st);
        retired
    }

    fn retire_locked(&self, _held: &PoolState, w: &Arc<Worker>) -> bool {
        if w.load.load(Ordering::Acquire) != 0
            || w.state
                .compare_exchange(READY, RETIRING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return false;
        }
        w.send_msg(&ToWorkerRef::Exit);
        true
    }

    /// The worker's stream ended: reap it, settle what it held, replace it.
    fn bury(&self, w: &Arc<Worker>) {
        let was = {
            let _inflight = w.inflight.lock();
            w.state.swap(DEAD, Ordering::AcqRel)
        };
        // Make sure it is gone, then reap it: no zombie is left.
        if let Some(pid) = rustix::process::Pid::from_raw(w.pid as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let status = w.child.lock().take().and_then(|mut c| c.wait().ok());
        let killed = *w.killed.lock();
        let (code, signal) = status.map_or((None, None), |s| (s.code(), s.signal()));
        let running = w.status.running().map(|(id, _)| id);
        let finished = w.status.finished();
        let held: Vec<(u64, InFlight)> = w.inflight.lock().drain().collect();
        w.load.store(0, Ordering::Release);
        let stopping = self.stopping.load(Ordering::Acquire);
        for (id, f) in held {
            if finished.contains(&id) {
                // It ran to the end, but its result died with the worker.
                // Running it again could repeat its effects: it is reported
                // as a crash (which a CRASH retry policy may re-run).
                f.job.finish_process(
                    f.attempt,
                    Err(TaskError::WorkerDied {
                        exit_code: code,
                        signal,
                        detail: format!(
                            "worker {} (pid {}) died after the task finished, before it reported the result",
                            w.index, w.pid
                        ),
                    }),
                );
                continue;
            }
            let ran = f.job.is_async() || running == Some(id);
            if !ran {
                if stopping {
                    // Sent ahead but never started, and the pool is going
                    // away: it will not run (resolved first, so that the
                    // undo below does not queue it again).
                    f.job.fail(TaskError::Cancelled);
                    f.job.clone().unstart(f.attempt);
                } else {
                    f.job.clone().unstart(f.attempt);
                }
                continue;
            }
            let err = match killed {
                Some(Kill::Memory { rss }) => TaskError::MemoryLimit {
                    limit: self.cfg.max_memory.unwrap_or(0),
                    rss,
                },
                Some(Kill::Shutdown) => TaskError::Cancelled,
                // Ended (and resolved) by whoever killed it.
                Some(Kill::Timeout | Kill::Cancel) => TaskError::Cancelled,
                Some(Kill::StartTimeout) | None => TaskError::WorkerDied {
                    exit_code: code,
                    signal,
                    detail: format!("worker {} (pid {}) died", w.index, w.pid),
                },
            };
            f.job.finish_process(f.attempt, Err(err));
        }
        let mut st = self.state.lock();
        st.workers.retain(|x| !Arc::ptr_eq(x, w));
        if was == STARTING && killed != Some(Kill::Shutdown) {
            let why = match killed {
                Some(Kill::StartTimeout) => format!(
                    "worker {} did not start within {:?} (does the program call seedcore::init()?)",
                    w.index, self.cfg.start_timeout
                ),
                _ => format!(
                    "worker {} exited before it was ready (exit code {code:?}, signal {signal:?})",
                    w.index
                ),
            };
            log::error!("seedcore: {why}");
            self.start_failed(&mut st, why);
        }
        let live = st
            .workers
            .iter()
            .filter(|x| x.state.load(Ordering::Acquire) != DEAD)
            .count();
        let wanted = self.target.load(Ordering::Acquire).max(self.cfg.core);
        if live < wanted && st.broken.is_none() && !self.stopping.load(Ordering::Acquire) {
            self.spawn_locked(&mut st);
        }
        drop(st);
        self.changed.notify_all();
        self.pump();
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
        let live = st
            .workers
            .iter()
            .filter(|w| matches!(w.state.load(Ordering::Acquire), STARTING | READY))
            .count();
        if live < target {
            for _ in live..target {
                self.spawn_locked(&mut st);
            }
        } else {
            drop(st);
            self.trim();
        }
        target
    }

    /// Retires idle workers above the target.
    fn trim(&self) {
        let workers: Vec<Arc<Worker>> = self.state.lock().workers.clone();
        let live = workers
            .iter()
            .filter(|w| matches!(w.state.load(Ordering::Acquire), STARTING | READY))
            .count();
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
        st.queue.drain().map(|q| q.job as Arc<dyn Job>).collect()
    }

    /// Stops every worker: queued tasks resolve `SystemShutdown`; with
    /// `immediate`, every worker is killed at once (its running task
    /// resolves `Cancelled`); otherwise idle workers are asked to exit as
    /// they become idle and whatever is left at `deadline` is killed. Waits
    /// for every reader and reaps every process.
    fn stop_workers(&self, deadline: Instant, immediate: bool) {
        let queued = {
            let mut st = self.state.lock();
            self.stopping.store(true, Ordering::Release);
            st.queue.drain().collect::<Vec<Queued>>()
        };
        for q in queued {
            q.job.fail(TaskError::SystemShutdown);
        }
        let mut st = self.state.lock();
        let mut killed: Option<Instant> = None;
        while !st.workers.is_empty() {
            let now = Instant::now();
            if (immediate || now >= deadline) && killed.is_none() {
                for w in &st.workers {
                    w.kill(Kill::Shutdown);
                }
                killed = Some(now);
            }
            if killed.is_none() {
                // Workers that are (or just became) idle exit now.
                for w in st.workers.clone() {
                    self.retire_locked(&st, &w);
                }
            }
            // Short waits: a worker that becomes ready or idle without a
            // notification is still seen promptly.
            let _ = self.changed.wait_until(
                &mut st,
                deadline.max(now).min(now + Duration::from_millis(20)),
            );
            if killed.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
                log::error!("seedcore: worker processes did not go away after SIGKILL");
                break;
            }
        }
        drop(st);
        if let Some(h) = self.monitor.lock().take() {
            let _ = h.join();
        }
        let me = std::thread::current().id();
        for h in std::mem::take(&mut *self.threads.lock()) {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}

impl Executor for ProcessPool {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Processes
    }

    /// Process tasks reach the pool through their own body; a closure task
    /// cannot cross into a worker process.
    fn accept(&self, task: Runnable) {
        task.fail(TaskError::failed(
            "the process pool runs registered process tasks only",
        ));
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
        for q in st.queue.iter() {
            row.queue_depth[q.priority.level() as usize] += 1;
        }
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

/// Forwards a worker's output, a line at a time, with who wrote it.
fn forward_output(r: OwnedFd, w: Weak<Worker>, index: usize) {
    let reader = BufReader::new(std::fs::File::from(r));
    for line in reader.split(b'\n') {
        let Ok(line) = line else { break };
        let (pid, task) = match w.upgrade() {
            Some(w) => (w.pid, w.status.running().map(|(id, _)| id)),
            None => (0, None),
        };
        let text = String::from_utf8_lossy(&line);
        match task {
            Some(t) => eprintln!("[seedcore worker {index} pid {pid} task #{t}] {text}"),
            None => eprintln!("[seedcore worker {index} pid {pid}] {text}"),
        }
    }
}

/// Samples worker memory and retires idle workers, while the pool lives.
fn monitor(pool: Weak<ProcessPool>) {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
    let mut sys = System::new();
    loop {
        let Some(p) = pool.upgrade() else { return };
        if p.stopping.load(Ordering::Acquire) {
            return;
        }
        let workers: Vec<Arc<Worker>> = p.state.lock().workers.clone();
        if let Some(limit) = p.cfg.max_memory {
            let busy: Vec<Pid> = workers
                .iter()
                .filter(|w| w.load.load(Ordering::Acquire) > 0)
                .map(|w| Pid::from_u32(w.pid))
                .collect();
            if !busy.is_empty() {
                sys.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&busy),
                    true,
                    ProcessRefreshKind::nothing().with_memory(),
                );
                for w in &workers {
                    if let Some(pr) = sys.process(Pid::from_u32(w.pid)) {
                        if pr.memory() > limit && w.state.load(Ordering::Acquire) != DEAD {
                            w.kill(Kill::Memory { rss: pr.memory() });
                        }
                    }
                }
            }
        }
        if let Some(idle) = p.cfg.idle_timeout {
            let live = workers
                .iter()
                .filter(|w| w.state.load(Ordering::Acquire) == READY)
                .count();
            let mut spare = live.saturating_sub(p.cfg.core);
            for w in &workers {
                if spare == 0 {
                    break;
                }
                if w.load.load(Ordering::Acquire) == 0 && w.idle_since.lock().elapsed() >= idle {
                    p.retire(w);
                    spare -= 1;
                }
            }
        }
        drop(p);
        std::thread::sleep(Duration::from_millis(20));
    }
}
