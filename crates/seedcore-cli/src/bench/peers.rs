//! The peers of the thread pool, run on the tiny-task workload ([`super::tiny`]):
//! rayon and tokio, linked into this binary, each with as many workers as cores.
//!
//! | subject | what is timed |
//! | --- | --- |
//! | `rayon_spawn` | `ThreadPool::spawn` of N closures into a pool of `cores` threads, an atomic latch the submitter waits on |
//! | `tokio_spawn` | `Handle::spawn` of N async blocks from the main thread on a multi-thread runtime of `cores` workers, then `block_on` awaiting each `JoinHandle` |
//! | `tokio_spawn_blocking` | `spawn_blocking` of N closures from inside `block_on`, default `max_blocking_threads` (512), awaiting each handle |
//!
//! The same subjects on the queued-task memory workload ([`super::queued`],
//! `queued_task_bytes`), each on a fresh pool of `cores` threads whose every
//! thread is held in the gate by a blocking task:
//!
//! | subject | what is queued and counted |
//! | --- | --- |
//! | `rayon_spawn` | N `ThreadPool::spawn` closures that each count one completion in a static counter (a closure with no captures), waited on by polling it |
//! | `tokio_spawn` | N `Handle::spawn(async {})` from the main thread; the gate tasks are async tasks that block their worker thread; each `JoinHandle` is awaited |
//! | `tokio_spawn_blocking` | N `spawn_blocking(\|\| {})` from the main thread with `max_blocking_threads(cores)`, every blocking thread held in the gate; each handle is awaited |

use super::queued::{self, Gate};
use super::tiny::{self, task, timed, Latch};
use super::{Measurement, Scale};
use anyhow::Context;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A rayon pool of `cores` threads.
pub(crate) fn rayon_pool(scale: Scale) -> anyhow::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(scale.workers)
        .thread_name(|i| format!("rayon-bench-{i}"))
        .build()
        .context("building the rayon pool")
}

/// One repetition of `rayon_spawn`: `ThreadPool::spawn` with an atomic latch.
pub(crate) fn rayon_spawn(pool: &rayon::ThreadPool) -> tiny::Rep<'_> {
    Box::new(move |n| {
        timed(|| {
            let latch = Latch::new(n);
            for i in 0..n as u64 {
                let l = latch.clone();
                pool.spawn(move || l.complete(task(i)));
            }
            Ok(latch.wait())
        })
    })
}

/// A tokio multi-thread runtime with `cores` workers.
pub(crate) fn tokio_runtime(scale: Scale) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio_builder(scale)
        .build()
        .context("building the tokio runtime")
}

/// The builder of [`tokio_runtime`], for settings on top.
fn tokio_builder(scale: Scale) -> tokio::runtime::Builder {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(scale.workers).thread_name("tokio-bench");
    b
}

/// One repetition of `tokio_spawn`: `Handle::spawn` from the main thread,
/// then await every `JoinHandle` (the peer of seedcore's thread tasks, and
/// of its async tasks under `async_task_ns`).
pub(crate) fn tokio_spawn(rt: &tokio::runtime::Runtime) -> tiny::Rep<'_> {
    let handle = rt.handle().clone();
    Box::new(move |n| {
        timed(|| {
            let mut hs = Vec::with_capacity(n);
            for i in 0..n as u64 {
                hs.push(handle.spawn(async move { task(i) }));
            }
            rt.block_on(async move {
                let mut s = 0u64;
                for h in hs {
                    s += h.await.context("tokio task failed")?;
                }
                Ok(s)
            })
        })
    })
}

/// `tokio::task::spawn_blocking` with the default blocking-pool cap (512).
pub(crate) fn tokio_spawn_blocking(scale: Scale) -> anyhow::Result<Measurement> {
    let rt = tokio_runtime(scale)?;
    tiny::measure("tokio_spawn_blocking", scale, |n| {
        timed(|| {
            rt.block_on(async move {
                let mut hs = Vec::with_capacity(n);
                for i in 0..n as u64 {
                    hs.push(tokio::task::spawn_blocking(move || task(i)));
                }
                let mut s = 0u64;
                for h in hs {
                    s += h.await.context("tokio blocking task failed")?;
                }
                Ok(s)
            })
        })
    })
}

/// Heap bytes of one queued `ThreadPool::spawn` closure, behind `cores`
/// gated pool threads.
pub(crate) fn rayon_queued(scale: Scale) -> anyhow::Result<Measurement> {
    /// Completions of the queued closures: a static, so that they capture
    /// nothing, like the other subjects' no-op tasks.
    static DONE: AtomicUsize = AtomicUsize::new(0);
    queued::measure("rayon_spawn", scale, |n| {
        let pool = rayon_pool(scale)?;
        let gate = Gate::new();
        let _open = gate.open_on_drop();
        gate.hold_workers(scale.workers, |g| {
            pool.spawn(move || g.hold());
            Ok(())
        })?;
        DONE.store(0, Ordering::Relaxed);
        let (bytes, _) = queued::count(&gate, n, || {
            pool.spawn(|| {
                DONE.fetch_add(1, Ordering::Relaxed);
            });
            Ok(())
        })?;
        queued::wait_until("rayon_spawn", || DONE.load(Ordering::Relaxed) == n)?;
        Ok(bytes)
    })
}

/// Heap bytes of one queued `Handle::spawn(async {})`, behind `cores` worker
/// threads each blocked in the gate by an async task.
pub(crate) fn tokio_queued(scale: Scale) -> anyhow::Result<Measurement> {
    queued::measure("tokio_spawn", scale, |n| {
        let rt = tokio_runtime(scale)?;
        let gate = Gate::new();
        let _open = gate.open_on_drop();
        // Blocks the worker thread: what the gate is for.
        let held = gate.hold_workers(scale.workers, |g| Ok(rt.spawn(async move { g.hold() })))?;
        let (bytes, hs) = queued::count(&gate, n, || Ok(rt.spawn(async {})))?;
        await_all(&rt, held.into_iter().chain(hs), "tokio task failed")?;
        Ok(bytes)
    })
}

/// Heap bytes of one queued `spawn_blocking(|| {})`, behind a blocking pool
/// of `cores` threads each held in the gate.
pub(crate) fn tokio_blocking_queued(scale: Scale) -> anyhow::Result<Measurement> {
    queued::measure("tokio_spawn_blocking", scale, |n| {
        let rt = tokio_builder(scale)
            .max_blocking_threads(scale.workers)
            .build()
            .context("building the tokio runtime")?;
        let gate = Gate::new();
        let _open = gate.open_on_drop();
        let held = gate.hold_workers(scale.workers, |g| Ok(rt.spawn_blocking(move || g.hold())))?;
        let (bytes, hs) = queued::count(&gate, n, || Ok(rt.spawn_blocking(|| {})))?;
        await_all(
            &rt,
            held.into_iter().chain(hs),
            "tokio blocking task failed",
        )?;
        Ok(bytes)
    })
}

/// Waits on every handle in `hs` on `rt`; `what` names a failure.
fn await_all(
    rt: &tokio::runtime::Runtime,
    hs: impl IntoIterator<Item = tokio::task::JoinHandle<()>>,
    what: &'static str,
) -> anyhow::Result<()> {
    rt.block_on(async move {
        for h in hs {
            h.await.context(what)?;
        }
        anyhow::Ok(())
    })
}
