//! Behaviour of shutdown (graceful, immediate, by drop), services, and the
//! stats identity after a mixed run.

use crate::common;

use common::{eventually, spin_until_cancelled, DropSignal, Gate, LONG, PANIC_MARKER};
use seedcore::{
    Backoff, RetryPolicy, ShutdownMode, SubmitError, TaskError, TaskErrorKind, TaskFuture,
    TaskOptions, TaskStatus,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Panics quietly (the marker silences the hook).
fn explode() {
    panic!("{PANIC_MARKER}: stats")
}

/// The result of `fut`, failing the test if it does not resolve in time.
fn resolve<T: Send + 'static>(fut: TaskFuture<T>) -> Result<T, TaskError> {
    match fut.wait_timeout(LONG) {
        Ok(r) => r,
        Err(f) => panic!("task {} never resolved (status {:?})", f.id(), f.status()),
    }
}

/// Occupies the single worker with a task that returns once it sees its
/// cancellation token (an immediate shutdown sets it).
fn busy_until_cancelled(system: &seedcore::ConcurrentSystem) -> (TaskFuture<bool>, Gate) {
    let started = Gate::new();
    let s = started.clone();
    let fut = system
        .submit_thread(TaskOptions::new(), move |ctx| {
            s.open();
            spin_until_cancelled(|| ctx.is_cancelled())
        })
        .unwrap();
    assert!(started.wait(), "the busy task did not start");
    (fut, started)
}

#[test]
fn graceful_shutdown_waits_for_queued_work() {
    let system = common::system("s-graceful", 1, 2);
    let done = Arc::new(AtomicUsize::new(0));
    let futs: Vec<_> = (0..20u32)
        .map(|i| {
            let done = done.clone();
            system
                .submit_thread(TaskOptions::new(), move |_| {
                    std::thread::sleep(Duration::from_millis(2));
                    done.fetch_add(1, Ordering::SeqCst);
                    i
                })
                .unwrap()
        })
        .collect();
    let asyncs: Vec<_> = (0..5u32)
        .map(|i| {
            system
                .submit_async(TaskOptions::new(), move |_| async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    i
                })
                .unwrap()
        })
        .collect();
    let report = system.shutdown(ShutdownMode::Graceful);
    assert_eq!(report.mode, ShutdownMode::Graceful);
    assert!(!report.timed_out);
    assert_eq!((report.cancelled, report.detached_threads), (0, 0));
    assert_eq!(done.load(Ordering::SeqCst), 20, "shutdown returned early");
    for (i, f) in futs.into_iter().enumerate() {
        assert!(f.is_done());
        assert_eq!(f.wait().unwrap(), i as u32);
    }
    for (i, f) in asyncs.into_iter().enumerate() {
        assert_eq!(resolve(f).unwrap(), i as u32);
    }
    assert_eq!(system.stats().completed, 25);
}

#[test]
fn graceful_shutdown_waits_for_a_retry_in_backoff() {
    let system = common::system("s-gbackoff", 1, 2);
    let fut = system
        .submit_thread_fallible(
            TaskOptions::new()
                .retry(RetryPolicy::retries(1).backoff(Backoff::Fixed(Duration::from_millis(80)))),
            |ctx| {
                if ctx.attempt() == 1 {
                    Err("first")
                } else {
                    Ok(ctx.attempt())
                }
            },
        )
        .unwrap();
    let report = system.shutdown(ShutdownMode::Graceful);
    assert!(!report.timed_out);
    assert_eq!(resolve(fut).unwrap(), 2);
}

#[test]
fn immediate_shutdown_cancels_queued_tasks_and_counts_them() {
    let system = common::system("s-immediate", 1, 1);
    let (busy, _) = busy_until_cancelled(&system);
    let ran = Arc::new(AtomicUsize::new(0));
    let queued: Vec<_> = (0..10)
        .map(|_| {
            let ran = ran.clone();
            system
                .submit_thread(TaskOptions::new(), move |_| {
                    ran.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap()
        })
        .collect();
    let report = system.shutdown(ShutdownMode::Immediate);
    assert_eq!(report.mode, ShutdownMode::Immediate);
    assert_eq!(report.cancelled, 10);
    assert!(report.took < Duration::from_secs(5), "{:?}", report.took);
    for f in queued {
        assert!(resolve(f).unwrap_err().is_cancelled());
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a queued task ran");
    assert!(resolve(busy).unwrap(), "the running task saw its token");
    assert_eq!(system.stats().cancelled, 10);
}

#[test]
fn a_running_thread_task_observes_cancellation_during_an_immediate_shutdown() {
    let system = common::system("s-runcancel", 2, 2);
    let saw = Gate::new();
    let started = Gate::new();
    let (s, w) = (started.clone(), saw.clone());
    let fut = system
        .submit_thread(TaskOptions::new(), move |ctx| {
            assert!(!ctx.is_cancelled(), "cancelled before the shutdown");
            s.open();
            if spin_until_cancelled(|| ctx.is_cancelled()) {
                w.open();
            }
        })
        .unwrap();
    assert!(started.wait());
    let report = system.shutdown(ShutdownMode::Immediate);
    assert!(
        saw.is_open(),
        "shutdown returned before the task saw its token"
    );
    assert_eq!(report.detached_threads, 0);
    resolve(fut).unwrap();
}

#[test]
fn immediate_shutdown_drops_running_async_futures() {
    let system = common::system("s-async", 1, 2);
    let started = Gate::new();
    let (tx, rx) = mpsc::channel();
    let s = started.clone();
    let fut = system
        .submit_async(TaskOptions::new(), move |_| {
            let (guard, s) = (DropSignal(tx.clone()), s.clone());
            async move {
                let _guard = guard;
                s.open();
                std::future::pending::<()>().await;
            }
        })
        .unwrap();
    assert!(started.wait());
    let report = system.shutdown(ShutdownMode::Immediate);
    assert!(report.took < Duration::from_secs(5), "{:?}", report.took);
    rx.recv_timeout(LONG).expect("the future was not dropped");
    assert!(resolve(fut).unwrap_err().is_cancelled());
}

#[test]
fn immediate_shutdown_resolves_tasks_waiting_to_retry() {
    let system = common::system("s-backoff", 1, 2);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let fut = system
        .submit_thread_fallible(
            TaskOptions::new()
                .retry(RetryPolicy::retries(3).backoff(Backoff::Fixed(Duration::from_secs(30)))),
            move |_| -> Result<(), &'static str> {
                c.fetch_add(1, Ordering::SeqCst);
                Err("later")
            },
        )
        .unwrap();
    assert!(eventually(LONG, || fut.status() == TaskStatus::RetryPending));
    let report = system.shutdown(ShutdownMode::Immediate);
    assert!(report.took < Duration::from_secs(5), "{:?}", report.took);
    assert!(resolve(fut).unwrap_err().is_cancelled());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a retry ran after shutdown"
    );
}

#[test]
fn immediate_shutdown_resolves_lock_waiters() {
    let system = common::system("s-lockwait", 2, 2);
    let started = Gate::new();
    let s = started.clone();
    let holder = system
        .submit_thread(TaskOptions::new().lock("r"), move |ctx| {
            s.open();
            spin_until_cancelled(|| ctx.is_cancelled())
        })
        .unwrap();
    assert!(started.wait());
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            system
                .submit_thread(TaskOptions::new().lock("r"), |_| ())
                .unwrap()
        })
        .collect();
    assert!(eventually(LONG, || waiters
        .iter()
        .all(|w| w.status() == TaskStatus::WaitingForLock)));
    let report = system.shutdown(ShutdownMode::Immediate);
    assert_eq!(report.cancelled, 3);
    for w in waiters {
        assert!(resolve(w).unwrap_err().is_cancelled());
    }
    assert!(resolve(holder).unwrap());
}

#[test]
fn immediate_shutdown_report_counts_every_task_it_cancelled() {
    let system = common::system("s-report", 1, 1);
    let (busy, _) = busy_until_cancelled(&system);
    // One queued task, one waiting to retry, one running async task.
    let queued = system.submit_thread(TaskOptions::new(), |_| ()).unwrap();
    let retrying = system
        .submit_async_fallible(
            TaskOptions::new()
                .retry(RetryPolicy::retries(1).backoff(Backoff::Fixed(Duration::from_secs(30)))),
            |_| async { Err::<(), _>("later") },
        )
        .unwrap();
    let started = Gate::new();
    let s = started.clone();
    let running = system
        .submit_async(TaskOptions::new(), move |_| {
            s.open();
            std::future::pending::<()>()
        })
        .unwrap();
    assert!(started.wait());
    assert!(eventually(LONG, || retrying.status() == TaskStatus::RetryPending));
    let report = system.shutdown(ShutdownMode::Immediate);
    for f in [queued, retrying, running] {
        assert!(resolve(f).unwrap_err().is_cancelled());
    }
    resolve(busy).unwrap();
    let st = system.stats();
    assert_eq!(st.cancelled, 3);
    assert_eq!(
        report.cancelled, 3,
        "the report counts {} of the 3 tasks the shutdown cancelled",
        report.cancelled
    );
}

#[test]
fn graceful_shutdown_out_of_time_cancels_the_rest() {
    let system = common::builder("s-gtimeout")
        .core_threads(1)
        .max_threads(1)
        .shutdown_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let (busy, _) = busy_until_cancelled(&system);
    let queued: Vec<_> = (0..4)
        .map(|_| system.submit_thread(TaskOptions::new(), |_| ()).unwrap())
        .collect();
    let start = Instant::now();
    let report = system.shutdown(ShutdownMode::Graceful);
    assert!(report.timed_out);
    assert_eq!(report.cancelled, 4);
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert!(start.elapsed() < Duration::from_secs(5));
    for f in queued {
        assert!(resolve(f).unwrap_err().is_cancelled());
    }
    assert!(resolve(busy).unwrap(), "the running task saw its token");
}

#[test]
fn an_immediate_shutdown_during_a_graceful_one_makes_it_immediate() {
    // The graceful shutdown would wait up to its (long) timeout for the
    // running task; the immediate one asked for meanwhile ends the wait.
    let system = Arc::new(
        common::builder("s-escalate")
            .core_threads(1)
            .max_threads(1)
            .shutdown_timeout(Duration::from_secs(120))
            .build()
            .unwrap(),
    );
    let (busy, _) = busy_until_cancelled(&system);
    let queued = system.submit_thread(TaskOptions::new(), |_| ()).unwrap();
    let graceful = system.shutdown_background(ShutdownMode::Graceful);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !graceful.is_done(),
        "the graceful shutdown waits for the running task"
    );
    let start = Instant::now();
    let report = system.shutdown(ShutdownMode::Immediate);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(report.cancelled, 1);
    assert!(graceful.wait_timeout(LONG).is_some());
    assert!(resolve(queued).unwrap_err().is_cancelled());
    assert!(resolve(busy).unwrap(), "the running task saw its token");
}

#[test]
fn submissions_after_shutdown_are_system_closed() {
    let system = common::system("s-closed", 1, 2);
    assert!(!system.is_closed());
    system.shutdown(ShutdownMode::Graceful);
    assert!(system.is_closed());
    assert_eq!(
        system
            .submit_thread(TaskOptions::new(), |_| ())
            .unwrap_err(),
        SubmitError::SystemClosed
    );
    assert_eq!(
        system
            .submit_thread_fallible(TaskOptions::new(), |_| Ok::<_, String>(()))
            .unwrap_err(),
        SubmitError::SystemClosed
    );
    assert_eq!(
        system
            .submit_async(TaskOptions::new(), |_| async {})
            .unwrap_err(),
        SubmitError::SystemClosed
    );
    assert_eq!(
        system
            .submit_async_fallible(TaskOptions::new(), |_| async { Ok::<_, String>(()) })
            .unwrap_err(),
        SubmitError::SystemClosed
    );
    assert_eq!(
        system.spawn_service("late", |_| ()).unwrap_err(),
        SubmitError::SystemClosed
    );
    assert_eq!(system.stats().submitted, 0);
}

#[test]
fn dropping_the_system_finishes_held_futures_gracefully() {
    let system = common::system("s-dropg", 1, 2);
    let futs: Vec<_> = (0..10u8)
        .map(|i| {
            system
                .submit_thread(TaskOptions::new(), move |_| {
                    std::thread::sleep(Duration::from_millis(2));
                    i
                })
                .unwrap()
        })
        .collect();
    drop(system);
    for (i, f) in futs.into_iter().enumerate() {
        assert!(f.is_done(), "drop returned before the task resolved");
        assert_eq!(f.wait().unwrap(), i as u8);
    }
}

#[test]
fn dropping_an_immediate_system_cancels_held_futures() {
    let system = common::builder("s-dropi")
        .core_threads(1)
        .max_threads(1)
        .shutdown_mode(ShutdownMode::Immediate)
        .build()
        .unwrap();
    let (busy, _) = busy_until_cancelled(&system);
    let futs: Vec<_> = (0..5)
        .map(|_| system.submit_thread(TaskOptions::new(), |_| ()).unwrap())
        .collect();
    drop(system);
    for f in futs {
        assert!(f.is_done());
        assert!(f.wait().unwrap_err().is_cancelled());
    }
    assert!(resolve(busy).unwrap());
}

#[test]
fn no_system_thread_is_left_after_shutdown() {
    const PREFIX: &str = "sd1-";
    if common::threads_named(PREFIX).is_none() {
        eprintln!("skipped: /proc/self/task is not available on this platform");
        return;
    }
    let system = common::system("sd1", 2, 4);
    let svc = system
        .spawn_service("svc", |ctx| spin_until_cancelled(|| ctx.is_cancelled()))
        .unwrap();
    let t = system.submit_thread(TaskOptions::new(), |_| 1u8).unwrap();
    let a = system
        .submit_async(TaskOptions::new(), |_| async { 2u8 })
        .unwrap();
    let (tx, rx) = mpsc::channel();
    system
        .submit_thread(TaskOptions::new().timeout(Duration::from_secs(5)), |_| 3u8)
        .unwrap()
        .on_complete(move |r| tx.send(r.unwrap()).unwrap());
    assert_eq!(resolve(t).unwrap(), 1);
    assert_eq!(resolve(a).unwrap(), 2);
    assert_eq!(rx.recv_timeout(LONG).unwrap(), 3);
    // A new thread names itself once it first runs: give them all time to.
    let expected = [
        "sd1-0",
        "sd1-1",
        "sd1-timer",
        "sd1-callbacks",
        "sd1-service-svc",
    ];
    let all_named = || {
        let names = common::threads_named(PREFIX).unwrap();
        expected.iter().all(|e| names.iter().any(|n| n == e))
            && names.iter().any(|n| n.starts_with("sd1-async"))
    };
    assert!(
        eventually(LONG, all_named),
        "expected {expected:?} and sd1-async*, found {:?}",
        common::threads_named(PREFIX)
    );
    let report = system.shutdown(ShutdownMode::Graceful);
    assert_eq!(report.detached_threads, 0);
    assert!(resolve(svc).unwrap());
    // A joined thread can linger in /proc for a moment after the join.
    assert!(
        eventually(Duration::from_secs(5), || common::threads_named(PREFIX)
            .unwrap()
            .is_empty()),
        "threads left: {:?}",
        common::threads_named(PREFIX)
    );
}

#[test]
fn shutdown_is_idempotent() {
    let system = Arc::new(common::system("s-twice", 1, 2));
    let f = system.submit_thread(TaskOptions::new(), |_| 1u8).unwrap();
    let first = system.shutdown(ShutdownMode::Graceful);
    let second = system.shutdown(ShutdownMode::Immediate);
    assert_eq!(first, second, "a second call returns the first report");
    assert_eq!(second.mode, ShutdownMode::Graceful);
    // Concurrent callers all get the same report.
    let reports: Vec<_> = (0..3)
        .map(|_| {
            let s = system.clone();
            std::thread::spawn(move || s.shutdown(ShutdownMode::Immediate))
        })
        .collect();
    for r in reports {
        assert_eq!(r.join().unwrap(), first);
    }
    assert_eq!(resolve(f).unwrap(), 1);
    drop(system); // the drop's shutdown is a no-op too
}

#[test]
fn concurrent_first_shutdowns_agree_on_one_report() {
    let system = Arc::new(common::system("s-race", 1, 2));
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (s, b) = (system.clone(), barrier.clone());
            std::thread::spawn(move || {
                b.wait();
                s.shutdown(if i % 2 == 0 {
                    ShutdownMode::Graceful
                } else {
                    ShutdownMode::Immediate
                })
            })
        })
        .collect();
    let reports: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(reports.iter().all(|r| *r == reports[0]), "{reports:?}");
}

#[test]
fn a_service_sees_cancellation_at_shutdown_and_its_future_resolves() {
    let system = common::system("s-service", 1, 2);
    let started = Gate::new();
    let s = started.clone();
    let svc = system
        .spawn_service("watch", move |ctx| {
            s.open();
            let name = common::thread_name();
            let saw = spin_until_cancelled(|| ctx.is_cancelled());
            (name, saw)
        })
        .unwrap();
    assert!(started.wait());
    assert!(!svc.is_done());
    let report = system.shutdown(ShutdownMode::Graceful);
    assert!(
        !report.timed_out,
        "the graceful shutdown waited on the service"
    );
    assert_eq!(report.detached_threads, 0);
    let (name, saw) = resolve(svc).unwrap();
    assert!(saw, "the service never saw its cancellation");
    assert_eq!(name, "s-service-service-watch");
}

#[test]
fn a_service_runs_outside_the_pool_capacity() {
    let system = common::system("s-svccap", 1, 1);
    let started = Gate::new();
    let s = started.clone();
    let svc = system
        .spawn_service("loop", move |ctx| {
            s.open();
            spin_until_cancelled(|| ctx.is_cancelled())
        })
        .unwrap();
    assert!(started.wait());
    let t = system.submit_thread(TaskOptions::new(), |_| 1u8).unwrap();
    assert_eq!(
        resolve(t).unwrap(),
        1,
        "the service took the only pool thread"
    );
    system.shutdown(ShutdownMode::Graceful);
    assert!(resolve(svc).unwrap());
}

#[test]
fn a_service_ignoring_cancellation_is_detached_and_resolves_system_shutdown() {
    let system = common::builder("s-stubborn")
        .shutdown_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let release = Gate::new();
    let exited = Arc::new(AtomicBool::new(false));
    let (r, e) = (release.clone(), exited.clone());
    let svc = system
        .spawn_service("stubborn", move |_| {
            r.wait();
            e.store(true, Ordering::SeqCst);
        })
        .unwrap();
    let report = system.shutdown(ShutdownMode::Graceful);
    assert_eq!(report.detached_threads, 1);
    assert!(report.took < Duration::from_secs(5));
    assert!(matches!(resolve(svc), Err(TaskError::SystemShutdown)));
    release.open();
    assert!(eventually(LONG, || exited.load(Ordering::SeqCst)));
    assert_eq!(system.stats().shutdown, 1);
}

#[test]
fn stats_add_up_after_a_mixed_run() {
    let system = common::builder("s-stats")
        .core_threads(2)
        .max_threads(4)
        .shutdown_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut outcomes: Vec<Result<(), TaskErrorKind>> = Vec::new();
    let mut record = |r: Result<(), TaskError>| outcomes.push(r.map_err(|e| e.kind()));

    // 6 successes (one after a retry).
    for i in 0..4u8 {
        record(
            resolve(
                system
                    .submit_thread(TaskOptions::new(), move |_| i)
                    .unwrap(),
            )
            .map(drop),
        );
    }
    record(
        resolve(
            system
                .submit_async(TaskOptions::new(), |_| async { 1u8 })
                .unwrap(),
        )
        .map(drop),
    );
    record(resolve(
        system
            .submit_thread_fallible(TaskOptions::new().retry(RetryPolicy::retries(1)), |ctx| {
                if ctx.attempt() == 1 {
                    Err("once")
                } else {
                    Ok(())
                }
            })
            .unwrap(),
    ));
    // One failure, one panic, one timeout.
    record(resolve(
        system
            .submit_thread_fallible(TaskOptions::new(), |_| Err::<(), _>("no"))
            .unwrap(),
    ));
    record(resolve(
        system
            .submit_thread(TaskOptions::new(), |_| explode())
            .unwrap(),
    ));
    record(resolve(
        system
            .submit_thread(
                TaskOptions::new().timeout(Duration::from_millis(20)),
                |ctx| {
                    spin_until_cancelled(|| ctx.is_cancelled());
                },
            )
            .unwrap(),
    ));
    // One cancel.
    let pending = system
        .submit_async(TaskOptions::new(), |_| std::future::pending::<()>())
        .unwrap();
    assert!(pending.cancel());
    record(resolve(pending));
    // One lock timeout (its holder succeeds).
    let release = Gate::new();
    let started = Gate::new();
    let (s, r) = (started.clone(), release.clone());
    let holder = system
        .submit_thread(TaskOptions::new().lock("m"), move |_| {
            s.open();
            r.wait();
        })
        .unwrap();
    assert!(started.wait());
    record(resolve(
        system
            .submit_thread(
                TaskOptions::new()
                    .lock("m")
                    .lock_timeout(Duration::from_millis(20)),
                |_| (),
            )
            .unwrap(),
    ));
    release.open();
    record(resolve(holder));
    // One service that ignores the shutdown: resolved SystemShutdown.
    let svc_release = Gate::new();
    let sr = svc_release.clone();
    let svc = system
        .spawn_service("deaf", move |_| {
            sr.wait();
        })
        .unwrap();
    let report = system.shutdown(ShutdownMode::Graceful);
    record(resolve(svc));
    svc_release.open();
    assert_eq!(report.detached_threads, 1);

    let st = system.stats();
    let count = |k: Result<(), TaskErrorKind>| outcomes.iter().filter(|o| **o == k).count() as u64;
    assert_eq!(st.submitted, outcomes.len() as u64);
    assert_eq!(st.completed, count(Ok(())));
    assert_eq!(st.completed, 7);
    assert_eq!(st.failed, count(Err(TaskErrorKind::Failed)));
    assert_eq!(st.panicked, count(Err(TaskErrorKind::Panicked)));
    assert_eq!(st.timed_out, count(Err(TaskErrorKind::TimedOut)));
    assert_eq!(st.cancelled, count(Err(TaskErrorKind::Cancelled)));
    assert_eq!(st.lock_timeouts, count(Err(TaskErrorKind::LockTimeout)));
    assert_eq!(st.shutdown, count(Err(TaskErrorKind::SystemShutdown)));
    assert_eq!(
        (
            st.failed,
            st.panicked,
            st.timed_out,
            st.cancelled,
            st.lock_timeouts,
            st.shutdown
        ),
        (1, 1, 1, 1, 1, 1)
    );
    assert_eq!(
        st.submitted,
        st.completed
            + st.failed
            + st.panicked
            + st.timed_out
            + st.cancelled
            + st.lock_timeouts
            + st.shutdown
    );
    assert_eq!(st.resolved(), st.submitted);
    assert_eq!(st.pending(), 0);
    assert_eq!(st.retried, 1);
}

#[test]
fn every_task_submitted_while_shutting_down_resolves() {
    let system = Arc::new(common::system("s-racing", 2, 4));
    let go = Arc::new(std::sync::Barrier::new(4));
    let submitters: Vec<_> = (0..3)
        .map(|i| {
            let (s, go) = (system.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                let mut futs = Vec::new();
                for n in 0..2000u32 {
                    let r = if (n + i) % 3 == 0 {
                        s.submit_async(TaskOptions::new(), move |_| async move { n })
                    } else {
                        s.submit_thread(TaskOptions::new(), move |_| n)
                    };
                    match r {
                        Ok(f) => futs.push(f),
                        Err(SubmitError::SystemClosed) => break,
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                futs
            })
        })
        .collect();
    go.wait();
    assert!(eventually(LONG, || system.stats().submitted >= 100));
    system.shutdown(ShutdownMode::Immediate);
    let mut accepted = 0u64;
    for h in submitters {
        for f in h.join().unwrap() {
            accepted += 1;
            match resolve(f) {
                Ok(_) | Err(TaskError::Cancelled) | Err(TaskError::SystemShutdown) => {}
                Err(e) => panic!("unexpected outcome {e:?}"),
            }
        }
    }
    let st = system.stats();
    assert_eq!(st.submitted, accepted);
    assert_eq!(st.resolved(), accepted);
}

#[test]
fn a_service_that_panics_resolves_panicked() {
    let system = common::system("s-svcpanic", 1, 2);
    let svc = system
        .spawn_service("bad", |_| -> u8 { panic!("{PANIC_MARKER}: service") })
        .unwrap();
    match resolve(svc) {
        Err(TaskError::Panicked(m)) => assert!(m.contains("service"), "{m}"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    let report = system.shutdown(ShutdownMode::Graceful);
    assert!(!report.timed_out);
}

#[test]
fn a_stuck_timed_out_thread_is_detached_at_the_shutdown_deadline() {
    let system = common::builder("s-stuck")
        .core_threads(1)
        .max_threads(2)
        .shutdown_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let release = Gate::new();
    let r = release.clone();
    let stuck = system
        .submit_thread(
            TaskOptions::new().timeout(Duration::from_millis(20)),
            move |_| {
                r.wait();
            },
        )
        .unwrap();
    assert!(resolve(stuck).unwrap_err().is_timeout());
    let report = system.shutdown(ShutdownMode::Graceful);
    release.open();
    assert_eq!(report.detached_threads, 1);
    assert!(!report.timed_out, "no task was pending");
    assert!(report.took < Duration::from_secs(5), "{:?}", report.took);
}

#[test]
fn a_task_still_running_at_the_shutdown_deadline_resolves() {
    let system = common::builder("s-deadline")
        .core_threads(1)
        .max_threads(1)
        .shutdown_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let started = Gate::new();
    let release = Gate::new();
    let (s, r) = (started.clone(), release.clone());
    let fut = system
        .submit_thread(TaskOptions::new(), move |_| {
            s.open();
            // Ignores its cancellation token.
            r.wait();
        })
        .unwrap();
    assert!(started.wait());
    let report = system.shutdown(ShutdownMode::Immediate);
    assert_eq!(report.detached_threads, 1);
    // The future must not hang on a thread the shutdown gave up on.
    let res = fut.wait_timeout(Duration::from_secs(2));
    release.open();
    match res {
        Ok(r) => assert!(matches!(r, Err(TaskError::SystemShutdown)), "{r:?}"),
        Err(_) => panic!("the future of a detached task did not resolve at the shutdown"),
    }
}

#[test]
fn a_blocked_callback_does_not_hold_shutdown_past_its_timeout() {
    let system = common::builder("s-cbstuck")
        .shutdown_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let entered = Gate::new();
    let release = Gate::new();
    let (e, r) = (entered.clone(), release.clone());
    system
        .submit_thread(TaskOptions::new(), |_| ())
        .unwrap()
        .on_complete(move |_| {
            e.open();
            r.wait();
        });
    assert!(entered.wait());
    let start = Instant::now();
    system.shutdown(ShutdownMode::Graceful);
    let took = start.elapsed();
    release.open();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
}

#[test]
fn dropping_the_last_handle_inside_a_task_does_not_wait_for_that_task() {
    let system = Arc::new(
        common::builder("s-selfdrop")
            .shutdown_timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    );
    let slot = Arc::new(std::sync::Mutex::new(Some(system.clone())));
    let release = Gate::new();
    let (sl, r) = (slot.clone(), release.clone());
    let fut = system
        .submit_thread(TaskOptions::new(), move |_| {
            r.wait();
            let start = Instant::now();
            // The last handle goes away on a pool thread of its own system.
            drop(sl.lock().unwrap().take());
            start.elapsed()
        })
        .unwrap();
    drop(system);
    release.open();
    match fut.wait_timeout(Duration::from_secs(30)) {
        Ok(r) => {
            let took = r.unwrap();
            assert!(took < Duration::from_secs(5), "the drop took {took:?}");
        }
        Err(_) => panic!("the task never resolved"),
    }
}
