//! Suite `parallel`: seedcore's parallel maps against rayon and Python's
//! `multiprocessing.Pool`, in one run.
//!
//! Every pool has as many workers as there are cores; each is built and
//! warmed up (one untimed repetition) before the clock starts, and every
//! repetition checks its result. Reported: the median over the repetitions.
//! Subjects measured in this process take turns, one repetition each, each
//! round starting with the next ([`interleaved`](super::interleaved)), so
//! that a change in the machine's load (other work on a shared 2-core
//! machine) hits both sides of a ratio alike.
//!
//! | metric | unit | subject | what is timed |
//! | --- | --- | --- | --- |
//! | `map_hash_ns` | ns per item | `seedcore_threads` | `system.map(input, hash).collect_vec()` (results in input order, in a `Vec`), automatic chunks |
//! | | | `rayon_par_iter` | `input.par_iter().map(hash).collect::<Vec<_>>()` in a pool of `cores` threads |
//! | `map_tiny_ns` | ns per item | `seedcore_processes` | `system.map_process(0..N, tiny).collect_vec()`, then summed (as Python sums `Pool.map`'s list); automatic chunks (batch calls) |
//! | | | `mp_pool_map` | `multiprocessing.Pool.map(task, range(N))`, default chunksize (`ceil(N / 4W)`) |
//! | | | `mp_pool_imap_unordered` | `Pool.imap_unordered(task, range(N))`, default chunksize (1) |
//! | `cpu_speedup` | x | `seedcore_threads`, `seedcore_processes` | time of a 1-worker system / time of a `cores`-worker system, mapping 64 chunks of sum((i*i) mod 7), i < 4e8 (`shared/peers/rust/src/cpu.rs`) with `ChunkSize::Fixed(1)`; every pool built first, repetitions rotating through all pools, one ratio per pair |
//! | | | `rayon_par_iter` | the same with rayon pools of 1 and `cores` threads (`par_iter().map().sum()`): the reference for what the machine allows in this run |
//!
//! `hash` is 64 rounds of xorshift over the item (N = 1,000,000 items);
//! `tiny` is `i & 7` (N = 1,000,000; `mp_pool_imap_unordered` maps
//! 100,000, since with one item per round trip 1,000,000 take about 40 s).
//! The Python peers run in `python3` from `PATH` with start method fork,
//! from the script `parallel_peers.py` embedded in this binary, through
//! the bench's Python harness ([`pyharness`](super::pyharness)); if it
//! cannot run they are reported as skipped.
//!
//! The suite also checks its targets and says in a note whether each is
//! met (a report, not an assertion): thread map ≤ 1.2 × rayon per item,
//! process map ≤ 1/3 of `Pool.map` per item, CPU speedup ≥ 1.9 ×
//! (`cores` = 2).

use super::pyharness::Harness;
use super::{measured_in_turns, note, Entry, Measurement, Scale, Subject};
use anyhow::{ensure, Context};
use rayon::prelude::*;
use seedcore::{ChunkSize, ConcurrentSystem, ShutdownMode};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

/// The suite's name in reports.
const SUITE: &str = "parallel";
/// Per-item time of the hashing map.
const HASH: &str = "map_hash_ns";
/// Per-item time of the no-op process map.
const TINY: &str = "map_tiny_ns";
/// Speedup of the CPU-bound map.
const SPEEDUP: &str = "cpu_speedup";
/// The Python side of the suite.
const PY_SCRIPT: &str = include_str!("parallel_peers.py");
/// The Python peers, in report order.
const PY_PEERS: [&str; 2] = ["mp_pool_map", "mp_pool_imap_unordered"];
/// The one metric the Python peers report, with its unit.
const PY_METRICS: [(&str, &str); 1] = [(TINY, "ns")];
/// The script's side of the suite.
const HARNESS: Harness = Harness {
    suite: SUITE,
    metrics: &PY_METRICS,
    subjects: &PY_PEERS,
};
/// Chunks of the CPU-bound map (as in `shared/peers`).
const CPU_CHUNKS: u64 = 64;

seedcore::process_task! {
    /// The no-op task, in a worker process: `i & 7`.
    fn tiny(i: u64) -> u64 { black_box(i) & 7 }
}

seedcore::process_task! {
    /// One chunk of the CPU-bound workload, in a worker process.
    fn cpu_chunk_task(args: (u64, u64)) -> u64 { cpu_chunk(args.0, args.1) }
}

/// Workload sizes and repetitions of a run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    hash_n: usize,
    hash_reps: usize,
    tiny_n: usize,
    tiny_reps: usize,
    imap_n: usize,
    imap_reps: usize,
    cpu_total: u64,
    cpu_reps: usize,
}

impl Sizes {
    fn of(scale: Scale) -> Sizes {
        if scale.quick {
            Sizes {
                hash_n: 100_000,
                hash_reps: 3,
                tiny_n: 50_000,
                tiny_reps: 2,
                imap_n: 5_000,
                imap_reps: 1,
                cpu_total: 16_000_000,
                cpu_reps: 2,
            }
        } else {
            Sizes {
                hash_n: 1_000_000,
                hash_reps: 9,
                tiny_n: 1_000_000,
                tiny_reps: 11,
                imap_n: 100_000,
                imap_reps: 3,
                cpu_total: 400_000_000,
                cpu_reps: 9,
            }
        }
    }
}

/// Runs the suite: every metric for every subject, then the report lines
/// and the notes for the table.
pub(crate) fn run(scale: Scale) -> anyhow::Result<(Vec<Entry>, Vec<String>)> {
    let sz = Sizes::of(scale);
    let w = scale.workers;
    let mut entries = Vec::new();

    note(&format!(
        "{HASH}: N={}, {w} workers, {} reps",
        sz.hash_n, sz.hash_reps
    ));
    let input: Vec<u64> = (0..sz.hash_n as u64).collect();
    let want = checksum(input.iter().map(|&x| hash(x)));
    let (ours, rayon) = hash_pair(scale, sz, &input, want)?;
    drop(input);

    note(&format!("{TINY}: N={}, {w} worker processes", sz.tiny_n));
    let tiny_ours = seedcore_tiny(scale, sz)?;
    let py = python_tiny(scale, sz);

    note(&format!(
        "{SPEEDUP}: 64 chunks, i < {}, 1 worker vs {w}",
        sz.cpu_total
    ));
    let cpu = cpu_speedup(scale, sz)?;

    let mut notes = vec![format!(
        "parallel: {w} workers per pool (= cores); seedcore maps use automatic chunks and the default in-flight window (4 chunks per worker); Python start method fork"
    )];
    notes.push(target_note(
        "thread map of hashing items vs rayon",
        ours.value / rayon.value,
        "<= 1.20",
        ours.value <= 1.2 * rayon.value,
    ));
    let mp_map = py.iter().find_map(|e| match e {
        Entry::Measured(m) if m.subject == "mp_pool_map" => Some(m.value),
        _ => None,
    });
    match mp_map {
        Some(v) => notes.push(target_note(
            "process map of no-op items vs mp.Pool.map",
            tiny_ours.value / v,
            "<= 0.33",
            tiny_ours.value * 3.0 <= v,
        )),
        None => notes
            .push("parallel: target process map vs mp.Pool.map: not checked (peer skipped)".into()),
    }
    for (m, _) in cpu
        .iter()
        .filter(|(m, _)| m.subject != Runner::Rayon.subject())
    {
        notes.push(target_note(
            &format!("CPU speedup of {}", m.subject),
            m.value,
            ">= 1.90",
            m.value >= 1.9,
        ));
    }
    let best: Vec<String> = cpu
        .iter()
        .map(|(m, b)| format!("{} {b:.2}", m.subject))
        .collect();
    notes.push(format!(
        "parallel: CPU speedup from the best time of each pool (1 worker / {w}): {}; rayon_par_iter is the reference for what the machine allows in this run",
        best.join(", ")
    ));
    notes.push(format!(
        "parallel: mp_pool_imap_unordered maps {} items (chunksize 1: one round trip per item), the others {}",
        sz.imap_n, sz.tiny_n
    ));
    if scale.quick {
        notes.push(
            "parallel: --quick: small workloads, few reps: a smoke run, not a measurement".into(),
        );
    }

    entries.push(Entry::Measured(ours));
    entries.push(Entry::Measured(rayon));
    entries.push(Entry::Measured(tiny_ours));
    entries.extend(py);
    entries.extend(cpu.into_iter().map(|(m, _)| Entry::Measured(m)));
    Ok((entries, notes))
}

/// A note that says whether a target is met.
fn target_note(what: &str, ratio: f64, target: &str, met: bool) -> String {
    format!(
        "parallel: target {what}: {ratio:.2} (target {target}): {}",
        if met { "met" } else { "MISSED" }
    )
}

/// A measurement of this suite.
fn measurement(
    metric: &'static str,
    subject: &'static str,
    unit: &'static str,
    samples: Vec<f64>,
) -> Measurement {
    Measurement::of(SUITE, metric, subject, unit, samples)
}

/// 64 rounds of xorshift over the item.
#[inline]
fn hash(x: u64) -> u64 {
    let mut x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// An order-sensitive checksum of the results.
fn checksum(it: impl Iterator<Item = u64>) -> u64 {
    it.enumerate()
        .fold(0u64, |a, (i, v)| a.rotate_left(5) ^ v ^ i as u64)
}

/// A system with `threads` pool threads and `processes` worker processes.
fn system(threads: usize, processes: usize) -> anyhow::Result<ConcurrentSystem> {
    ConcurrentSystem::builder()
        .core_threads(threads)
        .max_threads(threads)
        .core_processes(processes)
        .max_processes(processes)
        .build()
        .context("building the seedcore system")
}

/// Runs `rep` once to warm up and `reps` times measured; each returns the
/// per-item nanoseconds.
fn repeat(reps: usize, mut rep: impl FnMut() -> anyhow::Result<f64>) -> anyhow::Result<Vec<f64>> {
    rep()?;
    (0..reps).map(|_| rep()).collect()
}

/// `map_hash_ns` for seedcore's thread map and rayon's
/// `par_iter().map().collect()`, their repetitions interleaved so that a
/// change in the machine's load hits both alike.
fn hash_pair(
    scale: Scale,
    sz: Sizes,
    input: &[u64],
    want: u64,
) -> anyhow::Result<(Measurement, Measurement)> {
    let sys = system(scale.workers, 1)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(scale.workers)
        .thread_name(|i| format!("rayon-bench-{i}"))
        .build()
        .context("building the rayon pool")?;
    let per_item = |t: Instant| t.elapsed().as_secs_f64() * 1e9 / input.len() as f64;
    let ours = || -> anyhow::Result<f64> {
        let t = Instant::now();
        let out = sys.map(input.iter().copied(), hash).collect_vec()?;
        let ns = per_item(t);
        ensure!(
            checksum(out.into_iter()) == want,
            "seedcore_threads: wrong results"
        );
        Ok(ns)
    };
    let theirs = || -> anyhow::Result<f64> {
        let t = Instant::now();
        let out: Vec<u64> = pool.install(|| input.par_iter().map(|&x| hash(x)).collect());
        let ns = per_item(t);
        ensure!(
            checksum(out.into_iter()) == want,
            "rayon_par_iter: wrong results"
        );
        Ok(ns)
    };
    let subjects: Vec<Subject<'_>> = vec![
        ("seedcore_threads", Box::new(ours)),
        ("rayon_par_iter", Box::new(theirs)),
    ];
    let measured = measured_in_turns(SUITE, HASH, "ns", sz.hash_reps, subjects);
    sys.shutdown(ShutdownMode::Graceful);
    match <[Measurement; 2]>::try_from(measured?) {
        Ok([ours, theirs]) => Ok((ours, theirs)),
        Err(_) => anyhow::bail!("{HASH}: not one measurement per subject"),
    }
}

/// `map_tiny_ns` for seedcore's process map.
fn seedcore_tiny(scale: Scale, sz: Sizes) -> anyhow::Result<Measurement> {
    let sys = system(1, scale.workers)?;
    let n = sz.tiny_n as u64;
    let want: u64 = (0..n).map(|i| i & 7).sum();
    let samples = repeat(sz.tiny_reps, || {
        let t = Instant::now();
        let sum: u64 = sys.map_process(0..n, tiny).collect_vec()?.iter().sum();
        let ns = t.elapsed().as_secs_f64() * 1e9 / n as f64;
        ensure!(sum == want, "seedcore_processes: wrong sum {sum} != {want}");
        Ok(ns)
    })?;
    sys.shutdown(ShutdownMode::Graceful);
    Ok(measurement(TINY, "seedcore_processes", "ns", samples))
}

/// One chunk of the CPU-bound workload: sum of (i*i) mod 7 over `lo..hi`.
#[inline(never)]
fn cpu_chunk(lo: u64, hi: u64) -> u64 {
    let (lo, hi) = (black_box(lo), black_box(hi));
    let mut s = 0u64;
    for i in lo..hi {
        s += (i * i) % 7;
    }
    s
}

/// Who runs a CPU-bound map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runner {
    Threads,
    Processes,
    Rayon,
}

impl Runner {
    fn subject(self) -> &'static str {
        match self {
            Runner::Threads => "seedcore_threads",
            Runner::Processes => "seedcore_processes",
            Runner::Rayon => "rayon_par_iter",
        }
    }
}

/// A pool of one kind and size, built before the clock starts.
enum CpuPool {
    Seedcore(ConcurrentSystem, Runner),
    Rayon(rayon::ThreadPool),
}

impl CpuPool {
    fn build(runner: Runner, workers: usize) -> anyhow::Result<CpuPool> {
        Ok(match runner {
            Runner::Threads => CpuPool::Seedcore(system(workers, 1)?, runner),
            Runner::Processes => CpuPool::Seedcore(system(1, workers)?, runner),
            Runner::Rayon => CpuPool::Rayon(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(workers)
                    .thread_name(|i| format!("rayon-cpu-{i}"))
                    .build()
                    .context("building the rayon pool")?,
            ),
        })
    }

    /// Seconds to map the chunks and sum the results, checked.
    fn time(&self, bounds: &[(u64, u64)], want: u64) -> anyhow::Result<f64> {
        let t = Instant::now();
        let sum = match self {
            CpuPool::Seedcore(sys, Runner::Processes) => sys
                .map_process(bounds.iter().copied(), cpu_chunk_task)
                .chunk_size(ChunkSize::Fixed(1))
                .fold(0u64, |a, x| a + x)?,
            CpuPool::Seedcore(sys, _) => sys
                .map(bounds.iter().copied(), |(lo, hi)| cpu_chunk(lo, hi))
                .chunk_size(ChunkSize::Fixed(1))
                .fold(0u64, |a, x| a + x)?,
            CpuPool::Rayon(pool) => {
                pool.install(|| bounds.par_iter().map(|&(lo, hi)| cpu_chunk(lo, hi)).sum())
            }
        };
        let secs = t.elapsed().as_secs_f64();
        ensure!(sum == want, "cpu map: wrong sum {sum} != {want}");
        Ok(secs)
    }

    fn shutdown(self) {
        if let CpuPool::Seedcore(sys, _) = self {
            sys.shutdown(ShutdownMode::Graceful);
        }
    }
}

/// `cpu_speedup`: the 64-chunk map on a 1-worker pool and on a
/// `cores`-worker one, for seedcore's two pools and for rayon (the
/// reference: what this machine allows right now). Every pool is built up
/// front and the repetitions rotate through all of them; each sample is
/// one pair's time ratio. Each comes with the ratio of the best times
/// (another process on the machine only ever adds time, so the best
/// repetition is the closest to what the pool alone costs).
fn cpu_speedup(scale: Scale, sz: Sizes) -> anyhow::Result<Vec<(Measurement, f64)>> {
    let total = sz.cpu_total;
    let bounds: Vec<(u64, u64)> = (0..CPU_CHUNKS)
        .map(|c| (c * total / CPU_CHUNKS, (c + 1) * total / CPU_CHUNKS))
        .collect();
    let want: u64 = bounds.iter().map(|&(lo, hi)| cpu_chunk(lo, hi)).sum();
    let runners = [Runner::Threads, Runner::Processes, Runner::Rayon];
    let mut pairs = Vec::new();
    for r in runners {
        pairs.push((
            CpuPool::build(r, 1)?,
            CpuPool::build(r, scale.workers)?,
            Vec::with_capacity(sz.cpu_reps),
            (f64::INFINITY, f64::INFINITY),
        ));
    }
    for (one, many, _, _) in &pairs {
        one.time(&bounds, want)?;
        many.time(&bounds, want)?;
    }
    for _ in 0..sz.cpu_reps {
        for (one, many, samples, best) in &mut pairs {
            let t1 = one.time(&bounds, want)?;
            let tn = many.time(&bounds, want)?;
            samples.push(t1 / tn);
            *best = (best.0.min(t1), best.1.min(tn));
        }
    }
    let mut out = Vec::new();
    for (r, (one, many, samples, best)) in runners.into_iter().zip(pairs) {
        one.shutdown();
        many.shutdown();
        out.push((
            measurement(SPEEDUP, r.subject(), "x", samples),
            best.0 / best.1,
        ));
    }
    Ok(out)
}

/// `map_tiny_ns` for the Python peers, through the harness: `python3`
/// from `PATH` runs `parallel_peers.py`; a peer it did not report (or
/// every peer, where it cannot run) comes back skipped with the reason.
fn python_tiny(scale: Scale, sz: Sizes) -> Vec<Entry> {
    let args: Vec<String> = [
        ("--workers", scale.workers),
        ("--n", sz.tiny_n),
        ("--n-imap", sz.imap_n),
        ("--reps", sz.tiny_reps),
        ("--imap-reps", sz.imap_reps),
    ]
    .into_iter()
    .flat_map(|(flag, v)| [flag.to_string(), v.to_string()])
    .collect();
    let expected = PY_PEERS.map(|subject| (TINY, subject));
    let limit = Duration::from_secs(if scale.quick { 120 } else { 600 });
    let mut entries = HARNESS.run_script(
        Path::new("python3"),
        ("parallel-peers", PY_SCRIPT),
        &args,
        &expected,
        limit,
    );
    Entry::sort_in(&mut entries, &PY_METRICS, &PY_PEERS);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_python_lines() {
        let m = HARNESS.parse_line(
            r#"{"metric": "map_tiny_ns", "subject": "mp_pool_map", "unit": "ns", "samples": [120.0, 130.0]}"#,
        );
        assert!(matches!(m, Some(Entry::Measured(m)) if m.value == 125.0));
        let s = HARNESS.parse_line(
            r#"{"metric": "map_tiny_ns", "subject": "mp_pool_imap_unordered", "unit": "ns", "skipped": "no"}"#,
        );
        assert!(matches!(s, Some(Entry::Skipped(s)) if s.reason == "no"));
        assert!(HARNESS
            .parse_line(r#"{"metric": "other", "subject": "mp_pool_map", "samples": [1.0]}"#)
            .is_none());
        assert!(HARNESS
            .parse_line(r#"{"metric": "map_tiny_ns", "subject": "mp_pool_map", "samples": [0.0]}"#)
            .is_none());
        assert!(HARNESS.parse_line("not json").is_none());
    }

    #[test]
    fn cpu_chunks_cover_the_range() {
        let total = 6400u64;
        let sum: u64 = (0..CPU_CHUNKS)
            .map(|c| cpu_chunk(c * total / CPU_CHUNKS, (c + 1) * total / CPU_CHUNKS))
            .sum();
        assert_eq!(sum, (0..total).map(|i| (i * i) % 7).sum::<u64>());
    }

    #[test]
    fn hash_mixes() {
        assert_ne!(hash(0), hash(1));
        assert_ne!(hash(0), 0);
    }
}
