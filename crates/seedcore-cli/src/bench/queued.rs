//! Workload 2, the memory of a queued task (`queued_task_bytes`), shared by
//! every subject:
//!
//! every worker of a fresh pool is first held by a task that blocks in a
//! [`Gate`]; once all of them are inside, the heap's live bytes are read
//! ([`crate::counting_alloc::live_bytes`]: what mimalloc reserves, size
//! classes included), N no-op tasks are submitted, and the live bytes are
//! read again. None of the N can run in between, so the growth is what N
//! queued tasks hold: their records, their handles' shared state, and the
//! queue's own storage as it grows. Reported: growth / N, the median over the
//! repetitions. Then the gate opens and every task is waited on.
//!
//! The handles the caller keeps (`TaskFuture`, `JoinHandle`) go into a `Vec`
//! allocated with capacity N before the first reading, so their storage in
//! the caller counts for no subject. Each repetition builds its pool anew,
//! so a queue's storage grown by an earlier one is not carried over.

use super::{note, Measurement, Scale};
use crate::counting_alloc::{live_bytes, Counting};
use anyhow::{bail, ensure};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The metric name of this workload.
pub(crate) const METRIC: &str = "queued_task_bytes";

/// How long the workers may take to all be inside the gate, or the tasks to
/// finish once it opens, before the run is an error rather than a hang.
const PATIENCE: Duration = Duration::from_secs(60);

/// Tasks queued per repetition and number of repetitions for this scale.
fn size(scale: Scale) -> (usize, usize) {
    if scale.quick {
        (10_000, 3)
    } else {
        (100_000, 3)
    }
}

/// Holds tasks that enter it until the measuring thread opens it.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// How many tasks are inside, and whether it is open.
    state: Mutex<(usize, bool)>,
    /// Signalled on every entry and on opening.
    cv: Condvar,
}

impl Gate {
    /// A closed gate.
    pub(crate) fn new() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    /// Enters the gate and blocks the calling thread until it opens.
    pub(crate) fn hold(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        self.cv.notify_all();
        while !g.1 {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks until `n` tasks are inside; an error after [`PATIENCE`] (a
    /// pool that did not give each gate task a thread of its own). Opens the
    /// gate before failing, so the tasks inside can finish.
    pub(crate) fn wait_inside(&self, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while g.0 < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let inside = g.0;
                drop(g);
                self.open();
                bail!("only {inside} of {n} workers entered the gate");
            }
            g = self
                .cv
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    /// Holds `workers` pool threads in the gate: `spawn` submits one task
    /// that enters it; returns their handles once every one is inside.
    pub(crate) fn hold_workers<H>(
        self: &Arc<Gate>,
        workers: usize,
        mut spawn: impl FnMut(Arc<Gate>) -> anyhow::Result<H>,
    ) -> anyhow::Result<Vec<H>> {
        let held = (0..workers)
            .map(|_| spawn(self.clone()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.wait_inside(workers)?;
        Ok(held)
    }

    /// Opens the gate: every task inside returns.
    pub(crate) fn open(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.cv.notify_all();
    }

    /// A guard that opens the gate when dropped: declared after the pool, it
    /// opens before the pool is dropped on an early return, so the pool's
    /// shutdown does not wait on tasks held forever.
    pub(crate) fn open_on_drop(self: &Arc<Gate>) -> OpenOnDrop {
        OpenOnDrop(Arc::clone(self))
    }
}

/// Opens its gate when dropped ([`Gate::open_on_drop`]).
#[derive(Debug)]
pub(crate) struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Waits until `done()` holds, polling (for peers whose spawn returns no
/// handle); an error after [`PATIENCE`].
pub(crate) fn wait_until(what: &str, done: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        ensure!(
            Instant::now() < deadline,
            "{what}: tasks still queued after {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Submits `n` tasks with `submit` (every worker already held in `gate`),
/// then opens the gate; returns the live-bytes growth per task with the
/// handles, for the caller to wait on.
pub(crate) fn count<H>(
    gate: &Gate,
    n: usize,
    mut submit: impl FnMut() -> anyhow::Result<H>,
) -> anyhow::Result<(f64, Vec<H>)> {
    let mut handles = Vec::with_capacity(n);
    let counting = Counting::start();
    let before = live_bytes();
    for _ in 0..n {
        match submit() {
            Ok(h) => handles.push(h),
            Err(e) => {
                gate.open();
                return Err(e);
            }
        }
    }
    let after = live_bytes();
    drop(counting);
    gate.open();
    Ok(((after - before) as f64 / n as f64, handles))
}

/// Runs the repetitions of `rep` (which builds a pool, queues `n` tasks
/// behind a gate and returns [`count`]'s bytes per task, after every task
/// finished) and reports the median for `subject`.
pub(crate) fn measure(
    subject: &'static str,
    scale: Scale,
    mut rep: impl FnMut(usize) -> anyhow::Result<f64>,
) -> anyhow::Result<Measurement> {
    let (n, reps) = size(scale);
    note(&format!(
        "{METRIC}: {subject}: N={n} queued behind {} gated workers, {reps} reps",
        scale.workers
    ));
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        samples.push(rep(n)?);
    }
    Ok(Measurement::of(
        "threads", METRIC, subject, "bytes", samples,
    ))
}
