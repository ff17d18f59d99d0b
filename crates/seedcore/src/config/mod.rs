//! The system's configuration: defaults from the machine, a TOML file,
//! `SEEDCORE_*` environment variables, or the builder. Every invalid value
//! is an error naming its field; nothing falls back to a default silently.
//!
//! Every key is defined once, in the table of keys.rs; the TOML reader, the
//! environment reader, the validation and [`Config`]'s key list all come
//! from it.

mod keys;
mod parse;
mod policy;
mod table;

pub use keys::{
    AsyncConfig, BalanceConfig, CallbacksConfig, CommandSettings, Config, GpuSettings,
    ProcessesConfig, RemoteSettings, ThreadsConfig,
};

pub(crate) use keys::builder_setters;
pub use policy::{ExpandPolicy, ProcessPriority, QueueFull, ShrinkPolicy, WorkerOutput};
pub(crate) use table::builder_setter;

use crate::error::ConfigError;
use keys::{KEYS, SECTIONS};
use parse::Raw;
use std::path::Path;
use table::Key;

pub use crate::sched::ShutdownMode;

/// A secret setting: its bytes are never printed (`Debug` shows
/// `<hidden>`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

impl RemoteSettings {
    /// The defaults, with the secret keys (`remote.secret`,
    /// `remote.secret_file`) from their environment variables, read
    /// through the key table: where a remote client or worker built from a
    /// URL alone finds its secret. A value the table cannot parse is left
    /// out; its length is checked where the secret is used.
    #[cfg(feature = "remote")]
    pub(crate) fn with_env_secret() -> RemoteSettings {
        let wanted: Vec<String> = KEYS
            .iter()
            .filter(|k| k.section == "remote" && k.name.starts_with("secret"))
            .map(Key::env)
            .collect();
        let mut cfg = Config::default();
        for var in std::env::vars().filter(|(k, _)| wanted.contains(k)) {
            let _ = cfg.apply_env([var]);
        }
        cfg.remote
    }
}

/// Keys of the old flat layout and their places now, so that an old file
/// or environment fails with directions instead of being half-applied.
const MOVED: &[(&str, &str)] = &[
    ("core_threads", "threads.core"),
    ("max_threads", "threads.max"),
    ("thread_keep_alive", "threads.keep_alive"),
    ("thread_stack_size", "threads.stack_size"),
    ("async_threads", "async.threads"),
    ("max_async_tasks", "async.max_tasks"),
    ("callback_executor", "callbacks.executor"),
    ("core_processes", "processes.core"),
    ("max_processes", "processes.max"),
    ("worker_program", "processes.program"),
    ("worker_args", "processes.args"),
    ("worker_prefetch", "processes.prefetch"),
    ("worker_concurrency", "processes.concurrency"),
    ("max_tasks_per_worker", "processes.max_tasks_per_process"),
    ("max_memory_per_worker", "processes.max_memory"),
    ("worker_idle_timeout", "balance.shrink_timeout"),
    ("worker_priority", "processes.priority"),
    ("worker_initializer", "processes.initializer"),
    ("worker_finalizer", "processes.finalizer"),
    ("max_frame_bytes", "processes.max_frame_bytes"),
    ("worker_output", "processes.output"),
    ("worker_start_timeout", "processes.start_timeout"),
    ("expand_policy", "balance.expand"),
    ("shrink_policy", "balance.shrink"),
    ("shrink_timeout", "balance.shrink_timeout"),
    ("balance_interval", "balance.interval"),
    ("max_pending_tasks", "balance.max_pending_tasks"),
    ("on_queue_full", "balance.on_queue_full"),
    ("queue_full_timeout", "balance.queue_full_timeout"),
    ("expand_threshold", "balance.expand_threshold"),
    ("min_free_memory", "balance.min_free_memory"),
    ("max_cpu_load", "balance.max_cpu_load"),
];

/// The key at `section.name` (`section` is `""` at the top level).
fn key(section: &str, name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.section == section && k.name == name)
}

/// Where the old flat key `old` went, as a reason for its error.
fn moved(old: &str) -> Option<String> {
    let (_, new) = MOVED.iter().find(|(o, _)| *o == old)?;
    let (section, name) = new.split_once('.').expect("moved keys are in sections");
    let env = key(section, name).expect("moved keys exist").env();
    let mut reason = format!(
        "the flat layout is gone: this key is now `{name}` under `[{section}]` ({new}; environment {env})"
    );
    if old == "worker_idle_timeout" {
        reason.push_str(
            "; idle worker processes above processes.core retire when balance.shrink is \"timeout\"",
        );
    }
    Some(reason)
}

/// The keys of `section`, for an unknown-key error.
fn names_in(section: &str) -> String {
    KEYS.iter()
        .filter(|k| k.section == section)
        .map(|k| k.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Config {
    /// Parses a TOML document (sections and keys as listed on [`Config`])
    /// over the defaults, and validates the result.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        cfg.apply_toml(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a TOML file over the defaults, then `SEEDCORE_*` environment
    /// variables over that, and validates the result.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("<file>", format!("cannot read {}: {e}", path.display()))
        })?;
        let mut cfg = Config::default();
        cfg.apply_toml(&text)?;
        cfg.apply_env(std::env::vars())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The defaults with `SEEDCORE_*` environment variables applied,
    /// validated.
    pub fn from_env() -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        cfg.apply_env(std::env::vars())?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::new("<toml>", e.message().to_owned()))?;
        for (k, v) in &table {
            if SECTIONS.contains(&k.as_str()) {
                let toml::Value::Table(t) = v else {
                    return Err(ConfigError::new(
                        k.clone(),
                        format!("expected the section `[{k}]`, got {v}"),
                    ));
                };
                for (name, v) in t {
                    let path = format!("{k}.{name}");
                    let key = key(k, name).ok_or_else(|| {
                        ConfigError::new(
                            path.clone(),
                            format!("unknown key (the keys of [{k}]: {})", names_in(k)),
                        )
                    })?;
                    (key.set)(self, &Raw::Toml(v)).map_err(|e| ConfigError::new(path, e))?;
                }
            } else if let Some(key) = key("", k) {
                (key.set)(self, &Raw::Toml(v)).map_err(|e| ConfigError::new(k.clone(), e))?;
            } else if let Some(reason) = moved(k) {
                return Err(ConfigError::new(k.clone(), reason));
            } else if v.is_table() {
                return Err(ConfigError::new(
                    k.clone(),
                    format!("unknown section (the sections: {})", SECTIONS.join(", ")),
                ));
            } else {
                return Err(ConfigError::new(
                    k.clone(),
                    format!(
                        "unknown key (the top-level keys: {}; the others are in the sections {})",
                        names_in(""),
                        SECTIONS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Applies the `SEEDCORE_*` pairs among `vars`. An unknown name inside
    /// a section (`SEEDCORE_THREADS_…`) and an old flat name are errors,
    /// so that a typo or an old setting is not ignored; other `SEEDCORE_`
    /// names belong to other parts of seedcore (workers, tools, tests).
    pub(crate) fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (var, value) in vars {
            let Some(rest) = var.strip_prefix("SEEDCORE_") else {
                continue;
            };
            if let Some(key) = KEYS.iter().find(|k| k.env() == var) {
                (key.set)(self, &Raw::Env(&value))
                    .map_err(|e| ConfigError::new(key.path(), format!("{e} (from {var})")))?;
                continue;
            }
            let lower = rest.to_ascii_lowercase();
            if let Some(reason) = moved(&lower) {
                return Err(ConfigError::new(var.clone(), reason));
            }
            if let Some(section) = SECTIONS
                .iter()
                .find(|s| lower.starts_with(&format!("{s}_")))
            {
                return Err(ConfigError::new(
                    var.clone(),
                    format!(
                        "unknown key of [{section}] (its keys: {})",
                        names_in(section)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks every field; the error names the first one that is wrong,
    /// as `section.key`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for key in KEYS {
            (key.check)(self).map_err(|e| ConfigError::new(key.path(), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ShrinkPolicy;
    use crate::sched::callback::CallbackExecutor;
    use std::time::Duration;

    fn env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        c.apply_env(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )?;
        Ok(c)
    }

    #[test]
    fn env_values_override_and_name_the_key_and_the_variable() {
        let c = env(&[
            ("SEEDCORE_THREADS_CORE", "3"),
            ("SEEDCORE_THREADS_MAX", "9"),
            ("SEEDCORE_SHUTDOWN_TIMEOUT", "2s"),
            ("SEEDCORE_PROCESSES_MAX_TASKS_PER_PROCESS", "5"),
            ("SEEDCORE_PROCESSES_ARGS", "--worker  -v"),
            ("SEEDCORE_BALANCE_SHRINK", "timeout"),
            ("SEEDCORE_ASYNC_MAX_TASKS", "7"),
            ("PATH", "/bin"),
            // Names of other parts of seedcore pass through.
            ("SEEDCORE_WORKER_FD", "3"),
            ("SEEDCORE_BENCH_NO_PIP", "1"),
        ])
        .unwrap();
        assert_eq!((c.threads.core, c.threads.max), (3, 9));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(2));
        assert_eq!(c.processes.max_tasks_per_process, Some(5));
        assert_eq!(c.processes.args, ["--worker", "-v"]);
        assert_eq!(c.balance.shrink, ShrinkPolicy::TimeoutShrink);
        assert_eq!(c.r#async.max_tasks, 7);

        let err = env(&[("SEEDCORE_THREADS_CORE", "many")]).unwrap_err();
        assert_eq!(err.field, "threads.core");
        assert!(err.reason.contains("whole number"), "{err}");
        assert!(err.reason.contains("SEEDCORE_THREADS_CORE"), "{err}");

        let err = env(&[("SEEDCORE_THREADS_CORES", "2")]).unwrap_err();
        assert_eq!(err.field, "SEEDCORE_THREADS_CORES");
    }

    #[test]
    fn old_flat_names_are_refused_with_their_new_place() {
        let err = env(&[("SEEDCORE_CORE_THREADS", "3")]).unwrap_err();
        assert_eq!(err.field, "SEEDCORE_CORE_THREADS");
        assert!(err.reason.contains("SEEDCORE_THREADS_CORE"), "{err}");
        let err = env(&[("SEEDCORE_WORKER_PREFETCH", "3")]).unwrap_err();
        assert!(err.reason.contains("processes.prefetch"), "{err}");

        let err = Config::from_toml_str("max_memory_per_worker = \"1GiB\"").unwrap_err();
        assert_eq!(err.field, "max_memory_per_worker");
        assert!(
            err.reason.contains("`max_memory` under `[processes]`"),
            "{err}"
        );
        let err = Config::from_toml_str("worker_idle_timeout = \"5s\"").unwrap_err();
        assert!(err.reason.contains("balance.shrink"), "{err}");
    }

    #[test]
    fn every_key_has_one_env_name_and_every_old_key_a_new_place() {
        let mut envs: Vec<String> = KEYS.iter().map(Key::env).collect();
        envs.sort();
        let n = envs.len();
        envs.dedup();
        assert_eq!(envs.len(), n, "two keys share an environment name");
        for (old, _) in MOVED {
            assert!(moved(old).is_some(), "{old}");
            assert!(key("", old).is_none(), "{old} is both old and current");
        }
    }

    #[test]
    fn every_invalid_value_names_its_field() {
        let cases = [
            ("[threads]\ncore = 0", "threads.core"),
            ("[threads]\ncore = -1", "threads.core"),
            ("[threads]\ncore = 4\nmax = 3", "threads.max"),
            ("[threads]\nkeep_alive = \"soon\"", "threads.keep_alive"),
            ("[threads]\nkeep_alive = -5", "threads.keep_alive"),
            ("[threads]\nkeep_alive = \"0s\"", "threads.keep_alive"),
            ("[threads]\nstack_size = 100", "threads.stack_size"),
            ("[async]\nthreads = 0", "async.threads"),
            ("[async]\nmax_tasks = 0", "async.max_tasks"),
            ("[callbacks]\nexecutor = \"gui\"", "callbacks.executor"),
            ("shutdown_mode = \"later\"", "shutdown_mode"),
            ("shutdown_timeout = \"0ms\"", "shutdown_timeout"),
            ("name = \" \"", "name"),
            ("[processes]\ncore = 2\nmax = 1", "processes.max"),
            ("[processes]\nprefetch = 0", "processes.prefetch"),
            ("[processes]\nconcurrency = 0", "processes.concurrency"),
            (
                "[processes]\nmax_tasks_per_process = 0",
                "processes.max_tasks_per_process",
            ),
            ("[processes]\nmax_memory = \"1KiB\"", "processes.max_memory"),
            ("[processes]\npriority = \"urgent\"", "processes.priority"),
            (
                "[processes]\nmax_frame_bytes = 10",
                "processes.max_frame_bytes",
            ),
            ("[processes]\noutput = \"printer\"", "processes.output"),
            (
                "[processes]\nstart_timeout = \"0s\"",
                "processes.start_timeout",
            ),
            ("[processes]\nargs = \"-v\"", "processes.args"),
            ("[threads]\ncore_treads = 2", "threads.core_treads"),
            ("core_treads = 2", "core_treads"),
            ("[thread]\ncore = 2", "thread"),
            ("threads = 2", "threads"),
            ("core_threads = ", "<toml>"),
        ];
        for (text, field) in cases {
            let err = Config::from_toml_str(text).expect_err(text);
            assert_eq!(err.field, field, "{text}: {err}");
        }
    }

    #[test]
    fn a_bare_number_is_seconds() {
        let c = Config::from_toml_str("[threads]\nkeep_alive = 2.5\n[balance]\nshrink_timeout = 3")
            .unwrap();
        assert_eq!(c.threads.keep_alive, Duration::from_millis(2500));
        assert_eq!(c.balance.shrink_timeout, Duration::from_secs(3));
    }

    #[test]
    fn a_full_file_parses() {
        let c = Config::from_toml_str(
            r#"
            name = "batch"
            shutdown_mode = "immediate"
            shutdown_timeout = "250ms"

            [threads]
            core = 2
            max = 6
            keep_alive = "1m 30s"
            stack_size = "1MiB"

            [async]
            threads = 1
            max_tasks = 50

            [processes]
            core = 1
            max = 3
            program = "/bin/worker"
            args = ["--serve", "-q"]
            prefetch = 4
            concurrency = 2
            max_tasks_per_process = 100
            max_memory = "512MiB"
            priority = "below_normal"
            initializer = "warm_up"
            finalizer = "flush"
            max_frame_bytes = "1MiB"
            output = "discard"
            start_timeout = "3s"

            [balance]
            shrink = "timeout"
            shrink_timeout = "5s"

            [callbacks]
            executor = "queue"
            "#,
        )
        .unwrap();
        assert_eq!(c.threads.keep_alive, Duration::from_secs(90));
        assert_eq!(c.threads.stack_size, Some(1 << 20));
        assert!(matches!(c.callbacks.executor, CallbackExecutor::Queue(_)));
        assert_eq!(c.shutdown_mode, ShutdownMode::Immediate);
        assert_eq!(c.shutdown_timeout, Duration::from_millis(250));
        assert_eq!(c.name, "batch");
        let p = &c.processes;
        assert_eq!((p.core, p.max, p.prefetch, p.concurrency), (1, 3, 4, 2));
        assert_eq!(p.program.as_deref(), Some(Path::new("/bin/worker")));
        assert_eq!(p.args, ["--serve", "-q"]);
        assert_eq!(p.max_tasks_per_process, Some(100));
        assert_eq!(p.max_memory, Some(512 << 20));
        // Hooks of another program are not checked against this one's.
        assert_eq!(p.initializer.as_deref(), Some("warm_up"));
        assert_eq!(p.max_frame_bytes, 1 << 20);
        assert_eq!(p.start_timeout, Duration::from_secs(3));
        assert_eq!(c.balance.shrink, ShrinkPolicy::TimeoutShrink);
        assert_eq!(c.balance.shrink_timeout, Duration::from_secs(5));
    }

    #[test]
    fn the_remote_section_reads_from_toml_and_the_environment_and_hides_its_secret() {
        let c = Config::from_toml_str(
            "[remote]\nurl = \"redis://cache:6379/2\"\nnamespace = \"jobs\"\n\
             visibility_timeout = \"45s\"\nmax_deliveries = 5\nmax_payload_bytes = \"1MiB\"",
        )
        .unwrap();
        assert_eq!(c.remote.url.as_deref(), Some("redis://cache:6379/2"));
        assert_eq!(c.remote.namespace, "jobs");
        assert_eq!(c.remote.visibility_timeout, Duration::from_secs(45));
        assert_eq!(c.remote.max_deliveries, 5);
        assert_eq!(c.remote.max_payload_bytes, 1 << 20);
        // A secret never comes from a file.
        let err = Config::from_toml_str("[remote]\nsecret = \"0123456789abcdef0123456789abcdef\"")
            .unwrap_err();
        assert_eq!(err.field, "remote.secret");
        assert!(err.reason.contains("SEEDCORE_REMOTE_SECRET"), "{err}");
        // From the environment it is read, checked, and never printed.
        let secret = "0123456789abcdef0123456789abcdef!";
        let c = env(&[
            ("SEEDCORE_REMOTE_URL", "redis://127.0.0.1/"),
            ("SEEDCORE_REMOTE_SECRET", secret),
            ("SEEDCORE_REMOTE_SECRET_FILE", "/run/secrets/x"),
            ("SEEDCORE_REMOTE_RECONNECT_WINDOW", "5s"),
        ])
        .unwrap();
        assert_eq!(
            c.remote.secret.as_ref().unwrap().expose(),
            secret.as_bytes()
        );
        assert_eq!(c.remote.reconnect_window, Duration::from_secs(5));
        assert!(!format!("{c:?}").contains(secret));
        let err = env(&[("SEEDCORE_REMOTE_SECRET", "short")])
            .and_then(|c| c.validate())
            .unwrap_err();
        assert_eq!(err.field, "remote.secret");
        let err = Config::from_toml_str("[remote]\nurl = \"http://x\"").unwrap_err();
        assert_eq!(err.field, "remote.url");
        let err = env(&[("SEEDCORE_REMOTE_URLS", "redis://x")]).unwrap_err();
        assert!(err.reason.contains("unknown key of [remote]"), "{err}");
    }

    #[test]
    fn the_command_and_gpu_sections_are_keys_like_the_others() {
        let c = Config::from_toml_str(
            "[command]\nslots = 2\nmax_slots = 6\ngrace = \"500ms\"\nspool_threshold = \"64KiB\"\n\
             [gpu]\nstreams_per_device = 8",
        )
        .unwrap();
        assert_eq!(c.command.slots, 2);
        assert_eq!(c.command.max_slots, Some(6));
        assert_eq!(c.command.grace, Duration::from_millis(500));
        assert_eq!(c.command.spool_threshold, 64 << 10);
        assert_eq!(c.gpu.streams_per_device, 8);
        let err = Config::from_toml_str("[command]\nslots = 4\nmax_slots = 2").unwrap_err();
        assert_eq!(err.field, "command.max_slots");
        let err = env(&[("SEEDCORE_GPU_STREAMS_PER_DEVICE", "0")])
            .and_then(|c| c.validate())
            .unwrap_err();
        assert_eq!(err.field, "gpu.streams_per_device");
    }
}
