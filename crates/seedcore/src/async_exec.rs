//! The async executor: an internal tokio runtime, started on first use,
//! with a priority queue in front of it.
//!
//! Up to `max_async_tasks` attempts run at once; the rest wait in the
//! priority queue, so priorities order async work exactly when there is
//! more of it than the limit allows.

use crate::queue::PriorityQueue;
use crate::task::Job;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::runtime::{Handle, Runtime};

pub(crate) struct AsyncExec {
    queue: PriorityQueue<Arc<dyn Job>>,
    running: AtomicUsize,
    limit: usize,
    threads: usize,
    name: String,
    runtime: Mutex<Option<Runtime>>,
    handle: OnceLock<Option<Handle>>,
    stopped: AtomicBool,
}

impl AsyncExec {
    pub(crate) fn new(threads: usize, limit: usize, name: String) -> Self {
        AsyncExec {
            queue: PriorityQueue::new(),
            running: AtomicUsize::new(0),
            limit,
            threads,
            name,
            runtime: Mutex::new(None),
            handle: OnceLock::new(),
            stopped: AtomicBool::new(false),
        }
    }

    /// The runtime's handle, starting it on first use; `None` once stopped
    /// or if it could not start.
    pub(crate) fn handle(&self) -> Option<Handle> {
        if self.stopped.load(Ordering::Acquire) {
            return None;
        }
        self.handle
            .get_or_init(|| {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(self.threads)
                    .thread_name(format!("{}-async", self.name))
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => {
                        let h = rt.handle().clone();
                        *self.runtime.lock() = Some(rt);
                        Some(h)
                    }
                    Err(e) => {
                        log::error!("seedcore: could not start the async runtime: {e}");
                        None
                    }
                }
            })
            .clone()
    }

    pub(crate) fn push(&self, job: Arc<dyn Job>) {
        let p = job.header().opts.priority;
        self.queue.push(p, job);
        self.pump();
        if self.stopped.load(Ordering::SeqCst) {
            for job in self.drain() {
                job.fail(crate::TaskError::SystemShutdown);
            }
        }
    }

    /// Starts queued attempts while there are free slots.
    fn pump(&self) {
        while !self.stopped.load(Ordering::Acquire) {
            let n = self.running.load(Ordering::SeqCst);
            if n >= self.limit {
                return;
            }
            if self
                .running
                .compare_exchange(n, n + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue;
            }
            match self.queue.pop() {
                Some(job) => {
                    if !job.run(None) {
                        self.running.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                None => {
                    self.running.fetch_sub(1, Ordering::SeqCst);
                    if self.queue.is_empty() {
                        return;
                    }
                }
            }
        }
    }

    /// An attempt ended; its slot is free.
    pub(crate) fn slot_done(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.pump();
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.depths().iter().sum()
    }

    pub(crate) fn drain(&self) -> Vec<Arc<dyn Job>> {
        std::iter::from_fn(|| self.queue.pop()).collect()
    }

    /// Stops the runtime; attempts still running are dropped (each resolves
    /// through its attempt guard).
    pub(crate) fn stop(&self, timeout: Duration) {
        self.stopped.store(true, Ordering::SeqCst);
        for job in self.drain() {
            job.fail(crate::TaskError::SystemShutdown);
        }
        let Some(rt) = self.runtime.lock().take() else {
            return;
        };
        if Handle::try_current().is_ok() {
            // Blocking inside a runtime would panic; let it wind down alone.
            rt.shutdown_background();
        } else {
            rt.shutdown_timeout(timeout);
        }
    }
}
