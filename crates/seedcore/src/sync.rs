//! The synchronisation primitives the scheduler core is written against.
//!
//! `task/state.rs`, `task/completion.rs` and `sched/idle.rs` name their primitives only through this
//! module, so the model-checking tests can compile those same files against
//! loom's versions (see `tests/loom_core.rs`).

pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};
pub(crate) use std::thread;

/// Polls of a task's state before a blocking wait parks.
pub(crate) const SPIN_POLLS: u32 = 64;

/// Locks `m`, ignoring poisoning: user code never runs under these locks, so a
/// poisoned lock can only come from a bug in the scheduler itself, and the
/// data it guards is still consistent at every unlock point.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
