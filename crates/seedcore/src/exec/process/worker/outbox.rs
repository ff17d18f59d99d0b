//! A worker's results on their way to the parent: encoded as they come,
//! written in batches.
//!
//! # Invariants
//!
//! * No frame is over the parent's frame limit or carries more descriptors
//!   than one frame may: a result over the limit goes through shared memory
//!   (`Outcome::Boxed`), and one that cannot is replaced by a `Failed` one
//!   that says why, rather than lost with a refused frame.
//! * A result waits at most [`FLUSH_AFTER`] (or until 64 are waiting) when
//!   the main loop has more to run; the main loop also writes everything
//!   before each sync task starts and before it blocks.

use super::super::proto::FromWorker;
use super::super::registry::Outcome;
use crate::wire::frame::{write_frames, OutFrame, MAX_FDS};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How long a result may wait for others to share its write.
const FLUSH_AFTER: Duration = Duration::from_micros(200);

/// Results waiting to be written, and the socket they go to.
pub(super) struct Outbox {
    pub(super) sock: UnixStream,
    pub(super) frames: Vec<(Vec<u8>, Vec<OwnedFd>)>,
    /// When the oldest unwritten result came.
    pub(super) since: Option<Instant>,
    pub(super) max_frame: usize,
}

impl Outbox {
    pub(super) fn push(&mut self, id: u64, outcome: Outcome, fds: Vec<OwnedFd>) {
        let hint = match &outcome {
            Outcome::Ok(b) => b.len() + 32,
            _ => 256,
        };
        let msg = FromWorker::Done { id, outcome };
        let mut bytes = crate::wire::codec::to_vec(&msg, hint).expect("results encode");
        let mut fds = fds;
        if bytes.len() > self.max_frame && fds.len() < MAX_FDS {
            // Too large for a frame: the result goes through shared memory.
            let FromWorker::Done { outcome, .. } = &msg else {
                unreachable!("push builds only results")
            };
            let Outcome::Ok(payload) = outcome else {
                // An error too large for a frame (a huge message or
                // payload): its start says what it was.
                let text = match outcome {
                    Outcome::Failed(m) | Outcome::Raised { message: m, .. } => m.as_str(),
                    _ => "",
                };
                let cut: String = text.chars().take(4096).collect();
                let failed = FromWorker::Done {
                    id,
                    outcome: Outcome::Failed(format!(
                        "the task's error is over the frame limit ({} encoded); it began: {cut}",
                        crate::error::human_bytes(bytes.len() as u64)
                    )),
                };
                self.frames.push((
                    postcard::to_allocvec(&failed).expect("results encode"),
                    Vec::new(),
                ));
                self.since.get_or_insert_with(Instant::now);
                return;
            };
            match crate::wire::shm::export_bytes(payload) {
                Ok(fd) => {
                    let boxed = FromWorker::Done {
                        id,
                        outcome: Outcome::Boxed(payload.len() as u64),
                    };
                    bytes = postcard::to_allocvec(&boxed).expect("results encode");
                    fds.push(fd);
                }
                Err(e) => {
                    let failed = FromWorker::Done {
                        id,
                        outcome: Outcome::Failed(format!(
                            "the result takes {}, over the frame limit, and shared memory for it was refused: {e}",
                            crate::error::human_bytes(payload.len() as u64)
                        )),
                    };
                    bytes = postcard::to_allocvec(&failed).expect("results encode");
                    fds = Vec::new();
                }
            }
        }
        if fds.len() > MAX_FDS {
            // The socket would refuse the descriptors and the result would
            // be lost: say why instead.
            let why = format!(
                "the result holds {} shared buffers, over the {MAX_FDS} one frame carries",
                fds.len()
            );
            let msg = FromWorker::Done {
                id,
                outcome: Outcome::Failed(why),
            };
            bytes = postcard::to_allocvec(&msg).expect("results encode");
            fds = Vec::new();
        }
        self.frames.push((bytes, fds));
        self.since.get_or_insert_with(Instant::now);
    }

    pub(super) fn flush(&mut self) -> std::io::Result<()> {
        if self.frames.is_empty() {
            return Ok(());
        }
        let out: Vec<OutFrame<'_>> = self
            .frames
            .iter()
            .map(|(p, fds)| OutFrame {
                payload: p,
                fds: fds.iter().map(|f| f.as_fd()).collect(),
            })
            .collect();
        let r = write_frames(&self.sock, &out);
        drop(out);
        self.frames.clear();
        self.since = None;
        r
    }

    pub(super) fn due(&self) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= FLUSH_AFTER) || self.frames.len() >= 64
    }
}
