//! The balancer's settings on the builder.

use super::SystemBuilder;
use crate::config::{ExpandPolicy, QueueFull, ShrinkPolicy};
use std::time::Duration;

impl SystemBuilder {
    /// When the pools grow (default [`ExpandPolicy::AutoExpand`]).
    pub fn expand_policy(mut self, p: ExpandPolicy) -> Self {
        self.config_mut().balance.expand = p;
        self
    }

    /// When the pools shrink (`balance.shrink`, default
    /// [`ShrinkPolicy::AutoShrink`]); [`ShrinkPolicy::TimeoutShrink`] is also
    /// what retires idle worker processes above core.
    pub fn shrink_policy(mut self, p: ShrinkPolicy) -> Self {
        self.config_mut().balance.shrink = p;
        self
    }

    /// How long a thread or a worker process above core stays idle before
    /// [`ShrinkPolicy::TimeoutShrink`] retires it (`balance.shrink_timeout`).
    pub fn shrink_timeout(mut self, d: Duration) -> Self {
        self.config_mut().balance.shrink_timeout = d;
        self
    }

    /// How often the balancer samples the pools.
    pub fn balance_interval(mut self, d: Duration) -> Self {
        self.config_mut().balance.interval = d;
        self
    }

    /// The global task limit: at most `n` tasks accepted and not yet
    /// resolved; past it, submissions follow [`on_queue_full`](Self::on_queue_full).
    pub fn max_pending_tasks(mut self, n: u64) -> Self {
        self.config_mut().balance.max_pending_tasks = Some(n);
        self
    }

    /// What a submission does at the global task limit; `timeout` bounds a
    /// [`QueueFull::Wait`].
    pub fn on_queue_full(mut self, mode: QueueFull, timeout: Duration) -> Self {
        let c = self.config_mut();
        c.balance.on_queue_full = mode;
        c.balance.queue_full_timeout = timeout;
        self
    }

    /// The fraction of the task limit at which
    /// [`ExpandPolicy::BeforehandExpand`] grows ahead.
    pub fn expand_threshold(mut self, fraction: f64) -> Self {
        self.config_mut().balance.expand_threshold = fraction;
        self
    }

    /// No pool grows while the machine's available memory is below `bytes`.
    pub fn min_free_memory(mut self, bytes: u64) -> Self {
        self.config_mut().balance.min_free_memory = Some(bytes);
        self
    }

    /// No pool grows while the machine's CPU load (0..=1) is above `load`.
    pub fn max_cpu_load(mut self, load: f64) -> Self {
        self.config_mut().balance.max_cpu_load = Some(load);
        self
    }
}
