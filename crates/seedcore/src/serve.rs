//! The worker side: [`serve`] reads task messages from the streams,
//! highest priority first, runs them on this machine's process pool (so a
//! timeout kills the worker process and a crash is healed), stores each
//! result and acknowledges its entry in one script, sends heartbeats and
//! takes over the entries of workers that stopped sending them.

use crate::error::TaskError;
use crate::exec::remote::proto::{self, unix_ms, ResultMessage, Signer, TaskMessage, WireOutcome};
use crate::exec::remote::streams::{self, Entry, Keys, GROUP};
use crate::exec::remote::{RemoteConfig, RemoteError};
use crate::options::{Priority, TaskOptions, LEVELS};
use crate::sched::{Latch, ShutdownMode};
use crate::system::ConcurrentSystem;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Task names as clients send them, mapped to the registered names
    /// that run them: a task renamed (or moved to another module) keeps
    /// serving clients that still send the old name.
    pub aliases: Vec<(String, String)>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            processes: std::thread::available_parallelism().map_or(1, |n| n.get()),
            prefetch: 64,
            name: None,
            aliases: Vec::new(),
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

    /// Runs messages naming `old` with the registered task `new` (a task
    /// renamed or moved while clients still send the old name).
    pub fn alias(mut self, old: impl Into<String>, new: impl Into<String>) -> Self {
        self.aliases.push((old.into(), new.into()));
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
            in_flight: s.in_flight.count(),
        }
    }

    /// Its name in heartbeats.
    pub fn name(&self) -> &str {
        &self.state.me
    }

    /// Blocks until the worker is stopped from another thread (through a
    /// clone of its [`stopper`](Self::stopper)).
    pub fn wait(&self) {
        while !self.state.stopping.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Blocks until the worker is stopped from another thread or `timeout`
    /// passes; whether it was stopped.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let until = std::time::Instant::now() + timeout;
        while !self.state.stopping.load(Ordering::Acquire) {
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// A flag that, set from any thread, makes [`wait`](Self::wait)
    /// return and the worker stop reading (call [`stop`](Self::stop)
    /// then).
    pub fn stopper(&self) -> WorkerStopper {
        WorkerStopper(self.state.clone())
    }

    /// Stops reading, hands the entries it holds but has not started back
    /// to their streams (other workers take them at once), waits up to
    /// `grace` for the running tasks to finish and be stored, then stops.
    /// Entries not finished by then stay pending in Redis and are taken
    /// over by other workers after the visibility timeout. A zero `grace`
    /// hands nothing back.
    pub fn stop(mut self, grace: Duration) {
        self.stop_inner(grace);
    }

    fn stop_inner(&mut self, grace: Duration) {
        let s = &self.state;
        s.stopping.store(true, Ordering::Release);
        s.wake.notify_waiters();
        let until = std::time::Instant::now() + grace;
        if !grace.is_zero() {
            if let Some(rt) = &self.rt {
                // On a thread of its own: the caller may be inside a
                // runtime, where blocking on another is refused.
                let back = std::thread::scope(|sc| {
                    sc.spawn(|| {
                        rt.block_on(async {
                            let mut c = streams::connect(&s.redis, false).await?;
                            hand_back(s, &mut c).await
                        })
                    })
                    .join()
                    .unwrap_or(Ok(0))
                });
                match back {
                    Ok(0) => {}
                    Ok(n) => {
                        log::info!("seedcore remote worker: handed back {n} unstarted entries")
                    }
                    // They stay pending: another worker takes them after
                    // the visibility timeout.
                    Err(e) => log::warn!("seedcore remote worker: handing back entries: {e}"),
                }
            }
        }
        s.in_flight.wait_until(until);
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

/// Stops a worker's reading from another thread; see
/// [`WorkerHandle::stopper`].
#[derive(Debug, Clone)]
pub struct WorkerStopper(Arc<State>);

impl WorkerStopper {
    /// Stops reading new entries and wakes [`WorkerHandle::wait`].
    pub fn stop(&self) {
        self.0.stopping.store(true, Ordering::Release);
        self.0.wake.notify_waiters();
    }
}

/// A held entry, by its attempt (`<client>:<task>:<attempt>`).
struct Held {
    level: u8,
    id: String,
    /// The task's [`RemoteId`](crate::remote::RemoteId): cancels by id name it.
    rid: String,
    client: u64,
    field: String,
    expires_ms: u64,
    cancel: Option<oneshot::Sender<()>>,
    /// The entry as read, handed back unchanged on a graceful stop.
    body: Vec<u8>,
    sig: Vec<u8>,
    /// The local task, once submitted to the pool.
    local: Option<crate::TaskHandle>,
    /// Handed back to the stream unstarted: no answer.
    handed_back: bool,
}

struct State {
    cfg: RemoteConfig,
    keys: Keys,
    signer: Signer,
    redis: redis::Client,
    me: String,
    capacity: usize,
    aliases: Vec<(String, String)>,
    system: Arc<ConcurrentSystem>,
    held: Mutex<HashMap<String, Held>>,
    /// Entries held and not answered; a stop waits for it to open.
    in_flight: Latch,
    /// Where XAUTOCLAIM goes on, per level.
    cursors: Mutex<Vec<String>>,
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
    /// Store this sealed result if its attempt is live, acknowledge the
    /// entry; `held` when it was counted in flight.
    Result {
        level: u8,
        id: String,
        rid: String,
        reply: bool,
        client: u64,
        task: u64,
        attempt: u32,
        value: Vec<u8>,
        held: bool,
    },
    /// Acknowledge and delete a refused entry (counted refused).
    Refuse { level: u8, id: String },
    /// Acknowledge and delete an entry whose attempt is not live (ended,
    /// or a copy another entry runs; counted as a duplicate).
    Stale { level: u8, id: String },
    /// Move an entry to the dead-letter stream.
    Dead {
        level: u8,
        id: String,
        body: Vec<u8>,
        sig: Vec<u8>,
        deliveries: u64,
        rid: String,
        reply: bool,
        client: u64,
        task: u64,
        attempt: u32,
    },
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
        signer: Signer::new(&config.secret, &config.namespace),
        keys,
        redis,
        me,
        capacity: options.processes * options.prefetch,
        aliases: options.aliases.clone(),
        system: Arc::new(system),
        held: Mutex::new(HashMap::new()),
        in_flight: Latch::new(0),
        cursors: Mutex::new(vec!["0-0".to_owned(); LEVELS]),
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
                // A restarted server without persistence has no groups and
                // no live sets: claim again what runs here, so that the
                // copies the clients send again do not run a second time.
                if streams::ensure_groups(&mut c, &s.keys).await.is_ok()
                    && reassert(s, &mut c).await.is_ok()
                    && stop_ended(s, &mut c).await.is_ok()
                {
                    return Some(c);
                }
            }
            Err(e) => log::debug!("seedcore remote worker: reconnecting: {e}"),
        }
        tokio::time::sleep(streams::backoff(n)).await;
        n += 1;
    }
}

/// Claims again, where absent, the attempts held here (unless their
/// clients gave them up while the server was away).
async fn reassert(s: &State, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
    let held: Vec<(u64, String, String, u64)> = s
        .held
        .lock()
        .values()
        .map(|h| (h.client, h.field.clone(), h.id.clone(), h.expires_ms))
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    // EVAL, not EVALSHA: a restarted server has no scripts.
    let mut pipe = redis::pipe();
    for (client, field, id, expires_ms) in &held {
        pipe.cmd("EVAL")
            .arg(streams::REASSERT)
            .arg(2)
            .arg(s.keys.live(*client))
            .arg(s.keys.gone(*client))
            .arg(field)
            .arg(id)
            .arg(expires_ms + 60_000)
            .ignore();
    }
    pipe.query_async::<()>(conn).await
}

/// Stops the held attempts that left their client's live set (their
/// client ended them and the cancel did not reach this worker: it was
/// published while the worker or the server was away).
async fn stop_ended(s: &State, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
    let held: Vec<(String, u64, String, String)> = s
        .held
        .lock()
        .iter()
        .map(|(k, h)| (k.clone(), h.client, h.field.clone(), h.rid.clone()))
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (_, client, field, rid) in &held {
        pipe.cmd("HEXISTS").arg(s.keys.live(*client)).arg(field);
        pipe.cmd("EXISTS").arg(s.keys.cancelled(rid));
    }
    let flags: Vec<i64> = pipe.query_async(conn).await?;
    let mut map = s.held.lock();
    for ((key, ..), f) in held.into_iter().zip(flags.chunks(2)) {
        if f[0] == 0 || f[1] == 1 {
            if let Some(c) = map.get_mut(&key).and_then(|h| h.cancel.take()) {
                log::info!("seedcore remote worker: attempt {key} ended at its client: stopped");
                let _ = c.send(());
            }
        }
    }
    Ok(())
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
        let held = s.in_flight.count();
        if held >= s.capacity {
            let woken = s.wake.notified();
            if s.in_flight.count() >= s.capacity {
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
        let batch: Vec<(u8, Entry, u64)> = batch
            .into_iter()
            .flat_map(|(l, es)| es.into_iter().map(move |e| (l, e, 1)))
            .collect();
        if let Err(e) = admit(&s, &mut conn, batch, false).await {
            if !handle_error(&s, &mut conn, &e).await {
                return;
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

/// Checks entries (`level`, entry, deliveries so far) and runs those
/// whose attempt this worker claims; refuses, dead-letters or drops the
/// rest. An error leaves the unclaimed entries pending (they come back).
async fn admit(
    s: &Arc<State>,
    conn: &mut MultiplexedConnection,
    batch: Vec<(u8, Entry, u64)>,
    reclaimed: bool,
) -> redis::RedisResult<()> {
    let mut ok: Vec<(u8, Entry, TaskMessage)> = Vec::new();
    for (level, e, deliveries) in batch {
        if e.body.is_none() && e.sig.is_none() {
            // Deleted meanwhile (a result stored): nothing to do.
            continue;
        }
        let opened = proto::open_task(
            &s.signer,
            level,
            e.body.as_deref(),
            e.sig.as_deref(),
            s.cfg.max_payload_bytes,
        );
        let msg = match opened {
            Ok(m) => m,
            Err(r) => {
                log::warn!(
                    "seedcore remote worker: refused entry {} of level {level}: {}",
                    e.id,
                    r.why
                );
                s.refused.fetch_add(1, Ordering::Relaxed);
                match r.msg {
                    // Signed: its client hears why, signed.
                    Some(m) => answer(
                        s,
                        level,
                        e.id,
                        &m,
                        WireOutcome::Refused(r.why.to_string()),
                        false,
                    ),
                    None => {
                        let _ = s.stores.send(Store::Refuse { level, id: e.id });
                    }
                }
                continue;
            }
        };
        let key = attempt_key(&msg);
        if let Some(h) = s.held.lock().get(&key) {
            if h.id == e.id {
                // Ours already (a late heartbeat let it look idle).
                continue;
            }
        }
        if deliveries > u64::from(s.cfg.max_deliveries) {
            log::error!(
                "seedcore remote worker: entry {} ({}) delivered {deliveries} times, each \
                 time its worker died: moved to the dead-letter stream",
                e.id,
                msg.name
            );
            let _ = s.stores.send(Store::Dead {
                level,
                id: e.id,
                body: e.body.unwrap_or_default(),
                sig: e.sig.unwrap_or_default(),
                deliveries: deliveries - 1,
                rid: msg.id.clone(),
                reply: msg.reply,
                client: msg.client,
                task: msg.task,
                attempt: msg.attempt,
            });
            continue;
        }
        ok.push((level, e, msg));
    }
    if ok.is_empty() {
        return Ok(());
    }
    let claim = redis::Script::new(streams::CLAIM);
    let mut script = claim.prepare_invoke();
    for (_, e, m) in &ok {
        script
            .key(s.keys.live(m.client))
            .key(s.keys.cancelled(&m.id))
            .arg(m.field())
            .arg(&e.id);
    }
    let claimed: Vec<i64> = script.invoke_async(conn).await?;
    for ((level, e, msg), c) in ok.into_iter().zip(claimed) {
        if c == 2 {
            // Cancelled by id before it ran: its client hears so.
            answer(s, level, e.id, &msg, WireOutcome::Cancelled, false);
            continue;
        }
        if c != 1 {
            // Its attempt ended (a replay, a cancel, a copy already run)
            // or another copy runs it.
            log::debug!(
                "seedcore remote worker: entry {} is not live: dropped",
                e.id
            );
            s.duplicates.fetch_add(1, Ordering::Relaxed);
            let _ = s.stores.send(Store::Stale { level, id: e.id });
            continue;
        }
        if reclaimed {
            s.reclaimed.fetch_add(1, Ordering::Relaxed);
        }
        start(s, level, e, msg);
    }
    Ok(())
}

/// Stores `outcome` for a message that did not run.
fn answer(s: &State, level: u8, id: String, m: &TaskMessage, outcome: WireOutcome, held: bool) {
    let r = ResultMessage {
        version: proto::version(),
        id: m.id.clone(),
        client: m.client,
        task: m.task,
        attempt: m.attempt,
        outcome,
    };
    let _ = s.stores.send(Store::Result {
        level,
        id,
        rid: m.id.clone(),
        reply: m.reply,
        client: m.client,
        task: m.task,
        attempt: m.attempt,
        value: s.signer.seal_result(&r),
        held,
    });
}

/// Runs one claimed message.
fn start(s: &Arc<State>, level: u8, e: Entry, msg: TaskMessage) {
    let (ctx, crx) = oneshot::channel();
    let id = e.id;
    let key = attempt_key(&msg);
    s.held.lock().insert(
        key.clone(),
        Held {
            level,
            id: id.clone(),
            rid: msg.id.clone(),
            client: msg.client,
            field: msg.field(),
            expires_ms: msg.expires_ms,
            cancel: Some(ctx),
            body: e.body.unwrap_or_default(),
            sig: e.sig.unwrap_or_default(),
            local: None,
            handed_back: false,
        },
    );
    s.in_flight.add(1);
    let st = s.clone();
    tokio::spawn(async move {
        let outcome = run(&st, &key, &msg, crx).await;
        let back = {
            let mut held = st.held.lock();
            let back = held.get(&key).is_some_and(|h| h.handed_back);
            if back {
                held.remove(&key);
            }
            back
        };
        if back {
            st.in_flight.sub(1);
            st.wake.notify_waiters();
        } else {
            answer(&st, level, id, &msg, outcome, true);
        }
    });
}

/// On a graceful stop: the held entries whose local task has not started
/// go back to their stream at once (a copy at its end, the attempt's claim
/// released), for another worker to take without waiting for the
/// visibility timeout. Returns how many.
async fn hand_back(s: &State, conn: &mut MultiplexedConnection) -> redis::RedisResult<usize> {
    /// Level, entry id, client, field, message, signature.
    type Back = (u8, String, u64, String, Vec<u8>, Vec<u8>);
    let back: Vec<Back> = {
        let mut held = s.held.lock();
        held.values_mut()
            .filter(|h| {
                h.local
                    .as_ref()
                    .is_some_and(|l| l.status() == crate::TaskStatus::Queued && l.cancel())
            })
            .map(|h| {
                h.handed_back = true;
                (
                    h.level,
                    h.id.clone(),
                    h.client,
                    h.field.clone(),
                    h.body.clone(),
                    h.sig.clone(),
                )
            })
            .collect()
    };
    if back.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    for (level, id, client, field, body, sig) in &back {
        pipe.cmd("EVAL")
            .arg(streams::HAND_BACK)
            .arg(2)
            .arg(s.keys.stream(*level))
            .arg(s.keys.live(*client))
            .arg(GROUP)
            .arg(id)
            .arg(field)
            .arg(body.as_slice())
            .arg(sig.as_slice())
            .ignore();
    }
    pipe.query_async::<()>(conn).await?;
    Ok(back.len())
}

/// An attempt's key among the held entries and in cancels.
fn attempt_key(m: &TaskMessage) -> String {
    format!("{:x}:{}:{}", m.client, m.task, m.attempt)
}

/// Runs one message on the local pool.
async fn run(
    s: &State,
    key: &str,
    m: &TaskMessage,
    mut cancel: oneshot::Receiver<()>,
) -> WireOutcome {
    if cancel.try_recv().is_ok() {
        return WireOutcome::Cancelled;
    }
    let wanted = s
        .aliases
        .iter()
        .find(|(old, _)| *old == m.name)
        .map_or(m.name.as_str(), |(_, new)| new.as_str());
    let Some(name) = crate::exec::process::find_task(wanted) else {
        s.refused.fetch_add(1, Ordering::Relaxed);
        return WireOutcome::Refused(format!("no task named `{}` on this worker", m.name));
    };
    let mut opts =
        TaskOptions::new().priority(Priority::new(m.priority).unwrap_or(Priority::NORMAL));
    if let Some(t) = m.timeout_ms {
        // Each attempt has the task's timeout, all of them together no
        // more than the message's life (what its client waits).
        let left = m.expires_ms.saturating_sub(unix_ms()).max(1);
        let each = if m.retry.is_some() { t.max(1) } else { left };
        opts = opts.timeout(Duration::from_millis(each.min(left)));
    }
    if let Some(r) = &m.retry {
        // The worker retries: retries survive the client.
        opts = opts.retry(r.policy());
    }
    let fut = match s.system.submit_process_raw(opts, name, m.args.clone()) {
        Ok(f) => f,
        Err(e) => return WireOutcome::Refused(e.to_string()),
    };
    if let Some(h) = s.held.lock().get_mut(key) {
        h.local = Some(fut.cancel_handle());
    }
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
    let store = redis::Script::new(streams::STORE);
    let _ = store.prepare_invoke().load_async(&mut conn).await;
    // One store script call: keep `value` as the attempt's result if the
    // attempt is live, and acknowledge the entry.
    #[allow(clippy::too_many_arguments)]
    let store_result = |pipe: &mut redis::Pipeline,
                        level: u8,
                        id: &str,
                        (rid, reply): (&str, bool),
                        client: u64,
                        task: u64,
                        attempt: u32,
                        value: &[u8]| {
        pipe.cmd("EVALSHA")
            .arg(store.get_hash())
            .arg(5)
            .arg(s.keys.result(rid))
            .arg(s.keys.reply(client))
            .arg(s.keys.stream(level))
            .arg(&dup_key)
            .arg(s.keys.live(client))
            .arg(value)
            .arg(ttl)
            .arg(GROUP)
            .arg(id)
            .arg(proto::field(task, attempt))
            .arg(if reply { "1" } else { "0" });
    };
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let mut pipe = redis::pipe();
        let mut results = 0;
        for st in &batch {
            match st {
                Store::Result {
                    level,
                    id,
                    rid,
                    reply,
                    client,
                    task,
                    attempt,
                    value,
                    ..
                } => {
                    results += 1;
                    store_result(
                        &mut pipe,
                        *level,
                        id,
                        (rid, *reply),
                        *client,
                        *task,
                        *attempt,
                        value,
                    );
                }
                Store::Refuse { level, id } | Store::Stale { level, id } => {
                    pipe.cmd("XACK")
                        .arg(s.keys.stream(*level))
                        .arg(GROUP)
                        .arg(id)
                        .ignore();
                    pipe.cmd("XDEL").arg(s.keys.stream(*level)).arg(id).ignore();
                    let counter = if matches!(st, Store::Refuse { .. }) {
                        &refused_key
                    } else {
                        &dup_key
                    };
                    pipe.cmd("INCR").arg(counter).ignore();
                }
                Store::Dead {
                    level,
                    id,
                    body,
                    sig,
                    deliveries,
                    rid,
                    reply,
                    client,
                    task,
                    attempt,
                } => {
                    pipe.cmd("XADD")
                        .arg(s.keys.dead())
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(DEAD_LETTERS_KEPT)
                        .arg("*")
                        .arg("m")
                        .arg(body.as_slice())
                        .arg("s")
                        .arg(sig.as_slice())
                        .arg("level")
                        .arg(*level)
                        .arg("entry")
                        .arg(id)
                        .arg("deliveries")
                        .arg(*deliveries)
                        .arg("client")
                        .arg(format!("{client:x}"))
                        .arg("task")
                        .arg(*task)
                        .arg("attempt")
                        .arg(*attempt)
                        .arg("id")
                        .arg(rid)
                        .arg("at_ms")
                        .arg(unix_ms())
                        .ignore();
                    let r = ResultMessage {
                        version: proto::version(),
                        id: rid.clone(),
                        client: *client,
                        task: *task,
                        attempt: *attempt,
                        outcome: WireOutcome::Poisoned {
                            deliveries: *deliveries,
                        },
                    };
                    results += 1;
                    let sealed = s.signer.seal_result(&r);
                    store_result(
                        &mut pipe,
                        *level,
                        id,
                        (rid, *reply),
                        *client,
                        *task,
                        *attempt,
                        &sealed,
                    );
                }
            }
        }
        let firsts: Vec<i64> = loop {
            match pipe.query_async::<Vec<i64>>(&mut conn).await {
                Ok(v) => break v,
                Err(e) if streams::is_disconnect(&e) => match reconnect(&s, false).await {
                    Some(c) => {
                        conn = c;
                        let _ = store.prepare_invoke().load_async(&mut conn).await;
                    }
                    None => return,
                },
                Err(e) if e.to_string().contains("NOSCRIPT") => {
                    // A restarted server forgot the script: load it, again.
                    let _ = store.prepare_invoke().load_async(&mut conn).await;
                }
                Err(e) => {
                    // The entries stay pending and come back to a worker
                    // after the visibility timeout.
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
                held: true,
                ..
            } = st
            {
                held.remove(&format!("{client:x}:{task}:{attempt}"));
                freed += 1;
            }
        }
        drop(held);
        s.done.fetch_add(freed as u64, Ordering::Relaxed);
        s.in_flight.sub(freed);
        s.wake.notify_waiters();
    }
}

/// Every third of the visibility timeout: a heartbeat, the idle time of
/// the held entries reset, and entries idle past the timeout taken over.
async fn heartbeat(s: Arc<State>, mut conn: MultiplexedConnection) {
    let vt = s.cfg.visibility_timeout;
    let every = vt / 3;
    let mut n = 0u64;
    loop {
        if s.stopping.load(Ordering::Acquire) {
            let _ = redis::cmd("HDEL")
                .arg(s.keys.workers())
                .arg(&s.me)
                .query_async::<()>(&mut conn)
                .await;
            return;
        }
        n += 1;
        if let Err(e) = beat(&s, &mut conn, vt, n).await {
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
    n: u64,
) -> redis::RedisResult<()> {
    let c = WorkerCounts {
        done: s.done.load(Ordering::Relaxed),
        reclaimed: s.reclaimed.load(Ordering::Relaxed),
        duplicates: s.duplicates.load(Ordering::Relaxed),
        refused: s.refused.load(Ordering::Relaxed),
        in_flight: s.in_flight.count(),
    };
    let line = format!(
        "{} {} {} {} {} {} {} {} {}",
        unix_ms(),
        vt.as_millis(),
        std::process::id(),
        c.in_flight,
        c.done,
        c.reclaimed,
        c.duplicates,
        c.refused,
        hostname()
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
            // JUSTID: the idle time is reset, the delivery count is not.
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
    stop_ended(s, conn).await?;
    // Take over what silent workers hold, while there is room, going on
    // from where the last beat stopped in each stream.
    let reclaim = redis::Script::new(streams::RECLAIM);
    for l in streams::levels() {
        let room = s.capacity.saturating_sub(s.in_flight.count());
        if room == 0 || s.stopping.load(Ordering::Acquire) {
            break;
        }
        let cursor = s.cursors.lock()[l as usize].clone();
        let v: Value = reclaim
            .key(s.keys.stream(l))
            .arg(GROUP)
            .arg(&s.me)
            .arg(vt.as_millis() as u64)
            .arg(&cursor)
            .arg(room)
            .invoke_async(conn)
            .await?;
        let Value::Array(parts) = v else { continue };
        if let Some(next) = parts.first().and_then(streams::text) {
            s.cursors.lock()[l as usize] = next;
        }
        let entries = parts.get(1).map(streams::entries).unwrap_or_default();
        let counts: Vec<u64> = match parts.get(2) {
            Some(Value::Array(c)) => c
                .iter()
                .map(|v| match v {
                    Value::Int(n) => *n as u64,
                    _ => 1,
                })
                .collect(),
            _ => Vec::new(),
        };
        let batch: Vec<(u8, Entry, u64)> = entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| (l, e, counts.get(i).copied().unwrap_or(1)))
            .collect();
        if !batch.is_empty() {
            admit(s, conn, batch, true).await?;
        }
    }
    // Now and then: trim what no message can still use, forget dead
    // workers.
    if n % 10 == 1 {
        housekeeping(s, conn, vt).await?;
    }
    Ok(())
}

/// Trims the streams of entries older than twice the message TTL (no
/// message is valid that long) and removes workers silent for five
/// visibility timeouts once they hold nothing.
async fn housekeeping(
    s: &State,
    conn: &mut MultiplexedConnection,
    vt: Duration,
) -> redis::RedisResult<()> {
    let min_id = unix_ms().saturating_sub(2 * s.cfg.message_ttl.as_millis() as u64);
    let mut pipe = redis::pipe();
    for l in streams::levels() {
        pipe.cmd("XTRIM")
            .arg(s.keys.stream(l))
            .arg("MINID")
            .arg("~")
            .arg(min_id)
            .ignore();
    }
    pipe.cmd("HGETALL").arg(s.keys.workers());
    let (all,): (Value,) = pipe.query_async(conn).await?;
    let dead_after = (vt * 5).as_millis() as u64;
    let now = unix_ms();
    for (name, line) in streams::hash_pairs(&all) {
        let ts: u64 = String::from_utf8_lossy(&line)
            .split(' ')
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if now.saturating_sub(ts) < dead_after {
            continue;
        }
        let name = String::from_utf8_lossy(&name).into_owned();
        let mut pending = 0;
        for l in streams::levels() {
            let p: Value = redis::cmd("XPENDING")
                .arg(s.keys.stream(l))
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(1)
                .arg(&name)
                .query_async(conn)
                .await?;
            if matches!(&p, Value::Array(a) if !a.is_empty()) {
                pending += 1;
            }
        }
        if pending == 0 {
            let mut pipe = redis::pipe();
            for l in streams::levels() {
                pipe.cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(s.keys.stream(l))
                    .arg(GROUP)
                    .arg(&name)
                    .ignore();
            }
            pipe.cmd("HDEL").arg(s.keys.workers()).arg(&name).ignore();
            pipe.query_async::<()>(conn).await?;
            log::info!("seedcore remote worker: forgot the dead worker {name}");
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
                // `<client>:<task>:<attempt>`, or `id:<task id>`; an entry
                // not held here is out of its live set (or marked
                // cancelled) already, so not run when read.
                let mut held = s.held.lock();
                if let Some(rid) = key.strip_prefix("id:") {
                    for h in held.values_mut().filter(|h| h.rid == rid) {
                        if let Some(c) = h.cancel.take() {
                            let _ = c.send(());
                        }
                    }
                } else if let Some(c) = held.get_mut(&key).and_then(|h| h.cancel.take()) {
                    let _ = c.send(());
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

/// How many dead letters the dead-letter stream keeps (about; oldest
/// trimmed first).
const DEAD_LETTERS_KEPT: u64 = 10_000;

/// An entry of the dead-letter stream `{ns}:dead`: a message that was
/// delivered `max_deliveries` times, each time with its worker dying.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id in the dead-letter stream.
    pub id: String,
    /// The registered task name (empty where the message no longer
    /// verifies with this secret).
    pub task_name: String,
    /// The priority level (its stream).
    pub level: u8,
    /// How many deliveries it had.
    pub deliveries: u64,
    /// When it was dead-lettered, Unix milliseconds.
    pub at_ms: u64,
    /// The attempt, as `<client>:<task>:<attempt>`.
    pub attempt: String,
    /// The task's [`RemoteId`](crate::remote::RemoteId).
    pub task_id: String,
}

/// Lists the dead letters of the deployment at `config.url`, oldest first
/// (at most `limit`).
pub fn dead_letters(config: &RemoteConfig, limit: usize) -> Result<Vec<DeadLetter>, RemoteError> {
    config.validate()?;
    let signer = Signer::new(&config.secret, &config.namespace);
    let keys = Keys::new(&config.namespace);
    with_conn(config, |mut conn| async move {
        let v: Value = redis::cmd("XRANGE")
            .arg(keys.dead())
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        Ok(streams::entries(&v)
            .into_iter()
            .map(|e| dead_letter(&signer, e, config.max_payload_bytes))
            .collect())
    })
}

fn dead_letter(signer: &Signer, e: Entry, max: usize) -> DeadLetter {
    let field = |k: &str| {
        e.extra
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let level: u8 = field("level").parse().unwrap_or(0);
    let name = match proto::open_task(signer, level, e.body.as_deref(), e.sig.as_deref(), max) {
        Ok(m) => m.name,
        Err(r) => r.msg.map(|m| m.name).unwrap_or_default(),
    };
    DeadLetter {
        task_name: name,
        level,
        deliveries: field("deliveries").parse().unwrap_or(0),
        at_ms: field("at_ms").parse().unwrap_or(0),
        attempt: format!("{}:{}:{}", field("client"), field("task"), field("attempt")),
        task_id: field("id"),
        id: e.id,
    }
}

/// Puts the dead letter `id` back on its stream, live again, with its
/// deliveries counted from zero, and removes it from the dead-letter
/// stream; whether it was there. Its result, when a worker stores one,
/// waits under its attempt's result key (its client was answered
/// already).
pub fn requeue_dead_letter(config: &RemoteConfig, id: &str) -> Result<bool, RemoteError> {
    config.validate()?;
    let keys = Keys::new(&config.namespace);
    with_conn(config, |mut conn| async move {
        let v: Value = redis::cmd("XRANGE")
            .arg(keys.dead())
            .arg(id)
            .arg(id)
            .query_async(&mut conn)
            .await?;
        let Some(e) = streams::entries(&v).into_iter().next() else {
            return Ok(false);
        };
        let field = |k: &str| {
            e.extra
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let (Some(body), Some(sig)) = (&e.body, &e.sig) else {
            return Ok(false);
        };
        let level: u8 = field("level").parse().unwrap_or(0);
        let client = u64::from_str_radix(&field("client"), 16).unwrap_or(0);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("HSET")
            .arg(keys.live(client))
            .arg(format!("{}:{}", field("task"), field("attempt")))
            .arg("0")
            .ignore();
        pipe.cmd("XADD")
            .arg(keys.stream(level))
            .arg("*")
            .arg("m")
            .arg(body.as_slice())
            .arg("s")
            .arg(sig.as_slice())
            .ignore();
        pipe.cmd("XDEL").arg(keys.dead()).arg(id).ignore();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(true)
    })
}

/// Runs `f` on one connection to `config.url`, on a runtime of its own.
fn with_conn<T, F, Fut>(config: &RemoteConfig, f: F) -> Result<T, RemoteError>
where
    F: FnOnce(MultiplexedConnection) -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    let client = streams::client(config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RemoteError::Redis(e.to_string()))?;
    let r = rt.block_on(async {
        let conn = streams::first_connect(config, &client).await?;
        f(conn).await.map_err(|e| RemoteError::Redis(e.to_string()))
    });
    streams::close_runtime(rt);
    r
}
