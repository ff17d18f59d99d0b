//! Observation: the counters and their snapshots ([`Stats`]), the monitor
//! of the machine and the workers, and the metrics export; every one of
//! them lists executors by [`ExecutorKind`](crate::ExecutorKind).

pub(crate) mod metrics;
pub(crate) mod monitor;
pub(crate) mod stats;

#[cfg(feature = "http")]
pub use metrics::MetricsServer;
pub use metrics::PROMETHEUS_CONTENT_TYPE;
pub use monitor::{MonitorSnapshot, WorkerReading};
pub use stats::{Histogram, Stats};
