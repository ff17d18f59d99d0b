//! Pipelines: stages that each run on a pool of their own kind (threads or
//! processes) with their own concurrency, joined by bounded buffers.
//!
//! See [`Pipeline`] for how a pipeline runs; each stage is a dispatch
//! core (`core.rs`) whose source is the stage before.

use super::channel::{ChannelSource, Receiver};
use super::chunk::{ChunkCursor, ChunkSize};
use super::core::{Core, CoreConfig, Limits};
use super::map::process_runner;
use super::progress::Progress;
use super::runner::{ChunkRunner, ThreadRunner};
use super::{Blocker, IterSource, Pull, Source};
use crate::error::{BoxError, TaskError};
use crate::exec::process::ProcessTask;
use crate::{ConcurrentSystem, TaskOptions};
use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// One item between stages: a value, or the error of an earlier stage.
type Item<T> = Result<T, PipelineError>;

/// Items a pipeline's output takes from its last stage at a time (and so
/// holds at most, beyond the stages' buffers).
const OUTPUT_BATCH: usize = 64;

/// An item that failed in a pipeline stage.
#[derive(Debug)]
pub struct PipelineError {
    stage: usize,
    name: Option<Arc<str>>,
    error: TaskError,
}

impl PipelineError {
    /// The index of the stage that failed, from 0.
    pub fn stage(&self) -> usize {
        self.stage
    }

    /// The stage's name, if it was given one.
    pub fn stage_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The item's error.
    pub fn error(&self) -> &TaskError {
        &self.error
    }

    /// The item's error, without the stage.
    pub fn into_error(self) -> TaskError {
        self.error
    }
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "pipeline stage {} ({n}): {}", self.stage, self.error),
            None => write!(f, "pipeline stage {}: {}", self.stage, self.error),
        }
    }
}

impl std::error::Error for PipelineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<PipelineError> for TaskError {
    fn from(e: PipelineError) -> TaskError {
        e.error
    }
}

/// One stage of a [`Pipeline`]: what runs on each item, where, and how
/// many at once.
#[must_use = "a stage does nothing until added to a pipeline"]
pub struct Stage<T, U> {
    runner: Box<dyn ChunkRunner<T, Output = U>>,
    name: Option<Arc<str>>,
    concurrency: Option<usize>,
    buffer: Option<usize>,
    opts: TaskOptions,
    chunk: ChunkSize,
}

impl<T: Send + 'static, U: Send + 'static> Stage<T, U> {
    fn with(runner: Box<dyn ChunkRunner<T, Output = U>>) -> Self {
        Stage {
            runner,
            name: None,
            concurrency: None,
            buffer: None,
            opts: TaskOptions::new(),
            chunk: ChunkSize::Fixed(1),
        }
    }

    /// A stage that calls `f` on the thread pool. A panic fails the item.
    pub fn thread<F>(f: F) -> Self
    where
        F: Fn(T) -> U + Send + Sync + 'static,
    {
        Self::with(Box::new(ThreadRunner::new(move |t| {
            Ok::<U, TaskError>(f(t))
        })))
    }

    /// A stage that calls `f` on the thread pool; `Err(e)` fails the item
    /// with [`TaskError::Failed`].
    pub fn try_thread<F, E>(f: F) -> Self
    where
        F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        Self::with(Box::new(ThreadRunner::new(move |t| {
            f(t).map_err(TaskError::failed)
        })))
    }

    /// A stage that runs the process task `task` in worker processes.
    pub fn process(task: ProcessTask<T, U>) -> Self
    where
        T: Serialize,
        U: DeserializeOwned,
    {
        Self::with(process_runner(task))
    }

    /// A name for errors and logs.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Tasks of this stage running at once (default: the pool's workers,
    /// `threads.core` or `processes.core`; `0` counts as `1`).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// Finished chunks this stage keeps for the next one before it stops
    /// (default: as many as its concurrency).
    pub fn buffer(mut self, n: usize) -> Self {
        self.buffer = Some(n);
        self
    }

    /// The options of each of this stage's tasks.
    pub fn options(mut self, opts: TaskOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Items per task (default `Fixed(1)`: one task per item; give cheap
    /// stages larger chunks).
    pub fn chunk_size(mut self, size: ChunkSize) -> Self {
        self.chunk = size;
        self
    }
}

impl<T, U> fmt::Debug for Stage<T, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stage")
            .field("name", &self.name)
            .field("concurrency", &self.concurrency)
            .field("buffer", &self.buffer)
            .field("options", &self.opts)
            .field("chunk_size", &self.chunk)
            .finish_non_exhaustive()
    }
}

impl ConcurrentSystem {
    /// Starts a [`Pipeline`] over the items of `input`; add stages with
    /// [`Pipeline::stage`], then read the output with [`Pipeline::run`].
    pub fn pipeline<'a, I>(&'a self, input: I) -> Pipeline<'a, I::Item>
    where
        I: IntoIterator,
        I::IntoIter: Send + 'a,
        I::Item: Send + 'static,
    {
        let source = IterSource(input.into_iter().map(Ok));
        let len = source.len_hint();
        Pipeline::new(self, Box::new(source), len)
    }

    /// Starts a [`Pipeline`] over the items of a channel, as they arrive,
    /// until every sender is gone.
    pub fn pipeline_from<T: Send + 'static>(&self, rx: Receiver<T>) -> Pipeline<'_, T> {
        Pipeline::new(self, Box::new(OkSource(ChannelSource(rx))), None)
    }
}

/// A chain of stages over an input, not yet running: made by
/// [`ConcurrentSystem::pipeline`] or [`ConcurrentSystem::pipeline_from`].
///
/// ```
/// use seedcore::{ConcurrentSystem, Stage};
///
/// let system = ConcurrentSystem::builder().core_threads(2).build()?;
/// let mut out: Vec<String> = system
///     .pipeline(1..=5u32)
///     .stage(Stage::thread(|x: u32| x * 10).name("scale").concurrency(2))
///     .stage(Stage::try_thread(|x: u32| if x == 30 { Err("no thirties") } else { Ok(x) }).name("check"))
///     .stage(Stage::thread(|x: u32| format!("<{x}>")).name("format"))
///     .run()
///     .map(|r| r.unwrap_or_else(|e| e.to_string()))
///     .collect();
/// out.sort();
/// assert_eq!(out[0], "<10>");
/// assert_eq!(out[4], "pipeline stage 1 (check): task failed: no thirties");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # How it runs
///
/// Each stage is a dispatch core (the one maps use) whose input is the
/// stage before. A stage runs at most `concurrency` chunks at once
/// (fan-out over the pool) and keeps at most `buffer` finished chunks that
/// the next stage has not taken yet: that is the bounded channel between
/// the two, and a full one stops the stage (backpressure all the way to the
/// input). Results of all of a stage's tasks merge into the next stage's
/// input as they complete (fan-in), so a pipeline's output is unordered.
///
/// An item that fails in a stage skips the later stages and comes out as a
/// [`PipelineError`] naming the stage; the other items go on.
///
/// As with maps, there are no hidden threads: the thread (or task) reading
/// the output drives every stage, and each completion anywhere in the
/// pipeline wakes it to move items along.
#[must_use = "a pipeline does nothing until .run()"]
pub struct Pipeline<'a, T> {
    system: &'a ConcurrentSystem,
    source: Box<dyn Source<Item<T>> + 'a>,
    stages: usize,
    progress: bool,
    len: Option<u64>,
}

impl<'a, T: Send + 'a> Pipeline<'a, T> {
    fn new(
        system: &'a ConcurrentSystem,
        source: Box<dyn Source<Item<T>> + 'a>,
        len: Option<u64>,
    ) -> Self {
        Pipeline {
            system,
            source,
            stages: 0,
            progress: false,
            len,
        }
    }

    /// Adds a stage that takes this pipeline's items.
    pub fn stage<U: Send + 'a>(self, stage: Stage<T, U>) -> Pipeline<'a, U> {
        let width = stage.runner.profile(self.system).width;
        let running = stage.concurrency.unwrap_or(width).max(1);
        let buffer = stage.buffer.unwrap_or(running);
        let core = Core::new(
            self.system,
            stage.runner,
            CoreConfig {
                opts: stage.opts,
                chunk: stage.chunk,
                limits: Limits {
                    running,
                    slots: running + buffer,
                },
                ordered: false,
                stop_on_error: false,
            },
        );
        let driver = StageDriver {
            core,
            upstream: self.source,
            passed: VecDeque::new(),
            scratch: Vec::new(),
            cursor: None,
            stage: self.stages,
            name: stage.name,
        };
        Pipeline {
            system: self.system,
            source: Box::new(driver),
            stages: self.stages + 1,
            progress: self.progress,
            len: self.len,
        }
    }

    /// Show a progress bar of the pipeline's output on stderr, when stderr
    /// is a terminal. Off by default.
    pub fn progress(mut self, show: bool) -> Self {
        self.progress = show;
        self
    }

    /// Starts the pipeline: its output, as items come out of the last
    /// stage. Each item comes out once, with its value or the error of the
    /// stage where it failed.
    pub fn run(self) -> PipelineIter<'a, T> {
        PipelineIter {
            out: Output {
                source: Some(self.source),
                ready: VecDeque::new(),
                progress: Progress::new(self.progress, self.len, "pipeline"),
            },
            blocker: Blocker::default(),
        }
    }
}

impl<T> fmt::Debug for Pipeline<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("stages", &self.stages)
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

/// Wraps the items of a source as `Ok`.
struct OkSource<S>(S);

impl<T: Send, S: Source<T>> Source<Item<T>> for OkSource<S> {
    fn pull(&mut self, buf: &mut Vec<Item<T>>, want: usize, cx: &mut Context<'_>) -> Pull {
        let mut tmp = Vec::with_capacity(want.min(1024));
        let p = self.0.pull(&mut tmp, want, cx);
        buf.extend(tmp.into_iter().map(Ok));
        p
    }
}

/// A stage's view of its input: the values; errors of earlier stages are
/// set aside to pass this stage by.
struct OkFilter<'s, T> {
    upstream: &'s mut dyn Source<Item<T>>,
    passed: &'s mut VecDeque<PipelineError>,
    scratch: &'s mut Vec<Item<T>>,
}

impl<T: Send> Source<T> for OkFilter<'_, T> {
    fn pull(&mut self, buf: &mut Vec<T>, want: usize, cx: &mut Context<'_>) -> Pull {
        self.scratch.clear();
        let p = self.upstream.pull(self.scratch, want, cx);
        for item in self.scratch.drain(..) {
            match item {
                Ok(t) => buf.push(t),
                Err(e) => self.passed.push_back(e),
            }
        }
        p
    }
}

/// One running stage, as the source of the next one.
struct StageDriver<'a, T, U> {
    core: Core<'a, T, U>,
    upstream: Box<dyn Source<Item<T>> + 'a>,
    /// Errors of earlier stages, passing this one by.
    passed: VecDeque<PipelineError>,
    scratch: Vec<Item<T>>,
    /// The finished chunk being handed on.
    cursor: Option<ChunkCursor<U>>,
    stage: usize,
    name: Option<Arc<str>>,
}

impl<T: Send, U: Send> StageDriver<'_, T, U> {
    /// Moves ready items into `buf`, up to `want` of them in all.
    fn hand_out(&mut self, buf: &mut Vec<Item<U>>, start: usize, want: usize) {
        while buf.len() - start < want {
            if let Some(e) = self.passed.pop_front() {
                buf.push(Err(e));
                continue;
            }
            let Some(c) = &mut self.cursor else { return };
            match c.next() {
                Some(r) => buf.push(r.map_err(|error| PipelineError {
                    stage: self.stage,
                    name: self.name.clone(),
                    error,
                })),
                None => self.cursor = None,
            }
        }
    }
}

impl<T: Send, U: Send> Source<Item<U>> for StageDriver<'_, T, U> {
    fn pull(&mut self, buf: &mut Vec<Item<U>>, want: usize, cx: &mut Context<'_>) -> Pull {
        let start = buf.len();
        loop {
            self.hand_out(buf, start, want);
            let mut input = OkFilter {
                upstream: &mut *self.upstream,
                passed: &mut self.passed,
                scratch: &mut self.scratch,
            };
            if buf.len() - start == want {
                // Full (or a nudge): let the stage keep its tasks busy.
                self.core.advance(&mut input, cx);
                return Pull::Ready;
            }
            match self.core.poll_chunk(&mut input, cx) {
                Poll::Ready(Some(out)) => self.cursor = Some(out.into_cursor()),
                Poll::Ready(None) if self.passed.is_empty() => return Pull::Done,
                Poll::Pending if self.passed.is_empty() => return Pull::Pending,
                // Errors were set aside meanwhile: hand them out.
                Poll::Ready(None) | Poll::Pending => {}
            }
        }
    }
}

/// The consumer's state, shared by the iterator and the stream.
struct Output<'a, T> {
    /// `None` once cancelled.
    source: Option<Box<dyn Source<Item<T>> + 'a>>,
    ready: VecDeque<Item<T>>,
    progress: Progress,
}

impl<T> Output<'_, T> {
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Poll::Ready(Some(item));
            }
            let Some(src) = &mut self.source else {
                return Poll::Ready(None);
            };
            let mut buf = Vec::new();
            let p = src.pull(&mut buf, OUTPUT_BATCH, cx);
            let failed = buf.iter().filter(|r| r.is_err()).count();
            self.progress.inc(buf.len() as u64, failed as u64);
            self.ready.extend(buf);
            match p {
                Pull::Done => {
                    self.source = None;
                    self.progress.finish();
                }
                Pull::Pending if self.ready.is_empty() => return Poll::Pending,
                Pull::Pending | Pull::Ready => {}
            }
        }
    }

    fn cancel(&mut self) {
        // Dropping the stages cancels their outstanding tasks.
        if self.source.take().is_some() {
            self.progress.abandon();
        }
        self.ready.clear();
    }
}

/// The output of a running [`Pipeline`], as a lazy iterator: one item per
/// input item, its final value or the error of the stage where it failed,
/// in completion order.
///
/// Reading it drives every stage (see the [`Pipeline`] docs); dropping it,
/// or [`cancel`](Self::cancel), cancels every stage's outstanding tasks.
#[must_use = "a pipeline's results are produced only as they are read"]
pub struct PipelineIter<'a, T> {
    out: Output<'a, T>,
    blocker: Blocker,
}

impl<'a, T> PipelineIter<'a, T> {
    /// A handle on the pipeline's progress bar (see
    /// [`Pipeline::progress`]), to print above it.
    pub fn progress(&self) -> super::ProgressHandle {
        self.out.progress.handle()
    }

    /// Cancels every stage's outstanding tasks: the output ends.
    pub fn cancel(&mut self) {
        self.out.cancel();
    }

    /// The same output as a [`Stream`].
    pub fn into_stream(self) -> PipelineStream<'a, T> {
        PipelineStream { out: self.out }
    }
}

impl<T> Iterator for PipelineIter<'_, T> {
    type Item = Result<T, PipelineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(item) = self.out.ready.pop_front() {
            return Some(item);
        }
        let out = &mut self.out;
        self.blocker.block_on(|cx| out.poll_item(cx))
    }
}

impl<T> fmt::Debug for PipelineIter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineIter")
            .field("running", &self.out.source.is_some())
            .field("ready", &self.out.ready.len())
            .finish()
    }
}

/// The output of a running [`Pipeline`] as a [`Stream`]; see
/// [`PipelineIter`].
#[must_use = "streams do nothing unless polled"]
pub struct PipelineStream<'a, T> {
    out: Output<'a, T>,
}

impl<T> PipelineStream<'_, T> {
    /// Cancels every stage's outstanding tasks: the stream ends.
    pub fn cancel(&mut self) {
        self.out.cancel();
    }
}

// Nothing in it is pinned structurally: results are moved out by value.
impl<T> Unpin for PipelineStream<'_, T> {}

impl<T> Stream for PipelineStream<'_, T> {
    type Item = Result<T, PipelineError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().out.poll_item(cx)
    }
}

impl<T> fmt::Debug for PipelineStream<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineStream")
            .field("running", &self.out.source.is_some())
            .finish_non_exhaustive()
    }
}
