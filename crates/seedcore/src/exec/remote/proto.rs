//! The messages on Redis and their signatures.
//!
//! A task travels as one stream entry with two fields: `m`, the
//! postcard-encoded [`TaskMessage`], and `s`, its HMAC-SHA256 over the
//! shared secret. A result is one string: 32 bytes of HMAC, then the
//! encoded [`ResultMessage`]. The MAC also covers the format version, the
//! namespace, the message's type (task or result) and, for a task, its
//! stream, so a message cannot be moved to another deployment, another
//! priority level or passed off as a result. Nothing in a message is
//! executed: a worker looks the name up among the registered process tasks
//! and refuses anything unsigned, forged, expired, oversized or unknown.

use crate::error::{TaskError, TaskPanic};
use crate::options::{Backoff, RetryPolicy};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

/// The format's version, the first field of every message.
const VERSION: u8 = 3;

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
    /// The task's stable id ([`RemoteId`](super::RemoteId)): its result
    /// is found by it, and a cancel by id names it.
    pub(crate) id: String,
    /// Keep the result under the id for the result TTL, even once
    /// delivered (else it is deleted when its client reads it).
    pub(crate) keep: bool,
    /// Whether a client waits on its reply list (not for a detached
    /// submission).
    pub(crate) reply: bool,
    /// The retry policy: the worker retries the task itself, so retries
    /// survive the client.
    pub(crate) retry: Option<WireRetry>,
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

/// A [`RetryPolicy`] as a message carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireRetry {
    retries: u32,
    /// `None`: fixed delay `initial_ms`.
    factor: Option<f64>,
    initial_ms: u64,
    max_ms: u64,
    jitter: f64,
    on: u8,
}

impl WireRetry {
    /// The policy on the wire, or `None` if it retries nothing.
    pub(crate) fn from_policy(p: &RetryPolicy) -> Option<Self> {
        let (retries, backoff, jitter, on) = p.parts();
        if retries == 0 {
            return None;
        }
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
        let (factor, initial_ms, max_ms) = match backoff {
            Backoff::Fixed(d) => (None, ms(d), ms(d)),
            Backoff::Exponential {
                initial,
                factor,
                max,
            } => (Some(factor), ms(initial), ms(max)),
        };
        Some(WireRetry {
            retries,
            factor,
            initial_ms,
            max_ms,
            jitter,
            on,
        })
    }

    /// The policy the worker applies.
    pub(crate) fn policy(&self) -> RetryPolicy {
        let backoff = match self.factor {
            None => Backoff::Fixed(Duration::from_millis(self.initial_ms)),
            Some(factor) => Backoff::Exponential {
                initial: Duration::from_millis(self.initial_ms),
                factor,
                max: Duration::from_millis(self.max_ms),
            },
        };
        RetryPolicy::from_parts(self.retries, backoff, self.jitter, self.on)
    }

    /// The longest a task may take over all its attempts, each with
    /// `timeout`: what the client waits for.
    pub(crate) fn budget(&self, timeout: Duration) -> Duration {
        let p = self.policy();
        let n = self.retries.min(1000);
        let mut total = timeout.saturating_mul(n + 1);
        for a in 1..=n {
            // The delay before attempt a+1, at its longest (full jitter).
            total = total.saturating_add(p.delay_max(a));
        }
        total
    }
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
    /// The worker cannot run it (pool broken, unknown task, bad arguments,
    /// expired, oversized).
    Refused(String),
    /// The entry was delivered `deliveries` times, each delivery's worker
    /// died with it, and it went to the dead-letter stream.
    Poisoned {
        deliveries: u64,
    },
}

/// A worker's answer to one [`TaskMessage`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ResultMessage {
    pub(crate) version: u8,
    /// The task's stable id: a result fetched by id must carry it.
    pub(crate) id: String,
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

/// What a MAC is over, besides the body: the type of message and, for a
/// task, its stream's level.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Task(u8),
    Result,
}

/// The shared secret, keyed once, and the namespace it signs for.
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
    /// A signer for `namespace`: its MACs are bound to it.
    pub(crate) fn new(secret: &[u8], namespace: &str) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(&[VERSION]);
        mac.update(&(namespace.len() as u32).to_le_bytes());
        mac.update(namespace.as_bytes());
        Signer { mac }
    }

    fn keyed(&self, kind: Kind) -> HmacSha256 {
        let mut m = self.mac.clone();
        match kind {
            Kind::Task(level) => m.update(&[b'T', level]),
            Kind::Result => m.update(&[b'R', 0]),
        }
        m
    }

    pub(crate) fn sign(&self, kind: Kind, body: &[u8]) -> [u8; SIG_LEN] {
        let mut m = self.keyed(kind);
        m.update(body);
        m.finalize().into_bytes().into()
    }

    /// Constant-time check of `sig` over `body`.
    pub(crate) fn verify(&self, kind: Kind, body: &[u8], sig: &[u8]) -> bool {
        let mut m = self.keyed(kind);
        m.update(body);
        m.verify_slice(sig).is_ok()
    }

    /// A result as stored: signature then body.
    pub(crate) fn seal_result(&self, r: &ResultMessage) -> Vec<u8> {
        let body = postcard::to_allocvec(r).expect("results encode");
        let mut out = Vec::with_capacity(SIG_LEN + body.len());
        out.extend_from_slice(&self.sign(Kind::Result, &body));
        out.extend_from_slice(&body);
        out
    }

    /// Checks and decodes a stored result.
    pub(crate) fn open_result(&self, raw: &[u8]) -> Option<ResultMessage> {
        if raw.len() < SIG_LEN || !self.verify(Kind::Result, &raw[SIG_LEN..], &raw[..SIG_LEN]) {
            return None;
        }
        postcard::from_bytes(&raw[SIG_LEN..]).ok()
    }
}

impl TaskMessage {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("task messages encode")
    }

    /// The attempt's name in the client's live set and in cancels:
    /// `<task>:<attempt>`.
    pub(crate) fn field(&self) -> String {
        field(self.task, self.attempt)
    }
}

/// An attempt's field in its client's live set: `<task>:<attempt>`.
pub(crate) fn field(task: u64, attempt: u32) -> String {
    format!("{task}:{attempt}")
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

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unsigned => f.write_str("unsigned"),
            Refusal::Forged => f.write_str("forged (bad signature)"),
            Refusal::Malformed => f.write_str("malformed"),
            Refusal::Oversized(n) => write!(f, "oversized ({n} bytes)"),
            Refusal::Expired => f.write_str("expired before a worker took it"),
        }
    }
}

/// A refused entry, with its message where the signature held (then the
/// refusal is answered, signed, to the client that sent it).
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) why: Refusal,
    pub(crate) msg: Option<Box<TaskMessage>>,
}

/// Checks and decodes one stream entry's fields, read from the stream of
/// `level`.
pub(crate) fn open_task(
    signer: &Signer,
    level: u8,
    body: Option<&[u8]>,
    sig: Option<&[u8]>,
    max_payload: usize,
) -> Result<TaskMessage, Refused> {
    let no = |why| Refused { why, msg: None };
    let body = body.ok_or(no(Refusal::Malformed))?;
    let sig = sig.ok_or(no(Refusal::Unsigned))?;
    if !signer.verify(Kind::Task(level), body, sig) {
        return Err(no(Refusal::Forged));
    }
    let m: TaskMessage = postcard::from_bytes(body).map_err(|_| no(Refusal::Malformed))?;
    if m.version != VERSION || m.priority != level {
        return Err(no(Refusal::Malformed));
    }
    if m.args.len() > max_payload {
        return Err(Refused {
            why: Refusal::Oversized(body.len()),
            msg: Some(Box::new(m)),
        });
    }
    if m.expires_ms != 0 && m.expires_ms < unix_ms() {
        return Err(Refused {
            why: Refusal::Expired,
            msg: Some(Box::new(m)),
        });
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
            WireOutcome::Poisoned { deliveries } => Err(TaskError::WorkerDied {
                exit_code: None,
                signal: None,
                pid: None,
                task: None,
                detail: format!(
                    "poisoned: delivered {deliveries} times, its worker died each time; \
                     moved to the dead-letter stream (last seen by remote worker {worker})"
                ),
            }),
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
            id: "t-2".into(),
            keep: false,
            reply: true,
            retry: None,
            name: "echo".into(),
            priority: 5,
            expires_ms: 0,
            timeout_ms: None,
            args: vec![1, 2, 3],
        }
    }

    #[test]
    fn a_signed_message_opens_and_a_forged_one_does_not() {
        let s = Signer::new(b"secret", "ns");
        let body = msg().encode();
        let sig = s.sign(Kind::Task(5), &body);
        assert!(open_task(&s, 5, Some(&body), Some(&sig), 1 << 20).is_ok());
        let other = Signer::new(b"other", "ns");
        let why = |r: Result<TaskMessage, Refused>| r.unwrap_err().why;
        assert_eq!(
            why(open_task(&other, 5, Some(&body), Some(&sig), 1 << 20)),
            Refusal::Forged
        );
        let mut tampered = body.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            why(open_task(&s, 5, Some(&tampered), Some(&sig), 1 << 20)),
            Refusal::Forged
        );
        assert_eq!(
            why(open_task(&s, 5, Some(&body), None, 1 << 20)),
            Refusal::Unsigned
        );
        // Bound to its namespace, its stream and its type.
        let elsewhere = Signer::new(b"secret", "other-ns");
        assert_eq!(
            why(open_task(&elsewhere, 5, Some(&body), Some(&sig), 1 << 20)),
            Refusal::Forged
        );
        assert_eq!(
            why(open_task(&s, 0, Some(&body), Some(&sig), 1 << 20)),
            Refusal::Forged
        );
        let as_result = s.sign(Kind::Result, &body);
        assert_eq!(
            why(open_task(&s, 5, Some(&body), Some(&as_result), 1 << 20)),
            Refusal::Forged
        );
    }

    #[test]
    fn an_expired_message_is_refused() {
        let s = Signer::new(b"secret", "ns");
        let mut m = msg();
        m.expires_ms = 1;
        let body = m.encode();
        let sig = s.sign(Kind::Task(5), &body);
        let r = open_task(&s, 5, Some(&body), Some(&sig), 1 << 20).unwrap_err();
        assert_eq!(r.why, Refusal::Expired);
        assert_eq!(r.msg.unwrap().task, 2, "answered to its client");
    }

    #[test]
    fn retry_policies_travel_whole() {
        let p = RetryPolicy::retries(3)
            .backoff(Backoff::Exponential {
                initial: Duration::from_millis(100),
                factor: 2.0,
                max: Duration::from_secs(1),
            })
            .jitter(0.5)
            .on(crate::options::RetryOn::CRASH);
        let w = WireRetry::from_policy(&p).unwrap();
        let back: WireRetry = postcard::from_bytes(&postcard::to_allocvec(&w).unwrap()).unwrap();
        assert_eq!(back.policy(), p);
        assert!(WireRetry::from_policy(&RetryPolicy::none()).is_none());
        // 4 attempts of 1 s, delays of at most 150, 300 and 600 ms.
        assert_eq!(
            w.budget(Duration::from_secs(1)),
            Duration::from_millis(4000 + 150 + 300 + 600)
        );
    }

    #[test]
    fn results_are_sealed() {
        let s = Signer::new(b"k", "ns");
        let r = ResultMessage {
            version: VERSION,
            id: "t-2".into(),
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
