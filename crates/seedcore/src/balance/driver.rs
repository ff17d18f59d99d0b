//! The balancer's thread (sample, decide, resize), its part of the
//! system's state (events, counters, floors, the monitor), the global task
//! limit's check. It reads the system through [`Balanced`], a narrow view.

use super::decide::{BalanceSettings, Balancer, PoolReading, Readings};
use super::{BalanceEvent, EventKind, ExpandPolicy, QueueFull, ShrinkPolicy};
use crate::config::Config;
use crate::error::SubmitError;
use crate::sched::Scheduler;
use crate::snapshot::LoadReading;
use crate::task::ExecutorKind;
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The last events kept for [`Stats::balance_events`](crate::Stats::balance_events).
const EVENTS_KEPT: usize = 64;
/// How often the balancer thread reads the machine's load and the worker
/// processes' CPU (sysinfo needs 200 ms between CPU readings).
const LOAD_EVERY: Duration = Duration::from_millis(250);

/// What the balancer reads of a system, and nothing more: the system
/// implements it, so that the balancer imports nothing above itself.
pub(crate) trait Balanced: Send + Sync + 'static {
    /// The configuration the system runs with.
    fn config(&self) -> &Config;
    /// The scheduler: its executors and counters.
    fn sched(&self) -> &Scheduler;
    /// The balancer's own part of the system.
    fn balance(&self) -> &BalanceState;
}

/// Stop flag of the balancer thread, shared with it.
#[derive(Default)]
struct Control {
    stop: Mutex<bool>,
    wake: Condvar,
}

/// The balancer's part of the system: its thread, its events and counters,
/// the floors set by manual resizes, and the monitor.
pub(crate) struct BalanceState {
    started: Instant,
    control: Arc<Control>,
    thread: Mutex<Option<JoinHandle<()>>>,
    events: Mutex<VecDeque<BalanceEvent>>,
    expansions: AtomicU64,
    shrinks: AtomicU64,
    rejected: AtomicU64,
    /// Sizes set by hand, per executor (none: its core).
    floors: Mutex<HashMap<ExecutorKind, usize>>,
    pub(crate) monitor: crate::observe::monitor::Monitor,
}

impl BalanceState {
    pub(crate) fn new() -> Self {
        BalanceState {
            started: Instant::now(),
            control: Arc::new(Control::default()),
            thread: Mutex::new(None),
            events: Mutex::new(VecDeque::with_capacity(EVENTS_KEPT)),
            expansions: AtomicU64::new(0),
            shrinks: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            floors: Mutex::new(HashMap::new()),
            monitor: crate::observe::monitor::Monitor::new(),
        }
    }

    /// When the system was built.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Starts the balancer thread, if an executor can change size and it
    /// is not running yet (also called when an executor is added).
    pub(crate) fn start<V: Balanced>(shared: &Arc<V>) -> std::io::Result<()> {
        let mut thread = shared.balance().thread.lock();
        if thread.is_some() || *shared.balance().control.stop.lock() {
            return Ok(());
        }
        let c = shared.config();
        let policies = c.balance.expand != ExpandPolicy::NoExpand
            || c.balance.shrink != ShrinkPolicy::NoShrink;
        let resizable = shared
            .sched()
            .executors()
            .any(|(_, e)| e.stats().resizable());
        if !policies || !resizable {
            return Ok(());
        }
        let balancer = Balancer::new(BalanceSettings::from_config(c), shared.balance().started);
        let (weak, control, interval) = (
            Arc::downgrade(shared),
            shared.balance().control.clone(),
            c.balance.interval,
        );
        let h = std::thread::Builder::new()
            .name(format!("{}-balance", c.name))
            .spawn(move || run(weak, control, balancer, interval))?;
        *thread = Some(h);
        Ok(())
    }

    /// Stops the balancer thread and waits for it (shutdown, step 0).
    pub(crate) fn stop(&self) {
        *self.control.stop.lock() = true;
        self.control.wake.notify_all();
        if let Some(h) = self.thread.lock().take() {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }

    /// A manual resize of the executor of `kind` to `n`: the balancer's
    /// floor from now on.
    pub(crate) fn set_floor(&self, kind: ExecutorKind, n: usize) {
        self.floors.lock().insert(kind, n);
    }

    fn floor(&self, kind: ExecutorKind) -> usize {
        self.floors.lock().get(&kind).copied().unwrap_or(0)
    }

    fn record(&self, events: Vec<BalanceEvent>) {
        if events.is_empty() {
            return;
        }
        let mut kept = self.events.lock();
        for e in events {
            match e.kind {
                EventKind::Expand => self.expansions.fetch_add(1, Ordering::Relaxed),
                EventKind::Shrink => self.shrinks.fetch_add(1, Ordering::Relaxed),
                EventKind::Hold => 0,
            };
            log::debug!(
                "seedcore: balancer: {} {} {} -> {} ({})",
                e.executor,
                e.kind,
                e.from,
                e.to,
                e.reason
            );
            if kept.len() == EVENTS_KEPT {
                kept.pop_front();
            }
            kept.push_back(e);
        }
    }

    /// Adds the balancer's counters and events to a stats snapshot.
    pub(crate) fn fill_stats(&self, st: &mut crate::Stats) {
        st.expansions = self.expansions.load(Ordering::Relaxed);
        st.shrinks = self.shrinks.load(Ordering::Relaxed);
        st.queue_full_rejections = self.rejected.load(Ordering::Relaxed);
        st.balance_events = self.events.lock().iter().cloned().collect();
    }
}

/// The global task limit's check, on the submit path: called only when
/// `max_pending_tasks` is set.
pub(crate) fn admit(shared: &dyn Balanced, limit: u64) -> Result<(), SubmitError> {
    if shared.sched().stats.pending() < limit {
        return Ok(());
    }
    let c = shared.config();
    if c.balance.on_queue_full == QueueFull::Wait && !crate::task::in_task() {
        let deadline = Instant::now() + c.balance.queue_full_timeout;
        let mut nap = Duration::from_micros(50);
        loop {
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(5));
            if shared.sched().is_closed() {
                return Err(SubmitError::SystemClosed);
            }
            if shared.sched().stats.pending() < limit {
                return Ok(());
            }
            if Instant::now() >= deadline {
                break;
            }
        }
    }
    shared.balance().rejected.fetch_add(1, Ordering::Relaxed);
    Err(SubmitError::QueueFull { limit })
}

/// Takes the readings the balancer needs.
struct Sampler {
    /// This process's CPU time at the recent samples, oldest first.
    cpu_times: VecDeque<(Instant, Duration)>,
    /// The span the thread pool's CPU use is measured over: as long as a
    /// backlog must last, so the figure covers the backlog itself.
    cpu_window: Duration,
    last_load: Option<Instant>,
    load: Option<LoadReading>,
    /// The CPU of each executor's worker processes, as last read (every
    /// `LOAD_EVERY`: reading them walks `/proc`).
    workers_cpu: HashMap<ExecutorKind, Option<f64>>,
}

/// CPU time this process has used, all threads together.
fn process_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

impl Sampler {
    fn new(cpu_window: Duration) -> Self {
        Sampler {
            cpu_times: VecDeque::new(),
            cpu_window,
            last_load: None,
            load: None,
            workers_cpu: HashMap::new(),
        }
    }

    /// This process's CPU use over the last window, in cores.
    fn own_cpu(&mut self, now: Instant) -> Option<f64> {
        let cpu = process_cpu_time();
        while self.cpu_times.len() > 1
            && now.saturating_duration_since(self.cpu_times[1].0) >= self.cpu_window
        {
            self.cpu_times.pop_front();
        }
        let used = self.cpu_times.front().and_then(|&(then, was)| {
            let wall = now.saturating_duration_since(then).as_secs_f64();
            (wall > 0.0).then(|| cpu.saturating_sub(was).as_secs_f64() / wall)
        });
        self.cpu_times.push_back((now, cpu));
        used
    }

    fn read(&mut self, shared: &dyn Balanced, now: Instant) -> Readings {
        let c = shared.config();
        let bs = shared.balance();
        // This process's CPU use stands for the thread pool's (the pool
        // threads are most of what runs here); measured at every sample so
        // the window is always full.
        let own_cpu = self.own_cpu(now);
        let due = match self.last_load {
            Some(t) => now.saturating_duration_since(t) >= LOAD_EVERY,
            None => true,
        };
        if due {
            self.last_load = Some(now);
            self.load = bs.monitor.load();
        }
        let mut r = Readings::new(now);
        for (_, e) in shared.sched().executors() {
            let row = e.stats();
            // An executor that has not started (the process pool before its
            // first task) is not sampled: resizing it would start it.
            if !row.resizable() || row.workers == 0 {
                continue;
            }
            let kind = row.kind;
            let cpu = if kind == ExecutorKind::Threads {
                own_cpu
            } else if row.pids.is_empty() {
                None
            } else {
                if due {
                    let read = bs.monitor.workers_cpu(&row.pids);
                    self.workers_cpu.insert(kind, read);
                }
                self.workers_cpu.get(&kind).copied().flatten()
            };
            let alive = row.workers.saturating_sub(row.stuck);
            r = r.pool(
                kind,
                PoolReading {
                    alive,
                    busy: row.busy.min(alive),
                    queued: row.queued,
                    target: row.target,
                    core: row.core.max(bs.floor(kind)).min(row.max),
                    max: row.max,
                    cpu,
                },
            );
        }
        r.pending = match (c.balance.expand, c.balance.max_pending_tasks) {
            (ExpandPolicy::BeforehandExpand, Some(_)) => shared.sched().stats.pending(),
            _ => 0,
        };
        r.load = self.load;
        r
    }
}

/// The balancer thread: sample, decide, resize, until stopped.
fn run<V: Balanced>(
    weak: Weak<V>,
    control: Arc<Control>,
    mut balancer: Balancer,
    interval: Duration,
) {
    let mut sampler = Sampler::new(balancer.settings().expand_after);
    loop {
        {
            let mut stop = control.stop.lock();
            if !*stop {
                control.wake.wait_for(&mut stop, interval);
            }
            if *stop {
                return;
            }
        }
        let Some(shared) = weak.upgrade() else { return };
        let readings = sampler.read(&*shared, Instant::now());
        let d = balancer.step(&readings);
        for e in &d.events {
            tracing::info!(
                target: "seedcore::balance",
                executor = e.executor.name(),
                kind = e.kind.name(),
                from = e.from,
                to = e.to,
                reason = %e.reason,
                "balancer decision",
            );
        }
        // Recorded before they take effect, so that whoever sees a pool
        // resized also sees the decision in the stats.
        shared.balance().record(d.events);
        for &(kind, target) in &d.targets {
            if let Some((_, e)) = shared.sched().executors().find(|(_, e)| e.kind() == kind) {
                e.resize(target);
            }
        }
    }
}
