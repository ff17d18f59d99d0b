//! The end of a worker: its reader thread, the results it reports, its
//! retirement, its death and what is settled then, the stop of every
//! worker at shutdown, and the monitor that kills workers over the memory
//! limit and retires idle ones.
//!
//! # Death
//!
//! A worker is killed (its whole group, SIGKILL) when its running task
//! passes its deadline, is cancelled, or grows past the memory limit; it
//! may also crash by itself. Its reader then settles what it had: the task
//! it was running (from the status page) ends `TimedOut`, `MemoryLimit` or
//! `WorkerDied` as the cause says (or is retried, by its policy); tasks it
//! had been sent but had not started go back to the queue as they were; a
//! replacement starts if the pool is below its core size.
//!
//! When its stream ends, [`ProcessPool::bury`] takes these steps, in order:
//!
//! 1. Mark it DEAD under its `inflight` lock: from then on `send_batch`
//!    enters nothing more for it, so what is in `inflight` is final.
//! 2. Kill its group (it may still be alive, after a protocol breach) and
//!    reap it, so no zombie is left; read its exit code or signal.
//! 3. Read why it was killed, and from its status page the task it was
//!    running and the ones it finished.
//! 4. Settle every task it held: one it finished but whose result was lost
//!    ends `WorkerDied` (it is not run again unasked); one it never started
//!    is undone and queued again (or, while the pool stops, `Cancelled`);
//!    the one it was running ends as the cause of death says.
//! 5. Take it out of the pool; one that died before its hello counts as a
//!    start failure.
//! 6. Start a replacement if the pool is below its target (or core) size
//!    and neither broken nor stopping.
//! 7. Wake whoever waits on the pool (`stop_workers`) and pump the queue.
//!
//! # Invariants
//!
//! * Only a worker's reader thread buries it, once, after its stream ends.
//! * Each entry of a worker's `inflight` is taken out once: by `done` when
//!   its result comes, or by `bury` when it does not.
//! * `Exit` goes only to a READY worker that holds nothing, checked under
//!   the pool lock (`retire_locked`).

use super::dispatch::{PoolState, ProcessPool, Queued};
use super::handle::{InFlight, Kill, Worker, DEAD, READY, RETIRING, STARTING};
use super::proto::{FromWorker, ToWorkerRef};
use super::registry::Outcome;
use crate::error::{TaskError, TaskPanic};
use crate::wire::frame::{FrameError, FrameReader};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

impl ProcessPool {
    /// The reader thread of a worker: takes its frames until the stream ends
    /// (or breaks the protocol), then buries it.
    pub(super) fn read_loop(self: Arc<Self>, w: Arc<Worker>, mut reader: FrameReader) {
        let broke = loop {
            match reader.next() {
                Ok((payload, fds)) => match postcard::from_bytes::<FromWorker>(&payload) {
                    Ok(FromWorker::Hello { pid, tasks }) => {
                        if pid != w.pid {
                            break Some(format!("said hello as pid {pid}, started as {}", w.pid));
                        }
                        {
                            let mut st = self.state.lock();
                            st.start_failures = 0;
                            if st.broken.as_ref().is_some_and(|b| !b.permanent) {
                                log::info!(
                                    "seedcore: a worker process started: the pool runs tasks again"
                                );
                                st.broken = None;
                            }
                            st.known.get_or_insert_with(|| tasks.into_iter().collect());
                        }
                        w.state.store(READY, Ordering::Release);
                        self.changed.notify_all();
                        self.pump();
                        // A shrink asked for while it was starting passed
                        // it over: with nothing to do, it goes now.
                        self.trim();
                    }
                    Ok(FromWorker::Done { id, outcome }) => self.done(&w, id, outcome, fds),
                    Ok(FromWorker::StartFailed { why }) => {
                        // The worker exits next; its task-less death is
                        // then no news.
                        let mut st = self.state.lock();
                        self.start_failed(&mut st, why, true);
                        drop(st);
                        self.pump();
                    }
                    Err(e) => break Some(format!("undecodable message: {e}")),
                },
                Err(FrameError::Closed) => break None,
                // A worker that dies mid-write resets the connection: that
                // is its death, not a protocol breach.
                Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    break None
                }
                Err(FrameError::Io(e)) => break Some(format!("i/o error: {e}")),
                Err(FrameError::Malformed(m)) => break Some(m),
            }
        };
        if let Some(why) = &broke {
            log::error!(
                "seedcore: worker {} broke the protocol ({why}); killing it",
                w.index
            );
        }
        self.bury(&w);
    }

    /// The worker reported run `id`: settle its task, recycle or retire
    /// the worker if that is due, and refill it.
    fn done(&self, w: &Arc<Worker>, id: u64, outcome: Outcome, fds: Vec<OwnedFd>) {
        let Some(f) = w.inflight.lock().remove(&id) else {
            return;
        };
        let left = w.load.fetch_sub(1, Ordering::AcqRel) - 1;
        let n = w.done.fetch_add(1, Ordering::AcqRel) + 1;
        if !f.job.is_async() {
            // A worker runs its sync tasks one after another: this one began
            // when it arrived or when the one before it ended, if later.
            let now = crate::task::StatClock::now();
            let since = std::mem::replace(&mut *w.last_done.lock(), now).max(f.attempt.started);
            self.observe_task(now.saturating_duration_since(since).as_nanos() as u64);
        }
        let result = match outcome {
            Outcome::Ok(bytes) => Ok((bytes, fds)),
            Outcome::Panicked {
                message,
                location,
                backtrace,
            } => Err(TaskError::Panicked(
                TaskPanic::new(message)
                    .with_location(location)
                    .with_backtrace(backtrace),
            )),
            Outcome::Failed(m) => Err(TaskError::failed(m)),
            Outcome::Raised { message, payload } => {
                Err(TaskError::failed(super::Raised::new(message, payload)))
            }
            Outcome::BadArgs(m) => Err(TaskError::failed(format!(
                "the worker could not decode the arguments of `{}`: {m}",
                f.job.task_name()
            ))),
            Outcome::Unknown(name) => Err(TaskError::failed(format!(
                "the worker has no process task `{name}`"
            ))),
            Outcome::Cancelled => Err(TaskError::Cancelled),
            Outcome::Boxed(len) => {
                let mut fds = fds;
                match fds.pop() {
                    Some(fd) => crate::wire::shm::import_bytes(fd, len)
                        .map(|b| (b.to_vec(), fds))
                        .map_err(TaskError::failed),
                    None => Err(TaskError::failed(
                        "the worker sent a result in shared memory without its descriptor",
                    )),
                }
            }
        };
        let was_async = f.job.is_async();
        // Recycle before the result is out, so that no task submitted in
        // reaction to it can reach this worker.
        let recycle = self
            .cfg
            .max_tasks_per_worker
            .is_some_and(|max| n as u64 >= max);
        if left == 0 {
            *w.idle_since.lock() = Instant::now();
            if recycle {
                // Nothing new can have been sent: it takes no more tasks.
                self.retire(w);
            }
        }
        if matches!(&result, Err(TaskError::Cancelled)) {
            // Dropped from the worker's queue before it started.
            f.job.clone().unstart(f.attempt);
        } else {
            f.job.finish_process(f.attempt, result);
        }
        if left == 0 && !recycle {
            self.trim();
        }
        // Refill a worker in batches (one write for several tasks) rather
        // than one task per result; an idle or half-empty worker is
        // refilled at once.
        let cap = if was_async {
            self.cfg.concurrency
        } else {
            self.sync_cap()
        };
        if left * 2 <= cap {
            self.pump();
        }
    }

    /// Asks an idle worker to exit; its reader starts a replacement.
    ///
    /// The check that it holds nothing and the switch out of READY happen
    /// under the pool lock, where `pump` reserves slots: a task picked for
    /// it can never arrive behind its `Exit`.
    pub(super) fn retire(&self, w: &Arc<Worker>) -> bool {
        let st = self.state.lock();
        let retired = self.retire_locked(&st, w);
        drop(st);
        retired
    }

    fn retire_locked(&self, _held: &PoolState, w: &Arc<Worker>) -> bool {
        if w.load.load(Ordering::Acquire) != 0
            || w.state
                .compare_exchange(READY, RETIRING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return false;
        }
        w.send_msg(&ToWorkerRef::Exit);
        true
    }

    /// The worker's stream ended: reap it, settle what it held, replace it.
    fn bury(&self, w: &Arc<Worker>) {
        let was = {
            let _inflight = w.inflight.lock();
            w.state.swap(DEAD, Ordering::AcqRel)
        };
        // Make sure it is gone, then reap it: no zombie is left.
        if let Some(pid) = rustix::process::Pid::from_raw(w.pid as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let status = w.child.lock().take().and_then(|mut c| c.wait().ok());
        let killed = *w.killed.lock();
        let (code, signal) = status.map_or((None, None), |s| (s.code(), s.signal()));
        let running = w.status.running().map(|(id, _)| id);
        let finished = w.status.finished();
        let held: Vec<(u64, InFlight)> = w.inflight.lock().drain().collect();
        w.load.store(0, Ordering::Release);
        let stopping = self.stopping.load(Ordering::Acquire);
        for (id, f) in held {
            if finished.contains(&id) {
                // It ran to the end, but its result died with the worker.
                // Running it again could repeat its effects: it is reported
                // as a crash (which a CRASH retry policy may re-run).
                let task = f.job.header().id;
                f.job.finish_process(
                    f.attempt,
                    Err(TaskError::WorkerDied {
                        exit_code: code,
                        signal,
                        pid: Some(w.pid),
                        task: Some(task),
                        detail: format!(
                            "worker {} (pid {}) died after the task finished, before it reported the result",
                            w.index, w.pid
                        ),
                    }),
                );
                continue;
            }
            let ran = f.job.is_async() || running == Some(id);
            if !ran {
                if stopping {
                    // Sent ahead but never started, and the pool is going
                    // away: it will not run (resolved first, so that the
                    // undo below does not queue it again).
                    f.job.fail(TaskError::Cancelled);
                    f.job.clone().unstart(f.attempt);
                } else {
                    f.job.clone().unstart(f.attempt);
                }
                continue;
            }
            let err = match killed {
                Some(Kill::Memory { rss }) => TaskError::MemoryLimit {
                    limit: self.cfg.max_memory.unwrap_or(0),
                    rss,
                },
                Some(Kill::Shutdown) => TaskError::Cancelled,
                // Ended (and resolved) by whoever killed it.
                Some(Kill::Timeout | Kill::Cancel) => TaskError::Cancelled,
                Some(Kill::StartTimeout) | None => TaskError::WorkerDied {
                    exit_code: code,
                    signal,
                    pid: Some(w.pid),
                    task: Some(f.job.header().id),
                    detail: format!("worker {} (pid {}) died", w.index, w.pid),
                },
            };
            f.job.finish_process(f.attempt, Err(err));
        }
        let mut st = self.state.lock();
        st.workers.retain(|x| !Arc::ptr_eq(x, w));
        if was == STARTING && killed != Some(Kill::Shutdown) {
            let why = match killed {
                Some(Kill::StartTimeout) => format!(
                    "worker {} did not start within {} (does the program call seedcore::init() first thing in main?)",
                    w.index,
                    crate::error::human_duration(self.cfg.start_timeout)
                ),
                _ => format!(
                    "worker {} (pid {}) exited before it was ready ({})",
                    w.index,
                    w.pid,
                    match (code, signal) {
                        (_, Some(s)) => format!("killed by {}", crate::error::signal_name(s)),
                        (Some(c), None) => format!("exit code {c}"),
                        (None, None) => "no exit status".to_owned(),
                    }
                ),
            };
            log::error!("seedcore: {why}");
            let permanent = st.start_failures >= 2;
            self.start_failed(&mut st, why, permanent);
        }
        let live = st
            .workers
            .iter()
            .filter(|x| x.state.load(Ordering::Acquire) != DEAD)
            .count();
        let wanted = self.target.load(Ordering::Acquire).max(self.cfg.core);
        if live < wanted && st.broken.is_none() && !self.stopping.load(Ordering::Acquire) {
            self.spawn_locked(&mut st);
        }
        drop(st);
        self.changed.notify_all();
        self.pump();
    }

    /// Stops every worker: queued tasks resolve `SystemShutdown`; with
    /// `immediate`, every worker is killed at once (its running task
    /// resolves `Cancelled`); otherwise idle workers are asked to exit as
    /// they become idle and whatever is left at `deadline` is killed. Waits
    /// for every reader and reaps every process.
    pub(super) fn stop_workers(&self, deadline: Instant, immediate: bool) {
        let queued = {
            let mut st = self.state.lock();
            self.stopping.store(true, Ordering::Release);
            st.queue.drain().collect::<Vec<Queued>>()
        };
        for q in queued {
            q.fail(TaskError::SystemShutdown);
        }
        let mut st = self.state.lock();
        let mut killed: Option<Instant> = None;
        while !st.workers.is_empty() {
            let now = Instant::now();
            if (immediate || now >= deadline) && killed.is_none() {
                for w in &st.workers {
                    w.kill(Kill::Shutdown);
                }
                killed = Some(now);
            }
            if killed.is_none() {
                // Workers that are (or just became) idle exit now.
                for w in st.workers.clone() {
                    self.retire_locked(&st, &w);
                }
            }
            // Short waits: a worker that becomes ready or idle without a
            // notification is still seen promptly.
            let _ = self.changed.wait_until(
                &mut st,
                deadline.max(now).min(now + Duration::from_millis(20)),
            );
            if killed.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
                log::error!("seedcore: worker processes did not go away after SIGKILL");
                break;
            }
        }
        drop(st);
        if let Some(h) = self.monitor.lock().take() {
            let _ = h.join();
        }
        let me = std::thread::current().id();
        for h in std::mem::take(&mut *self.threads.lock()) {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}

/// Samples worker memory and retires idle workers, while the pool lives.
pub(super) fn monitor(pool: Weak<ProcessPool>) {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
    let mut sys = System::new();
    loop {
        let Some(p) = pool.upgrade() else { return };
        if p.stopping.load(Ordering::Acquire) {
            return;
        }
        let workers: Vec<Arc<Worker>> = p.state.lock().workers.clone();
        if let Some(limit) = p.cfg.max_memory {
            let busy: Vec<Pid> = workers
                .iter()
                .filter(|w| w.load.load(Ordering::Acquire) > 0)
                .map(|w| Pid::from_u32(w.pid))
                .collect();
            if !busy.is_empty() {
                sys.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&busy),
                    true,
                    ProcessRefreshKind::nothing().with_memory(),
                );
                for w in &workers {
                    if let Some(pr) = sys.process(Pid::from_u32(w.pid)) {
                        if pr.memory() > limit && w.state.load(Ordering::Acquire) != DEAD {
                            w.kill(Kill::Memory { rss: pr.memory() });
                        }
                    }
                }
            }
        }
        if let Some(idle) = p.cfg.idle_timeout {
            let live = workers
                .iter()
                .filter(|w| w.state.load(Ordering::Acquire) == READY)
                .count();
            let mut spare = live.saturating_sub(p.cfg.core);
            for w in &workers {
                if spare == 0 {
                    break;
                }
                if w.load.load(Ordering::Acquire) == 0 && w.idle_since.lock().elapsed() >= idle {
                    p.retire(w);
                    spare -= 1;
                }
            }
        }
        drop(p);
        std::thread::sleep(Duration::from_millis(20));
    }
}
