//! Process futures waited on from other tasks: from a thread task of a
//! full pool, from an async task, and a `CancelQueued` shutdown of a
//! process pool with work queued.

use crate::common;

use common::{eventually, process_builder as builder, wait_process as wait, PROCESS_WAIT};
use seedcore::{ConcurrentSystem, ShutdownMode, TaskError, TaskOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

seedcore::enable_test_workers!();

seedcore::process_task! {
    /// Squares.
    fn square(x: u64) -> u64 { x * x }
}

seedcore::process_task! {
    /// Writes its pid to `started`, then waits (at most 60 s) until `flag`
    /// exists, and returns the pid.
    fn hold(started: String, flag: String) -> u32 {
        // Written whole, then renamed: the test never reads half a pid.
        let tmp = format!("{started}.tmp");
        std::fs::write(&tmp, std::process::id().to_string()).expect("write the pid");
        std::fs::rename(&tmp, &started).expect("publish the pid");
        for _ in 0..6_000 {
            if Path::new(&flag).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::process::id()
    }
}

/// A fresh, empty directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("seedcore-pn-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    fn file(&self, name: &str) -> String {
        self.0
            .join(name)
            .to_str()
            .expect("temp paths are UTF-8")
            .to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether a process with this pid exists (a zombie counts).
fn pid_exists(pid: u32) -> bool {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a worker pid is positive");
    rustix::process::test_kill_process(pid).is_ok()
}

/// Waits until a task has written its pid to `path`; returns it.
fn read_pid(path: &str) -> u32 {
    let mut pid = None;
    assert!(
        eventually(PROCESS_WAIT, || {
            pid = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            pid.is_some()
        }),
        "the task never wrote {path}"
    );
    pid.expect("checked")
}

/// A thread task of a one-thread pool submits a process task and waits on
/// it, and on a thread task too: neither wait starves the pool.
#[test]
fn a_thread_task_at_max_threads_waits_on_a_process_future() {
    let sys = Arc::new(
        builder("pn-thread")
            .core_threads(1)
            .max_threads(1)
            .build()
            .unwrap(),
    );
    let weak: Weak<ConcurrentSystem> = Arc::downgrade(&sys);
    let outer = sys
        .submit_thread(TaskOptions::new(), move |_| {
            let sys = weak.upgrade().expect("system alive");
            let p = sys.submit_process(TaskOptions::new(), square, 12).unwrap();
            let t = sys.submit_thread(TaskOptions::new(), |_| 5u64).unwrap();
            let p = p.wait_timeout(PROCESS_WAIT).ok().map(|r| r.unwrap());
            let t = t.wait_timeout(PROCESS_WAIT).ok().map(|r| r.unwrap());
            (p, t)
        })
        .unwrap();
    assert_eq!(wait(outer).unwrap(), (Some(144), Some(5)));
}

/// An async task awaits a process task's future and a thread task's.
#[test]
fn an_async_task_awaits_a_process_future_and_a_thread_future() {
    let sys = Arc::new(builder("pn-async").build().unwrap());
    let weak: Weak<ConcurrentSystem> = Arc::downgrade(&sys);
    let outer = sys
        .submit_async(TaskOptions::new(), move |_| {
            let weak = weak.clone();
            async move {
                let (p, t) = {
                    let sys = weak.upgrade().expect("system alive");
                    (
                        sys.submit_process(TaskOptions::new(), square, 9).unwrap(),
                        sys.submit_thread(TaskOptions::new(), |_| 4u64).unwrap(),
                    )
                };
                (p.await.unwrap(), t.await.unwrap())
            }
        })
        .unwrap();
    assert_eq!(wait(outer).unwrap(), (81, 4));
}

/// One worker runs a task held by a flag file while three wait behind it;
/// `CancelQueued` cancels the three at once, lets the running one finish,
/// and leaves no worker process.
#[test]
fn cancel_queued_shutdown_of_a_process_pool_cancels_queued_and_finishes_running() {
    let dir = TempDir::new("cq");
    let (started, flag) = (dir.file("started"), dir.file("flag"));
    let sys = builder("pn-cq")
        .shutdown_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let running = sys
        .submit_process(TaskOptions::new(), hold, (started.clone(), flag.clone()))
        .unwrap();
    let pid = read_pid(&started);
    let queued: Vec<_> = (0..3)
        .map(|i| sys.submit_process(TaskOptions::new(), square, i).unwrap())
        .collect();
    let handle = sys.shutdown_background(ShutdownMode::CancelQueued);
    for q in queued {
        let r = wait(q);
        assert!(matches!(r, Err(TaskError::Cancelled)), "queued: {r:?}");
    }
    assert!(!handle.is_done(), "the running task holds the shutdown");
    std::fs::write(&flag, "go").expect("raise the flag");
    assert_eq!(wait(running).unwrap(), pid, "the running task was stopped");
    let report = handle
        .wait_timeout(PROCESS_WAIT)
        .expect("the shutdown did not finish");
    assert_eq!(report.mode, ShutdownMode::CancelQueued);
    assert_eq!(report.cancelled, 3);
    assert!(!report.timed_out);
    assert!(!pid_exists(pid), "worker {pid} outlived the shutdown");
    assert!(common::processes(&sys.stats()).pids.is_empty());
}
