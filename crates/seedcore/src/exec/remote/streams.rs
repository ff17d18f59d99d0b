//! Redis: connections, key names, the scripts and the replies' shapes.

use super::{RemoteConfig, RemoteError};
use crate::options::LEVELS;
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
    pub(crate) fn result(&self, client: u64, task: u64, attempt: u32) -> String {
        format!("{}:r:{client:x}:{task}:{attempt}", self.ns)
    }
    pub(crate) fn reply(&self, client: u64) -> String {
        format!("{}:reply:{client:x}", self.ns)
    }
    pub(crate) fn cancel(&self, client: u64, task: u64, attempt: u32) -> String {
        format!("{}:cancel:{client:x}:{task}:{attempt}", self.ns)
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

/// Stores a result if it is the attempt's first, then acknowledges and
/// deletes its entry; only the first result reaches the reply list.
/// KEYS: result, reply list, stream, duplicates counter. ARGV: value, ttl
/// seconds, group, entry id.
pub(crate) const STORE: &str = r"
local first = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[3], ARGV[4])
if first then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return 1
end
redis.call('INCR', KEYS[4])
return 0
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
        return Err(RemoteError::TlsUnsupported);
    }
    if !cfg.url.starts_with("redis://") && !cfg.url.starts_with("unix://") {
        return Err(RemoteError::BadUrl {
            url,
            reason: "the scheme must be redis:// (or unix://)".into(),
        });
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
    } else {
        RemoteError::Connect { url, reason: text }
    }
}

/// A multiplexed connection; `blocking` ones have no response timeout
/// (they carry BLPOP / XREADGROUP BLOCK).
pub(crate) async fn connect(
    client: &Client,
    blocking: bool,
) -> Result<MultiplexedConnection, RedisError> {
    let timeout = (!blocking).then_some(Duration::from_secs(10));
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(timeout);
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
}

pub(crate) fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
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
        };
        if let Some(Value::Array(fields)) = pair.get(1) {
            for kv in fields.chunks(2) {
                if let [k, v] = kv {
                    match text(k).as_deref() {
                        Some("m") => e.body = bytes(v),
                        Some("s") => e.sig = bytes(v),
                        _ => {}
                    }
                }
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
        assert!(k.result(255, 7, 1).starts_with("{app}:r:ff:7:1"));
    }
}
