//! Observation: the counters and their snapshots ([`Stats`]), the monitor
//! of the machine and the workers, and the metrics export; every one of
//! them lists executors by [`ExecutorKind`](crate::ExecutorKind).
//!
//! * [`Stats`], [`MonitorSnapshot`] and what they hold implement
//!   `serde::Serialize`; [`Histogram`]s are HdrHistograms (percentiles
//!   within 0.1%).
//! * `ConcurrentSystem::metrics_prometheus` renders OpenMetrics text with
//!   `prometheus-client`, `metrics_json` the JSON document, and (feature
//!   `http`) `serve_metrics` serves both with hyper on the system's tokio
//!   runtime.
//! * Tracing: each task attempt is a `tracing` span named `attempt` (level
//!   DEBUG; fields `task`, `name`, `priority`, `executor`, `attempt`), with
//!   events for its outcome, timeouts (WARN), crashed workers (WARN) and
//!   retries (INFO); the balancer's decisions are INFO events with target
//!   `seedcore::balance`. While no subscriber wants DEBUG no span is made:
//!   the hot path reads tracing's global level filter and nothing else.
//! * The library's own warnings and errors (a callback that panicked, a
//!   worker that could not start, ...) stay on the `log` crate, which most
//!   applications already route; an application on `tracing` takes them in
//!   with `tracing-log`'s `LogTracer`. (tracing's own `log` feature is not
//!   turned on: it would make every span a `log` record as well.)

pub(crate) mod metrics;
pub(crate) mod monitor;

use crate::config::Config;
use std::time::Duration;

/// What the observers read of a system, and nothing more: the system
/// implements it, so that observation imports nothing above itself.
pub(crate) trait Observed: Send + Sync + 'static {
    /// The configuration the system runs with.
    fn config(&self) -> &Config;
    /// A snapshot of the counters, queue depths and histograms.
    fn stats(&self) -> Stats;
    /// A fresh monitor snapshot (walks `/proc`).
    fn monitor(&self) -> MonitorSnapshot;
    /// Time since the system was built.
    fn uptime(&self) -> Duration;
    /// Whether the system has stopped accepting tasks.
    fn is_closed(&self) -> bool;
}

pub use crate::snapshot::{Histogram, Stats};
#[cfg(feature = "http")]
pub use metrics::MetricsServer;
pub use metrics::PROMETHEUS_CONTENT_TYPE;
pub use monitor::{MonitorSnapshot, WorkerReading};
