//! Chaos test of the process pool: thousands of process tasks that succeed,
//! fail, panic, abort, segfault, hang and hog memory, while an outside
//! killer SIGKILLs workers. Every task must resolve exactly once with the
//! outcome its kind allows, the stats must add up, and the shutdown must
//! leave no child process and no shared memory behind.
//!
//! This file holds a single test on purpose: it counts every child process
//! and every memfd of the test process, which other tests would disturb.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use seedcore::{
    ConcurrentSystem, RetryOn, RetryPolicy, SharedBytes, ShutdownMode, TaskError, TaskErrorKind,
    TaskFuture, TaskOptions, WorkerOutput,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

seedcore::enable_test_workers!();

/// Tasks in the run.
const TASKS: usize = 5_000;
/// The timeout of the tasks that hang.
const HANG_TIMEOUT: Duration = Duration::from_millis(200);
/// The pool's memory limit per worker.
const MEMORY_LIMIT: u64 = 256 << 20;
/// How long the outside killer runs, from the first submission.
const KILLER_RUNS: Duration = Duration::from_secs(3);
/// The killer's pause between two kills.
const KILL_EVERY: Duration = Duration::from_millis(100);
/// The bound on the whole run (a hang fails the test instead of hanging it).
const RUN_BOUND: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Worker side
// ---------------------------------------------------------------------------

fn no_core_dumps() {
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: rustix::process::getrlimit(rustix::process::Resource::Core).maximum,
        },
    );
}

/// The process pool's row of `st`.
fn processes(st: &seedcore::Stats) -> seedcore::exec::ExecutorStats {
    st.executor(seedcore::ExecutorKind::Processes)
        .cloned()
        .expect("a process pool row")
}

fn mix(i: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17)
}

seedcore::process_task! {
    /// Plain work.
    fn work(i: u64) -> u64 { mix(i) }
}

seedcore::process_task! {
    /// Async work.
    async fn async_work(i: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        mix(i)
    }
}

seedcore::process_task! {
    /// Adds `i` to every byte of a shared buffer.
    fn shm_add(b: SharedBytes, i: u8) -> SharedBytes {
        let mut out = b.clone();
        for x in out.make_mut() {
            *x = x.wrapping_add(i);
        }
        out
    }
}

seedcore::process_task! {
    /// Returns its own error.
    fn fail(i: u64) -> Result<u64, String> {
        if i < u64::MAX {
            Err(format!("planned failure {i}"))
        } else {
            Ok(i)
        }
    }
}

seedcore::process_task! {
    /// Panics.
    fn panic_task(i: u64) -> u64 {
        if i < u64::MAX {
            panic!("planned panic {i}");
        }
        i
    }
}

seedcore::process_task! {
    /// Aborts the worker.
    fn abort_task(i: u64) -> u64 {
        no_core_dumps();
        if i < u64::MAX {
            std::process::abort();
        }
        i
    }
}

seedcore::process_task! {
    /// Ends the worker with SIGSEGV.
    fn segv_task(i: u64) -> u64 {
        no_core_dumps();
        if i < u64::MAX {
            // SAFETY: resets one signal's disposition (Rust's handler is
            // for stack overflows) and raises it; the process ends there.
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
        }
        i
    }
}

seedcore::process_task! {
    /// Sleeps far past its timeout.
    fn hang(i: u64) -> u64 {
        std::thread::sleep(Duration::from_secs(30));
        i
    }
}

seedcore::process_task! {
    /// Grows by 8 MiB every 2 ms (touching every page) until it is killed.
    fn hog(i: u64) -> u64 {
        let mut held: Vec<Vec<u8>> = Vec::new();
        for _ in 0..384 {
            let mut chunk = vec![0u8; 8 << 20];
            for p in (0..chunk.len()).step_by(4096) {
                chunk[p] = 1;
            }
            held.push(std::hint::black_box(chunk));
            std::thread::sleep(Duration::from_millis(2));
        }
        // 3 GiB and still alive: the monitor missed it; the task's safety
        // timeout ends it.
        std::thread::sleep(Duration::from_secs(60));
        std::hint::black_box(&held);
        i
    }
}

seedcore::process_task! {
    /// Aborts on its first attempt (no marker yet), succeeds afterwards.
    fn flaky(marker: String, i: u64) -> u64 {
        if !Path::new(&marker).exists() {
            std::fs::write(&marker, "crashed").expect("write the marker");
            no_core_dumps();
            std::process::abort();
        }
        mix(i)
    }
}

/// A result whose decoding panics in the parent (on the pool's reader).
#[derive(Debug)]
struct DecodePanics(u64);

impl serde::Serialize for DecodePanics {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for DecodePanics {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let i = <u64 as serde::Deserialize>::deserialize(d)?;
        if seedcore::is_worker() {
            return Ok(DecodePanics(i));
        }
        panic!("planned decode panic {i}");
    }
}

seedcore::process_task! {
    /// Returns a value the parent cannot decode.
    fn bad_result(i: u64) -> DecodePanics { DecodePanics(i) }
}

/// An argument whose decoding panics in the worker.
#[derive(Debug)]
struct ArgPanics(u64);

impl serde::Serialize for ArgPanics {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ArgPanics {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let i = <u64 as serde::Deserialize>::deserialize(d)?;
        panic!("planned decode panic {i}");
    }
}

seedcore::process_task! {
    /// Takes an argument the worker cannot decode.
    fn bad_args(x: ArgPanics) -> u64 { x.0 }
}

// ---------------------------------------------------------------------------
// Kinds and what each may end as
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Succeeds; no retry.
    Ok,
    /// Succeeds; retried up to 3 times on a crash.
    OkRetry,
    /// An async task that succeeds.
    Async,
    /// A shared-memory round trip that succeeds.
    Shm,
    /// Returns its own error.
    Fail,
    /// Panics.
    Panic,
    /// Aborts its worker.
    Abort,
    /// Segfaults its worker.
    Segv,
    /// Hangs past a 200 ms timeout.
    Hang,
    /// Grows past the memory limit.
    Hog,
    /// Crashes on its first attempt only; retried up to 3 times on a crash.
    Flaky,
    /// Its result's `Deserialize` panics in the parent.
    BadResult,
    /// Its argument's `Deserialize` panics in the worker (sent from the
    /// parent, where it encodes fine).
    BadArgs,
}

/// Kinds and their weights per thousand.
const MIX: &[(Kind, u32)] = &[
    (Kind::Ok, 810),
    (Kind::OkRetry, 50),
    (Kind::Async, 30),
    (Kind::Shm, 10),
    (Kind::Fail, 30),
    (Kind::Panic, 25),
    (Kind::Abort, 10),
    (Kind::Segv, 10),
    (Kind::Hang, 5),
    (Kind::Hog, 4),
    (Kind::Flaky, 6),
    (Kind::BadResult, 5),
    (Kind::BadArgs, 5),
];

fn pick(rng: &mut StdRng) -> Kind {
    let mut r = rng.gen_range(0..1000);
    for &(k, w) in MIX {
        if r < w {
            return k;
        }
        r -= w;
    }
    unreachable!("the weights add up to 1000")
}

/// How one task ended, as the test records it.
#[derive(Debug, Clone)]
enum Seen {
    /// The right value.
    Value,
    /// A value, but the wrong one.
    WrongValue(String),
    /// An error.
    Error {
        kind: TaskErrorKind,
        signal: Option<i32>,
        exit_code: Option<i32>,
        text: String,
        at: Duration,
    },
}

static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Prints the library's warnings and errors (protocol breaks and the like).
struct StderrLog;
impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!(
                "[{:?} {}] {}",
                T0.get().map(|t| t.elapsed()),
                r.level(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

impl Seen {
    fn of<T>(r: Result<T, TaskError>, check: impl FnOnce(T) -> Result<(), String>) -> Seen {
        match r {
            Ok(v) => match check(v) {
                Ok(()) => Seen::Value,
                Err(why) => Seen::WrongValue(why),
            },
            Err(e) => {
                let (signal, exit_code) = match &e {
                    TaskError::WorkerDied {
                        signal, exit_code, ..
                    } => (*signal, *exit_code),
                    _ => (None, None),
                };
                Seen::Error {
                    kind: e.kind(),
                    signal,
                    exit_code,
                    text: e.to_string(),
                    at: T0.get().map(|t| t.elapsed()).unwrap_or_default(),
                }
            }
        }
    }
}

/// What a task's ending means for the tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    /// It ended as its kind says.
    AsPlanned,
    /// The outside killer ended it (WorkerDied by SIGKILL).
    Killed,
}

/// Checks `seen` against what `kind` allows.
///
/// Every kind may also end `WorkerDied` by SIGKILL: the outside killer may
/// hit its worker while it runs (tasks sent ahead and not started are put
/// back in the queue, so only running ones can end so). Kinds with a
/// retry policy need several such hits in a row, which the kill budget
/// bounds below.
fn judge(kind: Kind, i: usize, seen: &Seen) -> Result<Verdict, String> {
    use TaskErrorKind as K;
    let killed = |s: &Seen| {
        matches!(
            s,
            Seen::Error {
                kind: K::WorkerDied,
                signal: Some(9),
                ..
            }
        )
    };
    if killed(seen) {
        return Ok(Verdict::Killed);
    }
    if let Seen::WrongValue(why) = seen {
        return Err(format!("task {i} ({kind:?}) returned a wrong value: {why}"));
    }
    let ok = match (kind, seen) {
        (Kind::Ok | Kind::OkRetry | Kind::Async | Kind::Shm | Kind::Flaky, Seen::Value) => true,
        (
            Kind::Fail,
            Seen::Error {
                kind: K::Failed,
                text,
                ..
            },
        ) => text.contains(&format!("planned failure {i}")),
        (
            Kind::Panic,
            Seen::Error {
                kind: K::Panicked,
                text,
                ..
            },
        ) => text.contains(&format!("planned panic {i}")),
        (
            Kind::BadResult | Kind::BadArgs,
            Seen::Error {
                kind: K::Failed,
                text,
                ..
            },
        ) => text.contains(&format!("planned decode panic {i}")),
        (
            Kind::Abort,
            Seen::Error {
                kind: K::WorkerDied,
                signal: Some(6),
                exit_code: None,
                ..
            },
        ) => true,
        (
            Kind::Segv,
            Seen::Error {
                kind: K::WorkerDied,
                signal: Some(11),
                exit_code: None,
                ..
            },
        ) => true,
        (
            Kind::Hang,
            Seen::Error {
                kind: K::TimedOut, ..
            },
        ) => true,
        (
            Kind::Hog,
            Seen::Error {
                kind: K::MemoryLimit,
                ..
            },
        ) => true,
        _ => false,
    };
    if ok {
        Ok(Verdict::AsPlanned)
    } else {
        Err(format!("task {i} ({kind:?}) ended {seen:?}"))
    }
}

// ---------------------------------------------------------------------------
// Process census
// ---------------------------------------------------------------------------

/// Pids whose parent is this process (zombies included), from /proc.
/// /proc lists processes, not threads, at its top level.
fn children() -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // gone meanwhile
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parens.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().unwrap_or("?").to_owned();
        let ppid: u32 = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == me {
            out.push((pid, format!("{} state {state}", &stat[..=close])));
        }
    }
    out
}

/// Lines of /proc/self/maps that map a memfd.
fn memfd_maps() -> Vec<String> {
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .filter(|l| l.contains("memfd:"))
        .map(str::to_owned)
        .collect()
}

/// Open descriptors of this process by what they point at: memfds and
/// sockets.
fn fd_census() -> (usize, usize) {
    let (mut memfds, mut sockets) = (0, 0);
    for entry in std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let t = target.to_string_lossy();
            if t.starts_with("/memfd:") {
                memfds += 1;
            } else if t.starts_with("socket:") {
                sockets += 1;
            }
        }
    }
    (memfds, sockets)
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seedcore-chaos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the temp dir");
    dir
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// Where each task's ending is recorded, and how many times.
struct Board {
    seen: Vec<Mutex<Option<Seen>>>,
    calls: Vec<AtomicUsize>,
}

impl Board {
    fn record(&self, i: usize, s: Seen) {
        self.calls[i].fetch_add(1, Ordering::SeqCst);
        *self.seen[i].lock().unwrap() = Some(s);
    }
}

/// A task to wait for on this thread, type-erased.
type Waiter = Box<dyn FnOnce(Instant) -> bool + Send>;

/// Waits for `f` (even tasks) or hands it a callback (odd ones); both
/// record into `board`.
fn track<T: Send + 'static>(
    board: &Arc<Board>,
    waiters: &mut Vec<Waiter>,
    i: usize,
    f: TaskFuture<T>,
    check: impl FnOnce(T) -> Result<(), String> + Send + 'static,
) {
    let board = board.clone();
    if i % 2 == 1 {
        // The handle is not needed: the callback records the ending.
        let _handle = f.on_complete(move |r| board.record(i, Seen::of(r, check)));
    } else {
        waiters.push(Box::new(move |deadline| match f.wait_deadline(deadline) {
            Ok(r) => {
                board.record(i, Seen::of(r, check));
                true
            }
            Err(f) => {
                eprintln!("chaos: task {i} unresolved, {:?}", f.status());
                false
            }
        }));
    }
}

fn expect_value(want: u64) -> impl FnOnce(u64) -> Result<(), String> + Send + 'static {
    move |v| {
        if v == want {
            Ok(())
        } else {
            Err(format!("{v} instead of {want}"))
        }
    }
}

#[test]
fn chaos_every_task_resolves_once_as_its_kind_allows() {
    let t0 = *T0.get_or_init(Instant::now);
    let _ = log::set_logger(&StderrLog);
    log::set_max_level(log::LevelFilter::Warn);
    // The planned decode panics in this process are reported by their
    // tasks: keep them off stderr.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let planned = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|m| m.starts_with("planned decode panic"));
        if !planned {
            previous(info);
        }
    }));
    let dir = temp_dir();
    let children_before = children();
    let maps_before = memfd_maps();
    let (memfds_before, sockets_before) = fd_census();

    let sys = ConcurrentSystem::builder()
        .name("chaos")
        .core_threads(1)
        .max_threads(2)
        .async_threads(1)
        .core_processes(2)
        .max_processes(3)
        .max_memory_per_process(MEMORY_LIMIT)
        .process_output(WorkerOutput::Discard)
        .shutdown_timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let mut rng = StdRng::seed_from_u64(0x5eed_c0de);
    let kinds: Vec<Kind> = (0..TASKS).map(|_| pick(&mut rng)).collect();
    let board = Arc::new(Board {
        seen: (0..TASKS).map(|_| Mutex::new(None)).collect(),
        calls: (0..TASKS).map(|_| AtomicUsize::new(0)).collect(),
    });
    let crash_retry = || RetryPolicy::retries(3).on(RetryOn::CRASH);

    let (kill_times, waited_ok) = std::thread::scope(|s| {
        let sys = &sys;
        let killer = s.spawn(move || {
            // Its own seed: the task mix does not depend on how many kills
            // there were.
            let mut rng = StdRng::seed_from_u64(0x0dd_ba11);
            let mut kills: Vec<Duration> = Vec::new();
            let start = Instant::now();
            while start.elapsed() < KILLER_RUNS {
                std::thread::sleep(KILL_EVERY);
                let pids = processes(&sys.stats()).pids;
                if pids.is_empty() {
                    continue;
                }
                let pid = pids[rng.gen_range(0..pids.len())];
                let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
                    continue;
                };
                if rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok() {
                    kills.push(t0.elapsed());
                }
            }
            kills
        });

        let mut waiters: Vec<Waiter> = Vec::new();
        for (i, &kind) in kinds.iter().enumerate() {
            let n = i as u64;
            let plain = TaskOptions::new();
            let b = &board;
            let w = &mut waiters;
            let submitted = match kind {
                Kind::Ok => sys
                    .submit_process(plain, work, n)
                    .map(|f| track(b, w, i, f, expect_value(mix(n)))),
                Kind::OkRetry => sys
                    .submit_process(plain.retry(crash_retry()), work, n)
                    .map(|f| track(b, w, i, f, expect_value(mix(n)))),
                Kind::Async => sys
                    .submit_process(plain, async_work, n)
                    .map(|f| track(b, w, i, f, expect_value(mix(n)))),
                Kind::Shm => {
                    let data: Vec<u8> = (0..128 * 1024).map(|j| (j % 251) as u8).collect();
                    let buf = SharedBytes::from_slice(&data).expect("shared memory");
                    let add = (i % 200) as u8;
                    sys.submit_process(plain, shm_add, (buf, add)).map(|f| {
                        track(b, w, i, f, move |out: SharedBytes| {
                            let good = out.len() == data.len()
                                && out
                                    .iter()
                                    .zip(&data)
                                    .all(|(o, d)| *o == d.wrapping_add(add));
                            if good {
                                Ok(())
                            } else {
                                Err("wrong bytes".to_owned())
                            }
                        })
                    })
                }
                Kind::Fail => sys
                    .submit_process(plain, fail, n)
                    .map(|f| track(b, w, i, f, expect_value(n))),
                Kind::Panic => sys
                    .submit_process(plain, panic_task, n)
                    .map(|f| track(b, w, i, f, expect_value(n))),
                Kind::Abort => sys
                    .submit_process(plain, abort_task, n)
                    .map(|f| track(b, w, i, f, expect_value(n))),
                Kind::Segv => sys
                    .submit_process(plain, segv_task, n)
                    .map(|f| track(b, w, i, f, expect_value(n))),
                Kind::Hang => sys
                    .submit_process(plain.timeout(HANG_TIMEOUT), hang, n)
                    .map(|f| track(b, w, i, f, expect_value(n))),
                // The timeout only bounds a monitor that never acts.
                Kind::Hog => sys
                    .submit_process(plain.timeout(Duration::from_secs(30)), hog, n)
                    .map(|f| track(b, w, i, f, expect_value(n))),
                Kind::BadResult => sys
                    .submit_process(plain, bad_result, n)
                    .map(|f| track(b, w, i, f, |_: DecodePanics| Err("decoded".to_owned()))),
                Kind::BadArgs => sys
                    .submit_process(plain, bad_args, ArgPanics(n))
                    .map(|f| track(b, w, i, f, expect_value(n))),
                Kind::Flaky => {
                    let marker = dir.join(format!("flaky-{i}"));
                    let marker = marker.to_str().expect("UTF-8 temp path").to_owned();
                    sys.submit_process(plain.retry(crash_retry()), flaky, (marker, n))
                        .map(|f| track(b, w, i, f, expect_value(mix(n))))
                }
            };
            submitted.unwrap_or_else(|e| panic!("task {i} ({kind:?}) was refused: {e}"));
        }

        let deadline = t0 + RUN_BOUND;
        let mut waited_ok = true;
        for waiter in waiters {
            waited_ok &= waiter(deadline);
        }
        (killer.join().expect("the killer thread"), waited_ok)
    });
    if !waited_ok {
        let unresolved: Vec<String> = (0..TASKS)
            .filter(|&i| board.calls[i].load(Ordering::SeqCst) == 0)
            .take(20)
            .map(|i| format!("{i} {:?}", kinds[i]))
            .collect();
        panic!(
            "some tasks did not resolve within {RUN_BOUND:?}: {unresolved:?}; stats {:?}",
            sys.stats()
        );
    }
    // Callbacks run on the callback thread: give them the same bound.
    let all_in = || board.calls.iter().all(|c| c.load(Ordering::SeqCst) >= 1);
    while !all_in() && t0.elapsed() < RUN_BOUND {
        std::thread::sleep(Duration::from_millis(10));
    }
    let ran_for = t0.elapsed();
    let kills = kill_times.len();

    // --- Every task ended once, as its kind allows. ----------------------
    let mut violations = Vec::new();
    let mut tally: BTreeMap<(Kind, Verdict), usize> = BTreeMap::new();
    let mut by_outcome: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut killed: Vec<String> = Vec::new();
    for (i, &kind) in kinds.iter().enumerate() {
        let calls = board.calls[i].load(Ordering::SeqCst);
        if calls != 1 {
            violations.push(format!("task {i} ({kind:?}) resolved {calls} times"));
            continue;
        }
        let seen = board.seen[i].lock().unwrap().clone().expect("recorded");
        let outcome = match &seen {
            Seen::Value | Seen::WrongValue(_) => "completed",
            Seen::Error { kind, .. } => match kind {
                TaskErrorKind::Failed => "failed",
                TaskErrorKind::Panicked => "panicked",
                TaskErrorKind::TimedOut => "timed_out",
                TaskErrorKind::WorkerDied => "worker_died",
                TaskErrorKind::MemoryLimit => "memory_limit",
                TaskErrorKind::Cancelled => "cancelled",
                TaskErrorKind::SystemShutdown => "shutdown",
                _ => "other",
            },
        };
        *by_outcome.entry(outcome).or_default() += 1;
        if let Seen::Error {
            signal: Some(9),
            at,
            text,
            ..
        } = &seen
        {
            killed.push(format!("task {i} {kind:?} seen at {at:?}: {text}"));
        }
        match judge(kind, i, &seen) {
            Ok(v) => *tally.entry((kind, v)).or_default() += 1,
            Err(why) => violations.push(why),
        }
    }
    eprintln!("chaos: {TASKS} tasks in {ran_for:?}, {kills} outside kills");
    for ((kind, verdict), n) in &tally {
        eprintln!("  {kind:?} {verdict:?}: {n}");
    }
    eprintln!("  outcomes: {by_outcome:?}");
    assert!(
        violations.is_empty(),
        "{} tasks ended wrongly; first ones:\n{}",
        violations.len(),
        violations
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // --- The kill budget. ---------------------------------------------------
    // One outside kill ends at most one running sync task (a worker runs
    // one sync task at a time; async tasks are left out: one kill may end
    // several). A task with 3 retries on crash that still died took 4 kills;
    // a flaky one (whose first attempt crashes by itself) at least 2.
    let count = |k: Kind, v: Verdict| tally.get(&(k, v)).copied().unwrap_or(0);
    let sync_killed: usize = [
        Kind::Ok,
        Kind::Shm,
        Kind::Fail,
        Kind::Panic,
        Kind::Abort,
        Kind::Segv,
        Kind::Hang,
        Kind::Hog,
    ]
    .iter()
    .map(|&k| count(k, Verdict::Killed))
    .sum();
    let cost = sync_killed
        + 4 * count(Kind::OkRetry, Verdict::Killed)
        + 2 * count(Kind::Flaky, Verdict::Killed);
    assert!(
        cost <= kills,
        "{cost} kills' worth of tasks ended by SIGKILL, but only {kills} outside kills \
         (at {kill_times:?}); the tasks (a waited task is seen when the waiter \
         reaches it):\n{}",
        killed.join("\n")
    );
    // The retried kinds essentially always succeed.
    assert!(count(Kind::Flaky, Verdict::AsPlanned) >= count(Kind::Flaky, Verdict::Killed) * 10);
    assert!(count(Kind::OkRetry, Verdict::AsPlanned) >= count(Kind::OkRetry, Verdict::Killed) * 10);
    // Each kind that can fail by itself did, mostly, as planned (the kill
    // window is short compared with the run).
    for kind in [
        Kind::Fail,
        Kind::Panic,
        Kind::Abort,
        Kind::Segv,
        Kind::Hang,
        Kind::Hog,
    ] {
        assert!(
            count(kind, Verdict::AsPlanned) > 0,
            "no {kind:?} task ended as planned"
        );
    }

    // --- The stats add up. -------------------------------------------------
    let st = sys.stats();
    assert_eq!(st.submitted, TASKS as u64);
    assert_eq!(st.resolved(), TASKS as u64, "{st:?}");
    assert_eq!(st.pending(), 0);
    let got = |k: &str| by_outcome.get(k).copied().unwrap_or(0);
    assert_eq!(st.completed, got("completed"), "completed");
    assert_eq!(st.failed, got("failed"), "failed");
    assert_eq!(st.panicked, got("panicked"), "panicked");
    assert_eq!(st.timed_out, got("timed_out"), "timed_out");
    assert_eq!(st.worker_died, got("worker_died"), "worker_died");
    assert_eq!(st.memory_limit, got("memory_limit"), "memory_limit");
    assert_eq!((st.cancelled, st.shutdown), (0, 0));
    // Every flaky task that succeeded needed at least one retry.
    let flaky_ok = count(Kind::Flaky, Verdict::AsPlanned) as u64;
    assert!(
        st.retried >= flaky_ok,
        "retried {} < {flaky_ok}",
        st.retried
    );
    assert!(
        st.attempts >= TASKS as u64 + flaky_ok,
        "attempts {}",
        st.attempts
    );
    assert_eq!(processes(&st).queued, 0);

    // --- Nothing is left behind. --------------------------------------------
    let report = sys.shutdown(ShutdownMode::Graceful);
    assert!(!report.timed_out, "{report:?}");
    assert!(processes(&sys.stats()).pids.is_empty());
    let left = children();
    assert!(
        left.len() <= children_before.len(),
        "child processes left after the shutdown: {left:?} (before: {children_before:?})"
    );
    assert_eq!(
        memfd_maps(),
        maps_before,
        "memfd mappings left after the shutdown"
    );
    let (memfds, sockets) = fd_census();
    assert_eq!(memfds, memfds_before, "memfd descriptors left open");
    assert_eq!(sockets, sockets_before, "sockets left open");
    // Late callbacks would show up here.
    for (i, c) in board.calls.iter().enumerate() {
        assert_eq!(c.load(Ordering::SeqCst), 1, "task {i} resolved twice");
    }
    drop(sys);
    assert!(children().len() <= children_before.len());
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("chaos: done in {:?}", t0.elapsed());
}
