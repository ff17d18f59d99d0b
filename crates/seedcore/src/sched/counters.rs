//! The scheduler's live counters and histograms, sharded so that the hot
//! path never bounces one cache line between the submitter and the
//! workers; [`Counters::snapshot`] turns them into the public [`Stats`].
//!
//! The histograms are HdrHistograms, one set per shard behind a lock that
//! only the shard's threads and the (rare) snapshot take: recording is an
//! uncontended lock and an index computation, and a snapshot merges the
//! shards. Each histogram is made at its row's first value and grows with
//! the range of values seen, so rows never used cost nothing.

use super::registry::MAX_EXECUTORS;
use crate::error::TaskErrorKind;
use crate::options::{Priority, LEVELS};
use crate::snapshot::Stats;
use crate::snapshot::{new_hdr, Histogram};
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

const SHARDS: usize = 16;
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
    hists: Mutex<Hists>,
}

type Hdr = hdrhistogram::Histogram<u64>;

/// One shard's histograms, by row, in nanoseconds.
#[derive(Default)]
struct Hists {
    queue_wait: [Option<Box<Hdr>>; ROWS],
    run_time: [Option<Box<Hdr>>; ROWS],
}

/// Records `d` in `slot`, making its histogram at the first value.
fn record(slot: &mut Option<Box<Hdr>>, d: Duration) {
    let h = slot.get_or_insert_with(|| Box::new(new_hdr()));
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
    // Self-resizing: recording cannot fail for a u64.
    let _ = h.record(ns);
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
            record(&mut s.hists.lock().queue_wait[row], w);
        }
    }

    /// An attempt ended after running `ran`.
    pub(crate) fn attempt_ended(&self, slot: u8, p: Priority, ran: Duration) {
        let row = p.level() as usize;
        let s = self.local();
        bump(&s.attempts_ended);
        bump(&s.exec_ended[slot as usize]);
        record(&mut s.hists.lock().run_time[row], ran);
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
            // Out of GPU memory is a failure of the task's resources.
            Err(TaskErrorKind::Failed | TaskErrorKind::GpuMemory) => &s.failed,
            Err(TaskErrorKind::Panicked) => &s.panicked,
            Err(TaskErrorKind::TimedOut) => &s.timed_out,
            Err(TaskErrorKind::Cancelled) => &s.cancelled,
            Err(TaskErrorKind::LockTimeout) => &s.lock_timeouts,
            Err(TaskErrorKind::SystemShutdown) => &s.shutdown,
            // A pool that cannot start workers counts with their deaths.
            Err(TaskErrorKind::WorkerDied | TaskErrorKind::PoolBroken) => &s.worker_died,
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
        let mut qw: [Histogram; ROWS] = Default::default();
        let mut rt: [Histogram; ROWS] = Default::default();
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
            let hists = s.hists.lock();
            for r in 0..ROWS {
                // Self-resizing, so adding cannot fail.
                if let Some(h) = &hists.queue_wait[r] {
                    let _ = qw[r].h.add(&**h);
                }
                if let Some(h) = &hists.run_time[r] {
                    let _ = rt[r].h.add(&**h);
                }
            }
        }
        st.attempts = a_start - undone;
        st.running = a_start.saturating_sub(a_end);
        let total = |rows: &[Histogram]| {
            let mut all = Histogram::default();
            for h in rows {
                all.merge(h);
            }
            all
        };
        st.queue_wait = total(&qw);
        st.run_time = total(&rt);
        st.queue_wait_by_priority = qw[..LEVELS].to_vec();
        st.run_time_by_priority = rt[..LEVELS].to_vec();
        st
    }
}
