//! A shutdown that runs on its own thread: [`ShutdownHandle`].

use super::ShutdownReport;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A shutdown under way on its own thread (see
/// [`ConcurrentSystem::shutdown_background`](crate::ConcurrentSystem::shutdown_background)).
///
/// Dropping the handle lets the shutdown finish unwatched.
#[derive(Debug)]
pub struct ShutdownHandle {
    done: Arc<(Mutex<Option<ShutdownReport>>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ShutdownHandle {
    pub(crate) fn start<F>(name: String, run: F) -> ShutdownHandle
    where
        F: FnOnce() -> ShutdownReport + Send + 'static,
    {
        type Run = Box<dyn FnOnce() -> ShutdownReport + Send>;
        let done: Arc<(Mutex<Option<ShutdownReport>>, Condvar)> = Arc::default();
        let run: Arc<Mutex<Option<Run>>> = Arc::new(Mutex::new(Some(Box::new(run))));
        let finish = {
            let done = done.clone();
            move |run: &Mutex<Option<Run>>| {
                let Some(run) = run.lock().take() else { return };
                let report = run();
                *done.0.lock() = Some(report);
                done.1.notify_all();
            }
        };
        let (r, f) = (run.clone(), finish.clone());
        let thread = match std::thread::Builder::new().name(name).spawn(move || f(&r)) {
            Ok(h) => Some(h),
            Err(e) => {
                // No thread: shut down here, so that the handle still ends.
                log::error!("seedcore: could not start the shutdown thread: {e}");
                finish(&run);
                None
            }
        };
        ShutdownHandle {
            done,
            thread: Mutex::new(thread),
        }
    }

    /// Whether the shutdown has ended.
    pub fn is_done(&self) -> bool {
        self.done.0.lock().is_some()
    }

    /// The report, once the shutdown has ended.
    pub fn report(&self) -> Option<ShutdownReport> {
        self.done.0.lock().clone()
    }

    /// Blocks until the shutdown ends; returns its report.
    pub fn wait(self) -> ShutdownReport {
        let h = self.thread.lock().take();
        if let Some(h) = h {
            let _ = h.join();
        }
        let mut g = self.done.0.lock();
        loop {
            if let Some(r) = g.clone() {
                return r;
            }
            self.done.1.wait(&mut g);
        }
    }

    /// Blocks until the shutdown ends or `timeout` passes; `None` if it
    /// still runs then.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ShutdownReport> {
        let deadline = Instant::now() + timeout;
        let mut g = self.done.0.lock();
        while g.is_none() {
            if self.done.1.wait_until(&mut g, deadline).timed_out() {
                break;
            }
        }
        g.clone()
    }
}
