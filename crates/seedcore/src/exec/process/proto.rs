//! The messages of the parent–worker protocol (postcard-encoded frame
//! payloads; see `frame.rs` for the framing).
//!
//! ```text
//! worker → parent  Hello { pid, tasks }          once, first
//!                  (or StartFailed { why }, then it exits)
//! parent → worker  Run { id, priority, task, args, boxed } + descriptors of shared buffers
//!                  (arguments over the frame limit travel in one more memfd: `boxed`)
//! worker → parent  Done { id, outcome }          + descriptors, once per Run
//!                  (a result over the frame limit: `Outcome::Boxed(len)` + its memfd last)
//! parent → worker  Cancel { id }                 worker drops it if not started
//!                                                (and answers Done(Cancelled))
//! parent → worker  Exit                          worker finishes and exits
//! ```
//!
//! A worker runs sync tasks one at a time, most urgent first among those it
//! has been sent, and async tasks concurrently. Which task it is running is
//! in its status page (`status.rs`), not in a message.

use super::registry::Outcome;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
pub(crate) enum ToWorker {
    Run {
        id: u64,
        priority: u8,
        task: String,
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        /// The arguments are over the frame limit: they are in the last
        /// descriptor (a sealed memfd of this many bytes), not in `args`.
        boxed: Option<u64>,
    },
    Cancel {
        id: u64,
    },
    Exit,
}

/// The parent's side of [`ToWorker`]: the same encoding, borrowing.
#[derive(Debug, Serialize)]
pub(crate) enum ToWorkerRef<'a> {
    Run {
        id: u64,
        priority: u8,
        task: &'a str,
        #[serde(with = "serde_bytes")]
        args: &'a [u8],
        boxed: Option<u64>,
    },
    Cancel {
        id: u64,
    },
    Exit,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    Hello {
        pid: u32,
        tasks: Vec<(String, bool)>,
    },
    Done {
        id: u64,
        outcome: Outcome,
    },
    /// Instead of `Hello`: the worker cannot serve (its initializer
    /// failed, or the program never called `seedcore::init()`); it exits
    /// next.
    StartFailed {
        why: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_borrowed_and_owned_forms_encode_alike() {
        let bytes = postcard::to_allocvec(&ToWorkerRef::Run {
            id: 9,
            priority: 3,
            task: "m::t",
            args: &[1, 2, 3],
            boxed: Some(7),
        })
        .unwrap();
        match postcard::from_bytes::<ToWorker>(&bytes).unwrap() {
            ToWorker::Run {
                id,
                priority,
                task,
                args,
                boxed,
            } => {
                assert_eq!(
                    (id, priority, task.as_str(), args.as_slice(), boxed),
                    (9, 3, "m::t", &[1u8, 2, 3][..], Some(7))
                )
            }
            other => panic!("{other:?}"),
        }
        let b = postcard::to_allocvec(&ToWorkerRef::Cancel { id: 4 }).unwrap();
        assert!(matches!(
            postcard::from_bytes::<ToWorker>(&b).unwrap(),
            ToWorker::Cancel { id: 4 }
        ));
        let b = postcard::to_allocvec(&ToWorkerRef::Exit).unwrap();
        assert!(matches!(
            postcard::from_bytes::<ToWorker>(&b).unwrap(),
            ToWorker::Exit
        ));
    }
}
