//! The settings that are one of a few named values: the balancer's
//! policies, the global task limit's behaviour, and the worker processes'
//! priority and output.

use crate::snapshot::named;
use std::fmt;

/// When the pools grow; see the rules on [`Balancer`](crate::balance::Balancer).
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

/// When the pools shrink; see the rules on [`Balancer`](crate::balance::Balancer).
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

named!(ExpandPolicy { NoExpand => "none", AutoExpand => "auto", BeforehandExpand => "beforehand" });
named!(ShrinkPolicy { NoShrink => "none", AutoShrink => "auto", TimeoutShrink => "timeout" });
named!(QueueFull { Fail => "fail", Wait => "wait" });

/// OS scheduling priority of worker processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessPriority {
    /// Runs only when nothing else wants the CPU (nice 19).
    Idle,
    /// nice 10.
    BelowNormal,
    /// The parent's priority (nice 0).
    #[default]
    Normal,
    /// nice -5 (needs privileges on most systems).
    AboveNormal,
    /// nice -10 (needs privileges on most systems).
    High,
    /// Real-time FIFO scheduling, where the OS allows it.
    Realtime,
}

/// Where worker processes' stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerOutput {
    /// Line by line to this process's stderr, each line prefixed with the
    /// worker's index and pid and the task it was running.
    #[default]
    Forward,
    /// Straight to this process's stdout and stderr.
    Inherit,
    /// Dropped.
    Discard,
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
