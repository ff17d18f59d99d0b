//! The balancer: its decisions with a made-up clock and made-up readings,
//! then the real pools growing under a burst and shrinking back.

use crate::common;

use common::{eventually, Gate, LONG};
use seedcore::balance::{BalanceSettings, Balancer, EventKind, LoadReading, PoolReading, Readings};
use seedcore::{
    ConcurrentSystem, ExecutorKind, ExpandPolicy, QueueFull, ShrinkPolicy, SubmitError, TaskOptions,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

seedcore::enable_test_workers!();

seedcore::process_task! {
    /// Sleeps `ms` milliseconds in a worker process (an I/O-like task).
    fn nap(ms: u64) -> u32 {
        std::thread::sleep(Duration::from_millis(ms));
        std::process::id()
    }
}

const GIB: u64 = 1 << 30;
const TICK: Duration = Duration::from_millis(20);

/// A thread pool of 2..=8 that keeps `target`, all of it alive, `busy` of
/// it busy, with `queued` tasks and `cpu` cores of CPU use.
fn pool(target: usize, busy: usize, queued: usize, cpu: f64) -> PoolReading {
    PoolReading::new(2, 8, target, target, busy)
        .queued(queued)
        .cpu(cpu)
}

/// A 2-core machine at `cpu` load with `free` bytes available of 16 GiB.
fn machine(cpu: f64, free: u64) -> LoadReading {
    LoadReading::new(cpu, 2, free, 16 * GIB)
}

/// Drives a balancer over a made-up clock, keeping the pool's target as
/// the balancer sets it.
struct Sim {
    b: Balancer,
    t0: Instant,
    now: Instant,
    target: usize,
    events: Vec<seedcore::balance::BalanceEvent>,
}

impl Sim {
    fn new(settings: BalanceSettings) -> Self {
        let t0 = Instant::now();
        Sim {
            b: Balancer::new(settings, t0),
            t0,
            now: t0,
            target: 2,
            events: Vec::new(),
        }
    }

    /// One sample: `f` makes the pool reading from the current target.
    fn step(&mut self, f: impl Fn(usize) -> PoolReading, load: Option<LoadReading>) {
        self.now += TICK;
        let mut r = Readings::new(self.now).pool(ExecutorKind::Threads, f(self.target));
        if let Some(l) = load {
            r = r.load(l);
        }
        let d = self.b.step(&r);
        assert!(
            d.targets.iter().all(|&(k, _)| k == ExecutorKind::Threads),
            "only the thread pool was read: {:?}",
            d.targets
        );
        assert!(d.events.iter().all(|e| e.executor == ExecutorKind::Threads));
        if let Some(t) = d.target(ExecutorKind::Threads) {
            assert!((2..=8).contains(&t), "target {t} is outside core..=max");
            self.target = t;
        }
        self.events.extend(d.events);
    }

    fn run_for(
        &mut self,
        d: Duration,
        f: impl Fn(usize) -> PoolReading,
        load: Option<LoadReading>,
    ) {
        let end = self.now + d;
        while self.now < end {
            self.step(&f, load);
        }
    }

    /// Every worker idle, nothing queued, on a quiet machine.
    fn idle_for(&mut self, d: Duration) {
        self.run_for(d, |t| pool(t, 0, 0, 0.0), Some(machine(0.1, 8 * GIB)));
    }

    fn count(&self, kind: EventKind) -> usize {
        self.events.iter().filter(|e| e.kind == kind).count()
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }
}

fn settings(expand: ExpandPolicy, shrink: ShrinkPolicy) -> BalanceSettings {
    let mut s = BalanceSettings::default();
    s.expand = expand;
    s.shrink = shrink;
    s.expand_after = Duration::from_millis(40);
    s.auto_shrink_after = Duration::from_secs(1);
    s.shrink_timeout = Duration::from_secs(30);
    s
}

#[test]
fn a_lasting_backlog_of_blocked_workers_grows_the_pool_to_max() {
    let mut sim = Sim::new(settings(ExpandPolicy::AutoExpand, ShrinkPolicy::AutoShrink));
    // 200 queued sleep-like tasks: both workers busy, using no CPU.
    let burst = |t: usize| pool(t, t, 200, 0.0);
    sim.step(burst, Some(machine(0.9, 8 * GIB)));
    sim.step(burst, Some(machine(0.9, 8 * GIB)));
    assert_eq!(sim.target, 2, "one interval of backlog is not yet lasting");
    sim.step(burst, Some(machine(0.9, 8 * GIB)));
    assert_eq!(sim.target, 8, "events: {:?}", sim.events);
    let e = &sim.events[0];
    assert_eq!(
        (e.executor, e.kind, e.from, e.to),
        (ExecutorKind::Threads, EventKind::Expand, 2, 8)
    );
    assert!(e.reason.contains("200 queued"), "{}", e.reason);
    assert_eq!(e.at, Duration::from_millis(60));
}

#[test]
fn cpu_bound_work_that_fills_the_cores_does_not_grow_the_pool() {
    let mut sim = Sim::new(settings(ExpandPolicy::AutoExpand, ShrinkPolicy::AutoShrink));
    // Tiny CPU tasks: both workers busy on both cores, the machine full.
    sim.run_for(
        Duration::from_secs(2),
        |t| pool(t, t, 10_000, t as f64),
        Some(machine(1.0, 8 * GIB)),
    );
    assert_eq!(sim.target, 2);
    assert_eq!(sim.count(EventKind::Expand), 0);
    assert_eq!(sim.count(EventKind::Hold), 1, "one hold per episode");

    // The same work on a machine with idle cores grows by those cores.
    let mut sim = Sim::new(settings(ExpandPolicy::AutoExpand, ShrinkPolicy::AutoShrink));
    sim.run_for(
        Duration::from_millis(100),
        |t| pool(t, t, 10_000, t as f64),
        Some(LoadReading::new(0.25, 8, 8 * GIB, 16 * GIB)),
    );
    assert_eq!(sim.target, 8, "6 idle cores: +6 threads");
}

#[test]
fn idle_workers_shrink_back_to_core_after_the_timeout() {
    let mut sim = Sim::new(settings(
        ExpandPolicy::AutoExpand,
        ShrinkPolicy::TimeoutShrink,
    ));
    sim.run_for(
        Duration::from_millis(100),
        |t| pool(t, t, 500, 0.0),
        Some(machine(0.1, 8 * GIB)),
    );
    assert_eq!(sim.target, 8);
    let grown_at = sim.elapsed();
    // The burst drains: 3 workers still busy for a while, then none.
    sim.run_for(
        Duration::from_secs(10),
        |t| pool(t, 3.min(t), 0, 0.0),
        Some(machine(0.1, 8 * GIB)),
    );
    assert_eq!(sim.target, 8, "10 s idle is below the 30 s timeout");
    sim.idle_for(Duration::from_secs(19));
    assert_eq!(sim.target, 8, "29 s after growing: not yet");
    sim.idle_for(Duration::from_secs(2));
    // Only 5 were idle through the first 30 s (3 were busy in the first
    // 10 s): those retire first, then the rest one window later.
    let shrinks: Vec<_> = sim
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Shrink)
        .collect();
    assert_eq!(shrinks.len(), 1, "{shrinks:?}");
    assert_eq!((shrinks[0].from, shrinks[0].to), (8, 3));
    assert!(shrinks[0].at >= grown_at + Duration::from_secs(30));
    sim.idle_for(Duration::from_secs(31));
    assert_eq!(sim.target, 2, "back to core");
    assert_eq!(sim.count(EventKind::Shrink), 2);
}

#[test]
fn auto_shrink_retires_idle_workers_after_a_second() {
    let mut sim = Sim::new(settings(ExpandPolicy::AutoExpand, ShrinkPolicy::AutoShrink));
    sim.run_for(
        Duration::from_millis(100),
        |t| pool(t, t, 500, 0.0),
        Some(machine(0.1, 8 * GIB)),
    );
    assert_eq!(sim.target, 8);
    sim.idle_for(Duration::from_millis(900));
    assert_eq!(sim.target, 8, "under a second of idleness");
    sim.idle_for(Duration::from_millis(200));
    assert_eq!(sim.target, 2);
}

#[test]
fn a_memory_floor_stops_growth_with_hysteresis() {
    let mut s = settings(ExpandPolicy::AutoExpand, ShrinkPolicy::NoShrink);
    s.min_free_memory = Some(GIB);
    let mut sim = Sim::new(s);
    let burst = |t: usize| pool(t, t, 200, 0.0);
    // Not measured yet: no growth.
    sim.run_for(Duration::from_millis(200), burst, None);
    assert_eq!(sim.target, 2);
    // Measured, below the floor.
    sim.run_for(Duration::from_secs(1), burst, Some(machine(0.1, GIB / 2)));
    assert_eq!(sim.target, 2);
    // Above the floor, but within the 10 % margin: still held.
    sim.run_for(
        Duration::from_secs(1),
        burst,
        Some(machine(0.1, GIB + GIB / 20)),
    );
    assert_eq!(sim.target, 2);
    let holds: Vec<_> = sim
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Hold)
        .collect();
    assert_eq!(
        holds.len(),
        2,
        "not measured, then below the floor: {holds:?}"
    );
    assert!(holds[1].reason.contains("floor"), "{}", holds[1].reason);
    // Clear of the margin: it grows.
    sim.run_for(
        Duration::from_millis(100),
        burst,
        Some(machine(0.1, 2 * GIB)),
    );
    assert_eq!(sim.target, 8);
}

#[test]
fn a_cpu_ceiling_stops_growth_with_hysteresis() {
    let mut s = settings(ExpandPolicy::AutoExpand, ShrinkPolicy::NoShrink);
    s.max_cpu_load = Some(0.8);
    let mut sim = Sim::new(s);
    let burst = |t: usize| pool(t, t, 200, 0.0);
    sim.run_for(Duration::from_secs(1), burst, Some(machine(0.95, 8 * GIB)));
    assert_eq!(sim.target, 2);
    sim.run_for(Duration::from_secs(1), burst, Some(machine(0.75, 8 * GIB)));
    assert_eq!(sim.target, 2, "0.75 is within 0.1 of the 0.8 ceiling");
    sim.run_for(
        Duration::from_millis(100),
        burst,
        Some(machine(0.6, 8 * GIB)),
    );
    assert_eq!(sim.target, 8);
}

#[test]
fn oscillating_load_does_not_make_the_pool_flap() {
    // Bursts of 200 ms every 400 ms for 20 s.
    let mut sim = Sim::new(settings(ExpandPolicy::AutoExpand, ShrinkPolicy::AutoShrink));
    for _ in 0..50 {
        sim.run_for(
            Duration::from_millis(200),
            |t| pool(t, t, 50, 0.0),
            Some(machine(0.3, 8 * GIB)),
        );
        sim.run_for(
            Duration::from_millis(200),
            |t| pool(t, 0, 0, 0.0),
            Some(machine(0.3, 8 * GIB)),
        );
    }
    assert_eq!(sim.count(EventKind::Expand), 1, "{:?}", sim.events);
    assert_eq!(sim.count(EventKind::Shrink), 0, "{:?}", sim.events);
    assert_eq!(sim.target, 8);

    // A backlog that comes and goes at every sample never lasts.
    let mut sim = Sim::new(settings(ExpandPolicy::AutoExpand, ShrinkPolicy::AutoShrink));
    for i in 0..500 {
        let queued = if i % 2 == 0 { 50 } else { 0 };
        sim.step(|t| pool(t, t, queued, 0.0), Some(machine(0.3, 8 * GIB)));
    }
    assert!(sim.events.is_empty(), "{:?}", sim.events);
    assert_eq!(sim.target, 2);
}

#[test]
fn beforehand_expansion_grows_ahead_at_the_threshold() {
    let mut s = settings(ExpandPolicy::BeforehandExpand, ShrinkPolicy::AutoShrink);
    s.max_pending_tasks = Some(100);
    s.expand_threshold = 0.5;
    let t0 = Instant::now();
    let mut b = Balancer::new(s, t0);
    // 40 pending: under the threshold, and no lasting backlog yet.
    let r = Readings::new(t0 + TICK)
        .pool(ExecutorKind::Threads, pool(2, 2, 38, 2.0))
        .pending(40)
        .load(machine(1.0, 8 * GIB));
    assert_eq!(b.step(&r).target(ExecutorKind::Threads), None);
    // 50 pending: at once, to cover busy + queued (capped by max).
    let r = Readings::new(t0 + TICK * 2)
        .pool(ExecutorKind::Threads, pool(2, 2, 4, 2.0))
        .pending(50)
        .load(machine(1.0, 8 * GIB));
    let d = b.step(&r);
    assert_eq!(d.target(ExecutorKind::Threads), Some(6));
    assert_eq!(d.targets, vec![(ExecutorKind::Threads, 6)]);
    assert!(d.events[0].reason.starts_with("ahead"), "{:?}", d.events);
}

#[test]
fn each_executor_is_decided_on_its_own_by_its_kind() {
    const GPU: ExecutorKind = ExecutorKind::Custom("gpu");
    let t0 = Instant::now();
    let mut b = Balancer::new(
        settings(ExpandPolicy::AutoExpand, ShrinkPolicy::AutoShrink),
        t0,
    );
    let (mut threads, mut processes, mut gpu) = (2, 4, 1);
    let mut events = Vec::new();
    let mut now = t0;
    while now < t0 + Duration::from_millis(1200) {
        now += TICK;
        // Threads: a lasting backlog of blocked work. Processes: 4 of
        // 1..=4, all idle. The GPU executor: at its core, busy, nothing
        // queued.
        let r = Readings::new(now)
            .pool(ExecutorKind::Threads, pool(threads, threads, 200, 0.0))
            .pool(
                ExecutorKind::Processes,
                PoolReading::new(1, 4, processes, processes, 0),
            )
            .pool(GPU, PoolReading::new(1, 4, gpu, gpu, gpu))
            .load(machine(0.1, 8 * GIB));
        assert_eq!(r.reading(GPU).map(|p| p.max), Some(4));
        let d = b.step(&r);
        for &(kind, t) in &d.targets {
            match kind {
                ExecutorKind::Threads => threads = t,
                ExecutorKind::Processes => processes = t,
                _ => gpu = t,
            }
        }
        assert_eq!(d.target(GPU), None, "the GPU executor is left alone");
        events.extend(d.events);
    }
    assert_eq!((threads, processes, gpu), (8, 1, 1));
    let kinds: Vec<_> = events.iter().map(|e| (e.executor, e.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (ExecutorKind::Threads, EventKind::Expand),
            (ExecutorKind::Processes, EventKind::Shrink)
        ],
        "{events:?}"
    );
}

#[test]
fn an_executor_missing_from_a_sample_restarts_its_shrink_window() {
    let t0 = Instant::now();
    let mut b = Balancer::new(
        settings(ExpandPolicy::AutoExpand, ShrinkPolicy::AutoShrink),
        t0,
    );
    // 4 of 1..=4 workers, all idle.
    let mut target = 4;
    let mut shrunk_at = None;
    let mut now = t0;
    while now < t0 + Duration::from_secs(3) {
        now += TICK;
        let mut r = Readings::new(now).load(machine(0.1, 8 * GIB));
        // Left out once, at 600 ms.
        if now != t0 + TICK * 30 {
            let idle = PoolReading::new(1, 4, target, target, 0);
            r = r.pool(ExecutorKind::Processes, idle);
        }
        if let Some(to) = b.step(&r).target(ExecutorKind::Processes) {
            assert_eq!((target, to), (4, 1), "one shrink, straight to core");
            target = to;
            shrunk_at = Some(now - t0);
        }
    }
    let at = shrunk_at.expect("the idle pool shrank");
    assert!(
        at >= Duration::from_millis(1600),
        "a whole window after the missing sample, not one after the start: {at:?}"
    );
}

#[test]
fn no_policies_leave_the_pool_alone_and_a_raised_floor_holds() {
    let mut sim = Sim::new(settings(ExpandPolicy::NoExpand, ShrinkPolicy::NoShrink));
    sim.run_for(
        Duration::from_secs(1),
        |t| pool(t, t, 500, 0.0),
        Some(machine(0.0, 8 * GIB)),
    );
    assert!(sim.events.is_empty());
    assert_eq!(sim.target, 2);

    // A pool resized to 6 by hand reads core 6: it shrinks to 6, not 2.
    let mut sim = Sim::new(settings(ExpandPolicy::AutoExpand, ShrinkPolicy::AutoShrink));
    sim.target = 8;
    sim.run_for(
        Duration::from_secs(2),
        |t| PoolReading::new(6, 8, t, t, 0),
        Some(machine(0.0, 8 * GIB)),
    );
    assert_eq!(sim.target, 6);
}

#[test]
fn settings_come_from_the_config() {
    let cfg = seedcore::Config::from_toml_str(
        r#"
        [balance]
        expand = "beforehand"
        shrink = "timeout"
        shrink_timeout = "45s"
        interval = "10ms"
        max_pending_tasks = 1000
        on_queue_full = "wait"
        queue_full_timeout = "2s"
        expand_threshold = "25%"
        min_free_memory = "512MiB"
        max_cpu_load = 0.9
        "#,
    )
    .unwrap();
    assert_eq!(cfg.balance.on_queue_full, QueueFull::Wait);
    let s = BalanceSettings::from_config(&cfg);
    assert_eq!(s.expand, ExpandPolicy::BeforehandExpand);
    assert_eq!(s.shrink, ShrinkPolicy::TimeoutShrink);
    assert_eq!(s.shrink_timeout, Duration::from_secs(45));
    assert_eq!(s.expand_after, Duration::from_millis(20));
    assert_eq!(s.max_pending_tasks, Some(1000));
    assert_eq!(s.expand_threshold, 0.25);
    assert_eq!(s.min_free_memory, Some(512 << 20));
    assert_eq!(s.max_cpu_load, Some(0.9));

    for (key, field) in [
        ("expand = \"sometimes\"", "balance.expand"),
        ("shrink = 3", "balance.shrink"),
        ("shrink_timeout = \"0s\"", "balance.shrink_timeout"),
        ("interval = \"0ms\"", "balance.interval"),
        ("max_pending_tasks = 0", "balance.max_pending_tasks"),
        ("on_queue_full = \"block\"", "balance.on_queue_full"),
        ("expand_threshold = 1.5", "balance.expand_threshold"),
        ("max_cpu_load = \"lots\"", "balance.max_cpu_load"),
        ("max_cpu_load = 0", "balance.max_cpu_load"),
        ("min_free_memory = \"much\"", "balance.min_free_memory"),
    ] {
        let text = format!("[balance]\n{key}");
        let text = text.as_str();
        let err = seedcore::Config::from_toml_str(text).expect_err(text);
        assert_eq!(err.field, field, "{text}: {err}");
    }
}

/// A system of 2..=8 threads that balances every 10 ms.
fn balanced(name: &str) -> seedcore::SystemBuilder {
    common::builder(name)
        .core_threads(2)
        .max_threads(8)
        .balance_interval(Duration::from_millis(10))
}

#[test]
fn a_burst_of_blocking_tasks_grows_the_thread_pool_and_it_shrinks_back() {
    let system = balanced("bal-burst").build().unwrap();
    let peak = Arc::new(AtomicUsize::new(0));
    let futures: Vec<_> = (0..200)
        .map(|_| {
            system
                .submit_thread(TaskOptions::new(), |_| {
                    std::thread::sleep(Duration::from_millis(10))
                })
                .unwrap()
        })
        .collect();
    let watch = {
        let peak = peak.clone();
        move |sys: &ConcurrentSystem| {
            peak.fetch_max(common::threads(&sys.stats()).workers, Ordering::Relaxed);
        }
    };
    for f in futures {
        watch(&system);
        f.wait().unwrap();
    }
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak > 2, "the pool never grew (peak {peak})");
    assert!(peak <= 8, "the pool grew past max ({peak})");
    let st = system.stats();
    assert!(st.expansions >= 1, "{:?}", st.balance_events);
    assert!(st
        .balance_events
        .iter()
        .any(|e| e.kind == EventKind::Expand && e.executor == ExecutorKind::Threads));
    // Idle for the AutoShrink window: back to core.
    assert!(
        eventually(LONG, || common::threads(&system.stats()).workers == 2),
        "threads alive: {}, events: {:?}",
        common::threads(&system.stats()).workers,
        system.stats().balance_events
    );
    let st = system.stats();
    assert_eq!(common::threads(&st).target, 2);
    assert!(st.shrinks >= 1);
}

#[test]
fn a_memory_floor_keeps_the_real_pool_at_core() {
    let system = balanced("bal-floor")
        .min_free_memory(u64::MAX / 2)
        .build()
        .unwrap();
    let futures: Vec<_> = (0..40)
        .map(|_| {
            system
                .submit_thread(TaskOptions::new(), |_| {
                    std::thread::sleep(Duration::from_millis(10))
                })
                .unwrap()
        })
        .collect();
    let mut peak = 0;
    for f in futures {
        peak = peak.max(common::threads(&system.stats()).workers);
        f.wait().unwrap();
    }
    assert_eq!(peak, 2);
    let st = system.stats();
    assert_eq!(st.expansions, 0);
    assert!(
        st.balance_events.iter().any(|e| e.kind == EventKind::Hold),
        "{:?}",
        st.balance_events
    );
}

#[test]
fn a_manual_resize_is_the_floor_the_balancer_shrinks_to() {
    let system = balanced("bal-manual").build().unwrap();
    assert_eq!(system.resize_threads(5), 5);
    assert!(eventually(LONG, || common::threads(&system.stats())
        .workers
        == 5));
    // Well past the AutoShrink window: still 5.
    std::thread::sleep(Duration::from_millis(1500));
    let st = system.stats();
    let threads = common::threads(&st);
    assert_eq!((threads.workers, threads.target), (5, 5));
    assert_eq!(st.shrinks, 0);
}

const GAUGE: ExecutorKind = ExecutorKind::Custom("gauge");

/// What the test sets of a [`Gauge`] and what the balancer asked of it.
#[derive(Debug, Default)]
struct GaugeState {
    queued: AtomicUsize,
    target: AtomicUsize,
}

/// An executor of 1..=6 workers that runs nothing: it reports the backlog
/// the test sets, every worker busy while there is one, and keeps the size
/// it is resized to.
struct Gauge {
    state: Arc<GaugeState>,
    held: std::sync::Mutex<Vec<seedcore::exec::Runnable>>,
}

impl seedcore::exec::Executor for Gauge {
    fn kind(&self) -> ExecutorKind {
        GAUGE
    }

    fn accept(&self, task: seedcore::exec::Runnable) {
        self.held.lock().unwrap().push(task);
    }

    fn drain(&self) -> Vec<seedcore::exec::Runnable> {
        std::mem::take(&mut *self.held.lock().unwrap())
    }

    fn stop(&self, _: Instant, _: seedcore::ShutdownMode) -> seedcore::exec::StopReport {
        seedcore::exec::StopReport::default()
    }

    fn stats(&self) -> seedcore::exec::ExecutorStats {
        let mut row = seedcore::exec::ExecutorStats::new(GAUGE);
        row.queued = self.state.queued.load(Ordering::SeqCst);
        row.target = self.state.target.load(Ordering::SeqCst);
        row.workers = row.target;
        row.busy = if row.queued > 0 { row.workers } else { 0 };
        (row.core, row.max) = (1, 6);
        row
    }

    fn resize(&self, target: usize) -> usize {
        let set = target.clamp(1, 6);
        self.state.target.store(set, Ordering::SeqCst);
        set
    }

    fn workers(&self) -> Vec<seedcore::exec::WorkerInfo> {
        (0..self.state.target.load(Ordering::SeqCst))
            .map(|i| seedcore::exec::WorkerInfo::thread(0, format!("gauge-{i}")))
            .collect()
    }
}

#[test]
fn an_added_executor_is_balanced_and_resized_by_its_kind() {
    let system = balanced("bal-gauge").build().unwrap();
    let state = Arc::new(GaugeState::default());
    state.target.store(1, Ordering::SeqCst);
    let gauge = Gauge {
        state: state.clone(),
        held: Default::default(),
    };
    system.add_executor(gauge).unwrap();
    let target = || common::row(&system.stats(), GAUGE).target;
    assert_eq!(target(), 1);

    // A lasting backlog behind busy workers of unknown CPU: it grows to max.
    state.queued.store(50, Ordering::SeqCst);
    assert!(
        eventually(LONG, || target() == 6),
        "target {}, events {:?}",
        target(),
        system.stats().balance_events
    );
    let st = system.stats();
    assert!(st
        .balance_events
        .iter()
        .any(|e| e.executor == GAUGE && e.kind == EventKind::Expand && e.to == 6));
    assert_eq!(system.monitor().workers_of(GAUGE).count(), 6);

    // Idle: back to core after the AutoShrink window.
    state.queued.store(0, Ordering::SeqCst);
    assert!(eventually(LONG, || target() == 1), "target {}", target());
    assert!(system
        .stats()
        .balance_events
        .iter()
        .any(|e| e.executor == GAUGE && e.kind == EventKind::Shrink && e.to == 1));

    // A manual resize by kind is its floor.
    assert_eq!(system.resize(GAUGE, 3), Some(3));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(target(), 3, "{:?}", system.stats().balance_events);
    assert_eq!(system.resize(GAUGE, 99), Some(6), "clamped to max");
    // Executors of a fixed size keep it; an absent kind is no executor.
    assert_eq!(system.resize(ExecutorKind::Async, 5), Some(1));
    assert_eq!(system.resize(ExecutorKind::Custom("absent"), 1), None);
}

#[test]
fn the_global_task_limit_fails_or_waits() {
    let system = balanced("bal-limit").max_pending_tasks(4).build().unwrap();
    let gate = Gate::new();
    let held: Vec<_> = (0..4)
        .map(|_| {
            let g = gate.clone();
            system
                .submit_thread(TaskOptions::new(), move |_| g.wait())
                .unwrap()
        })
        .collect();
    match system.submit_thread(TaskOptions::new(), |_| ()) {
        Err(SubmitError::QueueFull { limit: 4 }) => {}
        other => panic!("expected QueueFull, got {other:?}"),
    }
    let err = SubmitError::QueueFull { limit: 4 };
    assert!(err.to_string().contains("max_pending_tasks"), "{err}");
    gate.open();
    for f in held {
        f.wait().unwrap();
    }
    assert!(eventually(LONG, || system.stats().pending() == 0));
    assert!(system.submit_thread(TaskOptions::new(), |_| ()).is_ok());
    assert_eq!(system.stats().queue_full_rejections, 1);

    // Waiting: the fifth submission goes through once one task finishes.
    let system = balanced("bal-limit-wait")
        .max_pending_tasks(2)
        .on_queue_full(QueueFull::Wait, Duration::from_secs(10))
        .build()
        .unwrap();
    let gate = Gate::new();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let g = gate.clone();
            system
                .submit_thread(TaskOptions::new(), move |_| g.wait())
                .unwrap()
        })
        .collect();
    let opener = {
        let g = gate.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            g.open();
        })
    };
    let started = Instant::now();
    let third = system.submit_thread(TaskOptions::new(), |_| 3u8).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(90));
    assert_eq!(third.wait().unwrap(), 3);
    opener.join().unwrap();
    for f in held {
        f.wait().unwrap();
    }

    // Waiting with a short timeout still fails, naming the limit.
    let system = balanced("bal-limit-timeout")
        .max_pending_tasks(1)
        .on_queue_full(QueueFull::Wait, Duration::from_millis(50))
        .build()
        .unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let held = system
        .submit_thread(TaskOptions::new(), move |_| g.wait())
        .unwrap();
    assert_eq!(
        system
            .submit_thread(TaskOptions::new(), |_| ())
            .unwrap_err(),
        SubmitError::QueueFull { limit: 1 }
    );
    gate.open();
    held.wait().unwrap();
}

#[test]
fn the_monitor_reads_the_machine_and_the_pool_threads() {
    let system = balanced("bal-mon").build().unwrap();
    let first = system.monitor();
    assert!(first.logical_cores >= 1);
    assert!(first.memory_total > 0 && first.memory_available <= first.memory_total);
    assert_eq!(first.pid, std::process::id());
    assert!(first.rss > 0);
    // Pool threads are named `bal-mon-N`; the other threads of the system
    // (balancer, timer, callbacks) are not listed.
    let threads: Vec<_> = first.workers_of(ExecutorKind::Threads).collect();
    assert_eq!(threads.len(), 2, "{threads:?}");
    assert!(threads.iter().all(|w| w.name.starts_with("bal-mon-")));
    assert!(threads.iter().all(|w| w.rss.is_none()));
    let spin = system
        .submit_thread(TaskOptions::new(), |_| {
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(400) {
                std::hint::spin_loop();
            }
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(250));
    let second = system.monitor();
    spin.wait().unwrap();
    assert!(second.cpu_load.is_some());
    let busiest = second
        .workers_of(ExecutorKind::Threads)
        .map(|w| w.cpu_percent)
        .fold(0.0, f64::max);
    assert!(
        busiest > 5.0,
        "a spinning thread shows CPU: {:?}",
        second.workers
    );
}

#[test]
fn the_monitor_shows_each_workers_current_task_and_count_under_a_long_system_name() {
    // Longer than the 15 bytes the OS keeps of a thread name.
    let system = common::builder("monitor-with-a-long-name")
        .core_threads(2)
        .max_threads(2)
        .core_processes(1)
        .max_processes(1)
        .process_output(seedcore::WorkerOutput::Discard)
        .build()
        .unwrap();
    for _ in 0..5 {
        system
            .submit_thread(TaskOptions::new(), |_| ())
            .unwrap()
            .wait()
            .unwrap();
    }
    let gate = Gate::new();
    let g = gate.clone();
    let held = system
        .submit_thread(TaskOptions::new(), move |_| g.wait())
        .unwrap();
    let napping = system
        .submit_process(TaskOptions::new(), nap, 3_000)
        .unwrap();
    let (tid, pid) = (held.id().as_u64(), napping.id().as_u64());
    let mut mon = system.monitor();
    assert!(
        eventually(LONG, || {
            mon = system.monitor();
            mon.workers_of(ExecutorKind::Threads)
                .any(|w| w.current_task == Some(tid))
                && mon
                    .workers_of(ExecutorKind::Processes)
                    .any(|w| w.current_task == Some(pid))
        }),
        "workers {:?}",
        mon.workers
    );
    let threads: Vec<_> = mon.workers_of(ExecutorKind::Threads).collect();
    assert_eq!(threads.len(), 2, "{threads:?}");
    assert!(threads.iter().all(|w| w.id != 0
        && !w.state.is_empty()
        && w.name.starts_with("monitor-with-a-long-name-")));
    let done: u64 = threads.iter().filter_map(|w| w.tasks_done).sum();
    assert_eq!(done, 5, "{threads:?}");
    gate.open();
    held.wait().unwrap();
    napping.wait().unwrap();
    assert!(eventually(LONG, || {
        let m = system.monitor();
        let (threads, processes) = (
            m.workers_of(ExecutorKind::Threads).collect::<Vec<_>>(),
            m.workers_of(ExecutorKind::Processes).collect::<Vec<_>>(),
        );
        threads.iter().all(|w| w.current_task.is_none())
            && threads.iter().filter_map(|w| w.tasks_done).sum::<u64>() == 6
            && processes.iter().all(|w| w.current_task.is_none())
            && processes.iter().filter_map(|w| w.tasks_done).sum::<u64>() == 1
    }));
}

#[test]
fn a_burst_of_blocking_process_tasks_grows_the_process_pool_and_it_shrinks_back() {
    let system = balanced("bal-proc")
        .core_processes(1)
        .max_processes(4)
        .process_prefetch(1)
        .process_output(seedcore::WorkerOutput::Discard)
        .build()
        .unwrap();
    let futures: Vec<_> = (0..60)
        .map(|_| system.submit_process(TaskOptions::new(), nap, 25).unwrap())
        .collect();
    let mut peak = 0;
    let mut pids = std::collections::HashSet::new();
    for f in futures {
        peak = peak.max(common::processes(&system.stats()).workers);
        pids.insert(f.wait().unwrap());
    }
    assert!(peak > 1, "the process pool never grew");
    assert!(peak <= 4, "the process pool grew past max ({peak})");
    assert!(pids.len() > 1, "the work ran in {} process(es)", pids.len());
    let st = system.stats();
    assert!(st
        .balance_events
        .iter()
        .any(|e| e.kind == EventKind::Expand && e.executor == ExecutorKind::Processes));
    // The monitor sees the worker processes, with their memory.
    let mon = system.monitor();
    let processes: Vec<_> = mon.workers_of(ExecutorKind::Processes).collect();
    assert!(!processes.is_empty());
    assert!(processes.iter().all(|w| w.rss.unwrap_or(0) > 0));
    assert!(
        eventually(LONG, || common::processes(&system.stats()).workers == 1),
        "processes alive: {}, events: {:?}",
        common::processes(&system.stats()).workers,
        system.stats().balance_events
    );
}

/// Grows the process pool of `system` (core 1) with a burst of naps and
/// returns the peak number of worker processes.
fn grow_processes(system: &ConcurrentSystem) -> usize {
    let futures: Vec<_> = (0..60)
        .map(|_| system.submit_process(TaskOptions::new(), nap, 25).unwrap())
        .collect();
    let mut peak = 0;
    for f in futures {
        peak = peak.max(common::processes(&system.stats()).workers);
        f.wait().unwrap();
    }
    peak
}

#[test]
fn under_timeout_shrink_idle_worker_processes_retire_down_to_core() {
    let system = balanced("bal-proc-timeout")
        .core_processes(1)
        .max_processes(4)
        .process_prefetch(1)
        .process_output(seedcore::WorkerOutput::Discard)
        .shrink_policy(ShrinkPolicy::TimeoutShrink)
        .shrink_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let peak = grow_processes(&system);
    assert!(peak > 1, "the process pool never grew");
    assert!(
        eventually(LONG, || common::processes(&system.stats()).workers == 1),
        "processes alive: {}",
        common::processes(&system.stats()).workers
    );
}

#[test]
fn without_a_shrink_policy_idle_worker_processes_stay() {
    // The same short shrink timeout retires nothing unless the policy is
    // "timeout".
    let system = balanced("bal-proc-noshrink")
        .core_processes(1)
        .max_processes(4)
        .process_prefetch(1)
        .process_output(seedcore::WorkerOutput::Discard)
        .shrink_policy(ShrinkPolicy::NoShrink)
        .shrink_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let peak = grow_processes(&system);
    assert!(peak > 1, "the process pool never grew");
    let grown = common::processes(&system.stats()).workers;
    assert!(grown > 1, "processes alive after the burst: {grown}");
    std::thread::sleep(Duration::from_millis(600));
    let now = common::processes(&system.stats()).workers;
    assert!(now >= grown, "{grown} worker processes shrank to {now}");
}
