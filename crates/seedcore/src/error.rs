//! The errors of submitting, running and configuring tasks.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// A boxed error returned by a task's own code.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a task did not produce a value. Every accepted task resolves to
/// either its value or exactly one of these.
#[derive(Debug)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked; the panic was caught and the worker survived.
    /// The payload is the panic's message, with its location and (for
    /// process tasks, when `RUST_BACKTRACE` is set) the worker's backtrace.
    Panicked(TaskPanic),
    /// The task returned its own error.
    Failed(BoxError),
    /// The attempt ran longer than its timeout (measured from the start of
    /// the attempt).
    TimedOut(Duration),
    /// The task was cancelled before it produced a value, through
    /// [`TaskFuture::cancel`](crate::TaskFuture::cancel) or an immediate
    /// shutdown.
    Cancelled,
    /// The task waited longer than its lock timeout for a named lock or
    /// concurrency limit.
    LockTimeout {
        /// The lock or limit it was waiting for.
        lock: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The system shut down before the task could run, or while it still
    /// ran when a shutdown's time ran out (its thread was detached; what
    /// its code returns later is dropped).
    SystemShutdown,
    /// The worker process running the task died (crash, abort, signal, OOM
    /// kill), or worker processes could not be started.
    WorkerDied {
        /// The worker's exit code, if it exited.
        exit_code: Option<i32>,
        /// The signal that ended it, if one did (see [`signal_name`]; the
        /// message names it, `SIGSEGV` rather than 11).
        signal: Option<i32>,
        /// The worker's process id, where one was started.
        pid: Option<u32>,
        /// The task it was running, where it was running one.
        task: Option<crate::kind::TaskId>,
        /// What happened, for people.
        detail: String,
    },
    /// The process pool cannot run tasks: its workers' initializer failed,
    /// the program does not call [`seedcore::init()`](crate::init), or
    /// worker processes cannot be started (the message says which, with
    /// the initializer's error or the OS error).
    PoolBroken(String),
    /// The worker process grew past the pool's memory limit while running
    /// the task and was killed.
    MemoryLimit {
        /// The limit, in bytes.
        limit: u64,
        /// The worker's resident memory when it was seen over the limit.
        rss: u64,
    },
    /// GPU memory (feature `cuda`): the task's memory request fits no
    /// device it may run on (at once, or when its timeout passed while it
    /// waited), or the device ran out of memory during the task (`device`
    /// is then set; retried like an error, [`RetryOn::ERROR`](crate::RetryOn::ERROR)).
    GpuMemory {
        /// The device, where the task ran on one.
        device: Option<usize>,
        /// The bytes asked for (0 where the driver did not say).
        requested: u64,
        /// The most free on a device it may run on, as last measured.
        available: u64,
    },
}

/// A process task's own error with an opaque payload for the caller: the
/// task's future resolves [`TaskError::Failed`](crate::TaskError::Failed)
/// holding this value (get it back with `downcast_ref::<Raised>()`), so
/// retries treat it as any other error. Language bindings carry an
/// exception this way (a pickled Python exception, say); the message is
/// what logs and [`Display`](fmt::Display) show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raised {
    pub(crate) message: String,
    pub(crate) payload: Vec<u8>,
}

impl Raised {
    /// An error reading `message` and carrying `payload`.
    pub fn new(message: impl Into<String>, payload: Vec<u8>) -> Self {
        Raised {
            message: message.into(),
            payload,
        }
    }

    /// The error, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The payload, as the task encoded it.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Raised {}

/// The kind of a [`TaskError`], without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskErrorKind {
    /// See [`TaskError::Panicked`].
    Panicked,
    /// See [`TaskError::Failed`].
    Failed,
    /// See [`TaskError::TimedOut`].
    TimedOut,
    /// See [`TaskError::Cancelled`].
    Cancelled,
    /// See [`TaskError::LockTimeout`].
    LockTimeout,
    /// See [`TaskError::SystemShutdown`].
    SystemShutdown,
    /// See [`TaskError::WorkerDied`].
    WorkerDied,
    /// See [`TaskError::MemoryLimit`].
    MemoryLimit,
    /// See [`TaskError::PoolBroken`].
    PoolBroken,
    /// See [`TaskError::GpuMemory`].
    GpuMemory,
}

impl TaskErrorKind {
    /// A small number per kind, for the task's packed state word. The
    /// `match` is exhaustive, so a new kind cannot be left without one.
    pub(crate) const fn code(self) -> u8 {
        match self {
            TaskErrorKind::Panicked => 0,
            TaskErrorKind::Failed => 1,
            TaskErrorKind::TimedOut => 2,
            TaskErrorKind::Cancelled => 3,
            TaskErrorKind::LockTimeout => 4,
            TaskErrorKind::SystemShutdown => 5,
            TaskErrorKind::WorkerDied => 6,
            TaskErrorKind::MemoryLimit => 7,
            TaskErrorKind::PoolBroken => 8,
            TaskErrorKind::GpuMemory => 9,
        }
    }

    /// The kind whose [`code`](Self::code) is `code`.
    pub(crate) const fn from_code(code: u8) -> Option<TaskErrorKind> {
        Some(match code {
            0 => TaskErrorKind::Panicked,
            1 => TaskErrorKind::Failed,
            2 => TaskErrorKind::TimedOut,
            3 => TaskErrorKind::Cancelled,
            4 => TaskErrorKind::LockTimeout,
            5 => TaskErrorKind::SystemShutdown,
            6 => TaskErrorKind::WorkerDied,
            7 => TaskErrorKind::MemoryLimit,
            8 => TaskErrorKind::PoolBroken,
            9 => TaskErrorKind::GpuMemory,
            _ => return None,
        })
    }
}

impl TaskError {
    /// Wraps a task's own error.
    pub fn failed(e: impl Into<BoxError>) -> Self {
        TaskError::Failed(e.into())
    }

    /// The kind of this error.
    pub fn kind(&self) -> TaskErrorKind {
        match self {
            TaskError::Panicked(_) => TaskErrorKind::Panicked,
            TaskError::Failed(_) => TaskErrorKind::Failed,
            TaskError::TimedOut(_) => TaskErrorKind::TimedOut,
            TaskError::Cancelled => TaskErrorKind::Cancelled,
            TaskError::LockTimeout { .. } => TaskErrorKind::LockTimeout,
            TaskError::SystemShutdown => TaskErrorKind::SystemShutdown,
            TaskError::WorkerDied { .. } => TaskErrorKind::WorkerDied,
            TaskError::MemoryLimit { .. } => TaskErrorKind::MemoryLimit,
            TaskError::PoolBroken(_) => TaskErrorKind::PoolBroken,
            TaskError::GpuMemory { .. } => TaskErrorKind::GpuMemory,
        }
    }

    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, TaskError::Panicked(_))
    }

    /// Whether the task returned its own error.
    pub fn is_failed(&self) -> bool {
        matches!(self, TaskError::Failed(_))
    }

    /// Whether the task ran past its timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, TaskError::TimedOut(_))
    }

    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, TaskError::Cancelled)
    }

    /// Whether the task's worker process died.
    pub fn is_worker_died(&self) -> bool {
        matches!(self, TaskError::WorkerDied { .. })
    }

    /// Whether the task's worker went over its memory limit.
    pub fn is_memory_limit(&self) -> bool {
        matches!(self, TaskError::MemoryLimit { .. })
    }

    /// Whether the task gave up waiting for a lock.
    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, TaskError::LockTimeout { .. })
    }

    /// Whether the process pool cannot run tasks at all.
    pub fn is_pool_broken(&self) -> bool {
        matches!(self, TaskError::PoolBroken(_))
    }

    /// The panic message, if the task panicked.
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            TaskError::Panicked(m) => Some(m.message()),
            _ => None,
        }
    }

    /// Where the task panicked (`file:line:column`), where known.
    pub fn panic_location(&self) -> Option<&str> {
        match self {
            TaskError::Panicked(m) => m.location(),
            _ => None,
        }
    }

    /// A copy for another receiver of the same outcome (a task's own
    /// error is copied as its message).
    pub(crate) fn duplicate(&self) -> TaskError {
        match self {
            TaskError::Panicked(m) => TaskError::Panicked(m.clone()),
            TaskError::Failed(b) => match b.downcast_ref::<Raised>() {
                // The payload is the point of a raised error: every reader
                // gets it.
                Some(r) => TaskError::Failed(Box::new(r.clone())),
                None => TaskError::Failed(b.to_string().into()),
            },
            TaskError::TimedOut(d) => TaskError::TimedOut(*d),
            TaskError::Cancelled => TaskError::Cancelled,
            TaskError::LockTimeout { lock, waited } => TaskError::LockTimeout {
                lock: lock.clone(),
                waited: *waited,
            },
            TaskError::SystemShutdown => TaskError::SystemShutdown,
            TaskError::WorkerDied {
                exit_code,
                signal,
                pid,
                task,
                detail,
            } => TaskError::WorkerDied {
                exit_code: *exit_code,
                signal: *signal,
                pid: *pid,
                task: *task,
                detail: detail.clone(),
            },
            TaskError::MemoryLimit { limit, rss } => TaskError::MemoryLimit {
                limit: *limit,
                rss: *rss,
            },
            TaskError::PoolBroken(why) => TaskError::PoolBroken(why.clone()),
            TaskError::GpuMemory {
                device,
                requested,
                available,
            } => TaskError::GpuMemory {
                device: *device,
                requested: *requested,
                available: *available,
            },
        }
    }
}

/// A caught panic: its message, and where known its location and the
/// backtrace of the thread that panicked.
///
/// It reads as its message: it dereferences to `str` and compares equal to
/// strings holding the message.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskPanic {
    message: String,
    location: Option<String>,
    backtrace: Option<String>,
}

impl TaskPanic {
    /// A panic with `message` and nothing more known.
    pub fn new(message: impl Into<String>) -> Self {
        TaskPanic {
            message: message.into(),
            location: None,
            backtrace: None,
        }
    }

    /// Adds where it panicked (`file:line:column`).
    pub fn with_location(mut self, location: Option<String>) -> Self {
        self.location = location;
        self
    }

    /// Adds the backtrace of the thread that panicked.
    pub fn with_backtrace(mut self, backtrace: Option<String>) -> Self {
        self.backtrace = backtrace;
        self
    }

    /// The panic's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where it panicked, as `file:line:column`.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// The backtrace of the panicking thread, captured where
    /// `RUST_BACKTRACE` asked for one.
    pub fn backtrace(&self) -> Option<&str> {
        self.backtrace.as_deref()
    }
}

impl std::ops::Deref for TaskPanic {
    type Target = str;
    fn deref(&self) -> &str {
        &self.message
    }
}

impl From<String> for TaskPanic {
    fn from(message: String) -> Self {
        TaskPanic::new(message)
    }
}

impl From<&str> for TaskPanic {
    fn from(message: &str) -> Self {
        TaskPanic::new(message)
    }
}

impl PartialEq<str> for TaskPanic {
    fn eq(&self, other: &str) -> bool {
        self.message == other
    }
}

impl PartialEq<&str> for TaskPanic {
    fn eq(&self, other: &&str) -> bool {
        self.message == *other
    }
}

impl PartialEq<String> for TaskPanic {
    fn eq(&self, other: &String) -> bool {
        &self.message == other
    }
}

impl fmt::Debug for TaskPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)?;
        if let Some(l) = &self.location {
            write!(f, " at {l}")?;
        }
        Ok(())
    }
}

/// Shows the message and the location; the alternate form (`{:#}`) adds
/// the backtrace.
impl fmt::Display for TaskPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(l) = &self.location {
            write!(f, " (at {l})")?;
        }
        if f.alternate() {
            if let Some(b) = &self.backtrace {
                write!(f, "\nbacktrace:\n{b}")?;
            }
        }
        Ok(())
    }
}

/// The name of signal `sig` (`SIGSEGV`), or its number where it has no
/// common name.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_owned()
}

/// A duration as a person writes it: `300 ms`, `1.5 s`, `2 min 5 s`.
pub(crate) fn human_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        trim_unit(ns as f64 / 1e3, "µs")
    } else if ns < 1_000_000_000 {
        trim_unit(ns as f64 / 1e6, "ms")
    } else if d.as_secs() < 60 {
        trim_unit(d.as_secs_f64(), "s")
    } else {
        let s = d.as_secs();
        match (s / 3600, s / 60 % 60, s % 60) {
            (0, m, 0) => format!("{m} min"),
            (0, m, s) => format!("{m} min {s} s"),
            (h, m, _) => format!("{h} h {m} min"),
        }
    }
}

/// A size in bytes as a person writes it: `512 bytes`, `256 MiB`, `1.5 GiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    trim_unit(v, UNITS[unit])
}

/// `v unit` with at most one decimal, none when it is whole.
fn trim_unit(v: f64, unit: &str) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{r:.0} {unit}")
    } else {
        format!("{r:.1} {unit}")
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Panicked(m) if f.alternate() => write!(f, "task panicked: {m:#}"),
            TaskError::Panicked(m) => write!(f, "task panicked: {m}"),
            TaskError::Failed(e) => write!(f, "task failed: {e}"),
            TaskError::TimedOut(d) => write!(f, "task timed out after {}", human_duration(*d)),
            TaskError::Cancelled => f.write_str("task was cancelled"),
            TaskError::LockTimeout { lock, waited } => write!(
                f,
                "task waited {} for lock `{lock}` and gave up",
                human_duration(*waited)
            ),
            TaskError::SystemShutdown => f.write_str("the system shut down before the task ran"),
            TaskError::WorkerDied {
                exit_code,
                signal,
                task,
                detail,
                ..
            } => {
                write!(f, "{detail}")?;
                if let Some(t) = task {
                    write!(f, " (task {t})")?;
                }
                match (exit_code, signal) {
                    (_, Some(sig)) => write!(f, ": killed by {}", signal_name(*sig)),
                    (Some(code), None) => write!(f, ": exit code {code}"),
                    (None, None) => Ok(()),
                }
            }
            TaskError::MemoryLimit { limit, rss } => write!(
                f,
                "the worker used {}, over its limit of {}, and was killed",
                human_bytes(*rss),
                human_bytes(*limit)
            ),
            TaskError::PoolBroken(why) => write!(f, "the process pool cannot run tasks: {why}"),
            TaskError::GpuMemory {
                device: Some(d),
                requested,
                ..
            } => {
                write!(f, "GPU {d} ran out of memory during the task")?;
                match requested {
                    0 => Ok(()),
                    n => write!(f, " (asked for {})", human_bytes(*n)),
                }
            }
            TaskError::GpuMemory {
                device: None,
                requested,
                available,
            } => write!(
                f,
                "the task asks for {} of GPU memory and no device it may run on has it free ({} at most)",
                human_bytes(*requested),
                human_bytes(*available)
            ),
        }
    }
}

impl StdError for TaskError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            TaskError::Failed(e) => Some(&**e),
            _ => None,
        }
    }
}

/// Why a task was not accepted. Nothing was queued when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The system is shutting down or shut down.
    #[error("the system is closed: it no longer accepts tasks")]
    SystemClosed,
    /// The task's options are inconsistent.
    #[error("invalid task options: {0}")]
    InvalidOptions(String),
    /// No process task of this name is registered (or served by the worker
    /// program).
    #[error("unknown process task `{0}`")]
    UnknownTask(String),
    /// The arguments could not be serialized.
    #[error("the arguments could not be serialized: {0}")]
    Serialize(String),
    /// The encoded arguments are larger than the frame limit.
    #[error("the arguments take {size} bytes, over the {limit} byte frame limit, and shared memory for them was refused")]
    PayloadTooLarge {
        /// Encoded size.
        size: usize,
        /// The limit (`max_frame_bytes`).
        limit: usize,
    },
    /// The arguments hold more shared-memory buffers than one frame
    /// carries (each crosses as a descriptor).
    #[error("the arguments hold {count} shared buffers, over the {limit} one task may carry")]
    TooManySharedBuffers {
        /// Shared buffers in the arguments.
        count: usize,
        /// The most one frame carries.
        limit: usize,
    },
    /// The process pool cannot run tasks (see [`TaskError::PoolBroken`]).
    #[error("the process pool cannot run tasks: {0}")]
    PoolBroken(String),
    /// The executor's backend refused or could not take the task (the
    /// remote executor's Redis server answered an error or could not be
    /// reached); nothing was queued.
    #[error("the task could not be handed over: {0}")]
    Unavailable(String),
    /// Process tasks cannot be submitted from inside a worker process.
    #[error("process tasks cannot be submitted from a worker process")]
    InsideWorker,
    /// No usable GPU: seedcore was built without the `cuda` feature, the
    /// CUDA driver is not installed, or it found no device (the message
    /// says which). Present in every build, so code handling it need not
    /// depend on the feature.
    #[error("no usable GPU: {0}")]
    NoGpu(String),
    /// The global task limit was reached: `limit` tasks are accepted and
    /// not yet resolved (and, with `on_queue_full = "wait"`, none resolved
    /// within `queue_full_timeout`).
    #[error("the queue is full: {limit} tasks are pending, the limit set by max_pending_tasks; submit again once some finish, or raise the limit")]
    QueueFull {
        /// The limit (`max_pending_tasks`).
        limit: u64,
    },
}

/// An invalid configuration value; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration `{field}`: {reason}")]
pub struct ConfigError {
    /// The key that is wrong, as `section.key` (`key` at the top level);
    /// a name that is no key (unknown, or of the old flat layout) as it
    /// was written: the TOML key or the environment variable.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Turns a caught panic payload into its message.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_has_a_code_that_reads_back_as_it() {
        let every = [
            TaskError::Panicked(TaskPanic::new("p")),
            TaskError::failed("f"),
            TaskError::TimedOut(Duration::from_secs(1)),
            TaskError::Cancelled,
            TaskError::LockTimeout {
                lock: "l".into(),
                waited: Duration::from_secs(1),
            },
            TaskError::SystemShutdown,
            TaskError::WorkerDied {
                exit_code: None,
                signal: Some(9),
                pid: None,
                task: None,
                detail: String::new(),
            },
            TaskError::PoolBroken("b".into()),
            TaskError::MemoryLimit { limit: 1, rss: 2 },
            TaskError::GpuMemory {
                device: None,
                requested: 1,
                available: 0,
            },
        ];
        let mut codes: Vec<u8> = every.iter().map(|e| e.kind().code()).collect();
        for e in &every {
            assert_eq!(TaskErrorKind::from_code(e.kind().code()), Some(e.kind()));
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), every.len(), "two kinds share a code");
        // Every code that decodes is the code of what it decodes to.
        for c in 0..=u8::MAX {
            if let Some(k) = TaskErrorKind::from_code(c) {
                assert_eq!(k.code(), c);
                assert!(codes.contains(&c), "{k:?} is missing from the list above");
            }
        }
    }

    #[test]
    fn durations_and_sizes_read_as_people_write_them() {
        assert_eq!(human_duration(Duration::from_millis(300)), "300 ms");
        assert_eq!(human_duration(Duration::from_micros(1500)), "1.5 ms");
        assert_eq!(human_duration(Duration::from_secs(2)), "2 s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2 min 5 s");
        assert_eq!(human_bytes(256 << 20), "256 MiB");
        assert_eq!(human_bytes(1536 << 20), "1.5 GiB");
        assert_eq!(human_bytes(100), "100 bytes");
        assert_eq!(
            TaskError::TimedOut(Duration::from_millis(300)).to_string(),
            "task timed out after 300 ms"
        );
        let e = TaskError::MemoryLimit {
            limit: 256 << 20,
            rss: 300 << 20,
        };
        assert!(e.to_string().contains("over its limit of 256 MiB"), "{e}");
    }

    #[test]
    fn a_dead_worker_names_its_signal_pid_and_task() {
        let e = TaskError::WorkerDied {
            exit_code: None,
            signal: Some(11),
            pid: Some(4242),
            task: Some(crate::TaskId(7)),
            detail: "worker 0 (pid 4242) died".into(),
        };
        let s = e.to_string();
        assert!(
            s.contains("SIGSEGV") && s.contains("4242") && s.contains("#7"),
            "{s}"
        );
    }
}
