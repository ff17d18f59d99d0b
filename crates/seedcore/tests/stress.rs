//! 200,000 tasks of random priority, with random panics, errors, retries,
//! timeouts and cancels: every future resolves exactly once, with the
//! outcome its kind calls for, and the stats add up to the same counts.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use seedcore::{
    ConcurrentSystem, ExecutorKind, Priority, RetryOn, RetryPolicy, ShutdownMode, TaskError,
    TaskFuture, TaskOptions,
};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TASKS: usize = 200_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Value,
    Panic,
    /// Panics on the first attempt; retried on panic.
    PanicThenValue,
    /// Fails twice, then succeeds on the third attempt.
    FlakyThenValue,
    /// Fails on every one of its three attempts.
    AlwaysFails,
    /// Blocks past its 2 ms timeout without looking at its token.
    Stuck,
    /// Runs past its 2 ms timeout, polling its token.
    Cooperative,
    /// Cancelled right after it is submitted.
    Cancelled,
}

fn pick(rng: &mut StdRng) -> Kind {
    match rng.gen_range(0..10_000) {
        0..=149 => Kind::Panic,
        150..=299 => Kind::PanicThenValue,
        300..=449 => Kind::FlakyThenValue,
        450..=599 => Kind::AlwaysFails,
        600..=609 => Kind::Stuck,
        610..=629 => Kind::Cooperative,
        630..=829 => Kind::Cancelled,
        _ => Kind::Value,
    }
}

fn submit(sys: &ConcurrentSystem, i: u64, kind: Kind, priority: Priority) -> TaskFuture<u64> {
    let base = TaskOptions::new().priority(priority);
    let out = match kind {
        Kind::Value | Kind::Cancelled => sys.submit_thread(base, move |_| i),
        Kind::Panic => sys.submit_thread(base, move |_| -> u64 { panic!("stress panic {i}") }),
        Kind::PanicThenValue => sys.submit_thread(
            base.retry(RetryPolicy::retries(1).on(RetryOn::PANIC)),
            move |cx| {
                if cx.attempt() == 1 {
                    panic!("first attempt of {i}");
                }
                i
            },
        ),
        Kind::FlakyThenValue => {
            sys.submit_thread_fallible(base.retry(RetryPolicy::retries(2)), move |cx| {
                if cx.attempt() < 3 {
                    Err("flaky")
                } else {
                    Ok(i)
                }
            })
        }
        Kind::AlwaysFails => sys.submit_thread_fallible(
            base.retry(RetryPolicy::retries(2)),
            move |_| -> Result<u64, String> { Err(format!("broken {i}")) },
        ),
        Kind::Stuck => sys.submit_thread(base.timeout(Duration::from_millis(2)), move |_| {
            std::thread::sleep(Duration::from_millis(20));
            i
        }),
        Kind::Cooperative => sys.submit_thread(base.timeout(Duration::from_millis(2)), move |cx| {
            while !cx.is_cancelled() {
                std::thread::sleep(Duration::from_micros(200));
            }
            i
        }),
    };
    out.expect("the system is open")
}

fn check(
    kind: Kind,
    i: u64,
    cancelled_first: bool,
    r: &Result<u64, TaskError>,
) -> Result<(), String> {
    let ok = match (kind, r) {
        (Kind::Value | Kind::PanicThenValue | Kind::FlakyThenValue, Ok(v)) => *v == i,
        (Kind::Panic, Err(TaskError::Panicked(m))) => m == &format!("stress panic {i}"),
        (Kind::AlwaysFails, Err(TaskError::Failed(e))) => e.to_string() == format!("broken {i}"),
        (Kind::Stuck | Kind::Cooperative, Err(TaskError::TimedOut(d))) => {
            *d == Duration::from_millis(2)
        }
        (Kind::Cancelled, Err(TaskError::Cancelled)) => cancelled_first,
        (Kind::Cancelled, Ok(v)) => !cancelled_first && *v == i,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "task {i} ({kind:?}, cancel won: {cancelled_first}) resolved {r:?}"
        ))
    }
}

#[test]
fn two_hundred_thousand_mixed_tasks_resolve_exactly_once_and_add_up() {
    // Thousands of panics are expected; keep the output readable.
    std::panic::set_hook(Box::new(|_| {}));
    let sys = ConcurrentSystem::builder()
        .name("stress")
        .core_threads(2)
        .max_threads(16)
        .build()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(0x5eed_c0de);
    // Every task resolves through a callback or a wait; each bumps its own
    // slot, so a second resolution would show as a 2.
    let seen: Arc<Vec<AtomicU8>> = Arc::new((0..TASKS).map(|_| AtomicU8::new(0)).collect());
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut waited = Vec::new();
    let mut kinds = Vec::with_capacity(TASKS);
    let mut cancel_won = vec![false; TASKS];
    let mut handles = Vec::new();

    for (idx, won) in cancel_won.iter_mut().enumerate() {
        let i = idx as u64;
        let kind = pick(&mut rng);
        kinds.push(kind);
        let prio = Priority::new(rng.gen_range(0..=10)).unwrap();
        let fut = submit(&sys, i, kind, prio);
        if kind == Kind::Cancelled {
            *won = fut.cancel();
        }
        if rng.gen_bool(0.2) {
            let (seen, failures) = (seen.clone(), failures.clone());
            let won = *won;
            handles.push(fut.on_complete(move |r| {
                seen[idx].fetch_add(1, Ordering::SeqCst);
                if let Err(e) = check(kind, i, won, &r) {
                    failures.lock().unwrap().push(e);
                }
            }));
        } else {
            waited.push((idx, fut));
        }
    }

    for (idx, fut) in waited {
        let r = fut.wait();
        seen[idx].fetch_add(1, Ordering::SeqCst);
        if let Err(e) = check(kinds[idx], idx as u64, cancel_won[idx], &r) {
            failures.lock().unwrap().push(e);
        }
    }
    // Callbacks run on the callback thread; wait until each handle is
    // resolved, then for the callback thread to catch up.
    for h in &handles {
        while !h.is_done() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let report = sys.shutdown(ShutdownMode::Graceful);
    assert!(!report.timed_out, "{report:?}");

    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} wrong outcomes, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let twice: Vec<usize> = (0..TASKS)
        .filter(|&i| seen[i].load(Ordering::SeqCst) != 1)
        .collect();
    assert!(
        twice.is_empty(),
        "tasks not resolved exactly once: {:?}",
        &twice[..twice.len().min(10)]
    );

    let count = |k: Kind| kinds.iter().filter(|&&x| x == k).count() as u64;
    let cancelled = cancel_won.iter().filter(|&&w| w).count() as u64;
    let s = sys.stats();
    assert_eq!(s.submitted, TASKS as u64);
    assert_eq!(s.pending(), 0, "{s:?}");
    assert_eq!(s.panicked, count(Kind::Panic));
    assert_eq!(s.failed, count(Kind::AlwaysFails));
    assert_eq!(s.timed_out, count(Kind::Stuck) + count(Kind::Cooperative));
    assert_eq!(s.cancelled, cancelled);
    assert_eq!(
        s.completed,
        count(Kind::Value)
            + count(Kind::PanicThenValue)
            + count(Kind::FlakyThenValue)
            + count(Kind::Cancelled)
            - cancelled
    );
    assert_eq!(
        s.retried,
        count(Kind::PanicThenValue)
            + 2 * count(Kind::FlakyThenValue)
            + 2 * count(Kind::AlwaysFails)
    );
    assert_eq!(s.lock_timeouts + s.shutdown, 0);
    assert_eq!(s.resolved(), s.submitted);
    // Every kind really occurred, so each branch above was exercised.
    for k in [
        Kind::Panic,
        Kind::Stuck,
        Kind::Cooperative,
        Kind::Cancelled,
        Kind::AlwaysFails,
    ] {
        assert!(count(k) > 0, "{k:?} never drawn");
    }
    assert!(
        handles.iter().all(|h| h.status().is_done()),
        "every callback-tracked task is resolved"
    );
    let threads = s
        .executor(ExecutorKind::Threads)
        .expect("a thread pool row");
    assert_eq!(threads.workers, 0, "no pool thread outlives the shutdown");
}
