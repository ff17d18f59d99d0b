//! The remote executor on the system (feature `remote`): attached by the
//! builder, the `[remote]` section or [`ConcurrentSystem::add_remote`].

use super::{ConcurrentSystem, Shared, SystemBuilder};
use crate::error::SubmitError;
use crate::exec::process::ProcessTask;
use crate::exec::remote::client::{RemoteExec, KIND};
use crate::exec::remote::{RemoteConfig, RemoteError, RemoteId};
use crate::kind::TaskId;
use crate::options::TaskOptions;
use crate::task::TaskFuture;
use std::sync::Arc;

impl SystemBuilder {
    /// Adds the remote executor on the Redis server at `url` (feature
    /// `remote`); tasks reach it through
    /// [`ConcurrentSystem::submit_remote`]. The secret comes from
    /// `SEEDCORE_REMOTE_SECRET` unless [`remote_secret`](Self::remote_secret)
    /// sets it; [`remote_config`](Self::remote_config) sets everything.
    pub fn remote(mut self, url: impl Into<String>) -> Self {
        let secret = self.remote.take().map(|c| c.secret);
        let mut c = RemoteConfig::new(url);
        if let Some(s) = secret.filter(|s| !s.is_empty()) {
            c.secret = s;
        }
        self.remote = Some(c);
        self
    }

    /// The shared secret the remote executor signs its messages with.
    pub fn remote_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        let c = self
            .remote
            .take()
            .unwrap_or_else(|| RemoteConfig::new(String::new()));
        self.remote = Some(c.secret(secret));
        self
    }

    /// Every setting of the remote executor.
    pub fn remote_config(mut self, config: RemoteConfig) -> Self {
        self.remote = Some(config);
        self
    }
}

impl ConcurrentSystem {
    /// Adds the remote executor after the system is built: like
    /// [`SystemBuilder::remote`], with a typed error (a bad URL, a refused
    /// password, an unreachable server). Fails with
    /// [`RemoteError::BadSetting`] if one is attached already.
    pub fn add_remote(&self, config: RemoteConfig) -> Result<(), RemoteError> {
        attach(self.shared(), config)
    }

    /// Runs the process task `task` with `args` on a remote worker (see
    /// [`seedcore::remote`](crate::remote)) and returns its future at once.
    /// Priority, timeout, retries, cancel and callbacks work as for local
    /// tasks; a timeout or a cancel also asks the worker to stop the task.
    ///
    /// Fails at once if no remote executor is attached, the arguments do
    /// not serialize, hold shared-memory buffers or are larger than
    /// `max_payload_bytes`.
    pub fn submit_remote<A, R>(
        &self,
        opts: TaskOptions,
        task: ProcessTask<A, R>,
        args: A,
    ) -> Result<TaskFuture<R>, SubmitError>
    where
        A: serde::Serialize,
        R: serde::de::DeserializeOwned + Send + 'static,
    {
        self.submit_remote_inner(opts, None, task, args)
    }

    /// [`submit_remote`](Self::submit_remote) under the caller's id: the
    /// result is kept under it for the result TTL, also once delivered
    /// here, so that [`RemoteClient::result`](crate::remote::RemoteClient::result)
    /// finds it from any process, after this one has exited too.
    pub fn submit_remote_as<A, R>(
        &self,
        opts: TaskOptions,
        id: RemoteId,
        task: ProcessTask<A, R>,
        args: A,
    ) -> Result<TaskFuture<R>, SubmitError>
    where
        A: serde::Serialize,
        R: serde::de::DeserializeOwned + Send + 'static,
    {
        self.submit_remote_inner(opts, Some(id), task, args)
    }

    fn submit_remote_inner<A, R>(
        &self,
        opts: TaskOptions,
        rid: Option<RemoteId>,
        task: ProcessTask<A, R>,
        args: A,
    ) -> Result<TaskFuture<R>, SubmitError>
    where
        A: serde::Serialize,
        R: serde::de::DeserializeOwned + Send + 'static,
    {
        let Some((slot, exec)) = self.shared().executor::<RemoteExec>(KIND) else {
            return Err(SubmitError::InvalidOptions(
                "no remote executor: build the system with SystemBuilder::remote(url)".into(),
            ));
        };
        let enc = crate::exec::process::encode_args(&args)?;
        if !enc.fds.is_empty() {
            return Err(SubmitError::Serialize(
                "shared-memory buffers cannot travel to remote workers".into(),
            ));
        }
        let (body, opts) = exec.body::<R>(task.name(), enc.bytes, rid, opts)?;
        self.submit_body(opts, slot, body)
    }

    /// The [`RemoteId`] of the remote task `task` submitted by this system
    /// with [`submit_remote`](Self::submit_remote) (one given to
    /// [`submit_remote_as`](Self::submit_remote_as) is the caller's):
    /// [`RemoteClient::result`](crate::remote::RemoteClient::result) and
    /// [`cancel`](crate::remote::RemoteClient::cancel) find the task by it from
    /// any process. `None` without a remote executor.
    pub fn remote_id(&self, task: TaskId) -> Option<RemoteId> {
        let (_, exec) = self.shared().executor::<RemoteExec>(KIND)?;
        Some(exec.remote_id(task))
    }
}

/// Starts the remote executor and registers it.
fn attach(shared: &Arc<Shared>, config: RemoteConfig) -> Result<(), RemoteError> {
    if shared.executor::<RemoteExec>(KIND).is_some() {
        return Err(RemoteError::BadSetting(
            "a remote executor is attached already".into(),
        ));
    }
    let exec = Arc::new(RemoteExec::start(config)?);
    shared
        .register(exec)
        .map_err(|e| RemoteError::BadSetting(e.to_string()))?;
    Ok(())
}
