//! Behaviour of process tasks in real worker processes: values, errors,
//! crashes, timeouts, cancellation, recycling, memory limits, priorities,
//! shared memory, async tasks, hooks and shutdown.

use crate::common;

use common::eventually;
use seedcore::{
    ConcurrentSystem, Priority, ProcessTask, RetryOn, RetryPolicy, SharedBytes, ShutdownMode,
    SubmitError, TaskError, TaskFuture, TaskOptions, WorkerOutput,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

seedcore::enable_test_workers!();

/// How long a test waits for something that should happen soon. Far above
/// what a healthy run needs on a loaded 2-core machine; a hang still ends
/// in a clear failure.
const LONG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Helpers (parent side)
// ---------------------------------------------------------------------------

use common::{process_builder as builder, wait_process as wait};

/// Whether a process with this pid exists (a zombie counts: it has not been
/// reaped).
fn pid_exists(pid: u32) -> bool {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a worker pid is positive");
    rustix::process::test_kill_process(pid).is_ok()
}

fn sigkill(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a worker pid is positive");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill the worker");
}

/// A fresh, empty directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "seedcore-pt-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    TempDir(dir)
}

fn path_string(p: &Path) -> String {
    p.to_str().expect("temp paths are UTF-8").to_owned()
}

/// Waits until `path` holds a pid written by a task; returns it.
fn read_pid_file(path: &Path) -> u32 {
    let mut pid = None;
    assert!(
        eventually(LONG, || {
            pid = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            pid.is_some()
        }),
        "the task never wrote {}",
        path.display()
    );
    pid.expect("checked")
}

/// Submits `sleep_then` for `ms` milliseconds with `opts`, its pid file
/// `dir/name`; returns its future and, once it runs, its worker's pid.
fn start_sleeper(
    sys: &ConcurrentSystem,
    dir: &Path,
    name: &str,
    opts: TaskOptions,
    ms: u64,
) -> (TaskFuture<u32>, u32) {
    let pid_file = dir.join(name);
    let f = sys
        .submit_process(opts, sleep_then, (path_string(&pid_file), ms))
        .unwrap();
    (f, read_pid_file(&pid_file))
}

/// A `wait_flag` task holding a worker until it is released.
struct Blocker {
    future: TaskFuture<u32>,
    /// The worker it holds.
    pid: u32,
    flag: PathBuf,
}

impl Blocker {
    /// Submits it and waits until it runs.
    fn start(sys: &ConcurrentSystem, dir: &Path) -> Blocker {
        let (started, flag) = (dir.join("started"), dir.join("flag"));
        let future = sys
            .submit_process(
                TaskOptions::new(),
                wait_flag,
                (path_string(&started), path_string(&flag)),
            )
            .unwrap();
        let pid = read_pid_file(&started);
        Blocker { future, pid, flag }
    }

    /// Lets it finish.
    fn release(&self) {
        std::fs::write(&self.flag, "go").unwrap();
    }
}

/// Runs `whoami` until the pool answers: the worker(s) are up.
fn warm_up(sys: &ConcurrentSystem) -> u32 {
    wait(sys.submit_process(TaskOptions::new(), whoami, ()).unwrap()).expect("warm-up task")
}

// ---------------------------------------------------------------------------
// Helpers (worker side)
// ---------------------------------------------------------------------------

/// Keeps a deliberately crashing worker from writing a core file.
fn no_core_dumps() {
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: rustix::process::getrlimit(rustix::process::Resource::Core).maximum,
        },
    );
}

/// Waits (in a worker) for `path` to exist, up to a safety bound.
fn wait_for_file(path: &str) -> bool {
    let deadline = Instant::now() + LONG;
    while Instant::now() < deadline {
        if Path::new(path).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

fn append_line(path: &str, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the log");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("write the log");
}

// ---------------------------------------------------------------------------
// Process tasks
// ---------------------------------------------------------------------------

seedcore::process_task! {
    /// Squares.
    fn square(x: u64) -> u64 { x * x }
}

seedcore::process_task! {
    /// The worker's pid.
    fn whoami() -> u32 { std::process::id() }
}

seedcore::process_task! {
    /// Several arguments of several types.
    fn describe(a: u64, b: String, c: Vec<u32>, d: Option<bool>) -> String {
        format!("{a}/{b}/{}/{d:?}", c.iter().sum::<u32>())
    }
}

seedcore::process_task! {
    /// A fallible task.
    fn checked_div(a: u64, b: u64) -> Result<u64, String> {
        a.checked_div(b).ok_or_else(|| format!("cannot divide {a} by zero"))
    }
}

seedcore::process_task! {
    /// Panics for any realistic input.
    fn boom(x: u32) -> u32 {
        if x < u32::MAX {
            panic!("boom number {x}");
        }
        x
    }
}

seedcore::process_task! {
    /// Aborts the worker (SIGABRT).
    fn do_abort(x: u32) -> u32 {
        no_core_dumps();
        if x < u32::MAX {
            std::process::abort();
        }
        x
    }
}

seedcore::process_task! {
    /// Dereferences an invalid pointer: a real segmentation fault.
    fn do_segfault(x: u32) -> u32 {
        no_core_dumps();
        if x < u32::MAX {
            // SAFETY: not safe at all, on purpose: the write faults and the
            // kernel kills the worker with SIGSEGV before it returns.
            unsafe { std::ptr::null_mut::<u8>().add(x as usize).write_volatile(1) };
        }
        x
    }
}

seedcore::process_task! {
    /// Raises SIGSEGV with the default action (Rust's own SIGSEGV handler,
    /// which is there for stack overflows, is put aside first).
    fn raise_sigsegv(x: u32) -> u32 {
        no_core_dumps();
        if x < u32::MAX {
            // SAFETY: resets one signal's disposition and raises it; the
            // process ends there.
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
        }
        x
    }
}

seedcore::process_task! {
    /// Exits the worker with `code`.
    fn do_exit(code: i32) -> u32 {
        if code >= 0 {
            std::process::exit(code);
        }
        0
    }
}

seedcore::process_task! {
    /// Crashes the first time (no marker yet), succeeds the second.
    fn crash_once(marker: String) -> String {
        if Path::new(&marker).exists() {
            format!("recovered in {}", std::process::id())
        } else {
            std::fs::write(&marker, std::process::id().to_string()).expect("write the marker");
            no_core_dumps();
            std::process::abort();
        }
    }
}

seedcore::process_task! {
    /// Writes its pid to `pid_file`, then sleeps `ms` and returns the pid.
    fn sleep_then(pid_file: String, ms: u64) -> u32 {
        if !pid_file.is_empty() {
            std::fs::write(&pid_file, std::process::id().to_string()).expect("write the pid");
        }
        std::thread::sleep(Duration::from_millis(ms));
        std::process::id()
    }
}

seedcore::process_task! {
    /// Writes its pid to `started`, then waits until `flag` exists.
    fn wait_flag(started: String, flag: String) -> u32 {
        std::fs::write(&started, std::process::id().to_string()).expect("write the pid");
        assert!(wait_for_file(&flag), "the flag never appeared");
        std::process::id()
    }
}

seedcore::process_task! {
    /// Leaves a side effect: creates `path`.
    fn touch(path: String) -> u32 {
        std::fs::write(&path, "ran").expect("touch");
        std::process::id()
    }
}

seedcore::process_task! {
    /// Appends `tag` to the log at `path` when it starts.
    fn log_start(path: String, tag: u32) -> u32 {
        append_line(&path, &tag.to_string());
        tag
    }
}

seedcore::process_task! {
    /// Grows by `step_mib` MiB (touching every page) every `pause_ms`, up
    /// to `max_mib`; returns the MiB it held at the end.
    fn hog(step_mib: u64, pause_ms: u64, max_mib: u64) -> u64 {
        let mut held: Vec<Vec<u8>> = Vec::new();
        let mut total = 0;
        while total < max_mib {
            let mut chunk = vec![0u8; (step_mib << 20) as usize];
            for i in (0..chunk.len()).step_by(4096) {
                chunk[i] = 1;
            }
            held.push(std::hint::black_box(chunk));
            total += step_mib;
            std::thread::sleep(Duration::from_millis(pause_ms));
        }
        std::hint::black_box(&held);
        total
    }
}

seedcore::process_task! {
    /// Writes `bytes` bytes to stdout (and some to stderr), including
    /// bytes that look like frame headers.
    fn chatter(bytes: u64) -> u64 {
        let mut out = std::io::stdout().lock();
        let mut line = vec![b'x'; 1023];
        line[..8].copy_from_slice(&[0xff, 0xff, 0, 0, 3, 0, 0, 0]);
        line.push(b'\n');
        let mut written = 0u64;
        while written < bytes {
            out.write_all(&line).expect("stdout");
            written += line.len() as u64;
        }
        out.flush().expect("flush stdout");
        eprintln!("chatter wrote {written} bytes");
        written
    }
}

seedcore::process_task! {
    /// The length of a byte vector.
    fn byte_len(v: Vec<u8>) -> u64 { v.len() as u64 }
}

seedcore::process_task! {
    /// A byte vector of `n` bytes.
    fn big_result(log: String, n: u64) -> Vec<u8> {
        append_line(&log, "ran");
        vec![7u8; n as usize]
    }
}

seedcore::process_task! {
    /// Returns whether the buffer arrived in shared memory, its checksum
    /// and the buffer with every byte inverted.
    fn shm_invert(b: SharedBytes) -> (bool, u64, SharedBytes) {
        let arrived_shared = b.is_shared_memory();
        let sum = b.iter().map(|&x| x as u64).sum::<u64>();
        let mut out = b.clone();
        for x in out.make_mut() {
            *x = !*x;
        }
        (arrived_shared, sum, out)
    }
}

seedcore::process_task! {
    /// Sleeps asynchronously, then returns the worker's pid.
    async fn nap(ms: u64) -> u32 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        std::process::id()
    }
}

seedcore::process_task! {
    /// An async task that fails.
    async fn async_fail(msg: String) -> Result<u32, String> {
        tokio::task::yield_now().await;
        Err(msg)
    }
}

static INIT_VALUE: AtomicU64 = AtomicU64::new(0);

seedcore::process_task! {
    /// The worker initializer: sets a static.
    fn init_hook() {
        INIT_VALUE.store(4242, Ordering::SeqCst);
    }
}

seedcore::process_task! {
    /// Reads what the initializer set.
    fn read_init() -> u64 { INIT_VALUE.load(Ordering::SeqCst) }
}

/// What `init_with_args` was given, in this worker.
static INIT_ARGS: std::sync::Mutex<Option<(String, u64)>> = std::sync::Mutex::new(None);

seedcore::process_task! {
    /// A worker initializer that takes arguments: keeps them in a static.
    fn init_with_args(args: (String, u64)) {
        *INIT_ARGS.lock().unwrap() = Some(args);
    }
}

seedcore::process_task! {
    /// This worker's pid and what its initializer was given.
    fn read_init_args() -> (u32, Option<(String, u64)>) {
        (std::process::id(), INIT_ARGS.lock().unwrap().clone())
    }
}

seedcore::process_task! {
    /// The worker finalizer: leaves a file named after the parent and
    /// this worker.
    fn fini_hook() {
        let path = std::env::temp_dir().join(format!(
            "seedcore-pt-fini-{}-{}",
            std::os::unix::process::parent_id(),
            std::process::id()
        ));
        std::fs::write(path, "fini").expect("write the finalizer mark");
    }
}

seedcore::process_task! {
    /// Tries to submit a process task from inside a worker.
    fn nested_submit() -> (bool, String) {
        let inside = seedcore::is_worker();
        let outcome = match ConcurrentSystem::builder()
            .name("pt-nested")
            .core_threads(1)
            .max_threads(1)
            .async_threads(1)
            .core_processes(1)
            .max_processes(1)
            .build()
        {
            Ok(sys) => match sys.submit_process(TaskOptions::new(), square, 3) {
                Err(e) => format!("{e:?}"),
                Ok(_) => "accepted".to_owned(),
            },
            Err(e) => format!("build failed: {e}"),
        };
        (inside, outcome)
    }
}

/// Arguments whose `Serialize` always fails.
#[derive(Debug, serde::Deserialize)]
struct Unserializable;

impl serde::Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("Unserializable refuses"))
    }
}

seedcore::process_task! {
    /// Never runs: its arguments cannot be sent.
    fn take_unserializable(u: Unserializable) -> u32 {
        let _ = u;
        1
    }
}

// ---------------------------------------------------------------------------
// Values and errors
// ---------------------------------------------------------------------------

#[test]
fn a_task_returns_its_value() {
    let sys = builder("pt-value").build().unwrap();
    let futs: Vec<_> = (0..50u64)
        .map(|i| sys.submit_process(TaskOptions::new(), square, i).unwrap())
        .collect();
    let got: Vec<u64> = futs.into_iter().map(|f| wait(f).unwrap()).collect();
    assert_eq!(got, (0..50u64).map(|i| i * i).collect::<Vec<_>>());
    let pid = warm_up(&sys);
    assert_ne!(pid, std::process::id(), "the task ran in another process");
    assert!(!seedcore::is_worker(), "the test process is not a worker");
    let st = sys.stats();
    assert_eq!(st.completed, 51);
    assert_eq!(common::processes(&st).pids, vec![pid]);
}

#[test]
fn several_arguments_arrive_as_a_tuple() {
    let sys = builder("pt-args").build().unwrap();
    let f = sys
        .submit_process(
            TaskOptions::new(),
            describe,
            (7, "seven".to_owned(), vec![1, 2, 3], Some(true)),
        )
        .unwrap();
    assert_eq!(wait(f).unwrap(), "7/seven/6/Some(true)");
}

#[test]
fn a_fallible_task_error_resolves_failed_with_its_message() {
    let sys = builder("pt-fail").build().unwrap();
    let ok = sys
        .submit_process(TaskOptions::new(), checked_div, (9, 3))
        .unwrap();
    let err = sys
        .submit_process(TaskOptions::new(), checked_div, (9, 0))
        .unwrap();
    assert_eq!(wait(ok).unwrap(), 3);
    match wait(err) {
        Err(TaskError::Failed(e)) => assert_eq!(e.to_string(), "cannot divide 9 by zero"),
        other => panic!("expected Failed, got {other:?}"),
    }
    let async_err = sys
        .submit_process(TaskOptions::new(), async_fail, "async says no".to_owned())
        .unwrap();
    match wait(async_err) {
        Err(TaskError::Failed(e)) => assert_eq!(e.to_string(), "async says no"),
        other => panic!("expected Failed, got {other:?}"),
    }
    let st = sys.stats();
    assert_eq!((st.completed, st.failed), (1, 2));
}

#[test]
fn a_panic_resolves_panicked_and_the_worker_keeps_serving() {
    let sys = builder("pt-panic").build().unwrap();
    let pid = warm_up(&sys);
    let f = sys.submit_process(TaskOptions::new(), boom, 3).unwrap();
    match wait(f) {
        Err(TaskError::Panicked(m)) => assert!(m.contains("boom number 3"), "message: {m}"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    // The same process serves the next task: a panic costs no worker.
    assert_eq!(warm_up(&sys), pid);
    assert!(common::processes(&sys.stats()).pids.contains(&pid));
    assert!(pid_exists(pid));
    let st = sys.stats();
    assert_eq!((st.panicked, st.worker_died), (1, 0));
}

#[test]
fn an_unknown_task_is_refused_at_submit() {
    let sys = builder("pt-unknown").build().unwrap();
    let nope = ProcessTask::<u64, u64>::external("nope");
    match sys.submit_process(TaskOptions::new(), nope, 1) {
        Err(SubmitError::UnknownTask(name)) => assert_eq!(name, "nope"),
        other => panic!("expected UnknownTask, got {other:?}"),
    }
    // Also once the workers have said hello.
    warm_up(&sys);
    assert!(matches!(
        sys.submit_process(TaskOptions::new(), nope, 1),
        Err(SubmitError::UnknownTask(_))
    ));
    assert_eq!(sys.stats().submitted, 1, "refused tasks are not counted");
}

#[test]
fn arguments_that_do_not_serialize_are_refused_at_submit() {
    let sys = builder("pt-ser").build().unwrap();
    match sys.submit_process(TaskOptions::new(), take_unserializable, Unserializable) {
        // The type's own message, not the codec's "custom error".
        Err(SubmitError::Serialize(m)) => assert_eq!(m, "Unserializable refuses"),
        other => panic!("expected Serialize, got {:?}", other.map(|_| ())),
    }
    assert_eq!(sys.stats().submitted, 0);
}

#[test]
fn arguments_over_the_frame_limit_travel_through_shared_memory() {
    let limit = 64 * 1024;
    let sys = builder("pt-big").max_frame_bytes(limit).build().unwrap();
    // 1 MiB in a plain Vec: over the frame limit, so it crosses in a memfd.
    let f = sys
        .submit_process(TaskOptions::new(), byte_len, vec![1u8; 1 << 20])
        .unwrap();
    assert_eq!(wait(f).unwrap(), 1 << 20);
    // A small one travels in the frame.
    let f = sys
        .submit_process(TaskOptions::new(), byte_len, vec![1u8; 1000])
        .unwrap();
    assert_eq!(wait(f).unwrap(), 1000);
    // 1 MiB of shared memory crosses as a descriptor, not through the frame.
    let buf = SharedBytes::from_slice(&vec![5u8; 1 << 20]).unwrap();
    let f = sys
        .submit_process(TaskOptions::new(), shm_invert, buf)
        .unwrap();
    let (shared, sum, out) = wait(f).unwrap();
    assert!(shared);
    assert_eq!(sum, 5 << 20);
    assert!(out.iter().all(|&b| b == !5u8));
}

#[test]
fn a_result_larger_than_the_frame_limit_comes_back_through_shared_memory() {
    let dir = temp_dir("bigres");
    let log = dir.join("runs");
    let sys = builder("pt-bigres")
        .max_frame_bytes(64 * 1024)
        .build()
        .unwrap();
    let f = sys
        .submit_process(TaskOptions::new(), big_result, (path_string(&log), 1 << 20))
        .unwrap();
    let v = wait(f).unwrap();
    assert_eq!(v.len(), 1 << 20);
    assert!(v.iter().all(|&b| b == 7));
    let runs = std::fs::read_to_string(&log).unwrap().lines().count();
    assert_eq!(runs, 1, "the task ran {runs} times");
    // And the pool still serves.
    let f = sys.submit_process(TaskOptions::new(), square, 5).unwrap();
    assert_eq!(wait(f).unwrap(), 25);
}

// ---------------------------------------------------------------------------
// Timeouts, crashes and retries
// ---------------------------------------------------------------------------

#[test]
fn a_timeout_kills_the_worker_and_spares_the_other_one() {
    let dir = temp_dir("timeout");
    let sys = builder("pt-timeout")
        .core_processes(2)
        .max_processes(2)
        .process_prefetch(1)
        .build()
        .unwrap();
    let t = Instant::now();
    let (hang, hang_pid) = start_sleeper(
        &sys,
        &dir,
        "hang.pid",
        TaskOptions::new().timeout(Duration::from_millis(800)),
        30_000,
    );
    // With prefetch 1 the busy worker takes nothing more: this one runs on
    // the other worker, concurrently, and must be untouched by the kill.
    let (slow, slow_pid) = start_sleeper(&sys, &dir, "slow.pid", TaskOptions::new(), 2_500);
    assert_ne!(slow_pid, hang_pid);
    match wait(hang) {
        Err(TaskError::TimedOut(d)) => assert_eq!(d, Duration::from_millis(800)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(790),
        "timed out early: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "timed out late: {took:?}");
    assert!(
        eventually(LONG, || !pid_exists(hang_pid)),
        "the timed-out worker {hang_pid} is still there"
    );
    assert!(!common::processes(&sys.stats()).pids.contains(&hang_pid));
    assert_eq!(wait(slow).unwrap(), slow_pid, "the other worker's task");
    assert!(pid_exists(slow_pid));
    // A replacement serves the next tasks.
    for _ in 0..4 {
        assert_ne!(warm_up(&sys), hang_pid);
    }
    assert!(eventually(LONG, || common::processes(&sys.stats())
        .pids
        .len()
        == 2));
    let st = sys.stats();
    assert_eq!((st.timed_out, st.worker_died), (1, 0));
}

#[test]
fn a_task_queued_behind_a_slow_one_in_the_same_worker_is_timed_from_its_own_start() {
    let sys = builder("pt-tqueue").process_prefetch(4).build().unwrap();
    warm_up(&sys);
    let slow = sys
        .submit_process(TaskOptions::new(), sleep_then, (String::new(), 2_000))
        .unwrap();
    let quick = sys
        .submit_process(
            TaskOptions::new().timeout(Duration::from_millis(1_000)),
            square,
            6,
        )
        .unwrap();
    assert!(wait(slow).is_ok());
    assert_eq!(
        wait(quick).unwrap(),
        36,
        "the wait in the queue is not run time"
    );
}

#[test]
fn abort_resolves_worker_died_with_sigabrt() {
    let sys = builder("pt-abort").build().unwrap();
    let pid = warm_up(&sys);
    let f = sys.submit_process(TaskOptions::new(), do_abort, 1).unwrap();
    match wait(f) {
        Err(TaskError::WorkerDied {
            exit_code, signal, ..
        }) => assert_eq!((exit_code, signal), (None, Some(6))),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    assert!(eventually(LONG, || !pid_exists(pid)));
    assert_ne!(warm_up(&sys), pid, "a new worker serves");
    assert_eq!(sys.stats().worker_died, 1);
}

#[test]
fn a_segfault_resolves_worker_died_with_sigsegv() {
    let sys = builder("pt-segv").build().unwrap();
    for task in [do_segfault, raise_sigsegv] {
        let f = sys.submit_process(TaskOptions::new(), task, 1).unwrap();
        match wait(f) {
            Err(TaskError::WorkerDied {
                exit_code, signal, ..
            }) => assert_eq!((exit_code, signal), (None, Some(11)), "{}", task.name()),
            other => panic!("{}: expected WorkerDied, got {other:?}", task.name()),
        }
    }
    assert_eq!(
        wait(sys.submit_process(TaskOptions::new(), square, 4).unwrap()).unwrap(),
        16
    );
}

#[test]
fn exit_resolves_worker_died_with_the_exit_code() {
    let sys = builder("pt-exit").build().unwrap();
    let f = sys.submit_process(TaskOptions::new(), do_exit, 7).unwrap();
    match wait(f) {
        Err(e @ TaskError::WorkerDied { .. }) => {
            let TaskError::WorkerDied {
                exit_code, signal, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((*exit_code, *signal), (Some(7), None));
            assert!(e.to_string().contains("exit code 7"), "{e}");
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    // Exit code 0 in the middle of a task is a death too, not a success.
    let f = sys.submit_process(TaskOptions::new(), do_exit, 0).unwrap();
    match wait(f) {
        Err(TaskError::WorkerDied {
            exit_code, signal, ..
        }) => assert_eq!((exit_code, signal), (Some(0), None)),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
}

#[test]
fn an_externally_killed_worker_fails_its_task_and_is_replaced() {
    let dir = temp_dir("sigkill");
    let sys = builder("pt-sigkill").build().unwrap();
    let idle_pid = warm_up(&sys);
    // Killed while idle: nothing to fail, a replacement starts.
    sigkill(idle_pid);
    assert!(eventually(LONG, || {
        let pids = common::processes(&sys.stats()).pids;
        pids.len() == 1 && pids[0] != idle_pid
    }));
    assert_ne!(warm_up(&sys), idle_pid);
    // Killed while busy: its task resolves WorkerDied with SIGKILL.
    let (f, busy_pid) = start_sleeper(&sys, &dir, "busy.pid", TaskOptions::new(), 30_000);
    sigkill(busy_pid);
    match wait(f) {
        Err(TaskError::WorkerDied { signal, .. }) => assert_eq!(signal, Some(9)),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    assert_ne!(warm_up(&sys), busy_pid);
    assert_eq!(sys.stats().worker_died, 1);
}

#[test]
fn workers_outlive_the_thread_that_started_them() {
    let sys = builder("pt-pdeath").build().unwrap();
    // The first submission starts the worker, from this helper thread.
    let pid = std::thread::scope(|s| s.spawn(|| warm_up(&sys)).join().unwrap());
    // The helper has exited; the worker must not have followed it.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        pid_exists(pid),
        "worker {pid} died when the thread that started it exited"
    );
    let f = sys
        .submit_process(TaskOptions::new(), sleep_then, (String::new(), 300))
        .unwrap();
    assert_eq!(wait(f).unwrap(), pid);
    // Replacements are started by the pool's own threads: they must not
    // die when such a thread ends either.
    sigkill(pid);
    let mut next = 0;
    assert!(eventually(LONG, || {
        next = common::processes(&sys.stats())
            .pids
            .first()
            .copied()
            .unwrap_or(0);
        next != 0 && next != pid
    }));
    assert_eq!(warm_up(&sys), next);
    std::thread::sleep(Duration::from_millis(300));
    let f = sys
        .submit_process(TaskOptions::new(), sleep_then, (String::new(), 300))
        .unwrap();
    assert_eq!(wait(f).unwrap(), next, "the replacement was killed");
    assert_eq!(sys.stats().worker_died, 0);
}

#[test]
fn tasks_sent_ahead_to_a_worker_that_crashes_run_elsewhere() {
    let sys = builder("pt-requeue").process_prefetch(8).build().unwrap();
    let pid = warm_up(&sys);
    let crash = sys.submit_process(TaskOptions::new(), do_abort, 1).unwrap();
    let rest: Vec<_> = (0..6u64)
        .map(|i| sys.submit_process(TaskOptions::new(), square, i).unwrap())
        .collect();
    assert!(matches!(wait(crash), Err(TaskError::WorkerDied { .. })));
    for (i, f) in rest.into_iter().enumerate() {
        assert_eq!(wait(f).unwrap(), (i * i) as u64);
    }
    assert_ne!(warm_up(&sys), pid);
    let st = sys.stats();
    assert_eq!((st.completed, st.worker_died), (8, 1));
}

#[test]
fn retry_on_crash_runs_the_task_again_in_a_new_worker() {
    let dir = temp_dir("retry");
    let sys = builder("pt-retry").build().unwrap();
    let marker = path_string(&dir.join("crashed-once"));
    let f = sys
        .submit_process(
            TaskOptions::new().retry(RetryPolicy::retries(1).on(RetryOn::CRASH)),
            crash_once,
            marker.clone(),
        )
        .unwrap();
    let out = wait(f).expect("the retry succeeds");
    let first: u32 = std::fs::read_to_string(&marker).unwrap().parse().unwrap();
    assert!(out.starts_with("recovered in "), "{out}");
    assert_ne!(out, format!("recovered in {first}"), "a new worker ran it");
    let st = sys.stats();
    assert_eq!((st.completed, st.retried, st.worker_died), (1, 1, 0));

    // Without CRASH in the policy a crash is final.
    let marker2 = path_string(&dir.join("crashed-twice"));
    let f = sys
        .submit_process(
            TaskOptions::new().retry(RetryPolicy::retries(3)),
            crash_once,
            marker2,
        )
        .unwrap();
    assert!(matches!(wait(f), Err(TaskError::WorkerDied { .. })));
}

// ---------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------

#[test]
fn cancelling_a_running_task_kills_its_worker() {
    let dir = temp_dir("cancel-run");
    let sys = builder("pt-cancel-run").build().unwrap();
    let (f, pid) = start_sleeper(&sys, &dir, "run.pid", TaskOptions::new(), 30_000);
    let t = Instant::now();
    assert!(f.cancel(), "cancel wins against a running task");
    assert!(matches!(wait(f), Err(TaskError::Cancelled)));
    assert!(
        eventually(LONG, || !pid_exists(pid)),
        "the cancelled task's worker {pid} still runs"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_ne!(warm_up(&sys), pid);
    let st = sys.stats();
    assert_eq!((st.cancelled, st.worker_died), (1, 0));
}

/// Cancels a task that waits behind a blocked worker: in the pool's queue
/// (`prefetch` 1) or already sent to the worker (`prefetch` 4).
fn cancel_queued(prefetch: usize) {
    let dir = temp_dir("cancel-queued");
    let sys = builder(&format!("pt-cancelq{prefetch}"))
        .process_prefetch(prefetch)
        .build()
        .unwrap();
    let blocker = Blocker::start(&sys, &dir);
    let pid = blocker.pid;
    let side_effect = dir.join("side-effect");
    let victim = sys
        .submit_process(TaskOptions::new(), touch, path_string(&side_effect))
        .unwrap();
    let after = dir.join("after");
    let next = sys
        .submit_process(TaskOptions::new(), touch, path_string(&after))
        .unwrap();
    assert!(victim.cancel());
    assert!(matches!(wait(victim), Err(TaskError::Cancelled)));
    blocker.release();
    assert_eq!(wait(blocker.future).unwrap(), pid);
    assert_eq!(wait(next).unwrap(), pid, "the worker survived the cancel");
    assert!(after.exists());
    assert!(
        !side_effect.exists(),
        "the cancelled task ran (prefetch {prefetch})"
    );
    let st = sys.stats();
    assert_eq!((st.cancelled, st.completed, st.worker_died), (1, 2, 0));
}

#[test]
fn cancelling_a_task_queued_in_the_pool_means_it_never_runs() {
    cancel_queued(1);
}

#[test]
fn cancelling_a_task_sent_ahead_to_a_worker_means_it_never_runs() {
    cancel_queued(4);
}

// ---------------------------------------------------------------------------
// Recycling and memory
// ---------------------------------------------------------------------------

#[test]
fn workers_are_recycled_after_max_tasks() {
    let sys = builder("pt-recycle")
        .process_prefetch(1)
        .max_tasks_per_process(3)
        .build()
        .unwrap();
    // All at once: the pool hands them out as the worker frees up.
    let futs: Vec<_> = (0..6)
        .map(|_| sys.submit_process(TaskOptions::new(), whoami, ()).unwrap())
        .collect();
    let pids: Vec<u32> = futs.into_iter().map(|f| wait(f).unwrap()).collect();
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[1], pids[2]);
    assert_eq!(pids[3], pids[4]);
    assert_eq!(pids[4], pids[5]);
    assert_ne!(
        pids[2], pids[3],
        "the first worker served more than 3: {pids:?}"
    );
    assert!(eventually(LONG, || !pid_exists(pids[0])));
}

#[test]
fn workers_are_recycled_after_max_tasks_one_at_a_time() {
    let sys = builder("pt-recycle-seq")
        .max_tasks_per_process(3)
        .build()
        .unwrap();
    let mut pids = Vec::new();
    for _ in 0..9 {
        pids.push(warm_up(&sys));
    }
    let mut distinct = pids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 3, "pids: {pids:?}");
    for p in &distinct {
        let n = pids.iter().filter(|x| *x == p).count();
        assert!(n <= 3, "worker {p} ran {n} tasks (limit 3): {pids:?}");
    }
}

#[test]
fn a_worker_over_its_memory_limit_is_killed() {
    let limit = 200 << 20;
    let sys = builder("pt-memory")
        .max_memory_per_process(limit)
        .build()
        .unwrap();
    let pid = warm_up(&sys);
    let f = sys
        .submit_process(
            TaskOptions::new().timeout(Duration::from_secs(60)),
            hog,
            (10, 10, 1024),
        )
        .unwrap();
    match wait(f) {
        Err(TaskError::MemoryLimit { limit: l, rss }) => {
            assert_eq!(l, limit);
            assert!(rss > limit, "rss {rss} is not over {limit}");
            assert!(rss < 900 << 20, "the monitor was slow: rss {rss}");
        }
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
    assert!(eventually(LONG, || !pid_exists(pid)));
    // A small task is fine afterwards, in a new worker.
    assert_eq!(
        wait(
            sys.submit_process(TaskOptions::new(), hog, (1, 0, 20))
                .unwrap()
        )
        .unwrap(),
        20
    );
    let st = sys.stats();
    assert_eq!((st.memory_limit, st.completed), (1, 2));
}

#[test]
fn retry_on_crash_covers_the_memory_limit() {
    let sys = builder("pt-memretry")
        .max_memory_per_process(150 << 20)
        .build()
        .unwrap();
    let f = sys
        .submit_process(
            TaskOptions::new()
                .timeout(Duration::from_secs(60))
                .retry(RetryPolicy::retries(2).on(RetryOn::CRASH)),
            hog,
            (10, 10, 1024),
        )
        .unwrap();
    // Every attempt hits the limit: three attempts, then MemoryLimit.
    assert!(matches!(wait(f), Err(TaskError::MemoryLimit { .. })));
    let st = sys.stats();
    assert_eq!((st.retried, st.memory_limit, st.attempts), (2, 1, 3));
}

// ---------------------------------------------------------------------------
// Priorities
// ---------------------------------------------------------------------------

/// Blocks the single worker, queues `n` tasks of random priority, releases
/// the worker and returns (expected order, actual start order).
fn priority_run(name: &str, prefetch: usize, n: u32, seed: u64) -> (Vec<u32>, Vec<u32>) {
    use rand::{Rng, SeedableRng};
    let dir = temp_dir(name);
    let sys = builder(name).process_prefetch(prefetch).build().unwrap();
    let log = dir.join("log");
    let blocker = Blocker::start(&sys, &dir);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut queued = Vec::new();
    let mut futs = Vec::new();
    for tag in 0..n {
        let level: u8 = rng.gen_range(0..=10);
        let opts = TaskOptions::new().priority(Priority::new(level).unwrap());
        futs.push(
            sys.submit_process(opts, log_start, (path_string(&log), tag))
                .unwrap(),
        );
        queued.push((level, tag));
    }
    blocker.release();
    wait(blocker.future).unwrap();
    for f in futs {
        wait(f).unwrap();
    }
    // Most urgent level first; within a level, submission order.
    queued.sort();
    let expected: Vec<u32> = queued.into_iter().map(|(_, t)| t).collect();
    let actual: Vec<u32> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    (expected, actual)
}

#[test]
fn queued_tasks_start_in_priority_order() {
    let (expected, actual) = priority_run("pt-prio", 1, 40, 7);
    assert_eq!(actual, expected);
}

#[test]
fn tasks_sent_ahead_start_in_priority_order_in_the_worker() {
    // Fewer tasks than the prefetch: they all wait in the worker's queue.
    let (expected, actual) = priority_run("pt-prio-ahead", 32, 20, 11);
    assert_eq!(actual, expected);
}

#[test]
fn an_urgent_task_does_not_wait_behind_less_urgent_tasks_sent_ahead() {
    let dir = temp_dir("prio-prefetch");
    // The default prefetch (16): a worker holds tasks that have not started.
    let sys = builder("pt-prio-pf").build().unwrap();
    let log = dir.join("log");
    let blocker = Blocker::start(&sys, &dir);
    let mut futs = Vec::new();
    for tag in 0..24 {
        let opts = TaskOptions::new().priority(Priority::IDLE);
        futs.push(
            sys.submit_process(opts, log_start, (path_string(&log), tag))
                .unwrap(),
        );
    }
    let urgent = sys
        .submit_process(
            TaskOptions::new().priority(Priority::CRITICAL),
            log_start,
            (path_string(&log), 999),
        )
        .unwrap();
    blocker.release();
    wait(blocker.future).unwrap();
    wait(urgent).unwrap();
    for f in futs {
        wait(f).unwrap();
    }
    let order = std::fs::read_to_string(&log).unwrap();
    let first = order.lines().next().unwrap();
    assert_eq!(
        first, "999",
        "the CRITICAL task waited behind IDLE tasks that had not started: {order:?}"
    );
}

#[test]
fn long_tasks_are_not_sent_ahead_to_a_busy_worker_while_another_is_idle() {
    let dir = temp_dir("no-ahead");
    // The default prefetch (16), two workers.
    let sys = builder("pt-no-ahead")
        .core_processes(2)
        .max_processes(2)
        .build()
        .unwrap();
    // Tasks of tens of milliseconds: the pool learns they are long.
    let warm: Vec<_> = (0..4)
        .map(|_| {
            sys.submit_process(TaskOptions::new(), sleep_then, (String::new(), 30))
                .unwrap()
        })
        .collect();
    for f in warm {
        wait(f).unwrap();
    }
    let blocker = Blocker::start(&sys, &dir);
    let busy = blocker.pid;
    let rest: Vec<_> = (0..6)
        .map(|_| {
            sys.submit_process(TaskOptions::new(), sleep_then, (String::new(), 20))
                .unwrap()
        })
        .collect();
    // Each runs on the other worker, one after another; none waits in the
    // blocked worker's queue.
    for f in rest {
        let pid = wait(f).expect("a task behind the blocked worker");
        assert_ne!(pid, busy, "a long task was sent ahead to the busy worker");
    }
    assert!(!blocker.future.is_done());
    blocker.release();
    assert_eq!(wait(blocker.future).unwrap(), busy);
}

// ---------------------------------------------------------------------------
// Result delivery within one worker
// ---------------------------------------------------------------------------

#[test]
fn a_result_is_not_held_back_by_the_next_long_task() {
    let dir = temp_dir("held-back");
    let sys = builder("pt-held").process_prefetch(4).build().unwrap();
    let blocker = Blocker::start(&sys, &dir);
    let quick = sys.submit_process(TaskOptions::new(), square, 9).unwrap();
    let slow = sys
        .submit_process(TaskOptions::new(), sleep_then, (String::new(), 6_000))
        .unwrap();
    blocker.release();
    // The quick task is done long before the slow one ends.
    match quick.wait_timeout(Duration::from_secs(3)) {
        Ok(r) => assert_eq!(r.unwrap(), 81),
        Err(_) => panic!("the quick task's result waited for the slow task"),
    }
    assert!(blocker.future.is_done(), "the blocker's result waited too");
    assert!(wait(slow).is_ok());
}

#[test]
fn a_finished_task_does_not_run_again_when_its_worker_dies_next() {
    let dir = temp_dir("rerun");
    let sys = builder("pt-rerun").process_prefetch(4).build().unwrap();
    let log = dir.join("log");
    let blocker = Blocker::start(&sys, &dir);
    let once = sys
        .submit_process(TaskOptions::new(), log_start, (path_string(&log), 1))
        .unwrap();
    let crash = sys.submit_process(TaskOptions::new(), do_abort, 1).unwrap();
    blocker.release();
    assert!(matches!(wait(crash), Err(TaskError::WorkerDied { .. })));
    assert_eq!(wait(once).unwrap(), 1);
    assert!(wait(blocker.future).is_ok());
    let runs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        runs.lines().count(),
        1,
        "the task ran more than once: {runs:?}"
    );
}

// ---------------------------------------------------------------------------
// I/O, shared memory, async, hooks
// ---------------------------------------------------------------------------

#[test]
fn worker_stdout_does_not_corrupt_the_channel() {
    for output in [WorkerOutput::Forward, WorkerOutput::Discard] {
        let sys = builder(&format!("pt-out-{output:?}"))
            .process_output(output)
            .build()
            .unwrap();
        let f = sys
            .submit_process(TaskOptions::new(), chatter, 1 << 20)
            .unwrap();
        assert!(wait(f).unwrap() >= 1 << 20, "{output:?}");
        // The same worker still talks the protocol.
        let f = sys.submit_process(TaskOptions::new(), square, 12).unwrap();
        assert_eq!(wait(f).unwrap(), 144, "{output:?}");
        assert_eq!(sys.stats().worker_died, 0, "{output:?}");
    }
}

seedcore::process_task! {
    /// How many of the buffers arrived as shared memory.
    fn count_shared(v: Vec<SharedBytes>) -> usize {
        v.iter().filter(|b| b.is_shared_memory()).count()
    }
}

seedcore::process_task! {
    /// `n` one-byte buffers in shared memory.
    fn make_shared(n: usize) -> Vec<SharedBytes> {
        (0..n).map(|i| SharedBytes::from_slice(&[i as u8]).unwrap()).collect()
    }
}

#[test]
fn more_shared_buffers_than_one_frame_carries_is_an_error_not_a_hang() {
    let sys = builder("pt-fds").build().unwrap();
    let bufs = |n: usize| -> Vec<SharedBytes> {
        (0..n)
            .map(|i| SharedBytes::from_slice(&[i as u8]).unwrap())
            .collect()
    };
    assert_eq!(
        wait(
            sys.submit_process(TaskOptions::new(), count_shared, bufs(200))
                .unwrap()
        )
        .unwrap(),
        200
    );
    match sys.submit_process(TaskOptions::new(), count_shared, bufs(300)) {
        Err(SubmitError::TooManySharedBuffers { count, limit }) => {
            assert_eq!((count, limit), (300, 253));
        }
        other => panic!("expected TooManySharedBuffers, got {:?}", other.map(|_| ())),
    }
    // A result with too many: the task fails and says why.
    match wait(
        sys.submit_process(TaskOptions::new(), make_shared, 300)
            .unwrap(),
    ) {
        Err(TaskError::Failed(e)) => assert!(e.to_string().contains("253"), "{e}"),
        other => panic!("expected a failure, got {:?}", other.map(|v| v.len())),
    }
    // The worker and the pool carry on.
    assert_eq!(
        wait(
            sys.submit_process(TaskOptions::new(), make_shared, 10)
                .unwrap()
        )
        .unwrap()
        .len(),
        10
    );
}

#[test]
fn shared_bytes_round_trip_through_shared_memory() {
    let sys = builder("pt-shm").build().unwrap();
    let data: Vec<u8> = (0..8usize << 20).map(|i| (i * 31 + 7) as u8).collect();
    let buf = SharedBytes::from_slice(&data).unwrap();
    assert!(buf.is_shared_memory());
    let f = sys
        .submit_process(TaskOptions::new(), shm_invert, buf.clone())
        .unwrap();
    let (arrived_shared, sum, out) = wait(f).unwrap();
    assert!(arrived_shared, "the worker got a copy, not shared memory");
    assert_eq!(sum, data.iter().map(|&x| x as u64).sum::<u64>());
    assert!(out.is_shared_memory(), "the result came back as bytes");
    assert_eq!(out.len(), data.len());
    assert!(out.iter().zip(&data).all(|(a, b)| *a == !*b));
    // The worker's write did not reach our buffer.
    assert_eq!(buf.as_slice(), &data[..]);
    // A plain vector of 8 MiB goes through shared memory too.
    let f = sys
        .submit_process(
            TaskOptions::new(),
            shm_invert,
            SharedBytes::from_vec(data.clone()),
        )
        .unwrap();
    let (arrived_shared, _, out) = wait(f).unwrap();
    assert!(arrived_shared);
    assert!(out.iter().zip(&data).all(|(a, b)| *a == !*b));
}

#[test]
fn async_process_tasks_run_concurrently_in_one_worker() {
    let sys = builder("pt-async").process_concurrency(4).build().unwrap();
    let f = sys.submit_process(TaskOptions::new(), nap, 10).unwrap();
    let pid = wait(f).unwrap();
    let t = Instant::now();
    let futs: Vec<_> = (0..4)
        .map(|_| sys.submit_process(TaskOptions::new(), nap, 300).unwrap())
        .collect();
    for f in futs {
        assert_eq!(wait(f).unwrap(), pid, "one worker ran them all");
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(1_200),
        "4 x 300 ms on one worker took {took:?}: not concurrent"
    );
}

#[test]
fn async_process_task_timeout_stops_only_that_task() {
    let sys = builder("pt-async-to")
        .process_concurrency(4)
        .build()
        .unwrap();
    let pid = wait(sys.submit_process(TaskOptions::new(), nap, 1).unwrap()).unwrap();
    let long = sys
        .submit_process(
            TaskOptions::new().timeout(Duration::from_millis(300)),
            nap,
            30_000,
        )
        .unwrap();
    let fine = sys.submit_process(TaskOptions::new(), nap, 800).unwrap();
    assert!(matches!(wait(long), Err(TaskError::TimedOut(_))));
    assert_eq!(wait(fine).unwrap(), pid, "the worker was not killed");
    assert!(pid_exists(pid));
}

#[test]
fn the_worker_initializer_runs_before_tasks() {
    let sys = builder("pt-init")
        .core_processes(2)
        .max_processes(2)
        .process_initializer(init_hook)
        .build()
        .unwrap();
    let futs: Vec<_> = (0..8)
        .map(|_| {
            sys.submit_process(TaskOptions::new(), read_init, ())
                .unwrap()
        })
        .collect();
    for f in futs {
        assert_eq!(wait(f).unwrap(), 4242);
    }
    // Without it the static is untouched.
    let plain = builder("pt-noinit").build().unwrap();
    let f = plain
        .submit_process(TaskOptions::new(), read_init, ())
        .unwrap();
    assert_eq!(wait(f).unwrap(), 0);
}

#[test]
fn the_worker_initializer_gets_its_arguments_in_every_worker() {
    let given = ("model-7.bin".to_owned(), 99_u64);
    // One task per worker: each task meets a new worker process.
    let sys = builder("pt-init-args")
        .core_processes(2)
        .max_processes(2)
        .max_tasks_per_process(1)
        .process_initializer_with(init_with_args, given.clone())
        .build()
        .unwrap();
    let futs: Vec<_> = (0..4)
        .map(|_| {
            sys.submit_process(TaskOptions::new(), read_init_args, ())
                .unwrap()
        })
        .collect();
    let mut pids = std::collections::HashSet::new();
    for f in futs {
        let (pid, got) = wait(f).unwrap();
        assert_eq!(got.as_ref(), Some(&given), "worker {pid}");
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 4, "each task ran in its own worker: {pids:?}");
    // Without arguments the static is untouched.
    let plain = builder("pt-init-args-none").build().unwrap();
    let f = plain
        .submit_process(TaskOptions::new(), read_init_args, ())
        .unwrap();
    assert_eq!(wait(f).unwrap().1, None);
}

#[test]
fn a_worker_that_replaces_a_killed_one_gets_the_initializer_arguments() {
    let given = ("shard-3".to_owned(), 3_u64);
    let sys = builder("pt-init-args-kill")
        .process_initializer_with(init_with_args, given.clone())
        .build()
        .unwrap();
    let ask = || {
        wait(
            sys.submit_process(TaskOptions::new(), read_init_args, ())
                .unwrap(),
        )
        .unwrap()
    };
    let (first, got) = ask();
    assert_eq!(got.as_ref(), Some(&given));
    sigkill(first);
    assert!(eventually(LONG, || {
        let pids = common::processes(&sys.stats()).pids;
        pids.len() == 1 && pids[0] != first
    }));
    let (second, got) = ask();
    assert_ne!(second, first, "the killed worker answered");
    assert_eq!(got.as_ref(), Some(&given), "the replacement's arguments");
}

#[test]
fn the_worker_finalizer_runs_at_shutdown() {
    let sys = builder("pt-fini")
        .process_finalizer(fini_hook)
        .build()
        .unwrap();
    let pid = warm_up(&sys);
    let mark = std::env::temp_dir().join(format!("seedcore-pt-fini-{}-{pid}", std::process::id()));
    let _ = std::fs::remove_file(&mark);
    sys.shutdown(ShutdownMode::Graceful);
    assert!(mark.exists(), "the finalizer did not run in worker {pid}");
    let _ = std::fs::remove_file(&mark);
}

#[test]
fn submitting_from_inside_a_worker_is_refused() {
    let sys = builder("pt-nested").build().unwrap();
    let f = sys
        .submit_process(TaskOptions::new(), nested_submit, ())
        .unwrap();
    let (inside, outcome) = wait(f).unwrap();
    assert!(inside, "is_worker() is true in a worker");
    assert_eq!(outcome, "InsideWorker");
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

#[test]
fn submitting_after_shutdown_is_refused() {
    let sys = builder("pt-closed").build().unwrap();
    warm_up(&sys);
    sys.shutdown(ShutdownMode::Graceful);
    assert!(matches!(
        sys.submit_process(TaskOptions::new(), square, 2),
        Err(SubmitError::SystemClosed)
    ));
}

#[test]
fn shutdown_leaves_no_worker_process() {
    let sys = builder("pt-down")
        .core_processes(2)
        .max_processes(2)
        .build()
        .unwrap();
    let futs: Vec<_> = (0..20)
        .map(|_| sys.submit_process(TaskOptions::new(), whoami, ()).unwrap())
        .collect();
    for f in futs {
        wait(f).unwrap();
    }
    assert!(eventually(LONG, || common::processes(&sys.stats())
        .pids
        .len()
        == 2));
    let pids = common::processes(&sys.stats()).pids;
    for &p in &pids {
        assert!(pid_exists(p));
    }
    let report = sys.shutdown(ShutdownMode::Graceful);
    assert!(!report.timed_out);
    for &p in &pids {
        assert!(!pid_exists(p), "worker {p} outlived the shutdown");
    }
    assert!(common::processes(&sys.stats()).pids.is_empty());
}

#[test]
fn graceful_shutdown_waits_for_a_running_process_task() {
    let sys = builder("pt-down-grace").build().unwrap();
    let f = sys
        .submit_process(TaskOptions::new(), sleep_then, (String::new(), 700))
        .unwrap();
    let pid = warm_up_wait_running(&sys);
    let report = sys.shutdown(ShutdownMode::Graceful);
    assert!(!report.timed_out);
    assert_eq!(wait(f).unwrap(), pid);
    assert!(!pid_exists(pid));
}

#[test]
fn a_shutdown_while_a_replacement_worker_starts_is_prompt() {
    // A crash makes the pool start a replacement; shutting down while it
    // starts must not wait out the shutdown timeout for it.
    for round in 0..10 {
        let sys = builder(&format!("pt-down-start{round}"))
            .shutdown_timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        let f = sys.submit_process(TaskOptions::new(), do_abort, 1).unwrap();
        assert!(matches!(wait(f), Err(TaskError::WorkerDied { .. })));
        let t = Instant::now();
        let report = sys.shutdown(ShutdownMode::Graceful);
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(2_500),
            "round {round}: the shutdown took {took:?} ({report:?})"
        );
    }
}

/// Waits until the single worker exists; returns its pid.
fn warm_up_wait_running(sys: &ConcurrentSystem) -> u32 {
    let mut pid = 0;
    assert!(eventually(LONG, || {
        let pids = common::processes(&sys.stats()).pids;
        pid = pids.first().copied().unwrap_or(0);
        pid != 0
    }));
    pid
}

#[test]
fn immediate_shutdown_stops_a_running_process_task_at_once() {
    let dir = temp_dir("down-now");
    let sys = builder("pt-down-now")
        .shutdown_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let pid_file = dir.join("pid");
    let running = sys
        .submit_process(
            TaskOptions::new(),
            sleep_then,
            (path_string(&pid_file), 30_000),
        )
        .unwrap();
    let queued = sys.submit_process(TaskOptions::new(), square, 3).unwrap();
    let pid = read_pid_file(&pid_file);
    let t = Instant::now();
    sys.shutdown(ShutdownMode::Immediate);
    let took = t.elapsed();
    let q = wait(queued);
    assert!(
        matches!(q, Err(TaskError::Cancelled)),
        "queued: {q:?} after {took:?}"
    );
    let r = wait(running);
    assert!(
        matches!(r, Err(TaskError::Cancelled | TaskError::SystemShutdown)),
        "{r:?}"
    );
    assert!(!pid_exists(pid));
    assert!(
        took < Duration::from_secs(5),
        "an immediate shutdown took {took:?}"
    );
}
