//! The demo's scenarios, one function each, in the order they run.
//!
//! Each submits real tasks to the shared system, waits for every one of them,
//! and compares what happened with what the library promises.

use super::{Demo, Outcome, CORE_THREADS, MAX_THREADS};
use anyhow::{anyhow, Context};
use seedcore::{
    Backoff, Priority, RetryOn, RetryPolicy, Stats, TaskContext, TaskError, TaskOptions,
};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

/// A scenario: runs on the demo's system and reports its outcome.
type Scenario = fn(&Demo<'_>) -> anyhow::Result<Outcome>;

/// Every scenario, in order.
pub(crate) const ALL: &[(&str, Scenario)] = &[
    ("priorities", priorities),
    ("timeout", timeout),
    ("retry", retry),
    ("retry-exhausted", retry_exhausted),
    ("panic", panic),
    ("cancel", cancel),
    ("lock", lock),
    ("limit", limit),
    ("callbacks", callbacks),
    ("async", async_task),
    ("process-timeout", super::local::process_timeout),
    ("crash-healed", super::local::crash_healed),
    ("shared-memory", super::local::shared_memory),
    ("parallel-map", super::local::parallel_map),
    ("balancer", super::local::balancer),
    ("monitor", super::local::monitor),
];

/// Prefix of the panic messages the demo raises on purpose.
const EXPECTED_PANIC: &str = "demo: ";

/// Keeps the demo's deliberate panics off stderr (the library catches them and
/// the summary shows them); any other panic is reported as usual.
pub(crate) fn quiet_expected_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        if !msg.is_some_and(|m| m.starts_with(EXPECTED_PANIC)) {
            previous(info);
        }
    }));
}

/// Describes a task's result in a few words for the summary.
fn describe<T: std::fmt::Debug>(r: &Result<T, TaskError>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(TaskError::Panicked(m)) => format!("Panicked({m:?})"),
        Err(TaskError::TimedOut(d)) => format!("TimedOut({d:?})"),
        Err(TaskError::Failed(e)) => format!("Failed({:?})", e.to_string()),
        Err(TaskError::Cancelled) => "Cancelled".to_string(),
        Err(TaskError::LockTimeout { lock, waited }) => {
            format!("LockTimeout({lock:?} after {waited:?})")
        }
        Err(e) => format!("{e}"),
    }
}

/// Milliseconds, for display.
fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// Priorities: a backlog of LOW tasks is queued, then a few HIGH ones; the HIGH
/// ones must start before every LOW task that had not started yet.
///
/// To make the order visible and deterministic, the pool's threads are first
/// held by "gate" tasks, so the whole backlog is still queued when the HIGH
/// tasks arrive. The check counts the LOW tasks that started after every HIGH
/// task was queued and before the last HIGH task started, allowing one per
/// thread for a LOW task a worker took just before the HIGH ones arrived.
fn priorities(d: &Demo<'_>) -> anyhow::Result<Outcome> {
    let highs = 5usize;
    let gates = CORE_THREADS;
    // Sleeping (not spinning) tasks: a busy 2-core machine preempting a
    // spinning task would scramble the completion order shown below.
    let work = Duration::from_micros(if d.quick { 200 } else { 500 });
    d.bar.inc_length((d.backlog + highs + gates) as u64);

    let order = Arc::new(Mutex::new(Vec::<char>::with_capacity(d.backlog + highs)));
    let low_started = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let open = Arc::new((Mutex::new(false), std::sync::Condvar::new()));

    // 1. Gates: hold the core threads until the queue is set up.
    let mut gate_fs = Vec::new();
    for _ in 0..gates {
        let (tx, open) = (started_tx.clone(), open.clone());
        gate_fs.push(d.sys.submit_thread(
            TaskOptions::new().priority(Priority::CRITICAL).name("gate"),
            move |_: &TaskContext| {
                let _ = tx.send(());
                let (lock, cv) = &*open;
                let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
                let deadline = Instant::now() + Duration::from_secs(10);
                while !*g && Instant::now() < deadline {
                    g = cv
                        .wait_timeout(g, Duration::from_millis(50))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            },
        )?);
    }
    for _ in 0..gates {
        if started_rx.recv_timeout(Duration::from_secs(5)).is_err() {
            break;
        }
    }

    // 2. The LOW backlog, then the HIGH tasks.
    let mut low_fs = Vec::with_capacity(d.backlog);
    for _ in 0..d.backlog {
        let (order, low_started, bar) = (order.clone(), low_started.clone(), d.bar.clone());
        low_fs.push(d.sys.submit_thread(
            TaskOptions::new().priority(Priority::LOW),
            move |_: &TaskContext| {
                low_started.fetch_add(1, Ordering::SeqCst);
                thread::sleep(work);
                order.lock().unwrap_or_else(|e| e.into_inner()).push('L');
                bar.inc(1);
            },
        )?);
    }
    let mut high_fs = Vec::with_capacity(highs);
    for _ in 0..highs {
        let (order, low_started, bar) = (order.clone(), low_started.clone(), d.bar.clone());
        high_fs.push(d.sys.submit_thread(
            TaskOptions::new().priority(Priority::HIGH),
            move |_: &TaskContext| {
                let lows_before = low_started.load(Ordering::SeqCst);
                thread::sleep(work);
                order.lock().unwrap_or_else(|e| e.into_inner()).push('H');
                bar.inc(1);
                lows_before
            },
        )?);
    }
    let lows_when_queued = low_started.load(Ordering::SeqCst);

    // 3. Open the gates and wait for everything.
    {
        let (lock, cv) = &*open;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
    for f in gate_fs {
        f.wait().map_err(|e| anyhow!("gate task: {e}"))?;
        d.bar.inc(1);
    }
    let mut lows_before_high = Vec::with_capacity(highs);
    for f in high_fs {
        lows_before_high.push(f.wait().map_err(|e| anyhow!("HIGH task: {e}"))?);
    }
    let mut low_errors = 0usize;
    for f in low_fs {
        if f.wait().is_err() {
            low_errors += 1;
        }
    }

    let order = order.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let positions: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == 'H')
        .map(|(i, _)| i + 1)
        .collect();
    let last_high_start = lows_before_high.iter().copied().max().unwrap_or(0);
    // LOW tasks that started after every HIGH task was queued but before a HIGH
    // one started; a worker may have taken one just before the HIGH tasks were
    // queued, at most one per thread.
    let overtaken = last_high_start.saturating_sub(lows_when_queued);
    let ok = overtaken <= MAX_THREADS && low_errors == 0 && positions.len() == highs;
    let head: String = order.iter().take(16).collect();
    Ok(Outcome {
        scenario: "priorities",
        expected: format!(
            "{highs} HIGH start before the {} queued LOW (at most {MAX_THREADS} LOW \
             already taken by a worker may start first)",
            d.backlog
        ),
        actual: format!(
            "HIGH finished at #{} of {}; order {head}…",
            positions
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(","),
            order.len()
        ),
        ok,
    })
}

/// Timeout: a task that sleeps 300 ms (ignoring cancellation) under a 50 ms
/// timeout resolves `TimedOut` at the deadline, not when the sleep ends.
fn timeout(d: &Demo<'_>) -> anyhow::Result<Outcome> {
    d.bar.inc_length(1);
    let limit = Duration::from_millis(50);
    let t = Instant::now();
    let f = d.sys.submit_thread(
        TaskOptions::new().timeout(limit).name("sleeper"),
        |_: &TaskContext| thread::sleep(Duration::from_millis(300)),
    )?;
    let r = f.wait();
    let took = t.elapsed();
    d.bar.inc(1);
    Ok(Outcome {
        scenario: "timeout",
        expected: format!("TimedOut({limit:?}) (task sleeps 300 ms)"),
        actual: format!("{} after {}", describe(&r), ms(took)),
        ok: matches!(&r, Err(e) if e.is_timeout()),
    })
}

/// Retry: a task that fails on attempts 1 and 2 succeeds on attempt 3 under
/// `RetryPolicy::retries(2)`.
fn retry(d: &Demo<'_>) -> anyhow::Result<Outcome> {
    d.bar.inc_length(1);
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    let f = d.sys.submit_thread_fallible(
        TaskOptions::new().name("flaky").retry(
            RetryPolicy::retries(2)
                .backoff(Backoff::Fixed(Duration::from_millis(5)))
                .on(RetryOn::ERROR),
        ),
        move |ctx: &TaskContext| -> Result<String, std::io::Error> {
            seen.fetch_add(1, Ordering::SeqCst);
            if ctx.attempt() < 3 {
                Err(std::io::Error::other(format!(
                    "transient failure on attempt {}",
                    ctx.attempt()
                )))
            } else {
                Ok(format!("succeeded on attempt {}", ctx.attempt()))
            }
        },
    )?;
    let r = f.wait();
    d.bar.inc(1);
    let n = attempts.load(Ordering::SeqCst);
    Ok(Outcome {
        scenario: "retry",
        expected: "Ok after 3 attempts (2 failures, retries(2))".into(),
        actual: format!("{} after {n} attempts", describe(&r)),
        ok: r.is_ok() && n == 3,
    })
}

/// Retry, exhausted: a task that always fails under `retries(1)` resolves
/// `Failed` with its own error after 2 attempts.
fn retry_exhausted(d: &Demo<'_>) -> anyhow::Result<Outcome> {
    d.bar.inc_length(1);
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    let f = d.sys.submit_thread_fallible(
        TaskOptions::new()
            .name("broken")
            .retry(RetryPolicy::retries(1).on(RetryOn::ERROR)),
        move |_: &TaskContext| -> Result<(), std::io::Error> {
            seen.fetch_add(1, Ordering::SeqCst);
            Err(std::io::Error::other("disk full"))
        },
    )?;
    let r = f.wait();
    d.bar.inc(1);
    let n = attempts.load(Ordering::SeqCst);
    Ok(Outcome {
        scenario: "retry-exhausted",
        expected: "Failed(\"disk full\") after 2 attempts".into(),
        actual: format!("{} after {n} attempts", describe(&r)),
        ok: matches!(&r, Err(e) if e.is_failed() && e.to_string().contains("disk full")) && n == 2,
    })
}

/// Panic: a panicking task resolves `Panicked` with the panic message; the
/// worker survives and is not retried (the default policy does not retry panics).
fn panic(d: &Demo<'_>) -> anyhow::Result<Outcome> {
    d.bar.inc_length(1);
    let msg = "demo: parser exploded on record 17";
    let f = d.sys.submit_thread(
        TaskOptions::new()
            .name("parser")
            .retry(RetryPolicy::retries(3)),
        move |_: &TaskContext| -> u32 { panic!("{msg}") },
    )?;
    let r = f.wait();
    d.bar.inc(1);
    Ok(Outcome {
        scenario: "panic",
        expected: format!("Panicked({msg:?}), not retried"),
        actual: describe(&r),
        ok: matches!(&r, Err(e) if e.panic_message() == Some(msg)),
    })
}

/// Cancel: a running task that watches `ctx.is_cancelled()` is cancelled
/// through its future and resolves `Cancelled`.
fn cancel(d: &Demo<'_>) -> anyhow::Result<Outcome> {
    d.bar.inc_length(1);
    let (tx, rx) = mpsc::channel::<()>();
    let f = d.sys.submit_thread(
        TaskOptions::new().name("long-poll"),
        move |ctx: &TaskContext| {
            let _ = tx.send(());
            let deadline = Instant::now() + Duration::from_secs(10);
            while !ctx.is_cancelled() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            ctx.is_cancelled()
        },
    )?;
    rx.recv_timeout(Duration::from_secs(10))
        .context("the task to cancel never started")?;
    let cancelled = f.cancel();
    let r = f.wait();
    d.bar.inc(1);
    Ok(Outcome {
        scenario: "cancel",
        expected: "cancel() = true, then Cancelled".into(),
        actual: format!("cancel() = {cancelled}, then {}", describe(&r)),
        ok: cancelled && matches!(&r, Err(e) if e.is_cancelled()),
    })
}

/// A read-sleep-write increment: loses updates unless the callers are serialized.
fn racy_increment(counter: &AtomicU64) {
    let v = counter.load(Ordering::SeqCst);
    thread::sleep(Duration::from_millis(3));
    counter.store(v + 1, Ordering::SeqCst);
}

/// Lock: tasks sharing the named lock "ledger" increment a counter with a
/// deliberately racy read-sleep-write; none of the updates is lost. The same
/// tasks without the lock are shown for contrast (not checked: they usually lose
/// updates, but may not).
fn lock(d: &Demo<'_>) -> anyhow::Result<Outcome> {
    let n = if d.quick { 6 } else { 10 };
    d.bar.inc_length(2 * n as u64);
    let run = |opts: TaskOptions| -> anyhow::Result<(u64, usize)> {
        let ledger = Arc::new(AtomicU64::new(0));
        let mut fs = Vec::with_capacity(n);
        for _ in 0..n {
            let ledger = ledger.clone();
            fs.push(
                d.sys
                    .submit_thread(opts.clone(), move |_: &TaskContext| racy_increment(&ledger))?,
            );
        }
        let mut errors = 0;
        for f in fs {
            errors += usize::from(f.wait().is_err());
            d.bar.inc(1);
        }
        Ok((ledger.load(Ordering::SeqCst), errors))
    };
    let (locked, errors) = run(TaskOptions::new()
        .lock("ledger")
        .lock_timeout(Duration::from_secs(30)))?;
    let (unlocked, _) = run(TaskOptions::new())?;
    Ok(Outcome {
        scenario: "lock",
        expected: format!("ledger = {n} ({n} racy increments under lock \"ledger\")"),
        actual: format!("ledger = {locked} (without the lock: {unlocked})"),
        ok: locked == n as u64 && errors == 0,
    })
}

/// Limit: tasks naming the concurrency limit "db" with 2 permits never run more
/// than 2 at a time, even with 4 threads available.
fn limit(d: &Demo<'_>) -> anyhow::Result<Outcome> {
    let n = if d.quick { 8 } else { 16 };
    d.bar.inc_length(n as u64);
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut fs = Vec::with_capacity(n);
    for _ in 0..n {
        let (now, peak) = (now.clone(), peak.clone());
        fs.push(d.sys.submit_thread(
            TaskOptions::new().limit("db", 2),
            move |_: &TaskContext| {
                let in_flight = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(in_flight, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(5));
                now.fetch_sub(1, Ordering::SeqCst);
            },
        )?);
    }
    let mut errors = 0;
    for f in fs {
        errors += usize::from(f.wait().is_err());
        d.bar.inc(1);
    }
    let peak = peak.load(Ordering::SeqCst);
    Ok(Outcome {
        scenario: "limit",
        expected: format!("at most 2 of {n} \"db\" tasks at once"),
        actual: format!("peak {peak} at once, {errors} errors"),
        ok: (1..=2).contains(&peak) && errors == 0,
    })
}

/// Callbacks: `on_complete` delivers every result on the callback executor's
/// thread, never on a pool worker and never on the submitting thread.
fn callbacks(d: &Demo<'_>) -> anyhow::Result<Outcome> {
    let n = if d.quick { 20 } else { 50 };
    d.bar.inc_length(n as u64);
    let workers = Arc::new(Mutex::new(HashSet::<ThreadId>::new()));
    let (tx, rx) = mpsc::channel::<(ThreadId, Option<String>, u64)>();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let workers = workers.clone();
        let f = d
            .sys
            .submit_thread(TaskOptions::new(), move |_: &TaskContext| {
                workers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(thread::current().id());
                i * i
            })?;
        let tx = tx.clone();
        handles.push(f.on_complete(move |r: Result<u64, TaskError>| {
            let me = thread::current();
            let _ = tx.send((me.id(), me.name().map(String::from), r.unwrap_or(u64::MAX)));
        }));
    }
    drop(tx);
    let mut got = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(m) => {
                got.push(m);
                d.bar.inc(1);
            }
            Err(_) => break,
        }
    }
    drop(handles);
    let workers = workers.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let main = thread::current().id();
    let on_worker = got.iter().filter(|(t, _, _)| workers.contains(t)).count();
    let on_main = got.iter().filter(|(t, _, _)| *t == main).count();
    let sum: u64 = got.iter().map(|(_, _, v)| *v).sum();
    let want: u64 = (0..n as u64).map(|i| i * i).sum();
    let names: HashSet<String> = got
        .iter()
        .map(|(_, name, _)| name.clone().unwrap_or_else(|| "<unnamed>".into()))
        .collect();
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    Ok(Outcome {
        scenario: "callbacks",
        expected: format!("{n} results delivered off the workers"),
        actual: format!(
            "{} delivered on {}; {on_worker} on a worker",
            got.len(),
            names.join(", ")
        ),
        ok: got.len() == n && on_worker == 0 && on_main == 0 && sum == want,
    })
}

/// Async: an async task runs on the system next to the thread tasks and its
/// result arrives through the same kind of `TaskFuture`.
fn async_task(d: &Demo<'_>) -> anyhow::Result<Outcome> {
    d.bar.inc_length(1);
    let f = d.sys.submit_async(
        TaskOptions::new().name("fetch"),
        |ctx: TaskContext| async move {
            let mut total = 0u64;
            for step in 1..=3u64 {
                tokio::time::sleep(Duration::from_millis(2)).await;
                total += step;
            }
            total + u64::from(ctx.attempt()) * 100
        },
    )?;
    let r = f.wait();
    d.bar.inc(1);
    Ok(Outcome {
        scenario: "async",
        expected: "Ok(106) after three awaits".into(),
        actual: describe(&r),
        ok: matches!(r, Ok(106)),
    })
}

/// Stats: after shutdown, the system's counters agree with what the scenarios
/// did (exact counts of the deliberate failures).
pub(crate) fn stats_agree(s: &Stats) -> Outcome {
    let want = [
        ("failed", 1, s.failed),
        ("panicked", 1, s.panicked),
        // The thread timeout and the process timeout.
        ("timed_out", 2, s.timed_out),
        ("worker_died", 1, s.worker_died),
        ("cancelled", 1, s.cancelled),
        ("retried", 3, s.retried),
        ("pending", 0, s.pending()),
    ];
    let ok = want.iter().all(|(_, w, got)| *w == *got) && s.submitted == s.resolved();
    let fmt = |pick: fn(&(&str, u64, u64)) -> u64| {
        want.iter()
            .map(|w| format!("{}={}", w.0, pick(w)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    Outcome {
        scenario: "stats",
        expected: fmt(|w| w.1),
        actual: fmt(|w| w.2),
        ok,
    }
}
