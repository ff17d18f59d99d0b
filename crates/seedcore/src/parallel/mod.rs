//! Data-parallel patterns over the pools: ordered and unordered maps,
//! `starmap`, map-reduce, pipelines of stages, and producer-consumer
//! channels — on the thread pool and on worker processes, with the same
//! [`TaskOptions`](crate::TaskOptions) as single tasks.
//!
//! ```
//! use seedcore::{ChunkSize, ConcurrentSystem};
//!
//! let system = ConcurrentSystem::builder().core_threads(2).build()?;
//!
//! // Results in input order, one `Result` per item.
//! let squares: Vec<u64> = system
//!     .map(0..1000u64, |x| x * x)
//!     .ordered()
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(squares[999], 998_001);
//!
//! // Map on the pool, reduce on this thread as results arrive.
//! let sum = system.map(0..1000u64, |x| x * 2).chunk_size(ChunkSize::Fixed(64)).fold(0, |a, x| a + x)?;
//! assert_eq!(sum, 999_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The semantics every map shares are documented on [`MapBuilder`] (the
//! public face of this module); the internals are:
//!
//! * `core.rs`: the dispatch core (input → chunks → bounded window of
//!   tasks → finished chunks, in order or as completed);
//! * `runner.rs`: how one chunk runs on each pool kind;
//! * `chunk.rs`: what a finished chunk holds and how big chunks are;
//! * `map.rs`, `reduce.rs`, `pipeline.rs`, `channel.rs`: the public API
//!   over the core; `progress.rs`: the progress bar.

mod channel;
mod chunk;
mod core;
mod map;
mod pipeline;
mod progress;
mod reduce;
mod runner;
mod scope;

pub use channel::{
    bounded, Receiver, RecvError, RecvTimeoutError, SendError, SendTimeoutError, Sender,
    TryRecvError, TrySendError,
};
pub use chunk::ChunkSize;
pub use map::{MapBuilder, MapIter, MapStream, StarFn};
pub use pipeline::{Pipeline, PipelineError, PipelineIter, PipelineStream, Stage};
pub use progress::ProgressHandle;
pub use reduce::Folded;
pub use scope::{Scope, ScopedFuture};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread, ThreadId};

/// What [`Source::pull`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pull {
    /// It appended every item asked for; more may follow.
    Ready,
    /// It appended fewer than asked for and more may come later; the
    /// context's waker is registered for that.
    Pending,
    /// The input is exhausted (after what was appended).
    Done,
}

/// The input of a map, pulled in batches so that one dynamic call serves a
/// whole chunk: an iterator, a channel, or the stage before in a pipeline.
pub(crate) trait Source<T>: Send {
    /// Appends at most `want` items to `buf`. With `want == 0` it appends
    /// nothing but lets the source make progress (a pipeline stage
    /// dispatches work), and returns `Ready`.
    fn pull(&mut self, buf: &mut Vec<T>, want: usize, cx: &mut Context<'_>) -> Pull;

    /// The exact number of items left, when known (for the progress bar,
    /// and for the chunk sizes near the end of a map).
    fn len_hint(&self) -> Option<u64> {
        None
    }
}

/// An iterator as a [`Source`]: always ready.
pub(crate) struct IterSource<I>(pub(crate) I);

impl<I> Source<I::Item> for IterSource<I>
where
    I: Iterator + Send,
{
    fn pull(&mut self, buf: &mut Vec<I::Item>, want: usize, _cx: &mut Context<'_>) -> Pull {
        if want == 0 {
            return Pull::Ready;
        }
        let before = buf.len();
        buf.extend(self.0.by_ref().take(want));
        if buf.len() - before < want {
            Pull::Done
        } else {
            Pull::Ready
        }
    }

    fn len_hint(&self) -> Option<u64> {
        match self.0.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo as u64),
            _ => None,
        }
    }
}

/// Wakes the thread blocked in [`Blocker::block_on`].
struct ThreadWaker {
    thread: Thread,
    notified: AtomicBool,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.notified.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Drives a poll function to completion on the calling thread, parking it
/// between wake-ups (as a blocking wait on a future: see
/// [`TaskFuture::wait`](crate::TaskFuture::wait)). Keeps its waker between
/// calls on the same thread.
#[derive(Default)]
pub(crate) struct Blocker {
    waker: Option<(ThreadId, Arc<ThreadWaker>, Waker)>,
}

impl Blocker {
    /// Polls `f` until it is ready.
    pub(crate) fn block_on<T>(&mut self, mut f: impl FnMut(&mut Context<'_>) -> Poll<T>) -> T {
        let me = thread::current();
        let fresh = !matches!(&self.waker, Some((id, _, _)) if *id == me.id());
        if fresh {
            let tw = Arc::new(ThreadWaker {
                thread: me.clone(),
                notified: AtomicBool::new(false),
            });
            let waker = Waker::from(tw.clone());
            self.waker = Some((me.id(), tw, waker));
        }
        let Some((_, tw, waker)) = &self.waker else {
            unreachable!("the waker was just set")
        };
        let mut cx = Context::from_waker(waker);
        // Taken at the first wait: from a thread task, the pool keeps its
        // capacity while this thread waits for work queued behind it.
        let mut blocked = None;
        loop {
            if let Poll::Ready(v) = f(&mut cx) {
                return v;
            }
            blocked.get_or_insert_with(crate::task::blocking);
            crate::task::off_runtime(|| {
                while !tw.notified.swap(false, Ordering::Acquire) {
                    thread::park();
                }
            });
        }
    }
}

impl std::fmt::Debug for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocker").finish_non_exhaustive()
    }
}
