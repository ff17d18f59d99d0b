//! The dispatch core every map and pipeline stage runs on: it pulls input
//! into chunks, submits them through a [`ChunkRunner`], keeps a bounded
//! window of chunks in flight, and hands finished chunks back in input
//! order or as they complete.
//!
//! # Invariants
//!
//! * `slots` holds every submitted chunk not yet handed back, in
//!   submission order; `running` counts those not known to be finished.
//!   Nothing is submitted while `slots.len() >= limits.slots` or
//!   `running >= limits.running`: items pulled from the input and not yet
//!   handed back are at most `limits.slots` chunks plus `carry`.
//! * Every `Running` slot has been polled with the latest waker before
//!   [`Core::poll_chunk`] returns `Pending` (a new chunk is polled as soon
//!   as it is submitted), so a completion always wakes the consumer.
//! * After [`Core::cancel`] the core is stopped: it submits nothing, hands
//!   back nothing, and has cancelled every outstanding chunk task.

use super::chunk::{submit_error, ChunkOut, ChunkSize, PendingChunk, Sizer};
use super::runner::{ChunkRunner, SpawnCx};
use super::{Pull, Source};
use crate::{ConcurrentSystem, SubmitError, TaskOptions};
use std::collections::VecDeque;
use std::task::{Context, Poll};

/// How many chunks a core keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Chunks submitted and not known to be finished.
    pub(crate) running: usize,
    /// Chunks submitted and not yet handed back (running or finished).
    pub(crate) slots: usize,
}

/// The settings of one core.
pub(crate) struct CoreConfig {
    pub(crate) opts: TaskOptions,
    pub(crate) chunk: ChunkSize,
    pub(crate) limits: Limits,
    pub(crate) ordered: bool,
    pub(crate) stop_on_error: bool,
}

enum Slot<R> {
    Running(Box<dyn PendingChunk<R>>),
    Done(ChunkOut<R>),
}

/// Dispatches the chunks of one map (or one pipeline stage).
pub(crate) struct Core<'a, T, R> {
    system: &'a ConcurrentSystem,
    runner: Box<dyn ChunkRunner<T, Output = R> + 'a>,
    opts: TaskOptions,
    ordered: bool,
    stop_on_error: bool,
    limits: Limits,
    sizer: Sizer,
    slots: VecDeque<Slot<R>>,
    running: usize,
    /// Items pulled and not yet submitted.
    carry: Vec<T>,
    input_done: bool,
    stopped: bool,
    /// Why no chunk may be submitted (bad settings): every item resolves
    /// with this error instead.
    invalid: Option<String>,
}

impl<'a, T, R> Core<'a, T, R> {
    pub(crate) fn new(
        system: &'a ConcurrentSystem,
        runner: Box<dyn ChunkRunner<T, Output = R> + 'a>,
        cfg: CoreConfig,
    ) -> Self {
        let invalid = matches!(cfg.chunk, ChunkSize::Fixed(0))
            .then(|| "ChunkSize::Fixed(0): a chunk holds at least one item".to_owned());
        let sizer = Sizer::new(cfg.chunk, runner.profile(system));
        Core {
            invalid,
            system,
            runner,
            opts: cfg.opts,
            ordered: cfg.ordered,
            stop_on_error: cfg.stop_on_error,
            limits: Limits {
                running: cfg.limits.running.max(1),
                slots: cfg.limits.slots.max(cfg.limits.running).max(1),
            },
            sizer,
            slots: VecDeque::new(),
            running: 0,
            carry: Vec::new(),
            input_done: false,
            stopped: false,
        }
    }

    /// The next finished chunk: the oldest one when ordered, any one
    /// otherwise. `Ready(None)` once the input is exhausted and every
    /// chunk handed back, or after [`cancel`](Self::cancel).
    pub(crate) fn poll_chunk(
        &mut self,
        src: &mut dyn Source<T>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<ChunkOut<R>>> {
        if self.stopped {
            return Poll::Ready(None);
        }
        self.advance(src, cx);
        if let Some(out) = self.take_done() {
            // Its place is free: refill now, so that the pool keeps busy
            // while the consumer reads this chunk.
            self.fill(src, cx);
            return Poll::Ready(Some(out));
        }
        if self.is_finished() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    /// Submits what the limits allow and notes finished chunks, without
    /// handing any back.
    pub(crate) fn advance(&mut self, src: &mut dyn Source<T>, cx: &mut Context<'_>) {
        if self.stopped {
            return;
        }
        self.fill(src, cx);
        if self.poll_running(cx) {
            // Finished chunks freed running capacity (pipeline stages).
            self.fill(src, cx);
        }
    }

    /// Whether the input is exhausted and every chunk handed back.
    pub(crate) fn is_finished(&self) -> bool {
        self.stopped || (self.input_done && self.carry.is_empty() && self.slots.is_empty())
    }

    /// Cancels every outstanding chunk and stops.
    pub(crate) fn cancel(&mut self) {
        self.stopped = true;
        for slot in self.slots.drain(..) {
            if let Slot::Running(c) = slot {
                c.cancel();
            }
        }
        self.running = 0;
        self.carry = Vec::new();
    }

    /// Polls every running chunk; returns whether any finished.
    fn poll_running(&mut self, cx: &mut Context<'_>) -> bool {
        let mut any = false;
        for slot in self.slots.iter_mut() {
            if let Slot::Running(c) = slot {
                if let Poll::Ready(out) = c.poll(cx) {
                    self.sizer.observe(out.len, out.run_ns);
                    *slot = Slot::Done(out);
                    self.running -= 1;
                    any = true;
                }
            }
        }
        any
    }

    /// Removes a finished chunk, if the order allows one.
    fn take_done(&mut self) -> Option<ChunkOut<R>> {
        let at = if self.ordered {
            matches!(self.slots.front(), Some(Slot::Done(_))).then_some(0)?
        } else {
            self.slots.iter().position(|s| matches!(s, Slot::Done(_)))?
        };
        match self.slots.remove(at) {
            Some(Slot::Done(out)) => Some(out),
            _ => None,
        }
    }

    /// Pulls input and submits chunks while the limits allow.
    fn fill(&mut self, src: &mut dyn Source<T>, cx: &mut Context<'_>) {
        loop {
            if self.stopped || (self.input_done && self.carry.is_empty()) {
                return;
            }
            if self.slots.len() >= self.limits.slots || self.running >= self.limits.running {
                // No room: still let a pipeline stage upstream progress.
                if !self.input_done {
                    src.pull(&mut self.carry, 0, cx);
                }
                return;
            }
            // Items left: those carried and, where known, the input's. A
            // chunk's timeout was chosen for chunks of the plain target: a
            // map with one is not guided.
            let left = if self.opts.get_timeout().is_some() {
                None
            } else if self.input_done {
                Some(0)
            } else {
                src.len_hint()
            };
            self.sizer
                .left(left.map(|n| n.saturating_add(self.carry.len() as u64)));
            let want = self.sizer.size();
            let mut starved = false;
            if !self.input_done && self.carry.len() < want {
                let need = want - self.carry.len();
                self.carry.reserve(need.min(1 << 16));
                match src.pull(&mut self.carry, need, cx) {
                    Pull::Ready => {}
                    Pull::Pending => starved = true,
                    Pull::Done => self.input_done = true,
                }
            }
            if self.carry.is_empty() {
                return;
            }
            let items = if self.carry.len() > want {
                let tail = self.carry.split_off(want);
                std::mem::replace(&mut self.carry, tail)
            } else {
                std::mem::take(&mut self.carry)
            };
            self.submit(items, cx);
            if starved {
                // The input has nothing more for now; it will wake us.
                return;
            }
        }
    }

    /// Submits one chunk and polls it once, so that its completion wakes
    /// the consumer. Items that did not fit in the chunk go back first in
    /// line, and later chunks are no larger than this one.
    fn submit(&mut self, mut items: Vec<T>, cx: &mut Context<'_>) {
        let spawn = SpawnCx {
            system: self.system,
            opts: &self.opts,
            stop_on_error: self.stop_on_error,
        };
        let len = items.len();
        if let Some(why) = &self.invalid {
            let e = submit_error(SubmitError::InvalidOptions(why.clone()));
            self.slots.push_back(Slot::Done(ChunkOut::failed(len, e)));
            return;
        }
        let mut chunk = self.runner.spawn(&spawn, &mut items);
        if !items.is_empty() {
            self.sizer.cap(len - items.len());
            items.append(&mut self.carry);
            self.carry = items;
        }
        match chunk.poll(cx) {
            Poll::Ready(out) => self.slots.push_back(Slot::Done(out)),
            Poll::Pending => {
                self.slots.push_back(Slot::Running(chunk));
                self.running += 1;
            }
        }
    }
}

impl<T, R> Drop for Core<'_, T, R> {
    fn drop(&mut self) {
        self.cancel();
    }
}
