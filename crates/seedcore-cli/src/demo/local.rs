//! The demo's scenarios of the rest of the local system: process tasks
//! killed on timeout, a crashed worker healed, a large payload through
//! shared memory, a parallel map, the balancer growing and shrinking the
//! thread pool, and a monitor snapshot.

use super::{Demo, Outcome, CORE_THREADS, MAX_THREADS};
use anyhow::{anyhow, Context};
use seedcore::{ExecutorKind, SharedBytes, TaskError, TaskOptions};
use std::time::{Duration, Instant};

seedcore::process_task! {
    /// Sleeps `ms` milliseconds in a worker process and returns its pid.
    fn nap(ms: u64) -> u32 {
        std::thread::sleep(Duration::from_millis(ms));
        std::process::id()
    }
}

seedcore::process_task! {
    /// Crashes its worker process (as a fault in native code would).
    fn crash() -> u32 {
        std::process::abort()
    }
}

seedcore::process_task! {
    /// Sums a buffer; says whether it arrived in shared memory.
    fn checksum(buf: SharedBytes) -> (bool, u64) {
        (buf.is_shared_memory(), buf.iter().map(|&b| u64::from(b)).sum())
    }
}

/// Process timeout: a task that sleeps 30 s under a 300 ms timeout resolves
/// `TimedOut`, its worker is killed (its pid is gone) and a new worker
/// serves the next task.
pub(super) fn process_timeout(d: &Demo<'_>) -> anyhow::Result<Outcome> {
    d.bar.inc_length(3);
    let first = d.sys.submit_process(TaskOptions::new(), nap, 0)?.wait()?;
    d.bar.inc(1);
    let limit = Duration::from_millis(300);
    let t = Instant::now();
    let r = d
        .sys
        .submit_process(TaskOptions::new().timeout(limit), nap, 30_000)?
        .wait();
    let took = t.elapsed();
    d.bar.inc(1);
    // The kill is sent at the deadline; the pool reaps the worker right after.
    let gone = Instant::now();
    while pid_alive(first) && gone.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed = !pid_alive(first);
    let next = d.sys.submit_process(TaskOptions::new(), nap, 0)?.wait()?;
    d.bar.inc(1);
    Ok(Outcome {
        scenario: "process-timeout",
        expected: "TimedOut at 300 ms; the worker killed; a new one serves".into(),
        actual: format!(
            "{} after {} ms; pid {first} {}; next on pid {next}",
            short(&r),
            took.as_millis(),
            if killed { "gone" } else { "alive" }
        ),
        ok: matches!(r, Err(TaskError::TimedOut(_))) && killed && next != first,
    })
}

/// Crash: a task that aborts its worker resolves `WorkerDied` naming the
/// signal, and the pool heals (the next task runs on a new worker).
pub(super) fn crash_healed(d: &Demo<'_>) -> anyhow::Result<Outcome> {
    d.bar.inc_length(2);
    let r = d.sys.submit_process(TaskOptions::new(), crash, ())?.wait();
    d.bar.inc(1);
    let next = d.sys.submit_process(TaskOptions::new(), nap, 0)?.wait();
    d.bar.inc(1);
    let died =
        matches!(&r, Err(TaskError::WorkerDied { signal: Some(s), .. }) if *s == libc::SIGABRT);
    Ok(Outcome {
        scenario: "crash-healed",
        expected: "WorkerDied (SIGABRT); the next task runs".into(),
        actual: format!(
            "{}; next {}",
            short(&r),
            match &next {
                Ok(pid) => format!("Ok on pid {pid}"),
                Err(e) => e.to_string(),
            }
        ),
        ok: died && next.is_ok(),
    })
}

/// Shared memory: 64 MiB cross to a worker as a memfd, not through the
/// socket; the worker's checksum matches.
pub(super) fn shared_memory(d: &Demo<'_>) -> anyhow::Result<Outcome> {
    d.bar.inc_length(1);
    let len = 64 << 20;
    let mut buf = SharedBytes::new(len).context("shared memory")?;
    for (i, b) in buf.make_mut().iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let want: u64 = buf.iter().map(|&b| u64::from(b)).sum();
    let t = Instant::now();
    let (shared, sum) = d
        .sys
        .submit_process(TaskOptions::new(), checksum, buf)?
        .wait()?;
    d.bar.inc(1);
    Ok(Outcome {
        scenario: "shared-memory",
        expected: "64 MiB reach a worker in shared memory, checksum equal".into(),
        actual: format!(
            "{} in {} ms, checksum {}",
            if shared { "memfd" } else { "copied" },
            t.elapsed().as_millis(),
            if sum == want { "equal" } else { "DIFFERENT" }
        ),
        ok: shared && sum == want,
    })
}

/// Counts the primes below `n` (the map's CPU work).
fn primes_below(n: u64) -> u64 {
    (2..n)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count() as u64
}

/// Parallel map: a thread map over CPU-bound items gives the same results
/// as a loop; the speedup over the loop is shown (not checked: it depends
/// on the machine's load).
pub(super) fn parallel_map(d: &Demo<'_>) -> anyhow::Result<Outcome> {
    let items: Vec<u64> = (0..if d.quick { 64 } else { 256 })
        .map(|i| 20_000 + i * 50)
        .collect();
    d.bar.inc_length(1);
    let t = Instant::now();
    let want: Vec<u64> = items.iter().map(|&n| primes_below(n)).collect();
    let serial = t.elapsed();
    let t = Instant::now();
    let got: Vec<u64> = d
        .sys
        .map(items.clone(), primes_below)
        .ordered()
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("map: {e}"))?;
    let parallel = t.elapsed();
    d.bar.inc(1);
    let speedup = serial.as_secs_f64() / parallel.as_secs_f64().max(1e-9);
    Ok(Outcome {
        scenario: "parallel-map",
        expected: format!(
            "{} items equal a loop's results (speedup shown, not checked)",
            items.len()
        ),
        actual: format!(
            "{}; {speedup:.2}x over the loop on {} cores",
            if got == want { "equal" } else { "DIFFERENT" },
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        ok: got == want,
    })
}

/// Balancer: a burst of blocking tasks grows the thread pool past its core
/// size (up to max), and once idle it shrinks back to core.
pub(super) fn balancer(d: &Demo<'_>) -> anyhow::Result<Outcome> {
    let n = if d.quick { 60 } else { 150 };
    d.bar.inc_length(n as u64);
    let threads = |sys: &seedcore::ConcurrentSystem| {
        sys.stats()
            .executor(ExecutorKind::Threads)
            .map_or(0, |r| r.workers)
    };
    let futures: Vec<_> = (0..n)
        .map(|_| {
            d.sys.submit_thread(TaskOptions::new(), |_| {
                std::thread::sleep(Duration::from_millis(10))
            })
        })
        .collect::<Result<_, _>>()?;
    let mut peak = threads(d.sys);
    for f in futures {
        peak = peak.max(threads(d.sys));
        f.wait()?;
        d.bar.inc(1);
    }
    let t = Instant::now();
    while threads(d.sys) > CORE_THREADS && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = threads(d.sys);
    Ok(Outcome {
        scenario: "balancer",
        expected: format!(
            "a burst grows the threads past {CORE_THREADS} (max {MAX_THREADS}); idle, back to {CORE_THREADS}"
        ),
        actual: format!(
            "peak {peak} threads; {after} after {:.1} s idle",
            t.elapsed().as_secs_f64()
        ),
        ok: peak > CORE_THREADS && peak <= MAX_THREADS && after == CORE_THREADS,
    })
}

/// Monitor: one snapshot lists the machine and every worker of the thread
/// pool and the process pool.
pub(super) fn monitor(d: &Demo<'_>) -> anyhow::Result<Outcome> {
    let m = d.sys.monitor();
    let threads = m.workers_of(ExecutorKind::Threads).count();
    let procs: Vec<_> = m.workers_of(ExecutorKind::Processes).collect();
    let rss: u64 = procs.iter().map(|w| w.rss.unwrap_or(0)).sum();
    Ok(Outcome {
        scenario: "monitor",
        expected: "a snapshot lists the machine, thread and process workers".into(),
        actual: format!(
            "{} cores, {} GiB free; {threads} threads, {} processes ({} MiB)",
            m.logical_cores,
            m.memory_available >> 30,
            procs.len(),
            rss >> 20
        ),
        ok: m.logical_cores > 0 && threads >= CORE_THREADS && !procs.is_empty(),
    })
}

/// A task error in a few words.
fn short<T>(r: &Result<T, TaskError>) -> String {
    match r {
        Ok(_) => "Ok".into(),
        Err(TaskError::TimedOut(_)) => "TimedOut".into(),
        Err(TaskError::WorkerDied {
            signal: Some(s), ..
        }) => format!("WorkerDied ({})", seedcore::signal_name(*s)),
        Err(e) => e.to_string(),
    }
}

/// Whether a process with this pid exists.
fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}
