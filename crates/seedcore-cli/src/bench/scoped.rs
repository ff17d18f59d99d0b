//! Scoped work against rayon's, in the `threads` suite: work that borrows
//! from the caller's stack.
//!
//! - `scope_us` (subjects `seedcore`, `rayon_scope`): one scope, opened on
//!   the main thread, spawns `4 × cores` tiny tasks that each write their
//!   result into their own element of a borrowed `Vec`, and waits for none
//!   of them itself: the scope's end waits. Timed: the whole scope, per
//!   scope, over `SCOPES` scopes in a row; the results are checked.
//! - `join_tree_us` (subjects `seedcore`, `rayon_join`): a recursive sum
//!   of `0..2^20` split in halves by `join` down to leaves of 4,096 values
//!   (255 joins per tree), started from the main thread (rayon's inside
//!   `ThreadPool::install`); subject `seedcore_in_task` starts it in a
//!   thread task instead, so that every closure runs on the pool's
//!   threads as rayon's do. Timed: one tree; the sum is checked.
//!
//! The subjects of a metric take turns, one repetition each
//! ([`interleaved`](super::interleaved)). Reported: the median over the repetitions. Lower is
//! better.

use super::peers::rayon_pool;
use super::threads::system;
use super::tiny::task;
use super::{measured_in_turns, note, Measurement, Scale, Subject};
use anyhow::ensure;
use seedcore::{ConcurrentSystem, ShutdownMode, TaskOptions};
use std::hint::black_box;
use std::time::Instant;

const SUITE: &str = "threads";
const SCOPE_METRIC: &str = "scope_us";
const JOIN_METRIC: &str = "join_tree_us";
/// Scopes timed in a row per repetition.
const SCOPES: usize = 200;
/// The values a join tree sums, and the size of its leaves.
const TREE: u64 = 1 << 20;
const LEAF: u64 = 4_096;

/// Measured repetitions for this scale.
fn reps(scale: Scale) -> usize {
    if scale.quick {
        3
    } else {
        11
    }
}

/// The sum of `0..TREE` through [`task`] (each value `& 7`).
fn tree_sum() -> u64 {
    (0..TREE).map(|i| i & 7).sum()
}

/// One leaf: the values `lo..hi` through [`task`].
fn leaf(lo: u64, hi: u64) -> u64 {
    (lo..hi).map(task).sum()
}

/// The subjects of `metric`, their repetitions taking turns
/// ([`interleaved`](super::interleaved)); each repetition returns µs.
fn measure_together(
    metric: &'static str,
    scale: Scale,
    subjects: Vec<Subject<'_>>,
) -> anyhow::Result<Vec<Measurement>> {
    let reps = reps(scale);
    let names: Vec<&'static str> = subjects.iter().map(|(s, _)| *s).collect();
    note(&format!(
        "{metric}: {}: {} workers, 1 warm-up + {reps} reps, taking turns",
        names.join(", "),
        scale.workers
    ));
    measured_in_turns(SUITE, metric, "us", reps, subjects)
}

/// Checks that every task of a scope wrote its own index's result.
fn check_scope(out: &[u64]) -> anyhow::Result<()> {
    for (i, v) in out.iter().enumerate() {
        ensure!(*v == (i as u64 & 7) + 1, "scope: task {i} wrote {v}");
    }
    Ok(())
}

/// `scope_us` of seedcore and rayon.
pub(crate) fn scope(scale: Scale) -> anyhow::Result<Vec<Measurement>> {
    let sys = system(scale)?;
    let pool = rayon_pool(scale)?;
    let tasks = 4 * scale.workers;
    let m = measure_together(
        SCOPE_METRIC,
        scale,
        vec![
            ("seedcore", Box::new(|| seedcore_scope(&sys, tasks))),
            ("rayon_scope", Box::new(|| rayon_scope(&pool, tasks))),
        ],
    );
    sys.shutdown(ShutdownMode::Graceful);
    m
}

/// One repetition of `ConcurrentSystem::scope` with unwaited tasks writing
/// into a borrowed vector.
fn seedcore_scope(sys: &ConcurrentSystem, tasks: usize) -> anyhow::Result<f64> {
    let mut out = vec![0u64; tasks];
    let t = Instant::now();
    for _ in 0..SCOPES {
        sys.scope(|s| -> anyhow::Result<()> {
            for (i, slot) in out.iter_mut().enumerate() {
                let slot = std::sync::Mutex::new(slot);
                // Ended by the scope, not waited on here.
                drop(s.submit_thread(TaskOptions::new(), move |_| {
                    **slot.lock().unwrap_or_else(|e| e.into_inner()) = task(i as u64) + 1;
                })?);
            }
            Ok(())
        })?;
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / SCOPES as f64;
    check_scope(&out)?;
    Ok(us)
}

/// One repetition of `rayon::ThreadPool::scope` with the same tasks.
fn rayon_scope(pool: &rayon::ThreadPool, tasks: usize) -> anyhow::Result<f64> {
    let mut out = vec![0u64; tasks];
    let t = Instant::now();
    for _ in 0..SCOPES {
        pool.scope(|s| {
            for (i, slot) in out.iter_mut().enumerate() {
                s.spawn(move |_| *slot = task(i as u64) + 1);
            }
        });
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / SCOPES as f64;
    check_scope(&out)?;
    Ok(us)
}

/// The join tree over `lo..hi` on seedcore.
fn seedcore_tree(sys: &ConcurrentSystem, lo: u64, hi: u64) -> u64 {
    if hi - lo <= LEAF {
        return leaf(lo, hi);
    }
    let mid = lo + (hi - lo) / 2;
    let (a, b) = sys.join(
        || seedcore_tree(sys, lo, mid),
        || seedcore_tree(sys, mid, hi),
    );
    a + b
}

/// The join tree over `lo..hi` on rayon.
fn rayon_tree(lo: u64, hi: u64) -> u64 {
    if hi - lo <= LEAF {
        return leaf(lo, hi);
    }
    let mid = lo + (hi - lo) / 2;
    let (a, b) = rayon::join(|| rayon_tree(lo, mid), || rayon_tree(mid, hi));
    a + b
}

/// Times one tree whose sum `run` returns, and checks it.
fn timed_tree(run: impl FnOnce() -> anyhow::Result<u64>) -> anyhow::Result<f64> {
    let t = Instant::now();
    let s = black_box(run()?);
    let us = t.elapsed().as_secs_f64() * 1e6;
    ensure!(s == tree_sum(), "join tree: wrong sum {s}");
    Ok(us)
}

/// `join_tree_us` of seedcore (the tree started from the main thread, and
/// from a thread task, so that every closure runs on the pool's threads as
/// rayon's do inside `install`) and of rayon.
pub(crate) fn join(scale: Scale) -> anyhow::Result<Vec<Measurement>> {
    let sys = system(scale)?;
    let pool = rayon_pool(scale)?;
    let from_main = || timed_tree(|| Ok(seedcore_tree(&sys, 0, TREE)));
    let in_task = || {
        timed_tree(|| {
            sys.scope(|s| {
                let tree = s.submit_thread(TaskOptions::new(), |_| seedcore_tree(&sys, 0, TREE))?;
                Ok(tree.wait()?)
            })
        })
    };
    let rayon = || timed_tree(|| Ok(pool.install(|| rayon_tree(0, TREE))));
    let m = measure_together(
        JOIN_METRIC,
        scale,
        vec![
            ("seedcore", Box::new(from_main)),
            ("seedcore_in_task", Box::new(in_task)),
            ("rayon_join", Box::new(rayon)),
        ],
    );
    sys.shutdown(ShutdownMode::Graceful);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_of_leaves_sums_to_the_whole_range() {
        assert_eq!(rayon_tree(0, TREE), tree_sum());
        assert_eq!(TREE / LEAF, 256, "255 joins per tree, as the docs say");
    }
}
