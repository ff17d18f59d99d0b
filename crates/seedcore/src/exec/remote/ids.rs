//! Remote tasks by id: [`RemoteId`] and [`RemoteClient`], which submits,
//! fetches results and cancels from any process, past the life of the
//! one that submitted.

use super::proto::{self, unix_ms, Kind, Signer, TaskMessage, WireRetry};
use super::streams::{self, Keys};
use super::{RemoteConfig, RemoteError};
use crate::error::{SubmitError, TaskError};
use crate::options::TaskOptions;
use crate::ProcessTask;
use redis::aio::MultiplexedConnection;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest id accepted, in bytes.
const MAX_ID_BYTES: usize = 200;

/// The stable id of a remote task: its result is kept under it, and
/// [`RemoteClient::result`] and [`RemoteClient::cancel`] find the task by
/// it from any process. Ids are 1 to 200 bytes of ASCII letters, digits
/// and `. _ : -`; give each task its own (a second task under the same id
/// replaces the first one's result).
///
/// ```
/// use seedcore::remote::RemoteId;
/// let id = RemoteId::new("invoice-2026-0042").unwrap();
/// assert_eq!(id.to_string(), "invoice-2026-0042");
/// assert!(RemoteId::new("no spaces").is_err());
/// assert_ne!(RemoteId::generate(), RemoteId::generate());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteId(Arc<str>);

impl RemoteId {
    /// An id chosen by the caller; [`RemoteError::BadSetting`] if it is
    /// empty, too long or holds other characters.
    pub fn new(id: impl Into<String>) -> Result<Self, RemoteError> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= MAX_ID_BYTES
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        if !ok {
            return Err(RemoteError::BadSetting(format!(
                "a remote task id is 1 to {MAX_ID_BYTES} ASCII letters, digits or `. _ : -`, \
                 not {id:?}"
            )));
        }
        Ok(RemoteId(id.into()))
    }

    /// A fresh random id (128 bits, hexadecimal).
    pub fn generate() -> Self {
        RemoteId(format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)).into())
    }

    /// The id of the task `task` of the client `client`: what
    /// [`submit_remote`](crate::ConcurrentSystem::submit_remote) gives a
    /// task that was not given an id.
    pub(crate) fn of_task(client: u64, task: u64) -> Self {
        RemoteId(format!("{client:x}-{task}").into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RemoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RemoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteId({})", self.0)
    }
}

impl std::str::FromStr for RemoteId {
    type Err = RemoteError;
    fn from_str(s: &str) -> Result<Self, RemoteError> {
        RemoteId::new(s)
    }
}

/// A connection to a remote deployment that works by task id, without a
/// [`ConcurrentSystem`](crate::ConcurrentSystem): submit a task and go
/// (the task runs, and retries, whether or not this process lives on),
/// fetch a result by id, cancel by id — from any process that has the
/// deployment's URL and secret.
///
/// ```no_run
/// use seedcore::remote::{RemoteClient, RemoteConfig, RemoteId};
/// use seedcore::{ProcessTask, RetryPolicy, TaskOptions};
/// use std::time::Duration;
///
/// const RENDER: ProcessTask<u32, String> = ProcessTask::external("render");
///
/// let cfg = RemoteConfig::new("redis://127.0.0.1:6379").secret_file("/run/secrets/seedcore")?;
/// let client = RemoteClient::connect(cfg.clone())?;
/// let id = RemoteId::new("report-7")?;
/// let opts = TaskOptions::new().retry(RetryPolicy::retries(2));
/// client.submit(&opts, id.clone(), RENDER, &7)?;
/// // Later, from this process or another one:
/// let other = RemoteClient::connect(cfg)?;
/// match other.result(&id, RENDER, Duration::from_secs(30))? {
///     Some(Ok(page)) => println!("{page}"),
///     Some(Err(e)) => eprintln!("failed: {e}"),
///     None => eprintln!("not finished yet"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RemoteClient {
    cfg: RemoteConfig,
    keys: Keys,
    signer: Signer,
    client_id: u64,
    rt: tokio::runtime::Runtime,
    conn: parking_lot::Mutex<MultiplexedConnection>,
}

impl fmt::Debug for RemoteClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteClient")
            .field("config", &self.cfg)
            .finish()
    }
}

impl RemoteClient {
    /// Connects to the deployment (a typed error for a bad URL or secret,
    /// a refused password, an unreachable server).
    pub fn connect(config: RemoteConfig) -> Result<Self, RemoteError> {
        config.validate()?;
        let redis = streams::client(&config)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Redis(format!("cannot start the I/O runtime: {e}")))?;
        let keys = Keys::new(&config.namespace);
        let mut conn = rt.block_on(streams::first_connect(&config, &redis))?;
        rt.block_on(streams::ensure_groups(&mut conn, &keys))
            .map_err(|e| RemoteError::Redis(e.to_string()))?;
        Ok(RemoteClient {
            signer: Signer::new(&config.secret, &config.namespace),
            keys,
            client_id: fastrand::u64(1..),
            rt,
            conn: parking_lot::Mutex::new(conn),
            cfg: config,
        })
    }

    fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, RemoteError> {
        let mut conn = self.conn.lock();
        self.rt
            .block_on(pipe.query_async(&mut *conn))
            .map_err(|e| RemoteError::Redis(e.to_string()))
    }

    /// Queues `task` with `args` under `id` and returns once Redis holds
    /// it. Its result is kept under the id for the result TTL; the retry
    /// policy of `opts` travels with the message (the worker retries), and
    /// its timeout applies to each attempt.
    pub fn submit<A, R>(
        &self,
        opts: &TaskOptions,
        id: RemoteId,
        task: ProcessTask<A, R>,
        args: &A,
    ) -> Result<RemoteId, SubmitError>
    where
        A: serde::Serialize,
    {
        opts.validate()?;
        if !opts.locks().is_empty() {
            return Err(SubmitError::InvalidOptions(
                "locks and limits are held by a ConcurrentSystem; a detached remote task cannot \
                 take them"
                    .into(),
            ));
        }
        let enc = crate::exec::process::encode_args(args)?;
        if !enc.fds.is_empty() {
            return Err(SubmitError::Serialize(
                "shared-memory buffers cannot travel to remote workers".into(),
            ));
        }
        if enc.bytes.len() > self.cfg.max_payload_bytes {
            return Err(SubmitError::PayloadTooLarge {
                size: enc.bytes.len(),
                limit: self.cfg.max_payload_bytes,
            });
        }
        let retry = WireRetry::from_policy(opts.get_retry());
        let life = match (opts.get_timeout(), &retry) {
            (None, _) => self.cfg.message_ttl,
            (Some(t), None) => t,
            (Some(t), Some(r)) => r.budget(t),
        };
        let now = unix_ms();
        let level = opts.get_priority().level();
        let msg = TaskMessage {
            version: proto::version(),
            client: self.client_id,
            task: fastrand::u64(..),
            attempt: 1,
            id: id.as_str().to_owned(),
            keep: true,
            reply: false,
            retry,
            name: task.name().to_owned(),
            priority: level,
            expires_ms: now + life.as_millis() as u64,
            timeout_ms: opts.get_timeout().map(|t| t.as_millis() as u64),
            args: enc.bytes,
        };
        let body = msg.encode();
        let sig = self.signer.sign(Kind::Task(level), &body);
        let live = self.keys.live(self.client_id);
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(&live)
            .arg(msg.field())
            .arg("0")
            .ignore();
        pipe.cmd("PEXPIREAT")
            .arg(&live)
            .arg(msg.expires_ms + 60_000)
            .arg("GT")
            .ignore();
        // A fresh live set has no expiry for `GT` to compare with.
        pipe.cmd("PEXPIREAT")
            .arg(&live)
            .arg(msg.expires_ms + 60_000)
            .arg("NX")
            .ignore();
        // A new task under this id: no old result, no old cancel.
        pipe.cmd("DEL")
            .arg(self.keys.result(id.as_str()))
            .arg(self.keys.cancelled(id.as_str()))
            .ignore();
        pipe.cmd("XADD")
            .arg(self.keys.stream(level))
            .arg("*")
            .arg("m")
            .arg(body)
            .arg("s")
            .arg(sig.as_slice())
            .ignore();
        self.query::<()>(&pipe)
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?;
        Ok(id)
    }

    /// The outcome of the task `id`, waiting up to `timeout` for it:
    /// `None` if it has not finished by then (or its result expired, or
    /// was delivered to the system that submitted it without being kept).
    /// `task` names the result's type.
    pub fn result<A, R>(
        &self,
        id: &RemoteId,
        task: ProcessTask<A, R>,
        timeout: Duration,
    ) -> Result<Option<Result<R, TaskError>>, RemoteError>
    where
        R: serde::de::DeserializeOwned,
    {
        let _ = task;
        let key = self.keys.result(id.as_str());
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(&key);
            let (raw,): (Option<Vec<u8>>,) = self.query(&pipe)?;
            if let Some(raw) = raw {
                let r = self
                    .signer
                    .open_result(&raw)
                    .filter(|r| r.id == id.as_str());
                let Some(r) = r else {
                    return Err(RemoteError::Redis(format!(
                        "the result stored for {id} is not signed by this deployment"
                    )));
                };
                return Ok(Some(
                    r.outcome
                        .into_local("remote")
                        .and_then(|b| super::client::decode_caught::<R>(&b)),
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Cancels the task `id` wherever it is: a worker that runs it stops
    /// it, one that reads its message later answers `Cancelled` without
    /// running it; the system that submitted it (if any) sees its future
    /// resolve [`TaskError::Cancelled`]. `false` if it had finished
    /// already.
    pub fn cancel(&self, id: &RemoteId) -> Result<bool, RemoteError> {
        let mark_ms = (self.cfg.message_ttl + self.cfg.visibility_timeout).as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(self.keys.result(id.as_str()));
        pipe.cmd("SET")
            .arg(self.keys.cancelled(id.as_str()))
            .arg("1")
            .arg("PX")
            .arg(mark_ms)
            .ignore();
        pipe.cmd("PUBLISH")
            .arg(self.keys.cancel_channel())
            .arg(format!("id:{id}"))
            .ignore();
        let (done,): (i64,) = self.query(&pipe)?;
        Ok(done == 0)
    }
}
