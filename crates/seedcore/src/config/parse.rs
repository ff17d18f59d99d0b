//! Reading one raw value, from TOML or from the environment, as the type
//! of its key. Errors are reasons only; the caller names the field.

use super::policy::{ExpandPolicy, ProcessPriority, QueueFull, ShrinkPolicy, WorkerOutput};
use crate::sched::callback::{CallbackExecutor, CallbackQueue};
use crate::sched::ShutdownMode;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// One raw value, from TOML or from the environment.
pub(super) enum Raw<'a> {
    Toml(&'a toml::Value),
    Env(&'a str),
}

impl Raw<'_> {
    pub(super) fn count(&self) -> Result<usize, String> {
        match self {
            Raw::Toml(toml::Value::Integer(i)) => {
                usize::try_from(*i).map_err(|_| format!("must not be negative, got {i}"))
            }
            Raw::Env(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("expected a whole number, got `{s}`")),
            Raw::Toml(v) => Err(format!("expected a whole number, got {v}")),
        }
    }

    pub(super) fn text(&self) -> Result<String, String> {
        match self {
            Raw::Toml(toml::Value::String(s)) => Ok(s.clone()),
            Raw::Env(s) => Ok((*s).to_owned()),
            Raw::Toml(v) => Err(format!("expected a string, got {v}")),
        }
    }

    /// A secret: from the environment only, so that it is never written
    /// in a file that is shared or checked in.
    pub(super) fn secret(&self) -> Result<Option<super::Secret>, String> {
        match self {
            Raw::Env(s) => Ok(Some(super::Secret::new(s.as_bytes().to_vec()))),
            Raw::Toml(_) => Err(
                "a secret is not read from a configuration file: set SEEDCORE_REMOTE_SECRET, \
                 or name a file that holds it with remote.secret_file"
                    .to_owned(),
            ),
        }
    }

    pub(super) fn path(&self) -> Result<PathBuf, String> {
        self.text().map(PathBuf::from)
    }

    /// A list of strings: a TOML array, or words separated by whitespace
    /// in the environment (no quoting, so no word holds a space).
    pub(super) fn words(&self) -> Result<Vec<OsString>, String> {
        match self {
            Raw::Toml(toml::Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(OsString::from(s)),
                    other => Err(format!("expected an array of strings, got {other}")),
                })
                .collect(),
            Raw::Env(s) => Ok(s.split_whitespace().map(OsString::from).collect()),
            Raw::Toml(v) => Err(format!("expected an array of strings, got {v}")),
        }
    }

    /// A byte count: an integer, or a string like "512MiB" / "2 GB".
    pub(super) fn bytes(&self) -> Result<u64, String> {
        if let Raw::Toml(toml::Value::Integer(_)) = self {
            return self.count().map(|n| n as u64);
        }
        let s = self.text()?;
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("expected a size like 512MiB, got `{s}`"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => return Err(format!("unknown size unit `{other}` in `{s}`")),
        };
        n.checked_mul(mult)
            .ok_or_else(|| format!("`{s}` is too large"))
    }

    /// A byte count that fits in memory.
    pub(super) fn size(&self) -> Result<usize, String> {
        let b = self.bytes()?;
        usize::try_from(b).map_err(|_| format!("{b} bytes do not fit in memory"))
    }

    /// A fraction: a number like 0.8, or a string like "0.8" or "80%".
    pub(super) fn fraction(&self) -> Result<f64, String> {
        match self {
            Raw::Toml(toml::Value::Float(f)) => Ok(*f),
            Raw::Toml(toml::Value::Integer(i)) => Ok(*i as f64),
            _ => {
                let s = self.text()?;
                let t = s.trim();
                match t.strip_suffix('%') {
                    Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
                    None => t.parse::<f64>(),
                }
                .map_err(|_| format!("expected a fraction like 0.8 or \"80%\", got `{s}`"))
            }
        }
    }

    pub(super) fn duration(&self) -> Result<Duration, String> {
        // A bare number is seconds (how Python and JSON callers write it).
        let secs = match self {
            Raw::Toml(toml::Value::Float(f)) => Some(*f),
            Raw::Toml(toml::Value::Integer(i)) => Some(*i as f64),
            _ => None,
        };
        if let Some(x) = secs {
            return Duration::try_from_secs_f64(x)
                .map_err(|_| format!("expected a non-negative number of seconds, got {x}"));
        }
        let s = self.text()?;
        humantime::parse_duration(s.trim())
            .map_err(|e| format!("expected a duration like \"250ms\" or \"5s\", got `{s}` ({e})"))
    }

    /// One of `names`, as its value.
    fn one_of<T: Clone>(&self, names: &[(&str, T)]) -> Result<T, String> {
        let s = self.text()?;
        let t = s.trim();
        names
            .iter()
            .find(|(n, _)| *n == t)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                let all: Vec<String> = names.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                format!("unknown value `{t}` (expected {})", all.join(", "))
            })
    }

    pub(super) fn shutdown_mode(&self) -> Result<ShutdownMode, String> {
        self.one_of(&[
            ("graceful", ShutdownMode::Graceful),
            ("immediate", ShutdownMode::Immediate),
            ("cancel_queued", ShutdownMode::CancelQueued),
        ])
    }

    pub(super) fn callback_executor(&self) -> Result<CallbackExecutor, String> {
        let s = self.text()?;
        match s.trim() {
            "thread" => Ok(CallbackExecutor::Thread),
            "queue" => Ok(CallbackExecutor::Queue(CallbackQueue::new())),
            other => Err(format!(
                "unknown executor `{other}` (expected \"thread\" or \"queue\"; a tokio handle is set with the builder)"
            )),
        }
    }

    pub(super) fn priority(&self) -> Result<ProcessPriority, String> {
        self.one_of(&[
            ("idle", ProcessPriority::Idle),
            ("below_normal", ProcessPriority::BelowNormal),
            ("normal", ProcessPriority::Normal),
            ("above_normal", ProcessPriority::AboveNormal),
            ("high", ProcessPriority::High),
            ("realtime", ProcessPriority::Realtime),
        ])
    }

    pub(super) fn output(&self) -> Result<WorkerOutput, String> {
        self.one_of(&[
            ("forward", WorkerOutput::Forward),
            ("inherit", WorkerOutput::Inherit),
            ("discard", WorkerOutput::Discard),
        ])
    }

    pub(super) fn expand(&self) -> Result<ExpandPolicy, String> {
        ExpandPolicy::parse(&self.text()?)
    }

    pub(super) fn shrink(&self) -> Result<ShrinkPolicy, String> {
        ShrinkPolicy::parse(&self.text()?)
    }

    pub(super) fn queue_full(&self) -> Result<QueueFull, String> {
        QueueFull::parse(&self.text()?)
    }
}

/// Checks shared by several keys.
pub(super) mod check {
    use super::super::Config;
    use std::time::Duration;

    pub(in crate::config) fn ok<T>(_: &T, _: &Config) -> Result<(), String> {
        Ok(())
    }

    pub(in crate::config) fn at_least_one(v: &usize, _: &Config) -> Result<(), String> {
        if *v == 0 {
            return Err("must be at least 1".to_owned());
        }
        Ok(())
    }

    pub(in crate::config) fn some_at_least_one(v: &Option<u64>, _: &Config) -> Result<(), String> {
        if *v == Some(0) {
            return Err("must be at least 1".to_owned());
        }
        Ok(())
    }

    pub(in crate::config) fn positive(v: &Duration, _: &Config) -> Result<(), String> {
        if v.is_zero() {
            return Err("must be greater than zero".to_owned());
        }
        Ok(())
    }

    /// A fraction within (0, 1].
    pub(in crate::config) fn share(v: f64) -> Result<(), String> {
        if !(v > 0.0 && v <= 1.0) {
            return Err(format!("must be within (0, 1], got {v}"));
        }
        Ok(())
    }

    /// `max` of a pool is at least its `core` (`what`).
    pub(in crate::config) fn max_over(max: usize, core: usize, what: &str) -> Result<(), String> {
        if max < core {
            return Err(format!("must be at least {what} ({core}), got {max}"));
        }
        Ok(())
    }
}
