//! `ConcurrentSystem`: the owner of the scheduler and its executors, and
//! its builder. A `submit_*` method builds a task body and hands it to the
//! scheduler with the slot of its executor; everything else (priorities,
//! timeouts, retries, locks, callbacks, stats, shutdown) is the
//! scheduler's and the task core's, the same for every executor.

mod balance;
#[cfg(feature = "cuda")]
mod gpu;
mod observe;
#[cfg(feature = "remote")]
mod remote;

use crate::config::{Config, ExpandPolicy, ProcessPriority, ShrinkPolicy, WorkerOutput};
use crate::error::{BoxError, ConfigError, SubmitError, TaskError};
use crate::exec::async_rt::{AsyncBody, AsyncExec};
use crate::exec::process::{decode_result, encode_args, EncodedArgs};
use crate::exec::process::{ProcessBody, ProcessConfig, ProcessPool, ProcessTask};
use crate::exec::service::ServiceExec;
use crate::exec::thread::{PoolConfig, ThreadInit, ThreadPool};
use crate::options::TaskOptions;
use crate::sched::callback::{CallbackExecutor, CallbackQueue, Dispatcher};
use crate::sched::counters::Counters;
use crate::sched::timer::Timer;
use crate::sched::ShutdownMode;
use crate::sched::{ClosureBody, Executor, Scheduler, ShutdownHandle};
use crate::snapshot::Stats;
use crate::task::{Body, ExecutorKind, TaskContext, TaskFuture};
use futures_util::FutureExt;
use parking_lot::Mutex;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
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
    /// The environment (`sched` and default options) that every task
    /// record with default options points at.
    pub(crate) env: crate::task::EnvRef,
    /// The balancer thread, its events, and the monitor (balance/).
    pub(crate) balance: crate::balance::BalanceState,
}

impl Shared {
    /// The thread pool (its slot is fixed at build).
    pub(crate) fn threads(&self) -> &ThreadPool {
        self.sched.registry.at(THREADS)
    }

    /// The async runtime (its slot is fixed at build).
    pub(crate) fn asyncs(&self) -> &AsyncExec {
        self.sched.registry.at(ASYNC)
    }

    /// The process pool (its slot is fixed at build).
    pub(crate) fn process(&self) -> &ProcessPool {
        self.sched.registry.at(PROCESSES)
    }

    /// The one way an executor joins a running system: into the table,
    /// and seen by the balancer when it can change size.
    pub(crate) fn register<E: Executor>(self: &Arc<Self>, e: Arc<E>) -> Result<u8, SubmitError> {
        let slot = self.sched.register(e)?;
        self.balance_new_executor();
        Ok(slot)
    }

    /// The executor of `kind`, as its own type: started by `start` and
    /// registered on first use (the GPU, command and remote executors). A
    /// start that failed is not tried again: its error is the answer.
    pub(crate) fn executor_or_start<E: Executor>(
        self: &Arc<Self>,
        kind: ExecutorKind,
        start: impl FnOnce() -> Result<Arc<E>, SubmitError>,
    ) -> Result<(u8, Arc<E>), SubmitError> {
        self.sched.registry.get_or_add(
            kind,
            || self.sched.check_open(),
            start,
            || self.balance_new_executor(),
        )
    }

    /// The executor of `kind`, as its own type, if it is registered.
    #[cfg(feature = "remote")]
    pub(crate) fn executor<E: Executor>(&self, kind: ExecutorKind) -> Option<(u8, Arc<E>)> {
        self.sched.registry.typed(kind)
    }

    fn balance_new_executor(self: &Arc<Self>) {
        if let Err(e) = crate::balance::BalanceState::start(self) {
            log::error!("seedcore: could not start the balancer thread: {e}");
        }
    }
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
    /// The remote executor's settings (exec/remote/client.rs).
    #[cfg(feature = "remote")]
    pub(crate) remote: Option<crate::remote::RemoteConfig>,
    thread_init: Option<ThreadInit>,
    /// The process initializer's arguments, encoded; `Err` says why they
    /// could not be, for [`build`](Self::build).
    init_args: Option<Result<Vec<u8>, String>>,
}

/// Largest encoding, in bytes, of the arguments given to
/// [`SystemBuilder::process_initializer_with`]. They reach each worker
/// process in its environment, where one variable is limited in size.
pub const MAX_INITIALIZER_ARGS_BYTES: usize = 32 << 10;

impl SystemBuilder {
    /// The settings, for the setters generated from the key table and
    /// those written in other files of this module.
    pub(crate) fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// Replaces every setting with `config`.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    // One setter per key of the table that names one (config/keys.rs);
    // the table's types are named here, where the setters expand.
    crate::config::builder_setters!();

    /// Arguments for the worker program (`processes.args`).
    pub fn process_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        self.config.processes.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Code each pool thread runs when it starts, before any task. If it
    /// fails (an error or a panic), the thread pool is broken: queued and
    /// later thread tasks resolve [`TaskError::PoolBroken`] with its
    /// message, and no more threads are started.
    pub fn thread_initializer<E, F>(mut self, init: F) -> Self
    where
        E: fmt::Display,
        F: Fn() -> Result<(), E> + Send + Sync + 'static,
    {
        self.thread_init = Some(ThreadInit::new(move || init().map_err(|e| e.to_string())));
        self
    }

    /// A registered process task each worker process runs when it starts
    /// (`processes.initializer`), with unit arguments. It replaces an
    /// initializer given before, and its arguments.
    pub fn process_initializer<A, R>(mut self, hook: ProcessTask<A, R>) -> Self {
        self.config.processes.initializer = Some(hook.name().to_owned());
        self.init_args = None;
        self
    }

    /// A registered process task each worker process runs when it starts
    /// (`processes.initializer`), called with `args`. The arguments are
    /// encoded once, here; every worker, replacements included, decodes
    /// its own copy before it takes a task.
    ///
    /// If `args` cannot be encoded, or its encoding is over
    /// [`MAX_INITIALIZER_ARGS_BYTES`], [`build`](Self::build) returns a
    /// [`ConfigError`] for `processes.initializer`. If a worker cannot
    /// decode them, the initializer fails: the process pool is broken with
    /// a message saying so, as when the initializer itself fails.
    ///
    /// ```no_run
    /// seedcore::process_task! {
    ///     fn load_model(path: String) {
    ///         // Open `path` once per worker process.
    /// #       let _ = path;
    ///     }
    /// }
    ///
    /// fn main() -> Result<(), seedcore::ConfigError> {
    ///     seedcore::init();
    ///     let system = seedcore::ConcurrentSystem::builder()
    ///         .process_initializer_with(load_model, "/models/small.bin".to_owned())
    ///         .build()?;
    /// #   drop(system);
    ///     Ok(())
    /// }
    /// ```
    pub fn process_initializer_with<A, R>(mut self, hook: ProcessTask<A, R>, args: A) -> Self
    where
        A: serde::Serialize,
    {
        self.config.processes.initializer = Some(hook.name().to_owned());
        // As task arguments are encoded, so that a type's own message
        // reaches the error.
        let encoded = crate::wire::codec::to_vec(&args, 64)
            .map_err(|e| {
                let why = crate::wire::why::describe(&args, &e);
                format!(
                    "the arguments of `{}` cannot be encoded: {why}",
                    hook.name()
                )
            })
            .and_then(|bytes| {
                if bytes.len() > MAX_INITIALIZER_ARGS_BYTES {
                    Err(format!(
                        "the arguments of `{}` take {} bytes encoded, over the limit of {} \
                         (pass a path or a key instead, and load the data in the initializer)",
                        hook.name(),
                        bytes.len(),
                        MAX_INITIALIZER_ARGS_BYTES
                    ))
                } else {
                    Ok(bytes)
                }
            });
        self.init_args = Some(encoded);
        self
    }

    /// A registered process task each worker process runs before it exits
    /// (`processes.finalizer`).
    pub fn process_finalizer<A, R>(mut self, hook: ProcessTask<A, R>) -> Self {
        self.config.processes.finalizer = Some(hook.name().to_owned());
        self
    }

    /// Binds worker processes to GPUs, one device each, in turn
    /// ([`processes.gpu_devices`](crate::config::ProcessesConfig::gpu_devices)).
    pub fn process_gpu_devices<I, S>(mut self, devices: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        self.config.processes.gpu_devices = devices.into_iter().map(Into::into).collect();
        self
    }

    /// Validates the settings and starts the system's threads.
    ///
    /// In a process started as a worker whose `main` did not call
    /// [`seedcore::init()`](crate::init) first, this ends the process with a
    /// message naming `init` (the pool that started it fails its tasks with
    /// that message): such a process would start workers of its own.
    pub fn build(self) -> Result<ConcurrentSystem, ConfigError> {
        crate::exec::process::refuse_if_uninitialized();
        #[cfg(feature = "remote")]
        let remote = self.remote;
        let config = self.config;
        let thread_init = self.thread_init;
        config.validate()?;
        check_hooks(&config)?;
        // The builder's remote settings, else the `[remote]` section's.
        #[cfg(feature = "remote")]
        let remote = match remote {
            Some(r) => Some(r),
            None if config.remote.url.is_some() => Some(
                crate::remote::RemoteConfig::from_settings(&config.remote)
                    .map_err(|e| ConfigError::new("remote.url", e.to_string()))?,
            ),
            None => None,
        };
        #[cfg(not(feature = "remote"))]
        if config.remote.url.is_some() {
            return Err(ConfigError::new(
                "remote.url",
                "this build of seedcore has no remote executor (cargo feature `remote`)",
            ));
        }
        let init_args = self
            .init_args
            .transpose()
            .map_err(|why| ConfigError::new("processes.initializer", why))?;
        let os = |field: &str, e: std::io::Error| {
            ConfigError::new(field, format!("the OS refused to start a thread: {e}"))
        };
        // The stats clock calibrates on first use: here, not in a task.
        let _ = crate::task::StatClock::now();
        let stats = Arc::new(Counters::new());
        let threads = ThreadPool::start(PoolConfig {
            core: config.threads.core,
            max: config.threads.max,
            keep_alive: config.threads.keep_alive,
            name: config.name.clone(),
            stack_size: config.threads.stack_size,
            init: thread_init,
        })
        .map_err(|e| os("threads.core", e))?;
        let timer = Arc::new(Timer::start(&config.name).map_err(|e| os("name", e))?);
        let process = ProcessPool::new(process_config(&config, init_args), Arc::downgrade(&timer));
        let callbacks = Dispatcher::start(
            config.callbacks.executor.clone(),
            &config.name,
            stats.clone(),
        )
        .map_err(|e| os("callbacks.executor", e))?;
        let asyncs = AsyncExec::new(
            config.r#async.threads,
            config.r#async.max_tasks,
            config.name.clone(),
        );
        let sched = Arc::new(Scheduler::new(stats, timer, callbacks));
        let services = Arc::new(ServiceExec::new(config.name.clone()));
        // In the order of their fixed slots.
        let room = "a new scheduler has room";
        let slots = [
            sched.register(threads).expect(room),
            sched.register(process).expect(room),
            sched.register(asyncs).expect(room),
            sched.register(services).expect(room),
        ];
        debug_assert_eq!(slots, [THREADS, PROCESSES, ASYNC, SERVICES]);
        let shared = Arc::new(Shared {
            config,
            env: crate::task::TaskEnv::new(sched.clone()),
            sched,
            balance: crate::balance::BalanceState::new(),
        });
        crate::balance::BalanceState::start(&shared).map_err(|e| os("balance.interval", e))?;
        let system = ConcurrentSystem { shared };
        #[cfg(feature = "remote")]
        if let Some(remote) = remote {
            system
                .add_remote(remote)
                .map_err(|e| ConfigError::new("remote.url", e.to_string()))?;
        }
        Ok(system)
    }
}

/// The process hooks name registered process tasks, when the workers run
/// this executable (another program registers its own). Checked here, not
/// in [`Config::validate`]: the configuration knows nothing of the
/// registry.
fn check_hooks(config: &Config) -> Result<(), ConfigError> {
    let p = &config.processes;
    if p.program.is_some() {
        return Ok(());
    }
    for (key, hook) in [
        ("processes.initializer", &p.initializer),
        ("processes.finalizer", &p.finalizer),
    ] {
        if let Some(h) = hook {
            if crate::exec::process::find(h).is_none() {
                return Err(ConfigError::new(
                    key,
                    format!("`{h}` is not a registered process task"),
                ));
            }
        }
    }
    Ok(())
}

/// The process pool's settings from `config`. Idle retirement above core
/// is the shrink policy's: workers idle for `balance.shrink_timeout` retire
/// exactly when `balance.shrink` is [`ShrinkPolicy::TimeoutShrink`], as the
/// balancer retires threads.
fn process_config(config: &Config, init_args: Option<Vec<u8>>) -> ProcessConfig {
    let p = &config.processes;
    let idle_timeout = (config.balance.shrink == ShrinkPolicy::TimeoutShrink)
        .then_some(config.balance.shrink_timeout);
    ProcessConfig {
        core: p.core,
        max: p.max,
        program: p.program.clone(),
        args: p.args.clone(),
        gpu_devices: p.gpu_devices.clone(),
        prefetch: p.prefetch,
        concurrency: p.concurrency,
        max_tasks_per_worker: p.max_tasks_per_process,
        max_memory: p.max_memory,
        idle_timeout,
        priority: p.priority,
        init: p.initializer.clone(),
        init_args,
        fini: p.finalizer.clone(),
        max_frame: p.max_frame_bytes,
        output: p.output,
        start_timeout: p.start_timeout,
        name: config.name.clone(),
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

    /// Accepts a task for the executor in `slot` and queues it.
    pub(crate) fn submit_body<B: Body>(
        &self,
        opts: TaskOptions,
        slot: u8,
        body: B,
    ) -> Result<TaskFuture<B::Output>, SubmitError> {
        let shared = &self.shared;
        shared.sched.check_open()?;
        opts.validate()?;
        if let Some(limit) = shared.config.balance.max_pending_tasks {
            crate::balance::admit(&**shared, limit)?;
        }
        let cell = shared.sched.create(&shared.env, opts, slot, body)?;
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
    /// A timeout or a cancel drops the future at once (once its poll
    /// returns: a future that blocks inside `poll` cannot be stopped, and
    /// its retry starts after it is dropped, as two attempts of one async
    /// task never run at once).
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
        let body = AsyncBody::new(self.shared.asyncs(), move |cx: TaskContext| {
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
        let body = AsyncBody::new(self.shared.asyncs(), move |cx: TaskContext| {
            factory(cx).map(|r| r.map_err(TaskError::failed))
        });
        self.submit_body(opts, ASYNC, body)
    }

    /// Runs the process task `task` with `args` in a worker process.
    ///
    /// Fails at once if the task is not registered, the pool cannot run
    /// tasks ([`SubmitError::PoolBroken`]), the arguments do not serialize
    /// or hold more than 253 shared buffers (one descriptor each), or this
    /// process is itself a worker. Arguments over the frame limit cross in
    /// shared memory. A timeout kills the worker (and so stops the task);
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
        self.enqueue_process(
            opts,
            task,
            is_async,
            encode_args(&args)?,
            decode_result::<R>,
        )
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
        self.enqueue_process(opts, task, is_async, args, decode_result::<R>)
    }

    /// A process task by name, its result left encoded (remote workers).
    #[cfg(feature = "remote")]
    pub(crate) fn submit_process_raw(
        &self,
        opts: TaskOptions,
        name: &'static str,
        args: Vec<u8>,
    ) -> Result<TaskFuture<Vec<u8>>, SubmitError> {
        let is_async = self.process_target(name)?;
        let args = EncodedArgs {
            bytes: args,
            fds: Vec::new(),
        };
        let raw: crate::exec::process::Decode<Vec<u8>> = |bytes, fds| {
            if fds.is_empty() {
                Ok(bytes.to_vec())
            } else {
                Err(TaskError::failed(
                    "a result holding shared-memory buffers cannot travel to a remote client",
                ))
            }
        };
        let task = ProcessTask::<(), Vec<u8>>::external(name);
        self.enqueue_process(opts, task, is_async, args, raw)
    }

    /// Whether a process task may be submitted from here; whether it is
    /// async.
    fn process_target(&self, name: &str) -> Result<bool, SubmitError> {
        if crate::exec::process::is_worker() {
            return Err(SubmitError::InsideWorker);
        }
        self.shared.process().admit(name)
    }

    /// Checks the encoded arguments against what one frame carries, then
    /// queues the task.
    fn enqueue_process<A, R>(
        &self,
        opts: TaskOptions,
        task: ProcessTask<A, R>,
        is_async: bool,
        args: EncodedArgs,
        decode: crate::exec::process::Decode<R>,
    ) -> Result<TaskFuture<R>, SubmitError>
    where
        R: Send + 'static,
    {
        let limit = self.shared.config.processes.max_frame_bytes;
        // The frame also holds the task's name and a few numbers.
        let size = args.bytes.len() + task.name().len() + 32;
        let EncodedArgs { mut bytes, mut fds } = args;
        let mut boxed = None;
        if size > limit {
            // Too large for one frame: the arguments cross in shared
            // memory, one descriptor more.
            let fd = crate::wire::shm::export_bytes(&bytes)
                .map_err(|_| SubmitError::PayloadTooLarge { size, limit })?;
            boxed = Some(bytes.len() as u64);
            fds.push(fd);
            bytes = Vec::new();
        }
        if fds.len() > crate::exec::process::MAX_FDS {
            return Err(SubmitError::TooManySharedBuffers {
                count: fds.len(),
                limit: crate::exec::process::MAX_FDS,
            });
        }
        let body = ProcessBody {
            pool: self.shared.sched.registry.arc_at(PROCESSES),
            task: task.name(),
            args: bytes,
            fds,
            is_async,
            boxed,
            decode,
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
        let slot = self.shared.register(Arc::new(executor))?;
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

    /// Runs the external command `spec` as a task on the command executor
    /// (added with one slot per core on first use, unless the application
    /// added its own [`CommandExecutor`](crate::command::CommandExecutor)):
    /// the command runs in its own process group, a timeout or cancel kills
    /// the group (SIGTERM, a grace period, SIGKILL), and a non-zero exit
    /// resolves [`TaskError::Failed`] holding a
    /// [`CommandFailed`](crate::command::CommandFailed), retried by the
    /// task's policy.
    pub fn submit_command(
        &self,
        opts: TaskOptions,
        spec: crate::command::CommandSpec,
    ) -> Result<TaskFuture<crate::command::CommandOutput>, SubmitError> {
        let slot = self.command_slot()?;
        let body =
            ClosureBody::new(move |cx: &TaskContext| crate::exec::command::run_attempt(&spec, cx));
        self.submit_body(opts, slot, body)
    }

    /// The command executor's slot, added on first use (unless the
    /// application added its own).
    fn command_slot(&self) -> Result<u8, SubmitError> {
        let settings = &self.shared.config.command;
        let (slot, _) = self.shared.executor_or_start(crate::command::KIND, || {
            Ok(Arc::new(crate::command::CommandExecutor::from_settings(
                settings,
            )))
        })?;
        Ok(slot)
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
        match &self.shared.config.callbacks.executor {
            CallbackExecutor::Queue(q) => Some(q.clone()),
            _ => None,
        }
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
        self.resize_on(self.shared.threads(), target)
    }

    /// Sets how many worker processes to keep, within
    /// `core_processes..=max_processes` (clamped), and returns the value
    /// set; [`resize`](Self::resize) for [`ExecutorKind::Processes`].
    /// Starts the pool if it has not started yet.
    pub fn resize_processes(&self, target: usize) -> usize {
        self.resize_on(self.shared.process(), target)
    }

    /// Whether the system has stopped accepting tasks.
    pub fn is_closed(&self) -> bool {
        self.shared.sched.is_closed()
    }

    /// Shuts the system down (see the module docs for the steps) and waits
    /// for it. Calling it again returns the first report; called with
    /// [`ShutdownMode::Immediate`] while a graceful shutdown is still
    /// waiting for work, it makes that one immediate first (the report
    /// then says `timed_out`).
    pub fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport {
        let s = &self.shared;
        // Step 0: the balancer stops resizing the pools (idempotent).
        s.balance.stop();
        s.sched.shutdown(mode, s.config.shutdown_timeout)
    }

    /// Starts a shutdown and returns at once; the handle says when it is
    /// done and gives its report. Dropping the system afterwards waits for
    /// this shutdown to end.
    pub fn shutdown_background(&self, mode: ShutdownMode) -> ShutdownHandle {
        let shared = self.shared.clone();
        let name = format!("{}-shutdown", shared.config.name);
        ShutdownHandle::start(name, move || {
            shared.balance.stop();
            shared.sched.shutdown(mode, shared.config.shutdown_timeout)
        })
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
fn stats_of(s: &Shared) -> Stats {
    let mut st = s.sched.snapshot();
    s.balance.fill_stats(&mut st);
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_processes_retire_when_idle_exactly_under_timeout_shrink() {
        let mut config = Config::default();
        config.balance.shrink_timeout = Duration::from_secs(7);
        for (policy, idle) in [
            (ShrinkPolicy::TimeoutShrink, Some(Duration::from_secs(7))),
            (ShrinkPolicy::AutoShrink, None),
            (ShrinkPolicy::NoShrink, None),
        ] {
            config.balance.shrink = policy;
            assert_eq!(
                process_config(&config, None).idle_timeout,
                idle,
                "{policy:?}"
            );
        }
    }
}
