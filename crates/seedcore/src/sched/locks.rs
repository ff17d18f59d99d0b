//! Named locks and concurrency limits, held by the scheduler.
//!
//! A task takes all of its locks at once or none (under one mutex), so two
//! tasks naming the same locks in different orders cannot deadlock. A task
//! that cannot take them parks here, off the worker, and is put back on its
//! queue when one of them is released; it then tries again in priority
//! order. No worker ever holds a lock, so a dead worker cannot leak one.

use crate::options::LockSpec;
use crate::task::{Acquire, Header, Job};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

struct LockState {
    permits: usize,
    held: usize,
    waiters: Vec<Arc<dyn Job>>,
}

pub(crate) struct LockTable {
    locks: Mutex<HashMap<Arc<str>, LockState>>,
}

impl LockTable {
    pub(crate) fn new() -> Self {
        LockTable {
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Checks that `specs` agree with the permit counts in use, and
    /// registers the names it has not seen, so that the first task to name
    /// a limit fixes its count from the moment it is accepted.
    pub(crate) fn check(&self, specs: &[LockSpec]) -> Result<(), String> {
        let mut map = self.locks.lock();
        for s in specs {
            if let Some(l) = map.get(&s.name) {
                if l.permits != s.permits {
                    return Err(conflict(s, l.permits));
                }
            }
        }
        for s in specs {
            map.entry(s.name.clone()).or_insert_with(|| LockState {
                permits: s.permits,
                held: 0,
                waiters: Vec::new(),
            });
        }
        Ok(())
    }

    /// Drops a resolved task from the waiters of its locks.
    pub(crate) fn forget(&self, h: &Header) {
        let id = h.id;
        let mut map = self.locks.lock();
        for s in h.opts().locks() {
            if let Some(l) = map.get_mut(&s.name) {
                l.waiters.retain(|w| w.header().id != id);
            }
        }
    }

    /// Takes every lock of `job`, or parks `job` on the first one that is
    /// not free.
    pub(crate) fn acquire(&self, job: &Arc<dyn Job>) -> Acquire {
        let specs = job.header().opts().locks();
        let mut map = self.locks.lock();
        for s in specs {
            let l = map.entry(s.name.clone()).or_insert_with(|| LockState {
                permits: s.permits,
                held: 0,
                waiters: Vec::new(),
            });
            if l.permits != s.permits {
                return Acquire::Conflict(conflict(s, l.permits));
            }
            if l.held >= l.permits {
                l.waiters.push(job.clone());
                return Acquire::Waiting(s.name.clone());
            }
        }
        for s in specs {
            map.get_mut(&s.name).expect("inserted above").held += 1;
        }
        Acquire::Taken
    }

    /// Releases `specs` and puts their waiters back on their queues.
    pub(crate) fn release(&self, specs: &[LockSpec]) {
        let mut woken = Vec::new();
        {
            let mut map = self.locks.lock();
            for s in specs {
                if let Some(l) = map.get_mut(&s.name) {
                    l.held = l.held.saturating_sub(1);
                    woken.append(&mut l.waiters);
                }
            }
        }
        for job in woken {
            if !job.is_resolved() {
                job.schedule();
            }
        }
    }

    /// Removes every waiter (immediate shutdown).
    pub(crate) fn drain_waiters(&self) -> Vec<Arc<dyn Job>> {
        let mut map = self.locks.lock();
        map.values_mut()
            .flat_map(|l| std::mem::take(&mut l.waiters))
            .collect()
    }
}

fn conflict(s: &LockSpec, permits: usize) -> String {
    format!(
        "limit `{}` is in use with {} permit(s); this task asks for {}",
        s.name, permits, s.permits
    )
}
