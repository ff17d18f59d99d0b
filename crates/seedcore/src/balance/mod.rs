//! The balancer: grows and shrinks every executor that can change size (the
//! thread pool, the process pool, and added executors whose core is below
//! their max) with the load, under an [`ExpandPolicy`] and a
//! [`ShrinkPolicy`], always within each executor's core and max sizes.
//!
//! # Shape
//!
//! [`Balancer`] is the decision alone: a plain struct fed one [`Readings`]
//! per sample (each pool's sizes, queue depth and busy count, keyed by
//! [`ExecutorKind`](crate::ExecutorKind), the machine's load, the time) that answers a
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

pub use crate::config::{ExpandPolicy, QueueFull, ShrinkPolicy};
pub use crate::snapshot::{BalanceEvent, EventKind, LoadReading};
pub use decide::{BalanceSettings, Balancer, Decision, PoolReading, Readings};
pub(crate) use driver::{admit, BalanceState, Balanced};
