//! The names every layer shares: a task's id, which executor runs it, and
//! why an executor is asked to stop one. A leaf: it imports nothing of the
//! crate.

use std::fmt;

/// The identifier of a task, unique within its system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct TaskId(pub(crate) u64);

impl TaskId {
    /// The number behind the id.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// An executor of a system. Stats, the monitor, the balancer and the
/// metrics list executors by kind, so a new executor adds rows, not fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ExecutorKind {
    /// The thread pool.
    Threads,
    /// The async runtime.
    Async,
    /// Service threads (one dedicated thread per service).
    Services,
    /// The pool of worker processes.
    Processes,
    /// The GPU executor (feature `cuda`): worker threads per CUDA device.
    Gpu,
    /// The command executor: external commands, each in its own process
    /// group.
    Command,
    /// The remote executor (feature `remote`): worker processes on other
    /// machines, reached through Redis.
    Remote,
    /// An executor added with
    /// [`ConcurrentSystem::add_executor`](crate::ConcurrentSystem::add_executor),
    /// under its own name (which may not be a built-in executor's).
    Custom(&'static str),
}

impl ExecutorKind {
    /// The name used in metrics, logs and configuration (`threads`,
    /// `async`, `services`, `processes`, `gpu`, `command`, `remote`, or a
    /// custom executor's own).
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Threads => "threads",
            ExecutorKind::Async => "async",
            ExecutorKind::Services => "services",
            ExecutorKind::Processes => "processes",
            ExecutorKind::Gpu => "gpu",
            ExecutorKind::Command => "command",
            ExecutorKind::Remote => "remote",
            ExecutorKind::Custom(name) => name,
        }
    }

    /// Every built-in kind, in the order of the system's table.
    pub const BUILT_IN: [ExecutorKind; 7] = [
        ExecutorKind::Threads,
        ExecutorKind::Processes,
        ExecutorKind::Async,
        ExecutorKind::Services,
        ExecutorKind::Gpu,
        ExecutorKind::Command,
        ExecutorKind::Remote,
    ];

    /// The kind named `name` (as [`name`](Self::name) gives it), for the
    /// built-in kinds; `None` for any other name.
    pub fn built_in(name: &str) -> Option<ExecutorKind> {
        Self::BUILT_IN.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the scheduler asks an executor to stop a running attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// The attempt passed its timeout; the task is already resolved or
    /// retried as `TimedOut`.
    Timeout,
    /// The task was cancelled (by its future or by a shutdown).
    Cancel,
}

impl serde::Serialize for ExecutorKind {
    /// As its [`name`](Self::name).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}
