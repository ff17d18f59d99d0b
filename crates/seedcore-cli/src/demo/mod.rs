//! `seedcore demo`: a mixed workload on one local `ConcurrentSystem` that shows
//! each feature doing its job, then checks it.
//!
//! Every scenario in [`scenarios`] submits real tasks, waits for them and
//! returns an [`Outcome`]: what a user should expect, what happened, and whether
//! the two agree. The run ends with a summary table and the system's stats on
//! stdout (the progress bar is on stderr and hides itself when stderr is not a
//! terminal). Exit code 0 when every scenario is OK, 1 when any mismatched.
//!
//! The checks are about behaviour, never about speed, so that the demo passes on
//! a loaded machine; times are shown for information only.

mod local;
mod scenarios;
mod serve;

use crate::cli::DemoArgs;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use seedcore::{ConcurrentSystem, ShutdownMode, Stats};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Pool threads kept alive by the demo's system.
const CORE_THREADS: usize = 2;
/// Upper bound of the demo's pool (stuck threads are replaced up to it).
const MAX_THREADS: usize = 4;

/// The result of one scenario.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Short scenario name (first column of the summary).
    pub(crate) scenario: &'static str,
    /// What the scenario should show.
    pub(crate) expected: String,
    /// What it showed.
    pub(crate) actual: String,
    /// Whether `actual` agrees with `expected`.
    pub(crate) ok: bool,
}

/// What every scenario gets: the system, the progress bar and the sizes.
#[derive(Debug)]
pub(crate) struct Demo<'a> {
    /// The system under demonstration.
    pub(crate) sys: &'a ConcurrentSystem,
    /// Progress over every task of the demo; scenarios add their tasks to its
    /// length and tick it as tasks finish.
    pub(crate) bar: ProgressBar,
    /// Low-priority backlog size of the priority scenario.
    pub(crate) backlog: usize,
    /// `--quick`: fewer tasks in every scenario.
    pub(crate) quick: bool,
}

/// Runs the demo and prints its summary.
pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let backlog = args
        .tasks
        .map(|n| n as usize)
        .unwrap_or(if args.quick { 200 } else { 2_000 });
    let started = Instant::now();
    scenarios::quiet_expected_panics();
    let sys = ConcurrentSystem::builder()
        .core_threads(CORE_THREADS)
        .max_threads(MAX_THREADS)
        .core_processes(1)
        .max_processes(2)
        .balance_interval(Duration::from_millis(10))
        .build()
        .context("building the demo system")?;
    // `--serve`: the metrics endpoint, and a bursty load after the scenarios.
    let server = match &args.serve {
        Some(addr) => {
            let server = sys
                .serve_metrics(addr.as_str())
                .with_context(|| format!("serving metrics on {addr}"))?;
            eprintln!(
                "seedcore demo: metrics at http://{}/metrics",
                server.local_addr()
            );
            Some(server)
        }
        None => None,
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {msg:<12} [{bar:32}] {pos}/{len} tasks")
            .context("progress bar template")?
            .progress_chars("=> "),
    );
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.enable_steady_tick(Duration::from_millis(100));
    } else {
        // No animation in a log or a pipe: only the summary.
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let demo = Demo {
        sys: &sys,
        bar: bar.clone(),
        backlog,
        quick: args.quick,
    };
    let mut outcomes = Vec::new();
    for (name, scenario) in scenarios::ALL {
        bar.set_message(*name);
        let outcome = scenario(&demo).unwrap_or_else(|e| Outcome {
            scenario: name,
            expected: "the scenario runs".into(),
            actual: format!("error: {e:#}"),
            ok: false,
        });
        outcomes.push(outcome);
    }
    bar.finish_and_clear();
    if let Some(server) = &server {
        serve::keep_running(&sys, server.local_addr())?;
    }
    sys.shutdown(ShutdownMode::Graceful);
    let stats = sys.stats();
    outcomes.push(scenarios::stats_agree(&stats));
    let elapsed = started.elapsed();

    print!("{}", summary(&outcomes, &stats, backlog, elapsed));
    let mismatched = outcomes.iter().filter(|o| !o.ok).count();
    if mismatched == 0 {
        println!("all {} scenarios OK", outcomes.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{mismatched} of {} scenarios MISMATCHED", outcomes.len());
        Ok(ExitCode::FAILURE)
    }
}

/// The summary: one row per scenario, then the system's stats.
fn summary(outcomes: &[Outcome], stats: &Stats, backlog: usize, elapsed: Duration) -> String {
    let mut s = format!(
        "seedcore demo: {CORE_THREADS} core / {MAX_THREADS} max threads, \
         {backlog} low-priority backlog tasks, {:.2} s\n\n",
        elapsed.as_secs_f64()
    );
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                o.scenario.to_string(),
                o.expected.clone(),
                o.actual.clone(),
                if o.ok { "OK" } else { "MISMATCH" }.to_string(),
            ]
        })
        .collect();
    // Wrapped to fit 100 columns.
    s.push_str(&crate::table::render_wrapped(
        &["scenario", "expected", "actual", "result"],
        &rows,
        &[None, Some(36), Some(36), None],
    ));
    s.push('\n');
    // HdrHistogram percentiles: within 0.1% of the recorded values.
    let ms = |d: Duration| human(d);
    let stat_rows: Vec<Vec<String>> = [
        ("submitted", stats.submitted.to_string()),
        ("completed", stats.completed.to_string()),
        ("failed", stats.failed.to_string()),
        ("panicked", stats.panicked.to_string()),
        ("retried", stats.retried.to_string()),
        ("timed out", stats.timed_out.to_string()),
        ("cancelled", stats.cancelled.to_string()),
        ("lock timeouts", stats.lock_timeouts.to_string()),
        ("queue wait p50", ms(stats.queue_wait.percentile(0.5))),
        ("queue wait p99", ms(stats.queue_wait.percentile(0.99))),
        ("run time p50", ms(stats.run_time.percentile(0.5))),
        ("run time p99", ms(stats.run_time.percentile(0.99))),
    ]
    .into_iter()
    .map(|(k, v)| vec![k.to_string(), v])
    .collect();
    s.push_str(&crate::table::render(&["stat", "value"], &stat_rows, &[1]));
    s.push_str("(percentiles from HdrHistograms, within 0.1%)\n\n");
    s
}

/// A duration in the unit that suits its size.
fn human(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0} us")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}
