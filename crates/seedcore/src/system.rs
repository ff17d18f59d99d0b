//! `ConcurrentSystem`: the owner of the scheduler and its executors, and
//! its builder. A `submit_*` method builds a task body and hands it to the
//! scheduler with the slot of its executor; everything else (priorities,
//! timeouts, retries, locks, callbacks, stats, shutdown) is the
//! scheduler's and the task core's, the same for every executor.

use crate::config::{Config, ShutdownMode};
use crate::error::{BoxError, ConfigError, SubmitError, TaskError};
use crate::exec::async_rt::{AsyncBody, AsyncExec};
use crate::exec::process::{ProcessBody, ProcessConfig, ProcessPool, ProcessTask};
use crate::exec::service::ServiceExec;
use crate::exec::thread::{PoolConfig, ThreadPool};
use crate::observe::stats::{Counters, Stats};
use crate::options::TaskOptions;
use crate::sched::callback::{CallbackExecutor, CallbackQueue, Dispatcher};
use crate::sched::timer::Timer;
use crate::sched::{ClosureBody, Executor, Scheduler};
use crate::task::{Body, ExecutorKind, TaskContext, TaskFuture};
use futures_util::FutureExt;
use parking_lot::Mutex;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use crate::sched::ShutdownReport;

/// The slots of the built-in executors in the scheduler's table; added
/// executors follow.
pub(crate) const THREADS: u8 = 0;
pub(crate) const PROCESSES: u8 = 1;
pub(crate) const ASYNC: u8 = 2;
pub(crate) const SERVICES: u8 = 3;

/// State shared by the system handle and its own threads (the balancer,
/// the metrics server). Tasks see only the scheduler.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) sched: Arc<Scheduler>,
    pub(crate) threads: Arc<ThreadPool>,
    pub(crate) asyncs: Arc<AsyncExec>,
    pub(crate) process: Arc<ProcessPool>,
    /// The balancer thread, its events, and the monitor (balance/).
    pub(crate) balance: crate::balance::BalanceState,
}

/// An executor added with [`ConcurrentSystem::add_executor`]: pass it to
/// [`ConcurrentSystem::submit_on`]. Cheap to clone; dropping it changes
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorHandle {
    slot: u8,
    kind: ExecutorKind,
}

impl ExecutorHandle {
    /// The executor's kind.
    pub fn kind(&self) -> ExecutorKind {
        self.kind
    }
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
        let threads = ThreadPool::start(PoolConfig {
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
        let asyncs = AsyncExec::new(
            config.async_threads,
            config.max_async_tasks,
            config.name.clone(),
        );
        let sched = Arc::new(Scheduler::new(stats, timer, callbacks));
        let services = Arc::new(ServiceExec::new(config.name.clone()));
        let table: [(u8, Arc<dyn Executor>); 4] = [
            (THREADS, threads.clone()),
            (PROCESSES, process.clone()),
            (ASYNC, asyncs.clone()),
            (SERVICES, services),
        ];
        for (slot, e) in table {
            let got = sched.register(e).expect("a new scheduler has room");
            debug_assert_eq!(got, slot);
        }
        let shared = Arc::new(Shared {
            config,
            sched,
            threads,
            asyncs,
            process,
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

    /// Accepts a task for the executor in `slot` and queues it.
    fn submit_body<B: Body>(
        &self,
        opts: TaskOptions,
        slot: u8,
        body: B,
    ) -> Result<TaskFuture<B::Output>, SubmitError> {
        let shared = &self.shared;
        shared.sched.check_open()?;
        opts.validate()?;
        if let Some(limit) = shared.config.max_pending_tasks {
            crate::balance::admit(shared, limit)?;
        }
        let cell = shared.sched.create(opts, slot, body)?;
        Ok(shared.sched.enqueue(cell))
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
        let body = ClosureBody::new(move |cx: &TaskContext| Ok(f(cx)));
        self.submit_body(opts, THREADS, body)
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
        let body = ClosureBody::new(move |cx: &TaskContext| f(cx).map_err(TaskError::failed));
        self.submit_body(opts, THREADS, body)
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
        let body = AsyncBody::new(&self.shared.asyncs, move |cx: TaskContext| {
            factory(cx).map(Ok::<T, TaskError>)
        });
        self.submit_body(opts, ASYNC, body)
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
        let body = AsyncBody::new(&self.shared.asyncs, move |cx: TaskContext| {
            factory(cx).map(|r| r.map_err(TaskError::failed))
        });
        self.submit_body(opts, ASYNC, body)
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
        if crate::exec::process::is_worker() {
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
        if args.fds.len() > crate::exec::process::MAX_FDS {
            return Err(SubmitError::TooManySharedBuffers {
                count: args.fds.len(),
                limit: crate::exec::process::MAX_FDS,
            });
        }
        let body = ProcessBody {
            pool: self.shared.process.clone(),
            task: task.name(),
            args: args.bytes,
            fds: args.fds,
            is_async,
            decode: decode_result::<R>,
        };
        self.submit_body(opts, PROCESSES, body)
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
        let body = ClosureBody::new(move |cx: &TaskContext| match once.lock().take() {
            Some(f) => Ok(f(cx)),
            None => Err(TaskError::failed("a service runs once")),
        });
        self.submit_body(TaskOptions::new().name(name), SERVICES, body)
    }

    /// Adds an executor of the application's own to the system, after the
    /// built-in ones; tasks reach it through [`submit_on`](Self::submit_on)
    /// with every option (priority, timeout, retries, locks, callbacks)
    /// and its row appears in [`stats`](Self::stats). Fails if the system is
    /// closed, an executor of the same kind is registered, or the table is
    /// full (16 executors). The system stops it at shutdown, after the
    /// built-in ones.
    pub fn add_executor<E: Executor>(&self, executor: E) -> Result<ExecutorHandle, SubmitError> {
        let kind = executor.kind();
        let slot = self.shared.sched.register(Arc::new(executor))?;
        Ok(ExecutorHandle { slot, kind })
    }

    /// Like [`submit_thread`](Self::submit_thread), on the executor added
    /// as `executor`.
    pub fn submit_on<T, F>(
        &self,
        executor: &ExecutorHandle,
        opts: TaskOptions,
        f: F,
    ) -> Result<TaskFuture<T>, SubmitError>
    where
        T: Send + 'static,
        F: Fn(&TaskContext) -> T + Send + Sync + 'static,
    {
        let body = ClosureBody::new(move |cx: &TaskContext| Ok(f(cx)));
        self.submit_body(opts, executor.slot, body)
    }

    /// A snapshot of the counters, queue depths and histograms.
    pub fn stats(&self) -> Stats {
        stats_of(&self.shared)
    }

    /// Sets how many workers the executor of `kind` keeps, within its core
    /// and max sizes (clamped), and returns the value set; `None` if the
    /// system has no executor of that kind. The value set is the
    /// balancer's floor from now on: it grows the executor above it under
    /// its expand policy and shrinks it back to it, never below. Executors
    /// of a fixed size (the async runtime, services) return their size.
    ///
    /// ```
    /// use seedcore::{ConcurrentSystem, ExecutorKind};
    ///
    /// let system = ConcurrentSystem::builder().core_threads(1).max_threads(4).build()?;
    /// assert_eq!(system.resize(ExecutorKind::Threads, 3), Some(3));
    /// assert_eq!(system.resize(ExecutorKind::Threads, 99), Some(4));
    /// assert_eq!(system.resize(ExecutorKind::Custom("gpu"), 2), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resize(&self, kind: ExecutorKind, target: usize) -> Option<usize> {
        let (_, e) = self
            .shared
            .sched
            .executors()
            .find(|(_, e)| e.kind() == kind)?;
        Some(self.resize_on(&**e, target))
    }

    /// Resizes `e` and makes the size set its floor.
    fn resize_on(&self, e: &dyn Executor, target: usize) -> usize {
        let set = e.resize(target);
        self.shared.balance.set_floor(e.kind(), set);
        set
    }

    /// Sets how many pool threads to keep, within `core_threads..=max_threads`
    /// (clamped), and returns the value set; [`resize`](Self::resize) for
    /// [`ExecutorKind::Threads`]. Threads start at once to reach it; idle
    /// threads above it exit now. The balancer does this by itself under
    /// its expand and shrink policies; this is the manual form.
    pub fn resize_threads(&self, target: usize) -> usize {
        self.resize_on(&*self.shared.threads, target)
    }

    /// Sets how many worker processes to keep, within
    /// `core_processes..=max_processes` (clamped), and returns the value
    /// set; [`resize`](Self::resize) for [`ExecutorKind::Processes`].
    /// Starts the pool if it has not started yet.
    pub fn resize_processes(&self, target: usize) -> usize {
        self.resize_on(&*self.shared.process, target)
    }

    /// Whether the system has stopped accepting tasks.
    pub fn is_closed(&self) -> bool {
        self.shared.sched.is_closed()
    }

    /// Shuts the system down (see the module docs for the steps) and waits
    /// for it. Calling it again returns the first report.
    pub fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport {
        let s = &self.shared;
        // Step 0: the balancer stops resizing the pools (idempotent).
        s.balance.stop();
        s.sched.shutdown(mode, s.config.shutdown_timeout)
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

/// A snapshot of the counters, the executors' rows and the balancer's
/// events of `s` (for [`ConcurrentSystem::stats`] and the metrics server).
pub(crate) fn stats_of(s: &Shared) -> Stats {
    let mut st = s.sched.snapshot();
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
    let (bytes, fds) = crate::wire::shm::collect_fds(|| crate::wire::codec::to_vec(args, 64));
    let bytes = bytes.map_err(|e| SubmitError::Serialize(e.to_string()))?;
    Ok(EncodedArgs { bytes, fds })
}

/// Decodes a process task's result in the parent.
fn decode_result<R: serde::de::DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<std::os::fd::OwnedFd>,
) -> Result<R, TaskError> {
    crate::wire::shm::with_fds(fds, || postcard::from_bytes::<R>(bytes))
        .map_err(|e| TaskError::failed(format!("the result could not be decoded: {e}")))
}
