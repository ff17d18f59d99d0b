//! A program that forgets `seedcore::init()`: its workers must not start
//! pools of their own; the parent's tasks fail at once with a message that
//! names `init`.
//!
//! This test binary has no `enable_test_workers!()`: it runs itself as the
//! worker program, where `worker_entry` builds a system as a `main` without
//! `init()` would.

use seedcore::{ConcurrentSystem, SubmitError, TaskError, TaskOptions, WorkerOutput};
use std::time::Duration;

seedcore::process_task! {
    fn double(x: u64) -> u64 { x * 2 }
}

/// What a worker runs: a `main` that builds a system without calling
/// `seedcore::init()`. Run normally, it is a no-op.
#[test]
fn worker_entry() {
    if std::env::var_os("SEEDCORE_WORKER_FD").is_none() {
        return;
    }
    let _system = ConcurrentSystem::new();
    // Not reached in a worker: building ends the process.
    std::process::exit(0);
}

#[test]
fn a_worker_without_init_fails_the_task_naming_init_and_spawns_nothing() {
    let exe = std::env::current_exe().unwrap();
    let sys = ConcurrentSystem::builder()
        .name("missing-init")
        .core_processes(1)
        .max_processes(1)
        .process_program(exe)
        .process_args(["--exact", "worker_entry", "--nocapture", "--test-threads=1"])
        .process_output(WorkerOutput::Discard)
        // Far longer than the test waits: the refusal must come first.
        .process_start_timeout(Duration::from_secs(120))
        .shutdown_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let f = sys.submit_process(TaskOptions::new(), double, 21).unwrap();
    match f.wait_timeout(Duration::from_secs(60)) {
        Ok(Err(TaskError::PoolBroken(why))) => {
            assert!(why.contains("seedcore::init()"), "{why}");
            assert!(why.contains("does not call"), "{why}");
        }
        Ok(other) => panic!("expected PoolBroken, got {other:?}"),
        Err(_) => panic!("the task did not resolve: the missing init() went unnoticed"),
    }
    match sys.submit_process(TaskOptions::new(), double, 1) {
        Err(SubmitError::PoolBroken(why)) => assert!(why.contains("seedcore::init()"), "{why}"),
        other => panic!("expected PoolBroken at submit, got {:?}", other.map(|_| ())),
    }
    // The worker exited: no process is left, none was started by it.
    let workers = || {
        sys.stats()
            .executor(seedcore::ExecutorKind::Processes)
            .map_or(0, |r| r.workers)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while workers() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(workers(), 0, "the refused worker is still there");
    sys.shutdown(seedcore::ShutdownMode::Immediate);
}
