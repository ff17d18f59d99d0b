//! Starting worker processes: the pool's process settings, the fork and
//! exec with the worker's descriptors and niceness, the start timeout, and
//! the forwarding of a worker's output.
//!
//! # Invariants
//!
//! * The child gets its socket at descriptor 3 and its status page at 4
//!   (`WORKER_ENV`, `STATUS_ENV` say so); the copies made on the way there
//!   are closed before exec.
//! * A worker is in the pool's list from the moment it is started; its
//!   reader thread is the only one that removes it (`reap.rs`).
//! * A worker that has not said hello within `start_timeout` is killed;
//!   three start failures with no hello between them break the pool.

use super::dispatch::{PoolState, ProcessPool, Queued};
use super::handle::{Kill, Worker, STARTING};
use super::reap::monitor;
use super::status::StatusPage;
use super::worker::{FINI_ENV, INIT_ENV, MAX_FRAME_ENV};
use super::{INDEX_ENV, STATUS_ENV, WORKER_ENV};
use crate::error::TaskError;
use crate::wire::frame::FrameReader;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// OS scheduling priority of worker processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessPriority {
    /// Runs only when nothing else wants the CPU (nice 19).
    Idle,
    /// nice 10.
    BelowNormal,
    /// The parent's priority (nice 0).
    #[default]
    Normal,
    /// nice -5 (needs privileges on most systems).
    AboveNormal,
    /// nice -10 (needs privileges on most systems).
    High,
    /// Real-time FIFO scheduling, where the OS allows it.
    Realtime,
}

/// Where worker processes' stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerOutput {
    /// Line by line to this process's stderr, each line prefixed with the
    /// worker's index and pid and the task it was running.
    #[default]
    Forward,
    /// Straight to this process's stdout and stderr.
    Inherit,
    /// Dropped.
    Discard,
}

/// The process pool's part of [`Config`](crate::Config).
#[derive(Debug, Clone)]
pub(crate) struct ProcessConfig {
    pub(crate) core: usize,
    pub(crate) max: usize,
    pub(crate) program: Option<PathBuf>,
    pub(crate) args: Vec<OsString>,
    pub(crate) prefetch: usize,
    pub(crate) concurrency: usize,
    pub(crate) max_tasks_per_worker: Option<u64>,
    pub(crate) max_memory: Option<u64>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) priority: ProcessPriority,
    pub(crate) init: Option<String>,
    pub(crate) fini: Option<String>,
    pub(crate) max_frame: usize,
    pub(crate) output: WorkerOutput,
    pub(crate) start_timeout: Duration,
    pub(crate) name: String,
}

impl ProcessPool {
    /// Starts the core workers (first use).
    pub(super) fn ensure_started(&self, st: &mut PoolState) {
        if st.started {
            return;
        }
        st.started = true;
        self.target.fetch_max(self.cfg.core, Ordering::AcqRel);
        for _ in 0..self.target.load(Ordering::Acquire) {
            self.spawn_locked(st);
        }
        if self.cfg.max_memory.is_some() || self.cfg.idle_timeout.is_some() {
            let me = self.me.clone();
            let h = std::thread::Builder::new()
                .name(format!("{}-procmon", self.cfg.name))
                .spawn(move || monitor(me));
            match h {
                Ok(h) => *self.monitor.lock() = Some(h),
                Err(e) => log::error!("seedcore: cannot start the process monitor: {e}"),
            }
        }
    }

    /// Starts one more worker (not while stopping); a failure counts
    /// towards breaking the pool.
    pub(super) fn spawn_locked(&self, st: &mut PoolState) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let index = st.next_index;
        st.next_index += 1;
        match self.spawn(index) {
            Ok(w) => st.workers.push(w),
            Err(e) => {
                log::error!("seedcore: cannot start worker process {index}: {e}");
                self.start_failed(st, format!("cannot start a worker process: {e}"));
            }
        }
    }

    /// Counts a worker that failed to start; the third in a row (with no
    /// hello between them) breaks the pool: queued and later tasks fail.
    pub(super) fn start_failed(&self, st: &mut PoolState, why: String) {
        st.start_failures += 1;
        if st.start_failures >= 3 && st.broken.is_none() {
            log::error!(
                "seedcore: worker processes keep failing to start; failing process tasks: {why}"
            );
            st.broken = Some(why.clone());
            let queued: Vec<Queued> = st.queue.drain().collect();
            for q in queued {
                q.item.fail(TaskError::WorkerDied {
                    exit_code: None,
                    signal: None,
                    detail: why.clone(),
                });
            }
        }
    }

    /// Starts worker `index`: its socket at descriptor 3, its status page
    /// at 4, in its own process group at the configured niceness; then its
    /// output thread, its reader thread and its start timeout.
    fn spawn(&self, index: usize) -> std::io::Result<Arc<Worker>> {
        let cfg = &self.cfg;
        let program = match &cfg.program {
            Some(p) => p.clone(),
            None => std::env::current_exe()?,
        };
        let (parent, child_sock) = UnixStream::pair()?;
        let status = StatusPage::create()?;
        let mut cmd = Command::new(&program);
        cmd.args(&cfg.args)
            .env(WORKER_ENV, "3")
            .env(STATUS_ENV, "4")
            .env(INDEX_ENV, index.to_string())
            .env(MAX_FRAME_ENV, cfg.max_frame.to_string())
            .stdin(Stdio::null())
            .process_group(0);
        if let Some(h) = &cfg.init {
            cmd.env(INIT_ENV, h);
        }
        if let Some(h) = &cfg.fini {
            cmd.env(FINI_ENV, h);
        }
        let out_read = match cfg.output {
            WorkerOutput::Inherit => None,
            WorkerOutput::Discard => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
                None
            }
            WorkerOutput::Forward => {
                let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
                cmd.stdout(Stdio::from(w.try_clone()?))
                    .stderr(Stdio::from(w));
                Some(r)
            }
        };
        let sock_fd = child_sock.as_raw_fd();
        let status_fd = status.fd().as_raw_fd();
        let nice = match cfg.priority {
            ProcessPriority::Idle => Some(19),
            ProcessPriority::BelowNormal => Some(10),
            ProcessPriority::Normal => None,
            ProcessPriority::AboveNormal => Some(-5),
            ProcessPriority::High => Some(-10),
            ProcessPriority::Realtime => None,
        };
        let realtime = cfg.priority == ProcessPriority::Realtime;
        // SAFETY: the closure runs in the child between fork and exec and
        // calls only async-signal-safe functions (fcntl, dup2, close,
        // setpriority, sched_setscheduler) on descriptors that are open in
        // the parent and so in the child.
        unsafe {
            cmd.pre_exec(move || {
                // Move both descriptors out of the way first, so that the
                // dup2 to 3 cannot clobber the status page (or the reverse).
                let a = libc::fcntl(sock_fd, libc::F_DUPFD, 10);
                let b = libc::fcntl(status_fd, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(a);
                libc::close(b);
                if let Some(n) = nice {
                    if libc::setpriority(libc::PRIO_PROCESS, 0, n) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if realtime {
                    let p = libc::sched_param { sched_priority: 1 };
                    if libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(child_sock);
        let w = Arc::new(Worker {
            index,
            pid: child.id(),
            tx: Mutex::new(parent.try_clone()?),
            status,
            state: AtomicU8::new(STARTING),
            load: AtomicUsize::new(0),
            holds_async: AtomicBool::new(false),
            inflight: Mutex::new(HashMap::new()),
            killed: Mutex::new(None),
            child: Mutex::new(Some(child)),
            idle_since: Mutex::new(Instant::now()),
            last_done: Mutex::new(crate::task::StatClock::now()),
            done: AtomicUsize::new(0),
            sent: AtomicUsize::new(0),
        });
        if let Some(r) = out_read {
            let (wk, name) = (Arc::downgrade(&w), cfg.name.clone());
            let h = std::thread::Builder::new()
                .name(format!("{name}-out-{index}"))
                .spawn(move || forward_output(r, wk, index))?;
            self.threads.lock().push(h);
        }
        let reader = FrameReader::new(parent, cfg.max_frame);
        let (pool, wr) = (self.arc(), w.clone());
        let h = std::thread::Builder::new()
            .name(format!("{}-proc-{index}", cfg.name))
            .spawn(move || pool.read_loop(wr, reader))?;
        self.threads.lock().push(h);
        if let Some(timer) = self.timer.upgrade() {
            let wk = Arc::downgrade(&w);
            timer.schedule(Instant::now() + cfg.start_timeout, move || {
                if let Some(w) = wk.upgrade() {
                    if w.state.load(Ordering::Acquire) == STARTING {
                        w.kill(Kill::StartTimeout);
                    }
                }
            });
        }
        Ok(w)
    }
}

/// Forwards a worker's output, a line at a time, with who wrote it.
fn forward_output(r: OwnedFd, w: Weak<Worker>, index: usize) {
    let reader = BufReader::new(std::fs::File::from(r));
    for line in reader.split(b'\n') {
        let Ok(line) = line else { break };
        let (pid, task) = match w.upgrade() {
            Some(w) => (w.pid, w.status.running().map(|(id, _)| id)),
            None => (0, None),
        };
        let text = String::from_utf8_lossy(&line);
        match task {
            Some(t) => eprintln!("[seedcore worker {index} pid {pid} task #{t}] {text}"),
            None => eprintln!("[seedcore worker {index} pid {pid}] {text}"),
        }
    }
}
