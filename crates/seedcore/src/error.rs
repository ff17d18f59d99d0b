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
}

/// An invalid configuration value; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration `{field}`: {reason}")]
pub struct ConfigError {
    /// The field (TOML key) that is wrong.
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
