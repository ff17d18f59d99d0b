//! Helpers shared by the behaviour tests: quiet panics, gates, polling with
//! a deadline, a concurrency tracker and a thread census.

#![allow(dead_code, unreachable_pub)]

use seedcore::exec::ExecutorStats;
use seedcore::{ConcurrentSystem, ExecutorKind, Stats, SystemBuilder};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};

/// Marker that test panics carry so that the quiet hook swallows them.
pub const PANIC_MARKER: &str = "expected-test-panic";

/// How long a test waits for something that should happen at once. Far
/// above anything a healthy run needs, so that a slow machine never fails
/// a test; a hang still ends in a clear failure.
pub const LONG: Duration = Duration::from_secs(10);

/// Installs (once per test binary) a panic hook that drops the message of
/// panics carrying [`PANIC_MARKER`] and forwards every other panic to the
/// default hook.
pub fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if msg.contains(PANIC_MARKER) {
                return;
            }
            default(info);
        }));
    });
}

/// A builder with small, test-friendly settings: 2 core threads, up to 4,
/// 1 async thread, and a shutdown timeout that bounds a failing test.
pub fn builder(name: &str) -> SystemBuilder {
    quiet_panics();
    ConcurrentSystem::builder()
        .name(name)
        .core_threads(2)
        .max_threads(4)
        .async_threads(1)
        .shutdown_timeout(Duration::from_secs(5))
}

/// [`builder`] with `core` core threads and `max` max threads, built.
pub fn system(name: &str, core: usize, max: usize) -> ConcurrentSystem {
    builder(name)
        .core_threads(core)
        .max_threads(max)
        .build()
        .expect("valid test configuration")
}

/// A one-shot gate: waiters block until it is opened. Used both ways: a task
/// waits for the test to open it, or the test waits for a task to.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens the gate for every present and future waiter.
    pub fn open(&self) {
        let (m, cv) = &*self.0;
        *m.lock().unwrap() = true;
        cv.notify_all();
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        *self.0 .0.lock().unwrap()
    }

    /// Waits up to `d` for the gate; `true` if it opened.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        let (m, cv) = &*self.0;
        let deadline = Instant::now() + d;
        let mut open = m.lock().unwrap();
        while !*open {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            open = cv.wait_timeout(open, deadline - now).unwrap().0;
        }
        true
    }

    /// Waits up to [`LONG`] for the gate (a safety bound, so that a broken
    /// test never hangs a worker forever); `true` if it opened.
    pub fn wait(&self) -> bool {
        self.wait_timeout(LONG)
    }
}

/// The row of the executor of `kind` in `st`; every test system has the
/// built-in executors, so a missing row fails the test.
pub fn row(st: &Stats, kind: ExecutorKind) -> ExecutorStats {
    st.executor(kind)
        .cloned()
        .unwrap_or_else(|| panic!("no `{kind}` row in {:?}", st.executors))
}

/// The thread pool's row in `st`.
pub fn threads(st: &Stats) -> ExecutorStats {
    row(st, ExecutorKind::Threads)
}

/// The process pool's row in `st`.
pub fn processes(st: &Stats) -> ExecutorStats {
    row(st, ExecutorKind::Processes)
}

/// Polls `cond` until it holds or `within` passes; returns whether it held.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Spins (sleeping 1 ms per round) until `cancelled()` or [`LONG`] passes;
/// returns whether cancellation was seen.
pub fn spin_until_cancelled(cancelled: impl Fn() -> bool) -> bool {
    eventually(LONG, cancelled)
}

/// Counts how many holders are inside a section at once, and the maximum.
#[derive(Default)]
pub struct Concurrency {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Concurrency {
    /// A tracker at zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Enters the section; returns how many are inside now (self included).
    pub fn enter(&self) -> usize {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        n
    }

    /// Leaves the section.
    pub fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    /// The most holders seen at once.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    /// Holders inside now.
    pub fn current(&self) -> usize {
        self.now.load(Ordering::SeqCst)
    }
}

/// A tokio current-thread runtime's `block_on`, to await a future from a
/// plain thread.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
        .block_on(f)
}

/// The threads of this process whose name starts with `prefix`, read from
/// `/proc/self/task/*/comm` (names are truncated to 15 bytes there). `None`
/// where `/proc` is not available.
pub fn threads_named(prefix: &str) -> Option<Vec<String>> {
    let dir = std::fs::read_dir("/proc/self/task").ok()?;
    let mut names = Vec::new();
    for entry in dir.flatten() {
        // A thread may exit between the listing and the read.
        if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) {
            let comm = comm.trim_end().to_owned();
            if comm.starts_with(prefix) {
                names.push(comm);
            }
        }
    }
    Some(names)
}

/// The current thread's name, or an empty string.
pub fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_owned()
}

/// An error type with a known message, to check that a task's own error
/// comes back intact.
#[derive(Debug, PartialEq, Eq)]
pub struct MyError(pub String);

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "my error: {}", self.0)
    }
}

impl std::error::Error for MyError {}

/// Sends `()` on `tx` when dropped: observes that a future was dropped.
pub struct DropSignal(pub std::sync::mpsc::Sender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// How long a process test waits for one task: far above what a healthy
/// run needs on a loaded 2-core machine; a hang still ends in a failure.
pub const PROCESS_WAIT: Duration = Duration::from_secs(30);

/// A builder for process tests: one worker process, quiet workers, one
/// or two threads, a bounded shutdown.
pub fn process_builder(name: &str) -> SystemBuilder {
    ConcurrentSystem::builder()
        .name(name)
        .core_threads(1)
        .max_threads(2)
        .async_threads(1)
        .core_processes(1)
        .max_processes(1)
        .process_output(seedcore::WorkerOutput::Discard)
        .shutdown_timeout(Duration::from_secs(10))
}

/// Waits for `f` at most [`PROCESS_WAIT`]; a future that does not resolve
/// fails the test instead of hanging it.
pub fn wait_process<T: Send + 'static>(
    f: seedcore::TaskFuture<T>,
) -> Result<T, seedcore::TaskError> {
    match f.wait_timeout(PROCESS_WAIT) {
        Ok(r) => r,
        Err(f) => panic!("task {:?} did not resolve within {PROCESS_WAIT:?}", f.id()),
    }
}
