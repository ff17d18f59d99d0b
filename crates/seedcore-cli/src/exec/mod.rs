//! `seedcore exec`: run a command for each input, in parallel, on the
//! seedcore engine (the library's command executor), with GNU parallel's
//! inputs, replacement strings, shell, job log, retries and exit status.
//! What differs from GNU parallel is listed in `docs/exec.md`.
//!
//! Exit status: the number of failed jobs (a non-zero exit, a signal, a
//! timeout, a command that cannot start), capped at 101 (`--halt` may give
//! another, as in GNU parallel); 130 after Ctrl-C; 141 when the reader of
//! the output goes away; 255 for a usage error (unknown option, bad
//! template, missing input file, unreadable job log).

mod inputs;
mod joblog;
mod jobsfile;
mod run;
mod settings;
mod shell;
mod template;

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `seedcore exec`.
#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// Jobs at once: a number (0: 256), `+N` or `-N` (the number of cores
    /// plus or minus N), `N%` of the cores, or `auto` (start at the number
    /// of cores and let the balancer grow and shrink it). Default: the
    /// number of cores.
    #[arg(
        short = 'j',
        long = "jobs",
        short_alias = 'P',
        alias = "max-procs",
        allow_hyphen_values = true
    )]
    pub(crate) jobs: Option<String>,
    /// Kill a job (its whole process group: SIGTERM, then SIGKILL after
    /// --grace) that runs longer than this (seconds, or `1m30s`).
    #[arg(long)]
    pub(crate) timeout: Option<String>,
    /// Time between SIGTERM and SIGKILL for a job that is stopped.
    #[arg(long, default_value = "2s")]
    pub(crate) grace: String,
    /// Try a failing job up to N times in all, as GNU parallel counts:
    /// 1 (the default) runs it once, 3 at most three times; 0 tries it
    /// until it succeeds. A timeout counts as a failure.
    #[arg(long, value_name = "N")]
    pub(crate) retries: Option<u32>,
    /// Delay before the first retry, doubled for each next one (capped at 30 s).
    #[arg(long, default_value = "100ms")]
    pub(crate) retry_delay: String,
    /// Print outputs in the order of the inputs, not of completion.
    #[arg(short = 'k', long, alias = "keeporder")]
    pub(crate) keep_order: bool,
    /// Stop early: `never`, or `soon` or `now` (`soon` lets running jobs
    /// finish, `now` kills them) with `fail=`, `success=` or `done=` a
    /// number of jobs or a percentage of them (`now,fail=1`,
    /// `soon,success=3`, `now,fail=20%`); the older `0`, `1`, `2`, `-1`,
    /// `-2` and `P%` too. The exit status is GNU parallel's: the failed
    /// job's own with `fail=1`, the percentage failed with `fail=P%`, 0
    /// once `success=` is met.
    #[arg(long, alias = "halt-on-error", allow_hyphen_values = true)]
    pub(crate) halt: Option<String>,
    /// Write one record per finished job to FILE, in GNU parallel's
    /// format (Seq Host Starttime JobRuntime Send Receive Exitval Signal
    /// Command), synced to disk; `+FILE` appends. A job killed by a signal
    /// has Exitval 0 and the signal; a timed-out one Exitval -1, Signal 15.
    /// Attempts are in --json's output.
    #[arg(long, visible_alias = "jl", value_name = "FILE")]
    pub(crate) joblog: Option<PathBuf>,
    /// Skip the jobs the --joblog shows finished (it may be GNU
    /// parallel's).
    #[arg(long)]
    pub(crate) resume: bool,
    /// Skip the jobs the --joblog shows succeeded; run the failed ones again.
    #[arg(long)]
    pub(crate) resume_failed: bool,
    /// GNU parallel's extra replacement strings: {+/} {+.} {+..} {+...}
    /// {..} {...} {/..} {/...} {##} {0#} {0%} (and {N+/} and so on). Its
    /// dynamic ones ({:-x}, {#re}, {%re}, {/re/x}, {^x}, {,x}, ...) and
    /// {choose_k} {uniq} {slot} {host} are refused, as is {= perl =}.
    #[arg(long)]
    pub(crate) plus: bool,
    /// Print one JSON object per job instead of its output.
    #[arg(long)]
    pub(crate) json: bool,
    /// Print the commands instead of running them.
    #[arg(long, alias = "dryrun")]
    pub(crate) dry_run: bool,
    /// Run the jobs with this nice value.
    #[arg(long)]
    pub(crate) nice: Option<i32>,
    /// Start a job only while this much memory is free (`512M`, `2G`).
    #[arg(long)]
    pub(crate) memfree: Option<String>,
    /// Start a job only while the 1-minute load average is below this.
    #[arg(long)]
    pub(crate) load: Option<f64>,
    /// No progress bar (there is one only when stderr is a terminal).
    #[arg(long)]
    pub(crate) no_bar: bool,
    /// Read free memory and load from FILE (`MEMFREE_BYTES LOAD`) instead
    /// of the system: for tests of --memfree and --load.
    #[arg(long, hide = true)]
    pub(crate) readings: Option<PathBuf>,
    /// Run the jobs of FILE (TOML, or JSON lines), each with its own
    /// command, priority, timeout, retries, env and cwd, instead of a
    /// template and inputs.
    #[arg(long, value_name = "FILE")]
    pub(crate) jobs_file: Option<PathBuf>,
    /// The command template, then its inputs: `::: values`, `:::+ values`
    /// (linked to the group before), `:::: files`, or lines on stdin.
    /// Jobs run in the shell GNU parallel would pick: $PARALLEL_SHELL,
    /// else the shell `seedcore exec` was started from, else $SHELL, else
    /// /bin/sh (a template without shell syntax that names a program is
    /// started directly).
    #[arg(trailing_var_arg = true)]
    pub(crate) rest: Vec<String>,
}

/// A usage error: exit status 255.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A usage error with `msg`, as the `anyhow` error the steps return.
fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// Runs `seedcore exec`.
pub(crate) fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    match run::run(args) {
        Ok(code) => Ok(code),
        Err(e) if e.downcast_ref::<Usage>().is_some() => {
            eprintln!("seedcore exec: {e:#}");
            Ok(ExitCode::from(255))
        }
        // The reader of the output went away (`| head`): stop quietly, with
        // the status of a process SIGPIPE ended, as GNU parallel does.
        Err(e) if broken_pipe(&e) => Ok(ExitCode::from(128 + libc::SIGPIPE as u8)),
        Err(e) => Err(e),
    }
}

/// Whether `e` is a write to a closed pipe.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
