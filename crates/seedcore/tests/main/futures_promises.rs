//! What users of concurrent.futures rely on: nested waits in a full pool,
//! cancelling twice, and bad map settings reported as errors.

use crate::common;

use common::LONG;
use seedcore::{ChunkSize, SubmitError, TaskError, TaskErrorKind, TaskOptions};
use std::sync::{Arc, Weak};

/// A task that submits `n` tasks to its own system and waits on each,
/// in a pool of one thread: the waiting thread must not starve them.
#[test]
fn nested_wait_at_max_threads_resolves() {
    let system = Arc::new(common::system("fp-nested", 1, 1));
    let weak: Weak<seedcore::ConcurrentSystem> = Arc::downgrade(&system);
    let outer = system
        .submit_thread(TaskOptions::new(), move |_| {
            let sys = weak.upgrade().expect("system alive");
            let inner: Vec<_> = (0..8u64)
                .map(|i| {
                    sys.submit_thread(TaskOptions::new(), move |_| i * 3)
                        .unwrap()
                })
                .collect();
            inner.into_iter().map(|f| f.wait().unwrap()).sum::<u64>()
        })
        .unwrap();
    let got = outer.wait_timeout(LONG).expect("nested wait deadlocked");
    assert_eq!(got.unwrap(), (0..8u64).map(|i| i * 3).sum::<u64>());
}

/// The same with a wait that has a timeout, nested two levels deep.
#[test]
fn nested_wait_timeout_two_levels_resolves() {
    let system = Arc::new(common::system("fp-nested2", 1, 1));
    let w1 = Arc::downgrade(&system);
    let outer = system
        .submit_thread(TaskOptions::new(), move |_| {
            let sys = w1.upgrade().unwrap();
            let w2 = Arc::downgrade(&sys);
            let mid = sys
                .submit_thread(TaskOptions::new(), move |_| {
                    let sys = w2.upgrade().unwrap();
                    let leaf = sys.submit_thread(TaskOptions::new(), |_| 7u32).unwrap();
                    leaf.wait_timeout(LONG).ok().map(|r| r.unwrap())
                })
                .unwrap();
            mid.wait_timeout(LONG).ok().and_then(|r| r.unwrap())
        })
        .unwrap();
    let got = outer.wait_timeout(LONG).expect("nested wait deadlocked");
    assert_eq!(got.unwrap(), Some(7));
}

#[test]
fn cancel_of_a_cancelled_future_returns_true() {
    let system = common::system("fp-cancel", 1, 1);
    let gate = common::Gate::new();
    let g = gate.clone();
    let _blocker = system
        .submit_thread(TaskOptions::new(), move |_| {
            g.wait();
        })
        .unwrap();
    let fut = system.submit_thread(TaskOptions::new(), |_| 1u8).unwrap();
    assert!(fut.cancel());
    assert!(fut.cancel(), "a second cancel of a cancelled task is true");
    gate.open();
    let done = system.submit_thread(TaskOptions::new(), |_| 2u8).unwrap();
    assert_eq!(done.wait().unwrap(), 2);
    // Resolved with a value: cancel stays false.
    let ok = system.submit_thread(TaskOptions::new(), |_| 3u8).unwrap();
    while !ok.is_done() {
        std::thread::yield_now();
    }
    assert!(!ok.cancel());
    assert!(matches!(fut.wait(), Err(TaskError::Cancelled)));
}

#[test]
fn fixed_zero_chunk_size_is_a_typed_error() {
    let system = common::system("fp-chunk0", 1, 2);
    let got: Vec<Result<u64, TaskError>> = system
        .map(0..10u64, |x| x + 1)
        .chunk_size(ChunkSize::Fixed(0))
        .ordered()
        .collect();
    assert_eq!(got.len(), 10);
    for r in got {
        let e = r.expect_err("Fixed(0) must not run silently as 1");
        assert_eq!(e.kind(), TaskErrorKind::Failed);
        let TaskError::Failed(inner) = &e else {
            panic!("not Failed: {e}")
        };
        let sub = inner
            .downcast_ref::<SubmitError>()
            .expect("a SubmitError inside");
        assert!(matches!(sub, SubmitError::InvalidOptions(m) if m.contains("Fixed(0)")));
    }
}

#[test]
fn wait_first_completed_all_completed_and_timeout() {
    let system = common::system("fp-wait", 2, 2);
    let gate = common::Gate::new();
    let g = gate.clone();
    let futs = vec![
        system
            .submit_thread(TaskOptions::new(), move |_| {
                g.wait();
                1u32
            })
            .unwrap(),
        system.submit_thread(TaskOptions::new(), |_| 2u32).unwrap(),
    ];
    let first = seedcore::wait(&futs, seedcore::WaitFor::FirstCompleted, Some(LONG));
    assert_eq!(first.done, vec![1]);
    assert_eq!(first.pending, vec![0]);
    let timed = seedcore::wait(
        &futs,
        seedcore::WaitFor::AllCompleted,
        Some(std::time::Duration::from_millis(20)),
    );
    assert_eq!(timed.pending, vec![0], "the gated task cannot be done");
    gate.open();
    let all = seedcore::wait(&futs, seedcore::WaitFor::AllCompleted, None);
    assert_eq!(all.done, vec![0, 1]);
    let values: Vec<u32> = futs.into_iter().map(|f| f.wait().unwrap()).collect();
    assert_eq!(values, vec![1, 2]);
}

#[test]
fn wait_first_exception_returns_on_a_failure() {
    let system = common::system("fp-wait-exc", 2, 2);
    let gate = common::Gate::new();
    let g = gate.clone();
    let futs = vec![
        system
            .submit_thread_fallible(TaskOptions::new(), move |_| {
                g.wait();
                Ok::<u32, common::MyError>(1)
            })
            .unwrap(),
        system
            .submit_thread_fallible(TaskOptions::new(), |_| {
                Err::<u32, _>(common::MyError("bad".into()))
            })
            .unwrap(),
    ];
    let set = seedcore::wait(&futs, seedcore::WaitFor::FirstException, Some(LONG));
    assert_eq!(set.done, vec![1]);
    assert_eq!(set.pending, vec![0]);
    gate.open();
    let mut futs = futs.into_iter();
    assert_eq!(futs.next().unwrap().wait().unwrap(), 1);
    assert!(futs.next().unwrap().wait().is_err());
}

#[test]
fn as_completed_yields_in_completion_order() {
    let system = common::system("fp-asc", 2, 2);
    let gate = common::Gate::new();
    let g = gate.clone();
    let slow = system
        .submit_thread(TaskOptions::new(), move |_| {
            g.wait();
            "slow"
        })
        .unwrap();
    let fast = system
        .submit_thread(TaskOptions::new(), |_| "fast")
        .unwrap();
    let mut it = seedcore::as_completed(vec![slow, fast], Some(LONG));
    let (i, r) = it.next().expect("one resolves");
    assert_eq!((i, r.unwrap()), (1, "fast"));
    gate.open();
    let (i, r) = it.next().expect("the other resolves");
    assert_eq!((i, r.unwrap()), (0, "slow"));
    assert!(it.next().is_none());
    assert!(!it.timed_out());
}

#[test]
fn as_completed_ends_at_its_timeout_and_hands_back_the_rest() {
    let system = common::system("fp-asc-to", 1, 1);
    let gate = common::Gate::new();
    let g = gate.clone();
    let slow = system
        .submit_thread(TaskOptions::new(), move |_| {
            g.wait();
            5u8
        })
        .unwrap();
    let mut it = seedcore::as_completed(vec![slow], Some(std::time::Duration::from_millis(20)));
    assert!(it.next().is_none());
    assert!(it.timed_out());
    let rest = it.into_pending();
    assert_eq!(rest.len(), 1);
    gate.open();
    let (_, f) = rest.into_iter().next().unwrap();
    assert_eq!(f.wait().unwrap(), 5);
}

/// A system of one thread whose thread runs a task held at `gate`, with
/// one more task queued behind it.
fn one_running_one_queued(
    name: &str,
    gate: &common::Gate,
) -> (
    seedcore::ConcurrentSystem,
    seedcore::TaskFuture<u32>,
    seedcore::TaskFuture<u32>,
) {
    let system = common::builder(name)
        .core_threads(1)
        .max_threads(1)
        .shutdown_timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let started = common::Gate::new();
    let (s, g) = (started.clone(), gate.clone());
    let running = system
        .submit_thread(TaskOptions::new(), move |cx| {
            s.open();
            g.wait();
            if cx.is_cancelled() {
                0
            } else {
                1
            }
        })
        .unwrap();
    assert!(started.wait());
    let queued = system.submit_thread(TaskOptions::new(), |_| 2u32).unwrap();
    (system, running, queued)
}

#[test]
fn cancel_queued_shutdown_cancels_queued_and_lets_running_finish() {
    let gate = common::Gate::new();
    let (system, running, queued) = one_running_one_queued("fp-cq", &gate);
    let handle = system.shutdown_background(seedcore::ShutdownMode::CancelQueued);
    assert!(matches!(queued.wait(), Err(TaskError::Cancelled)));
    assert!(!handle.is_done(), "the running task holds the shutdown");
    gate.open();
    assert_eq!(
        running.wait().unwrap(),
        1,
        "the running task was not stopped"
    );
    let report = handle.wait();
    assert_eq!(report.mode, seedcore::ShutdownMode::CancelQueued);
    assert_eq!(report.cancelled, 1);
    assert!(!report.timed_out);
    drop(system);
}

#[test]
fn background_shutdown_returns_at_once_and_reports_when_done() {
    let gate = common::Gate::new();
    let (system, running, queued) = one_running_one_queued("fp-bg", &gate);
    let handle = system.shutdown_background(seedcore::ShutdownMode::Graceful);
    assert!(handle
        .wait_timeout(std::time::Duration::from_millis(20))
        .is_none());
    assert!(!handle.is_done());
    assert!(handle.report().is_none());
    assert!(system.is_closed());
    gate.open();
    assert_eq!(running.wait().unwrap(), 1);
    assert_eq!(
        queued.wait().unwrap(),
        2,
        "graceful: queued work still runs"
    );
    let report = handle.wait_timeout(LONG).expect("the shutdown ended");
    assert!(!report.timed_out);
    assert_eq!(report.cancelled, 0);
    // Dropping the system after a background shutdown returns its report.
    drop(system);
}

#[test]
fn thread_initializer_runs_on_each_thread_before_tasks() {
    thread_local! {
        static READY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    let system = common::builder("fp-tinit")
        .core_threads(2)
        .max_threads(2)
        .thread_initializer(move || {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            READY.with(|r| r.set(true));
            Ok::<(), String>(())
        })
        .build()
        .unwrap();
    let futs: Vec<_> = (0..20)
        .map(|_| {
            system
                .submit_thread(TaskOptions::new(), |_| READY.with(|r| r.get()))
                .unwrap()
        })
        .collect();
    for f in futs {
        assert!(f.wait().unwrap(), "a task ran on a thread not initialized");
    }
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[test]
fn failing_thread_initializer_fails_tasks_with_its_message() {
    let system = common::builder("fp-tinit-fail")
        .core_threads(1)
        .max_threads(2)
        .thread_initializer(|| Err::<(), _>("no GPU context here"))
        .build()
        .unwrap();
    for _ in 0..3 {
        let e = system
            .submit_thread(TaskOptions::new(), |_| 1u8)
            .unwrap()
            .wait_timeout(LONG)
            .expect("a task of a broken pool resolves")
            .unwrap_err();
        assert!(matches!(e, TaskError::PoolBroken(_)), "{e:?}");
        assert!(e.to_string().contains("no GPU context here"), "{e}");
    }
    // No thread keeps being started and failing: the pool stays empty.
    let _ = system.resize_threads(2);
    assert!(common::eventually(LONG, || common::threads(
        &system.stats()
    )
    .workers
        == 0));
}

#[test]
fn cancel_handle_cancels_a_future_another_thread_waits_on() {
    let system = common::system("fp-chandle", 1, 1);
    let fut = system
        .submit_thread(TaskOptions::new(), |cx| {
            while !cx.is_cancelled() {
                std::thread::yield_now();
            }
            0u8
        })
        .unwrap();
    let handle = fut.cancel_handle();
    let waiter = std::thread::spawn(move || fut.wait());
    let h2 = handle.clone();
    assert!(h2.cancel());
    assert!(handle.cancel(), "cancelled already: still true");
    let r = waiter.join().unwrap();
    assert!(matches!(r, Err(TaskError::Cancelled)), "{r:?}");
    assert!(handle.is_done());
}

// ---------------------------------------------------------------------------
// SharedFuture: many readers of one result
// ---------------------------------------------------------------------------

/// A thread task held at a gate (bounded by [`LONG`]) that returns `v`.
fn gated<T: Clone + Send + Sync + 'static>(
    system: &seedcore::ConcurrentSystem,
    v: T,
) -> (seedcore::SharedFuture<T>, common::Gate) {
    let gate = common::Gate::new();
    let g = gate.clone();
    let fut = system
        .submit_thread(TaskOptions::new(), move |_| {
            g.wait();
            v.clone()
        })
        .unwrap();
    (fut.shared(), gate)
}

#[test]
fn shared_future_clones_waited_on_by_several_threads_all_get_the_value() {
    let system = common::system("fp-sh-threads", 1, 2);
    let (shared, gate) = gated(&system, String::from("value"));
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let f = shared.clone();
            std::thread::spawn(move || f.wait_timeout(LONG))
        })
        .collect();
    gate.open();
    for w in waiters {
        let got = w.join().unwrap().expect("a waiter timed out");
        assert_eq!(got.unwrap(), "value");
    }
    assert_eq!(shared.wait().unwrap(), "value");
    assert_eq!(shared.try_get().unwrap().unwrap(), "value");
    assert!(shared.is_done());
    assert_eq!(shared.status(), seedcore::TaskStatus::Succeeded);
}

#[test]
fn three_callbacks_on_one_shared_future_all_run_with_the_value() {
    let system = common::system("fp-sh-cbs", 1, 2);
    let (shared, gate) = gated(&system, 7u32);
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..3 {
        let (runs, tx) = (runs.clone(), tx.clone());
        shared.on_complete(move |r| {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tx.send((i, r.unwrap())).unwrap();
        });
    }
    gate.open();
    let mut got: Vec<_> = (0..3)
        .map(|_| rx.recv_timeout(LONG).expect("a callback did not run"))
        .collect();
    got.sort();
    assert_eq!(got, [(0, 7), (1, 7), (2, 7)]);
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[test]
fn a_callback_attached_to_a_shared_future_after_it_resolved_runs() {
    let system = common::system("fp-sh-late", 1, 2);
    let shared = system
        .submit_thread(TaskOptions::new(), |_| 11u64)
        .unwrap()
        .shared();
    assert_eq!(shared.wait_timeout(LONG).unwrap().unwrap(), 11);
    let (tx, rx) = std::sync::mpsc::channel();
    let tx2 = tx.clone();
    shared.on_complete(move |r| tx.send(r.unwrap()).unwrap());
    // A later clone's callback, too.
    shared
        .clone()
        .on_complete(move |r| tx2.send(r.unwrap() + 1).unwrap());
    let mut got = [
        rx.recv_timeout(LONG).unwrap(),
        rx.recv_timeout(LONG).unwrap(),
    ];
    got.sort();
    assert_eq!(got, [11, 12]);
}

#[test]
fn one_clone_cancels_while_another_thread_waits_and_every_reader_sees_cancelled() {
    let system = common::system("fp-sh-cancel", 1, 2);
    let shared = system
        .submit_thread(TaskOptions::new(), |cx| {
            common::spin_until_cancelled(|| cx.is_cancelled());
            0u8
        })
        .unwrap()
        .shared();
    let (tx, rx) = std::sync::mpsc::channel();
    shared.on_complete(move |r| tx.send(r).unwrap());
    let f = shared.clone();
    let waiter = std::thread::spawn(move || f.wait_timeout(LONG));
    let canceller = shared.clone();
    assert!(canceller.cancel());
    drop(canceller);
    let r = waiter.join().unwrap().expect("the waiter timed out");
    assert!(matches!(r, Err(TaskError::Cancelled)), "{r:?}");
    let cb = rx.recv_timeout(LONG).expect("the callback did not run");
    assert!(matches!(cb, Err(TaskError::Cancelled)), "{cb:?}");
    assert!(matches!(shared.wait(), Err(TaskError::Cancelled)));
    assert!(shared.cancel(), "cancelled already: still true");
    assert_eq!(
        shared.cancel_handle().status(),
        seedcore::TaskStatus::Failed(TaskErrorKind::Cancelled)
    );
}

#[test]
fn a_task_s_own_error_reaches_every_clone_with_its_message() {
    let system = common::system("fp-sh-err", 1, 2);
    let shared = system
        .submit_thread_fallible(TaskOptions::new(), |_| {
            Err::<u8, _>(common::MyError("broken".into()))
        })
        .unwrap()
        .shared();
    for f in [shared.clone(), shared.clone(), shared] {
        match f.wait_timeout(LONG).expect("resolves") {
            Err(TaskError::Failed(e)) => assert_eq!(e.to_string(), "my error: broken"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn clones_of_a_shared_future_are_awaited_from_async_code() {
    let system = common::system("fp-sh-async", 1, 2);
    let (shared, gate) = gated(&system, 5u32);
    // From an async task of the same system, awaiting two clones.
    let (a, b) = (shared.clone(), shared.clone());
    let in_async = system
        .submit_async(TaskOptions::new(), move |_| {
            let (a, b) = (a.clone(), b.clone());
            async move { a.await.unwrap() + b.await.unwrap() }
        })
        .unwrap();
    // From a runtime of the test's own: several clones pending at once,
    // each polled more than once before the task resolves.
    let (c, d) = (shared.clone(), shared.clone());
    let opener = gate.clone();
    let on_tokio = common::block_on(async move {
        let rt = tokio::runtime::Handle::current();
        let c = rt.spawn(c);
        let d = rt.spawn(d);
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        opener.open();
        (c.await.unwrap().unwrap(), d.await.unwrap().unwrap())
    });
    assert_eq!(on_tokio, (5, 5));
    assert_eq!(in_async.wait_timeout(LONG).unwrap().unwrap(), 10);
    // A resolved one is ready at once, again and again.
    assert_eq!(common::block_on(shared.clone()).unwrap(), 5);
    assert_eq!(common::block_on(shared).unwrap(), 5);
}

/// A task of a one-thread pool waits on a shared future of a task it
/// submitted: the waiting thread must not starve it.
#[test]
fn nested_wait_on_a_shared_future_at_max_threads_resolves() {
    let system = Arc::new(common::system("fp-sh-nested", 1, 1));
    let weak: Weak<seedcore::ConcurrentSystem> = Arc::downgrade(&system);
    let outer = system
        .submit_thread(TaskOptions::new(), move |_| {
            let sys = weak.upgrade().expect("system alive");
            let inner = sys
                .submit_thread(TaskOptions::new(), |_| 21u64)
                .unwrap()
                .shared();
            let again = inner.clone();
            let first = inner.wait().unwrap();
            let second = again.wait_timeout(LONG).map(|r| r.unwrap());
            (first, second)
        })
        .unwrap();
    let got = outer.wait_timeout(LONG).expect("nested wait deadlocked");
    assert_eq!(got.unwrap(), (21, Some(21)));
}

#[test]
fn wait_and_as_completed_take_shared_futures() {
    let system = common::system("fp-sh-many", 2, 2);
    let (slow, gate) = gated(&system, 1u32);
    let fast = system
        .submit_thread(TaskOptions::new(), |_| 2u32)
        .unwrap()
        .shared();
    let futs = vec![slow.clone(), fast.clone()];
    let first = seedcore::wait(&futs, seedcore::WaitFor::FirstCompleted, Some(LONG));
    assert_eq!(first.done, vec![1]);
    assert_eq!(first.pending, vec![0]);
    let mut it = seedcore::as_completed(futs, Some(LONG));
    assert_eq!(it.next().map(|(i, r)| (i, r.unwrap())), Some((1, 2)));
    gate.open();
    assert_eq!(it.next().map(|(i, r)| (i, r.unwrap())), Some((0, 1)));
    assert!(it.next().is_none());
    // The originals still read the result.
    assert_eq!((slow.wait().unwrap(), fast.wait().unwrap()), (1, 2));
}

#[test]
fn dropping_every_shared_future_detaches_the_task() {
    let system = common::system("fp-sh-drop", 1, 2);
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let (shared, gate) = {
        let gate = common::Gate::new();
        let g = gate.clone();
        let fut = system
            .submit_thread(TaskOptions::new(), move |_| {
                g.wait();
                tx.lock().unwrap().send(()).unwrap();
                3u8
            })
            .unwrap();
        (fut.shared(), gate)
    };
    let copy = shared.clone();
    drop((shared, copy));
    gate.open();
    rx.recv_timeout(LONG)
        .expect("the detached task did not run");
}

/// Counts its wake-ups and reports each on a channel.
struct CountingWaker {
    wakes: std::sync::atomic::AtomicUsize,
    tx: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
}

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = self.tx.lock().unwrap().send(());
    }
}

#[test]
fn each_pending_clone_is_woken_and_a_repoll_replaces_its_waker() {
    use std::future::Future;
    use std::task::{Context, Poll};
    let system = common::system("fp-sh-wakers", 1, 2);
    let (shared, gate) = gated(&system, 9u8);
    let (tx, rx) = std::sync::mpsc::channel();
    let waker = || {
        let w = Arc::new(CountingWaker {
            wakes: Default::default(),
            tx: std::sync::Mutex::new(tx.clone()),
        });
        (w.clone(), std::task::Waker::from(w))
    };
    let (old, old_w) = waker();
    let (new, new_w) = waker();
    let (other, other_w) = waker();
    let mut a = shared.clone();
    let mut b = shared.clone();
    let poll = |f: &mut seedcore::SharedFuture<u8>, w: &std::task::Waker| {
        std::pin::Pin::new(f).poll(&mut Context::from_waker(w))
    };
    assert!(poll(&mut a, &old_w).is_pending());
    assert!(
        poll(&mut a, &new_w).is_pending(),
        "the same clone, a new waker"
    );
    assert!(poll(&mut b, &other_w).is_pending());
    gate.open();
    for _ in 0..2 {
        rx.recv_timeout(LONG)
            .expect("a pending clone was not woken");
    }
    let seq = std::sync::atomic::Ordering::SeqCst;
    assert_eq!((new.wakes.load(seq), other.wakes.load(seq)), (1, 1));
    assert_eq!(old.wakes.load(seq), 0, "a replaced waker was woken");
    assert!(matches!(poll(&mut a, &new_w), Poll::Ready(Ok(9))));
    assert!(matches!(poll(&mut b, &other_w), Poll::Ready(Ok(9))));
}
