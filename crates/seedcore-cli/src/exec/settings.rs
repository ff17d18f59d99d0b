//! The flags of `seedcore exec` that are not inputs, checked and turned
//! into values once, before any job starts: job slots, timeouts, retries,
//! `--halt`, and the `--memfree` / `--load` gates.

use super::{usage, ExecArgs};
use std::time::Duration;

/// The checked flags of a run.
#[derive(Debug)]
pub(super) struct Settings {
    /// The machine's cores.
    pub(super) cores: usize,
    /// Jobs at once (`-j`); the start with `-j auto`.
    pub(super) slots: usize,
    /// `-j auto`: the balancer moves the slots between 1 and 4x the cores.
    pub(super) auto: bool,
    /// `--timeout`.
    pub(super) timeout: Option<Duration>,
    /// `--grace`.
    pub(super) grace: Duration,
    /// `--retry-delay`.
    pub(super) retry_delay: Duration,
    /// `--retries`: tries in all (GNU parallel counts so), 0 for no limit.
    pub(super) tries: u32,
    /// `--halt`, unless `never`.
    pub(super) halt: Option<Halt>,
    /// `--memfree`, in bytes.
    pub(super) memfree: Option<u64>,
    /// Where free memory and load are read.
    readings: Readings,
}

impl Settings {
    /// Checks the flags in the order a user fixes them (the first bad one
    /// is reported): an unknown option, `-j`, the durations, `--halt`,
    /// `--memfree`, then `--resume` without `--joblog`.
    pub(super) fn parse(args: &ExecArgs) -> anyhow::Result<Settings> {
        if let Some(first) = args.rest.first() {
            if first.starts_with('-') && first.len() > 1 {
                return Err(usage(format!("unknown option: {first}")));
            }
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (slots, auto) = match args.jobs.as_deref() {
            None => (cores, false),
            Some("auto") => (cores, true),
            Some(j) => {
                let n = if let Some(p) = j.strip_suffix('%') {
                    p.parse::<f64>()
                        .ok()
                        .map(|p| ((cores as f64 * p / 100.0).round() as usize).max(1))
                } else if let Some(more) = j.strip_prefix('+') {
                    // GNU parallel: +N and -N add to and take from the cores.
                    more.parse::<usize>().ok().map(|n| cores + n)
                } else if let Some(fewer) = j.strip_prefix('-') {
                    fewer
                        .parse::<usize>()
                        .ok()
                        .map(|n| cores.saturating_sub(n).max(1))
                } else {
                    j.parse::<usize>()
                        .ok()
                        .map(|n| if n == 0 { 256 } else { n })
                };
                (
                    n.ok_or_else(|| {
                        usage(format!("-j {j}: expected a number, +N, -N, N% or auto"))
                    })?,
                    false,
                )
            }
        };
        let timeout = args
            .timeout
            .as_deref()
            .map(|t| duration(t, "timeout"))
            .transpose()?;
        let grace = duration(&args.grace, "grace")?;
        let retry_delay = duration(&args.retry_delay, "retry-delay")?;
        let halt = args.halt.as_deref().map(halt).transpose()?.flatten();
        let memfree = args.memfree.as_deref().map(bytes).transpose()?;
        if (args.resume || args.resume_failed) && args.joblog.is_none() {
            return Err(usage("--resume and --resume-failed need --joblog FILE"));
        }
        Ok(Settings {
            cores,
            slots,
            auto,
            timeout,
            grace,
            retry_delay,
            tries: args.retries.unwrap_or(1),
            halt,
            memfree,
            readings: Readings {
                file: args.readings.clone(),
            },
        })
    }

    /// The most slots the executor may have.
    pub(super) fn max_slots(&self) -> usize {
        if self.auto {
            4 * self.cores
        } else {
            self.slots
        }
    }

    /// Whether `--memfree` and `--load` let another job start now.
    pub(super) fn resources_allow(&self, load_limit: Option<f64>) -> bool {
        if self.memfree.is_none() && load_limit.is_none() {
            return true;
        }
        let (mem, load) = self.readings.read();
        let mem_ok = self.memfree.map_or(true, |m| mem >= m);
        let load_ok = load_limit.map_or(true, |l| load < l);
        mem_ok && load_ok
    }
}

fn duration(s: &str, what: &str) -> anyhow::Result<Duration> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s).map_err(|e| usage(format!("--{what} {s}: {e}")))
}

fn bytes(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<f64>()
        .ok()
        .filter(|v| *v >= 0.0)
        .map(|v| (v * mult as f64) as u64)
        .ok_or_else(|| usage(format!("--memfree {s}: not a size")))
}

/// `--halt`: GNU parallel's `when,why=limit`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Halt {
    /// `now`: kill the running jobs; `soon`: let them finish.
    pub(super) now: bool,
    /// Which jobs count.
    why: Why,
    /// How many of them trip it.
    limit: Limit,
}

/// What `--halt` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// `fail=`: failed jobs.
    Fail,
    /// `success=`: jobs that succeeded.
    Success,
    /// `done=`: finished jobs, either way.
    Done,
}

#[derive(Debug, Clone, Copy)]
enum Limit {
    /// This many jobs.
    Count(u64),
    /// This percentage of the jobs.
    Percent(f64),
}

/// Where a run stands, for `--halt`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tally {
    pub(super) finished: u64,
    pub(super) failed: u64,
    /// The number of jobs, where known before they ran.
    pub(super) total: Option<u64>,
}

impl Tally {
    /// `n` jobs as a percentage of the run's jobs (of those finished, when
    /// their number is not known).
    fn percent(&self, n: u64) -> f64 {
        let of = self
            .total
            .filter(|t| *t > 0)
            .unwrap_or(self.finished)
            .max(1);
        n as f64 * 100.0 / of as f64
    }
}

impl Halt {
    /// Whether the run, at `t`, trips it.
    pub(super) fn tripped(&self, t: Tally) -> bool {
        let n = match self.why {
            Why::Fail => t.failed,
            Why::Success => t.finished - t.failed,
            Why::Done => t.finished,
        };
        n > 0
            && match self.limit {
                Limit::Count(c) => n >= c,
                Limit::Percent(p) => t.percent(n) >= p,
            }
    }

    /// The exit status GNU parallel gives a run with this rule, at `t`
    /// (`last_failure`: the exit status of the last failed job, 255 for
    /// one killed or not started), or `None` for the usual one (the
    /// number of failed jobs).
    pub(super) fn exit_status(
        &self,
        t: Tally,
        tripped: bool,
        last_failure: Option<u8>,
    ) -> Option<u8> {
        match (self.why, self.limit) {
            (Why::Fail, Limit::Count(1)) => Some(last_failure.unwrap_or(0)),
            // Rounded up, as GNU parallel does (2 of 6 is 34).
            (Why::Fail, Limit::Percent(_)) => Some(t.percent(t.failed).ceil().min(100.0) as u8),
            (Why::Success, _) if tripped => Some(0),
            _ => None,
        }
    }
}

fn halt(s: &str) -> anyhow::Result<Option<Halt>> {
    let bad = || {
        usage(format!(
            "--halt {s}: expected never, or soon|now with fail=, success= or done= \
             N or P% (soon,fail=1), or 0, 1, 2, -1, -2, P%"
        ))
    };
    // GNU parallel's older forms.
    let (when, rule) = match s {
        "never" | "0" => return Ok(None),
        "1" => ("soon", "fail=1".to_owned()),
        "2" => ("now", "fail=1".to_owned()),
        "-1" => ("soon", "success=1".to_owned()),
        "-2" => ("now", "success=1".to_owned()),
        p if p.ends_with('%') && !p.contains(',') => ("soon", format!("fail={p}")),
        _ => {
            let (w, r) = s.split_once(',').ok_or_else(bad)?;
            (w, r.to_owned())
        }
    };
    let now = match when {
        "soon" => false,
        "now" => true,
        _ => return Err(bad()),
    };
    let (why, v) = rule.split_once('=').ok_or_else(bad)?;
    let why = match why {
        "fail" => Why::Fail,
        "success" => Why::Success,
        "done" => Why::Done,
        _ => return Err(bad()),
    };
    let limit = if let Some(p) = v.strip_suffix('%') {
        let p: f64 = p.parse().map_err(|_| bad())?;
        if !(p > 0.0 && p <= 100.0) {
            return Err(bad());
        }
        Limit::Percent(p)
    } else {
        let n: u64 = v.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        Limit::Count(n)
    };
    Ok(Some(Halt { now, why, limit }))
}

/// Free memory and load: the system's, or a file's (tests).
#[derive(Debug)]
struct Readings {
    file: Option<std::path::PathBuf>,
}

impl Readings {
    /// (free bytes, 1-minute load).
    fn read(&self) -> (u64, f64) {
        if let Some(f) = &self.file {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let mut it = text.split_whitespace();
            let mem = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let load = it.next().and_then(|v| v.parse().ok()).unwrap_or(f64::MAX);
            return (mem, load);
        }
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("MemAvailable:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .map_or(u64::MAX, |kb| kb * 1024);
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        (mem, load)
    }
}

/// The retries after the first try of GNU parallel's `--retries TRIES`
/// (tries in all; 0 for no limit).
pub(super) fn retries_after_first(tries: u32) -> u32 {
    if tries == 0 {
        u32::MAX
    } else {
        tries - 1
    }
}
