//! `ConcurrentSystem`: the owner of the pools, and its builder.
//!
//! # Shutdown steps
//!
//! 1. `closed` is set: submissions fail with [`SubmitError::SystemClosed`].
//!    A submission racing with this re-checks `closed` after queueing
//!    (behind the queue's `SeqCst` fence) and resolves its own task
//!    [`TaskError::SystemShutdown`] if it lost, so no accepted task is left
//!    behind in a queue nobody drains.
//! 2. Services are signalled to stop (their cancellation token is set).
//! 3. Graceful: wait until every accepted task has resolved, up to the
//!    shutdown timeout. Immediate (or out of time): `cancel_all` is set —
//!    running tasks see their token set, retries are not scheduled — and
//!    queued, lock-waiting and back-off tasks resolve `Cancelled`.
//! 4. The thread pool, the async runtime, the timer and the callback
//!    thread stop, in that order (callbacks of the last results still run).

use crate::async_exec::AsyncExec;
use crate::callback::{CallbackExecutor, CallbackQueue, Dispatcher};
use crate::config::{Config, ShutdownMode};
use crate::context::TaskContext;
use crate::error::{BoxError, ConfigError, SubmitError, TaskError};
use crate::future::TaskFuture;
use crate::locks::LockTable;
use crate::options::TaskOptions;
use crate::process::{ProcessConfig, ProcessPool, ProcessTask};
use crate::stats::{Counters, Lane, Stats};
use crate::task::ProcessBody;
use crate::task::{AsyncBody, Header, Job, TaskCell, TaskId, TaskRef, ThreadBody};
use crate::thread_pool::{PoolConfig, ThreadPool};
use crate::timer::Timer;
use crossbeam_utils::CachePadded;
use futures_util::FutureExt;
use parking_lot::Mutex;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long cancelled work gets to notice its token once a shutdown has
/// used its timeout, and the callback thread to run the last callbacks.
const STOP_GRACE: Duration = Duration::from_millis(100);

/// A service task and the thread that runs it.
type Service = (Arc<dyn Job>, JoinHandle<()>);

/// State shared by the system handle, its threads and its tasks.
///
/// Aligned to two cache lines so that the `Arc`'s reference counts, bumped
/// by every submission, do not share a line with the fields the pool
/// threads read for every task.
#[repr(align(128))]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) pool: Arc<ThreadPool>,
    pub(crate) async_exec: AsyncExec,
    pub(crate) timer: Arc<Timer>,
    pub(crate) process: Arc<ProcessPool>,
    pub(crate) locks: LockTable,
    pub(crate) stats: Arc<Counters>,
    pub(crate) callbacks: Dispatcher,
    pub(crate) closed: AtomicBool,
    /// Set by an immediate shutdown: every attempt is cancelled and no
    /// retry is scheduled.
    pub(crate) cancel_all: AtomicBool,
    /// Written by every submission: kept on a line of its own.
    next_id: CachePadded<AtomicU64>,
    services: Mutex<Vec<Service>>,
    shutdown_done: Mutex<Option<ShutdownReport>>,
    /// The balancer thread, its events, and the monitor (balance.rs).
    pub(crate) balance: crate::balance::BalanceState,
}

impl Shared {
    pub(crate) fn is_cancelling(&self) -> bool {
        self.cancel_all.load(Ordering::Acquire)
    }
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

/// Builds a [`ConcurrentSystem`]; see [`Config`] for the meaning and the
/// defaults of each setting.
#[derive(Debug, Clone, Default)]
pub struct SystemBuilder {
    config: Config,
}

impl SystemBuilder {
    /// The settings, for builder methods defined next to their feature
    /// (the balancer's are in balance.rs).
    pub(crate) fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// Replaces every setting with `config`.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Pool threads kept running.
    pub fn core_threads(mut self, n: usize) -> Self {
        self.config.core_threads = n;
        self
    }

    /// Upper bound of pool threads.
    pub fn max_threads(mut self, n: usize) -> Self {
        self.config.max_threads = n;
        self
    }

    /// Idle time after which threads above core exit.
    pub fn thread_keep_alive(mut self, d: Duration) -> Self {
        self.config.thread_keep_alive = d;
        self
    }

    /// Stack size of pool threads.
    pub fn thread_stack_size(mut self, bytes: usize) -> Self {
        self.config.thread_stack_size = Some(bytes);
        self
    }

    /// Worker threads of the async runtime.
    pub fn async_threads(mut self, n: usize) -> Self {
        self.config.async_threads = n;
        self
    }

    /// Async attempts running at once.
    pub fn max_async_tasks(mut self, n: usize) -> Self {
        self.config.max_async_tasks = n;
        self
    }

    /// Where completion callbacks run.
    pub fn callback_executor(mut self, e: CallbackExecutor) -> Self {
        self.config.callback_executor = e;
        self
    }

    /// What dropping the system does.
    pub fn shutdown_mode(mut self, m: ShutdownMode) -> Self {
        self.config.shutdown_mode = m;
        self
    }

    /// How long a shutdown waits.
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.config.shutdown_timeout = d;
        self
    }

    /// Prefix of thread names.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Worker processes kept running once process tasks are used.
    pub fn core_processes(mut self, n: usize) -> Self {
        self.config.core_processes = n;
        self
    }

    /// Upper bound of worker processes.
    pub fn max_processes(mut self, n: usize) -> Self {
        self.config.max_processes = n;
        self
    }

    /// The program worker processes run, instead of this executable.
    pub fn worker_program(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.config.worker_program = Some(path.into());
        self
    }

    /// Arguments for the worker program.
    pub fn worker_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        self.config.worker_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Most sync tasks one worker holds, running and sent ahead; fewer
    /// when tasks are long (see [`Config::worker_prefetch`]).
    pub fn worker_prefetch(mut self, n: usize) -> Self {
        self.config.worker_prefetch = n;
        self
    }

    /// Async process tasks one worker runs at once.
    pub fn worker_concurrency(mut self, n: usize) -> Self {
        self.config.worker_concurrency = n;
        self
    }

    /// Recycle a worker after `n` tasks.
    pub fn max_tasks_per_worker(mut self, n: u64) -> Self {
        self.config.max_tasks_per_worker = Some(n);
        self
    }

    /// Kill a worker whose resident memory passes `bytes` while it runs a
    /// task.
    pub fn max_memory_per_worker(mut self, bytes: u64) -> Self {
        self.config.max_memory_per_worker = Some(bytes);
        self
    }

    /// Stop workers above core idle for `d`.
    pub fn worker_idle_timeout(mut self, d: Duration) -> Self {
        self.config.worker_idle_timeout = Some(d);
        self
    }

    /// OS scheduling priority of worker processes.
    pub fn worker_priority(mut self, p: crate::ProcessPriority) -> Self {
        self.config.worker_priority = p;
        self
    }

    /// A registered process task each worker runs when it starts.
    pub fn worker_initializer<A, R>(mut self, hook: ProcessTask<A, R>) -> Self {
        self.config.worker_initializer = Some(hook.name().to_owned());
        self
    }

    /// A registered process task each worker runs before it exits.
    pub fn worker_finalizer<A, R>(mut self, hook: ProcessTask<A, R>) -> Self {
        self.config.worker_finalizer = Some(hook.name().to_owned());
        self
    }

    /// Largest IPC frame in bytes.
    pub fn max_frame_bytes(mut self, n: usize) -> Self {
        self.config.max_frame_bytes = n;
        self
    }

    /// Where worker stdout and stderr go.
    pub fn worker_output(mut self, o: crate::WorkerOutput) -> Self {
        self.config.worker_output = o;
        self
    }

    /// Validates the settings and starts the system's threads.
    pub fn build(self) -> Result<ConcurrentSystem, ConfigError> {
        let config = self.config;
        config.validate()?;
        let os = |field: &str, e: std::io::Error| {
            ConfigError::new(field, format!("the OS refused to start a thread: {e}"))
        };
        let stats = Arc::new(Counters::new());
        let pool = ThreadPool::start(PoolConfig {
            core: config.core_threads,
            max: config.max_threads,
            keep_alive: config.thread_keep_alive,
            name: config.name.clone(),
            stack_size: config.thread_stack_size,
        })
        .map_err(|e| os("core_threads", e))?;
        let timer = Arc::new(Timer::start(&config.name).map_err(|e| os("name", e))?);
        let process = ProcessPool::new(
            ProcessConfig {
                core: config.core_processes,
                max: config.max_processes,
                program: config.worker_program.clone(),
                args: config.worker_args.clone(),
                prefetch: config.worker_prefetch,
                concurrency: config.worker_concurrency,
                max_tasks_per_worker: config.max_tasks_per_worker,
                max_memory: config.max_memory_per_worker,
                idle_timeout: config.worker_idle_timeout,
                priority: config.worker_priority,
                init: config.worker_initializer.clone(),
                fini: config.worker_finalizer.clone(),
                max_frame: config.max_frame_bytes,
                output: config.worker_output,
                start_timeout: config.worker_start_timeout,
                name: config.name.clone(),
            },
            Arc::downgrade(&timer),
        );
        let callbacks = Dispatcher::start(
            config.callback_executor.clone(),
            &config.name,
            stats.clone(),
        )
        .map_err(|e| os("callback_executor", e))?;
        let async_exec = AsyncExec::new(
            config.async_threads,
            config.max_async_tasks,
            config.name.clone(),
        );
        let shared = Arc::new(Shared {
            config,
            pool,
            async_exec,
            timer,
            process,
            locks: LockTable::new(),
            stats,
            callbacks,
            closed: AtomicBool::new(false),
            cancel_all: AtomicBool::new(false),
            next_id: CachePadded::new(AtomicU64::new(1)),
            services: Mutex::new(Vec::new()),
            shutdown_done: Mutex::new(None),
            balance: crate::balance::BalanceState::new(),
        });
        crate::balance::BalanceState::start(&shared).map_err(|e| os("balance_interval", e))?;
        Ok(ConcurrentSystem { shared })
    }
}

/// Runs tasks on a thread pool, on an async runtime and on service threads,
/// each with a priority, a timeout, retries, locks and a [`TaskFuture`].
///
/// Dropping the system shuts it down with its configured
/// [`ShutdownMode`] and waits for that to finish (see
/// [`shutdown`](Self::shutdown)).
///
/// ```
/// use seedcore::{ConcurrentSystem, Priority, TaskOptions};
///
/// let system = ConcurrentSystem::builder().core_threads(2).build()?;
/// let answer = system.submit_thread(TaskOptions::new().priority(Priority::HIGH), |_| 6 * 7)?;
/// assert_eq!(answer.wait()?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ConcurrentSystem {
    shared: Arc<Shared>,
}

impl ConcurrentSystem {
    /// A builder with the defaults of [`Config::default`].
    pub fn builder() -> SystemBuilder {
        SystemBuilder::default()
    }

    /// A system with the default configuration.
    pub fn new() -> Result<ConcurrentSystem, ConfigError> {
        Self::builder().build()
    }

    /// The configuration the system runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The shared state, for methods defined next to their feature
    /// (monitor.rs, metrics.rs).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The callback queue, when the callback executor is
    /// [`CallbackExecutor::Queue`].
    pub fn callback_queue(&self) -> Option<CallbackQueue> {
        match &self.shared.config.callback_executor {
            CallbackExecutor::Queue(q) => Some(q.clone()),
            _ => None,
        }
    }

    fn accept<T, B>(
        &self,
        opts: TaskOptions,
        lane: Lane,
        body: B,
    ) -> Result<Arc<TaskCell<T, B>>, SubmitError>
    where
        T: Send + 'static,
        B: Send + Sync + 'static,
        TaskCell<T, B>: TaskRef<T>,
    {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(SubmitError::SystemClosed);
        }
        opts.validate()?;
        if let Some(limit) = shared.config.max_pending_tasks {
            crate::balance::admit(shared, limit)?;
        }
        if !opts.locks().is_empty() {
            shared
                .locks
                .check(opts.locks())
                .map_err(SubmitError::InvalidOptions)?;
        }
        let id = TaskId(shared.next_id.fetch_add(1, Ordering::Relaxed));
        let header = Header::new(id, opts, shared.clone(), lane);
        shared.stats.submitted();
        Ok(Arc::new(TaskCell::new(header, body)))
    }

    /// Queues `cell`, then closes the race with a concurrent shutdown.
    fn enqueue<T, B>(&self, cell: Arc<TaskCell<T, B>>) -> TaskFuture<T>
    where
        T: Send + 'static,
        B: Send + Sync + 'static,
        TaskCell<T, B>: TaskRef<T>,
    {
        let job: Arc<dyn Job> = cell.clone();
        match job.header().lane {
            // A fresh thread task goes straight to the pool's queue: no
            // back-off state to leave, and no reference count to bump.
            Lane::Thread => self.shared.pool.push(job),
            Lane::Other => job.schedule(),
        }
        if self.shared.closed.load(Ordering::SeqCst) {
            cell.resolve(Err(TaskError::SystemShutdown));
        }
        TaskFuture::new(cell)
    }

    /// Runs `f` on the thread pool and returns its future at once.
    ///
    /// `f` is `Fn` because a retry calls it again (and a timed-out attempt
    /// may still be running when the next one starts). A panic resolves the
    /// task [`TaskError::Panicked`]; the thread survives.
    pub fn submit_thread<T, F>(&self, opts: TaskOptions, f: F) -> Result<TaskFuture<T>, SubmitError>
    where
        T: Send + 'static,
        F: Fn(&TaskContext) -> T + Send + Sync + 'static,
    {
        let cell = self.accept(
            opts,
            Lane::Thread,
            ThreadBody(move |cx: &TaskContext| Ok(f(cx))),
        )?;
        Ok(self.enqueue(cell))
    }

    /// Like [`submit_thread`](Self::submit_thread) for code that returns
    /// its own errors: `Err(e)` resolves [`TaskError::Failed`] (or is
    /// retried, by the policy).
    pub fn submit_thread_fallible<T, E, F>(
        &self,
        opts: TaskOptions,
        f: F,
    ) -> Result<TaskFuture<T>, SubmitError>
    where
        T: Send + 'static,
        E: Into<BoxError>,
        F: Fn(&TaskContext) -> Result<T, E> + Send + Sync + 'static,
    {
        let body = ThreadBody(move |cx: &TaskContext| f(cx).map_err(TaskError::failed));
        let cell = self.accept(opts, Lane::Thread, body)?;
        Ok(self.enqueue(cell))
    }

    /// Runs the future made by `factory` on the system's async runtime. The
    /// factory is called once per attempt, so a retry gets a fresh future.
    /// A timeout or a cancel drops the future at once.
    pub fn submit_async<T, Fut, F>(
        &self,
        opts: TaskOptions,
        factory: F,
    ) -> Result<TaskFuture<T>, SubmitError>
    where
        T: Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    {
        let body = AsyncBody::new(move |cx: TaskContext| factory(cx).map(Ok).boxed());
        let cell = self.accept(opts, Lane::Other, body)?;
        Ok(self.enqueue(cell))
    }

    /// Like [`submit_async`](Self::submit_async) for futures that return
    /// their own errors.
    pub fn submit_async_fallible<T, E, Fut, F>(
        &self,
        opts: TaskOptions,
        factory: F,
    ) -> Result<TaskFuture<T>, SubmitError>
    where
        T: Send + 'static,
        E: Into<BoxError>,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    {
        let body = AsyncBody::new(move |cx: TaskContext| {
            factory(cx).map(|r| r.map_err(TaskError::failed)).boxed()
        });
        let cell = self.accept(opts, Lane::Other, body)?;
        Ok(self.enqueue(cell))
    }

    /// Runs the process task `task` with `args` in a worker process.
    ///
    /// Fails at once if the task is not registered, the arguments do not
    /// serialize, are larger than the frame limit or hold more than 253
    /// shared buffers (one descriptor each), or this process is itself a
    /// worker. A timeout kills the worker (and so stops the task);
    /// a worker that dies resolves its running task
    /// [`TaskError::WorkerDied`] (or retries it, with [`RetryOn::CRASH`]).
    ///
    /// [`RetryOn::CRASH`]: crate::RetryOn::CRASH
    pub fn submit_process<A, R>(
        &self,
        opts: TaskOptions,
        task: ProcessTask<A, R>,
        args: A,
    ) -> Result<TaskFuture<R>, SubmitError>
    where
        A: serde::Serialize,
        R: serde::de::DeserializeOwned + Send + 'static,
    {
        let is_async = self.process_target(task.name())?;
        self.enqueue_process(opts, task, is_async, encode_args(&args)?)
    }

    /// [`submit_process`](Self::submit_process) with the arguments
    /// already encoded (by [`encode_args`]).
    pub(crate) fn submit_encoded<A, R>(
        &self,
        opts: TaskOptions,
        task: ProcessTask<A, R>,
        args: EncodedArgs,
    ) -> Result<TaskFuture<R>, SubmitError>
    where
        R: serde::de::DeserializeOwned + Send + 'static,
    {
        let is_async = self.process_target(task.name())?;
        self.enqueue_process(opts, task, is_async, args)
    }

    /// Whether a process task may be submitted from here; whether it is
    /// async.
    fn process_target(&self, name: &str) -> Result<bool, SubmitError> {
        if crate::process::is_worker() {
            return Err(SubmitError::InsideWorker);
        }
        self.shared
            .process
            .serves(name)
            .ok_or_else(|| SubmitError::UnknownTask(name.to_owned()))
    }

    /// Checks the encoded arguments against what one frame carries, then
    /// queues the task.
    fn enqueue_process<A, R>(
        &self,
        opts: TaskOptions,
        task: ProcessTask<A, R>,
        is_async: bool,
        args: EncodedArgs,
    ) -> Result<TaskFuture<R>, SubmitError>
    where
        R: serde::de::DeserializeOwned + Send + 'static,
    {
        let limit = self.shared.config.max_frame_bytes;
        // The frame also holds the task's name and a few numbers.
        let size = args.bytes.len() + task.name().len() + 32;
        if size > limit {
            return Err(SubmitError::PayloadTooLarge { size, limit });
        }
        if args.fds.len() > crate::process::MAX_FDS {
            return Err(SubmitError::TooManySharedBuffers {
                count: args.fds.len(),
                limit: crate::process::MAX_FDS,
            });
        }
        let body = ProcessBody {
            task: task.name(),
            args: args.bytes,
            fds: args.fds,
            is_async,
            decode: decode_result::<R>,
        };
        let cell = self.accept(opts, Lane::Other, body)?;
        Ok(self.enqueue(cell))
    }

    /// Runs a long-lived service on a dedicated thread named `name`,
    /// outside the pool's capacity (the pool's threads stay free for
    /// tasks). Its future resolves when `f` returns; at shutdown its
    /// [`TaskContext::is_cancelled`] turns true and the shutdown waits for
    /// it (up to the shutdown timeout).
    pub fn spawn_service<T, F>(&self, name: &str, f: F) -> Result<TaskFuture<T>, SubmitError>
    where
        T: Send + 'static,
        F: FnOnce(&TaskContext) -> T + Send + 'static,
    {
        let once = Mutex::new(Some(f));
        let body = ThreadBody(move |cx: &TaskContext| match once.lock().take() {
            Some(f) => Ok(f(cx)),
            None => Err(TaskError::failed("a service runs once")),
        });
        let cell = self.accept(TaskOptions::new().name(name), Lane::Other, body)?;
        let job: Arc<dyn Job> = cell.clone();
        let runner = job.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{}-service-{name}", self.shared.config.name))
            .spawn(move || {
                runner.run(None);
            });
        match spawned {
            Ok(h) => {
                self.shared.services.lock().push((job, h));
                if self.shared.closed.load(Ordering::SeqCst) {
                    // Lost a race with shutdown: tell the service to stop.
                    cell.header.cancel_all_attempts();
                }
            }
            Err(e) => {
                cell.resolve(Err(TaskError::failed(format!(
                    "the OS refused to start the service thread: {e}"
                ))));
            }
        }
        Ok(TaskFuture::new(cell))
    }

    /// A snapshot of the counters, queue depths and histograms.
    pub fn stats(&self) -> Stats {
        stats_of(&self.shared)
    }

    /// Sets how many pool threads to keep, within `core_threads..=max_threads`
    /// (clamped), and returns the value set. Threads start at once to reach
    /// it; idle threads above it exit now. The balancer does this by
    /// itself under its expand and shrink policies; this is the manual form.
    pub fn resize_threads(&self, target: usize) -> usize {
        let set = self.shared.pool.resize(target);
        let threads = crate::balance::PoolKind::Threads;
        self.shared.balance.set_floor(threads, set);
        set
    }

    /// Sets how many worker processes to keep, within
    /// `core_processes..=max_processes` (clamped), and returns the value
    /// set; like [`resize_threads`](Self::resize_threads) for the process
    /// pool. Starts the pool if it has not started yet.
    pub fn resize_processes(&self, target: usize) -> usize {
        let set = self.shared.process.resize(target);
        let processes = crate::balance::PoolKind::Processes;
        self.shared.balance.set_floor(processes, set);
        set
    }

    /// Whether the system has stopped accepting tasks.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Shuts the system down (see the module docs for the steps) and waits
    /// for it. Calling it again returns the first report.
    pub fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport {
        let s = &self.shared;
        if s.closed.swap(true, Ordering::SeqCst) {
            // Someone else is shutting down: wait for their report.
            loop {
                if let Some(r) = s.shutdown_done.lock().clone() {
                    return r;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Step 0: the balancer stops resizing the pools.
        s.balance.stop();
        let start = Instant::now();
        let deadline = start + s.config.shutdown_timeout;
        let cancelled_before = s.stats.snapshot().cancelled;
        // Shut down from inside a task: that task is pending, and stays so
        // until this returns.
        let own = u64::from(crate::thread_pool::in_pool_thread());
        let services: Vec<Service> = std::mem::take(&mut *s.services.lock());
        for (job, _) in &services {
            job.header().cancel_all_attempts();
        }
        let mut timed_out = false;
        if mode == ShutdownMode::Graceful {
            let mut nap = Duration::from_micros(50);
            while s.stats.pending()
                > own + services.iter().filter(|(j, _)| !j.is_resolved()).count() as u64
            {
                if Instant::now() >= deadline {
                    timed_out = true;
                    break;
                }
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(5));
            }
        }
        let mut stop_by = deadline;
        if mode == ShutdownMode::Immediate || timed_out {
            let cancel_queued = || {
                let queued = s
                    .pool
                    .drain()
                    .into_iter()
                    .chain(s.async_exec.drain())
                    .chain(s.process.drain())
                    .chain(s.locks.drain_waiters());
                for job in queued {
                    job.fail(TaskError::Cancelled);
                }
            };
            // Queued work first, so that no pool thread freed by the
            // cancellation below picks it up; then the running work and
            // the retries; then whatever those put back meanwhile.
            cancel_queued();
            s.cancel_all.store(true, Ordering::SeqCst);
            s.timer.fire_backoffs();
            cancel_queued();
            // Running tasks get a moment to see their token, even when the
            // graceful part used the whole timeout.
            stop_by = deadline.max(Instant::now() + STOP_GRACE);
        }
        let mut detached = s.pool.stop(stop_by);
        // Tasks that slipped in during the drain, if any.
        for job in s.pool.drain() {
            job.fail(TaskError::Cancelled);
        }
        s.process
            .stop(stop_by, mode == ShutdownMode::Immediate || timed_out);
        s.async_exec.stop(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10)),
        );
        for (job, h) in services {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                detached += 1;
                job.fail(TaskError::SystemShutdown);
            }
        }
        s.timer.stop();
        if !s.callbacks.stop(stop_by.max(Instant::now() + STOP_GRACE)) {
            detached += 1;
        }
        let cancelled = (s.stats.snapshot().cancelled - cancelled_before) as usize;
        let report = ShutdownReport {
            mode,
            timed_out,
            cancelled,
            detached_threads: detached,
            took: start.elapsed(),
        };
        *s.shutdown_done.lock() = Some(report.clone());
        report
    }
}

impl Drop for ConcurrentSystem {
    fn drop(&mut self) {
        let mode = self.shared.config.shutdown_mode;
        self.shutdown(mode);
    }
}

impl fmt::Debug for ConcurrentSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrentSystem")
            .field("name", &self.shared.config.name)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A snapshot of the counters, queue depths, pool sizes and balancer
/// events of `s` (for [`ConcurrentSystem::stats`] and the metrics server).
pub(crate) fn stats_of(s: &Shared) -> Stats {
    let mut st = s.stats.snapshot();
    st.queue_depth = s.pool.depths();
    st.async_queued = s.async_exec.queued();
    let sizes = s.pool.sizes();
    st.threads_alive = sizes.alive;
    st.threads_stuck = sizes.stuck;
    st.threads_target = sizes.target;
    st.process_queued = s.process.queued();
    st.worker_pids = s.process.worker_pids();
    let ps = s.process.sizes();
    st.processes_alive = ps.live;
    st.processes_busy = ps.busy;
    st.processes_target = ps.target;
    s.balance.fill_stats(&mut st);
    st
}

/// A process task's arguments encoded for its frame.
pub(crate) struct EncodedArgs {
    pub(crate) bytes: Vec<u8>,
    /// The descriptors of the shared-memory buffers among them.
    pub(crate) fds: Vec<std::os::fd::OwnedFd>,
}

/// Encodes process-task arguments; shared-memory buffers among them are
/// collected as descriptors.
pub(crate) fn encode_args<A: serde::Serialize + ?Sized>(
    args: &A,
) -> Result<EncodedArgs, SubmitError> {
    let (bytes, fds) = crate::shm::collect_fds(|| crate::codec::to_vec(args, 64));
    let bytes = bytes.map_err(|e| SubmitError::Serialize(e.to_string()))?;
    Ok(EncodedArgs { bytes, fds })
}

/// Decodes a process task's result in the parent.
fn decode_result<R: serde::de::DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<std::os::fd::OwnedFd>,
) -> Result<R, TaskError> {
    crate::shm::with_fds(fds, || postcard::from_bytes::<R>(bytes))
        .map_err(|e| TaskError::failed(format!("the result could not be decoded: {e}")))
}
