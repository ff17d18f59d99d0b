//! Bounded channels for producer-consumer work, and the helpers that run
//! a consumer stage on the pools.
//!
//! [`bounded`] is a crossbeam channel that an async consumer can also
//! wait on: each side is `Clone` (many producers, many consumers), a full
//! channel blocks its senders (backpressure), and a [`Receiver`] is both a
//! blocking iterator and a [`Stream`]. The error types are
//! crossbeam-channel's. A thread task that blocks in a send or a receive
//! keeps its pool's capacity (the pool starts a thread to stand in for it
//! while it waits), so a producer and a consumer on a full pool never
//! deadlock each other.
//!
//! # Wake-ups
//!
//! An async receiver that finds the channel empty registers its waker,
//! then looks again; a sender sends, then wakes whoever registered. A
//! sequentially consistent fence on each side, between its write and its
//! read, makes sure that at least one of them sees the other: a wake-up is
//! never lost. A sender's drop wakes the receivers too (after its end of
//! the channel is closed), so they see the channel disconnect.

use super::map::{process_runner, MapBuilder};
use super::runner::ThreadRunner;
use super::{Pull, Source};
use crate::error::{SubmitError, TaskError};
use crate::exec::process::ProcessTask;
use crate::{ConcurrentSystem, TaskContext, TaskFuture};
use futures_util::Stream;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

pub use crossbeam_channel::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};

/// Runs a channel operation that may block as a wait on a future runs:
/// from a thread task, the pool starts a thread to stand in for this one
/// while it waits (the other end may be a task queued behind it).
fn waiting<R>(op: impl FnOnce() -> R) -> R {
    crate::task::wait_blocking(false, op)
}

/// A bounded channel of `capacity` items (`0` counts as `1`): the
/// producer-consumer link of seedcore's parallel patterns.
///
/// ```
/// use seedcore::{ConcurrentSystem};
/// use seedcore::channel::{bounded};
///
/// let system = ConcurrentSystem::builder().core_threads(2).build()?;
/// let (tx, rx) = bounded(16);
/// std::thread::scope(|s| {
///     s.spawn(move || {
///         for i in 0..100u64 {
///             tx.send(i).unwrap();
///         }
///     });
///     // A consumer stage on the thread pool; results as they complete.
///     let total: u64 = system.consume(rx, |x| x * 2).unordered().map(|r| r.unwrap()).sum();
///     assert_eq!(total, 9_900);
/// });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let wake = Arc::new(WakeList::default());
    (
        Sender {
            inner: Some(tx),
            wake: wake.clone(),
        },
        Receiver { inner: rx, wake },
    )
}

/// The wakers of async receivers waiting for an item.
#[derive(Default)]
struct WakeList {
    waiting: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl WakeList {
    /// Registers `w`; the caller must look at the channel again after.
    fn register(&self, w: &Waker) {
        let mut ws = self.wakers.lock();
        if !ws.iter().any(|x| x.will_wake(w)) {
            ws.push(w.clone());
        }
        self.waiting.store(true, Ordering::Relaxed);
        drop(ws);
        fence(Ordering::SeqCst);
    }

    /// Wakes every registered waker; the caller has just written to the
    /// channel.
    fn notify(&self) {
        fence(Ordering::SeqCst);
        if !self.waiting.load(Ordering::Relaxed) {
            return;
        }
        let ws = {
            let mut g = self.wakers.lock();
            self.waiting.store(false, Ordering::Relaxed);
            std::mem::take(&mut *g)
        };
        for w in ws {
            w.wake();
        }
    }
}

/// The sending half of a [`bounded`] channel. Cloning makes another
/// producer; the channel disconnects when every sender is dropped.
pub struct Sender<T> {
    /// `None` only while dropping.
    inner: Option<crossbeam_channel::Sender<T>>,
    wake: Arc<WakeList>,
}

impl<T> Sender<T> {
    fn tx(&self) -> &crossbeam_channel::Sender<T> {
        match &self.inner {
            Some(tx) => tx,
            None => unreachable!("a sender is only taken apart by its drop"),
        }
    }

    /// Sends `item`, waiting while the channel is full. Fails (handing the
    /// item back) when every receiver is gone.
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        let item = match self.try_send(item) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(item)) => item,
            Err(TrySendError::Disconnected(item)) => return Err(SendError(item)),
        };
        waiting(|| self.tx().send(item))?;
        self.wake.notify();
        Ok(())
    }

    /// Sends `item` if there is room now.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        self.tx().try_send(item)?;
        self.wake.notify();
        Ok(())
    }

    /// Sends `item`, waiting at most `timeout` for room.
    pub fn send_timeout(&self, item: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        waiting(|| self.tx().send_timeout(item, timeout))?;
        self.wake.notify();
        Ok(())
    }

    /// Items in the channel now.
    pub fn len(&self) -> usize {
        self.tx().len()
    }

    /// Whether the channel is empty now.
    pub fn is_empty(&self) -> bool {
        self.tx().is_empty()
    }

    /// The channel's capacity.
    pub fn capacity(&self) -> usize {
        self.tx().capacity().unwrap_or(usize::MAX)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            inner: Some(self.tx().clone()),
            wake: self.wake.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // Close this end first, then wake: a receiver that looks again
        // sees the disconnection if this was the last sender.
        drop(self.inner.take());
        self.wake.notify();
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// The receiving half of a [`bounded`] channel: a blocking iterator (until
/// every sender is gone) and a [`Stream`]. Cloning makes another consumer;
/// each item goes to one of them.
pub struct Receiver<T> {
    inner: crossbeam_channel::Receiver<T>,
    wake: Arc<WakeList>,
}

impl<T> Receiver<T> {
    /// The next item, waiting for one; `Err` once the channel is empty and
    /// every sender is gone.
    pub fn recv(&self) -> Result<T, RecvError> {
        match self.inner.try_recv() {
            Ok(item) => Ok(item),
            Err(TryRecvError::Disconnected) => Err(RecvError),
            Err(TryRecvError::Empty) => waiting(|| self.inner.recv()),
        }
    }

    /// The next item if there is one now.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.inner.try_recv()
    }

    /// The next item, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        waiting(|| self.inner.recv_timeout(timeout))
    }

    /// A blocking iterator over the items, until the channel disconnects.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(|| self.recv().ok())
    }

    /// Items in the channel now.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the channel is empty now.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Takes up to `want` ready items into `buf`; registers `cx`'s waker
    /// when it runs dry.
    fn poll_fill(&self, buf: &mut Vec<T>, want: usize, cx: &mut Context<'_>) -> Pull {
        let mut got = 0;
        let mut registered = false;
        while got < want {
            match self.inner.try_recv() {
                Ok(item) => {
                    buf.push(item);
                    got += 1;
                }
                Err(TryRecvError::Disconnected) => return Pull::Done,
                Err(TryRecvError::Empty) if registered => return Pull::Pending,
                Err(TryRecvError::Empty) => {
                    self.wake.register(cx.waker());
                    registered = true;
                }
            }
        }
        Pull::Ready
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver {
            inner: self.inner.clone(),
            wake: self.wake.clone(),
        }
    }
}

impl<T> Iterator for Receiver<T> {
    type Item = T;

    /// Blocks for the next item; `None` once the channel disconnects.
    fn next(&mut self) -> Option<T> {
        self.recv().ok()
    }
}

impl<T> Stream for Receiver<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut one = Vec::with_capacity(1);
        match self.poll_fill(&mut one, 1, cx) {
            Pull::Pending => Poll::Pending,
            Pull::Ready | Pull::Done => Poll::Ready(one.pop()),
        }
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("len", &self.len())
            .finish()
    }
}

/// A receiver as the input of a map or pipeline.
pub(crate) struct ChannelSource<T>(pub(crate) Receiver<T>);

impl<T: Send> Source<T> for ChannelSource<T> {
    fn pull(&mut self, buf: &mut Vec<T>, want: usize, cx: &mut Context<'_>) -> Pull {
        self.0.poll_fill(buf, want, cx)
    }
}

impl ConcurrentSystem {
    /// A consumer stage on the thread pool: maps `f` over the items of
    /// `rx` as they arrive, in chunks, until every sender is gone. The
    /// builder and the semantics are those of [`map`](Self::map); a chunk
    /// is submitted as soon as the channel has no more items ready, so a
    /// trickle of items is not held back to fill a chunk.
    ///
    /// With `.unordered()` this is a worker pool reading jobs from a
    /// queue; `max_in_flight` bounds the jobs taken off the channel and
    /// not yet consumed, so a full channel blocks the producers.
    pub fn consume<'a, T, F, R>(&'a self, rx: Receiver<T>, f: F) -> MapBuilder<'a, T, R>
    where
        T: Send + 'static,
        F: Fn(T) -> R + Send + Sync + 'static,
        R: Send + 'static,
    {
        let runner = ThreadRunner::new(move |t| Ok::<R, TaskError>(f(t)));
        MapBuilder::new(self, Box::new(ChannelSource(rx)), Box::new(runner)).label("consume")
    }

    /// A consumer stage in worker processes: runs the process task `task`
    /// on the items of `rx` as they arrive (batched per chunk, like
    /// [`map_process`](Self::map_process)).
    ///
    /// ```no_run
    /// seedcore::process_task! {
    ///     fn checksum(data: Vec<u8>) -> u32 { data.iter().map(|&b| u32::from(b)).sum() }
    /// }
    ///
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     seedcore::init();
    ///     let system = seedcore::ConcurrentSystem::new()?;
    ///     let (rx, producer) = system.produce("reader", 8, |tx, _ctx| {
    ///         for i in 0..100u8 {
    ///             if tx.send(vec![i; 1000]).is_err() {
    ///                 break; // the consumer is gone
    ///             }
    ///         }
    ///     })?;
    ///     let sums: Vec<u32> = system.consume_process(rx, checksum).unordered().collect::<Result<_, _>>()?;
    ///     producer.wait()?;
    ///     assert_eq!(sums.len(), 100);
    ///     Ok(())
    /// }
    /// ```
    pub fn consume_process<'a, A, R>(
        &'a self,
        rx: Receiver<A>,
        task: ProcessTask<A, R>,
    ) -> MapBuilder<'a, A, R>
    where
        A: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        MapBuilder::new(self, Box::new(ChannelSource(rx)), process_runner(task)).label("consume")
    }

    /// A producer on a service thread of its own (outside the pool's
    /// capacity, so it cannot starve the consumers of threads): runs
    /// `f` with the sending half of a [`bounded`] channel of `capacity`,
    /// and returns the receiving half with the producer's future. The
    /// channel disconnects when `f` returns. `f` should stop when a send
    /// fails (every receiver is gone) or when its context is cancelled
    /// (the system shuts down).
    pub fn produce<T, F, Out>(
        &self,
        name: &str,
        capacity: usize,
        f: F,
    ) -> Result<(Receiver<T>, TaskFuture<Out>), SubmitError>
    where
        T: Send + 'static,
        F: FnOnce(&Sender<T>, &TaskContext) -> Out + Send + 'static,
        Out: Send + 'static,
    {
        let (tx, rx) = bounded(capacity);
        let fut = self.spawn_service(name, move |ctx| {
            let out = f(&tx, ctx);
            drop(tx);
            out
        })?;
        Ok((rx, fut))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::Blocker;

    #[test]
    fn async_receiver_sees_items_and_disconnect() {
        let (tx, rx) = bounded::<u32>(2);
        let mut src = ChannelSource(rx);
        let mut blocker = Blocker::default();
        let producer = std::thread::spawn(move || {
            for i in 0..1000 {
                tx.send(i).unwrap();
            }
        });
        let mut got = Vec::new();
        loop {
            let mut buf = Vec::new();
            let r = blocker.block_on(|cx| match src.pull(&mut buf, 8, cx) {
                Pull::Pending if buf.is_empty() => Poll::Pending,
                p => Poll::Ready(p),
            });
            got.extend(buf);
            if r == Pull::Done {
                break;
            }
        }
        producer.join().unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn blocking_iterator_ends_when_senders_drop() {
        let (tx, rx) = bounded(4);
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            tx.send(1).unwrap();
            tx2.send(2).unwrap();
        });
        let mut v: Vec<i32> = rx.collect();
        v.sort();
        assert_eq!(v, [1, 2]);
    }
}
