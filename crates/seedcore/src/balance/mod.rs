//! The balancer: grows and shrinks every executor that can change size (the
//! thread pool, the process pool, and added executors whose core is below
//! their max) with the load, under an [`ExpandPolicy`] and a
//! [`ShrinkPolicy`], always within each executor's core and max sizes.
//!
//! # Shape
//!
//! [`Balancer`] is the decision alone: a plain struct fed one [`Readings`]
//! per sample (each pool's sizes, queue depth and busy count, keyed by
//! [`ExecutorKind`], the machine's load, the time) that answers a
//! [`Decision`] (new targets per executor, and events). It owns
//! no thread and reads no clock, so tests drive it with made-up readings
//! and made-up times. The balancer thread (`driver.rs`) takes the readings
//! of every started, resizable executor every `balance_interval` (20 ms by
//! default), asks, and applies the answer through
//! [`Executor::resize`](crate::exec::Executor::resize) — the mechanism
//! behind [`ConcurrentSystem::resize`](crate::ConcurrentSystem::resize).
//! It is started only when an executor can change size (core below max, and
//! a policy other than none), and stopped first thing by a shutdown.
//!
//! The rules are documented on [`Balancer`].
//!
//! # Global task limit
//!
//! With `max_pending_tasks`, a submission that finds that many tasks
//! accepted and not yet resolved waits (`on_queue_full = "wait"`, up to
//! `queue_full_timeout`) or fails at once with
//! [`SubmitError::QueueFull`](crate::SubmitError::QueueFull). The check is
//! one read of the sharded counters, made only when a limit is set;
//! concurrent submitters may pass it together, so the bound can be
//! exceeded by the number of threads submitting at the same instant. A pool
//! thread never waits (it could be the one that would free the room).

mod decide;
mod driver;

pub use decide::{BalanceSettings, Balancer, Decision, LoadReading, PoolReading, Readings};
pub(crate) use driver::{admit, BalanceState};

use crate::task::ExecutorKind;
use std::fmt;
use std::time::Duration;

/// When the pools grow; see the rules on [`Balancer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExpandPolicy {
    /// Never above core (or the size set by hand).
    NoExpand,
    /// Grow when the queue backs up behind busy workers that more workers
    /// would help (`"auto"`, the default).
    #[default]
    AutoExpand,
    /// AutoExpand, and grow ahead as soon as the pending tasks pass
    /// `expand_threshold` of the global task limit (`"beforehand"`).
    BeforehandExpand,
}

/// When the pools shrink; see the rules on [`Balancer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ShrinkPolicy {
    /// Never below the largest size reached.
    NoShrink,
    /// Retire workers idle through the last second, down to core
    /// (`"auto"`, the default).
    #[default]
    AutoShrink,
    /// Retire workers idle longer than `balance.shrink_timeout`, down to
    /// core (`"timeout"`). This is also the one knob of the process pool's
    /// own idle retirement: under it the pool retires each worker process
    /// above `processes.core` idle that long, as the balancer does threads;
    /// under the other policies the process pool retires none by itself.
    TimeoutShrink,
}

/// What a submission does when the global task limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QueueFull {
    /// Fail at once with [`SubmitError::QueueFull`](crate::SubmitError::QueueFull)
    /// (`"fail"`, the default).
    #[default]
    Fail,
    /// Wait for room, up to `queue_full_timeout`, then fail (`"wait"`).
    Wait,
}

macro_rules! named {
    ($ty:ident { $($v:ident => $s:literal),* $(,)? }) => {
        impl $ty {
            /// The name used in configuration files.
            pub fn name(self) -> &'static str {
                match self { $($ty::$v => $s),* }
            }

            #[allow(dead_code)] // Event kinds are never parsed.
            pub(crate) fn parse(s: &str) -> Result<Self, String> {
                match s.trim() {
                    $($s => Ok($ty::$v),)*
                    other => Err(format!(
                        "unknown value `{other}` (expected {})",
                        [$(concat!("\"", $s, "\"")),*].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named!(ExpandPolicy { NoExpand => "none", AutoExpand => "auto", BeforehandExpand => "beforehand" });
named!(ShrinkPolicy { NoShrink => "none", AutoShrink => "auto", TimeoutShrink => "timeout" });
named!(QueueFull { Fail => "fail", Wait => "wait" });

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
    /// When, since the system was built (or since the [`Balancer`] started);
    /// serialized as `at_s`, in seconds.
    #[serde(rename = "at_s", serialize_with = "crate::observe::stats::seconds")]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in [
            ExpandPolicy::NoExpand,
            ExpandPolicy::AutoExpand,
            ExpandPolicy::BeforehandExpand,
        ] {
            assert_eq!(ExpandPolicy::parse(p.name()), Ok(p));
        }
        for p in [
            ShrinkPolicy::NoShrink,
            ShrinkPolicy::AutoShrink,
            ShrinkPolicy::TimeoutShrink,
        ] {
            assert_eq!(ShrinkPolicy::parse(p.name()), Ok(p));
        }
        assert!(ExpandPolicy::parse("sometimes")
            .unwrap_err()
            .contains("\"beforehand\""));
    }
}
