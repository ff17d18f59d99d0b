//! The body of a process task: what the process pool sends and how its
//! result comes back into the task core.

use super::dispatch::{ProcessJob, ProcessPool};
use crate::error::TaskError;
use crate::task::{Attempt, Body, Deadline, TaskCell};
use std::any::Any;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

/// Decodes a process task's result bytes.
pub(crate) type Decode<T> = fn(&[u8], Vec<OwnedFd>) -> Result<T, TaskError>;

/// A process task's registered name and its encoded arguments (kept for
/// retries), with the shared buffers they refer to.
pub(crate) struct ProcessBody<T> {
    pub(crate) pool: Arc<ProcessPool>,
    pub(crate) task: &'static str,
    pub(crate) args: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
    pub(crate) is_async: bool,
    /// Arguments over the frame limit are in the last of `fds`, this long.
    pub(crate) boxed: Option<u64>,
    pub(crate) decode: Decode<T>,
}

impl<T: Send + 'static> Body for ProcessBody<T> {
    type Output = T;

    /// Process attempts are begun by the pool when it sends them
    /// ([`ProcessJob::begin_process`]); a task started any other way is
    /// handed back to the pool.
    fn start(cell: &Arc<TaskCell<Self>>, a: Attempt) -> bool {
        cell.clone().revert(a);
        false
    }

    /// The pool's view of the task: its name and encoded arguments.
    fn route(cell: Arc<TaskCell<Self>>, visit: &mut dyn FnMut(&dyn Any)) {
        let job: Arc<dyn ProcessJob> = cell;
        visit(&job);
    }

    fn deadline(cell: &TaskCell<Self>, n: u32, limit: Duration) -> Deadline {
        cell.body().pool.deadline_of(cell.header.id, n, limit)
    }
}

impl<T: Send + 'static> ProcessJob for TaskCell<ProcessBody<T>> {
    fn begin_process(self: Arc<Self>) -> Option<Attempt> {
        self.begin()
    }

    fn task_name(&self) -> &'static str {
        self.body().task
    }

    fn payload(&self) -> (&[u8], &[OwnedFd]) {
        (&self.body().args, &self.body().fds)
    }

    fn boxed(&self) -> Option<u64> {
        self.body().boxed
    }

    fn is_async(&self) -> bool {
        self.body().is_async
    }

    fn finish_process(
        self: Arc<Self>,
        a: Attempt,
        outcome: Result<(Vec<u8>, Vec<OwnedFd>), TaskError>,
    ) {
        let decode = self.body().decode;
        let out = outcome.and_then(|(bytes, fds)| decode(&bytes, fds));
        self.end(a, out);
    }

    fn unstart(self: Arc<Self>, a: Attempt) {
        self.revert(a);
    }
}
