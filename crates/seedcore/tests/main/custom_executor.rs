//! An executor defined here, against the public `Executor` trait alone: one
//! dedicated thread that runs tasks in priority order. Registered with
//! `add_executor`, it gets priorities, timeouts, retries, locks,
//! cancellation, callbacks, stats and shutdown from the scheduler, without
//! any code of its own for them.

use parking_lot::{Condvar, Mutex};
use seedcore::exec::{
    Executor, ExecutorStats, PriorityQueue, Runnable, StopReason, StopReport, WorkerInfo,
};
use seedcore::{
    CallbackExecutor, CallbackQueue, ConcurrentSystem, ExecutorHandle, ExecutorKind, Priority,
    RetryOn, RetryPolicy, ShutdownMode, TaskError, TaskId, TaskOptions, TaskStatus,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const KIND: ExecutorKind = ExecutorKind::Custom("one-thread");

#[derive(Default)]
struct Shared {
    queue: PriorityQueue<Runnable>,
    wake: Mutex<bool>,
    cv: Condvar,
    stopping: AtomicBool,
    busy: AtomicUsize,
    done: AtomicUsize,
    /// What the scheduler asked `stop_attempt` for.
    stops: Mutex<Vec<(TaskId, u32, StopReason)>>,
    stopped: AtomicBool,
}

/// One thread, its own priority queue, nothing else.
struct OneThread {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl OneThread {
    fn start() -> (OneThread, Arc<Shared>) {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("one-thread".into())
            .spawn(move || loop {
                if let Some(task) = s.queue.pop() {
                    s.busy.store(1, Ordering::SeqCst);
                    task.run();
                    s.busy.store(0, Ordering::SeqCst);
                    s.done.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let mut woken = s.wake.lock();
                if s.stopping.load(Ordering::SeqCst) {
                    return;
                }
                if !*woken && s.queue.is_empty() {
                    s.cv.wait_for(&mut woken, Duration::from_millis(50));
                }
                *woken = false;
            })
            .unwrap();
        let e = OneThread {
            shared: shared.clone(),
            thread: Mutex::new(Some(thread)),
        };
        (e, shared)
    }
}

impl Executor for OneThread {
    fn kind(&self) -> ExecutorKind {
        KIND
    }

    fn accept(&self, task: Runnable) {
        self.shared.queue.push(task.priority(), task);
        *self.shared.wake.lock() = true;
        self.shared.cv.notify_one();
    }

    fn stop_attempt(&self, task: TaskId, attempt: u32, why: StopReason) {
        self.shared.stops.lock().push((task, attempt, why));
    }

    fn drain(&self) -> Vec<Runnable> {
        std::iter::from_fn(|| self.shared.queue.pop()).collect()
    }

    fn stop(&self, deadline: Instant, _mode: ShutdownMode) -> StopReport {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.cv.notify_all();
        self.shared.stopped.store(true, Ordering::SeqCst);
        let Some(h) = self.thread.lock().take() else {
            return StopReport::default();
        };
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if h.is_finished() {
            h.join().unwrap();
            StopReport::default()
        } else {
            StopReport::detached(1)
        }
    }

    fn stats(&self) -> ExecutorStats {
        let mut row = ExecutorStats::new(KIND);
        row.queue_depth = self.shared.queue.depths();
        row.queued = self.shared.queue.len();
        row.workers = 1;
        row.busy = self.shared.busy.load(Ordering::SeqCst);
        row.core = 1;
        row.max = 1;
        row.target = 1;
        row
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        let mut w = WorkerInfo::thread(0, "one-thread");
        w.tasks_done = self.shared.done.load(Ordering::SeqCst) as u64;
        vec![w]
    }
}

fn system_with_executor() -> (ConcurrentSystem, ExecutorHandle, Arc<Shared>) {
    let system = ConcurrentSystem::builder()
        .core_threads(2)
        .max_threads(4)
        .build()
        .unwrap();
    let (e, shared) = OneThread::start();
    let handle = system.add_executor(e).unwrap();
    assert_eq!(handle.kind(), KIND);
    (system, handle, shared)
}

/// Occupies the executor's thread until the returned sender is dropped or
/// sent to; returns once the blocker runs.
fn block(system: &ConcurrentSystem, on: &ExecutorHandle) -> mpsc::Sender<()> {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel();
    let go_rx = Mutex::new(go_rx);
    let _blocker = system
        .submit_on(
            on,
            TaskOptions::new().priority(Priority::CRITICAL),
            move |_| {
                started_tx.send(()).unwrap();
                let _ = go_rx.lock().recv();
            },
        )
        .unwrap();
    started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    go_tx
}

#[test]
fn tasks_run_in_priority_order_then_fifo_within_a_level() {
    let (system, on, _) = system_with_executor();
    let gate = block(&system, &on);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut futures = Vec::new();
    for (label, p) in [
        ("low-1", Priority::LOW),
        ("high", Priority::HIGH),
        ("low-2", Priority::LOW),
        ("critical", Priority::CRITICAL),
        ("normal", Priority::NORMAL),
    ] {
        let order = order.clone();
        futures.push(
            system
                .submit_on(&on, TaskOptions::new().priority(p), move |_| {
                    order.lock().push(label)
                })
                .unwrap(),
        );
    }
    let row = system.stats().executor(KIND).cloned().unwrap();
    assert_eq!(row.queued, 5);
    assert_eq!(row.running, 1, "the blocker runs");
    drop(gate);
    for f in futures {
        f.wait().unwrap();
    }
    assert_eq!(
        *order.lock(),
        ["critical", "high", "normal", "low-1", "low-2"]
    );
}

#[test]
fn a_timeout_resolves_at_the_deadline_and_asks_the_executor_to_stop_that_attempt() {
    let (system, on, shared) = system_with_executor();
    let saw_token = Arc::new(AtomicBool::new(false));
    let seen = saw_token.clone();
    let f = system
        .submit_on(
            &on,
            TaskOptions::new().timeout(Duration::from_millis(50)),
            move |ctx| {
                while !ctx.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                seen.store(true, Ordering::SeqCst);
            },
        )
        .unwrap();
    let id = f.id();
    assert!(matches!(f.wait(), Err(TaskError::TimedOut(d)) if d == Duration::from_millis(50)));
    assert_eq!(
        shared.stops.lock().as_slice(),
        &[(id, 1, StopReason::Timeout)]
    );
    // The cooperative attempt saw its token and returned.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !saw_token.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(saw_token.load(Ordering::SeqCst));
    assert_eq!(system.stats().timed_out, 1);
}

#[test]
fn retries_run_again_on_the_same_executor_and_count_in_the_stats() {
    let (system, on, _) = system_with_executor();
    let f = system
        .submit_on(
            &on,
            TaskOptions::new().retry(RetryPolicy::retries(3).on(RetryOn::PANIC)),
            |ctx| {
                assert_eq!(std::thread::current().name(), Some("one-thread"));
                if ctx.attempt() < 3 {
                    panic!("attempt {}", ctx.attempt());
                }
                ctx.attempt()
            },
        )
        .unwrap();
    assert_eq!(f.wait().unwrap(), 3);
    let st = system.stats();
    assert_eq!((st.retried, st.attempts, st.completed), (2, 3, 1));
}

#[test]
fn a_lock_held_by_a_thread_task_parks_the_custom_task_until_it_is_released() {
    let (system, on, _) = system_with_executor();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (held_tx, held_rx) = mpsc::channel();
    let release_rx = Mutex::new(release_rx);
    let holder = system
        .submit_thread(TaskOptions::new().lock("ledger"), move |_| {
            held_tx.send(()).unwrap();
            let _ = release_rx.lock().recv();
        })
        .unwrap();
    held_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let waiter = system
        .submit_on(&on, TaskOptions::new().lock("ledger"), move |_| {
            r.store(true, Ordering::SeqCst)
        })
        .unwrap();
    let impatient = system
        .submit_on(
            &on,
            TaskOptions::new()
                .lock("ledger")
                .lock_timeout(Duration::from_millis(30)),
            |_| (),
        )
        .unwrap();
    assert!(matches!(
        impatient.wait(),
        Err(TaskError::LockTimeout { lock, .. }) if lock == "ledger"
    ));
    assert_eq!(waiter.status(), TaskStatus::WaitingForLock);
    assert!(!ran.load(Ordering::SeqCst));
    drop(release_tx);
    holder.wait().unwrap();
    waiter.wait().unwrap();
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn a_queued_task_cancelled_never_runs_and_a_running_one_is_stopped() {
    let (system, on, shared) = system_with_executor();
    let gate = block(&system, &on);
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let queued = system
        .submit_on(&on, TaskOptions::new(), move |_| {
            r.store(true, Ordering::SeqCst)
        })
        .unwrap();
    assert!(queued.cancel());
    assert!(queued.cancel(), "a cancelled task reports true again");
    drop(gate);
    assert!(matches!(queued.wait(), Err(TaskError::Cancelled)));

    let (started_tx, started_rx) = mpsc::channel();
    let running = system
        .submit_on(&on, TaskOptions::new(), move |ctx| {
            started_tx.send(()).unwrap();
            while !ctx.is_cancelled() {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .unwrap();
    started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let id = running.id();
    assert!(running.cancel());
    assert!(shared.stops.lock().contains(&(id, 1, StopReason::Cancel)));
    // The queued task never ran; nothing ran it after its cancel.
    std::thread::sleep(Duration::from_millis(20));
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(system.stats().cancelled, 2);
}

#[test]
fn callbacks_run_on_the_callback_executor_not_on_the_executors_thread() {
    let queue = CallbackQueue::new();
    let system = ConcurrentSystem::builder()
        .callback_executor(CallbackExecutor::Queue(queue.clone()))
        .build()
        .unwrap();
    let (e, _) = OneThread::start();
    let on = system.add_executor(e).unwrap();
    let (tx, rx) = mpsc::channel();
    let main = std::thread::current().id();
    system
        .submit_on(&on, TaskOptions::new(), |_| 6 * 7)
        .unwrap()
        .on_complete(move |r| tx.send((r.unwrap(), std::thread::current().id())).unwrap());
    assert_eq!(queue.run_pending_timeout(Duration::from_secs(5)), 1);
    assert_eq!(rx.recv().unwrap(), (42, main));
}

#[test]
fn the_executor_has_its_own_row_in_the_stats_and_is_stopped_at_shutdown() {
    let (system, on, shared) = system_with_executor();
    for i in 0..10u32 {
        assert_eq!(
            system
                .submit_on(&on, TaskOptions::new(), move |_| i * 2)
                .unwrap()
                .wait()
                .unwrap(),
            i * 2
        );
    }
    let st = system.stats();
    let row = st.executor(KIND).unwrap();
    assert_eq!((row.workers, row.queued, row.running), (1, 0, 0));
    assert_eq!(st.completed, 10);
    assert!(st.executor(ExecutorKind::Threads).is_some());
    // A second executor of the same kind is refused.
    let (again, _) = OneThread::start();
    assert!(system.add_executor(again).is_err());

    let gate = block(&system, &on);
    let left = system.submit_on(&on, TaskOptions::new(), |_| ()).unwrap();
    drop(gate);
    let report = system.shutdown(ShutdownMode::Graceful);
    assert_eq!(report.detached_threads, 0);
    left.wait().unwrap();
    assert!(shared.stopped.load(Ordering::SeqCst));
    assert!(matches!(
        system.submit_on(&on, TaskOptions::new(), |_| ()),
        Err(seedcore::SubmitError::SystemClosed)
    ));
}

#[test]
fn an_immediate_shutdown_cancels_what_waits_in_the_executors_queue() {
    let (system, on, _) = system_with_executor();
    let gate = block(&system, &on);
    let queued: Vec<_> = (0..5)
        .map(|_| system.submit_on(&on, TaskOptions::new(), |_| ()).unwrap())
        .collect();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        drop(gate);
    });
    let report = system.shutdown(ShutdownMode::Immediate);
    releaser.join().unwrap();
    assert_eq!(report.cancelled, 5);
    for f in queued {
        assert!(matches!(f.wait(), Err(TaskError::Cancelled)));
    }
}

/// An executor that fails every task it is handed with the next error of
/// its list: every kind of `TaskError` takes the core's resolve path (the
/// packed outcome, the status, the stats) without the executor that would
/// raise it (a GPU, a dead worker).
struct Failing {
    errors: Mutex<Vec<TaskError>>,
}

impl Executor for Failing {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Custom("failing")
    }

    fn accept(&self, task: Runnable) {
        let e = self.errors.lock().remove(0);
        assert!(task.fail(e));
    }

    fn drain(&self) -> Vec<Runnable> {
        Vec::new()
    }

    fn stop(&self, _deadline: Instant, _mode: ShutdownMode) -> StopReport {
        StopReport::default()
    }

    fn stats(&self) -> ExecutorStats {
        ExecutorStats::new(ExecutorKind::Custom("failing"))
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        Vec::new()
    }
}

#[test]
fn every_error_kind_resolves_its_task_through_the_core() {
    let every = || {
        vec![
            TaskError::Panicked("p".into()),
            TaskError::failed("f"),
            TaskError::TimedOut(Duration::from_secs(1)),
            TaskError::Cancelled,
            TaskError::LockTimeout {
                lock: "l".into(),
                waited: Duration::from_secs(1),
            },
            TaskError::SystemShutdown,
            TaskError::WorkerDied {
                exit_code: None,
                signal: Some(9),
                pid: None,
                task: None,
                detail: "killed".into(),
            },
            TaskError::MemoryLimit { limit: 1, rss: 2 },
            TaskError::PoolBroken("b".into()),
            TaskError::GpuMemory {
                device: None,
                requested: 1 << 30,
                available: 0,
            },
        ]
    };
    let kinds: Vec<_> = every().iter().map(TaskError::kind).collect();
    let system = ConcurrentSystem::builder().core_threads(1).build().unwrap();
    let on = system
        .add_executor(Failing {
            errors: Mutex::new(every()),
        })
        .unwrap();
    for kind in kinds {
        let fut = system.submit_on(&on, TaskOptions::new(), |_| ()).unwrap();
        let handle = fut.cancel_handle();
        let err = fut.wait().expect_err("the executor fails every task");
        assert_eq!(err.kind(), kind);
        assert_eq!(handle.status(), TaskStatus::Failed(kind));
    }
    assert_eq!(system.stats().resolved(), 10);
}

/// Stats, metrics and the monitor key rows by name: the table takes one
/// executor per name, and none under a built-in executor's name.
#[test]
fn an_executor_name_is_taken_once_and_built_in_names_are_reserved() {
    let (system, _handle, _shared) = system_with_executor();
    let failing = || Failing {
        errors: Mutex::new(Vec::new()),
    };
    system.add_executor(failing()).unwrap();
    for refused in [
        system.add_executor(failing()),
        system.add_executor(OneThread::start().0),
    ] {
        assert!(matches!(
            refused,
            Err(seedcore::SubmitError::InvalidOptions(_))
        ));
    }
    struct Impostor(&'static str);
    impl Executor for Impostor {
        fn kind(&self) -> ExecutorKind {
            ExecutorKind::Custom(self.0)
        }
        fn accept(&self, task: Runnable) {
            task.run();
        }
        fn drain(&self) -> Vec<Runnable> {
            Vec::new()
        }
        fn stop(&self, _deadline: Instant, _mode: ShutdownMode) -> StopReport {
            StopReport::default()
        }
        fn stats(&self) -> ExecutorStats {
            ExecutorStats::new(self.kind())
        }
    }
    for name in [
        "threads",
        "processes",
        "async",
        "services",
        "gpu",
        "command",
        "remote",
    ] {
        let e = system.add_executor(Impostor(name)).unwrap_err();
        assert!(e.to_string().contains("built-in"), "{name}: {e}");
    }
    // The command executor, added on first use, is the built-in one.
    let out = system
        .submit_command(
            TaskOptions::new(),
            seedcore::command::CommandSpec::shell("exit 0"),
        )
        .unwrap()
        .wait()
        .unwrap();
    assert!(out.success());
    let names: Vec<&str> = system
        .stats()
        .executors
        .iter()
        .map(|r| r.kind.name())
        .collect();
    assert_eq!(
        names,
        [
            "threads",
            "processes",
            "async",
            "services",
            "one-thread",
            "failing",
            "command"
        ]
    );
    system.shutdown(ShutdownMode::Immediate);
}
