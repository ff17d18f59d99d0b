//! `seedcore bench exec`: short jobs through `seedcore exec` (this very
//! binary, started as a child like any user would start it), GNU parallel
//! and `xargs -P`, with the same number of jobs at once and the same
//! inputs on stdin; the metric is finished jobs per second of the whole
//! run, start-up included.
//!
//! Two workloads: `true` (pure start-up cost per job) and `echo` (a job
//! that writes a line, which `seedcore exec` and GNU parallel capture and
//! print; xargs lets it write straight to the shared stdout). Both are
//! shell builtins: GNU parallel runs each job in the job shell; `seedcore
//! exec` starts `/usr/bin/true` and `/usr/bin/echo` directly, as xargs
//! does, since their plain numeric arguments give the same result (see
//! `docs/exec.md`). `seedcore exec` and GNU parallel both keep a job log
//! (synced to disk) and retry a failed job once (`--joblog`, `--retries
//! 2`), as a run that can be resumed would; xargs has neither. Every
//! subject's stdout goes to `/dev/null`. The subjects take turns, one
//! repetition each, five rounds; reported: the median. GNU parallel absent:
//! reported skipped with the reason.

use super::{note, report::median, rotation, Entry, Measurement, Scale, Skipped};
use anyhow::{bail, Context};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

const SUITE: &str = "exec";
const UNIT: &str = "jobs/s";

/// The two workloads: metric name and the command run per input.
const WORKLOADS: [(&str, &str); 2] = [("jobs_per_s_true", "true"), ("jobs_per_s_echo", "echo")];

/// Runs `cmd` with `input` on stdin and returns the elapsed seconds.
fn timed(mut cmd: Command, input: &[u8]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output()?;
    let secs = started.elapsed().as_secs_f64();
    let _ = writer.join();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(secs)
}

fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub(crate) fn run(scale: Scale) -> anyhow::Result<(Vec<Entry>, Vec<String>)> {
    let (n, reps) = if scale.quick { (200, 1) } else { (2000, 5) };
    let j = scale.workers.to_string();
    let input: Vec<u8> = (1..=n)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes();
    let me = std::env::current_exe().context("cannot find this executable")?;
    let parallel = has("parallel")
        .then_some(())
        .ok_or("GNU parallel is not installed (apt-get install parallel)");
    let xargs = has("xargs").then_some(()).ok_or("xargs is not installed");
    // GNU parallel keeps state in $HOME/.parallel: a directory of its own.
    let home = std::env::temp_dir().join(format!("seedcore-bench-exec-{}", std::process::id()));
    std::fs::create_dir_all(&home)?;

    let mut entries = Vec::new();
    for (metric, program) in WORKLOADS {
        note(&format!(
            "{metric}: {n} `{program}` jobs, -j {j}, {reps} rounds, the subjects taking turns"
        ));
        type Build<'a> = Box<dyn Fn() -> Command + 'a>;
        let subjects: [(&'static str, Result<(), &str>, Build<'_>); 3] = [
            (
                "seedcore",
                Ok(()),
                Box::new(|| {
                    let mut c = Command::new(&me);
                    c.args(["exec", "--no-bar", "-j", &j, "--retries", "2", "--joblog"])
                        .arg(home.join("seedcore.log"))
                        .arg(program);
                    c
                }),
            ),
            (
                "gnu_parallel",
                parallel,
                Box::new(|| {
                    let mut c = Command::new("parallel");
                    c.args(["--will-cite", "-j", &j, "--retries", "2", "--joblog"])
                        .arg(home.join("parallel.log"))
                        .arg(program)
                        .env("HOME", &home);
                    c
                }),
            ),
            (
                "xargs",
                xargs,
                Box::new(|| {
                    let mut c = Command::new("xargs");
                    c.args(["-P", &j, "-n", "1", program]);
                    c
                }),
            ),
        ];
        // The subjects take turns, one repetition each, each round starting
        // with the next one, so that a drift in the machine's load hits all
        // of them alike; a peer that fails drops out of the later rounds.
        let mut samples: [Vec<f64>; 3] = Default::default();
        let mut failed: [Option<String>; 3] = Default::default();
        for round in 0..reps {
            for k in rotation(round, subjects.len()) {
                let (subject, available, build) = &subjects[k];
                if available.is_err() || failed[k].is_some() {
                    continue;
                }
                match timed(build(), &input) {
                    Ok(secs) => samples[k].push(n as f64 / secs),
                    Err(e) if *subject == "seedcore" => bail!("seedcore exec failed: {e:#}"),
                    Err(e) => failed[k] = Some(format!("{e:#}")),
                }
            }
        }
        for (k, (subject, available, _)) in subjects.iter().enumerate() {
            let why = match (available, failed[k].take()) {
                (Err(reason), _) => Some(reason.to_string()),
                (Ok(()), failure) => failure,
            };
            entries.push(match why {
                Some(reason) => Entry::Skipped(Skipped {
                    suite: SUITE,
                    metric,
                    subject,
                    unit: UNIT,
                    reason,
                }),
                None => Entry::Measured(Measurement {
                    suite: SUITE,
                    metric,
                    subject,
                    value: median(&samples[k]),
                    unit: UNIT,
                    samples: std::mem::take(&mut samples[k]),
                }),
            });
        }
    }
    let _ = std::fs::remove_dir_all(&home);
    let notes = vec![format!(
        "exec: {n} jobs per run, -j {j}, stdin input, stdout to /dev/null, \
         --joblog and --retries 2 for seedcore and GNU parallel; higher is better"
    )];
    Ok((entries, notes))
}
