//! Behaviour of async tasks: values, timeouts and cancels that drop the
//! future, panics in the future and in its factory, retries with a fresh
//! future, and priority order when the async slots are full.

use crate::common;

use common::{DropSignal, Gate, MyError, LONG, PANIC_MARKER};
use rand::{Rng, SeedableRng};
use seedcore::{Priority, RetryOn, RetryPolicy, TaskError, TaskErrorKind, TaskOptions, TaskStatus};
use std::error::Error as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Panics with `what` (and the quiet marker); typed so that futures that
/// call it have an output type.
fn explode(what: &str) -> u8 {
    panic!("{PANIC_MARKER}: {what}")
}

/// Starts an async task that holds the system's only async slot until
/// `release` is notified; returns once it runs.
fn hold_the_async_slot(
    system: &seedcore::ConcurrentSystem,
) -> (seedcore::TaskFuture<()>, Arc<Notify>) {
    let release = Arc::new(Notify::new());
    let started = Gate::new();
    let (s, r) = (started.clone(), release.clone());
    let gate = system
        .submit_async(TaskOptions::new(), move |_| {
            let (s, r) = (s.clone(), r.clone());
            async move {
                s.open();
                r.notified().await;
            }
        })
        .unwrap();
    assert!(started.wait());
    (gate, release)
}

#[test]
fn async_task_returns_its_value() {
    let system = common::system("a-value", 1, 2);
    let fut = system
        .submit_async(TaskOptions::new(), |ctx| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            (ctx.attempt(), "page".len())
        })
        .unwrap();
    assert_eq!(fut.wait().unwrap(), (1, 4));
    assert_eq!(system.stats().completed, 1);
}

#[test]
fn async_timeout_drops_the_future() {
    let system = common::system("a-timeout", 1, 2);
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let fut = system
        .submit_async(
            TaskOptions::new().timeout(Duration::from_millis(50)),
            move |_| {
                let guard = DropSignal(tx.clone());
                async move {
                    let _guard = guard;
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    1u8
                }
            },
        )
        .unwrap();
    match fut.wait_timeout(LONG) {
        Ok(Err(TaskError::TimedOut(d))) => assert_eq!(d, Duration::from_millis(50)),
        Ok(other) => panic!("expected TimedOut, got {other:?}"),
        Err(_) => panic!("did not resolve at its deadline"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    rx.recv_timeout(LONG)
        .expect("the timed-out future was not dropped");
    assert_eq!(system.stats().timed_out, 1);
}

#[test]
fn async_panic_in_the_future_resolves_panicked() {
    let system = common::system("a-panic", 1, 2);
    let fut = system
        .submit_async(TaskOptions::new(), |_| async { explode("in the future") })
        .unwrap();
    match fut.wait() {
        Err(TaskError::Panicked(m)) => assert_eq!(m, format!("{PANIC_MARKER}: in the future")),
        other => panic!("expected Panicked, got {other:?}"),
    }
    // The runtime survives the panic.
    let after = system
        .submit_async(TaskOptions::new(), |_| async { 2u8 })
        .unwrap();
    assert_eq!(after.wait().unwrap(), 2);
}

#[test]
fn async_panic_in_the_factory_resolves_panicked() {
    let system = common::system("a-factory", 1, 2);
    let fut = system
        .submit_async(TaskOptions::new(), |ctx| {
            assert!(ctx.attempt() > 100, "{PANIC_MARKER}: in the factory");
            async { 0u8 }
        })
        .unwrap();
    match fut.wait() {
        Err(TaskError::Panicked(m)) => assert!(m.contains("in the factory"), "{m}"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(system.stats().panicked, 1);
    let after = system
        .submit_async(TaskOptions::new(), |_| async { 3u8 })
        .unwrap();
    assert_eq!(after.wait().unwrap(), 3);
}

#[test]
fn the_factory_runs_inside_the_async_runtime() {
    let system = common::system("a-factoryrt", 1, 2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    // Attempt 1 starts from the submitting thread, attempt 2 after a
    // back-off: both factories must see the system's runtime.
    let fut = system
        .submit_async_fallible(
            TaskOptions::new().retry(
                RetryPolicy::retries(1)
                    .backoff(seedcore::Backoff::Fixed(Duration::from_millis(10))),
            ),
            move |ctx| {
                s.lock().unwrap().push((
                    ctx.attempt(),
                    tokio::runtime::Handle::try_current().is_ok(),
                    common::thread_name(),
                ));
                async move {
                    if ctx.attempt() == 1 {
                        Err("retry me")
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .unwrap();
    fut.wait().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|(_, in_runtime, thread)| *in_runtime && thread.starts_with("a-factoryrt-async")),
        "factories ran outside the runtime: {seen:?} (attempt, runtime context, thread)"
    );
}

#[test]
fn a_factory_may_build_tokio_timers() {
    let system = common::system("a-sleep", 1, 2);
    // `tokio::time::sleep` needs a runtime when it is called, not polled.
    let fut = system
        .submit_async(TaskOptions::new(), |_| {
            tokio::time::sleep(Duration::from_millis(5))
        })
        .unwrap();
    match fut.wait_timeout(LONG) {
        Ok(r) => r.unwrap(),
        Err(_) => panic!("did not resolve"),
    }
}

#[test]
fn async_retry_builds_a_fresh_future_per_attempt() {
    let system = common::system("a-retry", 1, 2);
    let factory_calls = Arc::new(AtomicU32::new(0));
    let polls = Arc::new(Mutex::new(Vec::new()));
    let (c, p) = (factory_calls.clone(), polls.clone());
    let fut = system
        .submit_async_fallible(
            TaskOptions::new().retry(RetryPolicy::retries(5)),
            move |ctx| {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                let p = p.clone();
                async move {
                    p.lock().unwrap().push((n, ctx.attempt()));
                    if n < 3 {
                        Err(MyError(format!("attempt {n}")))
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .unwrap();
    assert_eq!(fut.wait().unwrap(), 3);
    assert_eq!(factory_calls.load(Ordering::SeqCst), 3);
    // Each future ran once, with the attempt number of its own attempt.
    assert_eq!(*polls.lock().unwrap(), vec![(1, 1), (2, 2), (3, 3)]);
    assert_eq!(system.stats().retried, 2);
}

#[test]
fn async_retry_on_timeout_gets_a_fresh_future() {
    let system = common::system("a-retryto", 1, 2);
    let (tx, rx) = mpsc::channel();
    let fut = system
        .submit_async(
            TaskOptions::new()
                .timeout(Duration::from_millis(40))
                .retry(RetryPolicy::retries(1).on(RetryOn::TIMEOUT)),
            move |ctx| {
                let guard = DropSignal(tx.clone());
                async move {
                    let _guard = guard;
                    if ctx.attempt() == 1 {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                    ctx.attempt()
                }
            },
        )
        .unwrap();
    assert_eq!(fut.wait().unwrap(), 2);
    // Both futures were dropped: the timed-out one and the finished one.
    rx.recv_timeout(LONG).unwrap();
    rx.recv_timeout(LONG).unwrap();
}

/// Pushes "dropped N" on `.0` when dropped: the end of attempt N's future.
struct Logged(Arc<Mutex<Vec<String>>>, u32);

impl Drop for Logged {
    fn drop(&mut self) {
        self.0.lock().unwrap().push(format!("dropped {}", self.1));
    }
}

#[test]
fn a_retry_waits_until_the_timed_out_future_that_still_polls_is_dropped() {
    // Attempt 1 blocks its driver inside a poll past its timeout, so the
    // retry begins while attempt 1's future still exists. Two attempts of
    // one task never run at once: attempt 2's future is built once attempt
    // 1's is dropped.
    let system = common::builder("a-retrybusy")
        .async_threads(2)
        .build()
        .unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (release, released) = mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let ev = events.clone();
    let fut = system
        .submit_async(
            TaskOptions::new()
                .timeout(Duration::from_millis(500))
                .retry(RetryPolicy::retries(1).on(RetryOn::TIMEOUT)),
            move |ctx| {
                let n = ctx.attempt();
                ev.lock().unwrap().push(format!("built {n}"));
                let guard = Logged(ev.clone(), n);
                let released = released.clone();
                async move {
                    let _guard = guard;
                    if n == 1 {
                        // Blocks the driver, as a future must not.
                        let _ = released.lock().unwrap().recv_timeout(LONG);
                    }
                    n
                }
            },
        )
        .unwrap();
    let waited = Instant::now();
    while system.stats().attempts < 2 {
        assert!(waited.elapsed() < LONG, "attempt 2 never began");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(events.lock().unwrap().clone(), ["built 1"]);
    release.send(()).unwrap();
    assert_eq!(fut.wait_timeout(LONG).ok().unwrap().unwrap(), 2);
    let events = events.lock().unwrap().clone();
    assert_eq!(events, ["built 1", "dropped 1", "built 2", "dropped 2"]);
    let stats = system.stats();
    assert_eq!(
        (stats.retried, stats.timed_out),
        (1, 0),
        "one retry, which succeeded"
    );
}

#[test]
fn async_fallible_error_resolves_failed_with_source() {
    let system = common::system("a-failed", 1, 2);
    let fut = system
        .submit_async_fallible(TaskOptions::new(), |_| async {
            Err::<u8, _>(MyError("bad gateway".into()))
        })
        .unwrap();
    let err = fut.wait().unwrap_err();
    assert_eq!(err.kind(), TaskErrorKind::Failed);
    assert_eq!(err.to_string(), "task failed: my error: bad gateway");
    assert_eq!(
        err.source().and_then(|s| s.downcast_ref::<MyError>()),
        Some(&MyError("bad gateway".into()))
    );
    let ok = system
        .submit_async_fallible(TaskOptions::new(), |_| async { Ok::<_, MyError>(5u8) })
        .unwrap();
    assert_eq!(ok.wait().unwrap(), 5);
}

#[test]
fn cancel_of_a_running_async_task_drops_its_future() {
    let system = common::system("a-cancel", 1, 2);
    let started = Gate::new();
    let (tx, rx) = mpsc::channel();
    let s = started.clone();
    let fut = system
        .submit_async(TaskOptions::new(), move |_| {
            let guard = DropSignal(tx.clone());
            let s = s.clone();
            async move {
                let _guard = guard;
                s.open();
                std::future::pending::<()>().await;
            }
        })
        .unwrap();
    assert!(started.wait());
    assert_eq!(fut.status(), TaskStatus::Running);
    assert!(fut.cancel());
    rx.recv_timeout(LONG)
        .expect("the cancelled future was not dropped");
    assert!(fut.wait().unwrap_err().is_cancelled());
    assert_eq!(system.stats().cancelled, 1);
    assert!(
        common::eventually(LONG, || system.stats().running == 0),
        "the cancelled attempt is still counted as running"
    );
}

#[test]
fn async_priority_orders_queued_tasks_when_slots_are_full() {
    let system = common::builder("a-prio")
        .max_async_tasks(1)
        .build()
        .unwrap();
    let (gate, release) = hold_the_async_slot(&system);

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut submitted = Vec::new();
    let mut futs = Vec::new();
    for seq in 0..40usize {
        let level: u8 = rng.gen_range(0..=10);
        submitted.push((level, seq));
        let order = order.clone();
        futs.push(
            system
                .submit_async(
                    TaskOptions::new().priority(Priority::new(level).unwrap()),
                    move |_| {
                        let order = order.clone();
                        async move { order.lock().unwrap().push((level, seq)) }
                    },
                )
                .unwrap(),
        );
    }
    let asyncs = common::row(&system.stats(), seedcore::ExecutorKind::Async);
    assert_eq!(asyncs.queued, 40);
    assert_eq!(asyncs.queue_depth.iter().sum::<usize>(), 40);
    release.notify_one();
    gate.wait().unwrap();
    for f in futs {
        f.wait().unwrap();
    }
    let mut expected = submitted;
    expected.sort_by_key(|&(level, _)| level);
    assert_eq!(*order.lock().unwrap(), expected);
}

#[test]
fn max_async_tasks_bounds_concurrent_attempts() {
    let system = common::builder("a-max")
        .max_async_tasks(2)
        .async_threads(2)
        .build()
        .unwrap();
    let conc = common::Concurrency::new();
    let futs: Vec<_> = (0..12)
        .map(|_| {
            let conc = conc.clone();
            system
                .submit_async(TaskOptions::new(), move |_| {
                    let conc = conc.clone();
                    async move {
                        conc.enter();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        conc.leave();
                    }
                })
                .unwrap()
        })
        .collect();
    for f in futs {
        f.wait().unwrap();
    }
    assert!(conc.max() <= 2, "{} async attempts at once", conc.max());
    assert!(conc.max() >= 1);
}

#[test]
fn cancel_of_a_queued_async_task_never_polls_it() {
    let system = common::builder("a-cancelq")
        .max_async_tasks(1)
        .build()
        .unwrap();
    let (gate, release) = hold_the_async_slot(&system);
    let factory_calls = Arc::new(AtomicU32::new(0));
    let c = factory_calls.clone();
    let victim = system
        .submit_async(TaskOptions::new(), move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .unwrap();
    assert_eq!(victim.status(), TaskStatus::Queued);
    assert!(victim.cancel());
    release.notify_one();
    gate.wait().unwrap();
    let after = system
        .submit_async(TaskOptions::new(), |_| async { 1u8 })
        .unwrap();
    assert_eq!(after.wait().unwrap(), 1);
    assert!(victim.wait().unwrap_err().is_cancelled());
    assert_eq!(factory_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_and_thread_tasks_are_awaitable_inside_a_tokio_app() {
    let system = common::system("a-inapp", 1, 2);
    let a = system
        .submit_async(TaskOptions::new(), |_| async { 20u32 })
        .unwrap();
    let t = system.submit_thread(TaskOptions::new(), |_| 22u32).unwrap();
    assert_eq!(a.await.unwrap() + t.await.unwrap(), 42);
    // Dropping the system inside a runtime must not panic.
    drop(system);
}

#[test]
fn an_async_task_that_blocks_on_an_async_future_with_one_driver_still_resolves() {
    // The mistake: `wait()` instead of `.await` inside an async task, with
    // every driver taken. The blocked driver gets a stand-in meanwhile.
    let system = Arc::new(
        seedcore::ConcurrentSystem::builder()
            .core_threads(1)
            .async_threads(1)
            .build()
            .unwrap(),
    );
    let inner = system.clone();
    let outer = system
        .submit_async(TaskOptions::new(), move |_| {
            let sys = inner.clone();
            async move {
                let a = sys
                    .submit_async(TaskOptions::new(), |_| async { 40u32 })
                    .unwrap();
                let b = sys
                    .submit_async(TaskOptions::new(), |_| async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        2u32
                    })
                    .unwrap();
                a.wait().unwrap() + b.wait().unwrap()
            }
        })
        .unwrap();
    let got = outer
        .wait_timeout(Duration::from_secs(30))
        .expect("a blocking wait inside an async task deadlocked");
    assert_eq!(got.unwrap(), 42);
    // The stand-in retires once nobody blocks.
    assert!(
        (0..400).any(|_| {
            std::thread::sleep(Duration::from_millis(25));
            common::row(&system.stats(), seedcore::ExecutorKind::Async).workers == 1
        }),
        "stand-in drivers left: {:?}",
        common::row(&system.stats(), seedcore::ExecutorKind::Async)
    );
}

#[test]
fn wakes_cancels_and_deadlines_racing_on_many_futures_resolve_each_and_drop_each() {
    // Futures woken from their own poll (yields) and from tokio's timer
    // thread, cancelled from this thread and timed out by the scheduler's,
    // all at once: every task resolves with what its kind allows, and every
    // future that was built is dropped once.
    let system = common::builder("a-storm").async_threads(2).build().unwrap();
    let built = Arc::new(AtomicU32::new(0));
    let (dropped_tx, dropped_rx) = mpsc::channel();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut futs = Vec::new();
    for i in 0..2_000u32 {
        let kind = rng.gen_range(0..4u8);
        let opts = if kind == 3 {
            TaskOptions::new().timeout(Duration::from_micros(rng.gen_range(50..2_000)))
        } else {
            TaskOptions::new()
        };
        let (b, d) = (built.clone(), dropped_tx.clone());
        let fut = system
            .submit_async(opts, move |_| {
                b.fetch_add(1, Ordering::SeqCst);
                let guard = DropSignal(d.clone());
                async move {
                    let _guard = guard;
                    for _ in 0..i % 5 {
                        tokio::task::yield_now().await;
                    }
                    tokio::time::sleep(Duration::from_micros(u64::from(i % 7) * 100)).await;
                    i
                }
            })
            .unwrap();
        futs.push((i, kind, fut));
    }
    for (_, kind, fut) in &futs {
        if *kind == 2 {
            fut.cancel();
        }
    }
    for (i, kind, fut) in futs {
        let out = fut
            .wait_timeout(LONG)
            .unwrap_or_else(|_| panic!("task {i} never resolved"));
        match (kind, out) {
            (_, Ok(v)) => assert_eq!(v, i),
            (2, Err(e)) => assert!(e.is_cancelled(), "task {i}: {e:?}"),
            (3, Err(TaskError::TimedOut(_))) => {}
            (_, Err(e)) => panic!("task {i} of kind {kind}: {e:?}"),
        }
    }
    // Cancelled and timed-out futures are dropped by a driver after their
    // task resolved.
    let mut dropped = 0;
    while dropped != built.load(Ordering::SeqCst) {
        dropped_rx.recv_timeout(LONG).unwrap_or_else(|_| {
            let built = built.load(Ordering::SeqCst);
            panic!("{built} futures built, {dropped} dropped")
        });
        dropped += 1;
    }
}
