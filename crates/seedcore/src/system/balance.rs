//! What the balancer reads of the system (the narrow view it implements
//! for it), and the builder's setting that sets two of its keys at once
//! (the others are generated from the key table).

use super::{Shared, SystemBuilder};
use crate::balance::{BalanceState, Balanced};
use crate::config::{Config, QueueFull};
use crate::sched::Scheduler;
use std::time::Duration;

impl Balanced for Shared {
    fn config(&self) -> &Config {
        &self.config
    }

    fn sched(&self) -> &Scheduler {
        &self.sched
    }

    fn balance(&self) -> &BalanceState {
        &self.balance
    }
}

impl SystemBuilder {
    /// What a submission does at the global task limit; `timeout` bounds a
    /// [`QueueFull::Wait`].
    pub fn on_queue_full(mut self, mode: QueueFull, timeout: Duration) -> Self {
        let c = self.config_mut();
        c.balance.on_queue_full = mode;
        c.balance.queue_full_timeout = timeout;
        self
    }
}
