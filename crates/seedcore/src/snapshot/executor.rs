//! An executor's row in the stats, and its workers as the monitor lists
//! them.

use crate::kind::{ExecutorKind, TaskId};
use crate::options::LEVELS;

/// One executor's row in [`Stats`](crate::Stats) and what the balancer
/// reads of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ExecutorStats {
    /// Which executor (serialized as `executor`, its name).
    #[serde(rename = "executor")]
    pub kind: ExecutorKind,
    /// Tasks waiting for a worker of this executor.
    pub queued: usize,
    /// Of those, per priority level (index = level), where the executor
    /// keeps a priority queue.
    pub queue_depth: [usize; LEVELS],
    /// Attempts running on this executor now (from the scheduler's
    /// counters).
    pub running: usize,
    /// Workers alive (threads, processes), replacements of stuck ones
    /// included.
    pub workers: usize,
    /// Workers running or holding tasks.
    pub busy: usize,
    /// Workers still running an attempt past its deadline (replaced).
    pub stuck: usize,
    /// Workers the executor keeps now.
    pub target: usize,
    /// The smallest size.
    pub core: usize,
    /// The largest size.
    pub max: usize,
    /// Process ids of its worker processes, for executors that have them.
    pub pids: Vec<u32>,
    /// Named figures of the executor's own, as `(name, value)`: the GPU
    /// executor's per-device tasks, busy time and memory, the remote
    /// executor's `reclaimed`, `duplicates`, `refused`; empty for most.
    pub gauges: Vec<(String, u64)>,
}

impl ExecutorStats {
    /// An empty row for `kind`.
    pub fn new(kind: ExecutorKind) -> Self {
        ExecutorStats {
            kind,
            queued: 0,
            queue_depth: [0; LEVELS],
            running: 0,
            workers: 0,
            busy: 0,
            stuck: 0,
            target: 0,
            core: 0,
            max: 0,
            pids: Vec::new(),
            gauges: Vec::new(),
        }
    }

    /// Whether the balancer may resize it.
    pub fn resizable(&self) -> bool {
        self.core < self.max
    }
}

/// One worker of an executor, as
/// [`Executor::workers`](crate::exec::Executor::workers) lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The OS thread id (thread workers) or process id (worker processes);
    /// 0 where the OS gives none.
    pub id: u32,
    /// Whether `id` is a process id.
    pub is_process: bool,
    /// The worker's name.
    pub name: String,
    /// Tasks it has finished.
    pub tasks_done: u64,
    /// The task it runs now.
    pub current_task: Option<TaskId>,
    /// The machine it runs on, for a worker on another machine (a remote
    /// worker: `id` is its process id there); `None` for local workers.
    pub host: Option<String>,
}

impl WorkerInfo {
    /// A thread worker with OS thread id `tid`.
    pub fn thread(tid: u32, name: impl Into<String>) -> Self {
        WorkerInfo {
            id: tid,
            is_process: false,
            name: name.into(),
            tasks_done: 0,
            current_task: None,
            host: None,
        }
    }

    /// A worker process with process id `pid`.
    pub fn process(pid: u32, name: impl Into<String>) -> Self {
        WorkerInfo {
            is_process: true,
            ..WorkerInfo::thread(pid, name)
        }
    }

    /// A worker process `pid` on the machine `host` (not this one).
    pub fn remote(pid: u32, name: impl Into<String>, host: impl Into<String>) -> Self {
        WorkerInfo {
            host: Some(host.into()),
            ..WorkerInfo::process(pid, name)
        }
    }
}
