//! Redis: connections, key names, the scripts and the replies' shapes.

use super::{RemoteConfig, RemoteError};
use crate::options::LEVELS;
use crate::sched::WorkerInfo;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, Value};
use std::time::Duration;

/// The consumer group every worker joins.
pub(crate) const GROUP: &str = "workers";

/// Highest level first: the order a worker reads the streams in.
pub(crate) fn levels() -> impl Iterator<Item = u8> {
    0..LEVELS as u8
}

/// Key names of one namespace. The `{ns}` hash tag keeps every key of a
/// deployment in one Cluster slot, so that the scripts may touch several.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    ns: String,
}

impl Keys {
    pub(crate) fn new(ns: &str) -> Self {
        Keys {
            ns: format!("{{{ns}}}"),
        }
    }
    pub(crate) fn stream(&self, level: u8) -> String {
        format!("{}:q:{level}", self.ns)
    }
    /// A task's result, by its [`RemoteId`](super::RemoteId).
    pub(crate) fn result(&self, id: &str) -> String {
        format!("{}:r:{id}", self.ns)
    }
    /// The cancel mark of a task, by its id: set by
    /// [`RemoteClient::cancel`](super::RemoteClient::cancel), read by the
    /// workers before they run an entry of it.
    pub(crate) fn cancelled(&self, id: &str) -> String {
        format!("{}:x:{id}", self.ns)
    }
    pub(crate) fn reply(&self, client: u64) -> String {
        format!("{}:reply:{client:x}", self.ns)
    }
    /// The client's live set: a hash of its attempts still waiting, field
    /// `<task>:<attempt>`, value `0` until a worker claims it, then the
    /// claiming entry's id.
    pub(crate) fn live(&self, client: u64) -> String {
        format!("{}:live:{client:x}", self.ns)
    }
    /// Attempts a client ended while the server could not hear it (it was
    /// down): a worker that held one claims it back after a restart only
    /// if it is not here.
    pub(crate) fn gone(&self, client: u64) -> String {
        format!("{}:gone:{client:x}", self.ns)
    }
    /// The dead-letter stream.
    pub(crate) fn dead(&self) -> String {
        format!("{}:dead", self.ns)
    }
    pub(crate) fn cancel_channel(&self) -> String {
        format!("{}:cancels", self.ns)
    }
    pub(crate) fn workers(&self) -> String {
        format!("{}:workers", self.ns)
    }
    pub(crate) fn counter(&self, name: &str) -> String {
        format!("{}:{name}", self.ns)
    }
}

/// Acknowledges and deletes an entry, then stores its result if its
/// attempt is still in the client's live set (removing it there): only
/// the first result of a live attempt is kept (under the task's id) and,
/// where a client waits, reaches its reply list.
/// KEYS: result, reply list, stream, duplicates counter, live set.
/// ARGV: value, ttl seconds, group, entry id, live field, `1` to reply.
pub(crate) const STORE: &str = r"
redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[3], ARGV[4])
if redis.call('HDEL', KEYS[5], ARGV[5]) == 1 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  if ARGV[6] == '1' then
    redis.call('RPUSH', KEYS[2], ARGV[1])
    redis.call('EXPIRE', KEYS[2], ARGV[2])
  end
  return 1
end
redis.call('INCR', KEYS[4])
return 0
";

/// Claims attempts before they run: one whose field in its client's live
/// set is `0` (not claimed) or this entry's id (claimed by this entry
/// before, a redelivery) is claimed for this entry and may run; one that
/// is absent (ended, cancelled, timed out, or a replay) or claimed by
/// another copy may not; one whose task was cancelled by id is not run
/// but answered. KEYS: the live set and the cancel mark of each entry.
/// ARGV: field and entry id of each. Returns per entry 1 (run), 0 (drop)
/// or 2 (answer `Cancelled`).
pub(crate) const CLAIM: &str = r"
local out = {}
for i = 1, #KEYS / 2 do
  local f, id = ARGV[2*i-1], ARGV[2*i]
  local live = KEYS[2*i-1]
  local v = redis.call('HGET', live, f)
  if (v == '0' or v == id) and redis.call('EXISTS', KEYS[2*i]) == 1 then
    out[i] = 2
  elseif v == '0' or v == id then
    if v ~= id then redis.call('HSET', live, f, id) end
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
";

/// Sends a message again unless its attempt has a result already (then
/// the client reads that): live if absent (a worker's claim is kept), then
/// added to its stream. KEYS: result, live set, stream. ARGV: field,
/// message, signature.
pub(crate) const SEND_AGAIN: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSETNX', KEYS[2], ARGV[1], '0')
redis.call('XADD', KEYS[3], '*', 'm', ARGV[2], 's', ARGV[3])
return 1
";

/// Ends attempts a client gave up while the server was unreachable: out
/// of the live set (a worker that runs one sees it gone and stops it) and
/// into the gone set, which keeps a worker from claiming it back after a
/// restart. KEYS: live set, gone set. ARGV: fields, then the gone set's
/// expiry (Unix ms).
pub(crate) const FORGET: &str = r"
for i = 1, #ARGV - 1 do
  redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('SADD', KEYS[2], ARGV[i])
end
redis.call('PEXPIREAT', KEYS[2], ARGV[#ARGV])
return 1
";

/// A worker claims again an attempt it runs (after a restart of the
/// server lost the live set), unless its client gave it up meanwhile.
/// KEYS: live set, gone set. ARGV: field, entry id, expiry (Unix ms).
pub(crate) const REASSERT: &str = r"
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3], 'NX')
return 1
";

/// Gives an entry back unstarted (a worker's graceful stop): if its
/// attempt is still claimed by it, the claim is released and a copy added
/// to the stream; the entry itself is acknowledged and deleted. KEYS:
/// stream, live set. ARGV: group, entry id, field, message, signature.
pub(crate) const HAND_BACK: &str = r"
if redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[2] then
  redis.call('HSET', KEYS[2], ARGV[3], '0')
  redis.call('XADD', KEYS[1], '*', 'm', ARGV[4], 's', ARGV[5])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
";

/// Removes unclaimed attempts from a live set (KEYS[1]); ARGV: fields.
/// Returns per field 1 (removed, or absent: no worker has it) or 0
/// (claimed: a worker runs it).
pub(crate) const UNCLAIMED: &str = r"
local out = {}
for i = 1, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if not v or v == '0' then
    redis.call('HDEL', KEYS[1], ARGV[i])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
";

/// Takes over entries idle past ARGV[3] ms from the cursor ARGV[4], with
/// their delivery counts. KEYS: the stream. ARGV: group, consumer,
/// min idle, cursor, count. Returns {next cursor, entries, counts}.
pub(crate) const RECLAIM: &str = r"
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local counts = {}
for i, e in ipairs(r[2]) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
  if p[1] then counts[i] = p[1][4] else counts[i] = 0 end
end
return {r[1], r[2], counts}
";

/// Reads up to ARGV[3] new entries from the first stream of KEYS (highest
/// level first) that has any. Returns {stream, entries} or false.
pub(crate) const READ_HIGHEST: &str = r"
for _, k in ipairs(KEYS) do
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', k, '>')
  if r and r[1] and #r[1][2] > 0 then
    return {k, r[1][2]}
  end
end
return false
";

/// The URL with its password hidden, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// A client for `cfg.url`, checked.
pub(crate) fn client(cfg: &RemoteConfig) -> Result<Client, RemoteError> {
    let url = redact(&cfg.url);
    if cfg.url.starts_with("rediss://") {
        return super::tls::client(cfg, &url);
    }
    if !cfg.url.starts_with("redis://") && !cfg.url.starts_with("unix://") {
        return Err(RemoteError::BadUrl {
            url,
            reason: "the scheme must be redis://, rediss:// (TLS) or unix://".into(),
        });
    }
    if cfg.has_tls_files() {
        return Err(RemoteError::BadSetting(format!(
            "TLS files are set but {url} is not a rediss:// (TLS) URL"
        )));
    }
    Client::open(cfg.url.as_str()).map_err(|e| RemoteError::BadUrl {
        url,
        reason: e.to_string(),
    })
}

/// A typed error for a failed connection.
pub(crate) fn connect_error(cfg: &RemoteConfig, e: &RedisError) -> RemoteError {
    let url = redact(&cfg.url);
    let text = e.to_string();
    if e.kind() == ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
        || text.contains("invalid password")
    {
        RemoteError::Auth { url, reason: text }
    } else if text.contains("UnknownIssuer") {
        RemoteError::Connect {
            url,
            reason: format!(
                "{text} (no trusted CA signed the server's certificate: \
                 name its CA with RemoteConfig::tls_ca_file or --tls-ca-file)"
            ),
        }
    } else {
        RemoteError::Connect { url, reason: text }
    }
}

/// How long a blocking command (BLPOP, XREADGROUP BLOCK) waits at most.
pub(crate) const BLOCK: Duration = Duration::from_secs(1);

/// A multiplexed connection with a response timeout (on `blocking` ones,
/// which carry BLPOP / XREADGROUP BLOCK, past their blocking time), so
/// that a half-open connection fails instead of hanging.
pub(crate) async fn connect(
    client: &Client,
    blocking: bool,
) -> Result<MultiplexedConnection, RedisError> {
    let timeout = if blocking {
        BLOCK + Duration::from_secs(5)
    } else {
        Duration::from_secs(10)
    };
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(timeout));
    let mut c = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?;
    // A connection that authenticates lazily fails here, not later.
    redis::cmd("PING").query_async::<()>(&mut c).await?;
    Ok(c)
}

/// Connects once with a typed error: the first connection of a client or
/// a worker, where a bad password must be reported, not retried.
pub(crate) async fn first_connect(
    cfg: &RemoteConfig,
    client: &Client,
) -> Result<MultiplexedConnection, RemoteError> {
    connect(client, false)
        .await
        .map_err(|e| connect_error(cfg, &e))
}

/// Whether `e` means the connection is gone (reconnect and go on).
pub(crate) fn is_disconnect(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.to_string().contains("LOADING")
}

/// Back-off between reconnects: 50 ms doubling to 2 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64 << attempt.min(5)).min(Duration::from_secs(2))
}

/// Stops an I/O runtime: waiting briefly for its tasks, or at once where
/// the caller is itself inside a runtime (which may not block).
pub(crate) fn close_runtime(rt: tokio::runtime::Runtime) {
    if tokio::runtime::Handle::try_current().is_ok() {
        rt.shutdown_background();
    } else {
        rt.shutdown_timeout(Duration::from_millis(300));
    }
}

/// Makes the group on every stream (idempotent).
pub(crate) async fn ensure_groups(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
) -> Result<(), RedisError> {
    let mut pipe = redis::pipe();
    for l in levels() {
        pipe.cmd("XGROUP")
            .arg("CREATE")
            .arg(keys.stream(l))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .ignore();
    }
    match pipe.query_async::<()>(conn).await {
        Ok(()) => Ok(()),
        Err(e) if e.to_string().contains("BUSYGROUP") => {
            // Some groups exist: make the rest one by one.
            for l in levels() {
                let r = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(keys.stream(l))
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async::<()>(conn)
                    .await;
                if let Err(e) = r {
                    if !e.to_string().contains("BUSYGROUP") {
                        return Err(e);
                    }
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// One stream entry: its id and fields `m` (message) and `s` (signature).
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) sig: Option<Vec<u8>>,
    /// Its other fields (dead letters carry where they came from).
    pub(crate) extra: Vec<(String, String)>,
}

pub(crate) fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

pub(crate) fn text(v: &Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

/// Parses `[id, [k, v, ...]]` items; deleted entries (nil fields) are
/// skipped but their ids kept, with no body.
pub(crate) fn entries(v: &Value) -> Vec<Entry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else { continue };
        let Some(id) = pair.first().and_then(text) else {
            continue;
        };
        let mut e = Entry {
            id,
            body: None,
            sig: None,
            extra: Vec::new(),
        };
        let fields: Vec<(&Value, &Value)> = match pair.get(1) {
            Some(Value::Array(f)) => f
                .chunks(2)
                .filter_map(|kv| match kv {
                    [k, v] => Some((k, v)),
                    _ => None,
                })
                .collect(),
            Some(Value::Map(m)) => m.iter().map(|(k, v)| (k, v)).collect(),
            _ => Vec::new(),
        };
        for (k, v) in fields {
            match text(k).as_deref() {
                Some("m") => e.body = bytes(v),
                Some("s") => e.sig = bytes(v),
                Some(k) => {
                    if let Some(v) = text(v) {
                        e.extra.push((k.to_owned(), v));
                    }
                }
                None => {}
            }
        }
        out.push(e);
    }
    out
}

/// Parses an XREADGROUP reply with several streams: `[[stream, entries]..]`
/// (RESP2) or a map (RESP3).
pub(crate) fn streams_reply(v: &Value) -> Vec<(String, Vec<Entry>)> {
    let pairs: Vec<(&Value, &Value)> = match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|i| match i {
                Value::Array(p) if p.len() == 2 => Some((&p[0], &p[1])),
                _ => None,
            })
            .collect(),
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(k, v)| Some((text(k)?, entries(v))))
        .collect()
}

/// The level of a stream key (its last `:` field).
pub(crate) fn level_of(stream: &str) -> u8 {
    stream
        .rsplit(':')
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0)
}

/// The field-value pairs of a hash, as RESP2 (a flat array) or RESP3 (a
/// map) gives them.
pub(crate) fn hash_pairs(v: &Value) -> Vec<(Vec<u8>, Vec<u8>)> {
    match v {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|kv| Some((bytes(&kv[0])?, bytes(kv.get(1)?)?)))
            .collect(),
        Value::Map(m) => m
            .iter()
            .filter_map(|(k, v)| Some((bytes(k)?, bytes(v)?)))
            .collect(),
        _ => Vec::new(),
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

/// The live workers in a `{ns}:workers` hash, and what they hold.
pub(crate) fn live_workers(v: &Value) -> Live {
    let pairs = hash_pairs(v);
    let now = super::proto::unix_ms();
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
        let host = line.split(' ').nth(8).unwrap_or("?").to_owned();
        let mut w = WorkerInfo::remote(pid as u32, String::from_utf8_lossy(&name), host);
        w.tasks_done = done;
        live.workers.push(w);
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let k = Keys::new("app");
        assert_eq!(k.stream(3), "{app}:q:3");
        assert_eq!(level_of(&k.stream(10)), 10);
        assert!(k.result("ff-7").starts_with("{app}:r:ff-7"));
    }
}
