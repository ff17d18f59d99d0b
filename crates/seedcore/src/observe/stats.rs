//! The public snapshot of a system's counters ([`Stats`]) and its
//! histograms.

use crate::balance::BalanceEvent;
use crate::sched::ExecutorStats;
use std::time::Duration;

/// Histogram buckets: bucket `i` counts durations in `[2^(i-1), 2^i)` µs
/// (bucket 0: under 1 µs); the last one is open-ended.
pub(crate) const BUCKETS: usize = 32;

/// A histogram of durations with power-of-two microsecond buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    pub(crate) buckets: [u64; BUCKETS],
}

impl Histogram {
    /// The number of recorded durations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), or zero
    /// when nothing was recorded. Accurate to a factor of two.
    pub fn percentile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::upper(i);
            }
        }
        Self::upper(BUCKETS - 1)
    }

    /// `(upper bound, count)` for every non-empty bucket.
    pub fn buckets(&self) -> Vec<(Duration, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| (Self::upper(i), n))
            .collect()
    }

    fn upper(i: usize) -> Duration {
        Duration::from_micros(1u64 << i)
    }
}

/// A snapshot of a system's counters, from [`ConcurrentSystem::stats`].
///
/// Every accepted task is either pending or counted in exactly one of
/// `completed`, `failed`, `panicked`, `timed_out`, `cancelled`,
/// `lock_timeouts`, `shutdown`, `worker_died` and `memory_limit`; see
/// [`Stats::resolved`].
///
/// [`ConcurrentSystem::stats`]: crate::ConcurrentSystem::stats
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Tasks accepted.
    pub submitted: u64,
    /// Tasks resolved with a value.
    pub completed: u64,
    /// Tasks resolved with their own error.
    pub failed: u64,
    /// Tasks resolved because they panicked.
    pub panicked: u64,
    /// Tasks resolved because their last attempt timed out.
    pub timed_out: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Tasks that gave up waiting for a lock.
    pub lock_timeouts: u64,
    /// Tasks resolved because the system shut down.
    pub shutdown: u64,
    /// Tasks resolved because their worker process died, or because the
    /// process pool could not start workers ([`TaskError::PoolBroken`]).
    ///
    /// [`TaskError::PoolBroken`]: crate::TaskError::PoolBroken
    pub worker_died: u64,
    /// Tasks resolved because their worker went over its memory limit.
    pub memory_limit: u64,
    /// Retries scheduled (attempts after the first).
    pub retried: u64,
    /// Attempts started.
    pub attempts: u64,
    /// Attempts running now, on any executor.
    pub running: u64,
    /// Callbacks that panicked (caught and logged).
    pub callback_panics: u64,
    /// Time from submission to the start of the first attempt.
    pub queue_wait: Histogram,
    /// Duration of each attempt.
    pub run_time: Histogram,
    /// [`queue_wait`](Self::queue_wait) per priority level (index = level).
    pub queue_wait_by_priority: Vec<Histogram>,
    /// [`run_time`](Self::run_time) per priority level (index = level).
    pub run_time_by_priority: Vec<Histogram>,
    /// Times the balancer grew a pool.
    pub expansions: u64,
    /// Times the balancer shrank a pool.
    pub shrinks: u64,
    /// The balancer's last events (expansions, shrinks, holds), oldest
    /// first; at most 64.
    pub balance_events: Vec<BalanceEvent>,
    /// Submissions refused because the global task limit was reached.
    pub queue_full_rejections: u64,
    /// One row per executor, in the order they were registered: queue
    /// depths, workers alive and busy, sizes, worker pids. Look one up with
    /// [`executor`](Self::executor).
    pub executors: Vec<ExecutorStats>,
}

impl Stats {
    /// Tasks resolved, whatever the outcome.
    pub fn resolved(&self) -> u64 {
        self.completed
            + self.failed
            + self.panicked
            + self.timed_out
            + self.cancelled
            + self.lock_timeouts
            + self.shutdown
            + self.worker_died
            + self.memory_limit
    }

    /// Tasks accepted and not yet resolved.
    pub fn pending(&self) -> u64 {
        self.submitted.saturating_sub(self.resolved())
    }

    /// The row of the executor of `kind`, if the system has one.
    ///
    /// ```
    /// use seedcore::{ConcurrentSystem, ExecutorKind};
    ///
    /// let system = ConcurrentSystem::builder().core_threads(2).build()?;
    /// let threads = system.stats().executor(ExecutorKind::Threads).cloned().unwrap();
    /// assert_eq!((threads.workers, threads.core), (2, 2));
    /// assert!(system.stats().executor(ExecutorKind::Custom("gpu")).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn executor(&self, kind: crate::ExecutorKind) -> Option<&ExecutorStats> {
        self.executors.iter().find(|e| e.kind == kind)
    }

    /// Tasks waiting for a worker, every executor and level together.
    /// Cancelled tasks count until a worker skips them.
    pub fn queued(&self) -> usize {
        self.executors.iter().map(|e| e.queued).sum()
    }
}
