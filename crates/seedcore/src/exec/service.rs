//! Service threads: long-lived tasks, one dedicated thread each, outside
//! the pools' capacity.
//!
//! A service's future resolves when its code returns. A shutdown first
//! sets every service's cancellation token ([`Executor::close`]), does not
//! wait for services in its graceful part ([`Executor::lingering`]), then
//! joins their threads up to its deadline; a service still running then is
//! detached and resolves [`TaskError::SystemShutdown`].

use crate::error::TaskError;
use crate::sched::ShutdownMode;
use crate::sched::{join_by, spawn_latched, Latched};
use crate::sched::{Executor, ExecutorStats, Runnable, StopReport, WorkerInfo};
use crate::task::{ExecutorKind, Job};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A service task and the thread that runs it.
type Service = (Arc<dyn Job>, Latched);

/// The service executor of one system.
pub(crate) struct ServiceExec {
    name: String,
    services: Mutex<Vec<Service>>,
    closed: AtomicBool,
}

impl ServiceExec {
    pub(crate) fn new(name: String) -> Self {
        ServiceExec {
            name,
            services: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }
}

impl Executor for ServiceExec {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Services
    }

    fn accept(&self, task: Runnable) {
        let job = task.job().clone();
        let name = task.name().unwrap_or("service").to_owned();
        let spawned = spawn_latched(
            std::thread::Builder::new().name(format!("{}-service-{name}", self.name)),
            move || task.run(),
        );
        match spawned {
            Ok(h) => {
                self.services.lock().push((job.clone(), h));
                if self.closed.load(Ordering::SeqCst) {
                    // Lost a race with shutdown: tell the service to stop.
                    job.header().cancel_all_attempts();
                }
            }
            Err(e) => {
                job.fail(TaskError::failed(format!(
                    "the OS refused to start the service thread: {e}"
                )));
            }
        }
    }

    fn drain(&self) -> Vec<Runnable> {
        Vec::new()
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for (job, _) in self.services.lock().iter() {
            job.header().cancel_all_attempts();
        }
    }

    fn lingering(&self) -> usize {
        let me = std::thread::current().id();
        self.services
            .lock()
            .iter()
            .filter(|(j, h)| !j.is_resolved() && h.thread().id() != me)
            .count()
    }

    fn stop(&self, deadline: Instant, _mode: ShutdownMode) -> StopReport {
        let services = std::mem::take(&mut *self.services.lock());
        let mut detached = 0;
        for (job, h) in services {
            if !join_by(h, deadline) {
                detached += 1;
                job.fail(TaskError::SystemShutdown);
            }
        }
        StopReport::detached(detached)
    }

    fn stats(&self) -> ExecutorStats {
        let mut row = ExecutorStats::new(ExecutorKind::Services);
        let services = self.services.lock();
        row.workers = services.iter().filter(|(_, h)| !h.is_finished()).count();
        row.busy = row.workers;
        row.target = row.workers;
        row
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        self.services
            .lock()
            .iter()
            .filter(|(_, h)| !h.is_finished())
            .map(|(j, h)| {
                let mut w = WorkerInfo::thread(0, h.thread().name().unwrap_or_default());
                w.current_task = Some(j.header().id);
                w
            })
            .collect()
    }
}
