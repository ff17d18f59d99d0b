//! Suite `balance`: the balancer (AutoExpand + AutoShrink) against a fixed
//! pool of core size and a fixed pool of max size, on a bursty workload.
//!
//! Subjects: `auto` (core C, max M, the default policies), `fixed_core`
//! (C..=C) and `fixed_max` (M..=M), with C = the number of cores and
//! M = 4 × C, for both the thread pool and the process pool. One run of a
//! subject is, in order:
//!
//! 1. idle; a burst of blocking, I/O-like thread tasks (each sleeps 10 ms);
//! 2. idle; a burst of CPU thread tasks (each spins);
//! 3. idle; the same two bursts as process tasks (one task per worker at a
//!    time: `processes.prefetch = 1`);
//! 4. idle long enough for AutoShrink (1 s window), then the pool sizes are
//!    read.
//!
//! Metrics (median over the repetitions):
//! - `total_s`: the four bursts' makespans added up (submit of the first
//!   task to the end of the last, per burst; the idle gaps are not counted);
//! - `thread_bursts_s`, `process_bursts_s`: the same, per pool;
//! - `peak_threads`, `peak_processes`: the most threads / worker processes
//!   alive at any sample (every 5 ms);
//! - `idle_threads`, `idle_processes`: alive after the final idle period.
//!
//! Target (reported, not asserted): `auto` finishes within 1.2 × the time
//! of `fixed_max` and holds at most the core count when idle. The fixed
//! pools are warmed up (every worker started) before the clock starts;
//! `auto` starts at core size and has to grow.

use super::report::median;
use super::{note, Entry, Measurement, Scale};
use anyhow::Context;
use seedcore::{ConcurrentSystem, ExecutorKind, ShutdownMode, TaskOptions, WorkerOutput};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

seedcore::process_task! {
    /// Sleeps `ms` milliseconds (an I/O-like process task).
    pub fn bench_nap(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
}

seedcore::process_task! {
    /// Spins `us` microseconds (a CPU process task).
    pub fn bench_spin(us: u64) -> u64 {
        spin(Duration::from_micros(us));
        us
    }
}

/// Busy-waits for `d`.
fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// The sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Workload {
    idle: Duration,
    settle: Duration,
    io_tasks: usize,
    io_ms: u64,
    cpu_tasks: usize,
    cpu_us: u64,
    proc_io_tasks: usize,
    proc_cpu_tasks: usize,
    reps: usize,
}

impl Workload {
    fn new(scale: Scale) -> Self {
        if scale.quick {
            Workload {
                idle: Duration::from_millis(100),
                settle: Duration::from_millis(2000),
                io_tasks: 80,
                io_ms: 10,
                cpu_tasks: 40,
                cpu_us: 2_000,
                proc_io_tasks: 40,
                proc_cpu_tasks: 40,
                reps: 1,
            }
        } else {
            Workload {
                idle: Duration::from_millis(500),
                settle: Duration::from_millis(2500),
                io_tasks: 320,
                io_ms: 10,
                cpu_tasks: 100,
                cpu_us: 4_000,
                proc_io_tasks: 160,
                proc_cpu_tasks: 100,
                reps: 3,
            }
        }
    }
}

/// One subject: a name and its pool bounds.
#[derive(Debug, Clone, Copy)]
struct Subject {
    name: &'static str,
    core: usize,
    max: usize,
}

/// What one run measured.
#[derive(Debug, Clone, Copy, Default)]
struct RunResult {
    thread_bursts: f64,
    process_bursts: f64,
    peak_threads: usize,
    idle_threads: usize,
    peak_processes: usize,
    idle_processes: usize,
}

/// Runs every subject; returns the entries and notes for the report.
pub(crate) fn run(scale: Scale) -> anyhow::Result<(Vec<Entry>, Vec<String>)> {
    let w = Workload::new(scale);
    let c = scale.workers.max(1);
    let subjects = [
        Subject {
            name: "auto",
            core: c,
            max: 4 * c,
        },
        Subject {
            name: "fixed_core",
            core: c,
            max: c,
        },
        Subject {
            name: "fixed_max",
            core: 4 * c,
            max: 4 * c,
        },
    ];
    note(&format!(
        "balance: {} rep(s); bursts: {} x {} ms sleep, {} x {} us spin (threads), {} x {} ms sleep, {} x {} us spin (processes); core {c}, max {}",
        w.reps, w.io_tasks, w.io_ms, w.cpu_tasks, w.cpu_us, w.proc_io_tasks, w.io_ms,
        w.proc_cpu_tasks, w.cpu_us, 4 * c
    ));
    let mut entries = Vec::new();
    let mut totals = Vec::new();
    let mut idle = Vec::new();
    for s in subjects {
        let runs: Vec<RunResult> = (0..w.reps)
            .map(|_| run_subject(s, w))
            .collect::<anyhow::Result<_>>()?;
        note(&format!("balance: {} done", s.name));
        let series = |f: fn(&RunResult) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        let metrics: [(&'static str, &'static str, Vec<f64>); 7] = [
            (
                "total_s",
                "s",
                series(|r| r.thread_bursts + r.process_bursts),
            ),
            ("thread_bursts_s", "s", series(|r| r.thread_bursts)),
            ("process_bursts_s", "s", series(|r| r.process_bursts)),
            ("peak_threads", "threads", series(|r| r.peak_threads as f64)),
            ("idle_threads", "threads", series(|r| r.idle_threads as f64)),
            (
                "peak_processes",
                "processes",
                series(|r| r.peak_processes as f64),
            ),
            (
                "idle_processes",
                "processes",
                series(|r| r.idle_processes as f64),
            ),
        ];
        for (metric, unit, samples) in metrics {
            let value = median(&samples);
            if metric == "total_s" {
                totals.push((s.name, value));
            }
            if metric.starts_with("idle_") {
                idle.push((s.name, metric, value));
            }
            entries.push(Entry::Measured(Measurement {
                suite: "balance",
                metric,
                subject: s.name,
                value,
                unit,
                samples,
            }));
        }
    }
    let total = |name: &str| totals.iter().find(|(n, _)| *n == name).map(|t| t.1);
    let mut notes = Vec::new();
    if let (Some(auto), Some(max), Some(core)) =
        (total("auto"), total("fixed_max"), total("fixed_core"))
    {
        let ratio = auto / max;
        notes.push(format!(
            "balance: auto took {ratio:.2}x the time of fixed_max (target: within 1.20x: {}) and {:.2}x that of fixed_core",
            if ratio <= 1.2 { "met" } else { "missed" },
            auto / core
        ));
    }
    let auto_idle: Vec<String> = idle
        .iter()
        .filter(|(n, _, _)| *n == "auto")
        .map(|(_, m, v)| format!("{m} {v:.0}"))
        .collect();
    notes.push(format!(
        "balance: auto when idle: {} (target: at most the core count, {c})",
        auto_idle.join(", ")
    ));
    Ok((entries, notes))
}

/// Workers alive in the executor of `kind` (0 if the system has none).
fn alive(st: &seedcore::Stats, kind: ExecutorKind) -> usize {
    st.executor(kind).map_or(0, |e| e.workers)
}

/// Samples the pools' sizes every 5 ms while it lives.
struct Watcher {
    stop: Arc<AtomicBool>,
    peak_threads: Arc<AtomicUsize>,
    peak_processes: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(sys: &Arc<ConcurrentSystem>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (pt, pp) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, t, p, sys) = (stop.clone(), pt.clone(), pp.clone(), sys.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let st = sys.stats();
                t.fetch_max(alive(&st, ExecutorKind::Threads), Ordering::Relaxed);
                p.fetch_max(alive(&st, ExecutorKind::Processes), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Watcher {
            stop,
            peak_threads: pt,
            peak_processes: pp,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
        (
            self.peak_threads.load(Ordering::Relaxed),
            self.peak_processes.load(Ordering::Relaxed),
        )
    }
}

/// Runs `n` thread tasks made by `f` and returns the burst's makespan.
fn thread_burst(
    sys: &ConcurrentSystem,
    n: usize,
    f: impl Fn() + Send + Sync + Clone + 'static,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let futs = (0..n)
        .map(|_| {
            let f = f.clone();
            sys.submit_thread(TaskOptions::new(), move |_| f())
        })
        .collect::<Result<Vec<_>, _>>()?;
    for fut in futs {
        fut.wait()?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Runs `n` process tasks `task(arg)` and returns the burst's makespan.
fn process_burst(
    sys: &ConcurrentSystem,
    n: usize,
    task: seedcore::ProcessTask<u64, u64>,
    arg: u64,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let futs = (0..n)
        .map(|_| sys.submit_process(TaskOptions::new(), task, arg))
        .collect::<Result<Vec<_>, _>>()?;
    for fut in futs {
        fut.wait()?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Waits until `cond` holds, at most `within`.
fn wait_for(within: Duration, cond: impl Fn() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

fn run_subject(s: Subject, w: Workload) -> anyhow::Result<RunResult> {
    let sys = Arc::new(
        ConcurrentSystem::builder()
            .name(format!("bal-{}", s.name))
            .core_threads(s.core)
            .max_threads(s.max)
            .core_processes(s.core)
            .max_processes(s.max)
            .process_prefetch(1)
            .process_output(WorkerOutput::Discard)
            .build()
            .context("building the balance bench system")?,
    );
    // Warm-up: start the process pool and let every core worker say hello.
    process_burst(&sys, s.core, bench_nap, 0)?;
    if !wait_for(Duration::from_secs(30), || {
        alive(&sys.stats(), ExecutorKind::Processes) >= s.core
    }) {
        anyhow::bail!("{}: the worker processes did not all start", s.name);
    }
    let watcher = Watcher::start(&sys);
    let mut r = RunResult::default();
    let (io_ms, cpu_us) = (w.io_ms, w.cpu_us);
    std::thread::sleep(w.idle);
    r.thread_bursts += thread_burst(&sys, w.io_tasks, move || {
        std::thread::sleep(Duration::from_millis(io_ms))
    })?;
    std::thread::sleep(w.idle);
    r.thread_bursts += thread_burst(&sys, w.cpu_tasks, move || {
        spin(Duration::from_micros(cpu_us))
    })?;
    std::thread::sleep(w.idle);
    r.process_bursts += process_burst(&sys, w.proc_io_tasks, bench_nap, io_ms)?;
    std::thread::sleep(w.idle);
    r.process_bursts += process_burst(&sys, w.proc_cpu_tasks, bench_spin, cpu_us)?;
    std::thread::sleep(w.settle);
    let st = sys.stats();
    r.idle_threads = alive(&st, ExecutorKind::Threads);
    r.idle_processes = alive(&st, ExecutorKind::Processes);
    (r.peak_threads, r.peak_processes) = watcher.finish();
    sys.shutdown(ShutdownMode::Graceful);
    Ok(r)
}
