//! Suite `threads`: the seedcore thread pool against rayon and tokio.
//!
//! Metrics:
//! - `tiny_task_ns` (subjects `seedcore`, `rayon_spawn`, `tokio_spawn`,
//!   `tokio_spawn_blocking`): the tiny-task workload of [`super::tiny`]; seedcore
//!   submits with `submit_thread` and default options, keeps every `TaskFuture`
//!   and waits on each in order.
//! - `async_task_ns` (subjects `seedcore`, `tokio_spawn`): the same workload
//!   as async tasks: seedcore submits with `submit_async` (default options)
//!   from the main thread and waits on each `TaskFuture` in order; tokio
//!   spawns each async block with `Handle::spawn` and awaits each
//!   `JoinHandle`. Both runtimes have `cores` worker threads.
//! - `priority_latency_us` (subject `seedcore`): the queue holds a backlog of
//!   low-priority tasks that each spin about 10 µs; one high-priority task is then
//!   submitted and records when it starts. Latency = start − submit. With a strict
//!   priority queue this is at most one backlog task's length plus the wake-up,
//!   whatever the backlog; a FIFO pool would need backlog × 10 µs / cores.
//!   The measuring thread is off the CPU around the measured window (it
//!   sleeps 2 ms after queueing the backlog, and waits for the result
//!   without spinning), so that on a machine with as many cores as workers
//!   it does not take a core from the workers it measures.
//! - `queued_task_bytes` (subjects `seedcore`, `rayon_spawn`, `tokio_spawn`,
//!   `tokio_spawn_blocking`): the heap bytes one queued no-op task holds,
//!   workload of [`super::queued`]; seedcore queues `submit_thread` tasks
//!   with default options behind `cores` gated workers. Lower is better.
//! - `scope_us` (subjects `seedcore`, `rayon_scope`) and `join_tree_us`
//!   (subjects `seedcore`, `seedcore_in_task`, `rayon_join`): work that borrows from the stack,
//!   workloads of [`super::scoped`].

use super::queued::{self, Gate};
use super::report::median;
use super::scoped;
use super::tiny::{self, task, timed};
use super::{note, peers, Measurement, Scale};
use anyhow::Context;
use seedcore::{
    ConcurrentSystem, Priority, ShutdownMode, SubmitError, TaskContext, TaskFuture, TaskOptions,
};
use std::time::{Duration, Instant};

/// Runs every subject of the suite, in the order of the report. Subjects
/// compared by a ratio take turns ([`super::interleaved`]).
pub(crate) fn run(scale: Scale) -> anyhow::Result<Vec<Measurement>> {
    let mut out = Vec::new();
    {
        let sys = system(scale)?;
        let pool = peers::rayon_pool(scale)?;
        let rt = peers::tokio_runtime(scale)?;
        out.extend(tiny::measure_together(
            tiny::METRIC,
            scale,
            vec![
                ("seedcore", seedcore_tiny(&sys)),
                ("rayon_spawn", peers::rayon_spawn(&pool)),
                ("tokio_spawn", peers::tokio_spawn(&rt)),
            ],
        )?);
        sys.shutdown(ShutdownMode::Graceful);
    }
    out.push(peers::tokio_spawn_blocking(scale)?);
    {
        let sys = system(scale)?;
        let rt = peers::tokio_runtime(scale)?;
        out.extend(tiny::measure_together(
            ASYNC_METRIC,
            scale,
            vec![
                ("seedcore", seedcore_async(&sys)),
                ("tokio_spawn", peers::tokio_spawn(&rt)),
            ],
        )?);
        sys.shutdown(ShutdownMode::Graceful);
    }
    out.push(seedcore_priority_latency(scale)?);
    out.extend([
        seedcore_queued(scale)?,
        peers::rayon_queued(scale)?,
        peers::tokio_queued(scale)?,
        peers::tokio_blocking_queued(scale)?,
    ]);
    out.extend(scoped::scope(scale)?);
    out.extend(scoped::join(scale)?);
    Ok(out)
}

/// A seedcore system whose thread pool (and async runtime) has exactly
/// `cores` threads.
pub(super) fn system(scale: Scale) -> anyhow::Result<ConcurrentSystem> {
    ConcurrentSystem::builder()
        .core_threads(scale.workers)
        .max_threads(scale.workers)
        .async_threads(scale.workers)
        .build()
        .context("building the seedcore system")
}

/// One repetition of the tiny-task workload on `sys`: `submit` submits
/// task `i`, then every future is waited on in order.
fn seedcore_rep<'a>(
    sys: &'a ConcurrentSystem,
    submit: impl Fn(&ConcurrentSystem, u64) -> Result<TaskFuture<u64>, SubmitError> + 'a,
) -> tiny::Rep<'a> {
    Box::new(move |n| {
        timed(|| {
            let mut fs = Vec::with_capacity(n);
            for i in 0..n as u64 {
                fs.push(submit(sys, i)?);
            }
            let mut s = 0u64;
            for f in fs {
                s += f.wait()?;
            }
            Ok(s)
        })
    })
}

/// Tiny-task throughput of `submit_thread` + `TaskFuture::wait`.
fn seedcore_tiny(sys: &ConcurrentSystem) -> tiny::Rep<'_> {
    seedcore_rep(sys, |sys, i| {
        sys.submit_thread(TaskOptions::new(), move |_: &TaskContext| task(i))
    })
}

/// The metric of the tiny-task workload run as async tasks.
const ASYNC_METRIC: &str = "async_task_ns";

/// Tiny-task throughput of `submit_async` + `TaskFuture::wait`.
fn seedcore_async(sys: &ConcurrentSystem) -> tiny::Rep<'_> {
    seedcore_rep(sys, |sys, i| {
        sys.submit_async(TaskOptions::new(), move |_| async move { task(i) })
    })
}

/// How long each backlog task spins.
const SPIN: Duration = Duration::from_micros(10);

/// Busy-waits for `d` (a CPU-bound task of known length).
fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Start latency of one high-priority task behind a low-priority backlog.
fn seedcore_priority_latency(scale: Scale) -> anyhow::Result<Measurement> {
    let (backlog, reps) = if scale.quick {
        (10_000, 3)
    } else {
        (20_000, 15)
    };
    note(&format!(
        "priority_latency_us: seedcore: backlog {backlog} x {} us spin, {} workers, {reps} reps",
        SPIN.as_micros(),
        scale.workers
    ));
    let sys = system(scale)?;
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let low = TaskOptions::new().priority(Priority::LOW);
        let mut fs = Vec::with_capacity(backlog);
        for _ in 0..backlog {
            fs.push(sys.submit_thread(low.clone(), |_: &TaskContext| spin(SPIN))?);
        }
        // Both workers are now in the backlog, and this thread leaves them
        // the cores.
        std::thread::sleep(Duration::from_millis(2));
        let submitted = Instant::now();
        let high = sys.submit_thread(
            TaskOptions::new().priority(Priority::HIGH),
            |_: &TaskContext| Instant::now(),
        )?;
        let started = match high.wait_timeout(Duration::from_secs(60)) {
            Ok(started) => started?,
            Err(_) => anyhow::bail!(
                "priority_latency_us: the high-priority task did not start within 60 s"
            ),
        };
        let latency = started.saturating_duration_since(submitted);
        let mut left_behind = 0usize;
        for f in fs {
            // Cancel what has not started: its run time is not what we measure.
            if !f.cancel() {
                left_behind += 1;
            }
            let _ = f.wait();
        }
        if left_behind == backlog {
            note("priority_latency_us: the whole backlog had run before the high-priority task: this repetition measured no queue");
        }
        samples.push(latency.as_secs_f64() * 1e6);
    }
    sys.shutdown(ShutdownMode::Graceful);
    Ok(Measurement {
        suite: "threads",
        metric: "priority_latency_us",
        subject: "seedcore",
        value: median(&samples),
        unit: "us",
        samples,
    })
}

/// Heap bytes of one queued `submit_thread` no-op, behind `cores` gated
/// workers of a fresh system.
fn seedcore_queued(scale: Scale) -> anyhow::Result<Measurement> {
    queued::measure("seedcore", scale, |n| {
        let sys = system(scale)?;
        let gate = Gate::new();
        let _open = gate.open_on_drop();
        let held = gate.hold_workers(scale.workers, |g| {
            Ok(sys.submit_thread(TaskOptions::new(), move |_: &TaskContext| g.hold())?)
        })?;
        let (bytes, fs) = queued::count(&gate, n, || {
            Ok(sys.submit_thread(TaskOptions::new(), |_: &TaskContext| ())?)
        })?;
        for f in held.into_iter().chain(fs) {
            f.wait()?;
        }
        sys.shutdown(ShutdownMode::Graceful);
        Ok(bytes)
    })
}
