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
                } else {
                    j.parse::<usize>()
                        .ok()
                        .map(|n| if n == 0 { 256 } else { n })
                };
                (
                    n.ok_or_else(|| usage(format!("-j {j}: expected a number, N% or auto")))?,
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

/// `--halt`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Halt {
    /// `now`: kill the running jobs; `soon`: let them finish.
    pub(super) now: bool,
    /// Stop after this many failures...
    count: Option<u64>,
    /// ...or once the failures are this percentage of the jobs done.
    percent: Option<f64>,
}

impl Halt {
    /// Whether `failed` failures out of `finished` jobs done trip it.
    pub(super) fn tripped(&self, failed: u64, finished: u64) -> bool {
        self.count.is_some_and(|n| failed >= n)
            || self
                .percent
                .is_some_and(|p| failed as f64 * 100.0 >= p * finished as f64 && failed > 0)
    }
}

fn halt(s: &str) -> anyhow::Result<Option<Halt>> {
    let bad = || {
        usage(format!(
            "--halt {s}: expected never, soon|now,fail=N or soon|now,fail=P%"
        ))
    };
    match s {
        "never" | "0" => return Ok(None),
        "1" => {
            return Ok(Some(Halt {
                now: false,
                count: Some(1),
                percent: None,
            }))
        }
        "2" => {
            return Ok(Some(Halt {
                now: true,
                count: Some(1),
                percent: None,
            }))
        }
        _ => {}
    }
    let (when, rule) = s.split_once(',').ok_or_else(bad)?;
    let now = match when {
        "soon" => false,
        "now" => true,
        _ => return Err(bad()),
    };
    let v = rule.strip_prefix("fail=").ok_or_else(bad)?;
    if let Some(p) = v.strip_suffix('%') {
        let p: f64 = p.parse().map_err(|_| bad())?;
        if !(0.0..=100.0).contains(&p) || p == 0.0 {
            return Err(bad());
        }
        Ok(Some(Halt {
            now,
            count: None,
            percent: Some(p),
        }))
    } else {
        let n: u64 = v.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        Ok(Some(Halt {
            now,
            count: Some(n),
            percent: None,
        }))
    }
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
