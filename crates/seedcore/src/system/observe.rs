//! What the observers read of the system (the narrow view it implements
//! for them), and the system's observation methods.

use super::{stats_of, ConcurrentSystem, Shared};
use crate::config::Config;
use crate::kind::ExecutorKind;
use crate::observe::{MonitorSnapshot, Observed};
use crate::sched::WorkerInfo;
use crate::snapshot::Stats;
use std::time::Duration;

impl Observed for Shared {
    fn config(&self) -> &Config {
        &self.config
    }

    fn stats(&self) -> Stats {
        stats_of(self)
    }

    fn monitor(&self) -> MonitorSnapshot {
        let executors: Vec<(ExecutorKind, Vec<WorkerInfo>)> = self
            .sched
            .executors()
            .map(|(_, e)| (e.kind(), e.workers()))
            .collect();
        self.balance.monitor.snapshot(&executors)
    }

    fn uptime(&self) -> Duration {
        self.balance.started().elapsed()
    }

    fn is_closed(&self) -> bool {
        self.sched.is_closed()
    }
}

impl ConcurrentSystem {
    /// The stats and a fresh [`monitor`](Self::monitor) snapshot in the
    /// OpenMetrics text format (which Prometheus reads; content type
    /// [`PROMETHEUS_CONTENT_TYPE`](crate::observe::PROMETHEUS_CONTENT_TYPE)),
    /// rendered by `prometheus-client`. Every series carries a `system`
    /// label with the system's name; per-executor series an `executor`
    /// label.
    pub fn metrics_prometheus(&self) -> String {
        crate::observe::metrics::render_prometheus(&**self.shared())
    }

    /// The stats, a fresh monitor snapshot and the configured bounds as one
    /// JSON document with the members `name`, `uptime_s`, `closed`, `config`
    /// (configured bounds and policies), `stats` (the serialized [`Stats`](crate::Stats):
    /// its fields, `executors` as an array of rows `{executor, queued,
    /// queue_depth, running, workers, busy, stuck, target, core, max,
    /// pids}`, each histogram as described at [`Histogram`](crate::observe::Histogram), plus
    /// `resolved`, `pending` and `queued`) and `monitor` (the
    /// [`MonitorSnapshot`](crate::observe::MonitorSnapshot), its `workers` each with their `executor`). This
    /// is what `seedcore top` reads.
    pub fn metrics_json(&self) -> String {
        crate::observe::metrics::render_json(&**self.shared())
    }

    /// Reads the machine (cores, memory, CPU load), this process, and the
    /// workers of every executor (CPU of each worker thread, CPU and
    /// resident memory of each worker process), listed in
    /// [`MonitorSnapshot::workers`](crate::observe::MonitorSnapshot::workers) with their executor.
    ///
    /// It walks `/proc` (on Linux), so it costs milliseconds: call it for a
    /// dashboard or a log line, not per task. CPU percentages cover the time
    /// since the previous call (the first call shows 0).
    pub fn monitor(&self) -> MonitorSnapshot {
        Observed::monitor(&**self.shared())
    }

    /// Serves this system's metrics over HTTP on `addr` (for example
    /// `"127.0.0.1:9400"`, or port 0 for any free port), on the system's
    /// tokio runtime (started now if no async task started it yet):
    /// `GET /metrics` (OpenMetrics text, which Prometheus reads) and
    /// `GET /stats.json` (JSON, what `seedcore top` reads).
    ///
    /// Bind to a loopback address unless the network is trusted: the
    /// endpoint has no authentication.
    #[cfg(feature = "http")]
    pub fn serve_metrics(
        &self,
        addr: impl std::net::ToSocketAddrs,
    ) -> std::io::Result<crate::observe::MetricsServer> {
        let handle =
            self.shared().asyncs().runtime_handle().ok_or_else(|| {
                std::io::Error::other("the system's async runtime could not start")
            })?;
        let view: std::sync::Arc<dyn Observed> = self.shared().clone();
        crate::observe::metrics::serve(&handle, std::sync::Arc::downgrade(&view), addr)
    }
}
