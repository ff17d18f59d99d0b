//! Behaviour of completion callbacks on each executor: where they run,
//! panics in them, callbacks on finished tasks, and `TaskHandle`.

use crate::common;

use common::{eventually, thread_name, Gate, LONG, PANIC_MARKER};
use seedcore::{
    CallbackExecutor, CallbackQueue, Priority, ShutdownMode, TaskErrorKind, TaskOptions, TaskStatus,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn thread_executor_runs_callbacks_on_the_callbacks_thread() {
    let system = common::system("c-thread", 2, 4);
    let (tx, rx) = mpsc::channel();
    let t = tx.clone();
    system
        .submit_thread(TaskOptions::new(), |_| 21u32)
        .unwrap()
        .on_complete(move |r| t.send((r.unwrap() * 2, thread_name())).unwrap());
    system
        .submit_async(TaskOptions::new(), |_| async { 50u32 })
        .unwrap()
        .on_complete(move |r| tx.send((r.unwrap(), thread_name())).unwrap());
    let mut got = vec![
        rx.recv_timeout(LONG).unwrap(),
        rx.recv_timeout(LONG).unwrap(),
    ];
    got.sort();
    assert_eq!(
        got,
        vec![
            (42, "c-thread-callbacks".to_owned()),
            (50, "c-thread-callbacks".to_owned())
        ]
    );
}

#[test]
fn callbacks_of_errors_receive_the_error() {
    let system = common::system("c-err", 1, 2);
    let (tx, rx) = mpsc::channel();
    system
        .submit_thread_fallible(TaskOptions::new(), |_| -> Result<u8, _> { Err("broken") })
        .unwrap()
        .on_complete(move |r| tx.send(r.map_err(|e| e.to_string())).unwrap());
    assert_eq!(
        rx.recv_timeout(LONG).unwrap(),
        Err("task failed: broken".to_owned())
    );
}

#[test]
fn queue_executor_runs_callbacks_only_in_run_pending_on_the_calling_thread() {
    let queue = CallbackQueue::new();
    let system = common::builder("c-queue")
        .callback_executor(CallbackExecutor::Queue(queue.clone()))
        .build()
        .unwrap();
    assert!(system.callback_queue().is_some());
    let ran_on = Arc::new(std::sync::Mutex::new(None));
    let r = ran_on.clone();
    let handle = system
        .submit_thread(TaskOptions::new(), |_| 7u8)
        .unwrap()
        .on_complete(move |res| {
            *r.lock().unwrap() = Some((res.unwrap(), std::thread::current().id()));
        });
    assert!(eventually(LONG, || queue.len() == 1), "callback not queued");
    assert!(handle.is_done());
    // Queued, not run: nothing runs callbacks but the application.
    std::thread::sleep(Duration::from_millis(20));
    assert!(ran_on.lock().unwrap().is_none());
    assert!(!queue.is_empty());
    assert_eq!(queue.run_pending(), 1);
    assert_eq!(
        *ran_on.lock().unwrap(),
        Some((7, std::thread::current().id()))
    );
    assert!(queue.is_empty());
    assert_eq!(queue.run_pending(), 0);
}

#[test]
fn queue_executor_run_pending_timeout_waits_for_a_callback() {
    let queue = CallbackQueue::new();
    let system = common::builder("c-queuewait")
        .callback_executor(CallbackExecutor::Queue(queue.clone()))
        .build()
        .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    system
        .submit_thread(TaskOptions::new(), |_| {
            std::thread::sleep(Duration::from_millis(20));
        })
        .unwrap()
        .on_complete(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        });
    assert_eq!(queue.run_pending_timeout(LONG), 1);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // Nothing more arrives: the wait ends at its timeout with nothing run.
    assert_eq!(queue.run_pending_timeout(Duration::from_millis(20)), 0);
}

#[test]
fn tokio_executor_runs_callbacks_on_the_given_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("c-app-rt")
        .enable_all()
        .build()
        .unwrap();
    let system = common::builder("c-tokio")
        .callback_executor(CallbackExecutor::Tokio(rt.handle().clone()))
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    system
        .submit_thread(TaskOptions::new(), |_| 1u8)
        .unwrap()
        .on_complete(move |r| {
            let in_runtime = tokio::runtime::Handle::try_current().is_ok();
            tx.send((r.unwrap(), in_runtime, thread_name())).unwrap();
        });
    assert_eq!(
        rx.recv_timeout(LONG).unwrap(),
        (1, true, "c-app-rt".to_owned())
    );
    drop(system);
    drop(rt);
}

#[test]
fn a_panicking_callback_is_caught_counted_and_later_callbacks_run() {
    let system = common::system("c-panic", 1, 2);
    system
        .submit_thread(TaskOptions::new(), |_| ())
        .unwrap()
        .on_complete(|_| panic!("{PANIC_MARKER}: in a callback"));
    assert!(
        eventually(LONG, || system.stats().callback_panics == 1),
        "callback panics: {}",
        system.stats().callback_panics
    );
    let (tx, rx) = mpsc::channel();
    system
        .submit_thread(TaskOptions::new(), |_| 2u8)
        .unwrap()
        .on_complete(move |r| tx.send((r.unwrap(), thread_name())).unwrap());
    assert_eq!(
        rx.recv_timeout(LONG).unwrap(),
        (2, "c-panic-callbacks".to_owned()),
        "the callback thread died with the panic"
    );
    assert_eq!(system.stats().callback_panics, 1);
    assert_eq!(system.stats().completed, 2, "the task itself succeeded");
}

#[test]
fn a_panicking_callback_in_run_pending_is_caught_and_counted() {
    let queue = CallbackQueue::new();
    let system = common::builder("c-qpanic")
        .callback_executor(CallbackExecutor::Queue(queue.clone()))
        .build()
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    system
        .submit_thread(TaskOptions::new(), |_| ())
        .unwrap()
        .on_complete(|_| panic!("{PANIC_MARKER}: in a queued callback"));
    assert!(eventually(LONG, || queue.len() == 1));
    system
        .submit_thread(TaskOptions::new(), |_| ())
        .unwrap()
        .on_complete(move |_| r.store(true, Ordering::SeqCst));
    assert!(eventually(LONG, || queue.len() == 2));
    assert_eq!(queue.run_pending(), 2);
    assert!(ran.load(Ordering::SeqCst), "the callback after a panic ran");
    assert_eq!(system.stats().callback_panics, 1);
}

#[test]
fn a_panicking_callback_on_tokio_is_caught_and_counted() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let system = common::builder("c-tpanic")
        .callback_executor(CallbackExecutor::Tokio(rt.handle().clone()))
        .build()
        .unwrap();
    system
        .submit_thread(TaskOptions::new(), |_| ())
        .unwrap()
        .on_complete(|_| panic!("{PANIC_MARKER}: in a tokio callback"));
    assert!(eventually(LONG, || system.stats().callback_panics == 1));
    let (tx, rx) = mpsc::channel();
    system
        .submit_thread(TaskOptions::new(), |_| 3u8)
        .unwrap()
        .on_complete(move |r| tx.send(r.unwrap()).unwrap());
    assert_eq!(rx.recv_timeout(LONG).unwrap(), 3);
    drop(system);
    drop(rt);
}

#[test]
fn on_complete_on_an_already_finished_task_still_runs_on_the_executor() {
    let system = common::system("c-late", 1, 2);
    let fut = system.submit_thread(TaskOptions::new(), |_| 8u8).unwrap();
    assert!(eventually(LONG, || fut.is_done()));
    std::thread::sleep(Duration::from_millis(5));
    let (tx, rx) = mpsc::channel();
    let handle = fut.on_complete(move |r| tx.send((r.unwrap(), thread_name())).unwrap());
    assert_eq!(
        rx.recv_timeout(LONG).unwrap(),
        (8, "c-late-callbacks".to_owned()),
        "not run, or run on the registering thread"
    );
    assert_eq!(handle.status(), TaskStatus::Succeeded);
    assert!(!handle.cancel());
}

#[test]
fn task_handle_cancels_a_queued_task_and_its_callback_gets_cancelled() {
    let system = common::system("c-handle", 1, 1);
    let started = Gate::new();
    let release = Gate::new();
    let (s, r) = (started.clone(), release.clone());
    let gate = system
        .submit_thread(TaskOptions::new().priority(Priority::CRITICAL), move |_| {
            s.open();
            r.wait();
        })
        .unwrap();
    assert!(started.wait());
    let ran = Arc::new(AtomicBool::new(false));
    let rn = ran.clone();
    let (tx, rx) = mpsc::channel();
    let handle = system
        .submit_thread(TaskOptions::new(), move |_| {
            rn.store(true, Ordering::SeqCst)
        })
        .unwrap()
        .on_complete(move |r| tx.send(r.map_err(|e| e.kind())).unwrap());
    let clone = handle.clone();
    assert_eq!(handle.status(), TaskStatus::Queued);
    assert!(!handle.is_done());
    assert!(clone.cancel());
    assert!(handle.cancel(), "a cancelled task reports true again");
    assert_eq!(
        rx.recv_timeout(LONG).unwrap(),
        Err(TaskErrorKind::Cancelled)
    );
    assert!(handle.is_done());
    assert_eq!(
        handle.status(),
        TaskStatus::Failed(TaskErrorKind::Cancelled)
    );
    release.open();
    gate.wait().unwrap();
    let after = system.submit_thread(TaskOptions::new(), |_| ()).unwrap();
    after.wait().unwrap();
    assert!(!ran.load(Ordering::SeqCst));
}

#[test]
fn dropping_a_task_handle_changes_nothing() {
    let system = common::system("c-hdrop", 1, 2);
    let (tx, rx) = mpsc::channel();
    let handle = system
        .submit_thread(TaskOptions::new(), |_| {
            std::thread::sleep(Duration::from_millis(10));
            4u8
        })
        .unwrap()
        .on_complete(move |r| tx.send(r.unwrap()).unwrap());
    drop(handle);
    assert_eq!(rx.recv_timeout(LONG).unwrap(), 4);
}

#[test]
fn callbacks_of_the_last_results_run_before_shutdown_returns() {
    let system = common::system("c-last", 1, 2);
    let count = Arc::new(AtomicUsize::new(0));
    for _ in 0..20 {
        let c = count.clone();
        system
            .submit_thread(TaskOptions::new(), |_| {
                std::thread::sleep(Duration::from_millis(1));
            })
            .unwrap()
            .on_complete(move |_| {
                std::thread::sleep(Duration::from_millis(1));
                c.fetch_add(1, Ordering::SeqCst);
            });
    }
    let report = system.shutdown(ShutdownMode::Graceful);
    assert!(!report.timed_out);
    assert_eq!(count.load(Ordering::SeqCst), 20);
}

#[test]
fn callbacks_of_cancelled_tasks_run_at_an_immediate_shutdown() {
    let system = common::system("c-cancelshut", 1, 1);
    let started = Gate::new();
    let s = started.clone();
    let gate = system
        .submit_thread(TaskOptions::new(), move |ctx| {
            s.open();
            common::spin_until_cancelled(|| ctx.is_cancelled());
        })
        .unwrap();
    assert!(started.wait());
    let (tx, rx) = mpsc::channel();
    for _ in 0..5 {
        let tx = tx.clone();
        system
            .submit_thread(TaskOptions::new(), |_| ())
            .unwrap()
            .on_complete(move |r| tx.send(r.map_err(|e| e.kind())).unwrap());
    }
    drop(tx);
    let report = system.shutdown(ShutdownMode::Immediate);
    assert_eq!(report.cancelled, 5);
    for _ in 0..5 {
        assert_eq!(
            rx.recv_timeout(LONG).unwrap(),
            Err(TaskErrorKind::Cancelled)
        );
    }
    // The running task saw the shutdown and returned on its own.
    assert!(gate.wait().is_ok());
}
