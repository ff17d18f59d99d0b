//! The balancer's decision: [`Balancer`] and what it reads and answers
//! (the rules are in its docs).

use super::{BalanceEvent, EventKind, ExpandPolicy, ShrinkPolicy};
use crate::config::Config;
use crate::snapshot::LoadReading;
use crate::task::ExecutorKind;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// The settings of a [`Balancer`]; [`from_config`](Self::from_config)
/// takes them from a [`Config`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BalanceSettings {
    /// When pools grow.
    pub expand: ExpandPolicy,
    /// When pools shrink.
    pub shrink: ShrinkPolicy,
    /// How long a backlog behind busy workers must last before a pool grows.
    pub expand_after: Duration,
    /// The idle window of [`ShrinkPolicy::AutoShrink`].
    pub auto_shrink_after: Duration,
    /// The idle window of [`ShrinkPolicy::TimeoutShrink`].
    pub shrink_timeout: Duration,
    /// The global task limit ([`BalanceConfig::max_pending_tasks`]).
    ///
    /// [`BalanceConfig::max_pending_tasks`]: crate::config::BalanceConfig::max_pending_tasks
    pub max_pending_tasks: Option<u64>,
    /// The fraction of the task limit at which BeforehandExpand grows ahead.
    pub expand_threshold: f64,
    /// No growth while available memory is below this many bytes.
    pub min_free_memory: Option<u64>,
    /// No growth while the machine's CPU load (0..=1) is above this.
    pub max_cpu_load: Option<f64>,
}

/// The AutoShrink window.
const AUTO_SHRINK_AFTER: Duration = Duration::from_secs(1);
/// Hysteresis of the CPU-load gate.
const LOAD_MARGIN: f64 = 0.1;

impl BalanceSettings {
    /// The balancer's part of `config`.
    pub fn from_config(config: &Config) -> Self {
        let b = &config.balance;
        BalanceSettings {
            expand: b.expand,
            shrink: b.shrink,
            expand_after: b.interval * 2,
            auto_shrink_after: AUTO_SHRINK_AFTER,
            shrink_timeout: b.shrink_timeout,
            max_pending_tasks: b.max_pending_tasks,
            expand_threshold: b.expand_threshold,
            min_free_memory: b.min_free_memory,
            max_cpu_load: b.max_cpu_load,
        }
    }

    fn shrink_window(&self) -> Duration {
        match self.shrink {
            ShrinkPolicy::TimeoutShrink => self.shrink_timeout,
            _ => self.auto_shrink_after,
        }
    }
}

impl Default for BalanceSettings {
    fn default() -> Self {
        Self::from_config(&Config::default())
    }
}

/// What the balancer sees of one executor's pool of workers at one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct PoolReading {
    /// Workers able to take work (threads: alive minus stuck ones).
    pub alive: usize,
    /// Of those, workers running (or holding) tasks.
    pub busy: usize,
    /// Tasks waiting for a worker of this pool.
    pub queued: usize,
    /// The size the pool keeps now.
    pub target: usize,
    /// The smallest size: core, or the size set by hand.
    pub core: usize,
    /// The largest size.
    pub max: usize,
    /// CPU the pool's workers used lately, in cores (2.0: two cores' worth);
    /// `None` when unknown (then busy workers count as blocked).
    pub cpu: Option<f64>,
}

impl PoolReading {
    /// A reading of a pool of `core..=max` workers that keeps `target`,
    /// with `alive` workers of which `busy` are busy, and `queued` tasks.
    pub fn new(core: usize, max: usize, target: usize, alive: usize, busy: usize) -> Self {
        PoolReading {
            alive,
            busy,
            queued: 0,
            target,
            core,
            max,
            cpu: None,
        }
    }

    /// Sets the queued tasks.
    pub fn queued(mut self, n: usize) -> Self {
        self.queued = n;
        self
    }

    /// Sets the CPU the workers use, in cores.
    pub fn cpu(mut self, cores: f64) -> Self {
        self.cpu = Some(cores);
        self
    }
}

/// Everything one decision reads.
///
/// ```
/// use seedcore::{ExecutorKind};
/// use seedcore::balance::{PoolReading, Readings};
/// use std::time::Instant;
///
/// let r = Readings::new(Instant::now()).pool(ExecutorKind::Threads, PoolReading::new(2, 8, 2, 2, 0));
/// assert_eq!(r.reading(ExecutorKind::Threads).map(|p| p.max), Some(8));
/// assert!(r.reading(ExecutorKind::Processes).is_none());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Readings {
    /// The time of the sample (any clock: tests make it up).
    pub now: Instant,
    /// One reading per executor the balancer may resize, at most one per
    /// kind; an executor left out is left as it is (the process pool until
    /// it has started, executors of a fixed size).
    pub pools: Vec<(ExecutorKind, PoolReading)>,
    /// Tasks accepted and not yet resolved, all executors together.
    pub pending: u64,
    /// The machine (`None` when not measured yet).
    pub load: Option<LoadReading>,
}

impl Readings {
    /// Readings at `now` with nothing in them.
    pub fn new(now: Instant) -> Self {
        Readings {
            now,
            pools: Vec::new(),
            pending: 0,
            load: None,
        }
    }

    /// Sets the reading of the executor of `kind` (replacing an earlier one
    /// of that kind).
    pub fn pool(mut self, kind: ExecutorKind, r: PoolReading) -> Self {
        match self.pools.iter_mut().find(|(k, _)| *k == kind) {
            Some(slot) => slot.1 = r,
            None => self.pools.push((kind, r)),
        }
        self
    }

    /// The reading of the executor of `kind`, if there is one.
    pub fn reading(&self, kind: ExecutorKind) -> Option<&PoolReading> {
        self.pools.iter().find(|(k, _)| *k == kind).map(|(_, r)| r)
    }

    /// Sets the pending task count.
    pub fn pending(mut self, n: u64) -> Self {
        self.pending = n;
        self
    }

    /// Sets the machine's load.
    pub fn load(mut self, l: LoadReading) -> Self {
        self.load = Some(l);
        self
    }
}

/// What one decision says: the new targets (an executor not listed is left
/// as it is) and what happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// New targets, one per executor to resize, in the order of the
    /// readings.
    pub targets: Vec<(ExecutorKind, usize)>,
    /// The expansions, shrinks and holds of this step.
    pub events: Vec<BalanceEvent>,
}

impl Decision {
    /// The new target of the executor of `kind`; `None`: leave it as it is.
    pub fn target(&self, kind: ExecutorKind) -> Option<usize> {
        self.targets
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|&(_, n)| n)
    }
}

/// Why an expansion was held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    Unmeasured,
    Memory,
    Load,
    CpuBound,
}

/// The balancer's memory of one executor.
#[derive(Debug)]
struct Track {
    /// Since when every sample showed a backlog behind busy workers.
    backlog_since: Option<Instant>,
    /// The shrink window counts from here (the last resize, or the start).
    window_start: Instant,
    /// Idle counts of the window, as a monotonic deque: idle counts rise
    /// from front to back, so the front is the window's minimum.
    idle: VecDeque<(Instant, usize)>,
    held: Option<Hold>,
}

impl Track {
    fn new(now: Instant) -> Self {
        Track {
            backlog_since: None,
            window_start: now,
            idle: VecDeque::new(),
            held: None,
        }
    }

    fn restart_window(&mut self, now: Instant) {
        self.window_start = now;
        self.idle.clear();
    }

    fn push_idle(&mut self, now: Instant, idle: usize, window: Duration) {
        while self.idle.back().is_some_and(|&(_, v)| v >= idle) {
            self.idle.pop_back();
        }
        self.idle.push_back((now, idle));
        while self
            .idle
            .front()
            .is_some_and(|&(t, _)| now.saturating_duration_since(t) > window)
        {
            self.idle.pop_front();
        }
    }

    /// `k` idle workers were retired: they no longer count in the window.
    fn retired(&mut self, k: usize) {
        for (_, v) in self.idle.iter_mut() {
            *v = v.saturating_sub(k);
        }
    }

    fn min_idle(&self) -> usize {
        self.idle.front().map_or(0, |&(_, v)| v)
    }
}

/// The balancer's decision logic, with no thread and no clock of its own:
/// feed it [`Readings`] with [`step`](Self::step).
///
/// # Rules
///
/// * **AutoExpand.** A pool grows when, for `expand_after` (two sample
///   intervals) without a break, it has queued tasks and every worker is
///   busy, *and* more workers would help: either some busy workers are off
///   the CPU (blocked in I/O or sleeping: the pool's CPU use over that time
///   is half a core or more below its busy count), then it grows by the
///   queued count; or the machine has whole idle cores (as last read, and
///   as the pool's own CPU use leaves), then it grows by their number. CPU
///   work that already fills the cores does not make the pool grow, so a
///   stream of tiny tasks never costs extra threads.
/// * **BeforehandExpand.** AutoExpand, and also: as soon as the pending
///   tasks reach `expand_threshold` of `max_pending_tasks`, a pool with
///   queued work grows at once to cover it (busy + queued), without waiting
///   for the backlog to last or for the CPU check.
/// * **Gates.** No pool grows while the machine's available memory is below
///   `min_free_memory` (GNU parallel's `--memfree`) or its CPU load is above
///   `max_cpu_load` (`--load`). A closed gate opens again only once memory
///   is 10 % above the floor, or the load 0.1 below the ceiling; a gate
///   that is set is closed until the first reading of the machine.
/// * **AutoShrink.** A pool retires the workers that stayed idle, with
///   nothing queued, through the last second (the fewest idle seen at any
///   sample of that window), down to core. With memory below the floor it
///   retires its idle workers above core at once.
/// * **TimeoutShrink.** The same with `shrink_timeout` as the window: workers
///   idle longer than the timeout retire. Workers are interchangeable, so
///   "k workers idle for the whole window" is read as "at least k idle at
///   every sample of it".
/// * **No flapping.** Growth waits for a lasting backlog, and a growth
///   restarts the shrink window, so a pool shrinks only after a whole window
///   of idleness since it last grew: load that comes and goes faster than
///   the window keeps the pool where it is. A shrink takes the retired
///   workers out of the window's idle counts, so a further shrink needs
///   other workers idle through a whole window.
/// * **Manual resizes** ([`ConcurrentSystem::resize`] and its
///   `resize_threads`, `resize_processes` forms) set the executor's floor:
///   the balancer grows above it and shrinks back to it, never below.
///
/// Each executor is decided on its own, by the same rules, with a memory
/// (backlog, shrink window, hold) of its own, kept by [`ExecutorKind`].
/// An executor missing from a sample restarts its shrink window.
///
/// [`ConcurrentSystem::resize`]: crate::ConcurrentSystem::resize
///
/// ```
/// use seedcore::{ExecutorKind};
/// use seedcore::balance::{Balancer, BalanceSettings, PoolReading, Readings};
/// use std::time::{Duration, Instant};
///
/// let t0 = Instant::now();
/// let mut b = Balancer::new(BalanceSettings::default(), t0);
/// // 2 of 2..=8 threads, both busy and blocked (no CPU used), 100 queued.
/// let burst = PoolReading::new(2, 8, 2, 2, 2).queued(100).cpu(0.0);
/// let mut grew = None;
/// for i in 0..5 {
///     let now = t0 + Duration::from_millis(20 * i);
///     let r = Readings::new(now).pool(ExecutorKind::Threads, burst);
///     grew = grew.or(b.step(&r).target(ExecutorKind::Threads));
/// }
/// assert_eq!(grew, Some(8));
/// ```
#[derive(Debug)]
pub struct Balancer {
    settings: BalanceSettings,
    start: Instant,
    memory_low: bool,
    load_high: bool,
    /// Whether a reading of the machine has arrived.
    measured: bool,
    /// The time of the last step: an executor first read now starts its
    /// shrink window there, as one missing from that step would have.
    last_step: Instant,
    tracks: BTreeMap<ExecutorKind, Track>,
}

impl Balancer {
    /// A balancer with `settings` whose clock starts at `start`.
    pub fn new(settings: BalanceSettings, start: Instant) -> Self {
        // A configured gate is closed until the first reading opens it: no
        // growth on a machine not measured yet.
        Balancer {
            memory_low: settings.min_free_memory.is_some(),
            load_high: settings.max_cpu_load.is_some(),
            measured: false,
            settings,
            start,
            last_step: start,
            tracks: BTreeMap::new(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &BalanceSettings {
        &self.settings
    }

    /// One decision.
    pub fn step(&mut self, r: &Readings) -> Decision {
        self.update_gates(r.load.as_ref());
        let mut d = Decision::default();
        let mut seen = Vec::with_capacity(r.pools.len());
        for &(kind, p) in &r.pools {
            if seen.contains(&kind) {
                continue;
            }
            seen.push(kind);
            if let Some(to) = self.decide(kind, &p, r, &mut d.events) {
                d.targets.push((kind, to));
            }
        }
        for (kind, t) in self.tracks.iter_mut() {
            if !seen.contains(kind) {
                t.restart_window(r.now);
            }
        }
        self.last_step = r.now;
        d
    }

    fn update_gates(&mut self, load: Option<&LoadReading>) {
        let s = &self.settings;
        let Some(l) = load else { return };
        // The first reading sets the gates by the plain thresholds; later
        // ones reopen a closed gate only past the margin.
        let first = !std::mem::replace(&mut self.measured, true);
        match s.min_free_memory {
            Some(floor) if l.memory_total > 0 => {
                if l.memory_available < floor {
                    self.memory_low = true;
                } else if first || l.memory_available >= floor.saturating_add(floor / 10) {
                    self.memory_low = false;
                }
            }
            _ => self.memory_low = false,
        }
        match s.max_cpu_load {
            Some(ceiling) => {
                if l.cpu_load > ceiling {
                    self.load_high = true;
                } else if first || l.cpu_load <= ceiling - LOAD_MARGIN {
                    self.load_high = false;
                }
            }
            None => self.load_high = false,
        }
    }

    fn decide(
        &mut self,
        executor: ExecutorKind,
        p: &PoolReading,
        r: &Readings,
        events: &mut Vec<BalanceEvent>,
    ) -> Option<usize> {
        let s = &self.settings;
        let now = r.now;
        let at = now.saturating_duration_since(self.start);
        let cur = p.target;
        let idle_workers = p.alive.saturating_sub(p.busy);
        let backlog = p.queued > 0 && idle_workers == 0;
        let window = s.shrink_window();
        let since = self.last_step;
        let t = self
            .tracks
            .entry(executor)
            .or_insert_with(|| Track::new(since));
        if backlog {
            t.backlog_since.get_or_insert(now);
        } else {
            t.backlog_since = None;
        }
        let event = |kind, to, reason| BalanceEvent {
            at,
            executor,
            kind,
            from: cur,
            to,
            reason,
        };

        // Growth.
        let mut want: Option<(usize, String)> = None;
        let mut hold = None;
        if s.expand != ExpandPolicy::NoExpand && cur < p.max {
            if let (ExpandPolicy::BeforehandExpand, Some(limit), true) =
                (s.expand, s.max_pending_tasks, p.queued > 0)
            {
                let threshold = ((s.expand_threshold * limit as f64).ceil() as u64).max(1);
                let need = p.busy + p.queued;
                if r.pending >= threshold && need > cur {
                    want = Some((
                        need - cur,
                        format!(
                            "ahead: {} pending of a {limit} task limit, {} queued",
                            r.pending, p.queued
                        ),
                    ));
                }
            }
            let lasted = t
                .backlog_since
                .is_some_and(|since| now.saturating_duration_since(since) >= s.expand_after);
            if want.is_none() && lasted {
                let stalled = p
                    .cpu
                    .map_or(p.busy as f64, |c| (p.busy as f64 - c).max(0.0));
                // Idle cores, as the machine reading says, but never more
                // than the pool's own fresher CPU figure leaves (the machine
                // is read less often, and may still show the idle time
                // before the burst).
                let spare = r.load.map_or(0.0, |l| {
                    let cores = l.logical_cores as f64;
                    let idle = (1.0 - l.cpu_load).max(0.0) * cores;
                    idle.min(cores - p.cpu.unwrap_or(0.0))
                });
                if stalled >= 0.5 {
                    want = Some((
                        p.queued,
                        format!(
                            "backlog: {} queued, {}/{} busy, {stalled:.1} blocked",
                            p.queued, p.busy, p.alive
                        ),
                    ));
                } else if spare >= 1.0 {
                    want = Some((
                        spare as usize,
                        format!("backlog: {} queued, {spare:.1} idle cores", p.queued),
                    ));
                } else {
                    hold = Some(Hold::CpuBound);
                }
            }
            if want.is_some() && (self.memory_low || self.load_high) {
                hold = Some(if !self.measured {
                    Hold::Unmeasured
                } else if self.memory_low {
                    Hold::Memory
                } else {
                    Hold::Load
                });
                want = None;
            }
        }
        if hold != t.held {
            if let Some(h) = hold {
                let reason = match h {
                    Hold::Unmeasured => "the machine is not measured yet".to_owned(),
                    Hold::Memory => format!(
                        "free memory {} below the floor of {}",
                        r.load.map_or(0, |l| l.memory_available),
                        s.min_free_memory.unwrap_or(0)
                    ),
                    Hold::Load => format!(
                        "CPU load {:.2} above the ceiling of {:.2}",
                        r.load.map_or(0.0, |l| l.cpu_load),
                        s.max_cpu_load.unwrap_or(1.0)
                    ),
                    Hold::CpuBound => format!(
                        "backlog of {} is CPU-bound: workers use their cores, none idle",
                        p.queued
                    ),
                };
                events.push(event(EventKind::Hold, cur, reason));
            }
            t.held = hold;
        }
        if let Some((grow, reason)) = want {
            let to = (cur + grow.max(1)).min(p.max);
            if to > cur {
                t.backlog_since = None;
                t.restart_window(now);
                events.push(event(EventKind::Expand, to, reason));
                return Some(to);
            }
        }

        // Shrinking.
        let idle_now = if p.queued > 0 { 0 } else { idle_workers };
        t.push_idle(now, idle_now, window);
        if s.shrink == ShrinkPolicy::NoShrink || cur <= p.core {
            return None;
        }
        let floor = p.core.max(p.busy);
        if s.shrink == ShrinkPolicy::AutoShrink && self.memory_low && idle_now > 0 {
            let to = floor.max(p.alive.saturating_sub(idle_now));
            if to < cur {
                t.retired(p.alive.saturating_sub(to));
                let reason = format!(
                    "free memory {} below the floor of {}: {idle_now} idle retired",
                    r.load.map_or(0, |l| l.memory_available),
                    s.min_free_memory.unwrap_or(0)
                );
                events.push(event(EventKind::Shrink, to, reason));
                return Some(to);
            }
        }
        if now.saturating_duration_since(t.window_start) < window {
            return None;
        }
        let min_idle = t.min_idle();
        let to = floor.max(p.alive.saturating_sub(min_idle));
        if min_idle == 0 || to >= cur {
            return None;
        }
        t.retired(p.alive.saturating_sub(to));
        let reason = format!("{min_idle} idle for {window:?}");
        events.push(event(EventKind::Shrink, to, reason));
        Some(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_window_keeps_its_minimum() {
        let t0 = Instant::now();
        let w = Duration::from_millis(100);
        let mut t = Track::new(t0);
        for (ms, idle) in [(0, 3), (20, 1), (40, 4), (60, 2)] {
            t.push_idle(t0 + Duration::from_millis(ms), idle, w);
        }
        assert_eq!(t.min_idle(), 1);
        // The sample of 1 leaves the window at 121 ms.
        t.push_idle(t0 + Duration::from_millis(125), 5, w);
        assert_eq!(t.min_idle(), 2);
    }
}
