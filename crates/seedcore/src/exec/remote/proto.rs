//! The messages on Redis and their signatures.
//!
//! A task travels as one stream entry with two fields: `m`, the
//! postcard-encoded [`TaskMessage`], and `s`, its HMAC-SHA256 over the
//! shared secret. A result is one string: 32 bytes of HMAC, then the
//! encoded [`ResultMessage`]. Nothing in a message is executed: a worker
//! looks the name up among the registered process tasks and refuses
//! anything unsigned, forged, expired, oversized or unknown.

use crate::error::{TaskError, TaskPanic};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

/// The format's version, the first field of every message.
const VERSION: u8 = 1;

/// Length of a signature.
pub(crate) const SIG_LEN: usize = 32;

/// One attempt of one task, as a worker receives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskMessage {
    pub(crate) version: u8,
    /// The submitting client (random per system), which also names its
    /// reply list.
    pub(crate) client: u64,
    pub(crate) task: u64,
    pub(crate) attempt: u32,
    pub(crate) name: String,
    pub(crate) priority: u8,
    /// Unix milliseconds after which the message is refused (the client
    /// has stopped waiting).
    pub(crate) expires_ms: u64,
    /// The attempt's timeout, which the worker applies to its own pool.
    pub(crate) timeout_ms: Option<u64>,
    #[serde(with = "serde_bytes")]
    pub(crate) args: Vec<u8>,
}

/// How an attempt ended, as a worker reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WireOutcome {
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    Panicked(String),
    Failed(String),
    TimedOut(u64),
    Cancelled,
    WorkerDied {
        exit_code: Option<i32>,
        signal: Option<i32>,
        detail: String,
    },
    MemoryLimit {
        limit: u64,
        rss: u64,
    },
    /// The worker cannot run it (pool broken, unknown task, bad arguments).
    Refused(String),
}

/// A worker's answer to one [`TaskMessage`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ResultMessage {
    pub(crate) version: u8,
    pub(crate) client: u64,
    pub(crate) task: u64,
    pub(crate) attempt: u32,
    pub(crate) outcome: WireOutcome,
}

/// Unix time in milliseconds.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The shared secret, keyed once.
#[derive(Clone)]
pub(crate) struct Signer {
    mac: HmacSha256,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    pub(crate) fn new(secret: &[u8]) -> Self {
        Signer {
            mac: HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    pub(crate) fn sign(&self, body: &[u8]) -> [u8; SIG_LEN] {
        let mut m = self.mac.clone();
        m.update(&[VERSION]);
        m.update(body);
        m.finalize().into_bytes().into()
    }

    /// Constant-time check of `sig` over `body`.
    pub(crate) fn verify(&self, body: &[u8], sig: &[u8]) -> bool {
        let mut m = self.mac.clone();
        m.update(&[VERSION]);
        m.update(body);
        m.verify_slice(sig).is_ok()
    }

    /// A result as stored: signature then body.
    pub(crate) fn seal_result(&self, r: &ResultMessage) -> Vec<u8> {
        let body = postcard::to_allocvec(r).expect("results encode");
        let mut out = Vec::with_capacity(SIG_LEN + body.len());
        out.extend_from_slice(&self.sign(&body));
        out.extend_from_slice(&body);
        out
    }

    /// Checks and decodes a stored result.
    pub(crate) fn open_result(&self, raw: &[u8]) -> Option<ResultMessage> {
        if raw.len() < SIG_LEN || !self.verify(&raw[SIG_LEN..], &raw[..SIG_LEN]) {
            return None;
        }
        postcard::from_bytes(&raw[SIG_LEN..]).ok()
    }
}

impl TaskMessage {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("task messages encode")
    }
}

/// Why a worker refused a stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Unsigned,
    Forged,
    Malformed,
    Oversized(usize),
    Expired,
}

/// Checks and decodes one stream entry's fields.
pub(crate) fn open_task(
    signer: &Signer,
    body: Option<&[u8]>,
    sig: Option<&[u8]>,
    max_payload: usize,
) -> Result<TaskMessage, Refusal> {
    let body = body.ok_or(Refusal::Malformed)?;
    let sig = sig.ok_or(Refusal::Unsigned)?;
    if body.len() > max_payload + 1024 {
        return Err(Refusal::Oversized(body.len()));
    }
    if !signer.verify(body, sig) {
        return Err(Refusal::Forged);
    }
    let m: TaskMessage = postcard::from_bytes(body).map_err(|_| Refusal::Malformed)?;
    if m.version != VERSION {
        return Err(Refusal::Malformed);
    }
    if m.expires_ms != 0 && m.expires_ms < unix_ms() {
        return Err(Refusal::Expired);
    }
    Ok(m)
}

pub(crate) const fn version() -> u8 {
    VERSION
}

impl WireOutcome {
    /// A worker's local outcome on the wire.
    pub(crate) fn from_local(r: Result<Vec<u8>, TaskError>) -> Self {
        match r {
            Ok(b) => WireOutcome::Ok(b),
            Err(e) => match e {
                TaskError::Panicked(p) => WireOutcome::Panicked(p.to_string()),
                TaskError::Failed(e) => WireOutcome::Failed(e.to_string()),
                TaskError::TimedOut(d) => WireOutcome::TimedOut(d.as_millis() as u64),
                TaskError::Cancelled | TaskError::SystemShutdown => WireOutcome::Cancelled,
                TaskError::WorkerDied {
                    exit_code,
                    signal,
                    detail,
                    ..
                } => WireOutcome::WorkerDied {
                    exit_code,
                    signal,
                    detail,
                },
                TaskError::MemoryLimit { limit, rss } => WireOutcome::MemoryLimit { limit, rss },
                TaskError::PoolBroken(why) => WireOutcome::Refused(why),
                other => WireOutcome::Failed(other.to_string()),
            },
        }
    }

    /// The client's view: bytes to decode, or the task's error.
    pub(crate) fn into_local(self, worker: &str) -> Result<Vec<u8>, TaskError> {
        match self {
            WireOutcome::Ok(b) => Ok(b),
            WireOutcome::Panicked(m) => Err(TaskError::Panicked(TaskPanic::new(m))),
            WireOutcome::Failed(m) => Err(TaskError::failed(m)),
            WireOutcome::TimedOut(ms) => Err(TaskError::TimedOut(Duration::from_millis(ms))),
            WireOutcome::Cancelled => Err(TaskError::Cancelled),
            WireOutcome::WorkerDied {
                exit_code,
                signal,
                detail,
            } => Err(TaskError::WorkerDied {
                exit_code,
                signal,
                pid: None,
                task: None,
                detail: format!("{detail} (on remote worker {worker})"),
            }),
            WireOutcome::MemoryLimit { limit, rss } => Err(TaskError::MemoryLimit { limit, rss }),
            WireOutcome::Refused(why) => Err(TaskError::failed(format!(
                "the remote worker refused the task: {why}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> TaskMessage {
        TaskMessage {
            version: VERSION,
            client: 1,
            task: 2,
            attempt: 1,
            name: "echo".into(),
            priority: 5,
            expires_ms: 0,
            timeout_ms: None,
            args: vec![1, 2, 3],
        }
    }

    #[test]
    fn a_signed_message_opens_and_a_forged_one_does_not() {
        let s = Signer::new(b"secret");
        let body = msg().encode();
        let sig = s.sign(&body);
        assert!(open_task(&s, Some(&body), Some(&sig), 1 << 20).is_ok());
        let other = Signer::new(b"other");
        assert_eq!(
            open_task(&other, Some(&body), Some(&sig), 1 << 20).unwrap_err(),
            Refusal::Forged
        );
        let mut tampered = body.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            open_task(&s, Some(&tampered), Some(&sig), 1 << 20).unwrap_err(),
            Refusal::Forged
        );
        assert_eq!(
            open_task(&s, Some(&body), None, 1 << 20).unwrap_err(),
            Refusal::Unsigned
        );
    }

    #[test]
    fn an_expired_message_is_refused() {
        let s = Signer::new(b"secret");
        let mut m = msg();
        m.expires_ms = 1;
        let body = m.encode();
        let sig = s.sign(&body);
        assert_eq!(
            open_task(&s, Some(&body), Some(&sig), 1 << 20).unwrap_err(),
            Refusal::Expired
        );
    }

    #[test]
    fn results_are_sealed() {
        let s = Signer::new(b"k");
        let r = ResultMessage {
            version: VERSION,
            client: 1,
            task: 2,
            attempt: 3,
            outcome: WireOutcome::Ok(vec![9]),
        };
        let mut raw = s.seal_result(&r);
        assert_eq!(s.open_result(&raw).unwrap().attempt, 3);
        raw[0] ^= 1;
        assert!(s.open_result(&raw).is_none());
    }
}
