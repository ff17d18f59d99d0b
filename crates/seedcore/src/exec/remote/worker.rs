//! The worker side: [`serve`] reads task messages from the streams,
//! highest priority first, runs them on this machine's process pool (so a
//! timeout kills the worker process and a crash is healed), stores each
//! result and acknowledges its entry in one script, sends heartbeats and
//! takes over the entries of workers that stopped sending them.

use super::proto::{self, unix_ms, Refusal, ResultMessage, Signer, TaskMessage, WireOutcome};
use super::streams::{self, Entry, Keys, GROUP};
use super::{RemoteConfig, RemoteError};
use crate::error::TaskError;
use crate::options::{Priority, TaskOptions, LEVELS};
use crate::sched::WorkerInfo;
use crate::{ConcurrentSystem, ShutdownMode};
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

/// How a worker runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Worker processes of the local pool (default: the number of cores).
    pub processes: usize,
    /// Entries held per worker process (running and waiting), default 64:
    /// more keeps the pool fed between round trips, fewer leaves more for
    /// other workers.
    pub prefetch: usize,
    /// The worker's name in heartbeats (default `host:pid`).
    pub name: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            processes: std::thread::available_parallelism().map_or(1, |n| n.get()),
            prefetch: 64,
            name: None,
        }
    }
}

impl ServeOptions {
    /// Sets the number of local worker processes.
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = n.max(1);
        self
    }

    /// Sets the entries held per worker process.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n.max(1);
        self
    }

    /// Sets the worker's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// A worker's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerCounts {
    /// Tasks run and stored.
    pub done: u64,
    /// Entries taken over from silent workers.
    pub reclaimed: u64,
    /// Results that came second (another run of the same attempt won).
    pub duplicates: u64,
    /// Messages refused (unsigned, forged, expired, oversized, unknown).
    pub refused: u64,
    /// Entries held now.
    pub in_flight: usize,
}

/// A running worker. Dropping it stops it ([`stop`](Self::stop)).
#[derive(Debug)]
pub struct WorkerHandle {
    state: Arc<State>,
    rt: Option<tokio::runtime::Runtime>,
}

impl WorkerHandle {
    /// Its counters now.
    pub fn counts(&self) -> WorkerCounts {
        let s = &self.state;
        WorkerCounts {
            done: s.done.load(Ordering::Relaxed),
            reclaimed: s.reclaimed.load(Ordering::Relaxed),
            duplicates: s.duplicates.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            in_flight: s.in_flight.load(Ordering::Relaxed),
        }
    }

    /// Its name in heartbeats.
    pub fn name(&self) -> &str {
        &self.state.me
    }

    /// Blocks until the worker is stopped from another thread or its
    /// connection settings turn out wrong for good (never, normally).
    pub fn wait(&self) {
        while !self.state.stopping.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops reading, waits up to `grace` for the tasks held to finish and
    /// be stored, then stops. Entries not finished stay pending in Redis
    /// and are taken over by other workers after the visibility timeout.
    pub fn stop(mut self, grace: Duration) {
        self.stop_inner(grace);
    }

    fn stop_inner(&mut self, grace: Duration) {
        let s = &self.state;
        s.stopping.store(true, Ordering::Release);
        s.wake.notify_waiters();
        let until = std::time::Instant::now() + grace;
        while s.in_flight.load(Ordering::Acquire) > 0 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(rt) = self.rt.take() {
            streams::close_runtime(rt);
        }
        s.system.shutdown(ShutdownMode::Immediate);
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if self.rt.is_some() {
            self.stop_inner(Duration::ZERO);
        }
    }
}

/// A held entry.
struct Held {
    level: u8,
    id: String,
    cancel: Option<oneshot::Sender<()>>,
}

struct State {
    cfg: RemoteConfig,
    keys: Keys,
    signer: Signer,
    redis: redis::Client,
    me: String,
    capacity: usize,
    system: Arc<ConcurrentSystem>,
    held: Mutex<HashMap<String, Held>>,
    /// Cancels of attempts not held here (yet), by id, with when they came:
    /// such an entry, read later, is answered `Cancelled` without running.
    cancelled: Mutex<HashMap<String, u64>>,
    in_flight: AtomicUsize,
    wake: Notify,
    stopping: AtomicBool,
    done: AtomicU64,
    reclaimed: AtomicU64,
    duplicates: AtomicU64,
    refused: AtomicU64,
    stores: mpsc::UnboundedSender<Store>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("me", &self.me).finish()
    }
}

/// What the writer does with one entry.
enum Store {
    /// Store this sealed result, acknowledge the entry.
    Result {
        level: u8,
        id: String,
        client: u64,
        task: u64,
        attempt: u32,
        value: Vec<u8>,
    },
    /// Acknowledge and delete a refused entry.
    Refuse { level: u8, id: String },
}

/// Starts a worker of the Redis deployment at `config.url`: it returns
/// once the first connection works (a bad URL or a refused password is an
/// error here), and runs until its handle is stopped or dropped.
///
/// The tasks it runs are this binary's registered process tasks
/// ([`process_task!`](crate::process_task)); `main` must call
/// [`seedcore::init()`](crate::init) first, as for any process pool.
pub fn serve(config: RemoteConfig, options: ServeOptions) -> Result<WorkerHandle, RemoteError> {
    config.validate()?;
    let redis = streams::client(&config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("seedcore-remote-worker")
        .enable_all()
        .build()
        .map_err(|e| RemoteError::Redis(format!("cannot start the I/O threads: {e}")))?;
    let keys = Keys::new(&config.namespace);
    let mut conn = rt.block_on(streams::first_connect(&config, &redis))?;
    rt.block_on(streams::ensure_groups(&mut conn, &keys))
        .map_err(|e| RemoteError::Redis(e.to_string()))?;
    let system = ConcurrentSystem::builder()
        .core_processes(options.processes)
        .max_processes(options.processes)
        .core_threads(1)
        .max_threads(2)
        .name("seedcore-remote")
        .build()
        .map_err(|e| RemoteError::BadSetting(e.to_string()))?;
    let host = hostname();
    let me = options
        .name
        .clone()
        .unwrap_or_else(|| format!("{host}:{}:{:04x}", std::process::id(), fastrand::u16(..)));
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(State {
        signer: Signer::new(&config.secret),
        keys,
        redis,
        me,
        capacity: options.processes * options.prefetch,
        system: Arc::new(system),
        held: Mutex::new(HashMap::new()),
        cancelled: Mutex::new(HashMap::new()),
        in_flight: AtomicUsize::new(0),
        wake: Notify::new(),
        stopping: AtomicBool::new(false),
        done: AtomicU64::new(0),
        reclaimed: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        stores: tx,
        cfg: config,
    });
    rt.spawn(reader(state.clone()));
    rt.spawn(writer(state.clone(), conn.clone(), rx));
    rt.spawn(heartbeat(state.clone(), conn));
    rt.spawn(cancels(state.clone()));
    Ok(WorkerHandle {
        state,
        rt: Some(rt),
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

async fn reconnect(s: &State, blocking: bool) -> Option<MultiplexedConnection> {
    let mut n = 0;
    loop {
        if s.stopping.load(Ordering::Acquire) {
            return None;
        }
        match streams::connect(&s.redis, blocking).await {
            Ok(mut c) => {
                // A restarted server without persistence has no groups.
                if streams::ensure_groups(&mut c, &s.keys).await.is_ok() {
                    return Some(c);
                }
            }
            Err(e) => log::debug!("seedcore remote worker: reconnecting: {e}"),
        }
        tokio::time::sleep(streams::backoff(n)).await;
        n += 1;
    }
}

/// Reads entries while there is room, highest level first.
async fn reader(s: Arc<State>) {
    let Some(mut conn) = reconnect(&s, true).await else {
        return;
    };
    let all: Vec<String> = streams::levels().map(|l| s.keys.stream(l)).collect();
    let script = redis::Script::new(streams::READ_HIGHEST);
    loop {
        if s.stopping.load(Ordering::Acquire) {
            return;
        }
        let held = s.in_flight.load(Ordering::Acquire);
        if held >= s.capacity {
            let woken = s.wake.notified();
            if s.in_flight.load(Ordering::Acquire) >= s.capacity {
                woken.await;
            }
            continue;
        }
        let room = s.capacity - held;
        let got: redis::RedisResult<Value> = script
            .key(&all)
            .arg(GROUP)
            .arg(&s.me)
            .arg(room)
            .invoke_async(&mut conn)
            .await;
        let batch = match got {
            Ok(Value::Array(v)) if v.len() == 2 => {
                let level = streams::bytes(&v[0])
                    .and_then(|b| String::from_utf8(b).ok())
                    .map_or(0, |k| streams::level_of(&k));
                vec![(level, streams::entries(&v[1]))]
            }
            Ok(_) => {
                // Nothing anywhere: block on every stream at once.
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(GROUP)
                    .arg(&s.me)
                    .arg("COUNT")
                    .arg(room)
                    .arg("BLOCK")
                    .arg(1000)
                    .arg("STREAMS")
                    .arg(&all);
                for _ in &all {
                    cmd.arg(">");
                }
                match cmd.query_async::<Value>(&mut conn).await {
                    Ok(v) => {
                        let mut got: Vec<(u8, Vec<Entry>)> = streams::streams_reply(&v)
                            .into_iter()
                            .map(|(k, e)| (streams::level_of(&k), e))
                            .collect();
                        got.sort_by_key(|(l, _)| *l);
                        got
                    }
                    Err(e) => {
                        if !handle_error(&s, &mut conn, &e).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            Err(e) => {
                if !handle_error(&s, &mut conn, &e).await {
                    return;
                }
                continue;
            }
        };
        for (level, entries) in batch {
            for e in entries {
                take(&s, level, e, false);
            }
        }
    }
}

/// Reconnects or recreates the groups; `false` when stopping.
async fn handle_error(s: &State, conn: &mut MultiplexedConnection, e: &redis::RedisError) -> bool {
    if e.to_string().contains("NOGROUP") {
        if streams::ensure_groups(conn, &s.keys).await.is_ok() {
            return true;
        }
    } else if !streams::is_disconnect(e) {
        log::error!("seedcore remote worker: reading tasks: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        return true;
    }
    match reconnect(s, true).await {
        Some(c) => {
            *conn = c;
            true
        }
        None => false,
    }
}

/// Checks one entry and runs it, or refuses it.
fn take(s: &Arc<State>, level: u8, e: Entry, reclaimed: bool) {
    if e.body.is_none() && e.sig.is_none() {
        // Deleted meanwhile (a result stored): nothing to do.
        return;
    }
    if s.held.lock().contains_key(&e.id) {
        return;
    }
    let msg = match proto::open_task(
        &s.signer,
        e.body.as_deref(),
        e.sig.as_deref(),
        s.cfg.max_payload_bytes,
    ) {
        Ok(m) => m,
        Err(why) => {
            let what = match why {
                Refusal::Unsigned => "unsigned".to_owned(),
                Refusal::Forged => "forged (bad signature)".to_owned(),
                Refusal::Malformed => "malformed".to_owned(),
                Refusal::Oversized(n) => format!("oversized ({n} bytes)"),
                Refusal::Expired => "expired".to_owned(),
            };
            log::warn!(
                "seedcore remote worker: refused entry {} of level {level}: {what}",
                e.id
            );
            s.refused.fetch_add(1, Ordering::Relaxed);
            let _ = s.stores.send(Store::Refuse { level, id: e.id });
            return;
        }
    };
    if reclaimed {
        s.reclaimed.fetch_add(1, Ordering::Relaxed);
    }
    let id = cancel_id(&msg);
    let (ctx, crx) = oneshot::channel();
    let cancel = if s.cancelled.lock().remove(&id).is_some() {
        // Cancelled while it waited in the stream: answer without running.
        let _ = ctx.send(());
        None
    } else {
        Some(ctx)
    };
    s.held.lock().insert(
        id,
        Held {
            level,
            id: e.id.clone(),
            cancel,
        },
    );
    s.in_flight.fetch_add(1, Ordering::AcqRel);
    let st = s.clone();
    tokio::spawn(async move {
        let outcome = run(&st, &msg, crx).await;
        let r = ResultMessage {
            version: proto::version(),
            client: msg.client,
            task: msg.task,
            attempt: msg.attempt,
            outcome,
        };
        let value = st.signer.seal_result(&r);
        let _ = st.stores.send(Store::Result {
            level,
            id: e.id,
            client: msg.client,
            task: msg.task,
            attempt: msg.attempt,
            value,
        });
    });
}

fn cancel_id(m: &TaskMessage) -> String {
    format!("{:x}:{}:{}", m.client, m.task, m.attempt)
}

/// Runs one message on the local pool.
async fn run(s: &State, m: &TaskMessage, mut cancel: oneshot::Receiver<()>) -> WireOutcome {
    if cancel.try_recv().is_ok() {
        return WireOutcome::Cancelled;
    }
    let Some(name) = crate::exec::process::find_task(&m.name) else {
        s.refused.fetch_add(1, Ordering::Relaxed);
        return WireOutcome::Refused(format!("no task named `{}` on this worker", m.name));
    };
    let mut opts =
        TaskOptions::new().priority(Priority::new(m.priority).unwrap_or(Priority::NORMAL));
    if m.timeout_ms.is_some() {
        let left = m.expires_ms.saturating_sub(unix_ms()).max(1);
        opts = opts.timeout(Duration::from_millis(left));
    }
    let fut = match s.system.submit_process_raw(opts, name, m.args.clone()) {
        Ok(f) => f,
        Err(e) => return WireOutcome::Refused(e.to_string()),
    };
    let mut fut = std::pin::pin!(fut);
    let r: Result<Vec<u8>, TaskError> = tokio::select! {
        r = &mut fut => r,
        Ok(()) = cancel => {
            fut.cancel();
            fut.await
        }
    };
    WireOutcome::from_local(r)
}

/// Stores results and acknowledges entries, one pipeline per batch.
async fn writer(
    s: Arc<State>,
    mut conn: MultiplexedConnection,
    mut rx: mpsc::UnboundedReceiver<Store>,
) {
    let mut batch = Vec::with_capacity(256);
    let ttl = s.cfg.result_ttl.as_secs().max(1);
    let dup_key = s.keys.counter("duplicates");
    let refused_key = s.keys.counter("refused");
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let mut pipe = redis::pipe();
        let mut results = 0;
        for st in &batch {
            match st {
                Store::Result {
                    level,
                    id,
                    client,
                    task,
                    attempt,
                    value,
                } => {
                    results += 1;
                    pipe.cmd("EVAL")
                        .arg(streams::STORE)
                        .arg(4)
                        .arg(s.keys.result(*client, *task, *attempt))
                        .arg(s.keys.reply(*client))
                        .arg(s.keys.stream(*level))
                        .arg(&dup_key)
                        .arg(value.as_slice())
                        .arg(ttl)
                        .arg(GROUP)
                        .arg(id);
                }
                Store::Refuse { level, id } => {
                    pipe.cmd("XACK")
                        .arg(s.keys.stream(*level))
                        .arg(GROUP)
                        .arg(id)
                        .ignore();
                    pipe.cmd("XDEL").arg(s.keys.stream(*level)).arg(id).ignore();
                    pipe.cmd("INCR").arg(&refused_key).ignore();
                }
            }
        }
        let firsts: Vec<i64> = loop {
            match pipe.query_async::<Vec<i64>>(&mut conn).await {
                Ok(v) => break v,
                Err(e) if streams::is_disconnect(&e) => match reconnect(&s, false).await {
                    Some(c) => conn = c,
                    None => return,
                },
                Err(e) => {
                    log::error!("seedcore remote worker: storing results: {e}");
                    break vec![1; results];
                }
            }
        };
        let dups = firsts.iter().filter(|&&f| f == 0).count() as u64;
        s.duplicates.fetch_add(dups, Ordering::Relaxed);
        let mut held = s.held.lock();
        let mut freed = 0;
        for st in batch.drain(..) {
            if let Store::Result {
                client,
                task,
                attempt,
                ..
            } = st
            {
                held.remove(&format!("{client:x}:{task}:{attempt}"));
                freed += 1;
            }
        }
        drop(held);
        s.done.fetch_add(freed as u64, Ordering::Relaxed);
        s.in_flight.fetch_sub(freed, Ordering::AcqRel);
        s.wake.notify_waiters();
    }
}

/// Every third of the visibility timeout: a heartbeat, the idle time of
/// the held entries reset, and entries idle past the timeout taken over.
async fn heartbeat(s: Arc<State>, mut conn: MultiplexedConnection) {
    let vt = s.cfg.visibility_timeout;
    let every = vt / 3;
    loop {
        if s.stopping.load(Ordering::Acquire) {
            let _ = redis::cmd("HDEL")
                .arg(s.keys.workers())
                .arg(&s.me)
                .query_async::<()>(&mut conn)
                .await;
            return;
        }
        if let Err(e) = beat(&s, &mut conn, vt).await {
            if streams::is_disconnect(&e) {
                match reconnect(&s, false).await {
                    Some(c) => conn = c,
                    None => return,
                }
                continue;
            }
            log::warn!("seedcore remote worker: heartbeat: {e}");
        }
        tokio::time::sleep(every).await;
    }
}

async fn beat(
    s: &Arc<State>,
    conn: &mut MultiplexedConnection,
    vt: Duration,
) -> redis::RedisResult<()> {
    let c = WorkerCounts {
        done: s.done.load(Ordering::Relaxed),
        reclaimed: s.reclaimed.load(Ordering::Relaxed),
        duplicates: s.duplicates.load(Ordering::Relaxed),
        refused: s.refused.load(Ordering::Relaxed),
        in_flight: s.in_flight.load(Ordering::Relaxed),
    };
    let line = format!(
        "{} {} {} {} {} {} {}",
        unix_ms(),
        vt.as_millis(),
        std::process::id(),
        c.in_flight,
        c.done,
        c.reclaimed,
        c.duplicates
    );
    let mut by_level: [Vec<String>; LEVELS] = Default::default();
    for h in s.held.lock().values() {
        by_level[h.level as usize].push(h.id.clone());
    }
    let mut pipe = redis::pipe();
    pipe.cmd("HSET")
        .arg(s.keys.workers())
        .arg(&s.me)
        .arg(line)
        .ignore();
    for (l, ids) in by_level.iter().enumerate() {
        if !ids.is_empty() {
            pipe.cmd("XCLAIM")
                .arg(s.keys.stream(l as u8))
                .arg(GROUP)
                .arg(&s.me)
                .arg(0)
                .arg(ids)
                .arg("JUSTID")
                .ignore();
        }
    }
    pipe.query_async::<()>(conn).await?;
    // Take over what silent workers hold, while there is room.
    for l in streams::levels() {
        let room = s
            .capacity
            .saturating_sub(s.in_flight.load(Ordering::Acquire));
        if room == 0 || s.stopping.load(Ordering::Acquire) {
            break;
        }
        let v: Value = redis::cmd("XAUTOCLAIM")
            .arg(s.keys.stream(l))
            .arg(GROUP)
            .arg(&s.me)
            .arg(vt.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(room)
            .query_async(conn)
            .await?;
        if let Value::Array(parts) = v {
            if let Some(list) = parts.get(1) {
                for e in streams::entries(list) {
                    take(s, l, e, true);
                }
            }
        }
    }
    Ok(())
}

/// Cancels of running attempts, by pub/sub.
async fn cancels(s: Arc<State>) {
    let mut n = 0;
    loop {
        if s.stopping.load(Ordering::Acquire) {
            return;
        }
        let sub = async {
            let mut ps = s.redis.get_async_pubsub().await?;
            ps.subscribe(s.keys.cancel_channel()).await?;
            let mut msgs = ps.on_message();
            while let Some(m) = msgs.next().await {
                let Ok(key) = m.get_payload::<String>() else {
                    continue;
                };
                // `{ns}:cancel:<client>:<task>:<attempt>`
                let id: Vec<&str> = key.rsplitn(4, ':').collect();
                if id.len() == 4 {
                    let k = format!("{}:{}:{}", id[2], id[1], id[0]);
                    match s.held.lock().get_mut(&k) {
                        Some(h) => {
                            if let Some(c) = h.cancel.take() {
                                let _ = c.send(());
                            }
                        }
                        None => remember_cancel(&s, k),
                    }
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        if let Err(e) = sub.await {
            log::debug!("seedcore remote worker: cancel channel: {e}");
        }
        tokio::time::sleep(streams::backoff(n)).await;
        n = (n + 1).min(5);
    }
}

/// What the heartbeats in a `{ns}:workers` hash say.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) workers: Vec<WorkerInfo>,
    pub(crate) held: usize,
    pub(crate) reclaimed: u64,
    pub(crate) duplicates: u64,
}

/// Keeps a cancel of an entry not held here; cancels older than the
/// message TTL are forgotten once the set grows.
fn remember_cancel(s: &State, id: String) {
    let now = unix_ms();
    let mut c = s.cancelled.lock();
    if c.len() >= 10_000 {
        let ttl = s.cfg.message_ttl.as_millis() as u64;
        c.retain(|_, at| now.saturating_sub(*at) < ttl);
    }
    c.insert(id, now);
}

/// The live workers in a `{ns}:workers` hash, and what they hold.
pub(crate) fn live_workers(v: &Value) -> Live {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = match v {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|kv| Some((streams::bytes(&kv[0])?, streams::bytes(kv.get(1)?)?)))
            .collect(),
        Value::Map(m) => m
            .iter()
            .filter_map(|(k, v)| Some((streams::bytes(k)?, streams::bytes(v)?)))
            .collect(),
        _ => Vec::new(),
    };
    let now = unix_ms();
    let mut live = Live::default();
    for (name, line) in pairs {
        let line = String::from_utf8_lossy(&line);
        let f: Vec<u64> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
        if f.len() < 7 {
            continue;
        }
        let (ts, vt, pid, held, done) = (f[0], f[1], f[2], f[3], f[4]);
        if now.saturating_sub(ts) > vt {
            continue;
        }
        live.held += held as usize;
        live.reclaimed += f[5];
        live.duplicates += f[6];
        let mut w = WorkerInfo::process(pid as u32, String::from_utf8_lossy(&name));
        w.tasks_done = done;
        live.workers.push(w);
    }
    live
}
