//! Counters and histograms of the scheduler, sharded so that the hot path
//! never bounces one cache line between the submitter and the workers.

use crate::balance::BalanceEvent;
use crate::error::TaskErrorKind;
use crate::options::{Priority, LEVELS};
use crate::sched::{ExecutorStats, MAX_EXECUTORS};
use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

const SHARDS: usize = 16;
/// Histogram buckets: bucket `i` counts durations in `[2^(i-1), 2^i)` µs
/// (bucket 0: under 1 µs); the last one is open-ended.
const BUCKETS: usize = 32;
/// Histogram rows: one per priority level, and a last one for attempts
/// recorded without their priority.
const ROWS: usize = LEVELS + 1;

#[derive(Default)]
struct Shard {
    submitted: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    timed_out: AtomicU64,
    cancelled: AtomicU64,
    lock_timeouts: AtomicU64,
    shutdown: AtomicU64,
    worker_died: AtomicU64,
    memory_limit: AtomicU64,
    retried: AtomicU64,
    attempts_undone: AtomicU64,
    attempts_started: AtomicU64,
    attempts_ended: AtomicU64,
    /// Attempts started and ended per executor slot.
    exec_started: [AtomicU64; MAX_EXECUTORS],
    exec_ended: [AtomicU64; MAX_EXECUTORS],
    callback_panics: AtomicU64,
    queue_wait: [[AtomicU64; BUCKETS]; ROWS],
    run_time: [[AtomicU64; BUCKETS]; ROWS],
}

/// The live counters of one system.
pub(crate) struct Counters {
    shards: Box<[CachePadded<Shard>]>,
}

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

fn shard_index() -> usize {
    SHARD.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(i);
        }
        i
    })
}

fn bucket(d: Duration) -> usize {
    let us = d.as_micros() as u64;
    ((64 - us.leading_zeros()) as usize).min(BUCKETS - 1)
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn new() -> Self {
        Counters {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Shard::default()))
                .collect(),
        }
    }

    fn local(&self) -> &Shard {
        &self.shards[shard_index()]
    }

    pub(crate) fn submitted(&self) {
        bump(&self.local().submitted);
    }

    pub(crate) fn retried(&self) {
        bump(&self.local().retried);
    }

    /// An attempt was begun for a worker that died before starting it; it
    /// does not count.
    pub(crate) fn attempt_undone(&self, slot: u8) {
        let s = self.local();
        bump(&s.attempts_undone);
        bump(&s.attempts_ended);
        bump(&s.exec_ended[slot as usize]);
    }

    pub(crate) fn callback_panicked(&self) {
        bump(&self.local().callback_panics);
    }

    /// An attempt started; `p` picks the per-priority histogram row.
    pub(crate) fn attempt_started(&self, slot: u8, p: Priority, queue_wait: Option<Duration>) {
        let row = p.level() as usize;
        let s = self.local();
        bump(&s.attempts_started);
        bump(&s.exec_started[slot as usize]);
        if let Some(w) = queue_wait {
            bump(&s.queue_wait[row][bucket(w)]);
        }
    }

    /// An attempt ended after running `ran`.
    pub(crate) fn attempt_ended(&self, slot: u8, p: Priority, ran: Duration) {
        let row = p.level() as usize;
        let s = self.local();
        bump(&s.attempts_ended);
        bump(&s.exec_ended[slot as usize]);
        bump(&s.run_time[row][bucket(ran)]);
    }

    /// Attempts running on the executor in `slot` (the balancer reads it
    /// every sample; cheaper than a snapshot).
    pub(crate) fn running(&self, slot: u8) -> usize {
        let (mut started, mut ended) = (0u64, 0u64);
        for s in self.shards.iter() {
            started += s.exec_started[slot as usize].load(Ordering::Relaxed);
            ended += s.exec_ended[slot as usize].load(Ordering::Relaxed);
        }
        started.saturating_sub(ended) as usize
    }

    /// Counts a task's final outcome (called once per task, by the winner
    /// of its completion).
    pub(crate) fn resolved(&self, outcome: Result<(), TaskErrorKind>) {
        let s = self.local();
        bump(match outcome {
            Ok(()) => &s.succeeded,
            Err(TaskErrorKind::Failed) => &s.failed,
            Err(TaskErrorKind::Panicked) => &s.panicked,
            Err(TaskErrorKind::TimedOut) => &s.timed_out,
            Err(TaskErrorKind::Cancelled) => &s.cancelled,
            Err(TaskErrorKind::LockTimeout) => &s.lock_timeouts,
            Err(TaskErrorKind::SystemShutdown) => &s.shutdown,
            Err(TaskErrorKind::WorkerDied) => &s.worker_died,
            Err(TaskErrorKind::MemoryLimit) => &s.memory_limit,
        });
    }

    /// Tasks accepted and not yet resolved.
    pub(crate) fn pending(&self) -> u64 {
        let mut submitted = 0u64;
        let mut resolved = 0u64;
        for s in self.shards.iter() {
            submitted += s.submitted.load(Ordering::Acquire);
            resolved += [
                &s.succeeded,
                &s.failed,
                &s.panicked,
                &s.timed_out,
                &s.cancelled,
                &s.lock_timeouts,
                &s.shutdown,
                &s.worker_died,
                &s.memory_limit,
            ]
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .sum::<u64>();
        }
        submitted.saturating_sub(resolved)
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let mut st = Stats::default();
        let mut qw = [[0u64; BUCKETS]; ROWS];
        let mut rt = [[0u64; BUCKETS]; ROWS];
        let (mut a_start, mut a_end, mut undone) = (0u64, 0u64, 0u64);
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for s in self.shards.iter() {
            st.submitted += ld(&s.submitted);
            st.completed += ld(&s.succeeded);
            st.failed += ld(&s.failed);
            st.panicked += ld(&s.panicked);
            st.timed_out += ld(&s.timed_out);
            st.cancelled += ld(&s.cancelled);
            st.lock_timeouts += ld(&s.lock_timeouts);
            st.shutdown += ld(&s.shutdown);
            st.worker_died += ld(&s.worker_died);
            st.memory_limit += ld(&s.memory_limit);
            undone += ld(&s.attempts_undone);
            st.retried += ld(&s.retried);
            st.callback_panics += ld(&s.callback_panics);
            a_start += ld(&s.attempts_started);
            a_end += ld(&s.attempts_ended);
            for r in 0..ROWS {
                for i in 0..BUCKETS {
                    qw[r][i] += ld(&s.queue_wait[r][i]);
                    rt[r][i] += ld(&s.run_time[r][i]);
                }
            }
        }
        st.attempts = a_start - undone;
        st.running = a_start.saturating_sub(a_end);
        let total = |rows: &[[u64; BUCKETS]; ROWS]| Histogram {
            buckets: std::array::from_fn(|i| rows.iter().map(|r| r[i]).sum()),
        };
        st.queue_wait = total(&qw);
        st.run_time = total(&rt);
        st.queue_wait_by_priority = qw[..LEVELS]
            .iter()
            .map(|&buckets| Histogram { buckets })
            .collect();
        st.run_time_by_priority = rt[..LEVELS]
            .iter()
            .map(|&buckets| Histogram { buckets })
            .collect();
        st
    }
}

/// A histogram of durations with power-of-two microsecond buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    buckets: [u64; BUCKETS],
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
    /// Tasks resolved because their worker process died.
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
