//! Behaviour of thread tasks: values, errors, panics, priorities, timeouts,
//! retries, cancellation, status and the ways to wait for a `TaskFuture`.

use crate::common;

use common::{eventually, spin_until_cancelled, Gate, MyError, LONG, PANIC_MARKER};
use rand::{Rng, SeedableRng};
use seedcore::{
    Backoff, Priority, RetryOn, RetryPolicy, SubmitError, TaskError, TaskErrorKind, TaskOptions,
    TaskStatus,
};
use std::collections::HashSet;
use std::error::Error as _;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Occupies the only worker of a `core_threads(1)` system until `release`
/// opens; returns once the gate task is running.
fn block_single_worker(
    system: &seedcore::ConcurrentSystem,
    release: &Gate,
) -> seedcore::TaskFuture<()> {
    let started = Gate::new();
    let (s, r) = (started.clone(), release.clone());
    let fut = system
        .submit_thread(TaskOptions::new().priority(Priority::CRITICAL), move |_| {
            s.open();
            assert!(r.wait(), "gate never opened");
        })
        .unwrap();
    assert!(started.wait(), "the gate task did not start");
    fut
}

#[test]
fn thread_task_returns_its_value() {
    let system = common::system("t-value", 2, 4);
    let fut = system
        .submit_thread(TaskOptions::new(), |_| "forty-two".to_owned() + "!")
        .unwrap();
    assert_eq!(fut.wait().unwrap(), "forty-two!");
    let st = system.stats();
    assert_eq!((st.submitted, st.completed), (1, 1));
}

#[test]
fn fallible_error_resolves_failed_with_message_and_source() {
    let system = common::system("t-failed", 2, 4);
    let fut = system
        .submit_thread_fallible(TaskOptions::new(), |_| -> Result<u8, MyError> {
            Err(MyError("disk full".into()))
        })
        .unwrap();
    let err = fut.wait().unwrap_err();
    assert_eq!(err.kind(), TaskErrorKind::Failed);
    assert!(err.is_failed());
    assert!(err.to_string().contains("my error: disk full"), "{err}");
    let source = err.source().expect("Failed carries its source");
    assert_eq!(
        source.downcast_ref::<MyError>(),
        Some(&MyError("disk full".into()))
    );
    match err {
        TaskError::Failed(e) => assert_eq!(e.to_string(), "my error: disk full"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(system.stats().failed, 1);
}

#[test]
fn fallible_ok_resolves_value() {
    let system = common::system("t-fallok", 2, 4);
    let fut = system
        .submit_thread_fallible(TaskOptions::new(), |_| Ok::<_, MyError>(7u32))
        .unwrap();
    assert_eq!(fut.wait().unwrap(), 7);
}

#[test]
fn panic_resolves_panicked_and_pool_keeps_working() {
    let system = common::system("t-panic", 2, 4);
    // More panics than threads: every thread must survive its panic.
    let panics: Vec<_> = (0..6)
        .map(|i| {
            system
                .submit_thread(TaskOptions::new(), move |_| -> u32 {
                    panic!("{PANIC_MARKER}: boom {i}")
                })
                .unwrap()
        })
        .collect();
    for (i, f) in panics.into_iter().enumerate() {
        match f.wait() {
            Err(TaskError::Panicked(m)) => assert_eq!(m, format!("{PANIC_MARKER}: boom {i}")),
            other => panic!("expected Panicked, got {other:?}"),
        }
    }
    let after: Vec<_> = (0..20u32)
        .map(|i| {
            system
                .submit_thread(TaskOptions::new(), move |_| i * 2)
                .unwrap()
        })
        .collect();
    for (i, f) in after.into_iter().enumerate() {
        assert_eq!(f.wait().unwrap(), i as u32 * 2);
    }
    let st = system.stats();
    assert_eq!((st.panicked, st.completed), (6, 20));
    assert_eq!(
        common::threads(&st).workers,
        2,
        "no thread was lost to a panic"
    );
}

#[test]
fn non_string_panic_payload_is_reported() {
    common::quiet_panics();
    let system = common::system("t-panicany", 1, 2);
    // `resume_unwind` skips the panic hook, so this stays quiet.
    let fut = system
        .submit_thread(TaskOptions::new(), |_| -> u8 {
            std::panic::resume_unwind(Box::new(42u64))
        })
        .unwrap();
    let err = fut.wait().unwrap_err();
    assert!(err.is_panic(), "{err:?}");
    assert!(!err.panic_message().unwrap().is_empty());
}

#[test]
fn priority_orders_queued_tasks_by_level_then_fifo() {
    let system = common::system("t-prio", 1, 1);
    let release = Gate::new();
    let gate = block_single_worker(&system, &release);

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut submitted = Vec::new();
    let mut futs = Vec::new();
    for seq in 0..60usize {
        let level: u8 = rng.gen_range(0..=10);
        submitted.push((level, seq));
        let order = order.clone();
        futs.push(
            system
                .submit_thread(
                    TaskOptions::new().priority(Priority::new(level).unwrap()),
                    move |_| order.lock().unwrap().push((level, seq)),
                )
                .unwrap(),
        );
    }
    let st = system.stats();
    assert_eq!(st.queued(), 60);
    for level in 0..=10u8 {
        let n = submitted.iter().filter(|(l, _)| *l == level).count();
        let depth = common::threads(&st).queue_depth[level as usize];
        assert_eq!(depth, n, "depth of level {level}");
    }
    release.open();
    gate.wait().unwrap();
    for f in futs {
        f.wait().unwrap();
    }
    let mut expected = submitted;
    expected.sort_by_key(|&(level, _)| level); // stable: FIFO within a level
    assert_eq!(*order.lock().unwrap(), expected);
}

#[test]
fn named_priority_levels_and_bounds() {
    assert_eq!(Priority::CRITICAL.level(), 0);
    assert_eq!(Priority::HIGH.level(), 2);
    assert_eq!(Priority::NORMAL.level(), 5);
    assert_eq!(Priority::LOW.level(), 8);
    assert_eq!(Priority::IDLE.level(), 10);
    assert_eq!(Priority::default(), Priority::NORMAL);
    assert!(Priority::new(10).is_some());
    assert!(Priority::new(11).is_none());
    assert!(Priority::CRITICAL < Priority::IDLE);
}

#[test]
fn timeout_resolves_timed_out_at_deadline_while_closure_keeps_running() {
    let system = common::system("t-timeout", 1, 2);
    let release = Gate::new();
    let finished = Arc::new(AtomicBool::new(false));
    let (r, f) = (release.clone(), finished.clone());
    let start = Instant::now();
    let fut = system
        .submit_thread(
            TaskOptions::new().timeout(Duration::from_millis(50)),
            move |_| {
                // Ignores its cancellation token on purpose.
                r.wait();
                f.store(true, Ordering::SeqCst);
                1u8
            },
        )
        .unwrap();
    let res = fut.wait_timeout(LONG).expect("resolved at its deadline");
    let elapsed = start.elapsed();
    match res {
        Err(TaskError::TimedOut(d)) => assert_eq!(d, Duration::from_millis(50)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(elapsed >= Duration::from_millis(50), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // The closure is still running: the deadline did not wait for it.
    assert!(!finished.load(Ordering::SeqCst));
    release.open();
    assert!(eventually(LONG, || finished.load(Ordering::SeqCst)));
    assert_eq!(system.stats().timed_out, 1);
}

#[test]
fn timeout_sets_the_cancellation_token_in_the_closure() {
    let system = common::system("t-tocancel", 1, 2);
    let saw_cancel = Gate::new();
    let s = saw_cancel.clone();
    let fut = system
        .submit_thread(
            TaskOptions::new().timeout(Duration::from_millis(30)),
            move |ctx| {
                let token = ctx.cancellation_token();
                if spin_until_cancelled(|| ctx.is_cancelled()) && token.is_cancelled() {
                    s.open();
                }
            },
        )
        .unwrap();
    assert!(fut.wait().unwrap_err().is_timeout());
    assert!(saw_cancel.wait(), "the closure never saw is_cancelled()");
}

#[test]
fn stuck_thread_is_replaced_so_other_tasks_still_run() {
    let system = common::system("t-replace", 1, 2);
    let release = Gate::new();
    let r = release.clone();
    let stuck = system
        .submit_thread(
            TaskOptions::new().timeout(Duration::from_millis(30)),
            move |_| {
                r.wait();
            },
        )
        .unwrap();
    assert!(stuck.wait().unwrap_err().is_timeout());
    // The only core thread is still blocked in the stuck closure.
    let quick = system.submit_thread(TaskOptions::new(), |_| 5u8).unwrap();
    match quick.wait_timeout(LONG) {
        Ok(v) => assert_eq!(v.unwrap(), 5),
        Err(_) => panic!("a quick task did not run while the core thread was stuck"),
    }
    assert!(!release.is_open());
    assert_eq!(common::threads(&system.stats()).workers, 2);
    release.open();
    // The stuck thread returns and the pool shrinks back to its core size.
    assert!(
        eventually(LONG, || common::threads(&system.stats()).workers == 1),
        "threads alive: {}",
        common::threads(&system.stats()).workers
    );
    let again = system.submit_thread(TaskOptions::new(), |_| 6u8).unwrap();
    assert_eq!(again.wait().unwrap(), 6);
}

#[test]
fn retry_fails_then_succeeds_and_counts_attempts() {
    let system = common::system("t-retry", 2, 4);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let fut = system
        .submit_thread_fallible(
            TaskOptions::new().retry(RetryPolicy::retries(4)),
            move |ctx| {
                s.lock().unwrap().push(ctx.attempt());
                if ctx.attempt() < 3 {
                    Err(format!("attempt {} failed", ctx.attempt()))
                } else {
                    Ok(ctx.attempt() * 10)
                }
            },
        )
        .unwrap();
    assert_eq!(fut.wait().unwrap(), 30);
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3]);
    let st = system.stats();
    assert_eq!(
        (st.retried, st.attempts, st.completed, st.failed),
        (2, 3, 1, 0)
    );
}

#[test]
fn retry_exhausted_resolves_the_last_error() {
    let system = common::system("t-exhaust", 2, 4);
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let fut = system
        .submit_thread_fallible(
            TaskOptions::new().retry(RetryPolicy::retries(2)),
            move |ctx| -> Result<(), String> {
                c.fetch_add(1, Ordering::SeqCst);
                Err(format!("failure #{}", ctx.attempt()))
            },
        )
        .unwrap();
    match fut.wait() {
        Err(TaskError::Failed(e)) => assert_eq!(e.to_string(), "failure #3"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let st = system.stats();
    assert_eq!((st.retried, st.failed), (2, 1));
}

#[test]
fn panics_are_not_retried_by_default() {
    let system = common::system("t-noretry", 2, 4);
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let fut = system
        .submit_thread(
            TaskOptions::new().retry(RetryPolicy::retries(3)),
            move |_| -> u8 {
                c.fetch_add(1, Ordering::SeqCst);
                panic!("{PANIC_MARKER}: no retry")
            },
        )
        .unwrap();
    assert!(fut.wait().unwrap_err().is_panic());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(system.stats().retried, 0);
}

#[test]
fn retry_on_panic_retries_panics() {
    let system = common::system("t-retrypanic", 2, 4);
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let fut = system
        .submit_thread(
            TaskOptions::new().retry(RetryPolicy::retries(3).on(RetryOn::PANIC)),
            move |ctx| {
                c.fetch_add(1, Ordering::SeqCst);
                if ctx.attempt() <= 2 {
                    panic!("{PANIC_MARKER}: attempt {}", ctx.attempt());
                }
                ctx.attempt()
            },
        )
        .unwrap();
    assert_eq!(fut.wait().unwrap(), 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(system.stats().retried, 2);
}

#[test]
fn retry_on_panic_only_does_not_retry_errors() {
    let system = common::system("t-panicnoerr", 2, 4);
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let fut = system
        .submit_thread_fallible(
            TaskOptions::new().retry(RetryPolicy::retries(3).on(RetryOn::PANIC)),
            move |_| -> Result<(), &'static str> {
                c.fetch_add(1, Ordering::SeqCst);
                Err("not retried")
            },
        )
        .unwrap();
    assert!(fut.wait().unwrap_err().is_failed());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn retry_on_timeout_retries_timeouts() {
    let system = common::system("t-retryto", 1, 2);
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let fut = system
        .submit_thread(
            TaskOptions::new()
                .timeout(Duration::from_millis(40))
                .retry(RetryPolicy::retries(2).on(RetryOn::TIMEOUT)),
            move |ctx| {
                c.fetch_add(1, Ordering::SeqCst);
                if ctx.attempt() == 1 {
                    // Overrun the deadline, then stop when told to.
                    spin_until_cancelled(|| ctx.is_cancelled());
                    return (0, true);
                }
                // The first attempt's deadline does not cancel this one.
                (ctx.attempt(), ctx.is_cancelled())
            },
        )
        .unwrap();
    assert_eq!(fut.wait().unwrap(), (2, false));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let st = system.stats();
    assert_eq!((st.retried, st.timed_out, st.completed), (1, 0, 1));
}

#[test]
fn default_retry_policy_retries_errors_and_timeouts_but_not_panics() {
    let policy = RetryPolicy::retries(2);
    assert_eq!(policy.max_retries(), 2);
    let system = common::system("t-retrydef", 1, 2);
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let fut = system
        .submit_thread_fallible(
            TaskOptions::new()
                .timeout(Duration::from_millis(40))
                .retry(policy),
            move |ctx| {
                c.fetch_add(1, Ordering::SeqCst);
                match ctx.attempt() {
                    1 => Err("an error"),
                    2 => {
                        spin_until_cancelled(|| ctx.is_cancelled());
                        Ok(0)
                    }
                    n => Ok(n),
                }
            },
        )
        .unwrap();
    assert_eq!(fut.wait().unwrap(), 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(system.stats().retried, 2);
}

#[test]
fn retry_on_error_only_does_not_retry_timeouts() {
    let system = common::system("t-errnoto", 1, 2);
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let fut = system
        .submit_thread(
            TaskOptions::new()
                .timeout(Duration::from_millis(30))
                .retry(RetryPolicy::retries(2).on(RetryOn::ERROR)),
            move |ctx| {
                c.fetch_add(1, Ordering::SeqCst);
                spin_until_cancelled(|| ctx.is_cancelled());
            },
        )
        .unwrap();
    assert!(fut.wait().unwrap_err().is_timeout());
    // Give a wrongly scheduled retry the chance to show up.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(system.stats().retried, 0);
}

#[test]
fn fixed_backoff_delays_are_honoured() {
    let system = common::system("t-backoff", 2, 4);
    let starts = Arc::new(Mutex::new(Vec::new()));
    let s = starts.clone();
    let delay = Duration::from_millis(60);
    let begin = Instant::now();
    let fut = system
        .submit_thread_fallible(
            TaskOptions::new().retry(RetryPolicy::retries(3).backoff(Backoff::Fixed(delay))),
            move |ctx| {
                s.lock().unwrap().push(Instant::now());
                if ctx.attempt() < 4 {
                    Err("again")
                } else {
                    Ok(ctx.attempt())
                }
            },
        )
        .unwrap();
    assert_eq!(fut.wait().unwrap(), 4);
    let starts = starts.lock().unwrap();
    assert_eq!(starts.len(), 4);
    for w in starts.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= delay,
            "retry started after {gap:?}, before {delay:?}"
        );
    }
    assert!(begin.elapsed() >= delay * 3);
}

#[test]
fn jittered_and_exponential_backoffs_respect_their_lower_bounds() {
    let system = common::system("t-backoff2", 2, 4);
    let run = |policy: RetryPolicy| {
        let starts = Arc::new(Mutex::new(Vec::new()));
        let s = starts.clone();
        let fut = system
            .submit_thread_fallible(TaskOptions::new().retry(policy), move |ctx| {
                s.lock().unwrap().push(Instant::now());
                if ctx.attempt() < 4 {
                    Err("again")
                } else {
                    Ok(())
                }
            })
            .unwrap();
        fut.wait().unwrap();
        let starts = starts.lock().unwrap();
        starts.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
    };
    let ms = Duration::from_millis;
    // Jitter 0.5 spreads a 60 ms delay over 30..=90 ms.
    let gaps = run(RetryPolicy::retries(3)
        .backoff(Backoff::Fixed(ms(60)))
        .jitter(0.5));
    assert_eq!(gaps.len(), 3);
    assert!(gaps.iter().all(|g| *g >= ms(30)), "{gaps:?}");
    // 20, 40, then capped at 50 ms.
    let gaps = run(RetryPolicy::retries(3).backoff(Backoff::Exponential {
        initial: ms(20),
        factor: 2.0,
        max: ms(50),
    }));
    assert_eq!(gaps.len(), 3);
    for (gap, min) in gaps.iter().zip([ms(20), ms(40), ms(50)]) {
        assert!(*gap >= min, "{gaps:?}");
    }
}

#[test]
fn retry_status_is_retry_pending_during_backoff_and_cancel_stops_it() {
    let system = common::system("t-backoffst", 2, 4);
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let fut = system
        .submit_thread_fallible(
            TaskOptions::new()
                .retry(RetryPolicy::retries(1).backoff(Backoff::Fixed(Duration::from_secs(30)))),
            move |_| -> Result<(), &'static str> {
                c.fetch_add(1, Ordering::SeqCst);
                Err("first")
            },
        )
        .unwrap();
    assert!(eventually(LONG, || fut.status() == TaskStatus::RetryPending));
    assert!(fut.cancel());
    assert!(fut.wait().unwrap_err().is_cancelled());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn invalid_options_are_rejected_at_submit() {
    let system = common::system("t-invalid", 1, 2);
    let bad = [
        TaskOptions::new().timeout(Duration::ZERO),
        TaskOptions::new().limit("x", 0),
        TaskOptions::new().lock(""),
        TaskOptions::new().retry(RetryPolicy::retries(1).jitter(2.0)),
        TaskOptions::new().retry(RetryPolicy::retries(1).jitter(-0.1)),
        TaskOptions::new().retry(RetryPolicy::retries(1).backoff(Backoff::Exponential {
            initial: Duration::from_millis(1),
            factor: 0.5,
            max: Duration::from_secs(1),
        })),
        TaskOptions::new().retry(RetryPolicy::retries(1).backoff(Backoff::Exponential {
            initial: Duration::from_millis(1),
            factor: f64::NAN,
            max: Duration::from_secs(1),
        })),
    ];
    for opts in bad {
        let desc = format!("{opts:?}");
        match system.submit_thread(opts.clone(), |_| ()) {
            Err(SubmitError::InvalidOptions(msg)) => assert!(!msg.is_empty()),
            other => panic!("{desc}: expected InvalidOptions, got {other:?}"),
        }
        assert!(
            matches!(
                system.submit_async(opts, |_| async {}),
                Err(SubmitError::InvalidOptions(_))
            ),
            "{desc}: async submit accepted"
        );
    }
    assert_eq!(system.stats().submitted, 0, "nothing was accepted");
}

#[test]
fn cancel_of_a_queued_task_resolves_cancelled_and_it_never_runs() {
    let system = common::system("t-cancelq", 1, 1);
    let release = Gate::new();
    let gate = block_single_worker(&system, &release);
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let victim = system
        .submit_thread(TaskOptions::new(), move |_| r.store(true, Ordering::SeqCst))
        .unwrap();
    let after = system.submit_thread(TaskOptions::new(), |_| 1u8).unwrap();
    assert_eq!(victim.status(), TaskStatus::Queued);
    assert!(victim.cancel());
    assert!(
        victim.cancel(),
        "a cancelled task reports true again, as in concurrent.futures"
    );
    assert_eq!(
        victim.status(),
        TaskStatus::Failed(TaskErrorKind::Cancelled)
    );
    release.open();
    gate.wait().unwrap();
    // FIFO within a level: `after` runs only once the victim was skipped.
    assert_eq!(after.wait().unwrap(), 1);
    assert!(victim.wait().unwrap_err().is_cancelled());
    assert!(!ran.load(Ordering::SeqCst), "a cancelled task ran");
    assert_eq!(system.stats().cancelled, 1);
}

#[test]
fn cancel_of_a_running_thread_task_sets_its_token() {
    let system = common::system("t-cancelrun", 1, 2);
    let started = Gate::new();
    let saw = Gate::new();
    let (s, w) = (started.clone(), saw.clone());
    let fut = system
        .submit_thread(TaskOptions::new(), move |ctx| {
            s.open();
            if spin_until_cancelled(|| ctx.is_cancelled()) {
                w.open();
            }
        })
        .unwrap();
    assert!(started.wait());
    assert!(fut.cancel());
    assert!(saw.wait(), "the running task never saw its cancellation");
    assert!(fut.wait().unwrap_err().is_cancelled());
}

#[test]
fn cancel_after_completion_returns_false() {
    let system = common::system("t-cancellate", 2, 4);
    let fut = system.submit_thread(TaskOptions::new(), |_| 9u8).unwrap();
    assert!(eventually(LONG, || fut.is_done()));
    assert!(!fut.cancel());
    assert_eq!(fut.status(), TaskStatus::Succeeded);
    assert_eq!(fut.wait().unwrap(), 9);
    assert_eq!(system.stats().cancelled, 0);
}

#[test]
fn status_goes_queued_running_succeeded() {
    let system = common::system("t-status", 1, 1);
    let release = Gate::new();
    let gate = block_single_worker(&system, &release);
    let running = Gate::new();
    let finish = Gate::new();
    let (r, f) = (running.clone(), finish.clone());
    let fut = system
        .submit_thread(TaskOptions::new(), move |_| {
            r.open();
            f.wait();
            3u8
        })
        .unwrap();
    assert_eq!(fut.status(), TaskStatus::Queued);
    assert!(!fut.status().is_done());
    release.open();
    gate.wait().unwrap();
    assert!(running.wait());
    assert_eq!(fut.status(), TaskStatus::Running);
    finish.open();
    assert!(eventually(LONG, || fut.is_done()));
    assert_eq!(fut.status(), TaskStatus::Succeeded);
    assert!(fut.status().is_done());
    assert_eq!(fut.wait().unwrap(), 3);
}

#[test]
fn status_of_a_failed_task_names_its_error_kind() {
    let system = common::system("t-statusf", 1, 2);
    let fut = system
        .submit_thread_fallible(TaskOptions::new(), |_| -> Result<(), &'static str> {
            Err("no")
        })
        .unwrap();
    assert!(eventually(LONG, || fut.is_done()));
    assert_eq!(fut.status(), TaskStatus::Failed(TaskErrorKind::Failed));
}

#[test]
fn wait_timeout_hands_the_future_back_then_yields_the_value() {
    let system = common::system("t-waitto", 1, 2);
    let release = Gate::new();
    let r = release.clone();
    let fut = system
        .submit_thread(TaskOptions::new(), move |_| {
            r.wait();
            11u8
        })
        .unwrap();
    let fut = match fut.wait_timeout(Duration::from_millis(30)) {
        Err(fut) => fut,
        Ok(r) => panic!("resolved before its gate opened: {r:?}"),
    };
    assert!(!fut.is_done());
    let fut = match fut.wait_deadline(Instant::now() + Duration::from_millis(10)) {
        Err(fut) => fut,
        Ok(r) => panic!("resolved before its gate opened: {r:?}"),
    };
    release.open();
    match fut.wait_timeout(LONG) {
        Ok(r) => assert_eq!(r.unwrap(), 11),
        Err(_) => panic!("the value did not arrive"),
    }
}

#[test]
fn try_get_returns_the_future_until_resolved_then_the_value() {
    let system = common::system("t-tryget", 1, 2);
    let release = Gate::new();
    let r = release.clone();
    let fut = system
        .submit_thread(TaskOptions::new(), move |_| {
            r.wait();
            "done"
        })
        .unwrap();
    let mut fut = fut.try_get().expect_err("not resolved yet");
    release.open();
    let deadline = Instant::now() + LONG;
    let value = loop {
        match fut.try_get() {
            Ok(r) => break r.unwrap(),
            Err(f) if Instant::now() < deadline => {
                fut = f;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => panic!("try_get never returned the result"),
        }
    };
    assert_eq!(value, "done");
}

#[test]
fn try_get_after_is_done_always_has_the_result() {
    let system = common::system("t-donerace", 1, 2);
    for i in 0..20_000u32 {
        let fut = system
            .submit_thread(TaskOptions::new(), move |_| i)
            .unwrap();
        while !fut.is_done() {
            std::hint::spin_loop();
        }
        match fut.try_get() {
            Ok(r) => assert_eq!(r.unwrap(), i),
            Err(_) => panic!("iteration {i}: is_done() was true but try_get() had no result"),
        }
    }
}

#[test]
fn task_future_is_awaitable_from_a_multi_thread_tokio_runtime() {
    let system = common::system("t-await-mt", 2, 4);
    let futs: Vec<_> = (0..10u64)
        .map(|i| {
            system
                .submit_thread(TaskOptions::new(), move |_| i * i)
                .unwrap()
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sum = rt.block_on(async move {
        let mut sum = 0;
        for f in futs {
            sum += f.await.unwrap();
        }
        sum
    });
    assert_eq!(sum, (0..10u64).map(|i| i * i).sum::<u64>());
}

#[test]
fn task_future_is_awaitable_from_a_current_thread_runtime() {
    let system = common::system("t-await-ct", 1, 2);
    let release = Gate::new();
    let r = release.clone();
    let fut = system
        .submit_thread(TaskOptions::new(), move |_| {
            r.wait();
            "late"
        })
        .unwrap();
    // The task resolves only after the await has registered its waker.
    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        release.open();
    });
    assert_eq!(common::block_on(fut).unwrap(), "late");
    opener.join().unwrap();
    let joined = common::block_on(futures_util::future::join_all((0..5u8).map(|i| {
        system
            .submit_thread(TaskOptions::new(), move |_| i)
            .unwrap()
    })));
    let values: Vec<u8> = joined.into_iter().map(Result::unwrap).collect();
    assert_eq!(values, vec![0, 1, 2, 3, 4]);
}

#[test]
fn task_ids_are_unique_and_match_the_context() {
    let system = common::system("t-ids", 2, 4);
    let futs: Vec<_> = (0..200)
        .map(|_| {
            system
                .submit_thread(TaskOptions::new(), |ctx| ctx.id())
                .unwrap()
        })
        .collect();
    let ids: Vec<_> = futs.iter().map(|f| f.id()).collect();
    let unique: HashSet<_> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len());
    for (f, id) in futs.into_iter().zip(ids) {
        assert_eq!(f.wait().unwrap(), id);
    }
    let a = system
        .submit_async(TaskOptions::new(), |_| async {})
        .unwrap();
    assert!(!unique.contains(&a.id()), "async ids share the id space");
    a.wait().unwrap();
}

#[test]
fn stats_count_attempts_and_fill_the_histograms() {
    let system = common::system("t-hist", 2, 4);
    let futs: Vec<_> = (0..30)
        .map(|_| {
            system
                .submit_thread(TaskOptions::new(), |_| {
                    std::thread::sleep(Duration::from_millis(1));
                })
                .unwrap()
        })
        .collect();
    for f in futs {
        f.wait().unwrap();
    }
    let st = system.stats();
    assert_eq!((st.submitted, st.completed, st.attempts), (30, 30, 30));
    assert!(eventually(LONG, || {
        let st = system.stats();
        st.running == 0 && common::threads(&st).running == 0 && st.run_time.count() == 30
    }));
    let st = system.stats();
    assert_eq!(st.queue_wait.count(), 30);
    assert_eq!(st.pending(), 0);
    assert_eq!(st.queued(), 0);
    // Every attempt slept 1 ms: the median bucket's upper bound is above it.
    assert!(st.run_time.percentile(0.5) >= Duration::from_millis(1));
    assert!(st.run_time.percentile(1.0) >= st.run_time.percentile(0.5));
    let total: u64 = st.run_time.buckets().iter().map(|(_, n)| n).sum();
    assert_eq!(total, 30);
}

#[test]
fn the_queue_wait_of_a_task_is_the_time_from_submission_to_its_start() {
    // One thread: the second task waits behind the first, and is waited on
    // while it is queued (a registered waiter must not lose the
    // submission time).
    let system = common::system("t-qwait", 1, 1);
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let first = system
        .submit_thread(TaskOptions::new(), move |_| {
            entered_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(80));
        })
        .unwrap();
    entered_rx.recv().unwrap();
    let queued_at = Instant::now();
    let second = system
        .submit_thread(TaskOptions::new(), move |_| queued_at.elapsed())
        .unwrap();
    let waited = second.wait().unwrap();
    first.wait().unwrap();
    let st = system.stats();
    assert_eq!(st.queue_wait.count(), 2);
    let longest = st.queue_wait.max();
    // What the task saw at its start bounds what was recorded then, give
    // or take the histogram's 0.1%.
    assert!(
        longest >= Duration::from_millis(50) && longest <= waited + waited / 100,
        "recorded {longest:?}, the task saw {waited:?}"
    );
}

#[test]
fn context_exposes_name_and_attempt() {
    let system = common::system("t-ctx", 1, 2);
    let fut = system
        .submit_thread(TaskOptions::new().name("report-42"), |ctx| {
            (
                ctx.name().map(str::to_owned),
                ctx.attempt(),
                ctx.is_cancelled(),
            )
        })
        .unwrap();
    assert_eq!(
        fut.wait().unwrap(),
        (Some("report-42".to_owned()), 1, false)
    );
}

#[test]
fn detached_task_still_runs_to_completion() {
    let system = common::system("t-detach", 1, 2);
    let done = Gate::new();
    let d = done.clone();
    drop(
        system
            .submit_thread(TaskOptions::new(), move |_| d.open())
            .unwrap(),
    );
    assert!(done.wait(), "a dropped TaskFuture stopped its task");
    assert!(eventually(LONG, || system.stats().completed == 1));
}
