//! The system's configuration: defaults from the machine, a TOML file,
//! `SEEDCORE_*` environment variables, or the builder. Every invalid value
//! is an error naming its field; nothing falls back to a default silently.

use crate::callback::{CallbackExecutor, CallbackQueue};
use crate::error::ConfigError;
use std::path::Path;
use std::time::Duration;

/// What dropping the system, or a graceful shutdown that runs out of time,
/// does with the work that is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownMode {
    /// Stop accepting tasks, finish queued and running work, then stop.
    #[default]
    Graceful,
    /// Stop accepting tasks, resolve queued work [`Cancelled`], signal
    /// running work to stop, then stop.
    ///
    /// [`Cancelled`]: crate::TaskError::Cancelled
    Immediate,
}

/// The configuration of a [`ConcurrentSystem`](crate::ConcurrentSystem).
///
/// Keys (the same in TOML, and upper-cased after `SEEDCORE_` in the
/// environment): `core_threads`, `max_threads`, `thread_keep_alive`,
/// `thread_stack_size`, `async_threads`, `max_async_tasks`,
/// `callback_executor` (`"thread"` or `"queue"`), `shutdown_mode`
/// (`"graceful"` or `"immediate"`), `shutdown_timeout`, `name`. Durations
/// are written like `"250ms"`, `"5s"` or `"1m 30s"`.
///
/// ```
/// use seedcore::Config;
///
/// let cfg = Config::from_toml_str("core_threads = 2\nmax_threads = 8\nthread_keep_alive = \"30s\"")?;
/// assert_eq!(cfg.max_threads, 8);
///
/// let err = Config::from_toml_str("core_threads = 4\nmax_threads = 2").unwrap_err();
/// assert_eq!(err.field, "max_threads");
/// # Ok::<(), seedcore::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Pool threads kept running (default: the number of logical cores).
    pub core_threads: usize,
    /// Upper bound of pool threads, replacements of stuck threads included
    /// (default: twice `core_threads`).
    pub max_threads: usize,
    /// How long a thread above `core_threads` stays idle before it exits.
    pub thread_keep_alive: Duration,
    /// Stack size of pool threads in bytes (default: the platform's).
    pub thread_stack_size: Option<usize>,
    /// Worker threads of the async runtime (default: `core_threads`).
    pub async_threads: usize,
    /// Async attempts running at once; more wait in priority order.
    pub max_async_tasks: usize,
    /// Where completion callbacks run.
    pub callback_executor: CallbackExecutor,
    /// What dropping the system does.
    pub shutdown_mode: ShutdownMode,
    /// How long a shutdown waits for work and threads to finish.
    pub shutdown_timeout: Duration,
    /// Prefix of thread names.
    pub name: String,
}

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Config {
            core_threads: cores,
            max_threads: cores * 2,
            thread_keep_alive: Duration::from_secs(60),
            thread_stack_size: None,
            async_threads: cores,
            max_async_tasks: 10_000,
            callback_executor: CallbackExecutor::Thread,
            shutdown_mode: ShutdownMode::Graceful,
            shutdown_timeout: Duration::from_secs(30),
            name: "seedcore".to_owned(),
        }
    }
}

const KEYS: &[&str] = &[
    "core_threads",
    "max_threads",
    "thread_keep_alive",
    "thread_stack_size",
    "async_threads",
    "max_async_tasks",
    "callback_executor",
    "shutdown_mode",
    "shutdown_timeout",
    "name",
];

/// One raw value, from TOML or from the environment.
enum Raw<'a> {
    Toml(&'a toml::Value),
    Env(&'a str),
}

impl Raw<'_> {
    fn count(&self, key: &str) -> Result<usize, ConfigError> {
        match self {
            Raw::Toml(toml::Value::Integer(i)) => usize::try_from(*i)
                .map_err(|_| ConfigError::new(key, format!("must not be negative, got {i}"))),
            Raw::Env(s) => s
                .trim()
                .parse()
                .map_err(|_| ConfigError::new(key, format!("expected a whole number, got `{s}`"))),
            Raw::Toml(v) => Err(ConfigError::new(
                key,
                format!("expected a whole number, got {v}"),
            )),
        }
    }

    fn text(&self, key: &str) -> Result<String, ConfigError> {
        match self {
            Raw::Toml(toml::Value::String(s)) => Ok(s.clone()),
            Raw::Env(s) => Ok((*s).to_owned()),
            Raw::Toml(v) => Err(ConfigError::new(key, format!("expected a string, got {v}"))),
        }
    }

    fn duration(&self, key: &str) -> Result<Duration, ConfigError> {
        let s = self.text(key)?;
        humantime::parse_duration(s.trim()).map_err(|e| {
            ConfigError::new(
                key,
                format!("expected a duration like \"250ms\" or \"5s\", got `{s}` ({e})"),
            )
        })
    }
}

impl Config {
    /// Parses a TOML document (keys as listed above) over the defaults,
    /// and validates the result.
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
            self.set(k, Raw::Toml(v))?;
        }
        Ok(())
    }

    /// Applies the `SEEDCORE_*` pairs among `vars`; an unknown
    /// `SEEDCORE_` name is an error, so that a typo is not ignored.
    pub(crate) fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("SEEDCORE_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if !KEYS.contains(&key.as_str()) {
                // Variables of other parts of seedcore (tests, tools) share
                // the prefix; only keys of this struct are checked.
                continue;
            }
            self.set(&key, Raw::Env(&value))
                .map_err(|e| ConfigError::new(name.clone(), e.reason))?;
        }
        Ok(())
    }

    fn set(&mut self, key: &str, v: Raw<'_>) -> Result<(), ConfigError> {
        match key {
            "core_threads" => self.core_threads = v.count(key)?,
            "max_threads" => self.max_threads = v.count(key)?,
            "thread_keep_alive" => self.thread_keep_alive = v.duration(key)?,
            "thread_stack_size" => self.thread_stack_size = Some(v.count(key)?),
            "async_threads" => self.async_threads = v.count(key)?,
            "max_async_tasks" => self.max_async_tasks = v.count(key)?,
            "callback_executor" => {
                self.callback_executor = match v.text(key)?.as_str() {
                    "thread" => CallbackExecutor::Thread,
                    "queue" => CallbackExecutor::Queue(CallbackQueue::new()),
                    other => {
                        return Err(ConfigError::new(
                            key,
                            format!("unknown executor `{other}` (expected \"thread\" or \"queue\"; a tokio handle is set with the builder)"),
                        ))
                    }
                }
            }
            "shutdown_mode" => {
                self.shutdown_mode = match v.text(key)?.as_str() {
                    "graceful" => ShutdownMode::Graceful,
                    "immediate" => ShutdownMode::Immediate,
                    other => {
                        return Err(ConfigError::new(
                            key,
                            format!("unknown mode `{other}` (expected \"graceful\" or \"immediate\")"),
                        ))
                    }
                }
            }
            "shutdown_timeout" => self.shutdown_timeout = v.duration(key)?,
            "name" => self.name = v.text(key)?,
            other => {
                return Err(ConfigError::new(
                    other,
                    format!("unknown key (known keys: {})", KEYS.join(", ")),
                ))
            }
        }
        Ok(())
    }

    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.core_threads == 0 {
            return Err(ConfigError::new("core_threads", "must be at least 1"));
        }
        if self.max_threads < self.core_threads {
            return Err(ConfigError::new(
                "max_threads",
                format!(
                    "must be at least core_threads ({}), got {}",
                    self.core_threads, self.max_threads
                ),
            ));
        }
        if self.thread_keep_alive.is_zero() {
            return Err(ConfigError::new(
                "thread_keep_alive",
                "must be greater than zero",
            ));
        }
        if let Some(s) = self.thread_stack_size {
            if s < 16 * 1024 {
                return Err(ConfigError::new(
                    "thread_stack_size",
                    format!("must be at least 16384 bytes, got {s}"),
                ));
            }
        }
        if self.async_threads == 0 {
            return Err(ConfigError::new("async_threads", "must be at least 1"));
        }
        if self.max_async_tasks == 0 {
            return Err(ConfigError::new("max_async_tasks", "must be at least 1"));
        }
        if self.shutdown_timeout.is_zero() {
            return Err(ConfigError::new(
                "shutdown_timeout",
                "must be greater than zero",
            ));
        }
        if self.name.trim().is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_override_and_name_the_variable() {
        let mut c = Config::default();
        c.apply_env([
            ("SEEDCORE_CORE_THREADS".to_owned(), "3".to_owned()),
            ("SEEDCORE_MAX_THREADS".to_owned(), "9".to_owned()),
            ("SEEDCORE_SHUTDOWN_TIMEOUT".to_owned(), "2s".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ])
        .unwrap();
        assert_eq!((c.core_threads, c.max_threads), (3, 9));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(2));

        let err = Config::default()
            .apply_env([("SEEDCORE_CORE_THREADS".to_owned(), "many".to_owned())])
            .unwrap_err();
        assert_eq!(err.field, "SEEDCORE_CORE_THREADS");
        assert!(err.reason.contains("whole number"), "{err}");
    }

    #[test]
    fn every_invalid_value_names_its_field() {
        let cases = [
            ("core_threads = 0", "core_threads"),
            ("core_threads = -1", "core_threads"),
            ("core_threads = 4\nmax_threads = 3", "max_threads"),
            ("thread_keep_alive = \"soon\"", "thread_keep_alive"),
            ("thread_keep_alive = 5", "thread_keep_alive"),
            ("thread_keep_alive = \"0s\"", "thread_keep_alive"),
            ("thread_stack_size = 100", "thread_stack_size"),
            ("async_threads = 0", "async_threads"),
            ("max_async_tasks = 0", "max_async_tasks"),
            ("callback_executor = \"gui\"", "callback_executor"),
            ("shutdown_mode = \"later\"", "shutdown_mode"),
            ("shutdown_timeout = \"0ms\"", "shutdown_timeout"),
            ("name = \" \"", "name"),
            ("core_treads = 2", "core_treads"),
            ("core_threads = ", "<toml>"),
        ];
        for (text, field) in cases {
            let err = Config::from_toml_str(text).expect_err(text);
            assert_eq!(err.field, field, "{text}: {err}");
        }
    }

    #[test]
    fn a_full_file_parses() {
        let c = Config::from_toml_str(
            r#"
            core_threads = 2
            max_threads = 6
            thread_keep_alive = "1m 30s"
            thread_stack_size = 1048576
            async_threads = 1
            max_async_tasks = 50
            callback_executor = "queue"
            shutdown_mode = "immediate"
            shutdown_timeout = "250ms"
            name = "batch"
            "#,
        )
        .unwrap();
        assert_eq!(c.thread_keep_alive, Duration::from_secs(90));
        assert_eq!(c.thread_stack_size, Some(1 << 20));
        assert!(matches!(c.callback_executor, CallbackExecutor::Queue(_)));
        assert_eq!(c.shutdown_mode, ShutdownMode::Immediate);
        assert_eq!(c.shutdown_timeout, Duration::from_millis(250));
        assert_eq!(c.name, "batch");
    }
}
