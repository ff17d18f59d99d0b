//! The monitor: the machine (cores, memory, CPU load) and the workers of
//! every executor (CPU of each worker thread, CPU and resident memory of
//! each worker process), read through `sysinfo`.
//!
//! The balancer thread reads the machine every 250 ms ([`Monitor::load`],
//! two small files on Linux) and the worker processes' CPU while the
//! process pool runs ([`Monitor::workers_cpu`]). The per-worker listing
//! ([`ConcurrentSystem::monitor`](crate::ConcurrentSystem::monitor)) walks `/proc` and is taken only when
//! asked for.
//!
//! CPU percentages are computed here, from each process's (or thread's)
//! accumulated CPU time between two readings at least 100 ms apart; the
//! first reading of a worker shows 0. Worker threads are found by the OS
//! thread id each records when it starts (Linux; elsewhere, or where an
//! executor gives no id, they are listed without readings). A thread has
//! no memory of its own: threads show the process's
//! resident memory at the top of the snapshot, not per thread.

use crate::sched::WorkerInfo;
use crate::snapshot::LoadReading;
use crate::task::ExecutorKind;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// sysinfo's shortest interval between two CPU-load readings.
const CPU_EVERY: Duration = Duration::from_millis(200);
/// Shortest interval between two CPU-time readings of one worker.
const WORKER_CPU_EVERY: Duration = Duration::from_millis(100);

/// One worker of an executor (a thread or a worker process) as the monitor
/// sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct WorkerReading {
    /// The executor it works for.
    pub executor: ExecutorKind,
    /// The OS thread id (threads; 0 where the executor gives none) or
    /// process id (processes).
    pub id: u32,
    /// The thread's name, or the process's.
    pub name: String,
    /// The OS state: `running`, `sleeping`, `disk-sleep`, `zombie`, ...
    pub state: String,
    /// CPU use since the previous reading, in percent of one core.
    pub cpu_percent: f64,
    /// Resident memory in bytes (worker processes; `None` for threads,
    /// which share the process's memory).
    pub rss: Option<u64>,
    /// Tasks the worker has finished, where the executor reports it.
    pub tasks_done: Option<u64>,
    /// The task it runs now, where the executor reports it.
    pub current_task: Option<u64>,
    /// The machine of a worker elsewhere (a remote worker, whose `id` is
    /// its process id there: its CPU and memory are not read here);
    /// `None` for this machine's.
    pub host: Option<String>,
}

impl WorkerReading {
    /// A reading of worker `w` of `executor`, before the OS is asked.
    fn of(executor: ExecutorKind, w: &WorkerInfo) -> Self {
        WorkerReading {
            executor,
            id: w.id,
            name: w.name.clone(),
            state: String::new(),
            cpu_percent: 0.0,
            rss: None,
            tasks_done: Some(w.tasks_done),
            current_task: w.current_task.map(|id| id.as_u64()),
            host: w.host.clone(),
        }
    }
}

/// The machine and the workers at one moment, from
/// [`ConcurrentSystem::monitor`](crate::ConcurrentSystem::monitor).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct MonitorSnapshot {
    /// Physical cores (`None` where the OS does not say).
    pub physical_cores: Option<usize>,
    /// Logical cores (hardware threads).
    pub logical_cores: usize,
    /// Total memory in bytes.
    pub memory_total: u64,
    /// Memory available to new work, in bytes.
    pub memory_available: u64,
    /// Whole-machine CPU use, 0..=1 (`None` on the very first reading).
    pub cpu_load: Option<f64>,
    /// This process's id.
    pub pid: u32,
    /// This process's resident memory in bytes (worker threads included).
    pub rss: u64,
    /// This process's CPU use, in percent of one core.
    pub cpu_percent: f64,
    /// The workers of every executor, executor by executor in the order
    /// they were registered, each executor's by id.
    pub workers: Vec<WorkerReading>,
}

impl MonitorSnapshot {
    /// The workers of the executor of `kind`.
    ///
    /// ```
    /// use seedcore::{ConcurrentSystem, ExecutorKind};
    ///
    /// let system = ConcurrentSystem::builder().name("mon").core_threads(2).build()?;
    /// let snap = system.monitor();
    /// let threads: Vec<_> = snap.workers_of(ExecutorKind::Threads).collect();
    /// assert_eq!(threads.len(), 2);
    /// assert!(threads.iter().all(|w| w.name.starts_with("mon-")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn workers_of(&self, kind: ExecutorKind) -> impl Iterator<Item = &WorkerReading> + '_ {
        self.workers.iter().filter(move |w| w.executor == kind)
    }
}

struct Inner {
    sys: System,
    physical: Option<Option<usize>>,
    cpu_at: Option<Instant>,
    cpu_load: Option<f64>,
    /// Last CPU time per pid/tid: when, how much (ms), and the last percent.
    cpu_time: HashMap<u32, (Instant, u64, f64)>,
}

/// The system's sysinfo reader (one per system, behind a lock).
pub(crate) struct Monitor {
    inner: Mutex<Option<Inner>>,
}

impl Monitor {
    pub(crate) fn new() -> Self {
        Monitor {
            inner: Mutex::new(None),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.lock();
        let inner = g.get_or_insert_with(|| Inner {
            sys: System::new(),
            physical: None,
            cpu_at: None,
            cpu_load: None,
            cpu_time: HashMap::new(),
        });
        f(inner)
    }

    /// The machine's load, for the balancer; `None` until two CPU readings
    /// exist.
    pub(crate) fn load(&self) -> Option<LoadReading> {
        self.with(|m| {
            m.refresh_machine();
            let cpu = m.cpu_load?;
            Some(LoadReading::new(
                cpu,
                m.sys.cpus().len().max(1),
                m.sys.available_memory(),
                m.sys.total_memory(),
            ))
        })
    }

    /// CPU the worker processes `pids` use, in cores; `None` while none of
    /// them has two readings yet.
    pub(crate) fn workers_cpu(&self, pids: &[u32]) -> Option<f64> {
        if pids.is_empty() {
            return None;
        }
        self.with(|m| {
            let list: Vec<Pid> = pids.iter().map(|&p| Pid::from_u32(p)).collect();
            m.sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&list),
                true,
                ProcessRefreshKind::nothing().with_cpu(),
            );
            let now = Instant::now();
            let mut known = false;
            let mut total = 0.0;
            for pid in list {
                let Some(acc) = m.sys.process(pid).map(|p| p.accumulated_cpu_time()) else {
                    continue;
                };
                if let Some(pct) = m.cpu_percent(pid.as_u32(), acc, now) {
                    known = true;
                    total += pct / 100.0;
                }
            }
            known.then_some(total)
        })
    }

    /// A full snapshot: the machine, this process, and the workers of each
    /// executor in `executors` (threads and worker processes told apart by
    /// [`WorkerInfo::is_process`]).
    pub(crate) fn snapshot(
        &self,
        executors: &[(ExecutorKind, Vec<WorkerInfo>)],
    ) -> MonitorSnapshot {
        let pids: Vec<u32> = executors
            .iter()
            .flat_map(|(_, ws)| {
                ws.iter()
                    .filter(|w| w.is_process && w.host.is_none())
                    .map(|w| w.id)
            })
            .collect();
        self.with(|m| {
            m.refresh_machine();
            let physical = *m.physical.get_or_insert_with(System::physical_core_count);
            let own = Pid::from_u32(std::process::id());
            let kind = ProcessRefreshKind::nothing()
                .with_cpu()
                .with_memory()
                .with_tasks();
            let mut list: Vec<Pid> = vec![own];
            list.extend(pids.iter().map(|&p| Pid::from_u32(p)));
            let known_tids: Vec<Pid> = m
                .sys
                .process(own)
                .and_then(|p| p.tasks())
                .map(|t| t.iter().copied().collect())
                .unwrap_or_default();
            let had_tids = !known_tids.is_empty();
            list.extend(known_tids);
            m.sys
                .refresh_processes_specifics(ProcessesToUpdate::Some(&list), true, kind);
            if !had_tids {
                // First snapshot: the threads are known only now.
                let tids: Vec<Pid> = m
                    .sys
                    .process(own)
                    .and_then(|p| p.tasks())
                    .map(|t| t.iter().copied().collect())
                    .unwrap_or_default();
                m.sys
                    .refresh_processes_specifics(ProcessesToUpdate::Some(&tids), true, kind);
            }
            let now = Instant::now();
            let mut snap = MonitorSnapshot {
                physical_cores: physical,
                logical_cores: m.sys.cpus().len().max(1),
                memory_total: m.sys.total_memory(),
                memory_available: m.sys.available_memory(),
                cpu_load: m.cpu_load,
                pid: own.as_u32(),
                ..MonitorSnapshot::default()
            };
            let own_acc = m
                .sys
                .process(own)
                .map(|p| (p.memory(), p.accumulated_cpu_time()));
            if let Some((rss, acc)) = own_acc {
                snap.rss = rss;
                snap.cpu_percent = m.cpu_percent(own.as_u32(), acc, now).unwrap_or(0.0);
            }
            for (executor, workers) in executors {
                let mut readings = Vec::with_capacity(workers.len());
                for w in workers {
                    let mut r = WorkerReading::of(*executor, w);
                    if w.host.is_some() {
                        // Elsewhere: its pid means nothing in this /proc.
                        r.state = "remote".to_owned();
                    } else if w.is_process {
                        // A process gone between the listing and now is left out.
                        let Some(p) = m.sys.process(Pid::from_u32(w.id)) else {
                            continue;
                        };
                        let (state, acc, rss) =
                            (state_name(p.status()), p.accumulated_cpu_time(), p.memory());
                        r.name = p.name().to_string_lossy().into_owned();
                        r.state = state;
                        r.rss = Some(rss);
                        r.cpu_percent = m.cpu_percent(w.id, acc, now).unwrap_or(0.0);
                    } else if let Some(os) =
                        m.sys.process(Pid::from_u32(w.id)).filter(|_| w.id != 0)
                    {
                        r.state = state_name(os.status());
                        let acc = os.accumulated_cpu_time();
                        r.cpu_percent = m.cpu_percent(w.id, acc, now).unwrap_or(0.0);
                    }
                    readings.push(r);
                }
                readings.sort_by_key(|w| w.id);
                snap.workers.extend(readings);
            }
            // Forget the CPU times of threads and processes that are gone.
            let live: std::collections::HashSet<u32> = std::iter::once(own.as_u32())
                .chain(
                    snap.workers
                        .iter()
                        .filter(|w| w.host.is_none())
                        .map(|w| w.id),
                )
                .chain(pids.iter().copied())
                .collect();
            m.cpu_time.retain(|id, _| live.contains(id));
            snap
        })
    }
}

impl Inner {
    /// Refreshes memory, and the CPU load when sysinfo allows.
    fn refresh_machine(&mut self) {
        let now = Instant::now();
        let due = match self.cpu_at {
            Some(t) => now.saturating_duration_since(t) >= CPU_EVERY,
            None => true,
        };
        if due {
            let first = self.cpu_at.is_none();
            self.sys.refresh_cpu_usage();
            self.sys.refresh_memory();
            self.cpu_at = Some(now);
            if !first {
                self.cpu_load =
                    Some((f64::from(self.sys.global_cpu_usage()) / 100.0).clamp(0.0, 1.0));
            }
        }
    }

    /// CPU percent of `id` from its accumulated CPU time `acc_ms`.
    fn cpu_percent(&mut self, id: u32, acc_ms: u64, now: Instant) -> Option<f64> {
        match self.cpu_time.get(&id).copied() {
            Some((then, was, pct)) => {
                let wall = now.saturating_duration_since(then);
                if wall < WORKER_CPU_EVERY {
                    return (pct >= 0.0).then_some(pct);
                }
                let pct = acc_ms.saturating_sub(was) as f64 / wall.as_secs_f64() / 10.0;
                self.cpu_time.insert(id, (now, acc_ms, pct));
                Some(pct)
            }
            None => {
                self.cpu_time.insert(id, (now, acc_ms, -1.0));
                None
            }
        }
    }
}

fn state_name(s: sysinfo::ProcessStatus) -> String {
    use sysinfo::ProcessStatus as S;
    match s {
        S::Run => "running",
        S::Sleep => "sleeping",
        S::Idle => "idle",
        S::Stop => "stopped",
        S::Zombie => "zombie",
        S::Dead => "dead",
        S::UninterruptibleDiskSleep => "disk-sleep",
        S::Tracing => "tracing",
        S::Waking => "waking",
        S::Parked => "parked",
        _ => "unknown",
    }
    .to_owned()
}
