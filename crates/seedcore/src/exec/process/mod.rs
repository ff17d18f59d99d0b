//! Process tasks: plain functions registered under a stable name, run in
//! isolated worker processes started from the same executable.
//!
//! ```no_run
//! seedcore::process_task! {
//!     /// Squares a number, in a worker process.
//!     pub fn square(x: u64) -> u64 { x * x }
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // In a worker process this runs the worker and never returns.
//!     seedcore::init();
//!     let system = seedcore::ConcurrentSystem::new()?;
//!     let f = system.submit_process(seedcore::TaskOptions::new(), square, 7)?;
//!     assert_eq!(f.wait()?, 49);
//!     Ok(())
//! }
//! ```
//!
//! # Layout
//!
//! The parent side: `dispatch.rs` (the pool, its queue, what is sent to
//! which worker), `spawn.rs` (starting workers), `reap.rs` (results,
//! retirement, death and healing), `handle.rs` (the record of one worker
//! and the protocol steps). The worker side is `worker/`; both speak the
//! messages of `proto.rs` and share the status page of `status.rs`.
//! `registry.rs` holds the registered tasks, `body.rs` and `batch.rs` what
//! a submitted task and a batch are.

mod batch;
mod body;
mod dispatch;
mod encode;
mod handle;
mod proto;
mod reap;
mod registry;
mod spawn;
mod status;
mod worker;

pub(crate) use crate::wire::frame::MAX_FDS;
pub use batch::{BatchIntoIter, BatchItemError, BatchResults};
pub(crate) use body::{Decode, ProcessBody};
pub(crate) use dispatch::ProcessPool;
pub(crate) use encode::{decode_result, encode_args, EncodedArgs};
pub(crate) use registry::find;

/// The registered name `name`, with the table's lifetime (remote workers).
#[cfg(feature = "remote")]
pub(crate) fn find_task(name: &str) -> Option<&'static str> {
    find(name).map(|e| e.name)
}
pub use crate::config::{ProcessPriority, WorkerOutput};
pub use crate::error::Raised;
#[doc(hidden)]
pub use registry::{
    assert_process_data, run_async, run_batch, run_raising, run_sync, ProcessData, PROCESS_TASKS,
};
pub use registry::{BatchTask, ProcessTask, TaskEntry};
pub(crate) use spawn::ProcessConfig;
pub(crate) use worker::refuse_if_uninitialized;

use std::sync::atomic::{AtomicBool, Ordering};

/// The environment variable that tells a process started by a pool that it
/// is a worker; its value is the number of its IPC descriptor.
pub(crate) const WORKER_ENV: &str = "SEEDCORE_WORKER_FD";
/// The descriptor of the worker's status page.
pub(crate) const STATUS_ENV: &str = "SEEDCORE_WORKER_STATUS_FD";
/// The worker's index in its pool (for logs).
pub(crate) const INDEX_ENV: &str = "SEEDCORE_WORKER_INDEX";

static IN_WORKER: AtomicBool = AtomicBool::new(false);

/// Turns a process started by a seedcore pool into a worker; returns at
/// once in any other process. Call it first thing in `main` of every
/// program that submits process tasks from its own executable.
///
/// In a worker it serves tasks until its pool stops it, then exits the
/// process: it never returns there.
pub fn init() {
    if let Some(code) = worker::run_if_worker() {
        std::process::exit(code);
    }
}

/// Serves as a worker if this process was started as one by a pool, and
/// returns the worker's exit code when its pool lets it go; `None` at once
/// in any other process. [`init`] is this followed by `exit`; a host that
/// must tidy up before it exits (an interpreter flushing its streams and
/// running its exit handlers) calls this and exits itself.
pub fn run_worker() -> Option<i32> {
    worker::run_if_worker()
}

/// Whether this process is a seedcore worker. Submitting process tasks
/// from a worker is refused ([`SubmitError::InsideWorker`]).
///
/// [`SubmitError::InsideWorker`]: crate::SubmitError::InsideWorker
pub fn is_worker() -> bool {
    IN_WORKER.load(Ordering::Relaxed)
}

pub(crate) fn mark_worker() {
    IN_WORKER.store(true, Ordering::Relaxed);
}

/// Makes a test binary (or any program whose `main` you do not write) able
/// to serve as its own worker: a constructor that runs before `main` calls
/// [`init`]. Put it once at the top level of the test file that submits
/// process tasks.
#[macro_export]
macro_rules! enable_test_workers {
    () => {
        #[$crate::__private::ctor::ctor(unsafe, crate_path = $crate::__private::ctor)]
        fn __seedcore_worker_entry() {
            $crate::init();
        }
    };
}

/// Declares a process task: a plain function, registered under the stable
/// name `module::path::name`, that worker processes can run. The macro
/// defines a constant of the function's name, of type [`ProcessTask`], to
/// pass to [`submit_process`](crate::ConcurrentSystem::submit_process).
///
/// * One argument `x: A` makes the argument type `A`; several make a tuple.
/// * A return type written `Result<T, E>` makes a fallible task: `Err(e)`
///   resolves [`TaskError::Failed`](crate::TaskError::Failed) with
///   `e.to_string()` (which must therefore exist).
/// * `async fn` declares an async task; a worker runs several at once.
/// * A sync task also gets a batch form ([`ProcessTask::batch`]): one call
///   runs it over a `Vec` of arguments, for chunked parallel maps.
///
/// Arguments and results are serde types; large byte buffers should be
/// [`SharedBytes`](crate::SharedBytes), which cross through shared memory.
#[macro_export]
macro_rules! process_task {
    ($(#[$m:meta])* $vis:vis async fn $name:ident ($($arg:ident : $ty:ty),* $(,)?) -> Result<$ok:ty, $err:ty> $body:block) => {
        $crate::__process_task_impl!(@async $(#[$m])* $vis $name ($($arg : $ty),*) -> $ok, fallible Result<$ok, $err>, $body);
    };
    ($(#[$m:meta])* $vis:vis async fn $name:ident ($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $crate::__process_task_impl!(@async $(#[$m])* $vis $name ($($arg : $ty),*) -> $ret, plain $ret, $body);
    };
    ($(#[$m:meta])* $vis:vis fn $name:ident ($($arg:ident : $ty:ty),* $(,)?) -> Result<$ok:ty, $err:ty> $body:block) => {
        $crate::__process_task_impl!(@sync $(#[$m])* $vis $name ($($arg : $ty),*) -> $ok, fallible Result<$ok, $err>, $body);
    };
    ($(#[$m:meta])* $vis:vis fn $name:ident ($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $crate::__process_task_impl!(@sync $(#[$m])* $vis $name ($($arg : $ty),*) -> $ret, plain $ret, $body);
    };
    ($(#[$m:meta])* $vis:vis fn $name:ident ($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $crate::__process_task_impl!(@sync $(#[$m])* $vis $name ($($arg : $ty),*) -> (), plain (), $body);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __process_task_impl {
    (@args $arg:ident : $ty:ty) => { $ty };
    (@args $($arg:ident : $ty:ty),*) => { ($($ty,)*) };
    (@pat $arg:ident) => { $arg };
    (@pat $($arg:ident),*) => { ($($arg,)*) };
    (@wrap plain $v:expr) => { ::std::result::Result::<_, ::std::string::String>::Ok($v) };
    (@wrap fallible $v:expr) => { $v.map_err(|e| ::std::string::ToString::to_string(&e)) };
    (@handle sync $name:ident) => {
        $crate::ProcessTask::__new(
            ::std::concat!(::std::module_path!(), "::", ::std::stringify!($name)),
            ::std::concat!(::std::module_path!(), "::", ::std::stringify!($name), "#batch"),
            __call,
        )
    };
    (@handle async $name:ident) => {
        $crate::ProcessTask::__new_async(
            ::std::concat!(::std::module_path!(), "::", ::std::stringify!($name)),
            |__args| ::std::boxed::Box::pin(__call(__args)),
        )
    };
    (@entry sync $name:ident ($($arg:ident : $ty:ty),*) -> $ok:ty, $mode:ident $ret:ty, $body:block) => {
        #[allow(unused_parens)]
        fn __call(__args: $crate::__process_task_impl!(@args $($arg : $ty),*)) -> ::std::result::Result<$ok, ::std::string::String> {
            let $crate::__process_task_impl!(@pat $($arg),*) = __args;
            let __out: $ret = (move || $body)();
            $crate::__process_task_impl!(@wrap $mode __out)
        }
        #[$crate::__private::linkme::distributed_slice($crate::__private::PROCESS_TASKS)]
        #[linkme(crate = $crate::__private::linkme)]
        static __ENTRY: $crate::process::TaskEntry = $crate::process::TaskEntry::__sync(
            ::std::concat!(::std::module_path!(), "::", ::std::stringify!($name)),
            |args, fds| $crate::__private::run_sync(args, fds, __call),
        );
        #[$crate::__private::linkme::distributed_slice($crate::__private::PROCESS_TASKS)]
        #[linkme(crate = $crate::__private::linkme)]
        static __BATCH: $crate::process::TaskEntry = $crate::process::TaskEntry::__sync(
            ::std::concat!(::std::module_path!(), "::", ::std::stringify!($name), "#batch"),
            |args, fds| $crate::__private::run_batch(args, fds, __call),
        );
    };
    (@entry async $name:ident ($($arg:ident : $ty:ty),*) -> $ok:ty, $mode:ident $ret:ty, $body:block) => {
        #[allow(unused_parens)]
        async fn __call(__args: $crate::__process_task_impl!(@args $($arg : $ty),*)) -> ::std::result::Result<$ok, ::std::string::String> {
            let $crate::__process_task_impl!(@pat $($arg),*) = __args;
            let __out: $ret = async move $body.await;
            $crate::__process_task_impl!(@wrap $mode __out)
        }
        #[$crate::__private::linkme::distributed_slice($crate::__private::PROCESS_TASKS)]
        #[linkme(crate = $crate::__private::linkme)]
        static __ENTRY: $crate::process::TaskEntry = $crate::process::TaskEntry::__async(
            ::std::concat!(::std::module_path!(), "::", ::std::stringify!($name)),
            |args, fds| $crate::__private::run_async(args, fds, __call),
        );
    };
    (@$kind:ident $(#[$m:meta])* $vis:vis $name:ident ($($arg:ident : $ty:ty),*) -> $ok:ty, $mode:ident $ret:ty, $body:block) => {
        $(#[$m])*
        #[allow(non_upper_case_globals)]
        $vis const $name: $crate::ProcessTask<$crate::__process_task_impl!(@args $($arg : $ty),*), $ok> = {
            // One short error per type that cannot cross to a worker.
            $( $crate::__private::assert_process_data::<$ty>(); )*
            $crate::__private::assert_process_data::<$ok>();
            $crate::__process_task_impl!(@entry $kind $name ($($arg : $ty),*) -> $ok, $mode $ret, $body);
            $crate::__process_task_impl!(@handle $kind $name)
        };
    };
}
