//! seedcore runs work on a thread pool, as async tasks and on service
//! threads, every task with a priority, a timeout, retries, named locks and
//! a [`TaskFuture`] to block on, `.await`, or hand to a callback.
//!
//! ```
//! use seedcore::{ConcurrentSystem, Priority, RetryPolicy, TaskError, TaskOptions};
//! use std::time::Duration;
//!
//! let system = ConcurrentSystem::builder().core_threads(2).build()?;
//!
//! // A thread task with a priority and a timeout.
//! let urgent = system.submit_thread(
//!     TaskOptions::new().priority(Priority::HIGH).timeout(Duration::from_secs(5)),
//!     |_ctx| (1..=10u64).product::<u64>(),
//! )?;
//!
//! // A task that fails on its first attempt and succeeds on the retry.
//! let flaky = system.submit_thread_fallible(
//!     TaskOptions::new().retry(RetryPolicy::retries(2)),
//!     |ctx| if ctx.attempt() < 2 { Err("not yet") } else { Ok(ctx.attempt()) },
//! )?;
//!
//! // A panic is caught and reported; the pool goes on.
//! let broken = system.submit_thread(TaskOptions::new(), |_| -> u8 { panic!("bad input") })?;
//!
//! // An async task, awaited from a thread that is not in any runtime.
//! let fetched = system.submit_async(TaskOptions::new(), |_ctx| async { "page".len() })?;
//!
//! assert_eq!(urgent.wait()?, 3_628_800);
//! assert_eq!(flaky.wait()?, 2);
//! assert!(matches!(broken.wait(), Err(TaskError::Panicked(m)) if m == "bad input"));
//! assert_eq!(futures_executor_block_on(fetched)?, 4);
//!
//! let stats = system.stats();
//! assert_eq!((stats.completed, stats.panicked, stats.retried), (3, 1, 1));
//! # fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The semantics every executor shares:
//!
//! * Submitting returns a [`TaskFuture`] at once, or a [`SubmitError`] at
//!   once; every accepted task resolves exactly once, to its value or a
//!   [`TaskError`].
//! * [`Priority`]: 0 (most urgent) to 10; FIFO within a level.
//! * Timeouts are measured from the start of each attempt. A thread task
//!   past its deadline resolves [`TaskError::TimedOut`] at the deadline,
//!   its [`TaskContext::is_cancelled`] turns true, and if it keeps running,
//!   its thread is replaced so the pool keeps its capacity. An async task
//!   is dropped at its deadline.
//! * Locks and limits are held by the scheduler, never by a worker.
//! * Callbacks run on the [`CallbackExecutor`] chosen at build time.
//!
//! The everyday names are at the root; the rest is grouped:
//!
//! | module | what |
//! | --- | --- |
//! | [`exec`] | the [`Executor`](exec::Executor) trait every executor implements, and what it is handed and reports |
//! | [`process`] | process tasks: the batch form, the worker entry |
//! | [`parallel`] | maps, pipelines and their iterators and streams |
//! | [`channel`] | bounded channels |
//! | [`balance`] | the balancer's decision over readings keyed by executor |
//! | [`observe`] | stats, the monitor, metrics |
//! | [`config`] | the configuration, one section per executor |

pub mod balance;
pub mod config;
mod error;
pub mod exec;
pub mod observe;
mod options;
pub mod parallel;
mod sched;
mod sync;
mod system;
mod task;
mod wire;

// The everyday names, at the root.
pub use balance::{ExpandPolicy, QueueFull, ShrinkPolicy};
pub use config::{Config, ShutdownMode};
pub use error::{
    signal_name, BoxError, ConfigError, SubmitError, TaskError, TaskErrorKind, TaskPanic,
};
pub use exec::process::{init, is_worker, BatchTask, ProcessPriority, ProcessTask, WorkerOutput};
pub use observe::Stats;
pub use options::{Backoff, Priority, RetryOn, RetryPolicy, TaskOptions};
pub use parallel::{ChunkSize, Pipeline, Stage};
pub use sched::callback::{CallbackExecutor, CallbackQueue};
pub use sched::ShutdownHandle;
pub use system::{ConcurrentSystem, ExecutorHandle, ShutdownReport, SystemBuilder};
pub use task::{as_completed, wait, AsCompleted, WaitFor, WaitSet};
pub use task::{
    CancellationToken, ExecutorKind, TaskContext, TaskFuture, TaskHandle, TaskId, TaskStatus,
};
pub use wire::shm::SharedBytes;

/// Bounded channels for feeding and draining tasks: blocking, timed and
/// async sends and receives, closed when every sender (or receiver) is
/// gone. [`ConcurrentSystem::produce`] and pipelines are built on them.
pub mod channel {
    pub use crate::parallel::{
        bounded, Receiver, RecvError, RecvTimeoutError, SendError, SendTimeoutError, Sender,
        TryRecvError, TrySendError,
    };
}

/// Process tasks: registration ([`process_task!`](crate::process_task)),
/// the worker entry ([`init`]), and the batch form used by process maps.
pub mod process {
    #[doc(hidden)]
    pub use crate::exec::process::TaskEntry;
    pub use crate::exec::process::{
        init, is_worker, BatchIntoIter, BatchItemError, BatchResults, BatchTask, ProcessPriority,
        ProcessTask, WorkerOutput,
    };
}

/// What the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::exec::process::{run_async, run_batch, run_sync, PROCESS_TASKS};
    pub use ctor;
    pub use linkme;
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
