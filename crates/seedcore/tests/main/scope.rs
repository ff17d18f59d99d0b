//! Scoped work: thread tasks and maps that borrow from the caller's stack,
//! and a scope that does not return before their code has.

use crate::common;

use seedcore::{ConcurrentSystem, Priority, TaskError, TaskOptions};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn tasks_and_maps_borrow_from_the_stack() {
    let system = common::system("scope-borrow", 2, 4);
    let words: Vec<String> = (0..500).map(|i| "w".repeat(i % 17)).collect();
    let counter = AtomicUsize::new(0);
    let (lengths, total) = system.scope(|s| {
        let total = s
            .submit_thread(TaskOptions::new(), |_| {
                words.iter().map(String::len).sum::<usize>()
            })
            .unwrap();
        for _ in 0..10 {
            let _ = s
                .submit_thread(TaskOptions::new(), |_| {
                    counter.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
        }
        let lengths = s.map(&words, |w| w.len()).unwrap();
        (lengths, total.wait().unwrap())
    });
    assert_eq!(lengths, words.iter().map(String::len).collect::<Vec<_>>());
    assert_eq!(total, lengths.iter().sum::<usize>());
    // Detached scoped tasks ran before the scope returned.
    assert_eq!(counter.load(Ordering::SeqCst), 10);
}

#[test]
fn the_scope_waits_for_code_still_running_past_its_timeout() {
    let system = common::system("scope-timeout", 2, 4);
    let finished = AtomicBool::new(false);
    system.scope(|s| {
        let f = s
            .submit_thread(
                TaskOptions::new().timeout(Duration::from_millis(20)),
                |_| {
                    // Ignores its cancellation token, as stuck code does.
                    std::thread::sleep(Duration::from_millis(300));
                    finished.store(true, Ordering::SeqCst);
                },
            )
            .unwrap();
        assert!(matches!(f.wait(), Err(TaskError::TimedOut(_))));
    });
    // The borrow of `finished` was still in use after the timeout: the
    // scope returned only once the code had.
    assert!(finished.load(Ordering::SeqCst));
}

#[test]
fn a_panic_in_the_scope_still_waits_for_its_tasks() {
    let system = common::system("scope-panic", 2, 4);
    let ran = AtomicBool::new(false);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        system.scope(|s| {
            let _ = s
                .submit_thread(TaskOptions::new(), |_| {
                    std::thread::sleep(Duration::from_millis(100));
                    ran.store(true, Ordering::SeqCst);
                })
                .unwrap();
            panic!("{}: the scope's own code panics", common::PANIC_MARKER);
        })
    }));
    assert!(r.is_err());
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn a_map_error_is_returned_and_every_chunk_still_finishes() {
    let system = common::system("scope-map-err", 2, 4);
    let seen = AtomicUsize::new(0);
    let items: Vec<u32> = (0..200).collect();
    let r = system.scope(|s| {
        s.map(&items, |&x| {
            seen.fetch_add(1, Ordering::SeqCst);
            if x == 57 {
                panic!("{}: item 57", common::PANIC_MARKER);
            }
            x
        })
    });
    match r {
        Err(e) => assert!(e.panic_message().unwrap().contains("item 57"), "{e}"),
        Ok(_) => panic!("the panic was lost"),
    }
    // Items after 57 in its chunk were not mapped; every other chunk was.
    assert!(seen.load(Ordering::SeqCst) > 100);
}

#[test]
fn join_returns_both_results_and_borrows_from_the_stack() {
    let system = ConcurrentSystem::builder().core_threads(2).build().unwrap();
    let words = ["alpha".to_string(), "beta".into()];
    let (a, b) = system.join(|| words[0].len(), || words[1].len());
    assert_eq!((a, b), (5, 4));
}

#[test]
fn recursive_join_on_a_one_thread_pool_neither_deadlocks_nor_loses_work() {
    fn sum(system: &ConcurrentSystem, v: &[u64]) -> u64 {
        if v.len() <= 64 {
            return v.iter().sum();
        }
        let (l, r) = v.split_at(v.len() / 2);
        let (a, b) = system.join(|| sum(system, l), || sum(system, r));
        a + b
    }
    let system = ConcurrentSystem::builder()
        .core_threads(1)
        .max_threads(1)
        .build()
        .unwrap();
    let v: Vec<u64> = (1..=20_000).collect();
    assert_eq!(sum(&system, &v), 20_000 * 20_001 / 2);
    // Every join's second closure ran exactly once: the sum is exact.
}

#[test]
fn recursive_joins_inside_tasks_on_two_threads_run_every_half_once() {
    // Joins inside tasks keep their halves on their thread's deque, where
    // the other thread steals: several trees at once, each leaf counted.
    fn sum(system: &ConcurrentSystem, v: &[u64], leaves: &AtomicUsize) -> u64 {
        if v.len() <= 32 {
            leaves.fetch_add(1, Ordering::Relaxed);
            return v.iter().sum();
        }
        let (l, r) = v.split_at(v.len() / 2);
        let (a, b) = system.join(|| sum(system, l, leaves), || sum(system, r, leaves));
        a + b
    }
    let system = two_thread_system();
    let v: Arc<Vec<u64>> = Arc::new((1..=8_192).collect());
    let leaves = Arc::new(AtomicUsize::new(0));
    let trees: Vec<_> = (0..8)
        .map(|_| {
            let (sys, v, leaves) = (system.clone(), v.clone(), leaves.clone());
            system
                .submit_thread(TaskOptions::new(), move |_| sum(&sys, &v, &leaves))
                .unwrap()
        })
        .collect();
    for t in trees {
        assert_eq!(t.wait().unwrap(), 8_192 * 8_193 / 2);
    }
    assert_eq!(leaves.load(Ordering::Relaxed), 8 * 256);
    assert_eq!(system.stats().submitted, 8, "join halves are not tasks");
}

#[test]
fn a_panic_in_a_stolen_half_inside_a_task_fails_that_task_only() {
    let system = two_thread_system();
    let sys = system.clone();
    let failing = system
        .submit_thread(TaskOptions::new(), move |_| {
            sys.join(
                // Long enough that the other thread steals the second half.
                || std::thread::sleep(Duration::from_millis(50)),
                || -> u32 { panic!("stolen half failed") },
            )
        })
        .unwrap();
    let err = failing.wait().unwrap_err();
    assert!(err.to_string().contains("stolen half failed"), "{err}");
    // The pool still serves joins and tasks.
    let sys = system.clone();
    let ok = system
        .submit_thread(TaskOptions::new(), move |_| sys.join(|| 1, || 2))
        .unwrap();
    assert_eq!(ok.wait().unwrap(), (1, 2));
}

#[test]
fn a_panic_in_the_second_closure_of_a_join_is_raised_with_its_message() {
    let system = ConcurrentSystem::builder().core_threads(2).build().unwrap();
    let ran_a = std::sync::atomic::AtomicBool::new(false);
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        system.join(
            || {
                // Long enough that a pool thread takes the second closure.
                std::thread::sleep(std::time::Duration::from_millis(50));
                ran_a.store(true, std::sync::atomic::Ordering::SeqCst);
            },
            || -> u32 { panic!("second side failed") },
        )
    }))
    .expect_err("the panic is raised");
    assert!(ran_a.load(std::sync::atomic::Ordering::SeqCst));
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap();
    assert!(msg.contains("second side failed"), "{msg}");
}

#[test]
fn both_closures_of_a_join_run_even_when_the_first_panics() {
    // rayon's promise: "no matter what happens, both closures will always
    // be executed". One thread: nobody steals `b`, the joiner runs it.
    let system = ConcurrentSystem::builder()
        .core_threads(1)
        .max_threads(1)
        .build()
        .unwrap();
    let ran_b = std::sync::atomic::AtomicBool::new(false);
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        system.join(
            || -> u32 { panic!("first side failed") },
            || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                ran_b.store(true, std::sync::atomic::Ordering::SeqCst);
            },
        )
    }))
    .expect_err("the panic is raised");
    assert!(ran_b.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(err.downcast_ref::<&str>(), Some(&"first side failed"));
}

/// A pool of exactly two threads, shared with the tasks that use it.
fn two_thread_system() -> Arc<ConcurrentSystem> {
    Arc::new(
        ConcurrentSystem::builder()
            .core_threads(2)
            .max_threads(2)
            .build()
            .unwrap(),
    )
}

#[test]
fn a_pool_thread_waiting_on_a_stolen_half_runs_queued_work_meanwhile() {
    // Two threads: the task that joins holds one, the stolen half the
    // other. The half waits for a task queued after it; only the joining
    // thread is free to run that task, and it must, on its own thread.
    let system = two_thread_system();
    let sys = system.clone();
    let outer = system
        .submit_thread(TaskOptions::new(), move |_| {
            let b_started = AtomicBool::new(false);
            // Set by the queued task, with the thread it ran on.
            let ran_on = Arc::new(Mutex::new(None));
            let seen = ran_on.clone();
            let ((), waited) = sys.join(
                || {
                    while !b_started.load(Ordering::SeqCst) {
                        std::hint::spin_loop();
                    }
                    let seen = seen.clone();
                    drop(
                        sys.submit_thread(TaskOptions::new(), move |_| {
                            *seen.lock().unwrap() = Some(std::thread::current().id());
                        })
                        .unwrap(),
                    );
                },
                || {
                    b_started.store(true, Ordering::SeqCst);
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while ran_on.lock().unwrap().is_none() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    ran_on.lock().unwrap().is_some()
                },
            );
            let helper = ran_on.lock().unwrap().take();
            (waited, helper == Some(std::thread::current().id()))
        })
        .unwrap();
    let (waited, on_joining_thread) = outer.wait().unwrap();
    assert!(waited, "the queued task did not run within 20 s");
    assert!(on_joining_thread, "the queued task ran on another thread");
    assert_eq!(system.stats().submitted, 2, "join halves are not tasks");
}

#[test]
fn a_join_half_is_queued_at_the_priority_of_the_task_that_joins() {
    // One thread is held at a gate while a high-priority task on the other
    // queues normal tasks, then joins: once the gate opens, the free
    // thread takes the join's half before the normal tasks queued earlier.
    let system = two_thread_system();
    let gate = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicBool::new(false));
    let (g, h) = (gate.clone(), held.clone());
    let blocker = system
        .submit_thread(TaskOptions::new(), move |_| {
            h.store(true, Ordering::SeqCst);
            while !g.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .unwrap();
    while !held.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let sys = system.clone();
    let outer = system
        .submit_thread(TaskOptions::new().priority(Priority::HIGH), move |_| {
            let order = Arc::new(AtomicUsize::new(0));
            let normal: Vec<_> = (0..5)
                .map(|_| {
                    let order = order.clone();
                    sys.submit_thread(TaskOptions::new(), move |_| {
                        order.fetch_add(1, Ordering::SeqCst)
                    })
                    .unwrap()
                })
                .collect();
            let b_started = AtomicBool::new(false);
            let ((), b_at) = sys.join(
                || {
                    gate.store(true, Ordering::SeqCst);
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while !b_started.load(Ordering::SeqCst) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                },
                || {
                    b_started.store(true, Ordering::SeqCst);
                    order.fetch_add(1, Ordering::SeqCst)
                },
            );
            let normal: Vec<usize> = normal.into_iter().map(|f| f.wait().unwrap()).collect();
            (b_at, normal)
        })
        .unwrap();
    let (b_at, normal) = outer.wait().unwrap();
    blocker.wait().unwrap();
    assert_eq!(b_at, 0, "the half ran after normal tasks: {normal:?}");
}

#[test]
fn a_join_after_shutdown_still_runs_both_closures() {
    let system = ConcurrentSystem::builder().core_threads(1).build().unwrap();
    system.shutdown(seedcore::ShutdownMode::Graceful);
    assert_eq!(system.join(|| 1, || 2), (1, 2));
}

#[test]
fn a_scope_opened_in_a_task_of_a_full_pool_ends_once_its_unwaited_tasks_ran() {
    // One pool thread, taken by the task that opens the scope: the scope's
    // own tasks can only run if the scope's end keeps the pool's capacity
    // while it waits for them.
    let system = std::sync::Arc::new(common::system("scope-full-pool", 1, 1));
    let inner = system.clone();
    let f = system
        .submit_thread(TaskOptions::new(), move |_| {
            let ran = AtomicUsize::new(0);
            inner.scope(|s| {
                for _ in 0..3 {
                    let _ = s
                        .submit_thread(TaskOptions::new(), |_| {
                            ran.fetch_add(1, Ordering::SeqCst);
                        })
                        .unwrap();
                }
            });
            ran.load(Ordering::SeqCst)
        })
        .unwrap();
    let ran = f
        .wait_timeout(Duration::from_secs(30))
        .expect("the scope ended")
        .unwrap();
    assert_eq!(ran, 3, "the scope ended only after each of its tasks ran");
}

#[test]
fn a_scoped_future_waited_past_its_timeout_is_handed_back_and_still_resolves() {
    let system = common::system("scope-wait-timeout", 2, 2);
    let open = common::Gate::new();
    system.scope(|s| {
        let f = s
            .submit_thread(TaskOptions::new(), |_| {
                open.wait();
                7
            })
            .unwrap();
        let f = f
            .wait_timeout(Duration::from_millis(20))
            .expect_err("the task is still running");
        assert!(!f.is_done());
        open.open();
        assert_eq!(f.wait().unwrap(), 7);
    });
}

#[test]
fn cancelling_a_queued_scoped_task_resolves_it_cancelled_and_the_scope_ends() {
    // One thread, held by the first task until the second is cancelled.
    let system = common::system("scope-cancel", 1, 1);
    let release = common::Gate::new();
    let ran = AtomicBool::new(false);
    system.scope(|s| {
        let holder = s
            .submit_thread(TaskOptions::new(), |_| {
                release.wait();
            })
            .unwrap();
        let queued = s
            .submit_thread(TaskOptions::new(), |_| ran.store(true, Ordering::SeqCst))
            .unwrap();
        assert!(queued.cancel());
        assert!(queued.is_done());
        assert!(matches!(queued.wait(), Err(TaskError::Cancelled)));
        release.open();
        holder.wait().unwrap();
    });
    assert!(
        !ran.load(Ordering::SeqCst),
        "a cancelled queued task never runs"
    );
}

#[test]
fn a_scope_whose_count_reached_zero_still_waits_for_tasks_submitted_later() {
    let system = common::system("scope-recount", 2, 2);
    let open = common::Gate::new();
    let ran = AtomicUsize::new(0);
    system.scope(|s| {
        // Every task so far has resolved: the scope's count is back at zero.
        s.submit_thread(TaskOptions::new(), |_| ran.fetch_add(1, Ordering::SeqCst))
            .unwrap()
            .wait()
            .unwrap();
        // Neither is waited on here: the scope's end waits for both.
        let _ = s
            .submit_thread(TaskOptions::new(), |_| {
                open.wait();
                ran.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        let _ = s
            .submit_thread(TaskOptions::new(), |_| {
                ran.fetch_add(1, Ordering::SeqCst);
                open.open();
            })
            .unwrap();
    });
    assert_eq!(ran.load(Ordering::SeqCst), 3);
}

#[test]
fn a_scoped_task_s_code_is_dropped_on_the_scope_s_thread_before_it_returns() {
    /// Records the thread that drops it.
    struct Witness<'a>(&'a Mutex<Option<std::thread::ThreadId>>);
    impl Drop for Witness<'_> {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = Some(std::thread::current().id());
        }
    }
    let system = common::system("scope-drop", 2, 2);
    let dropped_on = Mutex::new(None);
    system.scope(|s| {
        let witness = Witness(&dropped_on);
        let f = s
            .submit_thread(TaskOptions::new(), move |_| {
                let _ = &witness;
                1
            })
            .unwrap();
        assert_eq!(f.wait().unwrap(), 1);
        // The task has resolved, yet its code is kept until the scope ends.
        assert_eq!(*dropped_on.lock().unwrap(), None);
    });
    assert_eq!(
        *dropped_on.lock().unwrap(),
        Some(std::thread::current().id())
    );
}

#[test]
fn a_task_submitted_by_a_call_running_past_its_timeout_still_ends_within_the_scope() {
    let system = common::system("scope-late-submit", 2, 4);
    let release = common::Gate::new();
    let ran = AtomicBool::new(false);
    system.scope(|s| {
        let f = s
            .submit_thread(
                TaskOptions::new().timeout(Duration::from_millis(20)),
                |_| {
                    // Still running once its task has resolved timed out:
                    // its slot is not closed yet, so it may submit more.
                    release.wait();
                    let _ = s
                        .submit_thread(TaskOptions::new(), |_| ran.store(true, Ordering::SeqCst))
                        .unwrap();
                },
            )
            .unwrap();
        assert!(matches!(f.wait(), Err(TaskError::TimedOut(_))));
        release.open();
    });
    // The scope waited for the late task too, not only for those it knew
    // of when its closure returned.
    assert!(ran.load(Ordering::SeqCst));
}
