//! The table of process tasks, filled at link time (no life-before-main
//! registration, so it is complete in a worker before `init` runs), and
//! the typed handle the parent submits with.

use super::batch::{BatchItemError, BatchResults};
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
    /// The task panicked, with this message.
    Panicked(String),
    /// The task returned this error.
    Failed(String),
    /// The arguments did not decode as the task's argument type.
    BadArgs(String),
    /// The worker has no task of that name.
    Unknown(String),
    /// Cancelled before it started.
    Cancelled,
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
    _types: PhantomData<fn(A) -> R>,
}

/// The batch form of a [`ProcessTask`]; see [`ProcessTask::batch`].
pub type BatchTask<A, R> = ProcessTask<Vec<A>, BatchResults<R>>;

impl<A, R> ProcessTask<A, R> {
    #[doc(hidden)]
    pub const fn __new(name: &'static str, batch: &'static str) -> Self {
        ProcessTask {
            name,
            batch: Some(batch),
            _types: PhantomData,
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

fn decode<A: DeserializeOwned>(args: &[u8], fds: Vec<OwnedFd>) -> Result<A, Outcome> {
    shm::with_fds(fds, || postcard::from_bytes::<A>(args))
        .map_err(|e| Outcome::BadArgs(e.to_string()))
}

fn encode<R: Serialize>(r: &R) -> (Outcome, Vec<OwnedFd>) {
    match shm::collect_fds(|| crate::wire::codec::to_vec(r, 64)) {
        (Ok(bytes), fds) => (Outcome::Ok(bytes), fds),
        (Err(e), _) => (
            Outcome::Failed(format!("the result could not be encoded: {e}")),
            Vec::new(),
        ),
    }
}

fn finish<R: Serialize>(r: std::thread::Result<Result<R, String>>) -> (Outcome, Vec<OwnedFd>) {
    match r {
        Ok(Ok(v)) => encode(&v),
        Ok(Err(e)) => (Outcome::Failed(e), Vec::new()),
        Err(p) => (
            Outcome::Panicked(crate::error::panic_message(&*p)),
            Vec::new(),
        ),
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
                    Err(p) => Err(BatchItemError::Panicked(crate::error::panic_message(&*p))),
                })
                .collect();
            encode(&out)
        }
        Err(o) => (o, Vec::new()),
    }
}
