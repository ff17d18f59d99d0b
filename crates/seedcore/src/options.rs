//! Per-task options: priority, timeout, retry policy, locks and limits.

use crate::error::{SubmitError, TaskError, TaskErrorKind};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Number of priority levels.
pub(crate) const LEVELS: usize = 11;

/// A task's priority: `0` (most urgent) to `10` (least urgent).
///
/// Workers always take the most urgent queued task; within one level tasks
/// start in submission order (FIFO). A task never waits behind a less
/// urgent one that has not started. Starvation: there is no ageing, so a
/// steady stream of urgent work can delay less urgent work indefinitely;
/// give such streams a concurrency limit if that matters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u8);

impl Priority {
    /// The most urgent level, `0`.
    pub const CRITICAL: Priority = Priority(0);
    /// Level `2`.
    pub const HIGH: Priority = Priority(2);
    /// Level `5`, the default.
    pub const NORMAL: Priority = Priority(5);
    /// Level `8`.
    pub const LOW: Priority = Priority(8);
    /// The least urgent level, `10`.
    pub const IDLE: Priority = Priority(10);

    /// A priority level, or `None` if `level > 10`.
    pub const fn new(level: u8) -> Option<Priority> {
        if (level as usize) < LEVELS {
            Some(Priority(level))
        } else {
            None
        }
    }

    /// The priority of a level read back from a task's record (a level
    /// that [`Priority::new`] accepted).
    pub(crate) const fn from_level(level: u8) -> Priority {
        Priority(level)
    }

    /// The numeric level (`0` is the most urgent).
    pub const fn level(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::NORMAL
    }
}

impl fmt::Debug for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0 => "CRITICAL",
            2 => "HIGH",
            5 => "NORMAL",
            8 => "LOW",
            10 => "IDLE",
            n => return write!(f, "Priority({n})"),
        };
        write!(f, "Priority::{name}")
    }
}

/// How long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed(Duration),
    /// `initial * factor^(n-1)` before retry `n`, capped at `max`.
    Exponential {
        /// Delay before the first retry.
        initial: Duration,
        /// Growth per retry (at least 1).
        factor: f64,
        /// Upper bound of the delay.
        max: Duration,
    },
}

/// Which failures a [`RetryPolicy`] retries. Combine with `|`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryOn(u8);

impl RetryOn {
    /// Retry when the task returns its own error.
    pub const ERROR: RetryOn = RetryOn(1);
    /// Retry when the task panics (off by default: a panic is usually a bug,
    /// not a transient fault).
    pub const PANIC: RetryOn = RetryOn(2);
    /// Retry when an attempt times out.
    pub const TIMEOUT: RetryOn = RetryOn(4);
    /// Retry when the worker process dies or hits its memory limit.
    pub const CRASH: RetryOn = RetryOn(8);
    /// Retry on every failure above.
    pub const ALL: RetryOn = RetryOn(15);

    /// The kinds as bits (a retry policy on the wire).
    #[cfg(feature = "remote")]
    pub(crate) const fn bits(self) -> u8 {
        self.0
    }

    /// Whether `self` includes every kind in `other`.
    pub const fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0
    }

    pub(crate) fn matches(self, e: &TaskError) -> bool {
        match e.kind() {
            TaskErrorKind::Failed | TaskErrorKind::GpuMemory => self.contains(RetryOn::ERROR),
            TaskErrorKind::Panicked => self.contains(RetryOn::PANIC),
            TaskErrorKind::TimedOut => self.contains(RetryOn::TIMEOUT),
            TaskErrorKind::WorkerDied | TaskErrorKind::MemoryLimit => self.contains(RetryOn::CRASH),
            _ => false,
        }
    }
}

impl std::ops::BitOr for RetryOn {
    type Output = RetryOn;
    fn bitor(self, rhs: RetryOn) -> RetryOn {
        RetryOn(self.0 | rhs.0)
    }
}

impl fmt::Debug for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (bit, name) in [(1, "ERROR"), (2, "PANIC"), (4, "TIMEOUT"), (8, "CRASH")] {
            if self.0 & bit != 0 {
                parts.push(name);
            }
        }
        write!(f, "RetryOn({})", parts.join(" | "))
    }
}

/// How often and when a failed task is tried again. The task's future
/// resolves only after its last attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    retries: u32,
    backoff: Backoff,
    jitter: f64,
    on: RetryOn,
}

impl RetryPolicy {
    /// No retries: one attempt.
    pub const fn none() -> Self {
        RetryPolicy {
            retries: 0,
            backoff: Backoff::Fixed(Duration::ZERO),
            jitter: 0.0,
            on: RetryOn(RetryOn::ERROR.0 | RetryOn::TIMEOUT.0),
        }
    }

    /// Up to `n` retries after the first attempt, immediately, on errors
    /// and timeouts (not panics, see [`RetryOn::PANIC`]).
    pub const fn retries(n: u32) -> Self {
        let mut p = Self::none();
        p.retries = n;
        p
    }

    /// Sets the delay between attempts.
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.backoff = b;
        self
    }

    /// Spreads each delay randomly by up to `fraction` of itself (0..=1), so
    /// that tasks failing together do not retry together.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Sets which failures are retried.
    pub fn on(mut self, on: RetryOn) -> Self {
        self.on = on;
        self
    }

    /// The number of retries after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.retries
    }

    /// The policy's parts (retries, backoff, jitter, which failures), as a
    /// message to a remote worker carries them.
    #[cfg(feature = "remote")]
    pub(crate) fn parts(&self) -> (u32, Backoff, f64, u8) {
        (self.retries, self.backoff, self.jitter, self.on.0)
    }

    /// A policy from [`parts`](Self::parts); unknown failure bits are
    /// dropped.
    #[cfg(feature = "remote")]
    pub(crate) fn from_parts(retries: u32, backoff: Backoff, jitter: f64, on: u8) -> Self {
        RetryPolicy {
            retries,
            backoff,
            jitter,
            on: RetryOn(on & RetryOn::ALL.0),
        }
    }

    /// Whether attempt number `attempt` (1-based) that failed with `e`
    /// should be followed by another.
    pub(crate) fn should_retry(&self, attempt: u32, e: &TaskError) -> bool {
        attempt <= self.retries && self.on.matches(e)
    }

    /// The longest delay before attempt `attempt + 1` (jitter at its
    /// widest).
    #[cfg(feature = "remote")]
    pub(crate) fn delay_max(&self, attempt: u32) -> Duration {
        let secs = self.base_delay(attempt).as_secs_f64() * (1.0 + self.jitter);
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }

    fn base_delay(&self, attempt: u32) -> Duration {
        match self.backoff {
            Backoff::Fixed(d) => d,
            Backoff::Exponential {
                initial,
                factor,
                max,
            } => {
                let exp = factor.powi(attempt.saturating_sub(1).min(64) as i32);
                let secs = (initial.as_secs_f64() * exp).min(max.as_secs_f64());
                Duration::from_secs_f64(secs)
            }
        }
    }

    /// The delay before attempt `attempt + 1`.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let base = self.base_delay(attempt);
        if self.jitter > 0.0 && !base.is_zero() {
            let spread = (fastrand::f64() * 2.0 - 1.0) * self.jitter;
            base.mul_f64((1.0 + spread).max(0.0))
        } else {
            base
        }
    }

    fn validate(&self) -> Result<(), SubmitError> {
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(SubmitError::InvalidOptions(format!(
                "retry jitter must be within 0..=1, got {}",
                self.jitter
            )));
        }
        if let Backoff::Exponential { factor, .. } = self.backoff {
            if !(factor >= 1.0 && factor.is_finite()) {
                return Err(SubmitError::InvalidOptions(format!(
                    "exponential backoff factor must be a finite number >= 1, got {factor}"
                )));
            }
        }
        Ok(())
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::none()
    }
}

/// One named lock or concurrency limit a task holds while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockSpec {
    pub(crate) name: Arc<str>,
    pub(crate) permits: usize,
}

/// The options most tasks leave at their defaults, kept out of line so
/// that a plain task carries one pointer for them, shared (not copied) by
/// every task submitted with clones of the same options.
#[derive(Debug, Clone, Default)]
struct Extra {
    timeout: Option<Duration>,
    retry: RetryPolicy,
    locks: Vec<LockSpec>,
    lock_timeout: Option<Duration>,
    name: Option<Arc<str>>,
}

static NO_RETRY: RetryPolicy = RetryPolicy::none();

/// Every option but the priority: what a task's record keeps (one
/// pointer; the priority lives beside the task's state).
#[derive(Debug, Clone, Default)]
pub(crate) struct Opts(Option<Arc<Extra>>);

impl Opts {
    fn extra_mut(&mut self) -> &mut Extra {
        Arc::make_mut(self.0.get_or_insert_with(Default::default))
    }

    /// Whether every option is at its default.
    pub(crate) fn is_default(&self) -> bool {
        self.0.is_none()
    }

    /// The timeout of each attempt, if any.
    pub(crate) fn get_timeout(&self) -> Option<Duration> {
        self.0.as_ref().and_then(|e| e.timeout)
    }

    pub(crate) fn get_retry(&self) -> &RetryPolicy {
        self.0.as_ref().map_or(&NO_RETRY, |e| &e.retry)
    }

    pub(crate) fn get_lock_timeout(&self) -> Option<Duration> {
        self.0.as_ref().and_then(|e| e.lock_timeout)
    }

    pub(crate) fn get_name(&self) -> Option<&str> {
        self.0.as_ref().and_then(|e| e.name.as_deref())
    }

    pub(crate) fn locks(&self) -> &[LockSpec] {
        self.0.as_ref().map_or(&[], |e| &e.locks)
    }
}

/// Options of one task. Every executor honours all of them.
///
/// Cloning options is cheap: everything but the priority is shared.
///
/// ```
/// use seedcore::{Priority, RetryPolicy, TaskOptions};
/// use std::time::Duration;
///
/// let opts = TaskOptions::new()
///     .priority(Priority::HIGH)
///     .timeout(Duration::from_secs(2))
///     .retry(RetryPolicy::retries(3))
///     .lock("ledger")
///     .limit("database", 4)
///     .lock_timeout(Duration::from_secs(10))
///     .name("settle-accounts");
/// assert_eq!(opts.get_priority(), Priority::HIGH);
/// ```
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    pub(crate) priority: Priority,
    rest: Opts,
}

impl TaskOptions {
    /// Default options: [`Priority::NORMAL`], no timeout, no retry, no lock.
    pub fn new() -> Self {
        Self::default()
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.rest.extra_mut()
    }

    /// The priority and the rest, as a task's record keeps them.
    pub(crate) fn into_parts(self) -> (Priority, Opts) {
        (self.priority, self.rest)
    }

    /// Sets the priority.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }

    /// Sets the timeout of each attempt, measured from its start.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.extra_mut().timeout = Some(d);
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, r: RetryPolicy) -> Self {
        self.extra_mut().retry = r;
        self
    }

    /// Holds the named lock while the task runs: tasks naming the same lock
    /// never run at the same time. Locks are held by the scheduler, never
    /// by a worker, so a crashed worker cannot leave one held.
    pub fn lock(self, name: impl Into<Arc<str>>) -> Self {
        self.limit(name, 1)
    }

    /// Takes one of `permits` slots of the named concurrency limit while the
    /// task runs: at most `permits` tasks naming it run at once. A lock is a
    /// limit of 1; every task naming the same limit must give the same
    /// number.
    pub fn limit(mut self, name: impl Into<Arc<str>>, permits: usize) -> Self {
        let name = name.into();
        let locks = &mut self.extra_mut().locks;
        locks.retain(|l| l.name != name);
        locks.push(LockSpec { name, permits });
        self
    }

    /// How long the task may wait for its locks and limits before it
    /// resolves [`TaskError::LockTimeout`]. Without it, it waits as long as
    /// it takes.
    pub fn lock_timeout(mut self, d: Duration) -> Self {
        self.extra_mut().lock_timeout = Some(d);
        self
    }

    /// A name for logs and stats.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.extra_mut().name = Some(name.into());
        self
    }

    /// The priority.
    pub fn get_priority(&self) -> Priority {
        self.priority
    }

    /// The timeout, if any.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.rest.get_timeout()
    }

    /// The retry policy.
    pub fn get_retry(&self) -> &RetryPolicy {
        self.rest.get_retry()
    }

    /// The lock timeout, if any.
    pub fn get_lock_timeout(&self) -> Option<Duration> {
        self.rest.get_lock_timeout()
    }

    /// The name, if any.
    pub fn get_name(&self) -> Option<&str> {
        self.rest.get_name()
    }

    pub(crate) fn locks(&self) -> &[LockSpec] {
        self.rest.locks()
    }

    pub(crate) fn validate(&self) -> Result<(), SubmitError> {
        if self.get_timeout() == Some(Duration::ZERO) {
            return Err(SubmitError::InvalidOptions(
                "timeout must be greater than zero".into(),
            ));
        }
        for l in self.locks() {
            if l.permits == 0 {
                return Err(SubmitError::InvalidOptions(format!(
                    "limit `{}` must allow at least one task",
                    l.name
                )));
            }
            if l.name.is_empty() {
                return Err(SubmitError::InvalidOptions(
                    "lock names must not be empty".into(),
                ));
            }
        }
        self.get_retry().validate()
    }
}
