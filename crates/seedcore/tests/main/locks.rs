//! Behaviour of named locks and concurrency limits: mutual exclusion,
//! limits, no deadlock across lock orders, lock timeouts, permit conflicts,
//! and release after failures.

use crate::common;

use common::{eventually, Concurrency, Gate, LONG, PANIC_MARKER};
use seedcore::{ConcurrentSystem, SubmitError, TaskError, TaskFuture, TaskOptions, TaskStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Submits a thread task holding `lock` until `release` opens; returns once
/// it runs.
fn hold_lock(system: &ConcurrentSystem, lock: &str, release: &Gate) -> TaskFuture<()> {
    let started = Gate::new();
    let (s, r) = (started.clone(), release.clone());
    let fut = system
        .submit_thread(TaskOptions::new().lock(lock), move |_| {
            s.open();
            assert!(r.wait(), "holder never released");
        })
        .unwrap();
    assert!(started.wait(), "the holder did not start");
    fut
}

/// Waits for `fut` with a generous bound; a hang is a failure, not a stuck
/// test.
fn wait_ok<T: Send + 'static>(fut: TaskFuture<T>) -> T {
    match fut.wait_timeout(LONG) {
        Ok(r) => r.expect("task failed"),
        Err(f) => panic!("task {} did not resolve (status {:?})", f.id(), f.status()),
    }
}

#[test]
fn tasks_sharing_a_lock_never_overlap() {
    let system = common::system("l-mutex", 4, 4);
    let conc = Concurrency::new();
    let futs: Vec<_> = (0..40)
        .map(|_| {
            let conc = conc.clone();
            system
                .submit_thread(TaskOptions::new().lock("ledger"), move |_| {
                    conc.enter();
                    std::thread::sleep(Duration::from_millis(1));
                    conc.leave();
                })
                .unwrap()
        })
        .collect();
    for f in futs {
        wait_ok(f);
    }
    assert_eq!(conc.max(), 1, "two holders of one lock ran at once");
}

#[test]
fn a_lock_is_shared_by_thread_and_async_tasks() {
    let system = common::system("l-mixed", 3, 4);
    let conc = Concurrency::new();
    let mut futs = Vec::new();
    for i in 0..30 {
        let conc = conc.clone();
        let opts = TaskOptions::new().lock("shared");
        if i % 2 == 0 {
            futs.push(
                system
                    .submit_thread(opts, move |_| {
                        conc.enter();
                        std::thread::sleep(Duration::from_millis(1));
                        conc.leave();
                    })
                    .unwrap(),
            );
        } else {
            futs.push(
                system
                    .submit_async(opts, move |_| {
                        let conc = conc.clone();
                        async move {
                            conc.enter();
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            conc.leave();
                        }
                    })
                    .unwrap(),
            );
        }
    }
    for f in futs {
        wait_ok(f);
    }
    assert_eq!(conc.max(), 1);
}

#[test]
fn limit_of_two_never_exceeds_two_and_reaches_two() {
    let system = common::system("l-limit", 4, 4);
    let conc = Concurrency::new();
    let futs: Vec<_> = (0..12)
        .map(|_| {
            let conc = conc.clone();
            system
                .submit_thread(TaskOptions::new().limit("db", 2), move |_| {
                    conc.enter();
                    // Stay until a second holder has been seen (or give up
                    // after a while), so that reaching 2 is not left to luck.
                    eventually(Duration::from_secs(2), || conc.max() >= 2);
                    std::thread::sleep(Duration::from_millis(3));
                    conc.leave();
                })
                .unwrap()
        })
        .collect();
    for f in futs {
        wait_ok(f);
    }
    assert_eq!(conc.max(), 2);
}

#[test]
fn multiple_locks_in_different_orders_do_not_deadlock() {
    let system = common::system("l-order", 4, 4);
    let (ca, cb) = (Concurrency::new(), Concurrency::new());
    let mut futs = Vec::new();
    for i in 0..80 {
        let opts = match i % 4 {
            0 => TaskOptions::new().lock("a").lock("b"),
            1 => TaskOptions::new().lock("b").lock("a"),
            2 => TaskOptions::new().lock("a"),
            _ => TaskOptions::new().lock("b"),
        };
        let (ca, cb) = (ca.clone(), cb.clone());
        let (uses_a, uses_b) = (i % 4 != 3, i % 4 != 2);
        futs.push(
            system
                .submit_thread(opts, move |_| {
                    if uses_a {
                        ca.enter();
                    }
                    if uses_b {
                        cb.enter();
                    }
                    std::thread::yield_now();
                    if uses_a {
                        ca.leave();
                    }
                    if uses_b {
                        cb.leave();
                    }
                })
                .unwrap(),
        );
    }
    for f in futs {
        wait_ok(f);
    }
    assert_eq!((ca.max(), cb.max()), (1, 1));
}

#[test]
fn lock_timeout_resolves_lock_timeout_naming_the_lock() {
    let system = common::system("l-timeout", 2, 4);
    let release = Gate::new();
    let holder = hold_lock(&system, "printer", &release);
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let start = Instant::now();
    let waiter = system
        .submit_thread(
            TaskOptions::new()
                .lock("printer")
                .lock_timeout(Duration::from_millis(50)),
            move |_| r.store(true, Ordering::SeqCst),
        )
        .unwrap();
    match waiter.wait_timeout(LONG) {
        Ok(Err(TaskError::LockTimeout { lock, waited })) => {
            assert_eq!(lock, "printer");
            assert!(waited >= Duration::from_millis(50), "{waited:?}");
        }
        Ok(other) => panic!("expected LockTimeout, got {other:?}"),
        Err(_) => panic!("the waiter never resolved"),
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(!ran.load(Ordering::SeqCst), "ran without its lock");
    assert_eq!(system.stats().lock_timeouts, 1);
    release.open();
    wait_ok(holder);
    // The lock works as before.
    let next = system
        .submit_thread(
            TaskOptions::new()
                .lock("printer")
                .lock_timeout(Duration::from_secs(5)),
            |_| 1u8,
        )
        .unwrap();
    assert_eq!(wait_ok(next), 1);
}

#[test]
fn a_task_waiting_for_a_lock_reports_waiting_for_lock_then_runs() {
    let system = common::system("l-waiting", 2, 4);
    let release = Gate::new();
    let holder = hold_lock(&system, "disk", &release);
    let waiter = system
        .submit_thread(TaskOptions::new().lock("disk"), |_| 2u8)
        .unwrap();
    assert!(
        eventually(LONG, || waiter.status() == TaskStatus::WaitingForLock),
        "status: {:?}",
        waiter.status()
    );
    release.open();
    wait_ok(holder);
    assert_eq!(wait_ok(waiter), 2);
}

#[test]
fn lock_waiters_do_not_occupy_pool_threads() {
    // One pool thread; the lock is held by an async task.
    let system = common::system("l-offworker", 1, 1);
    let started = Gate::new();
    let release = Arc::new(Notify::new());
    let (s, r) = (started.clone(), release.clone());
    let holder = system
        .submit_async(TaskOptions::new().lock("net"), move |_| {
            let (s, r) = (s.clone(), r.clone());
            async move {
                s.open();
                r.notified().await;
            }
        })
        .unwrap();
    assert!(started.wait());
    let waiter = system
        .submit_thread(TaskOptions::new().lock("net"), |_| "waited")
        .unwrap();
    assert!(eventually(LONG, || waiter.status() == TaskStatus::WaitingForLock));
    // The only pool thread is free for other work meanwhile.
    let other = system
        .submit_thread(TaskOptions::new(), |_| "free")
        .unwrap();
    assert_eq!(wait_ok(other), "free");
    release.notify_one();
    wait_ok(holder);
    assert_eq!(wait_ok(waiter), "waited");
}

#[test]
fn conflicting_permit_counts_are_invalid_options() {
    let system = common::system("l-conflict", 2, 4);
    wait_ok(
        system
            .submit_thread(TaskOptions::new().limit("pool", 2), |_| ())
            .unwrap(),
    );
    for opts in [
        TaskOptions::new().limit("pool", 3),
        TaskOptions::new().lock("pool"),
    ] {
        match system.submit_thread(opts, |_| ()) {
            Err(SubmitError::InvalidOptions(msg)) => assert!(msg.contains("pool"), "{msg}"),
            other => panic!("expected InvalidOptions, got {other:?}"),
        }
    }
    // The same count is still fine.
    wait_ok(
        system
            .submit_thread(TaskOptions::new().limit("pool", 2), |_| ())
            .unwrap(),
    );
}

#[test]
fn conflicting_permit_counts_are_rejected_even_before_the_first_task_runs() {
    let system = common::system("l-conflict2", 1, 1);
    let release = Gate::new();
    // Occupy the only worker so that nothing has taken the limit yet.
    let blocker = hold_lock(&system, "other", &release);
    let first = system
        .submit_thread(TaskOptions::new().limit("fresh", 2), |_| ())
        .unwrap();
    let second = system.submit_thread(TaskOptions::new().limit("fresh", 3), |_| ());
    release.open();
    wait_ok(blocker);
    wait_ok(first);
    match second {
        Err(SubmitError::InvalidOptions(msg)) => assert!(msg.contains("fresh"), "{msg}"),
        Ok(fut) => panic!(
            "a conflicting limit was accepted; it resolved {:?}",
            fut.wait_timeout(LONG).map_err(|_| "nothing")
        ),
        Err(other) => panic!("expected InvalidOptions, got {other:?}"),
    }
}

#[test]
fn locks_are_released_after_a_panicking_task() {
    let system = common::system("l-panic", 2, 4);
    let f = system
        .submit_thread(TaskOptions::new().lock("p"), |_| -> u8 {
            panic!("{PANIC_MARKER}: holding a lock")
        })
        .unwrap();
    assert!(f.wait().unwrap_err().is_panic());
    let next = system
        .submit_thread(
            TaskOptions::new()
                .lock("p")
                .lock_timeout(Duration::from_secs(5)),
            |_| 1u8,
        )
        .unwrap();
    assert_eq!(wait_ok(next), 1);
}

#[test]
fn locks_are_released_after_a_failing_task() {
    let system = common::system("l-fail", 2, 4);
    let f = system
        .submit_thread_fallible(TaskOptions::new().limit("f", 1), |_| -> Result<(), _> {
            Err("nope")
        })
        .unwrap();
    assert!(f.wait().unwrap_err().is_failed());
    let next = system
        .submit_thread(
            TaskOptions::new()
                .limit("f", 1)
                .lock_timeout(Duration::from_secs(5)),
            |_| 2u8,
        )
        .unwrap();
    assert_eq!(wait_ok(next), 2);
}

#[test]
fn locks_are_released_after_a_cancelled_async_task() {
    let system = common::system("l-acancel", 1, 2);
    let started = Gate::new();
    let s = started.clone();
    let f = system
        .submit_async(TaskOptions::new().lock("c"), move |_| {
            let s = s.clone();
            async move {
                s.open();
                std::future::pending::<()>().await;
            }
        })
        .unwrap();
    assert!(started.wait());
    assert!(f.cancel());
    let next = system
        .submit_thread(
            TaskOptions::new()
                .lock("c")
                .lock_timeout(Duration::from_secs(5)),
            |_| 3u8,
        )
        .unwrap();
    assert_eq!(wait_ok(next), 3);
}

#[test]
fn locks_are_released_after_an_async_timeout() {
    let system = common::system("l-atimeout", 1, 2);
    let f = system
        .submit_async(
            TaskOptions::new()
                .lock("t")
                .timeout(Duration::from_millis(30)),
            |_| std::future::pending::<()>(),
        )
        .unwrap();
    assert!(f.wait().unwrap_err().is_timeout());
    let next = system
        .submit_thread(
            TaskOptions::new()
                .lock("t")
                .lock_timeout(Duration::from_secs(5)),
            |_| 4u8,
        )
        .unwrap();
    assert_eq!(wait_ok(next), 4);
}

#[test]
fn a_cancelled_lock_waiter_does_not_keep_the_lock() {
    let system = common::system("l-cwaiter", 2, 4);
    let release = Gate::new();
    let holder = hold_lock(&system, "w", &release);
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let waiter = system
        .submit_thread(TaskOptions::new().lock("w"), move |_| {
            r.store(true, Ordering::SeqCst)
        })
        .unwrap();
    assert!(eventually(LONG, || waiter.status() == TaskStatus::WaitingForLock));
    assert!(waiter.cancel());
    release.open();
    wait_ok(holder);
    let next = system
        .submit_thread(
            TaskOptions::new()
                .lock("w")
                .lock_timeout(Duration::from_secs(5)),
            |_| 5u8,
        )
        .unwrap();
    assert_eq!(wait_ok(next), 5);
    assert!(waiter.wait().unwrap_err().is_cancelled());
    assert!(!ran.load(Ordering::SeqCst), "a cancelled waiter ran");
}

#[test]
fn a_timed_out_thread_task_keeps_its_lock_until_its_closure_returns() {
    let system = common::system("l-tokeep", 1, 3);
    let conc = Concurrency::new();
    let release = Gate::new();
    let (c, r) = (conc.clone(), release.clone());
    let stuck = system
        .submit_thread(
            TaskOptions::new()
                .lock("k")
                .timeout(Duration::from_millis(30)),
            move |_| {
                c.enter();
                r.wait();
                c.leave();
            },
        )
        .unwrap();
    assert!(stuck.wait().unwrap_err().is_timeout());
    // The closure still runs inside the lock: another holder must not
    // start (mutual exclusion outlives the deadline).
    let c = conc.clone();
    let next = system
        .submit_thread(
            TaskOptions::new()
                .lock("k")
                .lock_timeout(Duration::from_secs(5)),
            move |_| {
                c.enter();
                c.leave();
            },
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !next.is_done(),
        "took a lock still held by a running closure"
    );
    release.open();
    wait_ok(next);
    assert_eq!(conc.max(), 1);
}
