//! `seedcore bench <suite>`: side-by-side benchmarks against peers, both sides of
//! every ratio measured in the same process run, on the same pool size.
//!
//! Each suite returns [`Measurement`]s (and, for peers that could not run,
//! [`Skipped`] lines); [`report`] prints them as a table or, with `--json`, as
//! one JSON object per line. Progress notes go to stderr so stdout
//! holds only the results. Benchmarks are never timed tests: the test suite runs
//! them with `--quick` and checks only the shape of the output.

mod balance;
mod exec;
mod gpu;
mod parallel;
mod peers;
mod process;
mod pyharness;
mod python;
mod queued;
mod remote;
mod report;
mod scoped;
mod threads;
mod tiny;

use crate::cli::{BenchArgs, Suite};
use anyhow::bail;
use std::process::ExitCode;

/// One reported figure: the median of a suite's repetitions for one subject.
#[derive(Debug, Clone)]
pub(crate) struct Measurement {
    /// The suite that produced it (`threads`, ...).
    pub(crate) suite: &'static str,
    /// What was measured (`tiny_task_ns`, `priority_latency_us`, ...).
    pub(crate) metric: &'static str,
    /// `seedcore` or the peer's name (`rayon_spawn`, `tokio_spawn`, ...).
    pub(crate) subject: &'static str,
    /// The median over the measured repetitions.
    pub(crate) value: f64,
    /// Unit of `value` (`ns`, `us`, `bytes`).
    pub(crate) unit: &'static str,
    /// Every measured repetition (shown in the table's min..max column only).
    pub(crate) samples: Vec<f64>,
}

/// A subject that was not measured in this run, and why (a peer that is not
/// installed, or that failed). Reported as such, never replaced by a figure.
#[derive(Debug, Clone)]
pub(crate) struct Skipped {
    /// The suite that would have measured it.
    pub(crate) suite: &'static str,
    /// The metric it would have reported.
    pub(crate) metric: &'static str,
    /// The peer's name.
    pub(crate) subject: &'static str,
    /// Unit the metric would have had.
    pub(crate) unit: &'static str,
    /// Why it was not measured.
    pub(crate) reason: String,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    /// A measured figure.
    Measured(Measurement),
    /// A subject that was not measured.
    Skipped(Skipped),
}

impl Measurement {
    /// The figure of `samples` (their median) for `suite`'s `metric`.
    pub(crate) fn of(
        suite: &'static str,
        metric: &'static str,
        subject: &'static str,
        unit: &'static str,
        samples: Vec<f64>,
    ) -> Measurement {
        Measurement {
            suite,
            metric,
            subject,
            value: report::median(&samples),
            unit,
            samples,
        }
    }
}

impl Entry {
    /// The entry's metric and subject.
    pub(crate) fn key(&self) -> (&'static str, &'static str) {
        match self {
            Entry::Measured(m) => (m.metric, m.subject),
            Entry::Skipped(s) => (s.metric, s.subject),
        }
    }

    /// Sorts `entries` for the report: by metric, then subject, each in
    /// the order given.
    pub(crate) fn sort_in(
        entries: &mut [Entry],
        metrics: &[(&'static str, &'static str)],
        subjects: &[&'static str],
    ) {
        entries.sort_by_key(|e| {
            let (metric, subject) = e.key();
            (
                metrics.iter().position(|(m, _)| *m == metric),
                subjects.iter().position(|s| *s == subject),
            )
        });
    }

    /// A subject of `suite`'s `metric` that was not measured, and why.
    pub(crate) fn skipped(
        suite: &'static str,
        metric: &'static str,
        subject: &'static str,
        unit: &'static str,
        reason: String,
    ) -> Entry {
        Entry::Skipped(Skipped {
            suite,
            metric,
            subject,
            unit,
            reason,
        })
    }
}

/// How big a run is: the full measurement or a quick smoke run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    /// `--quick`: smaller workloads, fewer repetitions.
    pub(crate) quick: bool,
    /// Pool size of every subject: the number of cores.
    pub(crate) workers: usize,
    /// `--install-peers`: missing peers may be installed (pip).
    pub(crate) install_peers: bool,
}

/// Runs `seedcore bench` and prints its report.
pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let scale = Scale {
        quick: args.quick,
        workers: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        install_peers: args.install_peers,
    };
    let suites: Vec<Suite> = match args.suite {
        Suite::All => Suite::CONCRETE.to_vec(),
        one => vec![one],
    };
    let mut results = Vec::new();
    let mut notes = Vec::new();
    for suite in suites {
        match suite {
            Suite::Threads => results.extend(threads::run(scale)?.into_iter().map(Entry::Measured)),
            Suite::Process => {
                let (entries, suite_notes) = process::run(scale)?;
                results.extend(entries);
                notes.extend(suite_notes);
            }
            Suite::Parallel => {
                let (entries, suite_notes) = parallel::run(scale)?;
                results.extend(entries);
                notes.extend(suite_notes);
            }
            Suite::Balance => {
                let (entries, suite_notes) = balance::run(scale)?;
                results.extend(entries);
                notes.extend(suite_notes);
            }
            Suite::Gpu => {
                let (entries, suite_notes) = gpu::run(scale)?;
                results.extend(entries);
                notes.extend(suite_notes);
            }
            Suite::Remote => {
                let (entries, suite_notes) = remote::run(scale)?;
                results.extend(entries);
                notes.extend(suite_notes);
            }
            Suite::Python => {
                let (entries, suite_notes) = python::run(scale)?;
                results.extend(entries);
                notes.extend(suite_notes);
            }
            Suite::Exec => {
                let (entries, suite_notes) = exec::run(scale)?;
                results.extend(entries);
                notes.extend(suite_notes);
            }
            other if args.suite == Suite::All => {
                eprintln!("suite {}: not built yet", other.name());
            }
            other => {
                let built: Vec<&str> = Suite::CONCRETE
                    .iter()
                    .chain([&Suite::All])
                    .filter(|s| s.is_built())
                    .map(|s| s.name())
                    .collect();
                bail!(
                    "suite {}: not built yet (built suites: {})",
                    other.name(),
                    built.join(", ")
                )
            }
        }
    }
    report::print(&results, &notes, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// The entry point of helper processes this binary starts for its benchmarks
/// (the `process` suite's pipe-echo child): `Some(exit code)` when this process
/// is one of them and has done its work, `None` otherwise.
pub(crate) fn helper_child() -> Option<ExitCode> {
    process::pipe_echo_child()
}

/// Prints a progress note on stderr (never on stdout, which carries results).
pub(crate) fn note(msg: &str) {
    eprintln!("# {msg}");
}

/// One subject of an [`interleaved`] measurement: its name and one timed
/// repetition, which checks its own result and returns its figure.
pub(crate) type Subject<'a> = (&'static str, Box<dyn FnMut() -> anyhow::Result<f64> + 'a>);

/// Runs one untimed warm-up of each subject, then `reps` rounds in which
/// every subject runs one repetition in turn (each round starting with the
/// next subject: what one run leaves behind, such as a warm cache or a
/// peer's exiting threads, then falls on each in turn); returns each
/// subject's samples, in the subjects' order.
///
/// Subjects compared by a ratio run this way rather than one after the
/// other: on a shared machine the load drifts over a run, and taking turns
/// makes a drift hit every side of a ratio alike.
pub(crate) fn interleaved(
    reps: usize,
    subjects: &mut [Subject<'_>],
) -> anyhow::Result<Vec<Vec<f64>>> {
    for (_, rep) in subjects.iter_mut() {
        rep()?;
    }
    let k = subjects.len();
    let mut samples = vec![Vec::with_capacity(reps); k];
    for round in 0..reps {
        for i in rotation(round, k) {
            samples[i].push((subjects[i].1)()?);
        }
    }
    Ok(samples)
}

/// The order of `k` subjects in round `round` of a measurement that takes
/// turns: `round % k`, then the ones after it, wrapping around.
pub(crate) fn rotation(round: usize, k: usize) -> impl Iterator<Item = usize> {
    (0..k).map(move |i| (round + i) % k)
}

/// [`interleaved`], reported: one [`Measurement`] of `suite`'s `metric`
/// per subject, in the subjects' order.
pub(crate) fn measured_in_turns(
    suite: &'static str,
    metric: &'static str,
    unit: &'static str,
    reps: usize,
    mut subjects: Vec<Subject<'_>>,
) -> anyhow::Result<Vec<Measurement>> {
    let names: Vec<&'static str> = subjects.iter().map(|(s, _)| *s).collect();
    let samples = interleaved(reps, &mut subjects)?;
    Ok(names
        .into_iter()
        .zip(samples)
        .map(|(subject, v)| Measurement::of(suite, metric, subject, unit, v))
        .collect())
}
