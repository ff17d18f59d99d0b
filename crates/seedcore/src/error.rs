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
    Panicked(String),
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
    /// The system shut down before the task could run.
    SystemShutdown,
    /// The worker process running the task died (crash, abort, signal, OOM
    /// kill), or worker processes could not be started.
    WorkerDied {
        /// The worker's exit code, if it exited.
        exit_code: Option<i32>,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
        /// What happened, for people.
        detail: String,
    },
    /// The worker process grew past the pool's memory limit while running
    /// the task and was killed.
    MemoryLimit {
        /// The limit, in bytes.
        limit: u64,
        /// The worker's resident memory when it was seen over the limit.
        rss: u64,
    },
}

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

    /// The panic message, if the task panicked.
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            TaskError::Panicked(m) => Some(m),
            _ => None,
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Panicked(m) => write!(f, "task panicked: {m}"),
            TaskError::Failed(e) => write!(f, "task failed: {e}"),
            TaskError::TimedOut(d) => write!(f, "task timed out after {d:?}"),
            TaskError::Cancelled => f.write_str("task was cancelled"),
            TaskError::LockTimeout { lock, waited } => {
                write!(f, "task waited {waited:?} for lock `{lock}` and gave up")
            }
            TaskError::SystemShutdown => f.write_str("the system shut down before the task ran"),
            TaskError::WorkerDied {
                exit_code,
                signal,
                detail,
            } => {
                write!(f, "{detail}")?;
                match (exit_code, signal) {
                    (_, Some(sig)) => write!(f, " (killed by signal {sig})"),
                    (Some(code), None) => write!(f, " (exit code {code})"),
                    (None, None) => Ok(()),
                }
            }
            TaskError::MemoryLimit { limit, rss } => write!(
                f,
                "the worker used {rss} bytes, over its limit of {limit}, and was killed"
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
    #[error("the arguments take {size} bytes, over the {limit} byte frame limit (pass large buffers as SharedBytes)")]
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
    /// Process tasks cannot be submitted from inside a worker process.
    #[error("process tasks cannot be submitted from a worker process")]
    InsideWorker,
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
