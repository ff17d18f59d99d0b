//! The system's configuration: defaults from the machine, a TOML file,
//! `SEEDCORE_*` environment variables, or the builder. Every invalid value
//! is an error naming its field; nothing falls back to a default silently.

use crate::balance::{ExpandPolicy, QueueFull, ShrinkPolicy};
use crate::error::ConfigError;
use crate::exec::process::{ProcessPriority, WorkerOutput};
use crate::sched::callback::{CallbackExecutor, CallbackQueue};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What dropping the system, or a graceful shutdown that runs out of time,
/// does with the work that is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownMode {
    /// Stop accepting tasks, finish queued and running work, then stop.
    #[default]
    Graceful,
    /// Stop accepting tasks, resolve queued work [`Cancelled`], signal
    /// running work to stop, then stop.
    ///
    /// [`Cancelled`]: crate::TaskError::Cancelled
    Immediate,
}

/// The configuration of a [`ConcurrentSystem`](crate::ConcurrentSystem).
///
/// Keys (the same in TOML, and upper-cased after `SEEDCORE_` in the
/// environment): `core_threads`, `max_threads`, `thread_keep_alive`,
/// `thread_stack_size`, `async_threads`, `max_async_tasks`,
/// `callback_executor` (`"thread"` or `"queue"`), `shutdown_mode`
/// (`"graceful"` or `"immediate"`), `shutdown_timeout`, `name`. Durations
/// are written like `"250ms"`, `"5s"` or `"1m 30s"`.
///
/// ```
/// use seedcore::Config;
///
/// let cfg = Config::from_toml_str("core_threads = 2\nmax_threads = 8\nthread_keep_alive = \"30s\"")?;
/// assert_eq!(cfg.max_threads, 8);
///
/// let err = Config::from_toml_str("core_threads = 4\nmax_threads = 2").unwrap_err();
/// assert_eq!(err.field, "max_threads");
/// # Ok::<(), seedcore::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Pool threads kept running (default: the number of logical cores).
    pub core_threads: usize,
    /// Upper bound of pool threads, replacements of stuck threads included
    /// (default: twice `core_threads`).
    pub max_threads: usize,
    /// How long a thread above `core_threads` stays idle before it exits.
    pub thread_keep_alive: Duration,
    /// Stack size of pool threads in bytes (default: the platform's).
    pub thread_stack_size: Option<usize>,
    /// Worker threads of the async runtime (default: `core_threads`).
    pub async_threads: usize,
    /// Async attempts running at once; more wait in priority order.
    pub max_async_tasks: usize,
    /// Where completion callbacks run.
    pub callback_executor: CallbackExecutor,
    /// What dropping the system does.
    pub shutdown_mode: ShutdownMode,
    /// How long a shutdown waits for work and threads to finish.
    pub shutdown_timeout: Duration,
    /// Prefix of thread names.
    pub name: String,
    /// Worker processes kept running once process tasks are used (default:
    /// the number of logical cores).
    pub core_processes: usize,
    /// Upper bound of worker processes (default: twice `core_processes`).
    pub max_processes: usize,
    /// The program worker processes run (default: this executable, which
    /// must call [`init`](crate::init) first thing in `main`).
    pub worker_program: Option<PathBuf>,
    /// Arguments for `worker_program`.
    pub worker_args: Vec<OsString>,
    /// Most sync tasks one worker holds: the one it runs and those sent
    /// ahead (it runs the most urgent first). Fewer are sent when tasks are
    /// long: a worker holds at most about 5 ms of work it has not started,
    /// by the measured mean task time, so that long tasks do not queue in
    /// one worker while another is idle. 1 sends a task only to an idle
    /// worker.
    pub worker_prefetch: usize,
    /// Async process tasks one worker runs at once.
    pub worker_concurrency: usize,
    /// Recycle a worker after this many tasks.
    pub max_tasks_per_worker: Option<u64>,
    /// Kill a worker whose resident memory passes this many bytes while it
    /// runs a task (the task resolves `MemoryLimit`).
    pub max_memory_per_worker: Option<u64>,
    /// Stop workers above `core_processes` idle this long.
    pub worker_idle_timeout: Option<Duration>,
    /// OS scheduling priority of worker processes.
    pub worker_priority: ProcessPriority,
    /// A registered process task (`fn()`) each worker runs when it starts.
    pub worker_initializer: Option<String>,
    /// A registered process task (`fn()`) each worker runs before it exits.
    pub worker_finalizer: Option<String>,
    /// Largest IPC frame, in bytes; larger arguments are refused at submit.
    pub max_frame_bytes: usize,
    /// Where worker stdout and stderr go.
    pub worker_output: WorkerOutput,
    /// How long a new worker may take to say hello.
    pub worker_start_timeout: Duration,

    // The balancer (balance.rs): keys `expand_policy`, `shrink_policy`,
    // `shrink_timeout`, `balance_interval`, `max_pending_tasks`,
    // `on_queue_full`, `queue_full_timeout`, `expand_threshold`,
    // `min_free_memory`, `max_cpu_load`.
    /// When the pools grow (`"none"`, `"auto"`, `"beforehand"`).
    pub expand_policy: ExpandPolicy,
    /// When the pools shrink (`"none"`, `"auto"`, `"timeout"`).
    pub shrink_policy: ShrinkPolicy,
    /// Idle time after which `"timeout"` shrinking retires a worker.
    pub shrink_timeout: Duration,
    /// How often the balancer samples the pools.
    pub balance_interval: Duration,
    /// The global task limit: tasks accepted and not yet resolved (default:
    /// none).
    pub max_pending_tasks: Option<u64>,
    /// What a submission does at the limit (`"fail"` or `"wait"`).
    pub on_queue_full: QueueFull,
    /// How long a `"wait"` submission waits for room before it fails.
    pub queue_full_timeout: Duration,
    /// Fraction of `max_pending_tasks` (0 to 1) at which `"beforehand"`
    /// expansion grows the pools ahead of the backlog.
    pub expand_threshold: f64,
    /// No pool grows while the machine's available memory is below this
    /// many bytes (like GNU parallel's `--memfree`; default: no floor).
    pub min_free_memory: Option<u64>,
    /// No pool grows while the machine's CPU load is above this fraction
    /// (0 to 1; like GNU parallel's `--load`; default: no ceiling).
    pub max_cpu_load: Option<f64>,
}

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Config {
            core_threads: cores,
            max_threads: cores * 2,
            thread_keep_alive: Duration::from_secs(60),
            thread_stack_size: None,
            async_threads: cores,
            max_async_tasks: 10_000,
            callback_executor: CallbackExecutor::Thread,
            shutdown_mode: ShutdownMode::Graceful,
            shutdown_timeout: Duration::from_secs(30),
            name: "seedcore".to_owned(),
            core_processes: cores,
            max_processes: cores * 2,
            worker_program: None,
            worker_args: Vec::new(),
            worker_prefetch: 16,
            worker_concurrency: 16,
            max_tasks_per_worker: None,
            max_memory_per_worker: None,
            worker_idle_timeout: None,
            worker_priority: ProcessPriority::Normal,
            worker_initializer: None,
            worker_finalizer: None,
            max_frame_bytes: 64 << 20,
            worker_output: WorkerOutput::Forward,
            worker_start_timeout: Duration::from_secs(10),
            expand_policy: ExpandPolicy::AutoExpand,
            shrink_policy: ShrinkPolicy::AutoShrink,
            shrink_timeout: Duration::from_secs(30),
            balance_interval: Duration::from_millis(20),
            max_pending_tasks: None,
            on_queue_full: QueueFull::Fail,
            queue_full_timeout: Duration::from_secs(30),
            expand_threshold: 0.5,
            min_free_memory: None,
            max_cpu_load: None,
        }
    }
}

const KEYS: &[&str] = &[
    "core_threads",
    "max_threads",
    "thread_keep_alive",
    "thread_stack_size",
    "async_threads",
    "max_async_tasks",
    "callback_executor",
    "shutdown_mode",
    "shutdown_timeout",
    "name",
    "core_processes",
    "max_processes",
    "worker_program",
    "worker_prefetch",
    "worker_concurrency",
    "max_tasks_per_worker",
    "max_memory_per_worker",
    "worker_idle_timeout",
    "worker_priority",
    "worker_initializer",
    "worker_finalizer",
    "max_frame_bytes",
    "worker_output",
    "worker_start_timeout",
    "expand_policy",
    "shrink_policy",
    "shrink_timeout",
    "balance_interval",
    "max_pending_tasks",
    "on_queue_full",
    "queue_full_timeout",
    "expand_threshold",
    "min_free_memory",
    "max_cpu_load",
];

/// One raw value, from TOML or from the environment.
enum Raw<'a> {
    Toml(&'a toml::Value),
    Env(&'a str),
}

impl Raw<'_> {
    fn count(&self, key: &str) -> Result<usize, ConfigError> {
        match self {
            Raw::Toml(toml::Value::Integer(i)) => usize::try_from(*i)
                .map_err(|_| ConfigError::new(key, format!("must not be negative, got {i}"))),
            Raw::Env(s) => s
                .trim()
                .parse()
                .map_err(|_| ConfigError::new(key, format!("expected a whole number, got `{s}`"))),
            Raw::Toml(v) => Err(ConfigError::new(
                key,
                format!("expected a whole number, got {v}"),
            )),
        }
    }

    fn text(&self, key: &str) -> Result<String, ConfigError> {
        match self {
            Raw::Toml(toml::Value::String(s)) => Ok(s.clone()),
            Raw::Env(s) => Ok((*s).to_owned()),
            Raw::Toml(v) => Err(ConfigError::new(key, format!("expected a string, got {v}"))),
        }
    }

    /// A byte count: an integer, or a string like "512MiB" / "2 GB".
    fn bytes(&self, key: &str) -> Result<u64, ConfigError> {
        if let Raw::Toml(toml::Value::Integer(_)) = self {
            return self.count(key).map(|n| n as u64);
        }
        let s = self.text(key)?;
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            ConfigError::new(key, format!("expected a size like 512MiB, got `{s}`"))
        })?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => {
                return Err(ConfigError::new(
                    key,
                    format!("unknown size unit `{other}` in `{s}`"),
                ))
            }
        };
        n.checked_mul(mult)
            .ok_or_else(|| ConfigError::new(key, format!("`{s}` is too large")))
    }

    /// A fraction: a number like 0.8, or a string like "0.8" or "80%".
    fn fraction(&self, key: &str) -> Result<f64, ConfigError> {
        match self {
            Raw::Toml(toml::Value::Float(f)) => Ok(*f),
            Raw::Toml(toml::Value::Integer(i)) => Ok(*i as f64),
            _ => {
                let s = self.text(key)?;
                let t = s.trim();
                match t.strip_suffix('%') {
                    Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
                    None => t.parse::<f64>(),
                }
                .map_err(|_| {
                    ConfigError::new(
                        key,
                        format!("expected a fraction like 0.8 or \"80%\", got `{s}`"),
                    )
                })
            }
        }
    }

    fn duration(&self, key: &str) -> Result<Duration, ConfigError> {
        let s = self.text(key)?;
        humantime::parse_duration(s.trim()).map_err(|e| {
            ConfigError::new(
                key,
                format!("expected a duration like \"250ms\" or \"5s\", got `{s}` ({e})"),
            )
        })
    }
}

impl Config {
    /// Parses a TOML document (keys as listed above) over the defaults,
    /// and validates the result.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        cfg.apply_toml(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a TOML file over the defaults, then `SEEDCORE_*` environment
    /// variables over that, and validates the result.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("<file>", format!("cannot read {}: {e}", path.display()))
        })?;
        let mut cfg = Config::default();
        cfg.apply_toml(&text)?;
        cfg.apply_env(std::env::vars())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The defaults with `SEEDCORE_*` environment variables applied,
    /// validated.
    pub fn from_env() -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        cfg.apply_env(std::env::vars())?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::new("<toml>", e.message().to_owned()))?;
        for (k, v) in &table {
            self.set(k, Raw::Toml(v))?;
        }
        Ok(())
    }

    /// Applies the `SEEDCORE_*` pairs among `vars`; an unknown
    /// `SEEDCORE_` name is an error, so that a typo is not ignored.
    pub(crate) fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("SEEDCORE_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if !KEYS.contains(&key.as_str()) {
                // Variables of other parts of seedcore (tests, tools) share
                // the prefix; only keys of this struct are checked.
                continue;
            }
            self.set(&key, Raw::Env(&value))
                .map_err(|e| ConfigError::new(name.clone(), e.reason))?;
        }
        Ok(())
    }

    fn set(&mut self, key: &str, v: Raw<'_>) -> Result<(), ConfigError> {
        match key {
            "core_threads" => self.core_threads = v.count(key)?,
            "max_threads" => self.max_threads = v.count(key)?,
            "thread_keep_alive" => self.thread_keep_alive = v.duration(key)?,
            "thread_stack_size" => self.thread_stack_size = Some(v.count(key)?),
            "async_threads" => self.async_threads = v.count(key)?,
            "max_async_tasks" => self.max_async_tasks = v.count(key)?,
            "callback_executor" => {
                self.callback_executor = match v.text(key)?.as_str() {
                    "thread" => CallbackExecutor::Thread,
                    "queue" => CallbackExecutor::Queue(CallbackQueue::new()),
                    other => {
                        return Err(ConfigError::new(
                            key,
                            format!("unknown executor `{other}` (expected \"thread\" or \"queue\"; a tokio handle is set with the builder)"),
                        ))
                    }
                }
            }
            "shutdown_mode" => {
                self.shutdown_mode = match v.text(key)?.as_str() {
                    "graceful" => ShutdownMode::Graceful,
                    "immediate" => ShutdownMode::Immediate,
                    other => {
                        return Err(ConfigError::new(
                            key,
                            format!("unknown mode `{other}` (expected \"graceful\" or \"immediate\")"),
                        ))
                    }
                }
            }
            "shutdown_timeout" => self.shutdown_timeout = v.duration(key)?,
            "name" => self.name = v.text(key)?,
            "core_processes" => self.core_processes = v.count(key)?,
            "max_processes" => self.max_processes = v.count(key)?,
            "worker_program" => self.worker_program = Some(PathBuf::from(v.text(key)?)),
            "worker_prefetch" => self.worker_prefetch = v.count(key)?,
            "worker_concurrency" => self.worker_concurrency = v.count(key)?,
            "max_tasks_per_worker" => self.max_tasks_per_worker = Some(v.count(key)? as u64),
            "max_memory_per_worker" => self.max_memory_per_worker = Some(v.bytes(key)?),
            "worker_idle_timeout" => self.worker_idle_timeout = Some(v.duration(key)?),
            "worker_priority" => {
                self.worker_priority = match v.text(key)?.as_str() {
                    "idle" => ProcessPriority::Idle,
                    "below_normal" => ProcessPriority::BelowNormal,
                    "normal" => ProcessPriority::Normal,
                    "above_normal" => ProcessPriority::AboveNormal,
                    "high" => ProcessPriority::High,
                    "realtime" => ProcessPriority::Realtime,
                    other => {
                        return Err(ConfigError::new(
                            key,
                            format!("unknown priority `{other}` (expected idle, below_normal, normal, above_normal, high or realtime)"),
                        ))
                    }
                }
            }
            "worker_initializer" => self.worker_initializer = Some(v.text(key)?),
            "worker_finalizer" => self.worker_finalizer = Some(v.text(key)?),
            "max_frame_bytes" => self.max_frame_bytes = v.bytes(key)? as usize,
            "worker_output" => {
                self.worker_output = match v.text(key)?.as_str() {
                    "forward" => WorkerOutput::Forward,
                    "inherit" => WorkerOutput::Inherit,
                    "discard" => WorkerOutput::Discard,
                    other => {
                        return Err(ConfigError::new(
                            key,
                            format!("unknown output `{other}` (expected forward, inherit or discard)"),
                        ))
                    }
                }
            }
            "worker_start_timeout" => self.worker_start_timeout = v.duration(key)?,
            "expand_policy" => {
                self.expand_policy =
                    ExpandPolicy::parse(&v.text(key)?).map_err(|e| ConfigError::new(key, e))?
            }
            "shrink_policy" => {
                self.shrink_policy =
                    ShrinkPolicy::parse(&v.text(key)?).map_err(|e| ConfigError::new(key, e))?
            }
            "shrink_timeout" => self.shrink_timeout = v.duration(key)?,
            "balance_interval" => self.balance_interval = v.duration(key)?,
            "max_pending_tasks" => self.max_pending_tasks = Some(v.count(key)? as u64),
            "on_queue_full" => {
                self.on_queue_full =
                    QueueFull::parse(&v.text(key)?).map_err(|e| ConfigError::new(key, e))?
            }
            "queue_full_timeout" => self.queue_full_timeout = v.duration(key)?,
            "expand_threshold" => self.expand_threshold = v.fraction(key)?,
            "min_free_memory" => self.min_free_memory = Some(v.bytes(key)?),
            "max_cpu_load" => self.max_cpu_load = Some(v.fraction(key)?),
            other => {
                return Err(ConfigError::new(
                    other,
                    format!("unknown key (known keys: {})", KEYS.join(", ")),
                ))
            }
        }
        Ok(())
    }

    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.core_threads == 0 {
            return Err(ConfigError::new("core_threads", "must be at least 1"));
        }
        if self.max_threads < self.core_threads {
            return Err(ConfigError::new(
                "max_threads",
                format!(
                    "must be at least core_threads ({}), got {}",
                    self.core_threads, self.max_threads
                ),
            ));
        }
        if self.thread_keep_alive.is_zero() {
            return Err(ConfigError::new(
                "thread_keep_alive",
                "must be greater than zero",
            ));
        }
        if let Some(s) = self.thread_stack_size {
            if s < 16 * 1024 {
                return Err(ConfigError::new(
                    "thread_stack_size",
                    format!("must be at least 16384 bytes, got {s}"),
                ));
            }
        }
        if self.async_threads == 0 {
            return Err(ConfigError::new("async_threads", "must be at least 1"));
        }
        if self.max_async_tasks == 0 {
            return Err(ConfigError::new("max_async_tasks", "must be at least 1"));
        }
        if self.shutdown_timeout.is_zero() {
            return Err(ConfigError::new(
                "shutdown_timeout",
                "must be greater than zero",
            ));
        }
        if self.name.trim().is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if self.core_processes == 0 {
            return Err(ConfigError::new("core_processes", "must be at least 1"));
        }
        if self.max_processes < self.core_processes {
            return Err(ConfigError::new(
                "max_processes",
                format!(
                    "must be at least core_processes ({}), got {}",
                    self.core_processes, self.max_processes
                ),
            ));
        }
        for (field, v) in [
            ("worker_prefetch", self.worker_prefetch),
            ("worker_concurrency", self.worker_concurrency),
        ] {
            if v == 0 {
                return Err(ConfigError::new(field, "must be at least 1"));
            }
        }
        if self.max_tasks_per_worker == Some(0) {
            return Err(ConfigError::new(
                "max_tasks_per_worker",
                "must be at least 1",
            ));
        }
        if self.max_memory_per_worker.is_some_and(|m| m < 1 << 20) {
            return Err(ConfigError::new(
                "max_memory_per_worker",
                "must be at least 1 MiB (a process needs more than that to run)",
            ));
        }
        if self.worker_idle_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "worker_idle_timeout",
                "must be greater than zero",
            ));
        }
        if self.max_frame_bytes < 4096 || self.max_frame_bytes > u32::MAX as usize {
            return Err(ConfigError::new(
                "max_frame_bytes",
                format!(
                    "must be within 4096..=4294967295, got {}",
                    self.max_frame_bytes
                ),
            ));
        }
        if self.worker_start_timeout.is_zero() {
            return Err(ConfigError::new(
                "worker_start_timeout",
                "must be greater than zero",
            ));
        }
        for (field, d) in [
            ("shrink_timeout", self.shrink_timeout),
            ("queue_full_timeout", self.queue_full_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(field, "must be greater than zero"));
            }
        }
        if self.balance_interval < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "balance_interval",
                format!("must be at least 1ms, got {:?}", self.balance_interval),
            ));
        }
        if self.max_pending_tasks == Some(0) {
            return Err(ConfigError::new("max_pending_tasks", "must be at least 1"));
        }
        if !(self.expand_threshold > 0.0 && self.expand_threshold <= 1.0) {
            return Err(ConfigError::new(
                "expand_threshold",
                format!("must be within (0, 1], got {}", self.expand_threshold),
            ));
        }
        if let Some(l) = self.max_cpu_load {
            if !(l > 0.0 && l <= 1.0) {
                return Err(ConfigError::new(
                    "max_cpu_load",
                    format!("must be within (0, 1] (a fraction of all cores), got {l}"),
                ));
            }
        }
        if self.worker_program.is_none() {
            for (field, hook) in [
                ("worker_initializer", &self.worker_initializer),
                ("worker_finalizer", &self.worker_finalizer),
            ] {
                if let Some(h) = hook {
                    if crate::exec::process::find(h).is_none() {
                        return Err(ConfigError::new(
                            field,
                            format!("`{h}` is not a registered process task"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_override_and_name_the_variable() {
        let mut c = Config::default();
        c.apply_env([
            ("SEEDCORE_CORE_THREADS".to_owned(), "3".to_owned()),
            ("SEEDCORE_MAX_THREADS".to_owned(), "9".to_owned()),
            ("SEEDCORE_SHUTDOWN_TIMEOUT".to_owned(), "2s".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ])
        .unwrap();
        assert_eq!((c.core_threads, c.max_threads), (3, 9));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(2));

        let err = Config::default()
            .apply_env([("SEEDCORE_CORE_THREADS".to_owned(), "many".to_owned())])
            .unwrap_err();
        assert_eq!(err.field, "SEEDCORE_CORE_THREADS");
        assert!(err.reason.contains("whole number"), "{err}");
    }

    #[test]
    fn every_invalid_value_names_its_field() {
        let cases = [
            ("core_threads = 0", "core_threads"),
            ("core_threads = -1", "core_threads"),
            ("core_threads = 4\nmax_threads = 3", "max_threads"),
            ("thread_keep_alive = \"soon\"", "thread_keep_alive"),
            ("thread_keep_alive = 5", "thread_keep_alive"),
            ("thread_keep_alive = \"0s\"", "thread_keep_alive"),
            ("thread_stack_size = 100", "thread_stack_size"),
            ("async_threads = 0", "async_threads"),
            ("max_async_tasks = 0", "max_async_tasks"),
            ("callback_executor = \"gui\"", "callback_executor"),
            ("shutdown_mode = \"later\"", "shutdown_mode"),
            ("shutdown_timeout = \"0ms\"", "shutdown_timeout"),
            ("name = \" \"", "name"),
            ("core_treads = 2", "core_treads"),
            ("core_threads = ", "<toml>"),
        ];
        for (text, field) in cases {
            let err = Config::from_toml_str(text).expect_err(text);
            assert_eq!(err.field, field, "{text}: {err}");
        }
    }

    #[test]
    fn a_full_file_parses() {
        let c = Config::from_toml_str(
            r#"
            core_threads = 2
            max_threads = 6
            thread_keep_alive = "1m 30s"
            thread_stack_size = 1048576
            async_threads = 1
            max_async_tasks = 50
            callback_executor = "queue"
            shutdown_mode = "immediate"
            shutdown_timeout = "250ms"
            name = "batch"
            "#,
        )
        .unwrap();
        assert_eq!(c.thread_keep_alive, Duration::from_secs(90));
        assert_eq!(c.thread_stack_size, Some(1 << 20));
        assert!(matches!(c.callback_executor, CallbackExecutor::Queue(_)));
        assert_eq!(c.shutdown_mode, ShutdownMode::Immediate);
        assert_eq!(c.shutdown_timeout, Duration::from_millis(250));
        assert_eq!(c.name, "batch");
    }
}
