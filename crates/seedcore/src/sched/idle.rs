//! How idle workers (pool threads, async drivers) sleep and how submitters
//! wake them.
//!
//! The protocol (a Dekker-style handshake, no lost wake-ups):
//!
//! 1. A worker that found no work calls [`Idle::prepare`] (announces itself
//!    as a sleeper, `SeqCst`), then looks at the queue once more. If it finds
//!    work it calls [`Idle::cancel`]; otherwise [`Idle::sleep`].
//! 2. A submitter publishes its work, then calls [`Idle::notify_one`], which
//!    issues a `SeqCst` fence and reads the sleeper count.
//!
//! Either the worker's second look sees the work, or the submitter sees the
//! sleeper and leaves a token. Tokens are counted under the mutex, so a
//! token left before the sleeper reaches the condition variable is not
//! lost; an extra token costs one spurious wake-up, nothing more. The
//! submit path touches only the fence and one load while nobody sleeps.
//!
//! This file names its primitives only through `crate::sync`, so that the
//! model-checking tests can compile it against loom.

use crate::sync::{fence, lock, AtomicUsize, Condvar, Mutex, Ordering};
use std::time::Duration;

/// Sleep and wake-up bookkeeping of one group of worker threads.
pub(crate) struct Idle {
    sleepers: AtomicUsize,
    tokens: Mutex<usize>,
    cv: Condvar,
}

impl Idle {
    pub(crate) fn new() -> Self {
        Idle {
            sleepers: AtomicUsize::new(0),
            tokens: Mutex::new(0),
            cv: Condvar::new(),
        }
    }

    /// Step 1: announce that this thread is about to sleep.
    pub(crate) fn prepare(&self) {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `notify_one`: the caller's second look at
        // the queue comes after this in the single order of SeqCst fences.
        fence(Ordering::SeqCst);
    }

    /// Step 1, work found after all: withdraw the announcement.
    pub(crate) fn cancel(&self) {
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Sleeps until a token arrives (`true`) or `timeout` passes without
    /// one (`false`). Either way the announcement is withdrawn.
    pub(crate) fn sleep(&self, timeout: Option<Duration>) -> bool {
        let mut tokens = lock(&self.tokens);
        loop {
            if *tokens > 0 {
                *tokens -= 1;
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return true;
            }
            match timeout {
                None => tokens = self.cv.wait(tokens).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let (g, res) = self
                        .cv
                        .wait_timeout(tokens, d)
                        .unwrap_or_else(|e| e.into_inner());
                    tokens = g;
                    if res.timed_out() && *tokens == 0 {
                        self.sleepers.fetch_sub(1, Ordering::SeqCst);
                        return false;
                    }
                }
            }
        }
    }

    /// Step 2: after publishing work, wake one sleeper if there is one.
    /// `false`: nobody was asleep (or about to be).
    pub(crate) fn notify_one(&self) -> bool {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) == 0 {
            return false;
        }
        let mut tokens = lock(&self.tokens);
        if *tokens < self.sleepers.load(Ordering::SeqCst) {
            *tokens += 1;
            self.cv.notify_one();
        }
        true
    }

    /// Wakes every sleeper (shutdown, or a batch of work).
    pub(crate) fn notify_all(&self) {
        fence(Ordering::SeqCst);
        let mut tokens = lock(&self.tokens);
        let sleepers = self.sleepers.load(Ordering::SeqCst);
        if *tokens < sleepers {
            *tokens = sleepers;
        }
        self.cv.notify_all();
    }
}
