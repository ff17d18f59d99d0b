//! The public snapshot of a system's counters ([`Stats`]) and its
//! histograms.

use super::BalanceEvent;
use super::ExecutorStats;
use std::time::Duration;

/// Significant decimal digits every histogram keeps: a value is recorded
/// within 0.1% of itself.
pub(crate) const SIGNIFICANT_DIGITS: u8 = 3;

/// A histogram of durations (an [HdrHistogram] of nanoseconds, three
/// significant digits): every percentile is within 0.1% of the recorded
/// value it stands for, from a nanosecond to hours.
///
/// Serialized (in [`ConcurrentSystem::metrics_json`]) as `{count, min_us,
/// mean_us, p50_us, p90_us, p99_us, p999_us, max_us, buckets_ns: [[upper_ns,
/// count], ...]}`, `buckets_ns` holding every non-empty bucket.
///
/// [HdrHistogram]: https://hdrhistogram.github.io/HdrHistogram/
/// [`ConcurrentSystem::metrics_json`]: crate::ConcurrentSystem::metrics_json
#[derive(Clone, PartialEq)]
pub struct Histogram {
    pub(crate) h: hdrhistogram::Histogram<u64>,
}

/// A summary, not the thousands of counters a histogram holds: `Stats` is
/// printed with `{:?}`.
impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Histogram");
        d.field("count", &self.count());
        if self.count() > 0 {
            d.field("mean", &self.mean())
                .field("p50", &self.percentile(0.5))
                .field("p99", &self.percentile(0.99))
                .field("max", &self.max());
        }
        d.finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { h: new_hdr() }
    }
}

/// An empty, self-resizing HdrHistogram with [`SIGNIFICANT_DIGITS`].
pub(crate) fn new_hdr() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new(SIGNIFICANT_DIGITS).expect("3 significant digits are valid")
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Histogram {
    /// Records one duration.
    pub fn record(&mut self, d: Duration) {
        // Self-resizing: only a value past u64 fails, and none is.
        let _ = self.h.record(nanos(d).max(1));
    }

    /// Adds every duration of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        // Self-resizing, so adding cannot fail.
        let _ = self.h.add(&other.h);
    }

    /// The number of recorded durations.
    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The duration at quantile `q` (0..=1): the smallest recorded value
    /// that `q` of all are at or below, within 0.1%; zero when nothing was
    /// recorded.
    pub fn percentile(&self, q: f64) -> Duration {
        if self.h.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.h.value_at_quantile(q.clamp(0.0, 1.0)))
    }

    /// The mean of the recorded durations (zero when none).
    pub fn mean(&self) -> Duration {
        Duration::from_secs_f64(self.h.mean() / 1e9)
    }

    /// The largest recorded duration, within 0.1% (zero when none).
    pub fn max(&self) -> Duration {
        Duration::from_nanos(if self.h.is_empty() { 0 } else { self.h.max() })
    }

    /// The sum of the recorded durations, within 0.1%.
    pub fn sum(&self) -> Duration {
        Duration::from_secs_f64(self.h.mean() * self.h.len() as f64 / 1e9)
    }

    /// The recorded durations at or below `upper`.
    pub fn count_at_or_below(&self, upper: Duration) -> u64 {
        if self.h.is_empty() {
            return 0;
        }
        self.h.count_between(0, nanos(upper))
    }

    /// `(upper bound, count)` for every non-empty bucket, smallest first;
    /// each bucket is 0.1% wide or less.
    pub fn buckets(&self) -> Vec<(Duration, u64)> {
        self.h
            .iter_recorded()
            .map(|v| {
                (
                    Duration::from_nanos(v.value_iterated_to()),
                    v.count_at_value(),
                )
            })
            .collect()
    }
}

impl serde::Serialize for Histogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Summary {
            count: u64,
            min_us: f64,
            mean_us: f64,
            p50_us: f64,
            p90_us: f64,
            p99_us: f64,
            p999_us: f64,
            max_us: f64,
            buckets_ns: Vec<(u64, u64)>,
        }
        let us = |d: Duration| d.as_nanos() as f64 / 1e3;
        let min = if self.h.is_empty() { 0 } else { self.h.min() };
        Summary {
            count: self.count(),
            min_us: min as f64 / 1e3,
            mean_us: us(self.mean()),
            p50_us: us(self.percentile(0.5)),
            p90_us: us(self.percentile(0.9)),
            p99_us: us(self.percentile(0.99)),
            p999_us: us(self.percentile(0.999)),
            max_us: us(self.max()),
            buckets_ns: self
                .buckets()
                .into_iter()
                .map(|(d, n)| (nanos(d), n))
                .collect(),
        }
        .serialize(s)
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
#[derive(Debug, Clone, Default, serde::Serialize)]
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

/// Serializes a duration as seconds (`f64`).
pub(crate) fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::Histogram;
    use std::time::Duration;

    #[test]
    fn debug_prints_a_summary_not_the_counters() {
        let mut h = Histogram::default();
        assert_eq!(format!("{h:?}"), "Histogram { count: 0 }");
        for us in [10, 20, 30, 40_000] {
            h.record(Duration::from_micros(us));
        }
        let s = format!("{h:?}");
        assert!(s.starts_with("Histogram { count: 4, mean: "), "{s}");
        assert!(s.contains("p99: 40.") && s.contains("max: 40."), "{s}");
        assert!(s.len() < 200, "{} bytes: {s}", s.len());
    }
}
