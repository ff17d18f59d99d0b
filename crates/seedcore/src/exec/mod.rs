//! The executors, siblings over one task core: each implements
//! [`Executor`] and differs from the others only in
//! where an attempt runs and how it is stopped.
//!
//! | executor | kind | runs an attempt | stops one for real |
//! | --- | --- | --- | --- |
//! | `thread` | [`ExecutorKind::Threads`] | on a pool thread | replaces the stuck thread |
//! | `async_rt` | [`ExecutorKind::Async`] | polled by its driver threads inside a tokio runtime | drops the future |
//! | `service` | [`ExecutorKind::Services`] | on a dedicated thread | sets the token, detaches at shutdown |
//! | `process` | [`ExecutorKind::Processes`] | in a worker process | kills the worker's process group |
//! | `gpu` (feature `cuda`) | [`ExecutorKind::Gpu`] | on a device's worker thread, on a stream of its own | replaces the stuck worker |
//! | `command` | [`ExecutorKind::Command`] | an external command in its own process group | TERM, a grace period, KILL to the group |
//! | `remote` (feature `remote`) | [`ExecutorKind::Remote`] | in a worker process on another machine, through Redis | a cancel mark the worker acts on |
//!
//! Every executor joins the system one way: the system's table, keyed by
//! kind (`sched/registry.rs`). The thread pool, the process pool, the
//! async runtime and the services are entered at build; the GPU, command
//! and remote executors on first use (or when the builder or the
//! configuration asks for them); an application adds its own with
//! [`ConcurrentSystem::add_executor`](crate::ConcurrentSystem::add_executor).
//! Tasks reach every one of them through [`Executor::accept`]; what an
//! executor needs beyond [`Runnable::run`] (the process pool: the task's
//! registered name and encoded arguments; the GPU executor: where it may be
//! placed) travels with the [`Runnable`].

pub(crate) mod async_rt;
pub(crate) mod command;
#[cfg(feature = "cuda")]
pub(crate) mod gpu;
pub(crate) mod process;
#[cfg(feature = "remote")]
pub(crate) mod remote;
pub(crate) mod service;
pub(crate) mod thread;

pub use crate::sched::{Executor, ExecutorStats, PriorityQueue, Runnable, StopReport, WorkerInfo};
pub use crate::task::{ExecutorKind, StopReason};
