//! Workload 1, tiny-task throughput, shared by every subject. The same workload
//! as `shared/peers/rust/src/tiny.rs`, so the figures are comparable with
//! `shared/peers/RESULTS.md`:
//!
//! submit N no-op tasks that each return `i & 7`, wait for every result, sum them
//! and check the sum. The clock starts before the first submission and stops after
//! the last result is summed; pool construction and one warm-up repetition are
//! outside the measurement. Reported: the median ns/task over the repetitions.

use super::{measured_in_turns, note, Measurement, Scale, Subject};
use anyhow::{ensure, Context};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The metric name of this workload.
pub(crate) const METRIC: &str = "tiny_task_ns";

/// The task: a call the optimizer cannot see through, returning `i & 7`.
#[inline(never)]
pub(crate) fn task(i: u64) -> u64 {
    black_box(i) & 7
}

/// The sum a correct run of `n` tasks produces.
pub(crate) fn expected(n: usize) -> u64 {
    (0..n as u64).map(|i| i & 7).sum()
}

/// Tasks per repetition and number of measured repetitions for this scale.
pub(crate) fn size(scale: Scale) -> (usize, usize) {
    if scale.quick {
        (20_000, 3)
    } else {
        (200_000, 11)
    }
}

/// Runs one warm-up and the measured repetitions of `rep` (which returns the
/// elapsed time and the sum of `n` tasks), checks every sum, and reports the
/// median ns/task for `subject`.
pub(crate) fn measure(
    subject: &'static str,
    scale: Scale,
    rep: impl FnMut(usize) -> anyhow::Result<(Duration, u64)>,
) -> anyhow::Result<Measurement> {
    let mut m = measure_together(METRIC, scale, vec![(subject, Box::new(rep))])?;
    m.pop().context("no measurement")
}

/// One repetition of the workload for a subject: runs `n` tasks and
/// returns the elapsed time with the sum of their results.
pub(crate) type Rep<'a> = Box<dyn FnMut(usize) -> anyhow::Result<(Duration, u64)> + 'a>;

/// The workload under `metric` for several subjects whose repetitions take
/// turns ([`measured_in_turns`]): one warm-up of each, then the measured rounds;
/// every sum is checked. One measurement per subject, in their order.
pub(crate) fn measure_together(
    metric: &'static str,
    scale: Scale,
    subjects: Vec<(&'static str, Rep<'_>)>,
) -> anyhow::Result<Vec<Measurement>> {
    let (n, reps) = size(scale);
    let want = expected(n);
    let names: Vec<&'static str> = subjects.iter().map(|(s, _)| *s).collect();
    note(&format!(
        "{metric}: {}: N={n}, {} workers, 1 warm-up + {reps} reps{}",
        names.join(", "),
        scale.workers,
        if names.len() > 1 {
            ", taking turns"
        } else {
            ""
        }
    ));
    let timed: Vec<Subject<'_>> = subjects
        .into_iter()
        .map(|(subject, mut rep)| -> Subject<'_> {
            let per_task = move || {
                let (t, s) = rep(n)?;
                ensure!(s == want, "{subject}: wrong sum: {s} != {want}");
                Ok(t.as_secs_f64() * 1e9 / n as f64)
            };
            (subject, Box::new(per_task))
        })
        .collect();
    measured_in_turns("threads", metric, "ns", reps, timed)
}

/// A countdown latch with an atomic sum, for peers whose spawn returns no handle
/// (rayon): each task adds its result and counts down; the submitter waits.
#[derive(Debug)]
pub(crate) struct Latch {
    sum: AtomicU64,
    left: AtomicUsize,
    done: Mutex<bool>,
    cv: Condvar,
}

impl Latch {
    /// A latch that opens after `n` completions.
    pub(crate) fn new(n: usize) -> Arc<Latch> {
        Arc::new(Latch {
            sum: AtomicU64::new(0),
            left: AtomicUsize::new(n),
            done: Mutex::new(n == 0),
            cv: Condvar::new(),
        })
    }

    /// Records one task's result.
    pub(crate) fn complete(&self, v: u64) {
        self.sum.fetch_add(v, Ordering::Relaxed);
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
            self.cv.notify_all();
        }
    }

    /// Blocks until every task completed; returns the sum.
    pub(crate) fn wait(&self) -> u64 {
        let mut g = self.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*g {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        self.sum.load(Ordering::Acquire)
    }
}

/// Times `f` (which returns a sum) and returns the elapsed time with the sum.
pub(crate) fn timed(f: impl FnOnce() -> anyhow::Result<u64>) -> anyhow::Result<(Duration, u64)> {
    let t = Instant::now();
    let s = f()?;
    Ok((t.elapsed(), s))
}
