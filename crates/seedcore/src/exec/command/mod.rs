//! The command executor: each task runs an external command as a child
//! process in its own process group, on one of the executor's slots.
//!
//! Invariants:
//! * One worker thread per slot runs one child at a time: it spawns it,
//!   collects its stdout and stderr with `poll(2)` until the child exits
//!   (then what the pipes hold; a descendant left running that keeps them
//!   open is not waited for, and what it writes later is discarded),
//!   waits for it to exit without reaping, then reaps it holding its
//!   slot's lock. A kill of
//!   the child's group (`stop_attempt`, shutdown) is sent only under that
//!   lock while the slot names the child, so it never reaches a recycled
//!   process id.
//! * `stop_attempt` sends SIGTERM to the group and SIGKILL after the grace
//!   period if the child is still there; once a stopped leader has exited,
//!   the rest of its group (grandchildren) is killed at once.
//! * A non-zero exit or a death by signal resolves the attempt
//!   [`TaskError::Failed`] with a [`CommandFailed`] that carries the whole
//!   [`CommandOutput`]; the retry policy decides (`RetryOn::ERROR`).

mod child;
mod drain;
mod output;

pub use output::Captured;

use crate::error::{signal_name, TaskError};
use crate::options::LEVELS;
use crate::sched::ShutdownMode;
use crate::sched::{join_by, spawn_latched, Latched};
use crate::sched::{Executor, ExecutorStats, PriorityQueue, Runnable, StopReport, WorkerInfo};
use crate::task::{ExecutorKind, StopReason, TaskContext, TaskId};
use parking_lot::{Condvar, Mutex};
use std::cell::RefCell;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The command executor's kind: its row in stats, the monitor and metrics.
pub const KIND: ExecutorKind = ExecutorKind::Command;

/// What to run: a program with its arguments, or a shell line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Program {
    /// `program` started directly with `args` (no shell).
    Exec {
        /// The program, looked up in `PATH` when it has no `/`.
        program: OsString,
        /// Its arguments.
        args: Vec<OsString>,
    },
    /// A line run by the spec's shell as `sh -c LINE`.
    Shell(String),
}

/// Where a command's standard input comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Stdin {
    /// `/dev/null` (the default).
    #[default]
    Null,
    /// This process's own standard input.
    Inherit,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
}

/// A command to run with
/// [`ConcurrentSystem::submit_command`](crate::ConcurrentSystem::submit_command).
///
/// ```
/// use seedcore::command::CommandSpec;
/// let ls = CommandSpec::new("ls").arg("-l").cwd("/tmp").env("LC_ALL", "C");
/// let piped = CommandSpec::shell("seq 3 | wc -l");
/// # let _ = (ls, piped);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub(crate) program: Program,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) env_clear: bool,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) stdin: Stdin,
    pub(crate) shell: PathBuf,
    pub(crate) nice: Option<i32>,
}

impl CommandSpec {
    fn of(program: Program) -> Self {
        CommandSpec {
            program,
            env: Vec::new(),
            env_clear: false,
            cwd: None,
            stdin: Stdin::Null,
            shell: PathBuf::from("/bin/sh"),
            nice: None,
        }
    }

    /// Runs `program` directly (no shell); add arguments with
    /// [`arg`](Self::arg) and [`args`](Self::args).
    pub fn new(program: impl Into<OsString>) -> Self {
        Self::of(Program::Exec {
            program: program.into(),
            args: Vec::new(),
        })
    }

    /// Runs `line` with `/bin/sh -c` (see [`shell_program`](Self::shell_program)).
    pub fn shell(line: impl Into<String>) -> Self {
        Self::of(Program::Shell(line.into()))
    }

    /// Adds an argument (ignored for a shell line).
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        if let Program::Exec { args, .. } = &mut self.program {
            args.push(a.into());
        }
        self
    }

    /// Adds arguments (ignored for a shell line).
    pub fn args<I, S>(mut self, it: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        if let Program::Exec { args, .. } = &mut self.program {
            args.extend(it.into_iter().map(Into::into));
        }
        self
    }

    /// Sets an environment variable of the command.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the command with an empty environment (plus what
    /// [`env`](Self::env) sets).
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// The command's working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// The command's standard input.
    pub fn stdin(mut self, s: Stdin) -> Self {
        self.stdin = s;
        self
    }

    /// The shell for [`shell`](Self::shell) lines (default `/bin/sh`).
    pub fn shell_program(mut self, sh: impl Into<PathBuf>) -> Self {
        self.shell = sh.into();
        self
    }

    /// The command's nice value (`setpriority`); lowering it needs the
    /// right to, and is silently left as it is otherwise.
    pub fn nice(mut self, n: i32) -> Self {
        self.nice = Some(n);
        self
    }

    /// What it runs.
    pub fn program(&self) -> &Program {
        &self.program
    }
}

/// How a finished command went.
#[derive(Debug)]
#[non_exhaustive]
pub struct CommandOutput {
    /// Its exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// What it wrote to stdout (with what its descendants wrote there
    /// until it exited).
    pub stdout: Captured,
    /// What it wrote to stderr (likewise).
    pub stderr: Captured,
    /// From its start to its exit.
    pub duration: Duration,
    /// Which attempt of its task this was (1 for the first).
    pub attempts: u32,
    /// Its process id.
    pub pid: u32,
}

impl CommandOutput {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// The error of an attempt whose command exited non-zero or was killed by
/// a signal: [`TaskError::Failed`] holds it, whole output included. Find
/// it with [`failed_output`].
#[derive(Debug)]
pub struct CommandFailed(pub CommandOutput);

impl fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.code, self.0.signal) {
            (_, Some(s)) => write!(f, "command killed by {}", signal_name(s)),
            (Some(c), None) => write!(f, "command exited with status {c}"),
            (None, None) => f.write_str("command ended without a status"),
        }
    }
}

impl std::error::Error for CommandFailed {}

/// The command could not be started (not found, not executable, a bad
/// working directory).
#[derive(Debug, thiserror::Error)]
#[error("cannot start {program}: {source}")]
pub struct SpawnFailed {
    /// The program (or shell) that failed to start.
    pub program: String,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// The output of a failed command, when `e` is the failure of a command
/// task ([`TaskError::Failed`] holding a [`CommandFailed`]).
pub fn failed_output(e: &TaskError) -> Option<&CommandOutput> {
    match e {
        TaskError::Failed(b) => b.downcast_ref::<CommandFailed>().map(|f| &f.0),
        _ => None,
    }
}

/// The child a slot runs now.
#[derive(Debug, Clone, Copy)]
struct Current {
    task: TaskId,
    attempt: u32,
    pid: u32,
    stopped: bool,
}

#[derive(Debug)]
struct Slot {
    index: usize,
    current: Mutex<Option<Current>>,
    done: AtomicU64,
}

/// A slot and its thread (taken by a shutdown to join it).
type Worker = (Arc<Slot>, Option<Latched>);

#[derive(Debug)]
struct Inner {
    queue: PriorityQueue<Runnable>,
    wake: Mutex<()>,
    cv: Condvar,
    stopping: AtomicBool,
    target: AtomicUsize,
    core: usize,
    max: usize,
    busy: AtomicUsize,
    grace: Duration,
    spool_threshold: usize,
    spool_dir: PathBuf,
    slots: Mutex<Vec<Worker>>,
}

thread_local! {
    /// The executor and slot of a command worker thread.
    static CURRENT: RefCell<Option<(Arc<Inner>, Arc<Slot>)>> = const { RefCell::new(None) };
}

/// The executor of command tasks: `slots` commands at a time, each in its
/// own process group. [`ConcurrentSystem::submit_command`] adds one with
/// one slot per core unless the application added its own first:
///
/// ```
/// use seedcore::command::{CommandExecutor, CommandSpec};
/// use seedcore::{ConcurrentSystem, TaskOptions};
///
/// let system = ConcurrentSystem::builder().build()?;
/// system.add_executor(CommandExecutor::new(4))?;
/// let out = system.submit_command(TaskOptions::new(), CommandSpec::new("echo").arg("hi"))?.wait()?;
/// assert_eq!(out.stdout.as_bytes(), Some(&b"hi\n"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Dropping it unregistered stops nothing (it has no worker until its
/// first task); registered, the system stops it at shutdown.
///
/// [`ConcurrentSystem::submit_command`]: crate::ConcurrentSystem::submit_command
#[derive(Debug)]
pub struct CommandExecutor {
    inner: Arc<Inner>,
}

impl Default for CommandExecutor {
    fn default() -> Self {
        Self::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        )
    }
}

impl CommandExecutor {
    /// An executor running up to `slots` commands at once (at least 1);
    /// the balancer may grow it up to `max(slots, 4 * cores)` (see
    /// [`max_slots`](Self::max_slots), [`min_slots`](Self::min_slots)).
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        CommandExecutor {
            inner: Arc::new(Inner {
                queue: PriorityQueue::new(),
                wake: Mutex::new(()),
                cv: Condvar::new(),
                stopping: AtomicBool::new(false),
                target: AtomicUsize::new(slots),
                core: slots,
                max: slots.max(4 * cores),
                busy: AtomicUsize::new(0),
                grace: Duration::from_secs(2),
                spool_threshold: 1 << 20,
                spool_dir: std::env::temp_dir(),
                slots: Mutex::new(Vec::new()),
            }),
        }
    }

    /// An executor with the `[command]` section's settings.
    pub fn from_settings(s: &crate::config::CommandSettings) -> Self {
        let mut e = CommandExecutor::new(s.slots)
            .grace(s.grace)
            .spool_threshold(s.spool_threshold);
        if let Some(dir) = &s.spool_dir {
            e = e.spool_dir(dir);
        }
        if let Some(n) = s.max_slots {
            e = e.max_slots(n);
        }
        if let Some(n) = s.min_slots {
            e = e.min_slots(n);
        }
        e
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.inner).expect("configured before its first task")
    }

    /// How long a stopped command has between SIGTERM and SIGKILL
    /// (default 2 s).
    pub fn grace(mut self, d: Duration) -> Self {
        self.inner_mut().grace = d;
        self
    }

    /// Output of one stream past this many bytes goes to a spool file
    /// (default 1 MiB).
    pub fn spool_threshold(mut self, bytes: usize) -> Self {
        self.inner_mut().spool_threshold = bytes;
        self
    }

    /// Where spool files go (default the system's temporary directory).
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.inner_mut().spool_dir = dir.into();
        self
    }

    /// The largest size the balancer may give it (at least its slots);
    /// `max_slots(slots)` fixes its size.
    pub fn max_slots(mut self, n: usize) -> Self {
        let inner = self.inner_mut();
        inner.max = n.max(inner.target.load(Ordering::Relaxed));
        self
    }

    /// The smallest size the balancer may shrink it to (default: its
    /// slots; at least 1).
    pub fn min_slots(mut self, n: usize) -> Self {
        let inner = self.inner_mut();
        inner.core = n.clamp(1, inner.target.load(Ordering::Relaxed));
        self
    }
}

impl Inner {
    /// Starts workers up to the target.
    fn grow(self: &Arc<Self>) {
        let target = self.target.load(Ordering::SeqCst);
        let mut slots = self.slots.lock();
        while slots.len() < target && !self.stopping.load(Ordering::SeqCst) {
            // The smallest free index: indices stay dense for the
            // retirement rule (a worker at or past the target retires).
            let index = (0..)
                .find(|i| slots.iter().all(|(s, _)| s.index != *i))
                .unwrap_or(0);
            let slot = Arc::new(Slot {
                index,
                current: Mutex::new(None),
                done: AtomicU64::new(0),
            });
            let (inner, s) = (self.clone(), slot.clone());
            let h = spawn_latched(
                std::thread::Builder::new().name(format!("seedcore-cmd-{}", slot.index + 1)),
                move || worker(inner, s),
            );
            match h {
                Ok(h) => slots.push((slot, Some(h))),
                Err(e) => {
                    log::error!("seedcore: cannot start a command worker: {e}");
                    break;
                }
            }
        }
    }

    /// Stops the child of `slot` if it is attempt `attempt` of `task`.
    fn stop_child(self: &Arc<Self>, slot: &Arc<Slot>, task: TaskId, attempt: u32) {
        let pid = {
            let mut cur = slot.current.lock();
            match cur.as_mut() {
                Some(c) if c.task == task && c.attempt == attempt => {
                    c.stopped = true;
                    child::kill_group(c.pid, libc::SIGTERM);
                    c.pid
                }
                _ => return,
            }
        };
        let held = slot.clone();
        let grace = self.grace;
        let r = std::thread::Builder::new()
            .name("seedcore-cmd-kill".into())
            .spawn(move || {
                std::thread::sleep(grace);
                let cur = held.current.lock();
                if matches!(*cur, Some(c) if c.pid == pid && c.task == task) {
                    child::kill_group(pid, libc::SIGKILL);
                }
            });
        if r.is_err() {
            // No thread for the grace period: kill at once.
            let cur = slot.current.lock();
            if matches!(*cur, Some(c) if c.pid == pid) {
                child::kill_group(pid, libc::SIGKILL);
            }
        }
    }

    fn kill_all(&self) {
        for (slot, _) in self.slots.lock().iter() {
            let mut cur = slot.current.lock();
            if let Some(c) = cur.as_mut() {
                c.stopped = true;
                child::kill_group(c.pid, libc::SIGKILL);
            }
        }
    }
}

fn worker(inner: Arc<Inner>, slot: Arc<Slot>) {
    CURRENT.with(|c| *c.borrow_mut() = Some((inner.clone(), slot.clone())));
    loop {
        if let Some(task) = inner.queue.pop() {
            inner.busy.fetch_add(1, Ordering::SeqCst);
            task.run();
            inner.busy.fetch_sub(1, Ordering::SeqCst);
            slot.done.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut g = inner.wake.lock();
        if inner.stopping.load(Ordering::SeqCst) {
            break;
        }
        if slot.index >= inner.target.load(Ordering::SeqCst) {
            break; // shrunk away
        }
        if inner.queue.is_empty() {
            inner.cv.wait(&mut g);
        }
    }
    CURRENT.with(|c| *c.borrow_mut() = None);
    // A retired slot leaves the table (a shutdown joins what is left).
    if !inner.stopping.load(Ordering::SeqCst) {
        let mut slots = inner.slots.lock();
        if let Some(i) = slots.iter().position(|(s, _)| Arc::ptr_eq(s, &slot)) {
            slots.remove(i);
        }
    }
}

/// Runs one attempt of `spec` on the calling command worker.
pub(crate) fn run_attempt(
    spec: &CommandSpec,
    ctx: &TaskContext,
) -> Result<CommandOutput, TaskError> {
    let here = CURRENT.with(|c| c.borrow().clone());
    let Some((inner, slot)) = here else {
        return Err(TaskError::failed(
            "a command task ran outside the command executor",
        ));
    };
    let started = Instant::now();
    let mut child = child::spawn(spec).map_err(|source| {
        TaskError::Failed(Box::new(SpawnFailed {
            program: match &spec.program {
                Program::Exec { program, .. } => program.to_string_lossy().into_owned(),
                Program::Shell(_) => spec.shell.display().to_string(),
            },
            source,
        }))
    })?;
    let pid = child.id();
    *slot.current.lock() = Some(Current {
        task: ctx.id(),
        attempt: ctx.attempt(),
        pid,
        stopped: false,
    });
    // A deadline or cancel that came before the child was registered.
    if ctx.is_cancelled() {
        inner.stop_child(&slot, ctx.id(), ctx.attempt());
    }
    let mut out = output::Sink::new(inner.spool_threshold, &inner.spool_dir, "out");
    let mut err = output::Sink::new(inner.spool_threshold, &inner.spool_dir, "err");
    let collected = child::collect(&mut child, &mut out, &mut err);
    if collected.is_err() {
        // Spooling failed (disk full): do not leave the child behind.
        child::kill_group(pid, libc::SIGKILL);
    }
    let waited = child::wait_exited(pid);
    let status = {
        let mut cur = slot.current.lock();
        if matches!(*cur, Some(c) if c.stopped) {
            // The leader is gone but a zombie: its group id is still ours.
            child::kill_group(pid, libc::SIGKILL);
        }
        *cur = None;
        child.wait()
    };
    let duration = started.elapsed();
    let io_err = |e: std::io::Error| TaskError::failed(format!("command {pid}: {e}"));
    collected.map_err(io_err)?;
    waited.map_err(io_err)?;
    let status = status.map_err(io_err)?;
    use std::os::unix::process::ExitStatusExt;
    let output = CommandOutput {
        code: status.code(),
        signal: status.signal(),
        stdout: out.finish(),
        stderr: err.finish(),
        duration,
        attempts: ctx.attempt(),
        pid,
    };
    if output.success() {
        Ok(output)
    } else {
        Err(TaskError::Failed(Box::new(CommandFailed(output))))
    }
}

impl Executor for CommandExecutor {
    fn kind(&self) -> ExecutorKind {
        KIND
    }

    fn accept(&self, task: Runnable) {
        self.inner.queue.push(task.priority(), task);
        let running = self.inner.slots.lock().len();
        if running < self.inner.target.load(Ordering::Relaxed) {
            self.inner.grow();
        }
        let _g = self.inner.wake.lock();
        self.inner.cv.notify_one();
    }

    fn stop_attempt(&self, task: TaskId, attempt: u32, _why: StopReason) {
        let slots: Vec<Arc<Slot>> = self
            .inner
            .slots
            .lock()
            .iter()
            .map(|(s, _)| s.clone())
            .collect();
        for s in &slots {
            self.inner.stop_child(s, task, attempt);
        }
    }

    fn drain(&self) -> Vec<Runnable> {
        std::iter::from_fn(|| self.inner.queue.pop()).collect()
    }

    fn stop(&self, deadline: Instant, mode: ShutdownMode) -> StopReport {
        {
            let _g = self.inner.wake.lock();
            self.inner.stopping.store(true, Ordering::SeqCst);
            self.inner.cv.notify_all();
        }
        if mode == ShutdownMode::Immediate {
            self.inner.kill_all();
        }
        let handles: Vec<Latched> = self
            .inner
            .slots
            .lock()
            .iter_mut()
            .filter_map(|(_, h)| h.take())
            .collect();
        let mut detached = 0;
        let mut extra = None;
        for h in handles {
            if !h.wait_until(deadline) {
                // Past the deadline: the children go (once), their workers
                // end.
                let by = *extra.get_or_insert_with(|| {
                    self.inner.kill_all();
                    Instant::now() + Duration::from_millis(500)
                });
                h.wait_until(by);
            }
            if !join_by(h, Instant::now()) {
                detached += 1;
            }
        }
        StopReport::detached(detached)
    }

    fn stats(&self) -> ExecutorStats {
        let mut row = ExecutorStats::new(KIND);
        row.queue_depth = self.inner.queue.depths();
        row.queued = row.queue_depth.iter().take(LEVELS).sum();
        let slots = self.inner.slots.lock();
        row.workers = slots.len();
        row.busy = self.inner.busy.load(Ordering::SeqCst);
        row.target = self.inner.target.load(Ordering::SeqCst);
        row.core = self.inner.core;
        row.max = self.inner.max;
        row.pids = slots
            .iter()
            .filter_map(|(s, _)| s.current.lock().map(|c| c.pid))
            .collect();
        row
    }

    fn resize(&self, target: usize) -> usize {
        let t = target.clamp(self.inner.core, self.inner.max);
        self.inner.target.store(t, Ordering::SeqCst);
        if !self.inner.queue.is_empty() {
            self.inner.grow();
        }
        let _g = self.inner.wake.lock();
        self.inner.cv.notify_all();
        t
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        self.inner
            .slots
            .lock()
            .iter()
            .map(|(s, _)| {
                let cur = *s.current.lock();
                let mut w = match cur {
                    Some(c) => WorkerInfo::process(c.pid, format!("command slot {}", s.index + 1)),
                    None => WorkerInfo::thread(0, format!("command slot {}", s.index + 1)),
                };
                w.tasks_done = s.done.load(Ordering::Relaxed);
                w.current_task = cur.map(|c| c.task);
                w
            })
            .collect()
    }
}
