//! What the balancer reports (its events) and reads of the machine.

use crate::kind::ExecutorKind;
use std::fmt;
use std::time::Duration;

/// What a [`BalanceEvent`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The pool grew.
    Expand,
    /// The pool shrank.
    Shrink,
    /// The pool would have grown but a gate (memory floor, CPU ceiling) or
    /// CPU-bound work held it; reported once per episode.
    Hold,
}

named!(EventKind { Expand => "expand", Shrink => "shrink", Hold => "hold" });

/// One decision of the balancer that changed (or would have changed) an
/// executor's size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct BalanceEvent {
    /// When, since the system was built (or since the [`Balancer`](crate::balance::Balancer) started);
    /// serialized as `at_s`, in seconds.
    #[serde(rename = "at_s", serialize_with = "crate::snapshot::seconds")]
    pub at: Duration,
    /// Which executor.
    pub executor: ExecutorKind,
    /// What happened.
    pub kind: EventKind,
    /// The executor's target size before.
    pub from: usize,
    /// The target size after (`from` for a hold).
    pub to: usize,
    /// Why, for people: the readings that decided it.
    pub reason: String,
}

/// The machine's load at one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct LoadReading {
    /// Whole-machine CPU use, 0..=1.
    pub cpu_load: f64,
    /// Logical cores.
    pub logical_cores: usize,
    /// Memory available to new work, in bytes.
    pub memory_available: u64,
    /// Total memory, in bytes (0: unknown, and the memory gate is off).
    pub memory_total: u64,
}

impl LoadReading {
    /// A machine with `logical_cores` cores at `cpu_load` (0..=1), with
    /// `memory_available` of `memory_total` bytes.
    pub fn new(
        cpu_load: f64,
        logical_cores: usize,
        memory_available: u64,
        memory_total: u64,
    ) -> Self {
        LoadReading {
            cpu_load,
            logical_cores,
            memory_available,
            memory_total,
        }
    }
}
