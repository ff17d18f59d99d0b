//! The table of process tasks, filled at link time (no life-before-main
//! registration, so it is complete in a worker before `init` runs), and
//! the typed handle the parent submits with.

use super::batch::{BatchItemError, BatchResults};
use crate::error::Raised;
use crate::wire::shm;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a worker reports for one task.
#[doc(hidden)]
#[derive(Debug, Serialize, Deserialize)]
pub enum Outcome {
    /// The encoded result.
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The task panicked.
    Panicked {
        /// The panic's message.
        message: String,
        /// Where, as `file:line:column`.
        location: Option<String>,
        /// The worker thread's backtrace, where `RUST_BACKTRACE` asked.
        backtrace: Option<String>,
    },
    /// The task returned this error.
    Failed(String),
    /// The task raised an error that carries a payload for the caller
    /// (see [`Raised`]).
    Raised {
        /// The error, for people.
        message: String,
        /// The opaque payload, as the task encoded it.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// The arguments did not decode as the task's argument type.
    BadArgs(String),
    /// The worker has no task of that name.
    Unknown(String),
    /// Cancelled before it started.
    Cancelled,
    /// The encoded result is over the frame limit: it is in the frame's
    /// last descriptor (a sealed memfd of this many bytes).
    Boxed(u64),
}

type SyncFn = fn(&[u8], Vec<OwnedFd>) -> (Outcome, Vec<OwnedFd>);
type AsyncFn = fn(&[u8], Vec<OwnedFd>) -> BoxFuture<'static, (Outcome, Vec<OwnedFd>)>;

#[derive(Clone, Copy)]
pub(crate) enum EntryKind {
    Sync(SyncFn),
    Async(AsyncFn),
}

/// One registered process task (made by [`process_task!`](crate::process_task)).
pub struct TaskEntry {
    pub(crate) name: &'static str,
    pub(crate) kind: EntryKind,
}

impl TaskEntry {
    #[doc(hidden)]
    pub const fn __sync(name: &'static str, f: SyncFn) -> Self {
        TaskEntry {
            name,
            kind: EntryKind::Sync(f),
        }
    }

    #[doc(hidden)]
    pub const fn __async(name: &'static str, f: AsyncFn) -> Self {
        TaskEntry {
            name,
            kind: EntryKind::Async(f),
        }
    }
}

impl fmt::Debug for TaskEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            EntryKind::Sync(_) => "sync",
            EntryKind::Async(_) => "async",
        };
        write!(f, "TaskEntry({} {kind})", self.name)
    }
}

#[doc(hidden)]
#[linkme::distributed_slice]
pub static PROCESS_TASKS: [TaskEntry];

/// The registered task called `name`.
pub(crate) fn find(name: &str) -> Option<&'static TaskEntry> {
    PROCESS_TASKS.iter().find(|e| e.name == name)
}

/// The names of every registered task, and whether each is async.
pub(crate) fn names() -> Vec<(String, bool)> {
    PROCESS_TASKS
        .iter()
        .map(|e| (e.name.to_owned(), matches!(e.kind, EntryKind::Async(_))))
        .collect()
}

/// A process task as the parent submits it: its registered name and, in
/// the types, its argument and result.
pub struct ProcessTask<A, R> {
    name: &'static str,
    batch: Option<&'static str>,
    local: Local<A, R>,
    _types: PhantomData<fn(A) -> R>,
}

/// The task's function, for calling it in this process.
enum Local<A, R> {
    None,
    Sync(fn(A) -> Result<R, String>),
    Async(fn(A) -> BoxFuture<'static, Result<R, String>>),
}

impl<A, R> Clone for Local<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A, R> Copy for Local<A, R> {}

/// The batch form of a [`ProcessTask`]; see [`ProcessTask::batch`].
pub type BatchTask<A, R> = ProcessTask<Vec<A>, BatchResults<R>>;

impl<A, R> ProcessTask<A, R> {
    #[doc(hidden)]
    pub const fn __new(
        name: &'static str,
        batch: &'static str,
        f: fn(A) -> Result<R, String>,
    ) -> Self {
        ProcessTask {
            name,
            batch: Some(batch),
            local: Local::Sync(f),
            _types: PhantomData,
        }
    }

    #[doc(hidden)]
    pub const fn __new_async(
        name: &'static str,
        f: fn(A) -> BoxFuture<'static, Result<R, String>>,
    ) -> Self {
        ProcessTask {
            name,
            batch: None,
            local: Local::Async(f),
            _types: PhantomData,
        }
    }

    /// Runs the task as a plain function in this process, on the calling
    /// thread: for unit tests, and as a fallback where worker processes
    /// are not wanted. No arguments are encoded and no isolation is given;
    /// a panic is caught and returned as [`TaskError::Panicked`], an error
    /// as [`TaskError::Failed`]. An async task runs to its end on a
    /// runtime of its own (so do not call this from inside an async
    /// runtime's thread). A task known only by name
    /// ([`external`](Self::external)) has no function here: it fails.
    ///
    /// ```
    /// seedcore::process_task! {
    ///     fn square(x: u64) -> u64 { x * x }
    /// }
    /// assert_eq!(square.call(12).unwrap(), 144);
    /// ```
    ///
    /// [`TaskError::Panicked`]: crate::TaskError::Panicked
    /// [`TaskError::Failed`]: crate::TaskError::Failed
    pub fn call(&self, args: A) -> Result<R, crate::TaskError> {
        use crate::TaskError;
        let out = match self.local {
            Local::None => {
                return Err(TaskError::failed(format!(
                    "process task `{}` is served by another program and cannot be called here",
                    self.name
                )))
            }
            Local::Sync(f) => catch_unwind(AssertUnwindSafe(|| f(args))),
            Local::Async(f) => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| TaskError::failed(format!("cannot start a runtime: {e}")))?;
                catch_unwind(AssertUnwindSafe(|| rt.block_on(f(args))))
            }
        };
        match out {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(TaskError::failed(e)),
            Err(p) => Err(TaskError::Panicked(crate::error::panic_message(&*p).into())),
        }
    }

    /// A task served by a separate worker program, known only by name. Its
    /// types are the caller's promise: the worker program checks the name
    /// when the pool starts, and a mismatch of types surfaces as a decode
    /// error of the task.
    pub const fn external(name: &'static str) -> Self {
        ProcessTask {
            name,
            batch: None,
            local: Local::None,
            _types: PhantomData,
        }
    }

    /// The batch form: one call runs the task over every argument of a
    /// `Vec`, in the worker, each item's failure kept apart. `None` for
    /// async and external tasks.
    pub const fn batch(&self) -> Option<BatchTask<A, R>> {
        match self.batch {
            Some(name) => Some(ProcessTask {
                name,
                batch: None,
                local: Local::None,
                _types: PhantomData,
            }),
            None => None,
        }
    }

    /// The registered name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<A, R> Clone for ProcessTask<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A, R> Copy for ProcessTask<A, R> {}

impl<A, R> fmt::Debug for ProcessTask<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProcessTask({})", self.name)
    }
}

thread_local! {
    /// Where the last panic on this thread happened, and its backtrace:
    /// left by the worker's panic hook for the catch that follows.
    static LAST_PANIC: std::cell::RefCell<Option<(Option<String>, Option<String>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Installs the worker's panic hook: it records each panic's location and
/// (where `RUST_BACKTRACE` asks) backtrace for the task's error, then does
/// what the previous hook did (print to the worker's stderr).
pub(crate) fn record_panics() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        let bt = std::backtrace::Backtrace::capture();
        let backtrace =
            (bt.status() == std::backtrace::BacktraceStatus::Captured).then(|| bt.to_string());
        let _ = LAST_PANIC.try_with(|c| *c.borrow_mut() = Some((location, backtrace)));
        prev(info);
    }));
}

/// A caught panic, with what the hook recorded of it.
struct Caught {
    message: String,
    location: Option<String>,
    backtrace: Option<String>,
}

impl Caught {
    fn of(p: &(dyn std::any::Any + Send)) -> Caught {
        let (location, backtrace) = LAST_PANIC
            .try_with(|c| c.borrow_mut().take())
            .ok()
            .flatten()
            .unwrap_or_default();
        Caught {
            message: crate::error::panic_message(p),
            location,
            backtrace,
        }
    }

    fn into_outcome(self) -> Outcome {
        Outcome::Panicked {
            message: self.message,
            location: self.location,
            backtrace: self.backtrace,
        }
    }

    /// How the panic reads inside another outcome's message.
    fn text(&self) -> String {
        panic_text(&self.message, self.location.as_deref())
    }
}

/// `panicked at LOCATION: MESSAGE`, or without the location where unknown.
pub(crate) fn panic_text(message: &str, location: Option<&str>) -> String {
    match location {
        Some(l) => format!("panicked at {l}: {message}"),
        None => format!("panicked: {message}"),
    }
}

fn decode<A: DeserializeOwned>(args: &[u8], fds: Vec<OwnedFd>) -> Result<A, Outcome> {
    // A `Deserialize` impl may panic: that is bad arguments, not a dead
    // worker.
    match catch_unwind(AssertUnwindSafe(|| {
        shm::with_fds(fds, || postcard::from_bytes::<A>(args))
    })) {
        Ok(r) => r.map_err(|e| Outcome::BadArgs(e.to_string())),
        Err(p) => Err(Outcome::BadArgs(Caught::of(&*p).text())),
    }
}

fn encode<R: Serialize>(r: &R) -> (Outcome, Vec<OwnedFd>) {
    let encoded = catch_unwind(AssertUnwindSafe(|| {
        shm::collect_fds(|| crate::wire::codec::to_vec(r, 64))
    }));
    match encoded {
        Ok((Ok(bytes), fds)) => (Outcome::Ok(bytes), fds),
        Ok((Err(e), _)) => (
            Outcome::Failed(format!(
                "the result could not be encoded: {}",
                crate::wire::why::describe(r, &e)
            )),
            Vec::new(),
        ),
        Err(p) => (
            Outcome::Failed(format!(
                "the result could not be encoded: its Serialize impl {}",
                Caught::of(&*p).text()
            )),
            Vec::new(),
        ),
    }
}

fn finish<R: Serialize>(r: std::thread::Result<Result<R, String>>) -> (Outcome, Vec<OwnedFd>) {
    match r {
        Ok(Ok(v)) => encode(&v),
        Ok(Err(e)) => (Outcome::Failed(e), Vec::new()),
        Err(p) => (Caught::of(&*p).into_outcome(), Vec::new()),
    }
}

/// Runs a sync task body in a worker: decode, call (catching panics),
/// encode.
#[doc(hidden)]
pub fn run_sync<A, R>(
    args: &[u8],
    fds: Vec<OwnedFd>,
    f: fn(A) -> Result<R, String>,
) -> (Outcome, Vec<OwnedFd>)
where
    A: DeserializeOwned,
    R: Serialize,
{
    match decode::<A>(args, fds) {
        Ok(a) => finish(catch_unwind(AssertUnwindSafe(|| f(a)))),
        Err(o) => (o, Vec::new()),
    }
}

/// Runs a sync task body whose error carries a payload ([`Raised`]) in
/// a worker: decode, call (catching panics), encode.
#[doc(hidden)]
pub fn run_raising<A, R>(
    args: &[u8],
    fds: Vec<OwnedFd>,
    f: fn(A) -> Result<R, Raised>,
) -> (Outcome, Vec<OwnedFd>)
where
    A: DeserializeOwned,
    R: Serialize,
{
    match decode::<A>(args, fds) {
        Ok(a) => match catch_unwind(AssertUnwindSafe(|| f(a))) {
            Ok(Err(raised)) => (
                Outcome::Raised {
                    message: raised.message,
                    payload: raised.payload,
                },
                Vec::new(),
            ),
            Ok(Ok(v)) => finish::<R>(Ok(Ok(v))),
            Err(p) => finish::<R>(Err(p)),
        },
        Err(o) => (o, Vec::new()),
    }
}

/// Runs an async task body in a worker.
#[doc(hidden)]
pub fn run_async<A, R, F, Fut>(
    args: &[u8],
    fds: Vec<OwnedFd>,
    f: F,
) -> BoxFuture<'static, (Outcome, Vec<OwnedFd>)>
where
    A: DeserializeOwned,
    R: Serialize + 'static,
    F: FnOnce(A) -> Fut,
    Fut: Future<Output = Result<R, String>> + Send + 'static,
{
    match decode::<A>(args, fds) {
        Ok(a) => match catch_unwind(AssertUnwindSafe(|| f(a))) {
            Ok(fut) => AssertUnwindSafe(fut).catch_unwind().map(finish).boxed(),
            Err(p) => std::future::ready(finish::<R>(Err(p))).boxed(),
        },
        Err(o) => std::future::ready((o, Vec::new())).boxed(),
    }
}

/// Runs a sync task body over a batch of arguments in a worker.
#[doc(hidden)]
pub fn run_batch<A, R>(
    args: &[u8],
    fds: Vec<OwnedFd>,
    f: fn(A) -> Result<R, String>,
) -> (Outcome, Vec<OwnedFd>)
where
    A: DeserializeOwned,
    R: Serialize,
{
    match decode::<Vec<A>>(args, fds) {
        Ok(items) => {
            let out: BatchResults<R> = items
                .into_iter()
                .map(|a| match catch_unwind(AssertUnwindSafe(|| f(a))) {
                    Ok(Ok(r)) => Ok(r),
                    Ok(Err(e)) => Err(BatchItemError::Failed(e)),
                    Err(p) => Err(BatchItemError::Panicked({
                        let c = Caught::of(&*p);
                        match c.location {
                            Some(l) => format!("{} (at {l})", c.message),
                            None => c.message,
                        }
                    })),
                })
                .collect();
            encode(&out)
        }
        Err(o) => (o, Vec::new()),
    }
}

/// What crosses to a worker process: arguments and results of process
/// tasks. `process_task!` checks each type against it, so a missing derive
/// is one short error naming the type.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross to a worker process: it must implement serde's `Serialize` and `Deserialize`",
    label = "an argument or result of a process task",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to it (serde is re-exported as `seedcore::serde`; with it, add `#[serde(crate = \"seedcore::serde\")]`)"
)]
pub trait ProcessData {}

impl<T: Serialize + DeserializeOwned> ProcessData for T {}

/// Compiles only for [`ProcessData`] types (used by `process_task!`).
#[doc(hidden)]
pub const fn assert_process_data<T: ProcessData>() {}
