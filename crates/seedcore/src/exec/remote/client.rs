//! The client side: the remote executor of a [`ConcurrentSystem`], its
//! task body, the sender of task messages and the reader of results.
//!
//! An attempt begins when its message is handed to the sender (the
//! deadline runs from there) and ends when its result arrives, or when a
//! deadline, a cancel or the shutdown stops it ([`RemoteExec`]'s
//! `stop_attempt` also tells the worker, which cancels its local task).

use super::ids::RemoteId;
use super::proto::{self, unix_ms, Kind, Signer, TaskMessage, WireRetry};
use super::streams::{self, Keys};
use super::{RemoteConfig, RemoteError};
use crate::error::{SubmitError, TaskError};
use crate::options::{RetryOn, RetryPolicy, TaskOptions, LEVELS};
use crate::sched::ShutdownMode;
use crate::sched::{Executor, ExecutorStats, Latch, LatchHold, Runnable, StopReport, WorkerInfo};
use crate::task::{Attempt, Body, ExecutorKind, Job, StopReason, TaskCell, TaskId};
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The executor's kind in stats, the monitor and metrics.
pub(crate) const KIND: ExecutorKind = ExecutorKind::Remote;

/// What the sender writes.
enum Outgoing {
    /// A task message, and its attempt's field in the live set.
    Task {
        key: (u64, u32),
        rid: RemoteId,
        level: u8,
        body: Arc<[u8]>,
        sig: Arc<[u8]>,
        /// Sent again after a restart of the server: only if no result.
        again: bool,
    },
    /// An attempt that ended here: out of the live set (a worker that
    /// reads its entry refuses it) and, if running, cancelled.
    Cancel { field: String },
    /// Attempts that ended here while the server was unreachable: out of
    /// the live set and into the gone set (see [`streams::FORGET`]).
    Forget { fields: Vec<String> },
}

/// An attempt waiting for its result.
struct Pending {
    job: Arc<dyn RemoteJob>,
    attempt: Attempt,
    /// The task's id: its result's key.
    rid: RemoteId,
    /// Keep the result under the id once delivered.
    keep: bool,
    level: u8,
    body: Arc<[u8]>,
    sig: Arc<[u8]>,
    /// When its message expires (Unix ms), and how long it was valid.
    expires_ms: u64,
    life: Duration,
    /// Counts it in `Inner::unanswered` until it is dropped.
    _unanswered: LatchHold,
}

/// A remote task as the executor holds it.
pub(crate) trait RemoteJob: Send + Sync + 'static {
    /// Attempt `a` ended: with the worker's result (`from_worker`: final,
    /// the worker applied the retry policy), or stopped here (retried
    /// here by the policy).
    fn finish(self: Arc<Self>, a: Attempt, r: Result<Vec<u8>, TaskError>, from_worker: bool);
    /// Resolves the task with `e` (shutdown).
    fn fail_with(&self, e: TaskError);
}

/// State shared by the executor, its bodies and its loops.
pub(crate) struct Inner {
    cfg: RemoteConfig,
    keys: Keys,
    signer: Signer,
    client_id: u64,
    redis: redis::Client,
    pending: Mutex<HashMap<(u64, u32), Pending>>,
    /// Open when no attempt is pending: what a graceful stop waits for.
    unanswered: Arc<Latch>,
    out: mpsc::UnboundedSender<Outgoing>,
    closed: AtomicBool,
    depth: [AtomicUsize; LEVELS],
    in_flight: AtomicUsize,
    duplicates: AtomicU64,
    /// From the heartbeats: entries taken over, results that came second.
    worker_reclaimed: AtomicU64,
    worker_duplicates: AtomicU64,
    refused: AtomicU64,
    workers: Mutex<Vec<WorkerInfo>>,
    reconnects: AtomicU64,
    /// Since when the server has not answered (none while it does).
    down_since: Mutex<Option<Instant>>,
    /// Down for longer than the reconnect window: attempts fail at once.
    unreachable: AtomicBool,
    /// The server's run id: a new one means a restart.
    run_id: Mutex<Option<String>>,
    /// The latest expiry of a message sent (Unix ms): the live set lives
    /// at least this long.
    live_until: AtomicU64,
    /// Attempts that ended here while the server could not be told (their
    /// fields): told once it answers, so that no worker goes on running
    /// them for nobody.
    orphans: Mutex<Vec<String>>,
}

/// The body of a remote task: the registered name and the encoded
/// arguments (kept for retries).
pub(crate) struct RemoteBody<T> {
    inner: Arc<Inner>,
    name: &'static str,
    args: Vec<u8>,
    decode: fn(&[u8]) -> Result<T, TaskError>,
    /// The id given at submission (else one made of the client's and the
    /// task's).
    rid: Option<RemoteId>,
    /// The timeout of each attempt on the worker.
    timeout: Option<Duration>,
    /// The retry policy the worker applies.
    retry: Option<WireRetry>,
}

impl<T: Send + 'static> Body for RemoteBody<T> {
    type Output = T;

    fn start(cell: &Arc<TaskCell<Self>>, a: Attempt) -> bool {
        let inner = cell.body().inner.clone();
        inner.send(cell.clone(), a);
        true
    }
}

impl<T: Send + 'static> RemoteJob for TaskCell<RemoteBody<T>> {
    fn finish(self: Arc<Self>, a: Attempt, r: Result<Vec<u8>, TaskError>, from_worker: bool) {
        let decode = self.body().decode;
        let out = r.and_then(|b| caught(decode, &b));
        if from_worker {
            self.end_final(a, out);
        } else {
            self.end(a, out);
        }
    }

    fn fail_with(&self, e: TaskError) {
        Job::fail(self, e);
    }
}

fn decode<R: serde::de::DeserializeOwned>(b: &[u8]) -> Result<R, TaskError> {
    postcard::from_bytes(b)
        .map_err(|e| TaskError::failed(format!("the result could not be decoded: {e}")))
}

/// Decodes with `decode`; a `Deserialize` impl may panic: the task's
/// error, as locally, never the reply reader's end.
fn caught<R>(decode: fn(&[u8]) -> Result<R, TaskError>, b: &[u8]) -> Result<R, TaskError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode(b))).unwrap_or_else(|p| {
        let m = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(TaskError::Panicked(crate::error::TaskPanic::new(format!(
            "decoding the result panicked: {m}"
        ))))
    })
}

/// Decodes a result of type `R`, a panic caught.
pub(crate) fn decode_caught<R: serde::de::DeserializeOwned>(b: &[u8]) -> Result<R, TaskError> {
    caught(decode::<R>, b)
}

impl Inner {
    fn send<T: Send + 'static>(&self, cell: Arc<TaskCell<RemoteBody<T>>>, a: Attempt) {
        let h = &cell.header;
        if self.closed.load(Ordering::Acquire) {
            cell.end(a, Err(TaskError::SystemShutdown));
            return;
        }
        if self.unreachable.load(Ordering::Acquire) {
            cell.end(a, Err(self.unreachable_error()));
            return;
        }
        let now = unix_ms();
        let body = cell.body();
        // The core's deadline covers every attempt on the worker: the
        // message lives as long.
        let life = h
            .opts()
            .get_timeout()
            .map_or(self.cfg.message_ttl.as_millis() as u64, |t| {
                t.as_millis() as u64
            });
        self.live_until.fetch_max(now + life, Ordering::AcqRel);
        let level = h.priority().level();
        let rid = body
            .rid
            .clone()
            .unwrap_or_else(|| RemoteId::of_task(self.client_id, h.id.as_u64()));
        let keep = body.rid.is_some();
        let msg = TaskMessage {
            version: super::proto::version(),
            client: self.client_id,
            task: h.id.as_u64(),
            attempt: a.n,
            id: rid.as_str().to_owned(),
            keep,
            reply: true,
            retry: body.retry.clone(),
            name: body.name.to_owned(),
            priority: level,
            expires_ms: now + life,
            timeout_ms: body.timeout.map(|t| t.as_millis() as u64),
            args: body.args.clone(),
        };
        let body: Arc<[u8]> = msg.encode().into();
        let sig: Arc<[u8]> = self.signer.sign(Kind::Task(level), &body).to_vec().into();
        self.pending.lock().insert(
            (msg.task, a.n),
            Pending {
                job: cell.clone(),
                attempt: a,
                rid,
                keep,
                level,
                body: body.clone(),
                sig: sig.clone(),
                expires_ms: msg.expires_ms,
                life: Duration::from_millis(life),
                _unanswered: self.unanswered.hold(),
            },
        );
        let key = (msg.task, a.n);
        let m = Outgoing::Task {
            key,
            rid: RemoteId::new(msg.id).expect("valid ids"),
            level,
            body,
            sig,
            again: false,
        };
        if self.out.send(m).is_err() {
            if let Some(p) = self.pending.lock().remove(&(msg.task, a.n)) {
                p.job
                    .finish(p.attempt, Err(TaskError::SystemShutdown), false);
            }
        }
    }

    /// One result from the reply list (or a result key); its key, to be
    /// deleted now that it is delivered, goes to `done`.
    fn deliver(&self, raw: &[u8], done: &mut Vec<String>) {
        let Some(r) = self.signer.open_result(raw) else {
            log::warn!("seedcore remote: refused a result with a bad signature");
            return;
        };
        if r.client != self.client_id {
            return;
        }
        let Some(p) = self.pending.lock().remove(&(r.task, r.attempt)) else {
            // Its attempt was stopped here already, or it came twice (the
            // result expires with the result TTL).
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if !p.keep {
            done.push(self.keys.result(p.rid.as_str()));
        }
        p.job
            .finish(p.attempt, r.outcome.into_local("remote"), true);
    }

    fn unreachable_error(&self) -> TaskError {
        TaskError::failed(RemoteError::Unreachable {
            url: streams::redact(&self.cfg.url),
            window: self.cfg.reconnect_window,
        })
    }

    /// The server did not answer.
    fn mark_down(&self) {
        self.down_since.lock().get_or_insert_with(Instant::now);
    }

    /// The server answered.
    fn mark_up(&self) {
        *self.down_since.lock() = None;
        self.unreachable.store(false, Ordering::Release);
    }

    /// Ends the pending attempts `keys` with `e` (those still pending).
    fn fail_pending(&self, keys: impl IntoIterator<Item = (u64, u32)>, e: impl Fn() -> TaskError) {
        let ps: Vec<Pending> = {
            let mut pending = self.pending.lock();
            keys.into_iter()
                .filter_map(|k| pending.remove(&k))
                .collect()
        };
        for p in ps {
            p.job.finish(p.attempt, Err(e()), false);
        }
    }

    /// Past the reconnect window: every waiting attempt fails.
    fn check_window(&self) {
        let down_for = self.down_since.lock().map(|t| t.elapsed());
        if down_for.is_some_and(|d| d >= self.cfg.reconnect_window)
            && !self.unreachable.swap(true, Ordering::AcqRel)
        {
            log::error!(
                "seedcore remote: Redis at {} unreachable for {:?}: failing every waiting task",
                streams::redact(&self.cfg.url),
                self.cfg.reconnect_window
            );
            let keys: Vec<(u64, u32)> = self.pending.lock().keys().copied().collect();
            self.orphan(keys.iter().map(|&(t, a)| proto::field(t, a)));
            self.fail_pending(keys, || self.unreachable_error());
        }
    }

    /// Remembers attempts ended while the server was away.
    fn orphan(&self, fields: impl IntoIterator<Item = String>) {
        self.orphans.lock().extend(fields);
    }

    /// Tells the server (now answering) about the orphans.
    fn flush_orphans(&self) {
        let fields = std::mem::take(&mut *self.orphans.lock());
        if !fields.is_empty() {
            let _ = self.out.send(Outgoing::Forget { fields });
        }
    }

    /// Sends every pending attempt's message again (after the server
    /// restarted: what it held may be gone; a copy of an attempt that a
    /// worker claimed is refused, so nothing runs twice for it).
    fn resend_pending(&self) {
        let msgs: Vec<Outgoing> = self
            .pending
            .lock()
            .iter()
            .map(|(k, p)| Outgoing::Task {
                key: *k,
                rid: p.rid.clone(),
                level: p.level,
                body: p.body.clone(),
                sig: p.sig.clone(),
                again: true,
            })
            .collect();
        log::warn!(
            "seedcore remote: Redis restarted; sending {} waiting tasks again",
            msgs.len()
        );
        for m in msgs {
            let _ = self.out.send(m);
        }
    }

    /// Fails attempts whose message expired with no worker holding it.
    async fn expire(&self, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        let now = unix_ms();
        let old: Vec<((u64, u32), Duration)> = self
            .pending
            .lock()
            .iter()
            .filter(|(_, p)| p.expires_ms + 1000 < now)
            .map(|(k, p)| (*k, p.life))
            .collect();
        if old.is_empty() {
            return Ok(());
        }
        let fields: Vec<String> = old.iter().map(|((t, a), _)| proto::field(*t, *a)).collect();
        let gone: Vec<i64> = redis::Script::new(streams::UNCLAIMED)
            .key(self.keys.live(self.client_id))
            .arg(&fields)
            .invoke_async(conn)
            .await?;
        for ((k, life), g) in old.into_iter().zip(gone) {
            if g == 1 {
                self.fail_pending([k], || TaskError::failed(RemoteError::Expired(life)));
            }
        }
        Ok(())
    }

    /// Reads the result keys of every pending attempt: after a reconnect,
    /// a reply popped by a lost connection is found here.
    async fn recover(&self, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        let ids: Vec<String> = self
            .pending
            .lock()
            .values()
            .map(|p| self.keys.result(p.rid.as_str()))
            .collect();
        for keys in ids.chunks(500) {
            let vals: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(keys).query_async(conn).await?;
            let mut done = Vec::new();
            for v in vals.into_iter().flatten() {
                self.deliver(&v, &mut done);
            }
            unlink(conn, done);
        }
        Ok(())
    }
}

/// The remote executor: a sibling of the thread and process executors.
pub(crate) struct RemoteExec {
    inner: Arc<Inner>,
    rt: Mutex<Option<tokio::runtime::Runtime>>,
}

impl std::fmt::Debug for RemoteExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteExec")
            .field("config", &self.inner.cfg)
            .finish()
    }
}

impl RemoteExec {
    /// Connects (once, with a typed error) and starts the sender, the
    /// reply reader and the stats reader.
    pub(crate) fn start(cfg: RemoteConfig) -> Result<Self, RemoteError> {
        cfg.validate()?;
        let redis = streams::client(&cfg)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("seedcore-remote")
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Redis(format!("cannot start the I/O thread: {e}")))?;
        let keys = Keys::new(&cfg.namespace);
        let mut conn = rt.block_on(streams::first_connect(&cfg, &redis))?;
        rt.block_on(streams::ensure_groups(&mut conn, &keys))
            .map_err(|e| RemoteError::Redis(e.to_string()))?;
        // The server's run id from the start: a restart is a new one.
        let first_run_id = rt
            .block_on(
                redis::cmd("INFO")
                    .arg("server")
                    .query_async::<Value>(&mut conn),
            )
            .ok()
            .and_then(|v| run_id(&v));
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            signer: Signer::new(&cfg.secret, &cfg.namespace),
            keys,
            client_id: fastrand::u64(1..),
            redis,
            pending: Mutex::new(HashMap::new()),
            unanswered: Arc::new(Latch::new(0)),
            out: tx,
            closed: AtomicBool::new(false),
            depth: Default::default(),
            in_flight: AtomicUsize::new(0),
            duplicates: AtomicU64::new(0),
            worker_reclaimed: AtomicU64::new(0),
            worker_duplicates: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            workers: Mutex::new(Vec::new()),
            reconnects: AtomicU64::new(0),
            down_since: Mutex::new(None),
            unreachable: AtomicBool::new(false),
            run_id: Mutex::new(first_run_id),
            live_until: AtomicU64::new(0),
            orphans: Mutex::new(Vec::new()),
            cfg,
        });
        rt.spawn(sender(inner.clone(), conn.clone(), rx));
        rt.spawn(replies(inner.clone()));
        rt.spawn(watch(inner.clone(), conn));
        Ok(RemoteExec {
            inner,
            rt: Mutex::new(Some(rt)),
        })
    }

    /// The body of a task, and the options the core keeps for it: the
    /// worker retries (the policy travels with the message), the core
    /// only retries what failed on the way (an unreachable server, an
    /// error from Redis, a message no worker took), and its deadline
    /// covers every attempt on the worker.
    pub(crate) fn body<R: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        name: &'static str,
        args: Vec<u8>,
        rid: Option<RemoteId>,
        opts: TaskOptions,
    ) -> Result<(RemoteBody<R>, TaskOptions), SubmitError> {
        let limit = self.inner.cfg.max_payload_bytes;
        if args.len() > limit {
            return Err(SubmitError::PayloadTooLarge {
                size: args.len(),
                limit,
            });
        }
        let retry = WireRetry::from_policy(opts.get_retry());
        let timeout = opts.get_timeout();
        let mut core = opts;
        if let Some(r) = &retry {
            let (n, backoff, jitter, on) = core.get_retry().parts();
            let transport = on & RetryOn::ERROR.bits();
            core = core.retry(RetryPolicy::from_parts(n, backoff, jitter, transport));
            if let Some(t) = timeout {
                core = core.timeout(r.budget(t));
            }
        }
        let body = RemoteBody {
            inner: self.inner.clone(),
            name,
            args,
            decode: decode::<R>,
            rid,
            timeout,
            retry,
        };
        Ok((body, core))
    }
}

impl RemoteExec {
    /// The [`RemoteId`] of task `task` of this system: the caller's, or
    /// the one made of the client's id and the task's.
    pub(crate) fn remote_id(&self, task: TaskId) -> RemoteId {
        let i = &self.inner;
        let pending = i
            .pending
            .lock()
            .iter()
            .find(|((t, _), _)| *t == task.as_u64())
            .map(|(_, p)| p.rid.clone());
        pending.unwrap_or_else(|| RemoteId::of_task(i.client_id, task.as_u64()))
    }
}

impl Executor for RemoteExec {
    fn kind(&self) -> ExecutorKind {
        KIND
    }

    /// The queue is Redis's: an attempt begins at once and its message
    /// goes to the stream of its priority.
    fn accept(&self, task: Runnable) {
        task.run();
    }

    fn stop_attempt(&self, task: TaskId, attempt: u32, _why: StopReason) {
        let i = &self.inner;
        if let Some(p) = i.pending.lock().remove(&(task.as_u64(), attempt)) {
            p.job.finish(p.attempt, Err(TaskError::Cancelled), false);
        }
        let field = proto::field(task.as_u64(), attempt);
        let _ = i.out.send(Outgoing::Cancel { field });
    }

    fn drain(&self) -> Vec<Runnable> {
        Vec::new()
    }

    fn close(&self) {}

    fn stop(&self, deadline: Instant, mode: ShutdownMode) -> StopReport {
        let i = &self.inner;
        if mode == ShutdownMode::Graceful {
            i.unanswered.wait_until(deadline);
        }
        i.closed.store(true, Ordering::Release);
        let left: Vec<Pending> = i.pending.lock().drain().map(|(_, p)| p).collect();
        for p in left {
            p.job.fail_with(TaskError::SystemShutdown);
            p.job
                .finish(p.attempt, Err(TaskError::SystemShutdown), false);
        }
        if let Some(rt) = self.rt.lock().take() {
            streams::close_runtime(rt);
        }
        StopReport::default()
    }

    fn stats(&self) -> ExecutorStats {
        let i = &self.inner;
        let mut s = ExecutorStats::new(KIND);
        for (d, a) in s.queue_depth.iter_mut().zip(&i.depth) {
            *d = a.load(Ordering::Relaxed);
        }
        s.queued = s.queue_depth.iter().sum();
        let workers = i.workers.lock();
        s.workers = workers.len();
        s.busy = i.in_flight.load(Ordering::Relaxed);
        s.target = workers.len();
        s.core = workers.len();
        s.max = workers.len();
        let dup =
            i.duplicates.load(Ordering::Relaxed) + i.worker_duplicates.load(Ordering::Relaxed);
        s.gauges = [
            ("reclaimed", i.worker_reclaimed.load(Ordering::Relaxed)),
            ("duplicates", dup),
            ("refused", i.refused.load(Ordering::Relaxed)),
            ("pending", i.pending.lock().len() as u64),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        s
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        self.inner.workers.lock().clone()
    }
}

impl Drop for RemoteExec {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.lock().take() {
            rt.shutdown_background();
        }
    }
}

/// Connects until it works or the executor closes; with `within_window`,
/// also gives up (`None`) once the reconnect window has passed.
async fn reconnect(
    inner: &Inner,
    blocking: bool,
    within_window: bool,
) -> Option<MultiplexedConnection> {
    let mut n = 0;
    loop {
        if inner.closed.load(Ordering::Acquire) {
            return None;
        }
        if within_window {
            inner.check_window();
            if inner.unreachable.load(Ordering::Acquire) {
                return None;
            }
        }
        match streams::connect(&inner.redis, blocking).await {
            Ok(c) => {
                inner.reconnects.fetch_add(1, Ordering::Relaxed);
                inner.mark_up();
                return Some(c);
            }
            Err(e) => {
                inner.mark_down();
                log::debug!("seedcore remote: reconnecting: {e}");
                tokio::time::sleep(streams::backoff(n)).await;
                n += 1;
            }
        }
    }
}

/// Deletes delivered results, without waiting.
fn unlink(conn: &MultiplexedConnection, keys: Vec<String>) {
    if keys.is_empty() {
        return;
    }
    let mut c = conn.clone();
    tokio::spawn(async move {
        let _ = redis::cmd("UNLINK")
            .arg(&keys)
            .query_async::<()>(&mut c)
            .await;
    });
}

/// Writes task messages and cancels, as many per pipeline as are waiting.
async fn sender(
    inner: Arc<Inner>,
    mut conn: MultiplexedConnection,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut batch = Vec::with_capacity(256);
    let live = inner.keys.live(inner.client_id);
    let gone = inner.keys.gone(inner.client_id);
    let channel = inner.keys.cancel_channel();
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let mut pipe = redis::pipe();
        let mut tasks = Vec::new();
        for o in &batch {
            match o {
                Outgoing::Task {
                    key,
                    rid,
                    level,
                    body,
                    sig,
                    again: true,
                } => {
                    pipe.cmd("EVAL")
                        .arg(streams::SEND_AGAIN)
                        .arg(3)
                        .arg(inner.keys.result(rid.as_str()))
                        .arg(&live)
                        .arg(inner.keys.stream(*level))
                        .arg(proto::field(key.0, key.1))
                        .arg(&**body)
                        .arg(&**sig)
                        .ignore();
                    tasks.push(*key);
                }
                Outgoing::Task {
                    key,
                    level,
                    body,
                    sig,
                    again: false,
                    ..
                } => {
                    // Live before it can be read; `NX` keeps a worker's
                    // claim when a message is sent again.
                    pipe.cmd("HSETNX")
                        .arg(&live)
                        .arg(proto::field(key.0, key.1))
                        .arg("0")
                        .ignore();
                    pipe.cmd("XADD")
                        .arg(inner.keys.stream(*level))
                        .arg("*")
                        .arg("m")
                        .arg(&**body)
                        .arg("s")
                        .arg(&**sig)
                        .ignore();
                    tasks.push(*key);
                }
                Outgoing::Cancel { field } => {
                    pipe.cmd("HDEL").arg(&live).arg(field).ignore();
                    pipe.cmd("PUBLISH")
                        .arg(&channel)
                        .arg(format!("{:x}:{field}", inner.client_id))
                        .ignore();
                }
                Outgoing::Forget { fields } => {
                    let until = inner.live_until.load(Ordering::Acquire) + 60_000;
                    pipe.cmd("EVAL")
                        .arg(streams::FORGET)
                        .arg(2)
                        .arg(&live)
                        .arg(&gone)
                        .arg(fields)
                        .arg(until)
                        .ignore();
                    for field in fields {
                        pipe.cmd("PUBLISH")
                            .arg(&channel)
                            .arg(format!("{:x}:{field}", inner.client_id))
                            .ignore();
                    }
                }
            }
        }
        if !tasks.is_empty() {
            // The live set outlives every message in it.
            let until = inner.live_until.load(Ordering::Acquire) + 60_000;
            pipe.cmd("PEXPIREAT").arg(&live).arg(until).ignore();
        }
        // Nothing accepted is dropped: a pipeline that failed with the
        // connection is sent again on a new one (a message may then arrive
        // twice; its live-set claim lets only one copy run) until the
        // reconnect window passes; an error from Redis fails its attempts.
        loop {
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => {
                    inner.mark_up();
                    break;
                }
                Err(e) if streams::is_disconnect(&e) => {
                    inner.mark_down();
                    match reconnect(&inner, false, true).await {
                        Some(c) => conn = c,
                        None if inner.closed.load(Ordering::Acquire) => return,
                        None => {
                            // Whatever of the batch reached the server
                            // is ended there once it answers again.
                            inner.orphan(batch.iter().flat_map(|o| match o {
                                Outgoing::Task { key, .. } => vec![proto::field(key.0, key.1)],
                                Outgoing::Cancel { field } => vec![field.clone()],
                                Outgoing::Forget { fields } => fields.clone(),
                            }));
                            inner.fail_pending(tasks.drain(..), || inner.unreachable_error());
                            break;
                        }
                    }
                }
                Err(e) => {
                    log::error!("seedcore remote: Redis refused task messages: {e}");
                    let why = e.to_string();
                    inner.fail_pending(tasks.drain(..), || {
                        TaskError::failed(RemoteError::Redis(why.clone()))
                    });
                    break;
                }
            }
        }
        batch.clear();
    }
}

/// Waits on the reply list (BLPOP) and drains it (LPOP n).
async fn replies(inner: Arc<Inner>) {
    let key = inner.keys.reply(inner.client_id);
    let Some(mut conn) = reconnect(&inner, true, false).await else {
        return;
    };
    loop {
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let got: redis::RedisResult<Option<(String, Vec<u8>)>> = redis::cmd("BLPOP")
            .arg(&key)
            .arg(streams::BLOCK.as_secs())
            .query_async(&mut conn)
            .await;
        let mut done = Vec::new();
        let r = match got {
            Ok(None) => continue,
            Ok(Some((_, v))) => {
                inner.deliver(&v, &mut done);
                redis::cmd("LPOP")
                    .arg(&key)
                    .arg(1024)
                    .query_async::<Option<Vec<Vec<u8>>>>(&mut conn)
                    .await
                    .map(|more| {
                        for v in more.into_iter().flatten() {
                            inner.deliver(&v, &mut done);
                        }
                    })
            }
            Err(e) => Err(e),
        };
        unlink(&conn, done);
        if let Err(e) = r {
            if !streams::is_disconnect(&e) {
                log::error!("seedcore remote: reading results: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            inner.mark_down();
            match reconnect(&inner, true, false).await {
                Some(c) => conn = c,
                None => return,
            }
            if let Err(e) = inner.recover(&mut conn).await {
                log::warn!("seedcore remote: recovering results: {e}");
            }
        }
    }
}

/// The `run_id` line of `INFO server`.
fn run_id(info: &Value) -> Option<String> {
    let text = streams::text(info)?;
    text.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|s| s.trim().to_owned())
}

/// Four times a second: the reconnect window, a server restart, expired
/// messages; once a second, the queue depths and the live workers, for
/// stats.
async fn watch(inner: Arc<Inner>, mut conn: MultiplexedConnection) {
    let mut tick = 0u64;
    let mut up = true;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        tick += 1;
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        inner.check_window();
        if !up {
            // One try per tick: the window runs meanwhile.
            match streams::connect(&inner.redis, false).await {
                Ok(c) => {
                    conn = c;
                    up = true;
                    inner.mark_up();
                }
                Err(_) => {
                    inner.mark_down();
                    continue;
                }
            }
        }
        let mut pipe = redis::pipe();
        pipe.cmd("INFO").arg("server");
        let full = tick % 4 == 0;
        if full {
            for l in streams::levels() {
                pipe.cmd("XLEN").arg(inner.keys.stream(l));
            }
            pipe.cmd("HGETALL").arg(inner.keys.workers());
            pipe.cmd("GET").arg(inner.keys.counter("refused"));
        }
        let r: redis::RedisResult<Vec<Value>> = pipe.query_async(&mut conn).await;
        let vals = match r {
            Ok(v) => v,
            Err(e) if streams::is_disconnect(&e) => {
                inner.mark_down();
                up = false;
                continue;
            }
            Err(_) => continue,
        };
        inner.mark_up();
        inner.flush_orphans();
        if let Some(id) = vals.first().and_then(run_id) {
            let before = inner.run_id.lock().replace(id.clone());
            if before.is_some_and(|b| b != id) {
                // What was stored meanwhile is read, the rest sent again.
                if let Err(e) = inner.recover(&mut conn).await {
                    log::warn!("seedcore remote: recovering results: {e}");
                }
                inner.resend_pending();
            }
        }
        if let Err(e) = inner.expire(&mut conn).await {
            log::debug!("seedcore remote: expiring messages: {e}");
        }
        if !full {
            continue;
        }
        let vals = &vals[1..];
        for (a, v) in inner.depth.iter().zip(vals) {
            if let Value::Int(n) = v {
                a.store(*n as usize, Ordering::Relaxed);
            }
        }
        if let Some(v) = vals.get(LEVELS) {
            let live = streams::live_workers(v);
            *inner.workers.lock() = live.workers;
            inner.in_flight.store(live.held, Ordering::Relaxed);
            inner
                .worker_reclaimed
                .store(live.reclaimed, Ordering::Relaxed);
            inner
                .worker_duplicates
                .store(live.duplicates, Ordering::Relaxed);
        }
        if let Some(v) = vals.get(LEVELS + 1) {
            let n = streams::bytes(v)
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            inner.refused.store(n, Ordering::Relaxed);
        }
    }
}
