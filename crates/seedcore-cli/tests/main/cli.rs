//! Integration tests that run the real `seedcore` binary.
//!
//! None of them asserts on timing: the benchmark is run in its quick form and
//! only the shape of its output is checked.

use std::process::{Command, Output};
use std::sync::Mutex;

use crate::common;

use common::BIN;

/// The tests start CPU-heavy runs of the binary; one at a time keeps the demo
/// from competing with the benchmark for the machine's cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs the binary with `args` and returns its output.
fn seedcore(args: &[&str]) -> Output {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the seedcore binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn demo_quick_passes_every_scenario() {
    let out = seedcore(&["demo", "--quick"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "demo failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for scenario in [
        "priorities",
        "timeout",
        "retry",
        "retry-exhausted",
        "panic",
        "cancel",
        "lock",
        "limit",
        "callbacks",
        "async",
        "process-timeout",
        "crash-healed",
        "shared-memory",
        "parallel-map",
        "balancer",
        "monitor",
        "stats",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(scenario))
            .unwrap_or_else(|| panic!("no summary row for {scenario}:\n{stdout}"));
        assert!(
            row.trim_end().ends_with("OK"),
            "scenario {scenario} not OK: {row}\n{stdout}"
        );
    }
    assert!(!stdout.contains("MISMATCH"), "{stdout}");
    let widest = stdout.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(widest <= 100, "a line of {widest} columns:\n{stdout}");
    // Not on a terminal: no progress bar frames on stderr.
    assert!(
        !stderr.contains("tasks\r") && !stderr.contains('\r'),
        "{stderr:?}"
    );
    for stat in ["submitted", "completed", "queue wait p99", "run time p50"] {
        assert!(stdout.contains(stat), "no {stat} in the stats:\n{stdout}");
    }
    assert!(
        !stderr.contains("panicked at"),
        "a panic leaked to stderr:\n{stderr}"
    );
}

#[test]
fn demo_rejects_zero_tasks() {
    let out = seedcore(&["demo", "--tasks", "0"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--tasks"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bench_threads_quick_json_has_every_subject() {
    let (stdout, lines) = {
        let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        common::bench_json("threads", &[])
    };
    let mut seen = Vec::new();
    for v in &lines {
        let obj = v.as_object().expect("each line is a JSON object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["metric", "subject", "suite", "unit", "value"], "{v}");
        let value = v["value"].as_f64().expect("value is a number");
        assert!(value > 0.0 && value.is_finite(), "non-positive value: {v}");
        seen.push((
            v["metric"].as_str().unwrap().to_string(),
            v["subject"].as_str().unwrap().to_string(),
            v["unit"].as_str().unwrap().to_string(),
        ));
    }
    for (metric, subject, unit) in [
        ("tiny_task_ns", "seedcore", "ns"),
        ("tiny_task_ns", "rayon_spawn", "ns"),
        ("tiny_task_ns", "tokio_spawn", "ns"),
        ("tiny_task_ns", "tokio_spawn_blocking", "ns"),
        ("priority_latency_us", "seedcore", "us"),
        ("queued_task_bytes", "seedcore", "bytes"),
        ("queued_task_bytes", "rayon_spawn", "bytes"),
        ("queued_task_bytes", "tokio_spawn", "bytes"),
        ("queued_task_bytes", "tokio_spawn_blocking", "bytes"),
        ("scope_us", "seedcore", "us"),
        ("scope_us", "rayon_scope", "us"),
        ("join_tree_us", "seedcore", "us"),
        ("join_tree_us", "seedcore_in_task", "us"),
        ("join_tree_us", "rayon_join", "us"),
    ] {
        assert!(
            seen.iter()
                .any(|(m, s, u)| m == metric && s == subject && u == unit),
            "missing {metric}/{subject} ({unit}) in:\n{stdout}"
        );
    }
    // A queued no-op task holds some bytes, and far fewer than 100 KB: a
    // figure outside that range means the count or the gate is broken.
    for v in lines.iter().filter(|v| v["metric"] == "queued_task_bytes") {
        let bytes = v["value"].as_f64().expect("value is a number");
        assert!(bytes > 0.0 && bytes < 100_000.0, "implausible: {v}");
    }
}

#[test]
fn bench_rejects_unknown_suite() {
    let out = seedcore(&["bench", "nonsense"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("invalid value 'nonsense'") && stderr.contains("threads"),
        "unclear message:\n{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bench_gpu_without_a_gpu_reports_every_subject_skipped() {
    let out = seedcore(&["bench", "gpu", "--json", "--quick"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let skipped: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l.get("skipped").is_some())
        .collect();
    if skipped.is_empty() {
        eprintln!("bench gpu measured on a GPU: nothing skipped to check");
        return;
    }
    assert_eq!(skipped.len(), 5, "{lines:?}");
    for l in &lines {
        assert_eq!(l["suite"], "gpu");
        assert!(l["value"].is_null(), "{l}");
        assert!(!l["skipped"].as_str().unwrap().is_empty(), "{l}");
    }
    let metrics: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|l| l["metric"].as_str().unwrap())
        .collect();
    assert_eq!(
        metrics,
        ["gemm_8192_ms", "small_tasks_per_s", "task_overhead_us"]
            .into_iter()
            .collect()
    );
}

#[test]
fn unknown_command_fails_with_usage() {
    let out = seedcore(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Usage"), "{}", text(&out.stderr));
}

#[test]
fn help_says_what_each_command_is_for() {
    let out = seedcore(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for (cmd, purpose) in [
        ("bench", "Measure seedcore against its peers"),
        ("demo", "Run a mixed workload"),
        ("top", "Watch a running system live"),
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(cmd))
            .unwrap_or_else(|| panic!("no `{cmd}` in:\n{help}"));
        assert!(line.contains(purpose), "{line}");
    }
}

#[test]
fn bench_help_lists_only_built_suites() {
    let out = seedcore(&["bench", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(!help.contains("not built yet"), "{help}");
    for suite in ["threads", "process", "parallel", "balance", "all"] {
        assert!(
            help.contains(&format!("- {suite}:")),
            "no {suite} in:\n{help}"
        );
    }
    assert!(help.contains("--install-peers"), "{help}");
}
