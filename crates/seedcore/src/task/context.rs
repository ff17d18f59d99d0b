//! What a running task sees of itself: its id, its attempt, and whether it
//! should stop.

use super::{Job, TaskId};
use std::fmt;
use std::sync::Arc;

/// Handed to a task's code for each attempt.
///
/// Thread tasks cannot be stopped from outside; a task that may run long
/// should check [`is_cancelled`](Self::is_cancelled) now and then. It turns
/// true when the task is cancelled, when this attempt passes its timeout,
/// or when the system shuts down immediately.
pub struct TaskContext {
    job: Arc<dyn Job>,
    attempt: u32,
}

impl TaskContext {
    pub(crate) fn new(job: Arc<dyn Job>, attempt: u32) -> Self {
        TaskContext { job, attempt }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.job.header().id
    }

    /// The attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The task's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.job.header().opts().get_name()
    }

    /// Whether this attempt should stop.
    pub fn is_cancelled(&self) -> bool {
        self.job.header().is_cancelled(self.attempt)
    }

    /// A token to hand to code that cannot see this context.
    pub fn cancellation_token(&self) -> CancellationToken {
        CancellationToken {
            job: self.job.clone(),
            attempt: self.attempt,
        }
    }
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("id", &self.id())
            .field("attempt", &self.attempt)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// A cloneable view of one attempt's cancellation flag.
#[derive(Clone)]
pub struct CancellationToken {
    job: Arc<dyn Job>,
    attempt: u32,
}

impl CancellationToken {
    /// Whether the attempt should stop.
    pub fn is_cancelled(&self) -> bool {
        self.job.header().is_cancelled(self.attempt)
    }
}

impl fmt::Debug for CancellationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancellationToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}
