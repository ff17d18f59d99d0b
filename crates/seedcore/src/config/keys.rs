//! The key table: every setting, with its section, type, default,
//! parser, check and documentation, in one place.

use super::parse::check::{at_least_one, max_over, ok, positive, share, some_at_least_one};
use super::parse::Raw;
use super::policy::{ExpandPolicy, ProcessPriority, QueueFull, ShrinkPolicy, WorkerOutput};
use super::table::{config_keys, Key};
use super::Secret;
use crate::sched::callback::CallbackExecutor;
use crate::sched::ShutdownMode;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// The number of logical cores, the base of the pools' default sizes.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

config_keys! {
    /// The configuration of a [`ConcurrentSystem`](crate::ConcurrentSystem).
    ///
    /// One section per executor, plus a few keys at the top level. In
    /// TOML a key is written in its section (`[threads]` then `core = 4`);
    /// in the environment it is `SEEDCORE_` and the section and key
    /// upper-cased, joined by `_` (`SEEDCORE_THREADS_CORE=4`,
    /// `SEEDCORE_BALANCE_SHRINK_TIMEOUT=10s`, `SEEDCORE_NAME=batch`). In
    /// Rust a key is a field of its section (`config.threads.core`; the
    /// `[async]` section is the field `r#async`, since `async` is a
    /// keyword). An error names the key as `section.key`
    /// ([`ConfigError::field`](crate::ConfigError::field)).
    ///
    /// Durations are written like `"250ms"`, `"5s"` or `"1m 30s"` (in TOML,
    /// a bare number is seconds: `2.5`); sizes as
    /// a number of bytes or a string like `"512MiB"` or `"2 GB"`; fractions
    /// as a number like `0.8` or a string like `"80%"`. An unknown key or
    /// section is an error, and so is a key of the old flat layout
    /// (`core_threads`, `SEEDCORE_CORE_THREADS`): its error names the new
    /// place. Other `SEEDCORE_*` variables, outside the sections, are left
    /// to the tools that use them.
    ///
    /// ```
    /// use seedcore::Config;
    ///
    /// let cfg = Config::from_toml_str(
    ///     "[threads]\ncore = 2\nmax = 8\nkeep_alive = \"30s\"\n\n[balance]\nshrink = \"timeout\"",
    /// )?;
    /// assert_eq!(cfg.threads.max, 8);
    ///
    /// let err = Config::from_toml_str("[threads]\ncore = 4\nmax = 2").unwrap_err();
    /// assert_eq!(err.field, "threads.max");
    ///
    /// let err = Config::from_toml_str("core_threads = 4").unwrap_err();
    /// assert!(err.reason.contains("threads.core"), "{err}");
    /// # Ok::<(), seedcore::ConfigError>(())
    /// ```
    top {
        /// Prefix of thread names.
        name: String = "seedcore".to_owned();
        type "string", default "`\"seedcore\"`",
        parse |r| r.text(),
        check |v, _| {
            if v.trim().is_empty() {
                return Err("must not be empty".to_owned());
            }
            Ok(())
        };
        builder name(impl Into<String>) => Into::into;

        /// What dropping the system, or a graceful shutdown that runs out
        /// of time, does with the work that is left.
        shutdown_mode: ShutdownMode = ShutdownMode::Graceful;
        type "`\"graceful\"` or `\"immediate\"`", default "`\"graceful\"`",
        parse |r| r.shutdown_mode(),
        check ok;
        builder shutdown_mode;

        /// How long a shutdown waits for work and threads to finish.
        shutdown_timeout: Duration = Duration::from_secs(30);
        type "duration", default "`\"30s\"`",
        parse |r| r.duration(),
        check positive;
        builder shutdown_timeout;
    }

    /// The thread pool.
    ["threads"] threads: ThreadsConfig {
        /// Pool threads kept running.
        core: usize = cores();
        type "integer", default "the number of logical cores",
        parse |r| r.count(),
        check at_least_one;
        builder core_threads;

        /// Upper bound of pool threads, replacements of stuck threads
        /// included; at least `threads.core`.
        max: usize = cores() * 2;
        type "integer", default "twice the number of logical cores",
        parse |r| r.count(),
        check |v, c| max_over(*v, c.threads.core, "threads.core");
        builder max_threads;

        /// How long a thread above `threads.core` stays idle before it
        /// exits.
        keep_alive: Duration = Duration::from_secs(60);
        type "duration", default "`\"60s\"`",
        parse |r| r.duration(),
        check positive;
        builder thread_keep_alive;

        /// Stack size of pool threads in bytes, at least 16 KiB.
        stack_size: Option<usize> = None;
        type "size", default "the platform's",
        parse |r| r.size().map(Some),
        check |v, _| match *v {
            Some(s) if s < 16 * 1024 => Err(format!("must be at least 16384 bytes, got {s}")),
            _ => Ok(()),
        };
        builder thread_stack_size(usize) => Some;
    }

    /// The async runtime.
    ["async"] r#async: AsyncConfig {
        /// Threads that poll async tasks (in priority order), and as many
        /// worker threads of the tokio runtime beneath them, which drive
        /// their timers and I/O and run what they `tokio::spawn`.
        threads: usize = cores();
        type "integer", default "the number of logical cores",
        parse |r| r.count(),
        check at_least_one;
        builder async_threads;

        /// Async attempts running at once; more wait in priority order.
        max_tasks: usize = 10_000;
        type "integer", default "10000",
        parse |r| r.count(),
        check at_least_one;
        builder max_async_tasks;
    }

    /// The worker processes that run process tasks.
    ["processes"] processes: ProcessesConfig {
        /// Worker processes kept running once process tasks are used.
        core: usize = cores();
        type "integer", default "the number of logical cores",
        parse |r| r.count(),
        check at_least_one;
        builder core_processes;

        /// Upper bound of worker processes; at least `processes.core`.
        max: usize = cores() * 2;
        type "integer", default "twice the number of logical cores",
        parse |r| r.count(),
        check |v, c| max_over(*v, c.processes.core, "processes.core");
        builder max_processes;

        /// The program worker processes run.
        program: Option<PathBuf> = None;
        type "path",
        default "this executable, which must call [`init`](crate::init) first thing in `main`",
        parse |r| r.path().map(Some),
        check ok;
        builder process_program(impl Into<PathBuf>) => |v| Some(Into::into(v));

        /// Arguments for `processes.program` (in the environment: words
        /// separated by whitespace).
        args: Vec<OsString> = Vec::new();
        type "array of strings", default "none",
        parse |r| r.words(),
        check ok;

        /// GPUs to bind worker processes to, one device each, in turn:
        /// the `n`-th worker started runs with `CUDA_VISIBLE_DEVICES` set to
        /// entry `n` modulo their count, so it sees that device alone (as
        /// its device 0) and a fault or a hung kernel kills only that
        /// worker. Ordinals or GPU UUIDs (in the environment: words
        /// separated by whitespace).
        gpu_devices: Vec<OsString> = Vec::new();
        type "array of strings", default "none: workers inherit the environment",
        parse |r| r.words(),
        check ok;

        /// Most sync tasks one worker holds: the one it runs and those sent
        /// ahead (it runs the most urgent first). Fewer are sent when tasks
        /// are long: a worker holds at most about 5 ms of work it has not
        /// started, by the measured mean task time, so that long tasks do
        /// not queue in one worker while another is idle. 1 sends a task
        /// only to an idle worker.
        prefetch: usize = 16;
        type "integer", default "16",
        parse |r| r.count(),
        check at_least_one;
        builder process_prefetch;

        /// Async process tasks one worker runs at once.
        concurrency: usize = 16;
        type "integer", default "16",
        parse |r| r.count(),
        check at_least_one;
        builder process_concurrency;

        /// Recycle a worker after this many tasks.
        max_tasks_per_process: Option<u64> = None;
        type "integer", default "no limit",
        parse |r| r.count().map(|n| Some(n as u64)),
        check some_at_least_one;
        builder max_tasks_per_process(u64) => Some;

        /// Kill a worker whose resident memory passes this many bytes (at
        /// least 1 MiB) while it runs a task; the task resolves
        /// `MemoryLimit`.
        max_memory: Option<u64> = None;
        type "size", default "no limit",
        parse |r| r.bytes().map(Some),
        check |v, _| match *v {
            Some(m) if m < 1 << 20 => {
                Err("must be at least 1 MiB (a process needs more than that to run)".to_owned())
            }
            _ => Ok(()),
        };
        builder max_memory_per_process(u64) => Some;

        /// OS scheduling priority of worker processes.
        priority: ProcessPriority = ProcessPriority::Normal;
        type "`\"idle\"`, `\"below_normal\"`, `\"normal\"`, `\"above_normal\"`, `\"high\"` or `\"realtime\"`",
        default "`\"normal\"`",
        parse |r| r.priority(),
        check ok;
        builder process_priority;

        /// A registered process task (`fn()`) each worker runs when it
        /// starts. To give it arguments, use
        /// [`SystemBuilder::process_initializer_with`](crate::SystemBuilder::process_initializer_with).
        initializer: Option<String> = None;
        type "string", default "none",
        parse |r| r.text().map(Some),
        check ok;

        /// A registered process task (`fn()`) each worker runs before it
        /// exits. Like `processes.initializer`, a name no task has is
        /// refused when the system is built (unless `processes.program`
        /// runs another program).
        finalizer: Option<String> = None;
        type "string", default "none",
        parse |r| r.text().map(Some),
        check ok;

        /// Largest IPC frame, 4096 bytes to 4 GiB - 1; larger arguments
        /// are refused at submit.
        max_frame_bytes: usize = 64 << 20;
        type "size", default "`\"64MiB\"`",
        parse |r| r.size(),
        check |v, _| {
            if *v < 4096 || *v > u32::MAX as usize {
                return Err(format!("must be within 4096..=4294967295, got {v}"));
            }
            Ok(())
        };
        builder max_frame_bytes;

        /// Where worker stdout and stderr go.
        output: WorkerOutput = WorkerOutput::Forward;
        type "`\"forward\"`, `\"inherit\"` or `\"discard\"`", default "`\"forward\"`",
        parse |r| r.output(),
        check ok;
        builder process_output;

        /// How long a new worker may take to say hello.
        start_timeout: Duration = Duration::from_secs(10);
        type "duration", default "`\"10s\"`",
        parse |r| r.duration(),
        check positive;
        builder process_start_timeout;
    }

    /// The balancer, which grows and shrinks the thread pool and the
    /// process pool, and the global task limit.
    ["balance"] balance: BalanceConfig {
        /// When the pools grow.
        expand: ExpandPolicy = ExpandPolicy::AutoExpand;
        type "`\"none\"`, `\"auto\"` or `\"beforehand\"`", default "`\"auto\"`",
        parse |r| r.expand(),
        check ok;
        builder expand_policy;

        /// When the pools shrink. `"timeout"` also turns on the process
        /// pool's own idle retirement: it retires each worker process above
        /// `processes.core` idle for `balance.shrink_timeout`, as the
        /// balancer does threads; under `"none"` and `"auto"` it retires
        /// none by itself.
        shrink: ShrinkPolicy = ShrinkPolicy::AutoShrink;
        type "`\"none\"`, `\"auto\"` or `\"timeout\"`", default "`\"auto\"`",
        parse |r| r.shrink(),
        check ok;
        builder shrink_policy;

        /// Idle time after which `"timeout"` shrinking retires a thread or
        /// a worker process above core.
        shrink_timeout: Duration = Duration::from_secs(30);
        type "duration", default "`\"30s\"`",
        parse |r| r.duration(),
        check positive;
        builder shrink_timeout;

        /// How often the balancer samples the pools (at least 1 ms).
        interval: Duration = Duration::from_millis(20);
        type "duration", default "`\"20ms\"`",
        parse |r| r.duration(),
        check |v, _| {
            if *v < Duration::from_millis(1) {
                return Err(format!("must be at least 1ms, got {v:?}"));
            }
            Ok(())
        };
        builder balance_interval;

        /// The global task limit: tasks accepted and not yet resolved.
        max_pending_tasks: Option<u64> = None;
        type "integer", default "no limit",
        parse |r| r.count().map(|n| Some(n as u64)),
        check some_at_least_one;
        builder max_pending_tasks(u64) => Some;

        /// What a submission does at the limit.
        on_queue_full: QueueFull = QueueFull::Fail;
        type "`\"fail\"` or `\"wait\"`", default "`\"fail\"`",
        parse |r| r.queue_full(),
        check ok;

        /// How long a `"wait"` submission waits for room before it fails.
        queue_full_timeout: Duration = Duration::from_secs(30);
        type "duration", default "`\"30s\"`",
        parse |r| r.duration(),
        check positive;

        /// Fraction of `balance.max_pending_tasks` (0 to 1) at which
        /// `"beforehand"` expansion grows the pools ahead of the backlog.
        expand_threshold: f64 = 0.5;
        type "fraction", default "0.5",
        parse |r| r.fraction(),
        check |v, _| share(*v);
        builder expand_threshold;

        /// No pool grows while the machine's available memory is below
        /// this many bytes (like GNU parallel's `--memfree`).
        min_free_memory: Option<u64> = None;
        type "size", default "no floor",
        parse |r| r.bytes().map(Some),
        check ok;
        builder min_free_memory(u64) => Some;

        /// No pool grows while the machine's CPU load is above this
        /// fraction of all cores (0 to 1; like GNU parallel's `--load`).
        max_cpu_load: Option<f64> = None;
        type "fraction", default "no ceiling",
        parse |r| r.fraction().map(Some),
        check |v, _| v.map_or(Ok(()), share);
        builder max_cpu_load(f64) => Some;
    }

    /// The command executor ([`submit_command`](crate::ConcurrentSystem::submit_command)),
    /// added with these settings on the first command.
    ["command"] command: CommandSettings {
        /// Commands run at once at the start (the balancer may grow and
        /// shrink it within `command.min_slots` and `command.max_slots`).
        slots: usize = cores();
        type "integer", default "logical cores",
        parse |r| r.count(),
        check at_least_one;

        /// The largest size the balancer may give it.
        max_slots: Option<usize> = None;
        type "integer", default "the larger of `command.slots` and 4 × cores",
        parse |r| r.count().map(Some),
        check |v, c| match v {
            Some(n) if *n < c.command.slots => Err(format!(
                "must be at least command.slots ({}), got {n}",
                c.command.slots
            )),
            _ => Ok(()),
        };

        /// The smallest size the balancer may shrink it to.
        min_slots: Option<usize> = None;
        type "integer", default "`command.slots`",
        parse |r| r.count().map(Some),
        check |v, c| match v {
            Some(0) => Err("must be at least 1".to_owned()),
            Some(n) if *n > c.command.slots => Err(format!(
                "must be at most command.slots ({}), got {n}",
                c.command.slots
            )),
            _ => Ok(()),
        };

        /// How long a stopped command has between SIGTERM and SIGKILL.
        grace: Duration = Duration::from_secs(2);
        type "duration", default "`\"2s\"`",
        parse |r| r.duration(),
        check ok;

        /// Output of one stream past this many bytes goes to a spool file.
        spool_threshold: usize = 1 << 20;
        type "size", default "`\"1MiB\"`",
        parse |r| r.size(),
        check ok;

        /// Where spool files go.
        spool_dir: Option<PathBuf> = None;
        type "path", default "the system's temporary directory",
        parse |r| r.path().map(Some),
        check ok;
    }

    /// The GPU executor (feature `cuda`), started with these settings on
    /// the first GPU task.
    ["gpu"] gpu: GpuSettings {
        /// Tasks one device runs at once: its worker threads, each with a
        /// stream of its own.
        streams_per_device: usize = 4;
        type "integer", default "4",
        parse |r| r.count(),
        check at_least_one;
    }

    /// The remote executor (distributed mode, feature `remote`): where
    /// its Redis server is and how tasks travel. With `remote.url` set, a
    /// system built from this configuration attaches the remote executor;
    /// `seedcore worker` reads the same section. The shared secret comes
    /// from `SEEDCORE_REMOTE_SECRET` or the file `remote.secret_file`,
    /// never from a configuration file or a command line.
    ["remote"] remote: RemoteSettings {
        /// The Redis server, `redis://[user:password@]host:port[/db]`.
        url: Option<String> = None;
        type "string", default "none (no remote executor)",
        parse |r| r.text().map(Some),
        check |v, _| match v {
            Some(u) if !u.starts_with("redis://") && !u.starts_with("rediss://") => {
                Err("must start with redis:// or rediss://".to_owned())
            }
            _ => Ok(()),
        };

        /// The shared secret messages are signed with (at least 32 bytes):
        /// from the environment only (`SEEDCORE_REMOTE_SECRET`); a file
        /// that holds it is refused.
        secret: Option<Secret> = None;
        type "string, environment only", default "none",
        parse |r| r.secret(),
        check |v, _| match v {
            Some(s) if s.expose().len() < 32 => Err(format!(
                "must be at least 32 bytes (it has {})",
                s.expose().len()
            )),
            _ => Ok(()),
        };

        /// A file holding the shared secret (one trailing newline ignored).
        secret_file: Option<PathBuf> = None;
        type "path", default "none",
        parse |r| r.path().map(Some),
        check ok;

        /// Key prefix: one deployment (one stream set) per namespace.
        namespace: String = "seedcore".to_owned();
        type "string", default "`\"seedcore\"`",
        parse |r| r.text(),
        check |v, _| {
            if v.is_empty() || v.contains(['{', '}']) {
                return Err("must be non-empty, without braces".to_owned());
            }
            Ok(())
        };

        /// How long an entry stays with a worker that sends no heartbeat
        /// before another worker takes it.
        visibility_timeout: Duration = Duration::from_secs(30);
        type "duration", default "`\"30s\"`",
        parse |r| r.duration(),
        check |v, _| {
            if *v < Duration::from_millis(100) {
                return Err(format!("must be at least 100ms, got {v:?}"));
            }
            Ok(())
        };

        /// How long the client keeps reconnecting to an unreachable server
        /// before waiting and new tasks fail.
        reconnect_window: Duration = Duration::from_secs(30);
        type "duration", default "`\"30s\"`",
        parse |r| r.duration(),
        check positive;

        /// How many times an entry is delivered at most before it goes to
        /// the dead-letter stream.
        max_deliveries: usize = 3;
        type "integer", default "3",
        parse |r| r.count(),
        check at_least_one;

        /// How long results are kept for collection.
        result_ttl: Duration = Duration::from_secs(3600);
        type "duration", default "`\"1h\"`",
        parse |r| r.duration(),
        check |v, _| {
            if *v < Duration::from_secs(1) {
                return Err(format!("must be at least 1s, got {v:?}"));
            }
            Ok(())
        };

        /// How long a message without a timeout stays valid.
        message_ttl: Duration = Duration::from_secs(3600);
        type "duration", default "`\"1h\"`",
        parse |r| r.duration(),
        check |v, _| {
            if *v < Duration::from_secs(1) {
                return Err(format!("must be at least 1s, got {v:?}"));
            }
            Ok(())
        };

        /// The largest encoded arguments accepted.
        max_payload_bytes: usize = 16 << 20;
        type "size", default "`\"16MiB\"`",
        parse |r| r.size(),
        check at_least_one;

        /// A PEM file of CA certificates to trust for `rediss://`, besides
        /// the system's roots.
        tls_ca_file: Option<PathBuf> = None;
        type "path", default "none",
        parse |r| r.path().map(Some),
        check ok;

        /// A PEM file with the client's certificate chain, for a server
        /// that asks for client certificates (with `remote.tls_client_key_file`).
        tls_client_cert_file: Option<PathBuf> = None;
        type "path", default "none",
        parse |r| r.path().map(Some),
        check |v, c| match (v, &c.remote.tls_client_key_file) {
            (Some(_), None) => Err("needs remote.tls_client_key_file too".to_owned()),
            _ => Ok(()),
        };

        /// A PEM file with the private key of `remote.tls_client_cert_file`.
        tls_client_key_file: Option<PathBuf> = None;
        type "path", default "none",
        parse |r| r.path().map(Some),
        check |v, c| match (v, &c.remote.tls_client_cert_file) {
            (Some(_), None) => Err("needs remote.tls_client_cert_file too".to_owned()),
            _ => Ok(()),
        };

        /// How long a worker's graceful stop (SIGTERM) waits for its
        /// running tasks; what it has not started goes back at once.
        grace: Duration = Duration::from_secs(30);
        type "duration", default "`\"30s\"`",
        parse |r| r.duration(),
        check ok;
    }

    /// Completion callbacks.
    ["callbacks"] callbacks: CallbacksConfig {
        /// Where completion callbacks run (a tokio handle is set with the
        /// builder).
        executor: CallbackExecutor = CallbackExecutor::Thread;
        type "`\"thread\"` or `\"queue\"`", default "`\"thread\"`",
        parse |r| r.callback_executor(),
        check ok;
        builder callback_executor;
    }
}

pub(crate) use builder_setters;
