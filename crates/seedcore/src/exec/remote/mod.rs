//! The remote executor: process tasks run on worker machines fed through
//! Redis Streams (feature `remote`).
//!
//! # Delivery
//!
//! * One stream per priority level (`{ns}:q:0` .. `{ns}:q:10`), one
//!   consumer group `workers`; a worker reads the highest level that has
//!   entries first (a script reads the levels in order, one round trip).
//! * At least once: a worker acknowledges an entry only in the same script
//!   that stores its result. A worker that dies leaves its entries pending;
//!   after the visibility timeout another worker claims them (XAUTOCLAIM).
//!   Live workers refresh the idle time of their entries on each heartbeat
//!   so that long tasks are not taken from them.
//! * First result wins: a result is stored only while its attempt is in
//!   the client's live set, which storing it leaves, so a duplicate run is
//!   counted, never delivered twice. The client deletes a result once
//!   delivered; uncollected ones expire after the result TTL.
//! * The client waits on its reply list with `BLPOP` (no polling), drains
//!   what else is there with `LPOP n`, and after a reconnect reads the
//!   result keys of every attempt still pending, so a reply lost with a
//!   connection is found again.
//!
//! # Security
//!
//! Every message is signed with HMAC-SHA256 over a shared secret, results
//! too; workers refuse unsigned, forged, expired or oversized messages and
//! unknown task names, and count refusals in `{ns}:refused`. A worker runs
//! an attempt only while it is in its client's live set (`{ns}:live:<client>`),
//! so a message replayed after its attempt ended is refused.
//!
//! A `rediss://` URL connects over TLS (rustls, with the system's trust
//! roots, a CA file and a client certificate where configured; see
//! `tls.rs`); certificate checks cannot be turned off.

pub(crate) mod client;
pub(crate) mod ids;
pub(crate) mod proto;
pub(crate) mod streams;
pub(crate) mod tls;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use ids::{RemoteClient, RemoteId};

/// Settings of the remote executor (client) and of a worker.
#[derive(Clone)]
#[non_exhaustive]
pub struct RemoteConfig {
    /// `redis://[user:password@]host:port[/db]`, or
    /// `rediss://[user:password@]host:port[/db]` for TLS: the server's
    /// certificate must be valid for `host` and signed by a root the
    /// system trusts or by a certificate of [`tls_ca_file`](Self::tls_ca_file).
    /// Certificate checks cannot be turned off: `rediss://…/#insecure` is
    /// refused with [`RemoteError::BadUrl`].
    pub url: String,
    /// The shared secret messages are signed with; the same on the client
    /// and every worker.
    pub secret: Vec<u8>,
    /// Key prefix; one deployment (one stream set) per namespace. Keys are
    /// `{namespace}:...`, so that in a Redis Cluster they share a slot.
    pub namespace: String,
    /// How long an entry may stay with a worker that sends no heartbeat
    /// before another worker takes it.
    pub visibility_timeout: Duration,
    /// How long results (and reply lists) are kept.
    pub result_ttl: Duration,
    /// The largest encoded arguments accepted.
    pub max_payload_bytes: usize,
    /// How long a message without a timeout stays valid (a message with a
    /// timeout is valid until its deadline). A worker refuses, with a
    /// signed answer, a message it reads later; the client fails an
    /// attempt no worker took by then.
    pub message_ttl: Duration,
    /// How long the client keeps reconnecting to an unreachable server
    /// before it fails every waiting attempt, and every new one at once,
    /// with [`RemoteError::Unreachable`] (inside
    /// [`TaskError::Failed`](crate::TaskError::Failed)) until the server
    /// answers again.
    pub reconnect_window: Duration,
    /// How many times an entry is delivered at most: an entry whose
    /// workers died with it this often goes to the dead-letter stream
    /// `{ns}:dead`, and its future fails with
    /// [`TaskError::WorkerDied`](crate::TaskError::WorkerDied) naming the
    /// count.
    pub max_deliveries: u32,
    /// A PEM file of CA certificates trusted for `rediss://`, besides the
    /// system's roots: the CA of a cloud provider's or a private server's
    /// certificate. Read when the client or worker starts.
    pub tls_ca_file: Option<PathBuf>,
    /// A PEM file with the client's certificate chain (leaf first), for a
    /// server that asks for client certificates (mutual TLS); with
    /// [`tls_client_key_file`](Self::tls_client_key_file).
    pub tls_client_cert_file: Option<PathBuf>,
    /// A PEM file with the private key of
    /// [`tls_client_cert_file`](Self::tls_client_cert_file) (PKCS#8,
    /// PKCS#1 or SEC1, unencrypted). Its contents never appear in a
    /// message.
    pub tls_client_key_file: Option<PathBuf>,
}

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

impl RemoteConfig {
    /// Settings for `url`, with the secret from `SEEDCORE_REMOTE_SECRET`,
    /// else from the file named by `SEEDCORE_REMOTE_SECRET_FILE` (or none),
    /// and the defaults of the `[remote]` section: visibility timeout 30 s,
    /// result TTL 1 h, payload limit 16 MiB, message TTL 1 h, reconnect
    /// window 30 s, 3 deliveries.
    pub fn new(url: impl Into<String>) -> Self {
        RemoteConfig {
            secret: env_secret(),
            ..Self::with(url.into(), &crate::config::RemoteSettings::default())
        }
    }

    /// Settings from the `[remote]` section of a
    /// [`Config`](crate::Config) (a TOML file, `SEEDCORE_REMOTE_*`
    /// variables): the secret from `remote.secret` (environment only),
    /// else the file `remote.secret_file`, else as [`new`](Self::new).
    /// [`RemoteError::BadSetting`] if `remote.url` is not set or the secret
    /// file cannot be read.
    pub fn from_settings(s: &crate::config::RemoteSettings) -> Result<Self, RemoteError> {
        let url = s.url.clone().ok_or_else(|| {
            RemoteError::BadSetting("remote.url is not set (SEEDCORE_REMOTE_URL)".into())
        })?;
        let c = Self::with(url, s);
        match (&s.secret, &s.secret_file) {
            (Some(_), _) => Ok(c),
            (None, Some(path)) => c.secret_file(path),
            (None, None) => Ok(RemoteConfig {
                secret: env_secret(),
                ..c
            }),
        }
    }

    /// `url` with the settings `s` (the secret file is the caller's).
    fn with(url: String, s: &crate::config::RemoteSettings) -> Self {
        RemoteConfig {
            url,
            secret: s
                .secret
                .as_ref()
                .map(|x| x.expose().to_vec())
                .unwrap_or_default(),
            namespace: s.namespace.clone(),
            visibility_timeout: s.visibility_timeout,
            result_ttl: s.result_ttl,
            max_payload_bytes: s.max_payload_bytes,
            message_ttl: s.message_ttl,
            reconnect_window: s.reconnect_window,
            max_deliveries: u32::try_from(s.max_deliveries).unwrap_or(u32::MAX),
            tls_ca_file: s.tls_ca_file.clone(),
            tls_client_cert_file: s.tls_client_cert_file.clone(),
            tls_client_key_file: s.tls_client_key_file.clone(),
        }
    }

    /// Trusts the CA certificates in the PEM file at `path` for a
    /// `rediss://` URL, besides the system's roots. A file that cannot be
    /// read or holds no certificate fails the start of the client or
    /// worker with [`RemoteError::BadSetting`] naming it.
    pub fn tls_ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.tls_ca_file = Some(path.as_ref().to_path_buf());
        self
    }

    /// Presents the certificate chain in the PEM file `cert` with the
    /// private key in the PEM file `key` to a `rediss://` server that asks
    /// for client certificates (mutual TLS). Files, so that the key never
    /// appears in a command line; checked to belong together when the
    /// client or worker starts.
    pub fn tls_client_cert(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.tls_client_cert_file = Some(cert.as_ref().to_path_buf());
        self.tls_client_key_file = Some(key.as_ref().to_path_buf());
        self
    }

    /// Whether any TLS file is set.
    pub(crate) fn has_tls_files(&self) -> bool {
        self.tls_ca_file.is_some()
            || self.tls_client_cert_file.is_some()
            || self.tls_client_key_file.is_some()
    }

    /// Reads the shared secret from the file at `path` (one trailing
    /// newline is ignored), so that it never appears in a command line.
    pub fn secret_file(mut self, path: impl AsRef<std::path::Path>) -> Result<Self, RemoteError> {
        self.secret = read_secret(path.as_ref())?;
        Ok(self)
    }

    /// The URL with its password hidden, for messages and logs.
    pub fn redacted_url(&self) -> String {
        streams::redact(&self.url)
    }

    /// Sets how long a message without a timeout stays valid.
    pub fn message_ttl(mut self, d: Duration) -> Self {
        self.message_ttl = d;
        self
    }

    /// Sets the reconnect window.
    pub fn reconnect_window(mut self, d: Duration) -> Self {
        self.reconnect_window = d;
        self
    }

    /// Sets the most deliveries of one entry.
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// Sets the shared secret.
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secret = secret.as_ref().to_vec();
        self
    }

    /// Sets the key prefix.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    /// Sets the visibility timeout.
    pub fn visibility_timeout(mut self, d: Duration) -> Self {
        self.visibility_timeout = d;
        self
    }

    /// Sets the result TTL.
    pub fn result_ttl(mut self, d: Duration) -> Self {
        self.result_ttl = d;
        self
    }

    /// Sets the payload limit.
    pub fn max_payload_bytes(mut self, n: usize) -> Self {
        self.max_payload_bytes = n;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), RemoteError> {
        if self.secret.is_empty() {
            return Err(RemoteError::NoSecret);
        }
        if self.secret.len() < MIN_SECRET_BYTES {
            return Err(RemoteError::BadSetting(format!(
                "the shared secret must be at least {MIN_SECRET_BYTES} bytes (it has {})",
                self.secret.len()
            )));
        }
        if self.max_deliveries == 0 {
            return Err(RemoteError::BadSetting(
                "max_deliveries must be at least 1".into(),
            ));
        }
        if self.message_ttl < Duration::from_secs(1) {
            return Err(RemoteError::BadSetting(
                "message_ttl must be at least 1s".into(),
            ));
        }
        if self.visibility_timeout < Duration::from_millis(100) {
            return Err(RemoteError::BadSetting(
                "visibility_timeout must be at least 100ms".into(),
            ));
        }
        if self.result_ttl < Duration::from_secs(1) {
            return Err(RemoteError::BadSetting(
                "result_ttl must be at least 1s".into(),
            ));
        }
        if self.namespace.is_empty() || self.namespace.contains(['{', '}']) {
            return Err(RemoteError::BadSetting(
                "namespace must be non-empty, without braces".into(),
            ));
        }
        if self.tls_client_cert_file.is_some() != self.tls_client_key_file.is_some() {
            return Err(RemoteError::BadSetting(tls::CERT_AND_KEY.into()));
        }
        Ok(())
    }
}

impl fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("url", &streams::redact(&self.url))
            .field("secret", &"<hidden>")
            .field("namespace", &self.namespace)
            .field("visibility_timeout", &self.visibility_timeout)
            .field("result_ttl", &self.result_ttl)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("message_ttl", &self.message_ttl)
            .field("reconnect_window", &self.reconnect_window)
            .field("max_deliveries", &self.max_deliveries)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_client_cert_file", &self.tls_client_cert_file)
            .field("tls_client_key_file", &self.tls_client_key_file)
            .finish()
    }
}

/// Why the remote executor or a worker could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The URL does not parse as a Redis URL.
    #[error("bad Redis URL `{url}`: {reason}")]
    BadUrl {
        /// The URL, password hidden.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Redis refused the credentials (wrong password or user).
    #[error("Redis at {url} refused the credentials: {reason}")]
    Auth {
        /// The URL, password hidden.
        url: String,
        /// Redis's answer.
        reason: String,
    },
    /// The server could not be reached, or (`rediss://`) the TLS
    /// handshake failed: an untrusted or expired certificate, a name it
    /// is not valid for, a client certificate the server refused.
    #[error("cannot connect to Redis at {url}: {reason}")]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// The OS's, the TLS library's or the client's error.
        reason: String,
    },
    /// No shared secret was given.
    #[error("the remote executor needs a shared secret (RemoteConfig::secret or SEEDCORE_REMOTE_SECRET)")]
    NoSecret,
    /// A setting is out of range, or a file it names (the secret, a TLS
    /// certificate or key) cannot be read or does not hold what it should;
    /// the message names the file.
    #[error("invalid remote setting: {0}")]
    BadSetting(String),
    /// Redis answered an unexpected error (out of memory, a read-only
    /// replica after a fail-over, a cluster redirection); an attempt that
    /// fails with it may be retried.
    #[error("Redis error: {0}")]
    Redis(String),
    /// The server could not be reached for the whole reconnect window:
    /// waiting attempts fail with it, and new ones at once, until it
    /// answers again.
    #[error("Redis at {url} has been unreachable for more than {window:?}")]
    Unreachable {
        /// The URL, password hidden.
        url: String,
        /// The reconnect window.
        window: Duration,
    },
    /// No worker took the attempt's message before it expired.
    #[error("no remote worker took the task within {0:?} (its message expired)")]
    Expired(Duration),
}

/// The secret from `SEEDCORE_REMOTE_SECRET`, else from the file named by
/// `SEEDCORE_REMOTE_SECRET_FILE` (read through the key table); empty if
/// neither gives one.
fn env_secret() -> Vec<u8> {
    let s = crate::config::RemoteSettings::with_env_secret();
    match (s.secret, s.secret_file) {
        (Some(secret), _) => secret.expose().to_vec(),
        (None, Some(path)) => read_secret(&path).unwrap_or_default(),
        (None, None) => Vec::new(),
    }
}

/// Reads a secret file: its bytes, one trailing newline dropped.
fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, RemoteError> {
    let mut b = std::fs::read(path).map_err(|e| {
        RemoteError::BadSetting(format!(
            "cannot read the secret file {}: {e}",
            path.display()
        ))
    })?;
    if b.last() == Some(&b'\n') {
        b.pop();
        if b.last() == Some(&b'\r') {
            b.pop();
        }
    }
    Ok(b)
}
