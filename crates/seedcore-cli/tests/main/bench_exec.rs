//! Runs `seedcore bench exec --quick --json` and checks the shape of its
//! output: every subject of both workloads, measured or skipped with a
//! reason (GNU parallel where it is not installed). No figure is judged.

use crate::common;

#[test]
fn bench_exec_quick_json_has_every_subject_of_both_workloads() {
    let (stdout, lines) = common::bench_json("exec", &[]);
    for metric in ["jobs_per_s_true", "jobs_per_s_echo"] {
        for subject in ["seedcore", "gnu_parallel", "xargs"] {
            let line = lines
                .iter()
                .find(|v| v["metric"] == metric && v["subject"] == subject)
                .unwrap_or_else(|| panic!("no {metric} line for {subject}:\n{stdout}"));
            assert_eq!(line["unit"], "jobs/s", "{line}");
            if line.get("skipped").is_some() {
                assert!(line["value"].is_null(), "{line}");
                assert_ne!(subject, "seedcore", "seedcore is never skipped: {line}");
            } else {
                assert!(line["value"].as_f64().is_some_and(|v| v > 0.0), "{line}");
            }
        }
    }
}
