//! The state of one task: where its attempts stand, whether it has
//! resolved, and which attempts are cancelled.
//!
//! # The attempt word
//!
//! `attempt` packs `(n << 8) | phase`, where `n` counts the attempts begun
//! (from 1). Every change is a compare-exchange, and each `transition_to_*`
//! returns a `#[must_use]` value that tells its caller whether it won and
//! so what it must do next:
//!
//! ```text
//! QUEUED(n) ──begin──▶ RUNNING(n+1) ──end(n+1)──▶ ENDED(n+1) ──retry──▶ BACKOFF ──▶ QUEUED
//!   │   ▲                │                            │
//!   │   │ revert         └── revert: sent, never ─────┘ final: the task resolves
//!   ▼   │                    started ──▶ QUEUED(n)
//! WAITING_LOCK(n) ──lock timeout──▶ ENDED(n)
//! ```
//!
//! * `end(n)` is raced by the code that ran attempt `n` (its result), the
//!   deadline of attempt `n` and a revert; exactly one wins, and only the
//!   winner decides between a retry and the final result.
//! * Only the winner of `end(n)` moves the word on to BACKOFF, so no two
//!   parties ever schedule the same retry.
//!
//! # The outcome
//!
//! `outcome` goes from 0 to an outcome code once; the one caller whose
//! compare-exchange moves it is the only one that stores the result, counts
//! it and wakes the waiter. Cancellation, deadlines, lock timeouts and
//! shutdown all resolve through it, so a task is resolved by any of them,
//! but only once.
//!
//! # Cancellation
//!
//! `cancel` holds the highest cancelled attempt (`u32::MAX`: every attempt,
//! present and future); a running attempt reads it through its
//! `TaskContext`.
//!
//! This file names its primitives only through `crate::sync`, so that the
//! model-checking tests compile it against loom (`tests/loom_core.rs`).

use crate::sync::{AtomicU32, AtomicU64, AtomicU8, Ordering};

const QUEUED: u64 = 0;
const WAITING_LOCK: u64 = 1;
const RUNNING: u64 = 2;
const BACKOFF: u64 = 3;
const ENDED: u64 = 4;

fn word(attempt: u32, phase: u64) -> u64 {
    ((attempt as u64) << 8) | phase
}

fn split(w: u64) -> (u32, u64) {
    ((w >> 8) as u32, w & 0xff)
}

/// Where the current attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting in an executor's queue.
    Queued,
    /// Parked on a named lock or limit.
    WaitingLock,
    /// An attempt runs.
    Running,
    /// Between attempts: a retry waits for its back-off.
    Backoff,
    /// The last attempt ended; its successor is being decided.
    Ended,
}

/// What [`TaskState::transition_to_running`] found.
#[must_use = "a begun attempt must be ended or reverted"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Begin {
    /// Attempt `n` runs now; `was_waiting`: it had waited for a lock.
    Started { n: u32, was_waiting: bool },
    /// The task is not waiting to run (it ended, or runs elsewhere).
    NotQueued,
}

/// Who ended an attempt.
#[must_use = "only the winner of an end may settle the task"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// This caller ended it and decides what follows.
    Won,
    /// Someone else did (or the attempt is not the current one).
    Lost,
}

impl End {
    pub(crate) fn won(self) -> bool {
        self == End::Won
    }
}

/// What [`TaskState::transition_to_lock_wait`] found.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockWait {
    /// The first wait of this attempt: its lock timeout starts now, keyed
    /// by this word.
    First(u64),
    /// Parked again after a wake-up: the timeout of the first wait holds.
    Again,
    /// The task is not waiting to run.
    NotQueued,
}

/// Whether a resolution won.
#[must_use = "the loser of a resolution race must not act as if it resolved the task"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolve {
    Won,
    Lost,
}

/// The atomic state of one task; see the module docs.
pub(crate) struct TaskState {
    attempt: AtomicU64,
    outcome: AtomicU8,
    cancel: AtomicU32,
    /// Two bytes the task never changes, kept here in the padding of the
    /// atomics: the executor's slot and the priority level.
    pub(crate) exec: u8,
    pub(crate) level: u8,
}

impl TaskState {
    pub(crate) fn new(exec: u8, level: u8) -> Self {
        TaskState {
            attempt: AtomicU64::new(word(0, QUEUED)),
            outcome: AtomicU8::new(0),
            cancel: AtomicU32::new(0),
            exec,
            level,
        }
    }

    /// The current attempt number and its phase.
    pub(crate) fn phase(&self) -> (u32, Phase) {
        let (n, ph) = split(self.attempt.load(Ordering::Acquire));
        let phase = match ph {
            QUEUED => Phase::Queued,
            WAITING_LOCK => Phase::WaitingLock,
            RUNNING => Phase::Running,
            BACKOFF => Phase::Backoff,
            _ => Phase::Ended,
        };
        (n, phase)
    }

    /// QUEUED(n) or WAITING_LOCK(n) → RUNNING(n + 1).
    pub(crate) fn transition_to_running(&self) -> Begin {
        let mut cur = self.attempt.load(Ordering::Acquire);
        loop {
            let (n, ph) = split(cur);
            if ph != QUEUED && ph != WAITING_LOCK {
                return Begin::NotQueued;
            }
            match self.attempt.compare_exchange_weak(
                cur,
                word(n + 1, RUNNING),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Begin::Started {
                        n: n + 1,
                        was_waiting: ph == WAITING_LOCK,
                    }
                }
                Err(w) => cur = w,
            }
        }
    }

    /// RUNNING(n) → ENDED(n).
    pub(crate) fn transition_to_ended(&self, n: u32) -> End {
        match self.attempt.compare_exchange(
            word(n, RUNNING),
            word(n, ENDED),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => End::Won,
            Err(_) => End::Lost,
        }
    }

    /// RUNNING(n) → QUEUED(n - 1): attempt `n` was handed to a worker that
    /// never started it, so it does not count.
    pub(crate) fn revert(&self, n: u32) -> End {
        match self.attempt.compare_exchange(
            word(n, RUNNING),
            word(n - 1, QUEUED),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => End::Won,
            Err(_) => End::Lost,
        }
    }

    /// QUEUED(n) or WAITING_LOCK(n) → WAITING_LOCK(n).
    pub(crate) fn transition_to_lock_wait(&self) -> LockWait {
        let mut cur = self.attempt.load(Ordering::Acquire);
        loop {
            let (n, ph) = split(cur);
            if ph != QUEUED && ph != WAITING_LOCK {
                return LockWait::NotQueued;
            }
            let next = word(n, WAITING_LOCK);
            match self
                .attempt
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if ph == QUEUED => return LockWait::First(next),
                Ok(_) => return LockWait::Again,
                Err(w) => cur = w,
            }
        }
    }

    /// The lock wait keyed by `wait` (from [`LockWait::First`]) timed out:
    /// WAITING_LOCK(n) → ENDED(n), if the task still waits in that wait.
    pub(crate) fn end_lock_wait(&self, wait: u64) -> End {
        let (n, _) = split(wait);
        match self.attempt.compare_exchange(
            wait,
            word(n, ENDED),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => End::Won,
            Err(_) => End::Lost,
        }
    }

    /// ENDED(n) → BACKOFF(n); only the winner of `end(n)` calls it.
    pub(crate) fn transition_to_backoff(&self, n: u32) {
        self.attempt.store(word(n, BACKOFF), Ordering::Release);
    }

    /// BACKOFF(n) → QUEUED(n); a task in any other phase stays as it is.
    pub(crate) fn transition_to_queued(&self) {
        let cur = self.attempt.load(Ordering::Acquire);
        let (n, ph) = split(cur);
        if ph == BACKOFF {
            let _ = self.attempt.compare_exchange(
                cur,
                word(n, QUEUED),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// 0 → `code` (non-zero), once.
    pub(crate) fn transition_to_resolved(&self, code: u8) -> Resolve {
        debug_assert_ne!(code, 0);
        match self
            .outcome
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Resolve::Won,
            Err(_) => Resolve::Lost,
        }
    }

    /// The outcome code; 0 while unresolved.
    pub(crate) fn outcome(&self) -> u8 {
        self.outcome.load(Ordering::Acquire)
    }

    pub(crate) fn is_resolved(&self) -> bool {
        self.outcome() != 0
    }

    /// Cancels every attempt up to `n`.
    pub(crate) fn cancel_through(&self, n: u32) {
        self.cancel.fetch_max(n, Ordering::AcqRel);
    }

    /// Whether attempt `n` is cancelled.
    pub(crate) fn is_cancelled(&self, n: u32) -> bool {
        self.cancel.load(Ordering::Acquire) >= n
    }
}
