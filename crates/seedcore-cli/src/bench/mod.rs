//! `seedcore bench <suite>`: side-by-side benchmarks against peers, both sides of
//! every ratio measured in the same process run, on the same pool size.
//!
//! Each suite returns [`Measurement`]s; [`report`] prints them as a table or, with
//! `--json`, as one JSON object per line. Progress notes go to stderr so stdout
//! holds only the results. Benchmarks are never timed tests: the test suite runs
//! them with `--quick` and checks only the shape of the output.

mod peers;
mod report;
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
    /// Unit of `value` (`ns`, `us`).
    pub(crate) unit: &'static str,
    /// Every measured repetition (shown in the table's min..max column only).
    pub(crate) samples: Vec<f64>,
}

/// How big a run is: the full measurement or a quick smoke run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    /// `--quick`: smaller workloads, fewer repetitions.
    pub(crate) quick: bool,
    /// Pool size of every subject: the number of cores.
    pub(crate) workers: usize,
}

/// Runs `seedcore bench` and prints its report.
pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let scale = Scale {
        quick: args.quick,
        workers: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    let suites: Vec<Suite> = match args.suite {
        Suite::All => Suite::CONCRETE.to_vec(),
        one => vec![one],
    };
    let mut results = Vec::new();
    for suite in suites {
        match suite {
            Suite::Threads => results.extend(threads::run(scale)?),
            other if args.suite == Suite::All => {
                eprintln!("suite {}: not built yet", other.name());
            }
            other => bail!(
                "suite {}: not built yet (built suites: threads, all)",
                other.name()
            ),
        }
    }
    report::print(&results, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints a progress note on stderr (never on stdout, which carries results).
pub(crate) fn note(msg: &str) {
    eprintln!("# {msg}");
}
