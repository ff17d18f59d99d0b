//! `--jobs-file FILE`: jobs given one by one, each with its own command,
//! priority, timeout, retries, environment and working directory.
//!
//! Two forms, told apart by the file's name (`.toml`) or, failing that,
//! by its first non-blank character (`{` is JSON lines):
//!
//! ```text
//! {"command": "gzip -9 big.log", "priority": 2, "timeout": "10m", "retries": 1}
//! {"command": ["convert", "a b.png", "a b.jpg"], "cwd": "/tmp", "env": {"OMP_NUM_THREADS": "1"}}
//! ```
//!
//! ```toml
//! [[job]]
//! command = "gzip -9 big.log"
//! priority = 2
//! ```
//!
//! A string command is a line for the job shell (the same as for a
//! template: `$PARALLEL_SHELL`, the shell `seedcore exec` was started
//! from, `$SHELL`, `/bin/sh`), an array is a program and its arguments
//! started directly. `retries` means what `--retries` means: tries in
//! all, 0 for no limit. Unknown keys are errors, so a typo is not
//! silently ignored.

use super::shell::{JobShell, Quoting};
use super::template::quote;
use seedcore::command::CommandSpec;
use seedcore::{Backoff, Priority, RetryPolicy, TaskOptions};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A command: a shell line or program and arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum JobCommand {
    /// Run by the job shell.
    Line(String),
    /// Program and arguments, started directly.
    Argv(Vec<String>),
}

/// A timeout: seconds, or a human duration (`1m30s`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Timeout {
    /// Seconds.
    Secs(f64),
    /// `1m30s`, `500ms`.
    Text(String),
}

/// One job of the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Job {
    /// What to run.
    pub(crate) command: JobCommand,
    /// 0 (most urgent) to 10.
    pub(crate) priority: Option<u8>,
    /// Overrides `--timeout`.
    pub(crate) timeout: Option<Timeout>,
    /// Overrides `--retries` (tries in all; 0 for no limit).
    pub(crate) retries: Option<u32>,
    /// Added to the environment.
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    /// Working directory.
    pub(crate) cwd: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    job: Vec<Job>,
}

/// Reads every job of `path`; the error names the file and the line.
pub(crate) fn read(path: &Path) -> Result<Vec<Job>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read jobs file {}: {e}", path.display()))?;
    let toml = path.extension().is_some_and(|e| e == "toml")
        || !text.trim_start().starts_with('{') && !text.trim().is_empty();
    if toml {
        let f: TomlFile =
            toml::from_str(&text).map_err(|e| format!("jobs file {}: {e}", path.display()))?;
        return Ok(f.job);
    }
    let mut jobs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let job: Job = serde_json::from_str(line)
            .map_err(|e| format!("jobs file {} line {}: {e}", path.display(), n + 1))?;
        jobs.push(job);
    }
    Ok(jobs)
}

impl Job {
    /// Checks what serde cannot: the priority's range, a non-empty command.
    pub(crate) fn check(&self, n: usize) -> Result<(), String> {
        if self.priority.is_some_and(|p| p > 10) {
            return Err(format!("job {n}: priority must be 0 to 10"));
        }
        match &self.command {
            JobCommand::Line(l) if l.trim().is_empty() => Err(format!("job {n}: empty command")),
            JobCommand::Argv(a) if a.is_empty() => Err(format!("job {n}: empty command")),
            _ => Ok(()),
        }
    }
}

/// Reads and checks the jobs of `path`.
pub(crate) fn open(path: &Path) -> Result<std::vec::IntoIter<Job>, String> {
    let jobs = read(path)?;
    for (n, j) in jobs.iter().enumerate() {
        j.check(n + 1)?;
    }
    Ok(jobs.into_iter())
}

impl Job {
    /// The job's command, its line (for the log), and its own options when
    /// it sets any (`base`, the command line's, otherwise).
    pub(crate) fn into_spec(
        self,
        base: &TaskOptions,
        retry_delay: Duration,
        shell: &JobShell,
    ) -> Result<(CommandSpec, String, Option<TaskOptions>), String> {
        let (mut spec, line) = match self.command {
            JobCommand::Line(l) => (CommandSpec::shell(l.clone()).shell_program(&shell.path), l),
            JobCommand::Argv(a) => {
                let line = a
                    .iter()
                    .map(|w| quote(w, Quoting::Sh))
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut a = a.into_iter();
                let program = a.next().unwrap_or_default();
                (CommandSpec::new(program).args(a), line)
            }
        };
        for (k, v) in &self.env {
            spec = spec.env(k, v);
        }
        if let Some(d) = self.cwd {
            spec = spec.cwd(d);
        }
        if self.priority.is_none() && self.timeout.is_none() && self.retries.is_none() {
            return Ok((spec, line, None));
        }
        let mut opts = base.clone();
        if let Some(p) = self.priority.and_then(Priority::new) {
            opts = opts.priority(p);
        }
        match self.timeout {
            Some(Timeout::Secs(s)) if s.is_finite() && s >= 0.0 => {
                opts = opts.timeout(Duration::from_secs_f64(s));
            }
            Some(Timeout::Secs(s)) => return Err(format!("timeout {s}: not a duration")),
            Some(Timeout::Text(t)) => {
                let d = humantime::parse_duration(&t).map_err(|e| format!("timeout {t}: {e}"))?;
                opts = opts.timeout(d);
            }
            None => {}
        }
        if let Some(r) = self.retries {
            let r = super::settings::retries_after_first(r);
            opts = opts.retry(RetryPolicy::retries(r).backoff(Backoff::Exponential {
                initial: retry_delay,
                factor: 2.0,
                max: Duration::from_secs(30),
            }));
        }
        Ok((spec, line, Some(opts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse_and_typos_are_errors() {
        let dir = std::env::temp_dir().join(format!("seedcore-jobsfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let j = dir.join("jobs.jsonl");
        std::fs::write(
            &j,
            "{\"command\": \"echo a\", \"priority\": 1, \"timeout\": \"2s\"}\n\n{\"command\": [\"echo\", \"b c\"], \"env\": {\"X\": \"1\"}}\n",
        )
        .unwrap();
        let jobs = read(&j).unwrap();
        assert_eq!(jobs.len(), 2);
        assert!(matches!(jobs[1].command, JobCommand::Argv(ref a) if a[1] == "b c"));
        let t = dir.join("jobs.toml");
        std::fs::write(&t, "[[job]]\ncommand = \"true\"\nretries = 2\n[[job]]\ncommand = [\"false\"]\ncwd = \"/\"\n").unwrap();
        let jobs = read(&t).unwrap();
        assert_eq!(jobs[0].retries, Some(2));
        std::fs::write(&j, "{\"comand\": \"echo a\"}\n").unwrap();
        assert!(read(&j).unwrap_err().contains("line 1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
