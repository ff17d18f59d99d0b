//! Chunks: what a finished chunk holds, how its items are read back in
//! order, and how big the next chunk should be.
//!
//! # Invariants
//!
//! * A chunk of `len` items reports exactly `len` outcomes: its items run
//!   in input order, so a finished chunk is `values` (the successful items,
//!   in order) plus `errors` (position, error), sorted by position, and
//!   [`ChunkOut::fill_missing`] gives every item that produced nothing (the
//!   chunk was cancelled, timed out, or stopped at an error) an error.
//! * The sizer only ever returns a size within its bounds, at least 1.

use crate::error::{SubmitError, TaskError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How many items a map puts in one task.
///
/// ```
/// use seedcore::ChunkSize;
/// use std::time::Duration;
///
/// let fixed = ChunkSize::Fixed(256);
/// let tuned = ChunkSize::Adaptive { min: 16, max: 4096, target: Duration::from_millis(2) };
/// assert_ne!(fixed, tuned);
/// assert_eq!(ChunkSize::default(), ChunkSize::Auto);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ChunkSize {
    /// Tuned while the map runs: start with one item, measure, grow until a
    /// chunk takes about 500 µs on threads or 1 ms on processes, at most
    /// 65,536 items. When the input's length is known (and the map's
    /// options have no timeout, which applies per chunk), a long map's
    /// chunks grow further, each taking half of one worker's share of the
    /// items left, up to 8 times that time, and shrink back near the end,
    /// so that the workers finish together.
    #[default]
    Auto,
    /// Exactly this many items per chunk (the last one may hold fewer);
    /// `0` counts as `1`.
    Fixed(usize),
    /// Tuned like [`Auto`](ChunkSize::Auto), within `min..=max` items,
    /// aiming at chunks that take `target`.
    Adaptive {
        /// Fewest items per chunk.
        min: usize,
        /// Most items per chunk.
        max: usize,
        /// How long a chunk should take.
        target: Duration,
    },
}

/// The outcome of one chunk: its successful values in order, and the
/// positions of its failed items.
pub(crate) struct ChunkOut<R> {
    pub(crate) len: usize,
    pub(crate) values: Vec<R>,
    pub(crate) errors: Vec<(usize, TaskError)>,
    /// Time spent running the items, where the runner measures it.
    pub(crate) run_ns: Option<u64>,
}

impl<R> ChunkOut<R> {
    /// An empty outcome for `len` items, to be filled.
    pub(crate) fn new(len: usize) -> Self {
        ChunkOut {
            len,
            values: Vec::new(),
            errors: Vec::new(),
            run_ns: None,
        }
    }

    /// Every item failed with `e`.
    pub(crate) fn failed(len: usize, e: TaskError) -> Self {
        let mut out = ChunkOut::new(len);
        out.fill_missing(e);
        out
    }

    /// Items that have an outcome.
    pub(crate) fn settled(&self) -> usize {
        self.values.len() + self.errors.len()
    }

    /// Gives `e` to every item after the last settled one.
    pub(crate) fn fill_missing(&mut self, e: TaskError) {
        let from = self.settled();
        if from >= self.len {
            return;
        }
        // The settled items are a prefix: the missing ones come after every
        // recorded error, so pushing keeps the order.
        let copies: Vec<_> = (from + 1..self.len).map(|i| (i, e.duplicate())).collect();
        self.errors.push((from, e));
        self.errors.extend(copies);
    }

    /// Reads the outcomes back in item order.
    pub(crate) fn into_cursor(self) -> ChunkCursor<R> {
        let mut errors = self.errors.into_iter();
        let next = errors.next();
        ChunkCursor {
            values: self.values.into_iter(),
            next_err: next,
            errors,
            pos: 0,
            len: self.len,
        }
    }
}

/// The outcomes of a finished chunk, in item order.
pub(crate) struct ChunkCursor<R> {
    values: std::vec::IntoIter<R>,
    next_err: Option<(usize, TaskError)>,
    errors: std::vec::IntoIter<(usize, TaskError)>,
    pos: usize,
    len: usize,
}

impl<R> ChunkCursor<R> {
    /// Outcomes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.len - self.pos
    }
}

impl<R> Iterator for ChunkCursor<R> {
    type Item = Result<R, TaskError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.len {
            return None;
        }
        let pos = self.pos;
        self.pos += 1;
        if matches!(&self.next_err, Some((at, _)) if *at == pos) {
            let (_, e) = self.next_err.take()?;
            self.next_err = self.errors.next();
            return Some(Err(e));
        }
        match self.values.next() {
            Some(v) => Some(Ok(v)),
            // Unreachable by the invariant; an error rather than a panic.
            None => Some(Err(TaskError::failed("the chunk lost an item's result"))),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining(), Some(self.remaining()))
    }
}

/// A submitted chunk, as the map sees it whatever pool runs it.
pub(crate) trait PendingChunk<R>: Send {
    /// Ready once the chunk's task has resolved; then every item has an
    /// outcome. Not polled again after it returned `Ready`.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ChunkOut<R>>;

    /// Cancels the chunk's task (or tasks).
    fn cancel(&self);
}

/// A chunk that never ran, whose outcome is known at once (it could not be
/// submitted).
pub(crate) struct ReadyChunk<R>(pub(crate) Option<ChunkOut<R>>);

impl<R: Send> PendingChunk<R> for ReadyChunk<R> {
    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ChunkOut<R>> {
        match self.0.take() {
            Some(out) => Poll::Ready(out),
            None => Poll::Ready(ChunkOut::new(0)),
        }
    }

    fn cancel(&self) {}
}

/// The error an item gets when its chunk could not be submitted.
pub(crate) fn submit_error(e: SubmitError) -> TaskError {
    match e {
        SubmitError::SystemClosed => TaskError::SystemShutdown,
        other => TaskError::Failed(Box::new(other)),
    }
}

/// What a pool kind tells the sizer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Profile {
    /// Workers that run chunks at once.
    pub(crate) width: usize,
    /// How long an automatic chunk should take.
    pub(crate) target: Duration,
    /// Most items in an automatic chunk.
    pub(crate) max: usize,
}

/// Picks the size of the next chunk.
///
/// Auto: each finished chunk gives a cost per item — its measured run time
/// over its items where the runner measures it (threads), else the time
/// between completions times the pool's width over the items completed
/// (processes: this counts the IPC overhead too, so the chunks grow until
/// it is amortised). The estimate is smoothed, and the size moves toward
/// its goal by at most ÷4 and ×4 (×16 for a throughput estimate, which
/// cannot overshoot) per finished chunk.
///
/// The goal is `target / cost` items. Where the items left in the input
/// are known ([`left`](Self::left)), it is rather their share
/// `left / (GUIDED_SHARES × width)` (guided self-scheduling), kept within
/// `target / cost` and `GUIDED_SPAN × target / cost`: a long map then runs
/// in few long chunks (each costs a task and a wake-up of the consumer),
/// and the chunks shrink as the input runs out, so that no worker is left
/// with a long chunk while the others idle at the end.
#[derive(Debug)]
pub(crate) struct Sizer {
    fixed: Option<usize>,
    min: usize,
    max: usize,
    target_ns: f64,
    width: f64,
    current: usize,
    est_ns: Option<f64>,
    /// Start of the throughput window, and the items completed in it.
    window: (Instant, usize),
    /// Upper bound learned from the runner (frame size).
    cap: usize,
    /// Items left in the input (pulled or not), where known.
    left: Option<u64>,
}

/// Guided chunks: the share of the items left that one chunk takes is one
/// in this many per worker.
const GUIDED_SHARES: f64 = 2.0;
/// Guided chunks take at most this many times the target.
const GUIDED_SPAN: f64 = 8.0;

impl Sizer {
    pub(crate) fn new(size: ChunkSize, profile: Profile) -> Sizer {
        let (fixed, min, max, target) = match size {
            ChunkSize::Fixed(n) => (Some(n.max(1)), 1, usize::MAX, profile.target),
            ChunkSize::Auto => (None, 1, profile.max, profile.target),
            ChunkSize::Adaptive { min, max, target } => {
                let min = min.max(1);
                (None, min, max.max(min), target)
            }
        };
        Sizer {
            fixed,
            min,
            max,
            target_ns: target.as_nanos().max(1) as f64,
            width: profile.width.max(1) as f64,
            current: min,
            est_ns: None,
            window: (Instant::now(), 0),
            cap: usize::MAX,
            left: None,
        }
    }

    /// Items for the next chunk.
    pub(crate) fn size(&self) -> usize {
        let n = match (self.fixed, self.guided()) {
            (Some(n), _) => n,
            // Near the input's end the share left is smaller than the size
            // reached: shrink at once, not one finished chunk later.
            (None, Some(share)) => self.current.min(share),
            (None, None) => self.current,
        };
        n.min(self.cap).max(1)
    }

    /// The input holds `left` more items (pulled or not), where known.
    pub(crate) fn left(&mut self, left: Option<u64>) {
        self.left = left;
    }

    /// The guided goal (see the type's docs), once an item's cost is
    /// estimated and where the items left are known.
    fn guided(&self) -> Option<usize> {
        let (est, left) = (self.est_ns?, self.left?);
        let plain = self.target_ns / est.max(0.5);
        let share = left as f64 / (GUIDED_SHARES * self.width);
        Some(to_items(share.clamp(plain, plain * GUIDED_SPAN)).clamp(self.min, self.max))
    }

    /// The runner could fit only `n` items in one chunk.
    pub(crate) fn cap(&mut self, n: usize) {
        self.cap = self.cap.min(n.max(1));
    }

    /// A chunk of `items` items finished; `run_ns` is its measured run time.
    pub(crate) fn observe(&mut self, items: usize, run_ns: Option<u64>) {
        if self.fixed.is_some() || items == 0 {
            return;
        }
        // A measured run time can be noisy on the first small chunks: grow
        // by at most x4 per chunk. A throughput estimate counts the per-chunk
        // overhead too, so it overstates an item's cost while chunks are
        // small and can never overshoot: let it grow x16.
        let (per_item, step) = match run_ns {
            Some(ns) => (ns as f64 / items as f64, 4),
            None => {
                let (start, n) = &mut self.window;
                *n += items;
                let elapsed = start.elapsed().as_nanos() as f64;
                // Wait for a window long enough to mean something.
                if elapsed < self.target_ns / 8.0 && self.est_ns.is_some() {
                    return;
                }
                let per = elapsed * self.width / *n as f64;
                self.window = (Instant::now(), 0);
                (per, 16)
            }
        };
        let est = match self.est_ns {
            Some(e) => 0.5 * e + 0.5 * per_item,
            None => per_item,
        };
        self.est_ns = Some(est);
        let want = self
            .guided()
            .unwrap_or_else(|| to_items(self.target_ns / est.max(0.5)));
        let lo = (self.current / 4).max(self.min);
        let hi = self.current.saturating_mul(step).min(self.max);
        self.current = want.clamp(lo.min(hi), hi).clamp(self.min, self.max);
    }
}

/// `n` items, rounded, saturating at `usize::MAX`.
fn to_items(n: f64) -> usize {
    let n = n.round();
    if n >= usize::MAX as f64 {
        usize::MAX
    } else {
        n as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile {
            width: 2,
            target: Duration::from_micros(500),
            max: 65_536,
        }
    }

    #[test]
    fn cursor_puts_errors_in_place() {
        let mut out = ChunkOut::new(5);
        out.values = vec![10, 30];
        out.errors = vec![(1, TaskError::Cancelled)];
        out.fill_missing(TaskError::TimedOut(Duration::from_secs(1)));
        let got: Vec<_> = out.into_cursor().collect();
        assert_eq!(got.len(), 5);
        assert!(matches!(got[0], Ok(10)));
        assert!(matches!(got[1], Err(TaskError::Cancelled)));
        assert!(matches!(got[2], Ok(30)));
        assert!(got[3].as_ref().is_err_and(|e| e.is_timeout()));
        assert!(got[4].as_ref().is_err_and(|e| e.is_timeout()));
    }

    #[test]
    fn measured_sizer_grows_by_at_most_four() {
        let mut s = Sizer::new(ChunkSize::Auto, profile());
        assert_eq!(s.size(), 1);
        // 100 ns per item: the goal is 5,000 items.
        s.observe(1, Some(100));
        assert_eq!(s.size(), 4);
        for _ in 0..10 {
            let n = s.size();
            s.observe(n, Some(100 * n as u64));
        }
        assert_eq!(s.size(), 5_000);
        // Items got 10x slower: shrink.
        s.observe(5_000, Some(5_000_000));
        assert!(s.size() < 5_000);
    }

    #[test]
    fn a_map_of_known_length_takes_longer_chunks_and_shrinks_them_near_its_end() {
        let mut s = Sizer::new(ChunkSize::Auto, profile());
        // 100 ns per item: the plain goal is 5,000 items, 40,000 at most
        // when guided.
        s.left(Some(1_000_000));
        s.observe(1, Some(100));
        assert_eq!(s.size(), 4, "still at most x4 per finished chunk");
        for _ in 0..10 {
            let n = s.size();
            s.observe(n, Some(100 * n as u64));
        }
        assert_eq!(s.size(), 40_000, "8 times the target while much is left");
        // 100,000 left: a quarter per worker is 25,000.
        s.left(Some(100_000));
        assert_eq!(s.size(), 25_000, "shrinks at once near the end");
        // Never below the plain goal.
        s.left(Some(1_000));
        assert_eq!(s.size(), 5_000);
        // A fixed size is never guided.
        let mut f = Sizer::new(ChunkSize::Fixed(10), profile());
        f.left(Some(1_000_000));
        f.observe(10, Some(1_000));
        assert_eq!(f.size(), 10);
    }

    #[test]
    fn fixed_and_capped() {
        let mut s = Sizer::new(ChunkSize::Fixed(0), profile());
        assert_eq!(s.size(), 1);
        s = Sizer::new(ChunkSize::Fixed(100), profile());
        s.observe(100, Some(1));
        assert_eq!(s.size(), 100);
        s.cap(7);
        assert_eq!(s.size(), 7);
        let a = Sizer::new(
            ChunkSize::Adaptive {
                min: 10,
                max: 5,
                target: Duration::from_millis(1),
            },
            profile(),
        );
        assert_eq!(a.size(), 10);
    }
}
