//! The builder's setting that sets two keys at once (the others are
//! generated from the key table).

use super::SystemBuilder;
use crate::config::QueueFull;
use std::time::Duration;

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
