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
//!   three start failures with no hello between them, with no worker left,
//!   break the pool; an initializer that fails (or a program that never
//!   calls `seedcore::init()`) breaks it at once. Starts the OS refused are
//!   retried with back-off, and a hello mends a pool they broke.

use super::dispatch::{live_workers, Broken, PoolState, ProcessPool, Queued};
use super::handle::{Kill, Worker, STARTING};
use super::reap::monitor;
use super::status::StatusPage;
use super::worker::{FINI_ENV, INIT_ARGS_ENV, INIT_ENV, MAX_FRAME_ENV};
use super::{INDEX_ENV, STATUS_ENV, WORKER_ENV};
use crate::config::{ProcessPriority, WorkerOutput};
use crate::wire::frame::FrameReader;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The process pool's part of [`Config`](crate::Config).
#[derive(Debug, Clone)]
pub(crate) struct ProcessConfig {
    pub(crate) core: usize,
    pub(crate) max: usize,
    pub(crate) program: Option<PathBuf>,
    pub(crate) args: Vec<OsString>,
    /// `processes.gpu_devices`: the device of worker `n` is entry `n`
    /// modulo their count.
    pub(crate) gpu_devices: Vec<OsString>,
    pub(crate) prefetch: usize,
    pub(crate) concurrency: usize,
    pub(crate) max_tasks_per_worker: Option<u64>,
    pub(crate) max_memory: Option<u64>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) priority: ProcessPriority,
    pub(crate) init: Option<String>,
    /// The initializer's encoded arguments; unit when `None`.
    pub(crate) init_args: Option<Vec<u8>>,
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

    /// Starts one more worker (not while stopping or broken for good); a
    /// failure counts towards breaking the pool and is retried with
    /// back-off.
    pub(super) fn spawn_locked(&self, st: &mut PoolState) {
        if self.stopping.load(Ordering::Acquire) || st.broken.as_ref().is_some_and(|b| b.permanent)
        {
            return;
        }
        let index = st.next_index;
        st.next_index += 1;
        match self.spawn(index) {
            Ok(w) => st.workers.push(w),
            Err(e) => {
                let program = match &self.cfg.program {
                    Some(p) => p.display().to_string(),
                    None => "this program".to_owned(),
                };
                let why = format!("cannot start a worker process of {program}: {e}");
                log::error!("seedcore: worker process {index}: {why}");
                self.start_failed(st, why, false);
                self.respawn_later(st);
            }
        }
    }

    /// Counts a worker that failed to start. A `permanent` cause breaks the
    /// pool at once; otherwise the third failure in a row (with no hello
    /// between them) does, when no worker is left to run the queue. A
    /// broken pool resolves its queued tasks (at the next `pump`) and
    /// refuses new ones.
    pub(super) fn start_failed(&self, st: &mut PoolState, why: String, permanent: bool) {
        st.start_failures += 1;
        let breaks = permanent || (st.start_failures >= 3 && live_workers(&st.workers) == 0);
        if !breaks || st.broken.as_ref().is_some_and(|b| b.permanent) {
            return;
        }
        if st.broken.is_none() {
            log::error!("seedcore: the process pool cannot run tasks: {why}");
        }
        st.broken = Some(Broken {
            why: why.clone(),
            permanent,
        });
        let queued: Vec<Queued> = st.queue.drain().collect();
        st.doomed
            .extend(queued.into_iter().map(|q| (q, why.clone())));
    }

    /// Tries starting a worker again after a failed start, waiting longer
    /// after each failure in a row (50 ms doubling, at most 5 s).
    fn respawn_later(&self, st: &mut PoolState) {
        if st.respawn_scheduled {
            return;
        }
        let Some(timer) = self.timer.upgrade() else {
            return;
        };
        st.respawn_scheduled = true;
        let shift = st.start_failures.saturating_sub(1).min(7);
        let delay = (Duration::from_millis(50) * (1u32 << shift)).min(Duration::from_secs(5));
        let me = self.me.clone();
        timer.schedule(Instant::now() + delay, move || {
            let Some(pool) = me.upgrade() else { return };
            let mut st = pool.state.lock();
            st.respawn_scheduled = false;
            let live = live_workers(&st.workers);
            let wanted = pool
                .target
                .load(Ordering::Acquire)
                .max(pool.cfg.core)
                .max(1);
            if live < wanted {
                pool.spawn_locked(&mut st);
            }
            drop(st);
            pool.pump();
        });
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
        if !cfg.gpu_devices.is_empty() {
            cmd.env(
                "CUDA_VISIBLE_DEVICES",
                &cfg.gpu_devices[index % cfg.gpu_devices.len()],
            );
        }
        if let Some(h) = &cfg.init {
            cmd.env(INIT_ENV, h);
            if let Some(a) = &cfg.init_args {
                cmd.env(INIT_ARGS_ENV, hex::encode(a));
            }
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

/// The longest piece of a worker's output forwarded as one line: a longer
/// line (or output without newlines) goes out in pieces of this size, so
/// the parent holds at most this much of it whatever a task prints.
pub(super) const OUTPUT_CHUNK: usize = 8 * 1024;

/// How long an unfinished line waits for its newline before it is
/// forwarded as it is (a progress message, a prompt).
const PARTIAL_AFTER: Duration = Duration::from_millis(200);

/// Forwards a worker's output, a line at a time, with who wrote it.
fn forward_output(r: OwnedFd, w: Weak<Worker>, index: usize) {
    let emit = |piece: &[u8]| {
        let (pid, task) = match w.upgrade() {
            Some(w) => (w.pid, w.status.running().map(|(id, _)| id)),
            None => (0, None),
        };
        let text = String::from_utf8_lossy(piece);
        match task {
            Some(t) => eprintln!("[seedcore worker {index} pid {pid} task #{t}] {text}"),
            None => eprintln!("[seedcore worker {index} pid {pid}] {text}"),
        }
    };
    pieces(r, emit);
}

/// Reads `r` to its end, handing each line (without its newline) to
/// `emit`; a line longer than [`OUTPUT_CHUNK`] goes in pieces of that size,
/// and an unfinished line once it has waited [`PARTIAL_AFTER`].
fn pieces(r: OwnedFd, mut emit: impl FnMut(&[u8])) {
    let mut buf = vec![0u8; OUTPUT_CHUNK];
    let mut len = 0;
    loop {
        if len > 0 {
            // An unfinished line: wait a little for the rest of it.
            let mut fds = [rustix::event::PollFd::new(&r, rustix::event::PollFlags::IN)];
            let timeout = rustix::event::Timespec::try_from(PARTIAL_AFTER).ok();
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(0) => {
                    emit(&buf[..len]);
                    len = 0;
                    continue;
                }
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            }
        }
        let n = match rustix::io::read(&r, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        };
        len += n;
        // Every finished line goes out; the rest moves to the front.
        let mut start = 0;
        while let Some(nl) = buf[start..len].iter().position(|&b| b == b'\n') {
            emit(&buf[start..start + nl]);
            start += nl + 1;
        }
        buf.copy_within(start..len, 0);
        len -= start;
        if len == buf.len() {
            emit(&buf[..len]);
            len = 0;
        }
    }
    if len > 0 {
        emit(&buf[..len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn output_without_newlines_goes_out_in_bounded_pieces_while_the_writer_lives() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let reader = std::thread::spawn(move || pieces(r, |p| tx.send(p.to_vec()).unwrap()));
        let mut w = std::fs::File::from(w);
        // 100 KiB without a newline, then a line, then a prompt that stays
        // unfinished while the writer stays open.
        let junk = vec![b'x'; 100 << 10];
        w.write_all(&junk).unwrap();
        w.write_all(b"\nhello\nprogress 50%").unwrap();
        w.flush().unwrap();
        let mut got = Vec::new();
        while got.iter().map(Vec::len).sum::<usize>() < junk.len() {
            got.push(rx.recv_timeout(Duration::from_secs(10)).unwrap());
        }
        assert!(got.iter().all(|p| p.len() <= OUTPUT_CHUNK));
        assert_eq!(got.concat(), junk);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), b"hello");
        // Forwarded although no newline came and the writer is still open.
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            b"progress 50%"
        );
        drop(w);
        reader.join().unwrap();
        assert!(rx.recv().is_err(), "nothing more");
    }
}
