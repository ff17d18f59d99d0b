//! `map`, `try_map`, `starmap` and `map_process`: the builder, and the
//! lazy iterator and stream of results.

use super::chunk::{ChunkCursor, ChunkOut, ChunkSize};
use super::core::{Core, CoreConfig, Limits};
use super::progress::{Progress, ProgressHandle};
use super::runner::{BatchRunner, ChunkRunner, ItemsRunner, ThreadRunner};
use super::{Blocker, IterSource, Source};
use crate::error::{BoxError, TaskError};
use crate::exec::process::ProcessTask;
use crate::{ConcurrentSystem, TaskOptions};
use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Chunks in flight per worker when `max_in_flight` is not given.
const IN_FLIGHT_PER_WORKER: usize = 4;

impl ConcurrentSystem {
    /// Maps `f` over `input` on the thread pool, in chunks; returns a
    /// builder to set options on, then `.ordered()` or `.unordered()` for
    /// the results. See [`MapBuilder`] for chunks and
    /// the semantics shared by every map.
    ///
    /// A panic in `f` is reported as that item's
    /// [`TaskError::Panicked`]; the other items go on.
    ///
    /// ```
    /// use seedcore::ConcurrentSystem;
    ///
    /// let system = ConcurrentSystem::builder().core_threads(2).build()?;
    /// let lens: Vec<usize> = system
    ///     .map(vec!["a", "bb", "ccc"], |s: &str| s.len())
    ///     .ordered()
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(lens, [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map<'a, I, F, R>(&'a self, input: I, f: F) -> MapBuilder<'a, I::Item, R>
    where
        I: IntoIterator,
        I::IntoIter: Send + 'a,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> R + Send + Sync + 'static,
        R: Send + 'static,
    {
        let runner = ThreadRunner::new(move |t| Ok::<R, TaskError>(f(t)));
        MapBuilder::new(
            self,
            Box::new(IterSource(input.into_iter())),
            Box::new(runner),
        )
    }

    /// Like [`map`](Self::map) for a function that returns its own errors:
    /// `Err(e)` becomes that item's [`TaskError::Failed`].
    ///
    /// ```
    /// use seedcore::ConcurrentSystem;
    ///
    /// let system = ConcurrentSystem::builder().core_threads(2).build()?;
    /// let parsed: Vec<_> = system
    ///     .try_map(vec!["1", "x", "3"], |s: &str| s.parse::<u32>())
    ///     .ordered()
    ///     .collect();
    /// assert_eq!(parsed[0].as_ref().ok(), Some(&1));
    /// assert!(parsed[1].as_ref().is_err_and(|e| e.is_failed()));
    /// assert_eq!(parsed[2].as_ref().ok(), Some(&3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_map<'a, I, F, R, E>(&'a self, input: I, f: F) -> MapBuilder<'a, I::Item, R>
    where
        I: IntoIterator,
        I::IntoIter: Send + 'a,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> Result<R, E> + Send + Sync + 'static,
        E: Into<BoxError>,
        R: Send + 'static,
    {
        let runner = ThreadRunner::new(move |t| f(t).map_err(TaskError::failed));
        MapBuilder::new(
            self,
            Box::new(IterSource(input.into_iter())),
            Box::new(runner),
        )
    }

    /// Maps a function of several arguments over tuples of them, on the
    /// thread pool (Python's `starmap`). Give the closure's argument types.
    ///
    /// ```
    /// use seedcore::ConcurrentSystem;
    ///
    /// let system = ConcurrentSystem::builder().core_threads(2).build()?;
    /// let pows: Vec<u64> = system
    ///     .starmap(vec![(2u64, 3u32), (3, 2), (10, 0)], |b: u64, e: u32| b.pow(e))
    ///     .ordered()
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(pows, [8, 9, 1]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn starmap<'a, I, F>(&'a self, input: I, f: F) -> MapBuilder<'a, I::Item, F::Output>
    where
        I: IntoIterator,
        I::IntoIter: Send + 'a,
        I::Item: Send + 'static,
        F: StarFn<I::Item>,
        F::Output: Send + 'static,
    {
        self.map(input, move |args| f.call_star(args))
    }

    /// Maps the process task `task` over `input` in worker processes. Each
    /// chunk is one call of the task's batch form
    /// ([`ProcessTask::batch`]), so a chunk of a thousand items costs one
    /// round trip; tasks without a batch form (async tasks, tasks of a
    /// separate worker program) run one task per item.
    ///
    /// A task of several arguments takes them as a tuple, so this is also
    /// the process `starmap`. Chunks are kept within half the frame limit
    /// (`max_frame_bytes`); pass large buffers as
    /// [`SharedBytes`](crate::SharedBytes).
    ///
    /// ```no_run
    /// seedcore::process_task! {
    ///     fn cube(x: u64) -> u64 { x * x * x }
    /// }
    ///
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     seedcore::init();
    ///     let system = seedcore::ConcurrentSystem::new()?;
    ///     let cubes: Vec<u64> = system.map_process(0..100u64, cube).ordered().collect::<Result<_, _>>()?;
    ///     assert_eq!(cubes[3], 27);
    ///     Ok(())
    /// }
    /// ```
    pub fn map_process<'a, I, A, R>(
        &'a self,
        input: I,
        task: ProcessTask<A, R>,
    ) -> MapBuilder<'a, A, R>
    where
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
        A: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        MapBuilder::new(
            self,
            Box::new(IterSource(input.into_iter())),
            process_runner(task),
        )
    }
}

/// The runner of a process task: its batch form if it has one.
pub(crate) fn process_runner<'a, A, R>(
    task: ProcessTask<A, R>,
) -> Box<dyn ChunkRunner<A, Output = R> + 'a>
where
    A: Serialize + Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    // `batch()` also names a batch form for async tasks, which register
    // none: trust it only when the name is registered.
    match task.batch() {
        Some(batch) if crate::exec::process::find(batch.name()).is_some() => {
            Box::new(BatchRunner::new(batch))
        }
        _ => Box::new(ItemsRunner::new(task)),
    }
}

/// A function of several arguments, called with them as a tuple: what
/// [`ConcurrentSystem::starmap`] maps. Implemented for every `Fn` of one to
/// eight arguments.
pub trait StarFn<Args>: Send + Sync + 'static {
    /// The function's result.
    type Output;

    /// Calls the function with the tuple's fields as its arguments.
    fn call_star(&self, args: Args) -> Self::Output;
}

macro_rules! star_fn {
    ($($a:ident),+) => {
        impl<Fun, Out, $($a),+> StarFn<($($a,)+)> for Fun
        where
            Fun: Fn($($a),+) -> Out + Send + Sync + 'static,
        {
            type Output = Out;

            #[allow(non_snake_case)]
            fn call_star(&self, ($($a,)+): ($($a,)+)) -> Out {
                self($($a),+)
            }
        }
    };
}

star_fn!(A);
star_fn!(A, B);
star_fn!(A, B, C);
star_fn!(A, B, C, D);
star_fn!(A, B, C, D, E);
star_fn!(A, B, C, D, E, G);
star_fn!(A, B, C, D, E, G, H);
star_fn!(A, B, C, D, E, G, H, J);

/// The settings of a map, before it starts: made by
/// [`ConcurrentSystem::map`] and its siblings. Nothing runs until
/// [`ordered`](Self::ordered), [`unordered`](Self::unordered) or a fold
/// ([`fold`](Self::fold), [`for_each`](Self::for_each), …).
///
/// # Semantics shared by every map
///
/// * **Chunks.** A map groups its input into chunks and runs each chunk as
///   one task: a thread task that calls the function on each item, or one
///   call of a process task's batch form ([`ProcessTask::batch`](crate::ProcessTask::batch)). The size
///   is [`ChunkSize::Auto`] by default: the first chunks hold one item; the
///   map measures what an item costs (run time inside the thread task, or
///   completed items per second for processes) and grows the chunks until
///   one takes about 500 µs on threads, 1 ms on processes. Where the
///   input's length is known (an exact `size_hint`) and the options set no
///   timeout, a long map's chunks grow up to 8 times longer, and shrink
///   back as the input runs out, so that the workers finish together.
/// * **Options apply per chunk.** The priority, timeout, locks and retry
///   policy given with `.options(..)` are those of each chunk task. A
///   timeout is therefore per chunk attempt (use `ChunkSize::Fixed(1)` for a
///   per-item timeout); a chunk that times out reports `TimedOut` for each of
///   its items. A retry re-runs a failed chunk attempt (timeout, worker
///   death): on threads it goes on with the items the failed attempt had not
///   finished, on processes it sends the whole batch again.
/// * **Errors in place.** An item whose function panics or returns an error
///   yields `Err` at its position; the other items go on. Item errors are
///   final: they are not retried (the retry policy covers the chunk task,
///   not your function's own errors — retry inside the function if it
///   calls something flaky). With `.stop_on_error(true)` the map ends at the
///   first error instead: it yields that error, then nothing, and cancels
///   every chunk still outstanding.
/// * **Backpressure.** At most `max_in_flight` chunks (default: four per
///   worker of the pool) are submitted and not yet consumed, so a map pulls
///   at most `max_in_flight` chunks of input ahead of its consumer, however
///   long the input is.
/// * **No hidden threads.** Work is dispatched by whoever iterates: the
///   thread calling `next()`, or the task polling the stream. Chunks already
///   dispatched keep running while the consumer is busy; nothing new starts
///   until it asks for more.
/// * **Cancellation.** Dropping a [`MapIter`], a [`MapStream`] or a
///   [`PipelineIter`](crate::parallel::PipelineIter), or calling its `cancel()`, cancels every outstanding
///   chunk task (a running thread chunk stops at its next check of the
///   token, about 64 times a chunk: within a 64th of its items).
/// * **Blocking.** Iterating a map blocks the calling thread while it waits.
///   Iterated from inside a thread task of the same system, the pool starts
///   a thread to stand in for the waiting one while the wait lasts (as for
///   [`TaskFuture::wait`](crate::TaskFuture::wait)), so a nested map never
///   deadlocks a full pool.
/// * **Deadline.** With [`deadline`](Self::deadline) or
///   [`timeout`](Self::timeout), the whole map has a time limit (Python's
///   `Executor.map(timeout=..)`). Results that arrive in time are yielded
///   as usual, even when read after the deadline; once it has passed and
///   the map would wait, it cancels every outstanding chunk (queued ones
///   never start, a running thread chunk stops within a 64th of its items, a
///   running process task is stopped as a cancel stops it), yields one
///   [`TaskError::TimedOut`] in place of everything not done, and ends.
#[must_use = "a map does nothing until .ordered(), .unordered() or a fold"]
pub struct MapBuilder<'a, T, R> {
    system: &'a ConcurrentSystem,
    source: Box<dyn Source<T> + 'a>,
    runner: Box<dyn ChunkRunner<T, Output = R> + 'a>,
    opts: TaskOptions,
    chunk: ChunkSize,
    max_in_flight: Option<usize>,
    stop_on_error: bool,
    progress: bool,
    label: &'static str,
    deadline: Option<Deadline>,
}

impl<'a, T, R> MapBuilder<'a, T, R>
where
    T: Send + 'a,
    R: Send + 'a,
{
    pub(crate) fn new(
        system: &'a ConcurrentSystem,
        source: Box<dyn Source<T> + 'a>,
        runner: Box<dyn ChunkRunner<T, Output = R> + 'a>,
    ) -> Self {
        MapBuilder {
            system,
            source,
            runner,
            opts: TaskOptions::new(),
            chunk: ChunkSize::Auto,
            max_in_flight: None,
            stop_on_error: false,
            progress: false,
            label: "map",
            deadline: None,
        }
    }

    /// The options of each chunk task: priority, timeout (per chunk
    /// attempt), retry (of a failed chunk attempt), locks and limits.
    pub fn options(mut self, opts: TaskOptions) -> Self {
        self.opts = opts;
        self
    }

    /// How many items go in one task (default [`ChunkSize::Auto`]).
    pub fn chunk_size(mut self, size: ChunkSize) -> Self {
        self.chunk = size;
        self
    }

    /// Most chunks submitted and not yet consumed (default: four per
    /// worker of the pool; `0` counts as `1`). With a fixed chunk size,
    /// the map holds at most `n × chunk` input items at a time.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    /// End the map at the first failed item: it yields that error, then
    /// nothing, and the outstanding chunks are cancelled. Off by default
    /// (every item yields its own outcome).
    pub fn stop_on_error(mut self, stop: bool) -> Self {
        self.stop_on_error = stop;
        self
    }

    /// End the whole map at `at`: what is not done by then is cancelled
    /// and reported as one [`TaskError::TimedOut`] (see "Deadline" above).
    /// The error's duration is the time from this call to `at`.
    pub fn deadline(mut self, at: Instant) -> Self {
        let limit = at.saturating_duration_since(Instant::now());
        self.deadline = Some(Deadline { at, limit });
        self
    }

    /// End the whole map `limit` from now (not per item, not per chunk:
    /// for that, use the timeout of [`options`](Self::options)); see
    /// [`deadline`](Self::deadline).
    pub fn timeout(mut self, limit: Duration) -> Self {
        let now = Instant::now();
        let at = now
            .checked_add(limit)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        self.deadline = Some(Deadline { at, limit });
        self
    }

    /// Show a progress bar (items done, rate, ETA) on stderr while the map
    /// runs, when stderr is a terminal. Off by default.
    pub fn progress(mut self, show: bool) -> Self {
        self.progress = show;
        self
    }

    /// Results in input order, lazily (Python's `imap`; collect it for
    /// `map`). A slow chunk holds back the ones after it (they keep
    /// running, up to `max_in_flight`).
    #[doc(alias = "imap")]
    pub fn ordered(self) -> MapIter<'a, R> {
        self.start(true)
    }

    /// Results as chunks complete, lazily (Python's `imap_unordered`);
    /// within a chunk, in input order.
    #[doc(alias = "imap_unordered")]
    pub fn unordered(self) -> MapIter<'a, R> {
        self.start(false)
    }

    pub(crate) fn start(self, ordered: bool) -> MapIter<'a, R>
    where
        T: 'a,
    {
        let width = self.runner.profile(self.system).width.max(1);
        let n = self
            .max_in_flight
            .unwrap_or(IN_FLIGHT_PER_WORKER * width)
            .max(1);
        let len_hint = self.source.len_hint();
        let progress = Progress::new(self.progress, len_hint, self.label);
        let deadline = self.deadline.map(|d| Armed {
            deadline: d,
            timer: self.system.shared().sched.timer.clone(),
            waker: None,
        });
        let core = Core::new(
            self.system,
            self.runner,
            CoreConfig {
                opts: self.opts,
                chunk: self.chunk,
                limits: Limits {
                    running: n,
                    slots: n,
                },
                ordered,
                stop_on_error: self.stop_on_error,
            },
        );
        MapIter {
            flow: Flow {
                driver: Box::new(MapDriver {
                    core,
                    source: self.source,
                }),
                len_hint,
                cursor: None,
                stop_on_error: self.stop_on_error,
                done: false,
                progress,
                deadline,
            },
            blocker: Blocker::default(),
        }
    }

    pub(crate) fn label(mut self, label: &'static str) -> Self {
        self.label = label;
        self
    }
}

impl<T, R> fmt::Debug for MapBuilder<'_, T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapBuilder")
            .field("options", &self.opts)
            .field("chunk_size", &self.chunk)
            .field("max_in_flight", &self.max_in_flight)
            .field("stop_on_error", &self.stop_on_error)
            .field("progress", &self.progress)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// When a whole map must end, and the limit it was given (for the error).
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    limit: Duration,
}

/// A deadline with what wakes the consumer at it: the system's timer,
/// holding the waker it was last armed with.
struct Armed {
    deadline: Deadline,
    timer: Arc<crate::sched::timer::Timer>,
    waker: Option<Waker>,
}

impl Armed {
    /// Makes sure the consumer waiting with `cx` is woken at the deadline,
    /// arming the timer again only for a new waker.
    fn arm(&mut self, cx: &Context<'_>) {
        if self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return;
        }
        let w = cx.waker().clone();
        self.waker = Some(w.clone());
        self.timer.schedule(self.deadline.at, move || w.wake());
    }
}

/// What the consumer side of a map drives: finished chunks, one at a time.
trait Driver<R>: Send {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<ChunkOut<R>>>;
    fn cancel(&mut self);
}

/// A core with its input.
struct MapDriver<'a, T, R> {
    core: Core<'a, T, R>,
    source: Box<dyn Source<T> + 'a>,
}

impl<T: Send, R: Send> Driver<R> for MapDriver<'_, T, R> {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<ChunkOut<R>>> {
        self.core.poll_chunk(&mut *self.source, cx)
    }

    fn cancel(&mut self) {
        self.core.cancel();
    }
}

/// The consumer's state, shared by the iterator and the stream.
struct Flow<'a, R> {
    driver: Box<dyn Driver<R> + 'a>,
    /// Input items, if known at the start.
    len_hint: Option<u64>,
    cursor: Option<ChunkCursor<R>>,
    stop_on_error: bool,
    done: bool,
    progress: Progress,
    deadline: Option<Armed>,
}

impl<R> Flow<'_, R> {
    /// The next outcome from the current chunk, without waiting.
    #[inline]
    fn next_ready(&mut self) -> Option<Result<R, TaskError>> {
        let r = self.cursor.as_mut()?.next();
        match &r {
            Some(Err(_)) if self.stop_on_error => self.stop(false),
            None => self.cursor = None,
            _ => {}
        }
        r
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<R, TaskError>>> {
        loop {
            if let Some(r) = self.next_ready() {
                return Poll::Ready(Some(r));
            }
            match self.poll_chunk(cx) {
                Poll::Ready(Some(out)) => self.cursor = Some(out.into_cursor()),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The next finished chunk as a whole (for the folds); the cursor must
    /// be empty.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<ChunkOut<R>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.driver.poll_chunk(cx) {
            Poll::Ready(Some(out)) => {
                self.progress.inc(out.len as u64, out.errors.len() as u64);
                Poll::Ready(Some(out))
            }
            Poll::Ready(None) => {
                self.done = true;
                self.progress.finish();
                Poll::Ready(None)
            }
            Poll::Pending => match &mut self.deadline {
                None => Poll::Pending,
                Some(d) if Instant::now() < d.deadline.at => {
                    d.arm(cx);
                    Poll::Pending
                }
                Some(d) => {
                    // Past the deadline with nothing ready: what is still
                    // out is cancelled and ends as one timed-out "chunk".
                    let limit = d.deadline.limit;
                    self.driver.cancel();
                    self.done = true;
                    self.progress.abandon();
                    Poll::Ready(Some(ChunkOut::failed(1, TaskError::TimedOut(limit))))
                }
            },
        }
    }

    /// Cancels the outstanding chunks; keeps the current chunk's outcomes
    /// unless `cancelled` by the user.
    fn stop(&mut self, cancelled: bool) {
        if !self.done {
            self.driver.cancel();
            self.done = true;
            self.progress.abandon();
        }
        if cancelled || self.stop_on_error {
            self.cursor = None;
        }
    }
}

/// The results of a map, as a lazy iterator: each item is the value of
/// one input item or its [`TaskError`].
///
/// Iterating blocks the calling thread while it waits and dispatches new
/// chunks as it goes (see [`MapBuilder`]). Dropping
/// it cancels the chunks still outstanding; so does [`cancel`](Self::cancel).
#[must_use = "a map's results are produced only as they are read"]
pub struct MapIter<'a, R> {
    flow: Flow<'a, R>,
    blocker: Blocker,
}

impl<'a, R> MapIter<'a, R> {
    /// A handle on the map's progress bar (see
    /// [`MapBuilder::progress`]), to print above it from here or from the
    /// map's tasks.
    pub fn progress(&self) -> ProgressHandle {
        self.flow.progress.handle()
    }

    /// Prints `line` on stderr above the progress bar (straight to stderr
    /// when none is shown); see [`ProgressHandle::println`].
    pub fn println(&self, line: impl AsRef<str>) {
        self.flow.progress.handle().println(line);
    }

    /// Runs `f` with the progress bar hidden, so that what it prints is
    /// not garbled by the bar; see [`ProgressHandle::suspend`].
    pub fn suspend<T>(&self, f: impl FnOnce() -> T) -> T {
        self.flow.progress.handle().suspend(f)
    }

    /// The next finished chunk as a whole, blocking; `None` at the end.
    /// Only for a fresh iterator, before any item was read.
    pub(crate) fn next_chunk(&mut self) -> Option<ChunkOut<R>> {
        debug_assert!(self.flow.cursor.is_none(), "items were read one by one");
        let flow = &mut self.flow;
        self.blocker.block_on(|cx| flow.poll_chunk(cx))
    }

    /// The number of input items, when the input knew it at the start.
    pub(crate) fn len_hint(&self) -> Option<u64> {
        self.flow.len_hint
    }

    /// Ends the map after a failure seen chunk-wise.
    pub(crate) fn stop_after_error(&mut self) {
        self.flow.stop(true);
    }

    /// Cancels every outstanding chunk: the iterator ends (results already
    /// received are dropped too).
    pub fn cancel(&mut self) {
        self.flow.stop(true);
    }

    /// The same results as a [`Stream`] to `.await` on any runtime.
    pub fn into_stream(self) -> MapStream<'a, R> {
        MapStream { flow: self.flow }
    }
}

impl<R> Iterator for MapIter<'_, R> {
    type Item = Result<R, TaskError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(r) = self.flow.next_ready() {
            return Some(r);
        }
        let flow = &mut self.flow;
        self.blocker.block_on(|cx| flow.poll_item(cx))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let ready = self.flow.cursor.as_ref().map_or(0, |c| c.remaining());
        if self.flow.done {
            (ready, Some(ready))
        } else {
            (ready, None)
        }
    }
}

impl<R> fmt::Debug for MapIter<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapIter")
            .field("done", &self.flow.done)
            .finish_non_exhaustive()
    }
}

/// The results of a map as a [`Stream`]: the async face of [`MapIter`],
/// with the same semantics. Polling it pulls the input and submits chunks
/// on the polling task, so an input iterator that blocks blocks that task.
#[must_use = "streams do nothing unless polled"]
pub struct MapStream<'a, R> {
    flow: Flow<'a, R>,
}

impl<R> MapStream<'_, R> {
    /// Cancels every outstanding chunk: the stream ends.
    pub fn cancel(&mut self) {
        self.flow.stop(true);
    }
}

// Nothing in it is pinned structurally: results are moved out by value.
impl<R> Unpin for MapStream<'_, R> {}

impl<R> Stream for MapStream<'_, R> {
    type Item = Result<R, TaskError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().flow.poll_item(cx)
    }
}

impl<R> fmt::Debug for MapStream<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapStream")
            .field("done", &self.flow.done)
            .finish_non_exhaustive()
    }
}
