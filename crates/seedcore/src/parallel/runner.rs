//! How a chunk runs: the one part of a map that differs between pool kinds.
//!
//! * [`ThreadRunner`]: one thread task per chunk that calls the function
//!   on each item, catching each item's panic.
//! * [`BatchRunner`]: one call of a process task's batch form per chunk.
//! * [`ItemsRunner`]: one process task per item, for process tasks without
//!   a batch form (async tasks, tasks of a separate worker program).
//!
//! # Thread chunk attempts
//!
//! A thread chunk keeps its items in a mutex that an attempt holds while it
//! runs them, one after the other, checking its cancellation token between
//! items (each item of a small chunk, about 64 times in a large one). An
//! attempt that stops (cancelled, timed out) publishes the
//! outcomes it has *before* it lets go of the items, so a retry attempt,
//! which waits for the items, goes on from the first item not run, and when
//! the last attempt returns every outcome is published.

use super::chunk::{submit_error, ChunkOut, PendingChunk, Profile, ReadyChunk};
use crate::error::{panic_message, TaskError};
use crate::exec::process::encode_args;
use crate::exec::process::{BatchItemError, BatchResults, BatchTask, ProcessTask, MAX_FDS};
use crate::{ConcurrentSystem, TaskContext, TaskFuture, TaskOptions};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// What a runner needs to submit one chunk.
pub(crate) struct SpawnCx<'s> {
    pub(crate) system: &'s ConcurrentSystem,
    pub(crate) opts: &'s TaskOptions,
    /// A chunk may stop at its first failed item.
    pub(crate) stop_on_error: bool,
}

/// Runs chunks of `T` on one kind of pool.
pub(crate) trait ChunkRunner<T>: Send {
    /// The result of one item.
    type Output;

    /// How the sizer should treat this pool.
    fn profile(&self, system: &ConcurrentSystem) -> Profile;

    /// Submits one chunk of the first items of `items` (all of them,
    /// unless they do not fit in one task) and leaves the others, which
    /// go first in the next chunk. A chunk that cannot be submitted comes
    /// back already finished, each item failed with the reason.
    fn spawn(&self, cx: &SpawnCx<'_>, items: &mut Vec<T>) -> Box<dyn PendingChunk<Self::Output>>;
}

/// Automatic chunks on threads aim at this run time.
const THREAD_TARGET: Duration = Duration::from_micros(500);
/// Automatic chunks on processes aim at this round trip.
const PROCESS_TARGET: Duration = Duration::from_millis(1);
/// Most items in an automatic chunk.
const AUTO_MAX: usize = 65_536;
/// How often a thread chunk looks at its cancellation token, per chunk.
const CHECKS_PER_CHUNK: usize = 64;

/// Runs each chunk as a thread task calling `f` on each item.
pub(crate) struct ThreadRunner<F> {
    f: Arc<F>,
}

impl<F> ThreadRunner<F> {
    pub(crate) fn new(f: F) -> Self {
        ThreadRunner { f: Arc::new(f) }
    }
}

impl<T, R, F> ChunkRunner<T> for ThreadRunner<F>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Result<R, TaskError> + Send + Sync + 'static,
{
    type Output = R;

    fn profile(&self, system: &ConcurrentSystem) -> Profile {
        Profile {
            width: system.config().threads.core,
            target: THREAD_TARGET,
            max: AUTO_MAX,
        }
    }

    fn spawn(&self, cx: &SpawnCx<'_>, items: &mut Vec<T>) -> Box<dyn PendingChunk<R>> {
        let items = std::mem::take(items);
        let len = items.len();
        let state = Arc::new(ThreadChunk {
            f: self.f.clone(),
            items: Mutex::new(items.into_iter()),
            out: Mutex::new(ChunkOut::new(len)),
            stop_on_error: cx.stop_on_error,
        });
        let body = state.clone();
        match cx
            .system
            .submit_thread(cx.opts.clone(), move |ctx: &TaskContext| body.run(ctx))
        {
            Ok(fut) => Box::new(ThreadPending { fut, state }),
            Err(e) => Box::new(ReadyChunk(Some(ChunkOut::failed(len, submit_error(e))))),
        }
    }
}

/// The state one thread chunk shares with its attempts.
struct ThreadChunk<T, R, F> {
    f: Arc<F>,
    /// The items no attempt has started yet.
    items: Mutex<std::vec::IntoIter<T>>,
    /// The outcomes published so far.
    out: Mutex<ChunkOut<R>>,
    stop_on_error: bool,
}

impl<T, R, F> ThreadChunk<T, R, F>
where
    F: Fn(T) -> Result<R, TaskError>,
{
    /// One attempt: runs the items left, in order, until done, cancelled or
    /// (with stop-on-error) failed; then publishes what it did.
    fn run(&self, ctx: &TaskContext) {
        // An earlier attempt that timed out may still be finishing its
        // item: wait for it, unless this attempt is cancelled meanwhile.
        let mut items = loop {
            if let Some(g) = self.items.try_lock_for(Duration::from_millis(5)) {
                break g;
            }
            if ctx.is_cancelled() {
                return;
            }
        };
        let start = Instant::now();
        let mut values = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        let mut index = self.out.lock().settled();
        // The token is checked about CHECKS_PER_CHUNK times per chunk, so
        // that cheap items do not pay for it each.
        let stride = (items.len() / CHECKS_PER_CHUNK).max(1);
        let mut since_check = 0;
        loop {
            // Panics are caught once per run of items rather than once per
            // item: a panic leaves `index` at the item that panicked, which
            // is recorded, and the loop resumes after it.
            let run = catch_unwind(AssertUnwindSafe(|| {
                for item in items.by_ref() {
                    let failed = match (self.f)(item) {
                        Ok(v) => {
                            values.push(v);
                            false
                        }
                        Err(e) => {
                            errors.push((index, e));
                            true
                        }
                    };
                    index += 1;
                    if failed && self.stop_on_error {
                        return true;
                    }
                    since_check += 1;
                    if since_check >= stride {
                        since_check = 0;
                        if ctx.is_cancelled() {
                            return true;
                        }
                    }
                }
                true
            }));
            match run {
                Ok(_) => break,
                Err(p) => {
                    errors.push((index, TaskError::Panicked(panic_message(&*p).into())));
                    index += 1;
                    if self.stop_on_error || ctx.is_cancelled() {
                        break;
                    }
                }
            }
        }
        let ns = start.elapsed().as_nanos() as u64;
        let mut out = self.out.lock();
        if out.values.is_empty() {
            out.values = values;
        } else {
            out.values.append(&mut values);
        }
        out.errors.append(&mut errors);
        out.run_ns = Some(out.run_ns.unwrap_or(0) + ns);
        // `items` is released here, after the outcomes are published.
        drop(out);
        drop(items);
    }
}

/// A submitted thread chunk.
struct ThreadPending<T, R, F> {
    fut: TaskFuture<()>,
    state: Arc<ThreadChunk<T, R, F>>,
}

impl<T, R, F> PendingChunk<R> for ThreadPending<T, R, F>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Send + Sync + 'static,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ChunkOut<R>> {
        let r = match Pin::new(&mut self.fut).poll(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => return Poll::Pending,
        };
        let len = self.state.out.lock().len;
        // A failed chunk's last attempt may still be running: take what
        // is published and report the rest with the chunk's error.
        let mut out = std::mem::replace(&mut *self.state.out.lock(), ChunkOut::new(len));
        match r {
            // Items an attempt skipped: it was cancelled or stopped at an
            // error; the map does not read them.
            Ok(()) => out.fill_missing(TaskError::Cancelled),
            Err(e) => out.fill_missing(e),
        }
        Poll::Ready(out)
    }

    fn cancel(&self) {
        self.fut.cancel();
    }
}

/// Runs each chunk as one call of a process task's batch form.
pub(crate) struct BatchRunner<A, R> {
    task: BatchTask<A, R>,
}

impl<A, R> BatchRunner<A, R> {
    pub(crate) fn new(task: BatchTask<A, R>) -> Self {
        BatchRunner { task }
    }
}

impl<A, R> ChunkRunner<A> for BatchRunner<A, R>
where
    A: Serialize + Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    type Output = R;

    fn profile(&self, system: &ConcurrentSystem) -> Profile {
        Profile {
            width: system.config().processes.core,
            target: PROCESS_TARGET,
            max: AUTO_MAX,
        }
    }

    /// Encodes the items once; if they take more than half the frame
    /// limit (the results need room too) or more shared buffers than a
    /// frame carries, submits a prefix that fits instead.
    fn spawn(&self, cx: &SpawnCx<'_>, items: &mut Vec<A>) -> Box<dyn PendingChunk<R>> {
        let budget = cx.system.config().processes.max_frame_bytes / 2;
        let mut take = items.len();
        let encoded = loop {
            let enc = match encode_args(&items[..take]) {
                Ok(enc) => enc,
                Err(e) => {
                    let failed = std::mem::take(items);
                    return Box::new(ReadyChunk(Some(ChunkOut::failed(
                        failed.len(),
                        submit_error(e),
                    ))));
                }
            };
            let (size, fds) = (enc.bytes.len().max(1), enc.fds.len().max(1));
            if (size <= budget && fds <= MAX_FDS) || take <= 1 {
                break enc;
            }
            let fit =
                |limit: usize, used: usize| (take as u128 * limit as u128 / used as u128) as usize;
            take = (fit(budget, size).min(fit(MAX_FDS, fds)) * 9 / 10).clamp(1, take - 1);
        };
        let rest = items.split_off(take);
        let len = std::mem::replace(items, rest).len();
        match cx
            .system
            .submit_encoded(cx.opts.clone(), self.task, encoded)
        {
            Ok(fut) => Box::new(BatchPending { fut, len }),
            Err(e) => Box::new(ReadyChunk(Some(ChunkOut::failed(len, submit_error(e))))),
        }
    }
}

/// A submitted batch call.
struct BatchPending<R> {
    fut: TaskFuture<BatchResults<R>>,
    len: usize,
}

impl<R: Send + 'static> PendingChunk<R> for BatchPending<R> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ChunkOut<R>> {
        let r = match Pin::new(&mut self.fut).poll(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => return Poll::Pending,
        };
        let batch = match r {
            Ok(b) => b,
            Err(e) => return Poll::Ready(ChunkOut::failed(self.len, e)),
        };
        let got = batch.len();
        let (values, errors) = batch.into_parts();
        let mut out = ChunkOut::new(self.len);
        if got == self.len {
            out.values = values;
            out.errors = errors
                .into_iter()
                .map(|(i, e)| (i, batch_error(e)))
                .collect();
        } else {
            out.fill_missing(TaskError::failed(format!(
                "the batch call returned {got} results for {} items",
                self.len
            )));
        }
        Poll::Ready(out)
    }

    fn cancel(&self) {
        self.fut.cancel();
    }
}

/// One batch item's failure as a task error.
fn batch_error(e: BatchItemError) -> TaskError {
    match e {
        BatchItemError::Panicked(m) => TaskError::Panicked(m.into()),
        BatchItemError::Failed(m) => TaskError::Failed(m.into()),
    }
}

/// Runs each item of a chunk as its own process task.
pub(crate) struct ItemsRunner<A, R> {
    task: ProcessTask<A, R>,
}

impl<A, R> ItemsRunner<A, R> {
    pub(crate) fn new(task: ProcessTask<A, R>) -> Self {
        ItemsRunner { task }
    }
}

impl<A, R> ChunkRunner<A> for ItemsRunner<A, R>
where
    A: Serialize + Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    type Output = R;

    fn profile(&self, system: &ConcurrentSystem) -> Profile {
        // Grouping items saves nothing here: keep chunks small so that the
        // in-flight bound stays meaningful.
        Profile {
            width: system.config().processes.core,
            target: PROCESS_TARGET,
            max: 16,
        }
    }

    fn spawn(&self, cx: &SpawnCx<'_>, items: &mut Vec<A>) -> Box<dyn PendingChunk<R>> {
        let tasks = std::mem::take(items)
            .into_iter()
            .map(
                |a| match cx.system.submit_process(cx.opts.clone(), self.task, a) {
                    Ok(f) => ItemSlot::Running(f),
                    Err(e) => ItemSlot::Done(Err(submit_error(e))),
                },
            )
            .collect();
        Box::new(ItemsPending { tasks })
    }
}

/// One item of an [`ItemsRunner`] chunk.
enum ItemSlot<R> {
    Running(TaskFuture<R>),
    Done(Result<R, TaskError>),
    Taken,
}

/// A chunk of separately submitted process tasks.
struct ItemsPending<R> {
    tasks: Vec<ItemSlot<R>>,
}

impl<R: Send + 'static> PendingChunk<R> for ItemsPending<R> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ChunkOut<R>> {
        let mut pending = false;
        for slot in &mut self.tasks {
            if let ItemSlot::Running(f) = slot {
                match Pin::new(f).poll(cx) {
                    Poll::Ready(r) => *slot = ItemSlot::Done(r),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        let mut out = ChunkOut::new(self.tasks.len());
        for (i, slot) in self.tasks.iter_mut().enumerate() {
            match std::mem::replace(slot, ItemSlot::Taken) {
                ItemSlot::Done(Ok(v)) => out.values.push(v),
                ItemSlot::Done(Err(e)) => out.errors.push((i, e)),
                ItemSlot::Running(_) | ItemSlot::Taken => out
                    .errors
                    .push((i, TaskError::failed("the item was polled twice"))),
            }
        }
        Poll::Ready(out)
    }

    fn cancel(&self) {
        for slot in &self.tasks {
            if let ItemSlot::Running(f) = slot {
                f.cancel();
            }
        }
    }
}
