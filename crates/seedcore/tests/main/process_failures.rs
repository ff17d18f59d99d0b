//! The process pool's failure paths: each ends every future with an error
//! that says what happened, and leaves the system stoppable.
//!
//! Initializers that fail, workers that cannot be started, `Deserialize`
//! and `Serialize` impls that panic or refuse, crashes that name their
//! signal, panics that keep their location, output without newlines,
//! arguments and results over the frame limit, callbacks attached after
//! shutdown, and the first tasks spread over idle workers.

use crate::common;

use common::eventually;
use seedcore::{ConcurrentSystem, ShutdownMode, SubmitError, TaskError, TaskFuture, TaskOptions};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

seedcore::enable_test_workers!();

/// Far above what a healthy run needs; a hang still ends the test.
const LONG: Duration = Duration::from_secs(30);

use common::{process_builder as builder, wait_process as wait};

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "seedcore-pf-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

seedcore::process_task! {
    /// An initializer that panics.
    fn exploding_init() {
        panic!("the initializer exploded: no licence file");
    }
}

seedcore::process_task! {
    /// An initializer that returns an error.
    fn refusing_init() -> Result<(), String> {
        Err("cannot open the model: permission denied".to_owned())
    }
}

seedcore::process_task! {
    fn square(x: u64) -> u64 { x * x }
}

/// Encodes, but a worker refuses to decode it.
struct RefusedInWorker;

impl Serialize for RefusedInWorker {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(7)
    }
}

impl<'de> Deserialize<'de> for RefusedInWorker {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("the licence key is malformed"))
    }
}

seedcore::process_task! {
    /// An initializer whose arguments no worker can decode.
    fn picky_init(_key: RefusedInWorker) {}
}

/// Cannot be encoded at all.
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "an Unencodable value holds a socket",
        ))
    }
}

impl<'de> Deserialize<'de> for Unencodable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u8::deserialize(d).map(|_| Unencodable)
    }
}

seedcore::process_task! {
    /// An initializer whose arguments cannot be encoded.
    fn unencodable_init(_x: Unencodable) {}
}

/// The length of what `blob_init` was given, in this worker.
static BLOB_LEN: AtomicUsize = AtomicUsize::new(0);

seedcore::process_task! {
    /// An initializer with a large argument.
    fn blob_init(blob: Vec<u8>) {
        BLOB_LEN.store(blob.len(), Ordering::SeqCst);
    }
}

seedcore::process_task! {
    fn blob_len() -> usize { BLOB_LEN.load(Ordering::SeqCst) }
}

/// Shuts down within the test's patience, or fails it.
fn shutdown_in_time(sys: ConcurrentSystem) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        sys.shutdown(ShutdownMode::Immediate);
        let _ = tx.send(());
    });
    rx.recv_timeout(LONG)
        .expect("the system did not shut down: it hangs");
}

fn expect_broken<T: std::fmt::Debug + Send + 'static>(f: TaskFuture<T>, words: &str) {
    match wait(f) {
        Err(TaskError::PoolBroken(why)) => assert!(why.contains(words), "{why}"),
        other => panic!("expected PoolBroken naming {words:?}, got {other:?}"),
    }
}

#[test]
fn a_panicking_initializer_fails_queued_and_later_tasks_with_its_message() {
    let sys = builder("pf-init-panic")
        .core_processes(2)
        .max_processes(2)
        .process_initializer(exploding_init)
        .build()
        .unwrap();
    let futures: Vec<_> = (0..3)
        .map(|i| sys.submit_process(TaskOptions::new(), square, i).unwrap())
        .collect();
    for f in futures {
        expect_broken(f, "the initializer exploded: no licence file");
    }
    match sys.submit_process(TaskOptions::new(), square, 3) {
        Err(SubmitError::PoolBroken(why)) => assert!(why.contains("exploded"), "{why}"),
        other => panic!("expected PoolBroken at submit, got {:?}", other.map(|_| ())),
    }
    // The rest of the system still works, and it stops.
    let t = sys.submit_thread(TaskOptions::new(), |_| 5).unwrap();
    assert_eq!(wait(t).unwrap(), 5);
    let stats = sys.stats();
    assert_eq!(stats.submitted, stats.resolved());
    shutdown_in_time(sys);
}

#[test]
fn an_initializer_that_returns_an_error_breaks_the_pool_with_that_error() {
    let sys = builder("pf-init-err")
        .process_initializer(refusing_init)
        .build()
        .unwrap();
    let f = sys.submit_process(TaskOptions::new(), square, 2).unwrap();
    expect_broken(f, "cannot open the model: permission denied");
    shutdown_in_time(sys);
}

#[test]
fn initializer_arguments_a_worker_cannot_decode_break_the_pool_saying_so() {
    let sys = builder("pf-init-args-decode")
        .process_initializer_with(picky_init, RefusedInWorker)
        .build()
        .unwrap();
    let f = sys.submit_process(TaskOptions::new(), square, 2).unwrap();
    expect_broken(f, "could not take its arguments");
    match sys.submit_process(TaskOptions::new(), square, 3) {
        Err(SubmitError::PoolBroken(why)) => {
            assert!(why.contains("picky_init"), "{why}");
            assert!(why.contains("could not take its arguments"), "{why}");
        }
        other => panic!("expected PoolBroken at submit, got {:?}", other.map(|_| ())),
    }
    shutdown_in_time(sys);
}

#[test]
fn initializer_arguments_that_cannot_be_encoded_or_are_too_large_fail_build() {
    let err = builder("pf-init-args-enc")
        .process_initializer_with(unencodable_init, Unencodable)
        .build()
        .err()
        .unwrap_or_else(|| panic!("build must refuse arguments that do not encode"));
    assert_eq!(err.field, "processes.initializer");
    assert!(err.reason.contains("cannot be encoded"), "{}", err.reason);

    let too_big = vec![1u8; seedcore::MAX_INITIALIZER_ARGS_BYTES + 1];
    let err = builder("pf-init-args-big")
        .process_initializer_with(blob_init, too_big)
        .build()
        .err()
        .unwrap_or_else(|| panic!("build must refuse arguments over the limit"));
    assert_eq!(err.field, "processes.initializer");
    assert!(err.reason.contains("over the limit"), "{}", err.reason);

    // Just under the limit they reach the worker whole (the length
    // prefix takes a few bytes).
    let len = seedcore::MAX_INITIALIZER_ARGS_BYTES - 8;
    let sys = builder("pf-init-args-fit")
        .process_initializer_with(blob_init, vec![2u8; len])
        .build()
        .unwrap();
    let f = sys
        .submit_process(TaskOptions::new(), blob_len, ())
        .unwrap();
    assert_eq!(wait(f).unwrap(), len);
    // A later plain initializer replaces the arguments too.
    let sys2 = builder("pf-init-args-replaced")
        .process_initializer_with(unencodable_init, Unencodable)
        .process_initializer(refusing_init)
        .build()
        .unwrap();
    shutdown_in_time(sys2);
    shutdown_in_time(sys);
}

#[test]
fn workers_that_cannot_be_started_fail_tasks_with_the_os_error() {
    let sys = builder("pf-spawn")
        .core_processes(2)
        .max_processes(2)
        .process_program("/nonexistent/seedcore-worker-program")
        .build()
        .unwrap();
    let f = sys.submit_process(TaskOptions::new(), square, 2).unwrap();
    expect_broken(f, "No such file or directory");
    // Later tasks fail at once with the same reason.
    match sys.submit_process(TaskOptions::new(), square, 3) {
        Err(SubmitError::PoolBroken(why)) => {
            assert!(
                why.contains("/nonexistent/seedcore-worker-program"),
                "{why}"
            )
        }
        Ok(f) => expect_broken(f, "No such file or directory"),
        Err(e) => panic!("unexpected {e}"),
    }
    shutdown_in_time(sys);
}

/// A result type whose decoding panics in the parent.
#[derive(Debug)]
struct PanicsOnDecode;

impl Serialize for PanicsOnDecode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> Deserialize<'de> for PanicsOnDecode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let _ = u8::deserialize(d)?;
        if seedcore::is_worker() {
            return Ok(PanicsOnDecode);
        }
        panic!("decoding PanicsOnDecode in the parent");
    }
}

seedcore::process_task! {
    fn make_panicky() -> PanicsOnDecode { PanicsOnDecode }
}

seedcore::process_task! {
    fn take_panicky(x: PanicsOnDecodeInWorker) -> u32 { let _ = x; 1 }
}

seedcore::process_task! {
    fn my_pid() -> u32 { std::process::id() }
}

/// An argument whose decoding panics in the worker.
#[derive(Debug)]
struct PanicsOnDecodeInWorker;

impl Serialize for PanicsOnDecodeInWorker {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> Deserialize<'de> for PanicsOnDecodeInWorker {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("decoding the argument in the worker");
    }
}

#[test]
fn a_panicking_decode_fails_its_task_and_the_pool_carries_on() {
    let sys = builder("pf-decode").build().unwrap();
    let before = wait(sys.submit_process(TaskOptions::new(), my_pid, ()).unwrap()).unwrap();
    // In the parent, on the pool's reader thread.
    match wait(
        sys.submit_process(TaskOptions::new(), make_panicky, ())
            .unwrap(),
    ) {
        Err(TaskError::Failed(e)) => {
            let m = e.to_string();
            assert!(
                m.contains("Deserialize") && m.contains("decoding PanicsOnDecode"),
                "{m}"
            );
        }
        other => panic!("expected a decode failure, got {other:?}"),
    }
    // In the worker, before the task runs.
    match wait(
        sys.submit_process(TaskOptions::new(), take_panicky, PanicsOnDecodeInWorker)
            .unwrap(),
    ) {
        Err(TaskError::Failed(e)) => {
            let m = e.to_string();
            assert!(m.contains("decoding the argument in the worker"), "{m}");
        }
        other => panic!("expected a decode failure, got {other:?}"),
    }
    // The same worker serves on: neither panic cost a process.
    let after = wait(sys.submit_process(TaskOptions::new(), my_pid, ()).unwrap()).unwrap();
    assert_eq!(before, after);
    assert_eq!(
        wait(sys.submit_process(TaskOptions::new(), square, 9).unwrap()).unwrap(),
        81
    );
    shutdown_in_time(sys);
}

/// A result whose `Serialize` refuses with its own words.
#[derive(Debug, Deserialize)]
struct Refuses;

impl Serialize for Refuses {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("a Refuses value holds a socket"))
    }
}

seedcore::process_task! {
    fn make_refuses() -> Refuses { Refuses }
}

#[test]
fn serialize_errors_keep_the_type_s_own_message() {
    let sys = builder("pf-ser").build().unwrap();
    match wait(
        sys.submit_process(TaskOptions::new(), make_refuses, ())
            .unwrap(),
    ) {
        Err(TaskError::Failed(e)) => {
            assert!(
                e.to_string().contains("a Refuses value holds a socket"),
                "{e}"
            )
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    shutdown_in_time(sys);
}

seedcore::process_task! {
    fn panics_here(x: u32) -> u32 {
        if x > 0 {
            panic!("bad input {x}");
        }
        x
    }
}

seedcore::process_task! {
    fn segfaults() -> u32 {
        // SAFETY: a test of a crashing worker: the signal ends the process.
        unsafe { libc::raise(libc::SIGSEGV) };
        0
    }
}

#[test]
fn a_panic_keeps_its_location_and_a_crash_names_its_signal_pid_and_task() {
    let sys = builder("pf-panic").build().unwrap();
    let err = wait(
        sys.submit_process(TaskOptions::new(), panics_here, 3)
            .unwrap(),
    )
    .unwrap_err();
    assert_eq!(err.panic_message(), Some("bad input 3"));
    let at = err.panic_location().expect("a location");
    assert!(at.contains("process_failures.rs"), "{at}");
    assert!(err.to_string().contains("process_failures.rs"), "{err}");
    let backtrace_asked = std::env::var("RUST_BACKTRACE").is_ok_and(|v| v != "0");
    match &err {
        TaskError::Panicked(p) => assert_eq!(p.backtrace().is_some(), backtrace_asked),
        other => panic!("{other:?}"),
    }

    let f = sys
        .submit_process(TaskOptions::new(), segfaults, ())
        .unwrap();
    let id = f.id();
    match wait(f) {
        Err(e @ TaskError::WorkerDied { .. }) => {
            let text = e.to_string();
            assert!(text.contains("SIGSEGV"), "{text}");
            let TaskError::WorkerDied {
                signal, pid, task, ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(signal, Some(libc::SIGSEGV));
            assert!(pid.is_some_and(|p| p > 0));
            assert_eq!(task, Some(id));
            assert!(text.contains(&pid.unwrap().to_string()), "{text}");
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    shutdown_in_time(sys);
}

seedcore::process_task! {
    fn byte_len(v: Vec<u8>) -> u64 { v.len() as u64 }
}

seedcore::process_task! {
    fn big_vec(n: u64) -> Vec<u8> { vec![3u8; n as usize] }
}

#[test]
fn arguments_and_results_larger_than_a_frame_simply_work() {
    // The default frame limit is 64 MiB; 80 MB goes through shared memory.
    let sys = builder("pf-large").build().unwrap();
    let n = 80_000_000usize;
    let f = sys
        .submit_process(TaskOptions::new(), byte_len, vec![1u8; n])
        .unwrap();
    assert_eq!(wait(f).unwrap(), n as u64);
    let v = wait(
        sys.submit_process(TaskOptions::new(), big_vec, n as u64)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v.len(), n);
    assert!(v.iter().all(|&b| b == 3));
    shutdown_in_time(sys);
}

#[test]
fn callbacks_attached_after_shutdown_still_run() {
    let sys = builder("pf-late-cb").build().unwrap();
    let f = sys.submit_thread(TaskOptions::new(), |_| 7).unwrap();
    while !f.is_done() {
        std::thread::sleep(Duration::from_millis(1));
    }
    sys.shutdown(ShutdownMode::Graceful);
    let (tx, rx) = std::sync::mpsc::channel();
    f.on_complete(move |r| tx.send(r.unwrap()).unwrap());
    assert_eq!(rx.recv_timeout(LONG).expect("the callback never ran"), 7);
}

seedcore::process_task! {
    /// Writes this worker's pid to `dir/<n>`, then holds its worker until
    /// `dir/go` exists.
    fn hold(dir: String, n: u32) -> u32 {
        let dir = std::path::Path::new(&dir);
        std::fs::write(dir.join(n.to_string()), std::process::id().to_string()).unwrap();
        while !dir.join("go").exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        n
    }
}

#[test]
fn the_first_tasks_spread_over_the_workers_before_any_is_measured() {
    let dir = temp_dir("spread");
    let sys = builder("pf-spread")
        .core_processes(2)
        .max_processes(2)
        .process_prefetch(16)
        .build()
        .unwrap();
    let futures: Vec<_> = (0..4)
        .map(|n| {
            sys.submit_process(TaskOptions::new(), hold, (s(&dir), n))
                .unwrap()
        })
        .collect();
    // Two blocking tasks run at once, one on each worker: neither worker
    // took every task while the other was still starting.
    let pids = || -> HashSet<String> {
        (0..4)
            .filter_map(|n| std::fs::read_to_string(dir.join(n.to_string())).ok())
            .collect()
    };
    let spread = eventually(LONG, || pids().len() == 2);
    std::fs::write(dir.join("go"), "").unwrap();
    assert!(spread, "the blocking tasks ran on {:?} only", pids());
    for (n, f) in futures.into_iter().enumerate() {
        assert_eq!(wait(f).unwrap(), n as u32);
    }
    let _ = std::fs::remove_dir_all(&dir);
    shutdown_in_time(sys);
}

#[test]
fn a_hook_that_names_no_registered_task_is_refused_at_build() {
    for key in ["initializer", "finalizer"] {
        let text = format!("[processes]\n{key} = \"no_such_task\"");
        let config = seedcore::Config::from_toml_str(&text).unwrap();
        let err = ConcurrentSystem::builder()
            .config(config)
            .build()
            .expect_err(&text);
        assert_eq!(err.field, format!("processes.{key}"), "{err}");
        assert!(err.to_string().contains("no_such_task"), "{err}");
    }
    // Workers that run another program register their own tasks.
    let text = "[processes]\nprogram = \"/bin/true\"\ninitializer = \"elsewhere\"";
    let config = seedcore::Config::from_toml_str(text).unwrap();
    let system = ConcurrentSystem::builder().config(config).build().unwrap();
    system.shutdown(seedcore::ShutdownMode::Immediate);
}
