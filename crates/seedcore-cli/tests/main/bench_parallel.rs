//! Runs `seedcore bench parallel --quick --json` and checks the shape of
//! its output: every (metric, subject) pair is there, with a positive
//! value, or (for a Python peer) as a skip line with a reason. Timings are
//! never compared.

use crate::common;

/// Pairs measured in this binary: always there, with a value.
const OWN: [(&str, &str, &str); 6] = [
    ("map_hash_ns", "seedcore_threads", "ns"),
    ("map_hash_ns", "rayon_par_iter", "ns"),
    ("map_tiny_ns", "seedcore_processes", "ns"),
    ("cpu_speedup", "seedcore_threads", "x"),
    ("cpu_speedup", "seedcore_processes", "x"),
    ("cpu_speedup", "rayon_par_iter", "x"),
];

/// Python peers: measured, or skipped with a reason.
const PEERS: [&str; 2] = ["mp_pool_map", "mp_pool_imap_unordered"];

#[test]
fn bench_parallel_quick_json_has_every_subject() {
    let (stdout, lines) = common::bench_json("parallel", &[]);
    let mut seen: Vec<(String, String, String, Option<f64>)> = Vec::new();
    for v in &lines {
        let field = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("{k} is a string: {v}"))
                .to_string()
        };
        let value = if v["value"].is_null() {
            let why = v["skipped"].as_str().unwrap_or_default();
            assert!(!why.is_empty(), "a skip says why: {v}");
            None
        } else {
            let x = v["value"].as_f64().expect("value is a number");
            assert!(x > 0.0 && x.is_finite(), "{v}");
            Some(x)
        };
        seen.push((field("metric"), field("subject"), field("unit"), value));
    }
    for (metric, subject, unit) in OWN {
        let hit = seen
            .iter()
            .find(|(m, s, _, _)| m == metric && s == subject)
            .unwrap_or_else(|| panic!("{metric}/{subject} missing:\n{stdout}"));
        assert_eq!(hit.2, unit);
        assert!(hit.3.is_some(), "{metric}/{subject} has no value");
    }
    for subject in PEERS {
        assert!(
            seen.iter()
                .any(|(m, s, u, _)| m == "map_tiny_ns" && s == subject && u == "ns"),
            "map_tiny_ns/{subject} neither measured nor skipped:\n{stdout}"
        );
    }
    assert_eq!(seen.len(), OWN.len() + PEERS.len(), "{stdout}");
}
