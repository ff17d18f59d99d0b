//! The peers of the thread pool, run on the tiny-task workload ([`super::tiny`]):
//! rayon and tokio, linked into this binary, each with as many workers as cores.
//!
//! | subject | what is timed |
//! | --- | --- |
//! | `rayon_spawn` | `ThreadPool::spawn` of N closures into a pool of `cores` threads, an atomic latch the submitter waits on |
//! | `tokio_spawn` | `Handle::spawn` of N async blocks from the main thread on a multi-thread runtime of `cores` workers, then `block_on` awaiting each `JoinHandle` |
//! | `tokio_spawn_blocking` | `spawn_blocking` of N closures from inside `block_on`, default `max_blocking_threads` (512), awaiting each handle |

use super::tiny::{self, task, timed, Latch};
use super::{Measurement, Scale};
use anyhow::Context;

/// `rayon::ThreadPool::spawn` with an atomic latch.
pub(crate) fn rayon_spawn(scale: Scale) -> anyhow::Result<Measurement> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(scale.workers)
        .thread_name(|i| format!("rayon-bench-{i}"))
        .build()
        .context("building the rayon pool")?;
    tiny::measure("rayon_spawn", scale, |n| {
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
fn tokio_runtime(scale: Scale) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(scale.workers)
        .thread_name("tokio-bench")
        .build()
        .context("building the tokio runtime")
}

/// `Handle::spawn` from the main thread, then await every `JoinHandle`.
pub(crate) fn tokio_spawn(scale: Scale) -> anyhow::Result<Measurement> {
    tokio_spawn_as(tiny::METRIC, scale)
}

/// [`tokio_spawn`] reported under `metric` (`async_task_ns`: the peer of
/// seedcore's async tasks).
pub(crate) fn tokio_spawn_as(metric: &'static str, scale: Scale) -> anyhow::Result<Measurement> {
    let rt = tokio_runtime(scale)?;
    let handle = rt.handle().clone();
    tiny::measure_as(metric, "tokio_spawn", scale, |n| {
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
