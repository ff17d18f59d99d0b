//! The one task model every executor shares: the task's id and status,
//! its state ([`state`], model-checked), the lifecycle driver
//! ([`cell`]), the completion and the future.
//!
//! Nothing here names an executor or the system: what the core needs of
//! its scheduler it asks through [`cell::Schedule`], and what differs per
//! executor lives in the executor's [`cell::Body`].

pub(crate) mod cell;
pub(crate) mod completion;
mod context;
mod future;
mod many;
mod shared;
pub(crate) mod state;

pub(crate) use crate::kind::TaskId;
pub use crate::kind::{ExecutorKind, StopReason};
pub(crate) use cell::{
    blocking, caught, in_task, set_blocker, Acquire, Attempt, Blocker, Body, Deadline, EnvRef,
    Header, InTask, Job, SchedRef, Schedule, StatClock, TaskCell, TaskEnv, TaskRef,
};
pub use context::{CancellationToken, TaskContext};
pub(crate) use future::{off_runtime, spin_until, wait_blocking};
pub use future::{TaskFuture, TaskHandle};
pub use many::{as_completed, wait, AsCompleted, WaitFor, WaitSet, Waitable};
pub use shared::SharedFuture;

use crate::error::TaskErrorKind;

/// Where a task stands, from [`TaskFuture::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskStatus {
    /// Waiting in a queue for a worker.
    Queued,
    /// Waiting for a named lock or limit.
    WaitingForLock,
    /// An attempt is running.
    Running,
    /// An attempt failed and the next one waits for its back-off.
    RetryPending,
    /// Resolved with a value.
    Succeeded,
    /// Resolved with an error of this kind.
    Failed(TaskErrorKind),
}

impl TaskStatus {
    /// Whether the task is resolved.
    pub fn is_done(self) -> bool {
        matches!(self, TaskStatus::Succeeded | TaskStatus::Failed(_))
    }
}
