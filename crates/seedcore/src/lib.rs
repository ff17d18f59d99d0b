//! seedcore is a concurrent task system: one [`ConcurrentSystem`] runs work
//! on a thread pool, as async tasks, on service threads and in isolated
//! worker processes, every task with a [`Priority`], a timeout that really
//! stops it, retries, named locks and limits, callbacks delivered where you
//! want them, and a [`TaskFuture`] to block on, `.await`, or hand to a
//! callback. The pools grow and shrink with the load.
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
//! // An async task; its future can be waited on from any thread, or awaited.
//! let fetched = system.submit_async(TaskOptions::new(), |_ctx| async { "page".len() })?;
//!
//! assert_eq!(urgent.wait()?, 3_628_800);
//! assert_eq!(flaky.wait()?, 2);
//! assert!(matches!(broken.wait(), Err(TaskError::Panicked(m)) if m == "bad input"));
//! assert_eq!(fetched.wait()?, 4);
//!
//! let stats = system.stats();
//! assert_eq!((stats.completed, stats.panicked, stats.retried), (3, 1, 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # A tour
//!
//! **Threads.** [`submit_thread`](ConcurrentSystem::submit_thread) runs a
//! closure on the pool; its [`TaskContext`] gives the attempt number and a
//! cancellation token. A thread task past its deadline resolves
//! [`TaskError::TimedOut`] at the deadline and, if it keeps running, its
//! thread is replaced so the pool keeps its capacity.
//!
//! **Async.** [`submit_async`](ConcurrentSystem::submit_async) takes a
//! factory that builds a fresh future per attempt; the future runs on
//! seedcore's own runtime and is dropped at its deadline.
//!
//! **Processes.** Code that may crash, hang or leak runs in worker
//! processes of the same executable. Declare a task with
//! [`process_task!`], call [`init`] first thing in `main`, and submit it:
//!
//! ```no_run
//! use seedcore::{ConcurrentSystem, TaskError, TaskOptions};
//! use std::time::Duration;
//!
//! seedcore::process_task! {
//!     /// Runs in a worker process: a crash or a hang costs only that worker.
//!     pub fn parse(text: String) -> Result<u64, std::num::ParseIntError> {
//!         text.trim().parse()
//!     }
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // In a worker process this serves tasks and never returns.
//!     seedcore::init();
//!     let system = ConcurrentSystem::builder().core_processes(2).build()?;
//!     let opts = TaskOptions::new().timeout(Duration::from_secs(2)); // kills the worker
//!     assert_eq!(system.submit_process(opts, parse, " 42 ".into())?.wait()?, 42);
//!     let bad = system.submit_process(TaskOptions::new(), parse, "x".into())?;
//!     assert!(matches!(bad.wait(), Err(TaskError::Failed(_))));
//!     // The same function runs in this process too (tests, fallbacks).
//!     assert_eq!(parse.call("7".into())?, 7);
//!     Ok(())
//! }
//! ```
//!
//! Arguments and results are serde types (serde is re-exported as
//! [`serde`](mod@serde)); large byte buffers cross as [`SharedBytes`], in
//! shared memory, and any argument or result over the frame limit crosses
//! that way on its own.
//!
//! **Maps and pipelines.** [`map`](ConcurrentSystem::map),
//! [`try_map`](ConcurrentSystem::try_map) and
//! [`map_process`](ConcurrentSystem::map_process) return a
//! [`MapBuilder`](parallel::MapBuilder): chunks, a bounded window, ordered or
//! unordered results, progress. [`pipeline`](ConcurrentSystem::pipeline)
//! chains thread and process stages over bounded channels.
//! [`scope`](ConcurrentSystem::scope) lets tasks and maps borrow from the
//! caller's stack:
//!
//! ```
//! let system = seedcore::ConcurrentSystem::builder().core_threads(2).build()?;
//! let words = vec!["alpha", "beta", "gamma"];
//! let lengths = system.scope(|s| s.map(&words, |w| w.len()))?;
//! assert_eq!(lengths, vec![5, 4, 5]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`join`](ConcurrentSystem::join) runs two closures at once, the second
//! on the pool unless the caller gets to it first, for divide and conquer
//! as with `rayon::join`.
//!
//! **Channels.** [`channel::bounded`] gives blocking, timed and async sends
//! and receives; [`produce`](ConcurrentSystem::produce) feeds tasks from
//! one.
//!
//! **Monitoring.** [`stats`](ConcurrentSystem::stats) counts outcomes per
//! kind with queue-wait and run-time percentiles;
//! [`monitor`](ConcurrentSystem::monitor) reads the machine and every
//! worker; with the `http` feature, `serve_metrics` serves both (Prometheus
//! text and JSON), which `seedcore top` shows live.
//!
//! **Configuration.** [`SystemBuilder`] methods, or a [`Config`] read from
//! TOML and `SEEDCORE_*` environment variables, one section per executor
//! (see [`config`] for every key); an invalid value is a [`ConfigError`]
//! that names the key.
//!
//! # Semantics every executor shares
//!
//! * Submitting returns a [`TaskFuture`] at once, or a [`SubmitError`] at
//!   once; every accepted task resolves exactly once, to its value or a
//!   [`TaskError`].
//! * [`Priority`]: 0 (most urgent) to 10; FIFO within a level.
//! * Timeouts are measured from the start of each attempt.
//! * Locks and limits are held by the scheduler, never by a worker.
//! * Callbacks run on the [`CallbackExecutor`] chosen at build time.
//!
//! # Modules
//!
//! The everyday names are at the root; the rest is grouped:
//!
//! | module | what |
//! | --- | --- |
//! | [`exec`] | the [`Executor`](exec::Executor) trait every executor implements, and what it is handed and reports |
//! | [`process`] | process tasks: the batch form, the worker entry |
//! | [`command`] | external commands as tasks, each in its own process group |
//! | [`parallel`] | maps, scopes, pipelines and their iterators and streams |
//! | [`channel`] | bounded channels |
//! | [`balance`] | the balancer's decision over readings keyed by executor |
//! | [`observe`] | stats, the monitor, metrics |
//! | [`config`] | the configuration, one section per executor |
//!
//! # Cargo features
//!
//! | feature | default | what |
//! | --- | --- | --- |
//! | `http` | no | `ConcurrentSystem::serve_metrics`: the metrics endpoint |
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod balance;
pub mod config;
mod error;
pub mod exec;
mod kind;
pub mod observe;
mod options;
pub mod parallel;
mod sched;
#[cfg(feature = "remote")]
mod serve;
mod snapshot;
mod sync;
mod system;
mod task;
mod wire;

// The everyday names, at the root.
pub use config::Config;
pub use config::{ExpandPolicy, QueueFull, ShrinkPolicy};
pub use config::{ProcessPriority, WorkerOutput};
pub use error::{
    signal_name, BoxError, ConfigError, SubmitError, TaskError, TaskErrorKind, TaskPanic,
};
pub use exec::process::{init, is_worker, BatchTask, ProcessTask};
pub use kind::{ExecutorKind, TaskId};
pub use options::{Backoff, Priority, RetryOn, RetryPolicy, TaskOptions};
pub use parallel::{ChunkSize, Pipeline, Stage};
pub use sched::callback::{CallbackExecutor, CallbackQueue};
pub use sched::ShutdownHandle;
pub use sched::ShutdownMode;
pub use snapshot::Stats;
pub use system::{
    ConcurrentSystem, ExecutorHandle, ShutdownReport, SystemBuilder, MAX_INITIALIZER_ARGS_BYTES,
};
pub use task::{as_completed, wait, AsCompleted, WaitFor, WaitSet, Waitable};
pub use task::{CancellationToken, SharedFuture, TaskContext, TaskFuture, TaskHandle, TaskStatus};
pub use wire::shm::SharedBytes;

/// The serde that process tasks' arguments and results go through, for
/// programs that do not depend on serde themselves:
/// `#[derive(seedcore::serde::Serialize, seedcore::serde::Deserialize)]`
/// with `#[serde(crate = "seedcore::serde")]`.
pub use serde;

/// Bounded channels for feeding and draining tasks: blocking, timed and
/// async sends and receives, closed when every sender (or receiver) is
/// gone. [`ConcurrentSystem::produce`] and pipelines are built on them.
pub mod channel {
    pub use crate::parallel::{
        bounded, Receiver, RecvError, RecvTimeoutError, SendError, SendTimeoutError, Sender,
        TryRecvError, TrySendError,
    };
}

/// External commands as tasks ([`ConcurrentSystem::submit_command`]): each
/// runs in its own process group with the task's priority, timeout (the
/// whole group is killed: SIGTERM, a grace period, SIGKILL) and retries.
/// A non-zero exit resolves [`TaskError::Failed`] holding a
/// [`CommandFailed`](command::CommandFailed) with the whole output (see
/// [`failed_output`](command::failed_output)), so `RetryOn::ERROR` retries it.
pub mod command {
    pub use crate::exec::command::{
        failed_output, Captured, CommandExecutor, CommandFailed, CommandOutput, CommandSpec,
        Program, SpawnFailed, Stdin, KIND,
    };
}

/// Process tasks: registration ([`process_task!`](crate::process_task)),
/// the worker entry ([`init`]), and the batch form used by process maps.
pub mod process {
    #[doc(hidden)]
    pub use crate::exec::process::TaskEntry;
    pub use crate::exec::process::{
        init, is_worker, run_worker, BatchIntoIter, BatchItemError, BatchResults, BatchTask,
        ProcessPriority, ProcessTask, Raised, WorkerOutput,
    };
}

/// GPU tasks (feature `cuda`): device discovery, the options and context of
/// [`ConcurrentSystem::submit_gpu`], and the cudarc crate it is built on.
/// The CUDA driver, NVRTC and cuBLAS are loaded at run time. Without the
/// driver [`gpu_devices`](gpu::gpu_devices) is empty and `submit_gpu` fails
/// with [`SubmitError::NoGpu`] (present in every build); without NVRTC or
/// cuBLAS tasks still run, and only compiling kernels or `sgemm` fails, with
/// [`GpuError::Missing`](gpu::GpuError::Missing).
/// [`why_no_gpu`](gpu::why_no_gpu) names the library that is missing.
#[cfg(feature = "cuda")]
pub mod gpu {
    pub use crate::exec::gpu::{
        gpu_devices, why_no_gpu, DeviceChoice, GpuConfig, GpuContext, GpuDevice, GpuError,
        GpuOptions,
    };
    pub use cudarc;
}

/// Distributed mode (feature `remote`): the same process tasks on worker
/// machines fed through Redis Streams, at least once, signed. The client
/// side is [`SystemBuilder::remote`] and [`ConcurrentSystem::submit_remote`];
/// the worker side is [`serve`](remote::serve); tasks by id, from any
/// process, go through [`RemoteClient`](remote::RemoteClient). See
/// `docs/remote.md`.
#[cfg(feature = "remote")]
pub mod remote {
    pub use crate::exec::remote::{
        RemoteClient, RemoteConfig, RemoteError, RemoteId, MIN_SECRET_BYTES,
    };
    pub use crate::serve::{
        dead_letters, requeue_dead_letter, serve, DeadLetter, ServeOptions, WorkerCounts,
        WorkerHandle,
    };
}

/// What the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::exec::process::{
        assert_process_data, run_async, run_batch, run_raising, run_sync, ProcessData,
        PROCESS_TASKS,
    };
    pub use ctor;
    pub use linkme;
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
