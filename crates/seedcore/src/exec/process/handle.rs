//! The parent's record of one worker process: its socket, its status page,
//! what it has been sent, and why it was killed, if it was.
//!
//! # Workers
//!
//! Each worker is a process of the pool's program in its own process group,
//! with a socket pair for frames, a status page (`status.rs`), and one pipe
//! for its stdout and stderr. One reader thread per worker takes its frames
//! and, at the end of the stream, reaps the process, so no zombie is left.
//!
//! # Protocol
//!
//! The messages are in `proto.rs`; in the order of a worker's life:
//!
//! 1. **hello**: the worker's first frame, `Hello { pid, tasks }`. Its
//!    reader checks the pid, records the tasks the program serves and moves
//!    it from [`STARTING`] to [`READY`]; until then it is sent nothing, and
//!    if it does not come within the start timeout the worker is killed.
//! 2. **run**: `pump` sends `Run { id, .. }` (with the descriptors of the
//!    task's shared buffers). Each sending gets a fresh run id, entered in
//!    `inflight` before the frame is written, so a report can never be taken
//!    for another attempt's.
//! 3. **done**: the worker answers every `Run` with one `Done { id, outcome }`;
//!    the reader takes the entry out of `inflight` and settles the task.
//! 4. **cancel**: a task that is not running on it (one waiting in its
//!    queue, or an async one) is stopped with `Cancel { id }`; the worker
//!    answers `Done(Cancelled)` if it still had it. A running sync task is
//!    stopped by killing the worker instead.
//! 5. **exit**: a worker that holds nothing is sent `Exit` and moves to
//!    [`RETIRING`]; it finishes, runs its finalizer and exits, and the end
//!    of its stream is its death (`reap.rs`).
//!
//! # Invariants
//!
//! * `state` only moves forward: STARTING → READY → RETIRING → DEAD
//!   (STARTING or READY may go straight to DEAD).
//! * `load` counts the entries of `inflight` plus the slots `pump` has
//!   reserved for tasks on their way; it is reset when the worker is buried.
//! * `killed` keeps the first reason only: the one that decides how its
//!   running task ends.

use super::dispatch::ProcessJob;
use super::proto::ToWorkerRef;
use super::status::StatusPage;
use crate::task::Attempt;
use crate::wire::frame::{write_frames, OutFrame};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;

/// Why the pool killed a worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Kill {
    Timeout,
    Cancel,
    Memory { rss: u64 },
    StartTimeout,
    Shutdown,
}

/// Started, has not said hello: takes no tasks yet.
pub(super) const STARTING: u8 = 0;
/// Said hello: `pump` may send it tasks.
pub(super) const READY: u8 = 1;
/// Sent `Exit` while it held nothing: takes no more tasks.
pub(super) const RETIRING: u8 = 2;
/// Its stream ended and `bury` has it: set under `inflight`'s lock,
/// after which nothing more is entered there.
pub(super) const DEAD: u8 = 3;

/// One task sent to a worker, under its run id (one per sending, so a
/// late report of an earlier attempt can never be taken for a later one).
pub(super) struct InFlight {
    pub(super) job: Arc<dyn ProcessJob>,
    pub(super) attempt: Attempt,
}

/// One worker process, as the parent sees it.
pub(crate) struct Worker {
    pub(super) index: usize,
    pub(super) pid: u32,
    pub(super) tx: Mutex<UnixStream>,
    pub(super) status: StatusPage,
    pub(super) state: AtomicU8,
    /// Tasks sent and not yet reported.
    pub(super) load: AtomicUsize,
    /// Whether what it holds now is async work.
    pub(super) holds_async: AtomicBool,
    pub(super) inflight: Mutex<HashMap<u64, InFlight>>,
    pub(super) killed: Mutex<Option<Kill>>,
    pub(super) child: Mutex<Option<Child>>,
    pub(super) idle_since: Mutex<Instant>,
    /// When it last reported a sync task.
    pub(super) last_done: Mutex<crate::task::StatClock>,
    pub(super) done: AtomicUsize,
    /// Tasks handed to it so far (recycling counts these).
    pub(super) sent: AtomicUsize,
}

impl Worker {
    pub(super) fn kill(&self, why: Kill) {
        let mut k = self.killed.lock();
        if k.is_none() {
            *k = Some(why);
        }
        drop(k);
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }

    pub(super) fn send(&self, frames: &[OutFrame<'_>]) -> bool {
        let tx = self.tx.lock();
        write_frames(&tx, frames).is_ok()
    }

    /// Sends one control message (no shared buffers).
    pub(super) fn send_msg(&self, msg: &ToWorkerRef<'_>) -> bool {
        let payload = postcard::to_allocvec(msg).expect("control messages encode");
        self.send(&[OutFrame {
            payload: &payload,
            fds: Vec::new(),
        }])
    }

    /// The pid of the worker process.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }
}
