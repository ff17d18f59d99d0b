//! Export of the stats and the monitor: the OpenMetrics/Prometheus text
//! (rendered by `prometheus-client`), JSON (serde), and (with the cargo
//! feature `http`) an HTTP endpoint serving both (hyper, on the system's
//! tokio runtime).
//!
//! Every series carries a `system` label with the system's name, so that
//! several systems in one process can be told apart.
//!
//! Executors are rows, not names: every per-executor series carries an
//! `executor` label (`threads`, `async`, `services`, `processes`, or an
//! added executor's name), and the JSON lists them in an `executors` array,
//! so a new executor adds series and rows, never new metric names.
//!
//! Histograms: the stats keep HdrHistograms (three significant digits);
//! the Prometheus histograms give them fixed buckets (1, 2.5 and 5 times
//! each power of ten, from 1 µs, written up to the first bucket that holds
//! everything, then `+Inf`) and an exact `_sum` and `_count`. The JSON
//! gives the percentiles themselves (see [`Histogram`]).
//!
//! The JSON document (`/stats.json`) has the members `name`, `uptime_s`,
//! `closed`, `config` (configured bounds and policies), `stats` (the
//! serialized [`Stats`], plus `resolved`, `pending` and `queued`), and
//! `monitor` (the serialized [`MonitorSnapshot`]).

use crate::observe::monitor::MonitorSnapshot;
use crate::observe::Observed;
use crate::sched::ExecutorStats;
use crate::snapshot::{Histogram, Stats};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The content type of
/// [`ConcurrentSystem::metrics_prometheus`](crate::ConcurrentSystem::metrics_prometheus).
pub const PROMETHEUS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The stats and a fresh monitor snapshot of `view`, as OpenMetrics text.
pub(crate) fn render_prometheus(view: &dyn Observed) -> String {
    let st = view.stats();
    let mon = view.monitor();
    prometheus(&view.config().name, &st, &mon)
}

/// The stats, a fresh monitor snapshot and the configured bounds of
/// `view`, as one JSON document.
pub(crate) fn render_json(view: &dyn Observed) -> String {
    let st = view.stats();
    let mon = view.monitor();
    json(view, &st, &mon)
}

/// Label pairs of one series (the `system` label comes from the registry).
type Labels = Vec<(&'static str, String)>;
type GaugeF = Gauge<f64, AtomicU64>;

/// A family of histograms taken from snapshots: prometheus-client's own
/// `Histogram` records observations live, while these are HdrHistograms
/// already recorded by the scheduler.
#[derive(Debug, Default)]
struct Snapshots(Vec<(Labels, Histogram)>);

/// Upper bounds of the Prometheus buckets, in seconds: 1, 2.5, 5 × 10^k
/// from 1 µs to 5000 s.
fn bounds() -> impl Iterator<Item = f64> {
    // Parsed from decimal text, so each bound is written as it reads.
    (-6..=3).flat_map(|e: i32| {
        ["1", "2.5", "5"].map(move |m| format!("{m}e{e}").parse::<f64>().unwrap_or(f64::MAX))
    })
}

impl EncodeMetric for Snapshots {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.0 {
            let count = h.count();
            let mut buckets = Vec::new();
            let mut below = 0;
            for upper in bounds() {
                let n = h.count_at_or_below(Duration::from_secs_f64(upper));
                buckets.push((upper, n - below));
                below = n;
                if n == count {
                    break;
                }
            }
            // Infinity is written as `+Inf`.
            buckets.push((f64::INFINITY, count - below));
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(h.sum().as_secs_f64(), count, &buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A registry being filled from one snapshot.
struct Prom {
    reg: Registry,
}

impl Prom {
    fn counter(&mut self, name: &str, help: &str, series: impl IntoIterator<Item = (Labels, u64)>) {
        let family = Family::<Labels, Counter>::default();
        for (labels, n) in series {
            family.get_or_create(&labels).inc_by(n);
        }
        self.reg.register(name, help, family);
    }

    fn gauge(&mut self, name: &str, help: &str, series: impl IntoIterator<Item = (Labels, f64)>) {
        let family = Family::<Labels, GaugeF>::default();
        for (labels, v) in series {
            family.get_or_create(&labels).set(v);
        }
        self.reg.register(name, help, family);
    }

    /// A gauge family with one series per executor of `rows`, and per
    /// `(value of label, n)` pair that `series` gives it (no second label
    /// where `label` is `None`).
    fn per_executor(
        &mut self,
        name: &str,
        help: &str,
        rows: &[ExecutorStats],
        label: Option<&'static str>,
        series: impl Fn(&ExecutorStats) -> Vec<(String, usize)>,
    ) {
        let samples = rows.iter().flat_map(|e| {
            series(e).into_iter().map(move |(v, n)| {
                let mut l = vec![("executor", e.kind.name().to_owned())];
                if let Some(k) = label {
                    l.push((k, v));
                }
                (l, n as f64)
            })
        });
        self.gauge(name, help, samples.collect::<Vec<_>>());
    }
}

fn no_labels() -> Labels {
    Vec::new()
}

fn prometheus(name: &str, st: &Stats, mon: &MonitorSnapshot) -> String {
    let system = std::iter::once((Cow::Borrowed("system"), Cow::Owned(name.to_owned())));
    let mut p = Prom {
        reg: Registry::with_labels(system),
    };
    p.counter(
        "seedcore_tasks_submitted",
        "Tasks accepted",
        [(no_labels(), st.submitted)],
    );
    p.counter(
        "seedcore_tasks_resolved",
        "Tasks resolved, by outcome",
        [
            ("completed", st.completed),
            ("failed", st.failed),
            ("panicked", st.panicked),
            ("timed_out", st.timed_out),
            ("cancelled", st.cancelled),
            ("lock_timeout", st.lock_timeouts),
            ("shutdown", st.shutdown),
            ("worker_died", st.worker_died),
            ("memory_limit", st.memory_limit),
        ]
        .map(|(outcome, n)| (vec![("outcome", outcome.to_owned())], n)),
    );
    p.gauge(
        "seedcore_tasks_pending",
        "Tasks accepted and not yet resolved",
        [(no_labels(), st.pending() as f64)],
    );
    p.gauge(
        "seedcore_tasks_running",
        "Attempts running now, on any executor",
        [(no_labels(), st.running as f64)],
    );
    p.counter(
        "seedcore_task_attempts",
        "Attempts started",
        [(no_labels(), st.attempts)],
    );
    p.counter(
        "seedcore_task_retries",
        "Retries scheduled (attempts after the first)",
        [(no_labels(), st.retried)],
    );
    p.counter(
        "seedcore_callback_panics",
        "Callbacks that panicked",
        [(no_labels(), st.callback_panics)],
    );
    // One series per executor (and state or level): a new executor adds
    // series, not names.
    let rows = &st.executors;
    p.per_executor(
        "seedcore_executor_gauge",
        "Figures of an executor's own, by executor and name (the remote executor's reclaimed, \
         duplicates, refused and pending; the GPU executor's per-device figures)",
        rows,
        Some("name"),
        |e| {
            e.gauges
                .iter()
                .map(|(k, v)| (k.clone(), *v as usize))
                .collect()
        },
    );
    p.per_executor(
        "seedcore_executor_queued",
        "Tasks waiting for a worker, by executor",
        rows,
        None,
        |e| vec![(String::new(), e.queued)],
    );
    p.per_executor(
        "seedcore_queue_depth",
        "Tasks queued, by executor and priority level (0 is the most urgent)",
        rows,
        Some("priority"),
        |e| {
            e.queue_depth
                .iter()
                .enumerate()
                .map(|(level, &n)| (level.to_string(), n))
                .collect()
        },
    );
    p.per_executor(
        "seedcore_executor_running",
        "Attempts running now, by executor",
        rows,
        None,
        |e| vec![(String::new(), e.running)],
    );
    p.per_executor(
        "seedcore_executor_workers",
        "Workers by executor: alive, busy, stuck past a deadline, and the size the executor keeps",
        rows,
        Some("state"),
        |e| {
            [
                ("alive", e.workers),
                ("busy", e.busy),
                ("stuck", e.stuck),
                ("target", e.target),
            ]
            .map(|(s, n)| (s.to_owned(), n))
            .to_vec()
        },
    );
    p.per_executor(
        "seedcore_executor_bound",
        "The core and max sizes of each executor",
        rows,
        Some("bound"),
        |e| vec![("core".to_owned(), e.core), ("max".to_owned(), e.max)],
    );
    p.counter(
        "seedcore_balance_events",
        "Resizes by the balancer, all executors together (each event names its executor in the JSON)",
        [("expand", st.expansions), ("shrink", st.shrinks)]
            .map(|(kind, n)| (vec![("kind", kind.to_owned())], n)),
    );
    p.counter(
        "seedcore_queue_full_rejections",
        "Submissions refused at the global task limit",
        [(no_labels(), st.queue_full_rejections)],
    );
    for (name, help, all, by) in [
        (
            "seedcore_queue_wait_seconds",
            "Time from submission to the start of the first attempt",
            &st.queue_wait,
            &st.queue_wait_by_priority,
        ),
        (
            "seedcore_run_time_seconds",
            "Duration of each attempt",
            &st.run_time,
            &st.run_time_by_priority,
        ),
    ] {
        p.reg
            .register(name, help, Snapshots(vec![(no_labels(), all.clone())]));
        let by_level = by
            .iter()
            .enumerate()
            .filter(|(_, h)| h.count() > 0)
            .map(|(level, h)| (vec![("priority", level.to_string())], h.clone()))
            .collect();
        p.reg.register(
            name.replace("_seconds", "_by_priority_seconds"),
            format!("{help}, by priority level"),
            Snapshots(by_level),
        );
    }
    // The monitor.
    if let Some(load) = mon.cpu_load {
        p.gauge(
            "seedcore_machine_cpu_load",
            "Whole-machine CPU use, 0 to 1",
            [(no_labels(), load)],
        );
    }
    p.gauge(
        "seedcore_machine_memory_bytes",
        "Machine memory",
        [
            ("total", mon.memory_total),
            ("available", mon.memory_available),
        ]
        .map(|(k, n)| (vec![("kind", k.to_owned())], n as f64)),
    );
    let mut cores = vec![(
        vec![("kind", "logical".to_owned())],
        mon.logical_cores as f64,
    )];
    if let Some(n) = mon.physical_cores {
        cores.push((vec![("kind", "physical".to_owned())], n as f64));
    }
    p.gauge("seedcore_machine_cores", "Machine cores", cores);
    p.gauge(
        "seedcore_process_rss_bytes",
        "Resident memory of this process (worker threads included)",
        [(no_labels(), mon.rss as f64)],
    );
    p.gauge(
        "seedcore_process_cpu_percent",
        "CPU use of this process, in percent of one core",
        [(no_labels(), mon.cpu_percent)],
    );
    let worker = |w: &crate::observe::WorkerReading| {
        let mut l = vec![
            ("executor", w.executor.name().to_owned()),
            ("id", w.id.to_string()),
        ];
        if let Some(h) = &w.host {
            l.push(("host", h.clone()));
        }
        l
    };
    p.gauge(
        "seedcore_worker_cpu_percent",
        "CPU use of each worker thread and worker process, by executor, in percent of one core",
        mon.workers.iter().map(|w| {
            let mut l = worker(w);
            l.push(("state", w.state.clone()));
            (l, w.cpu_percent)
        }),
    );
    p.gauge(
        "seedcore_worker_rss_bytes",
        "Resident memory of each worker process, by executor",
        mon.workers
            .iter()
            .filter_map(|w| Some((worker(w), w.rss? as f64))),
    );
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &p.reg);
    out
}

/// The configured bounds and policies, in the JSON document.
#[derive(Serialize)]
struct ConfigDoc<'a> {
    core_threads: usize,
    max_threads: usize,
    core_processes: usize,
    max_processes: usize,
    expand_policy: &'a str,
    shrink_policy: &'a str,
    shrink_timeout_s: f64,
    max_pending_tasks: Option<u64>,
    min_free_memory: Option<u64>,
    max_cpu_load: Option<f64>,
}

/// [`Stats`] with the figures it computes.
#[derive(Serialize)]
struct StatsDoc<'a> {
    #[serde(flatten)]
    stats: &'a Stats,
    resolved: u64,
    pending: u64,
    queued: usize,
}

/// The JSON document.
#[derive(Serialize)]
struct Document<'a> {
    name: &'a str,
    uptime_s: f64,
    closed: bool,
    config: ConfigDoc<'a>,
    stats: StatsDoc<'a>,
    monitor: &'a MonitorSnapshot,
}

fn json(view: &dyn Observed, st: &Stats, mon: &MonitorSnapshot) -> String {
    let c = view.config();
    let doc = Document {
        name: &c.name,
        uptime_s: view.uptime().as_secs_f64(),
        closed: view.is_closed(),
        config: ConfigDoc {
            core_threads: c.threads.core,
            max_threads: c.threads.max,
            core_processes: c.processes.core,
            max_processes: c.processes.max,
            expand_policy: c.balance.expand.name(),
            shrink_policy: c.balance.shrink.name(),
            shrink_timeout_s: c.balance.shrink_timeout.as_secs_f64(),
            max_pending_tasks: c.balance.max_pending_tasks,
            min_free_memory: c.balance.min_free_memory,
            max_cpu_load: c.balance.max_cpu_load,
        },
        stats: StatsDoc {
            stats: st,
            resolved: st.resolved(),
            pending: st.pending(),
            queued: st.queued(),
        },
        monitor: mon,
    };
    // Plain data with string keys: serializing cannot fail (a non-finite
    // float becomes `null`).
    serde_json::to_string(&doc).expect("the metrics document serializes")
}

#[cfg(feature = "http")]
pub(crate) use server::serve;
#[cfg(feature = "http")]
pub use server::MetricsServer;

#[cfg(feature = "http")]
mod server;
