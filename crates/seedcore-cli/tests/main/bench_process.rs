//! Runs `seedcore bench process --quick --json` and `seedcore bench python
//! --quick --json` and checks the shape of their output: every required
//! (metric, subject) pair is there, with a positive value, or (for a Python
//! subject) as a skip line with a reason. Timings are never compared.

use crate::common;

/// Subjects that are part of this binary and must always be measured.
const OWN: [(&str, &[&str]); 3] = [
    (
        "seedcore",
        &[
            "tiny_task_ns",
            "round_trip_p50_us",
            "round_trip_p99_us",
            "payload_64mib_gbps",
        ],
    ),
    ("pipe_floor", &["round_trip_p50_us"]),
    ("memcpy", &["payload_64mib_gbps"]),
];

/// Python peers: measured, or skipped with a reason (Python or pebble missing).
const PEERS: [&str; 4] = [
    "python_ppe",
    "mp_pool_apply_async",
    "mp_pool_map_chunk1",
    "pebble",
];

/// The metrics every Python peer reports.
const PEER_METRICS: [&str; 4] = [
    "tiny_task_ns",
    "round_trip_p50_us",
    "round_trip_p99_us",
    "payload_64mib_gbps",
];

fn unit(metric: &str) -> &'static str {
    match metric {
        "tiny_task_ns" => "ns",
        "payload_64mib_gbps" => "GB/s",
        _ => "us",
    }
}

#[test]
fn bench_process_quick_json_has_every_subject() {
    // Without --install-peers nothing is installed: pebble is used if
    // already there, else skipped with how to install it.
    let (stdout, lines) = common::bench_json("process", &[]);
    for v in &lines {
        if v["subject"] == "pebble" {
            if let Some(reason) = v["skipped"].as_str() {
                assert!(
                    reason.contains("--install-peers") || reason.contains("python3"),
                    "{v}"
                );
            }
        }
    }

    // (metric, subject) -> Some(value) or None (skipped).
    let mut seen: Vec<(String, String, Option<f64>)> = Vec::new();
    for v in &lines {
        let obj = v.as_object().expect("each line is a JSON object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let metric = v["metric"].as_str().expect("metric is a string");
        assert_eq!(v["unit"], unit(metric), "{v}");
        let value = if obj.contains_key("skipped") {
            assert_eq!(
                keys,
                ["metric", "skipped", "subject", "suite", "unit", "value"],
                "{v}"
            );
            assert!(v["value"].is_null(), "{v}");
            let reason = v["skipped"].as_str().expect("the reason is a string");
            assert!(!reason.trim().is_empty(), "skipped without a reason: {v}");
            None
        } else {
            assert_eq!(keys, ["metric", "subject", "suite", "unit", "value"], "{v}");
            let value = v["value"].as_f64().expect("value is a number");
            assert!(value > 0.0 && value.is_finite(), "non-positive value: {v}");
            Some(value)
        };
        let subject = v["subject"].as_str().expect("subject is a string");
        assert!(
            !seen.iter().any(|(m, s, _)| m == metric && s == subject),
            "{metric}/{subject} reported twice:\n{stdout}"
        );
        seen.push((metric.to_string(), subject.to_string(), value));
    }
    let find = |metric: &str, subject: &str| {
        seen.iter()
            .find(|(m, s, _)| m == metric && s == subject)
            .map(|(_, _, v)| *v)
    };
    for (subject, metrics) in OWN {
        for metric in metrics {
            match find(metric, subject) {
                Some(Some(_)) => {}
                Some(None) => panic!("{metric}/{subject} was skipped:\n{stdout}"),
                None => panic!("missing {metric}/{subject} in:\n{stdout}"),
            }
        }
    }
    for subject in PEERS {
        for metric in PEER_METRICS {
            assert!(
                find(metric, subject).is_some(),
                "missing {metric}/{subject} (neither measured nor skipped) in:\n{stdout}"
            );
        }
    }
}

/// The `python` suite: each metric with its unit and subjects (seedcore's
/// package is a Python subject too: skipped where it is not installed).
const PYTHON_SUITE: [(&str, &str, &[&str]); 5] = [
    (
        "tiny_task_ns",
        "ns",
        &[
            "seedcore",
            "python_ppe",
            "mp_pool_apply_async",
            "pebble",
            "loky",
        ],
    ),
    ("map_tiny_ns", "ns", &["seedcore", "mp_pool_map"]),
    ("numpy_64mib_gbps", "GB/s", &["seedcore", "python_ppe"]),
    ("bytes_64mib_gbps", "GB/s", &["seedcore", "python_ppe"]),
    ("timeout_resolve_ms", "ms", &["seedcore", "pebble"]),
];

#[test]
fn bench_python_quick_json_has_every_subject() {
    let (stdout, lines) = common::bench_json("python", &[]);
    let mut seen: Vec<(String, String)> = Vec::new();
    for v in &lines {
        assert_eq!(v["suite"], "python", "{v}");
        let metric = v["metric"].as_str().expect("metric is a string");
        let subject = v["subject"].as_str().expect("subject is a string");
        let (_, unit, subjects) = PYTHON_SUITE
            .iter()
            .find(|(m, _, _)| *m == metric)
            .unwrap_or_else(|| panic!("unexpected metric {metric}:\n{stdout}"));
        assert_eq!(v["unit"], *unit, "{v}");
        assert!(subjects.contains(&subject), "unexpected {metric}/{subject}");
        match v["skipped"].as_str() {
            Some(reason) => {
                assert!(!reason.trim().is_empty(), "skipped without a reason: {v}");
                assert!(v["value"].is_null(), "{v}");
            }
            None => {
                let value = v["value"].as_f64().expect("value is a number");
                assert!(value > 0.0 && value.is_finite(), "non-positive value: {v}");
            }
        }
        assert!(
            !seen.iter().any(|(m, s)| m == metric && s == subject),
            "{metric}/{subject} reported twice:\n{stdout}"
        );
        seen.push((metric.to_string(), subject.to_string()));
    }
    for (metric, _, subjects) in PYTHON_SUITE {
        for subject in subjects {
            assert!(
                seen.iter().any(|(m, s)| m == metric && s == subject),
                "missing {metric}/{subject} (neither measured nor skipped) in:\n{stdout}"
            );
        }
    }
}
