//! The metrics export: OpenMetrics text (prometheus-client's) that a
//! strict reader accepts, JSON (serde's) that parses and agrees with the
//! stats, percentiles within 1% of a known distribution, and the HTTP
//! endpoint (feature `http`, hyper's, read with ureq).

use crate::common;

use seedcore::{ConcurrentSystem, ExecutorKind, Priority, TaskOptions};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// One sample line: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the OpenMetrics text format strictly enough to catch mistakes:
/// every sample belongs to a family declared by `# TYPE` before it, names
/// and labels are well formed, values are numbers, `# EOF` ends it.
fn parse_prometheus(text: &str) -> (HashMap<String, String>, Vec<Sample>) {
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end");
    for line in text.lines() {
        if line.is_empty() || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, tail) = (parts.next(), parts.next(), parts.next());
            match kw {
                Some("HELP") => assert!(tail.is_some_and(|t| !t.is_empty()), "{line}"),
                Some("TYPE") => {
                    let name = name.unwrap();
                    let kind = tail.unwrap();
                    assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                    assert!(
                        types.insert(name.to_owned(), kind.to_owned()).is_none(),
                        "family declared twice: {name}"
                    );
                }
                _ => panic!("unexpected comment: {line}"),
            }
            continue;
        }
        let (head, value) = line.rsplit_once(' ').expect("a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').expect("closing brace")),
            None => (head, ""),
        };
        assert!(valid_name(name), "bad name: {line}");
        let mut map = BTreeMap::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (k, after) = rest.split_once("=\"").expect("label=\"value\"");
            assert!(valid_name(k), "bad label name: {line}");
            // The value runs to the first unescaped quote.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in after.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let end = end.expect("closing quote");
            map.insert(k.to_owned(), after[..end].to_owned());
            rest = after[end + 1..]
                .strip_prefix(',')
                .unwrap_or(&after[end + 1..]);
        }
        let family = [
            ("_bucket", "histogram"),
            ("_sum", "histogram"),
            ("_count", "histogram"),
            ("_total", "counter"),
        ]
        .iter()
        .find_map(|(s, kind)| {
            name.strip_suffix(s)
                .filter(|f| types.get(*f).is_some_and(|k| k == kind))
        })
        .unwrap_or(name);
        assert!(types.contains_key(family), "sample before its TYPE: {line}");
        samples.push(Sample {
            name: name.to_owned(),
            labels: map,
            value,
        });
    }
    (types, samples)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
        .value
}

/// A system that ran some work at two priorities, one failure and one
/// panic.
fn busy_system(name: &str) -> ConcurrentSystem {
    let system = common::builder(name).build().unwrap();
    let mut fs = Vec::new();
    for i in 0..30u64 {
        let p = if i % 3 == 0 {
            Priority::HIGH
        } else {
            Priority::LOW
        };
        fs.push(
            system
                .submit_thread(TaskOptions::new().priority(p), move |_| {
                    std::thread::sleep(Duration::from_millis(1));
                    i
                })
                .unwrap(),
        );
    }
    for f in fs {
        f.wait().unwrap();
    }
    let failed = system
        .submit_thread_fallible(TaskOptions::new(), |_| Err::<(), _>("no"))
        .unwrap();
    assert!(failed.wait().is_err());
    let panicked = system
        .submit_thread(TaskOptions::new(), |_| -> () {
            panic!("{}: metrics", common::PANIC_MARKER)
        })
        .unwrap();
    assert!(panicked.wait().is_err());
    system
}

#[test]
fn prometheus_text_parses_and_agrees_with_the_stats() {
    let system = busy_system("met-prom");
    let text = system.metrics_prometheus();
    let (types, samples) = parse_prometheus(&text);
    let st = system.stats();

    assert_eq!(types["seedcore_tasks_submitted"], "counter");
    assert_eq!(types["seedcore_queue_wait_seconds"], "histogram");
    let sys = [("system", "met-prom")];
    assert_eq!(
        value(&samples, "seedcore_tasks_submitted_total", &sys),
        st.submitted as f64
    );
    assert_eq!(
        value(
            &samples,
            "seedcore_tasks_resolved_total",
            &[("outcome", "completed")]
        ),
        30.0
    );
    assert_eq!(
        value(
            &samples,
            "seedcore_tasks_resolved_total",
            &[("outcome", "failed")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "seedcore_tasks_resolved_total",
            &[("outcome", "panicked")]
        ),
        1.0
    );
    // Every executor is a set of series under the same names, told apart
    // by the `executor` label.
    assert_eq!(st.executors.len(), 4, "{:?}", st.executors);
    for row in &st.executors {
        let ex = ("executor", row.kind.name());
        // Sizes are settled once the work is done; a worker may still be
        // finishing its last task between the two snapshots, so busy and
        // running are only looked up.
        for (state, n) in [
            ("alive", row.workers),
            ("stuck", row.stuck),
            ("target", row.target),
        ] {
            assert_eq!(
                value(
                    &samples,
                    "seedcore_executor_workers",
                    &[ex, ("state", state)]
                ),
                n as f64,
                "{ex:?} {state}"
            );
        }
        value(
            &samples,
            "seedcore_executor_workers",
            &[ex, ("state", "busy")],
        );
        for (bound, n) in [("core", row.core), ("max", row.max)] {
            assert_eq!(
                value(&samples, "seedcore_executor_bound", &[ex, ("bound", bound)]),
                n as f64,
                "{ex:?} {bound}"
            );
        }
        assert_eq!(
            value(&samples, "seedcore_executor_queued", &[ex]),
            row.queued as f64
        );
        value(&samples, "seedcore_executor_running", &[ex]);
        for level in 0..=10 {
            let l = level.to_string();
            value(&samples, "seedcore_queue_depth", &[ex, ("priority", &l)]);
        }
    }
    let threads = [("executor", "threads")];
    assert_eq!(
        value(
            &samples,
            "seedcore_executor_workers",
            &[threads[0], ("state", "alive")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &samples,
            "seedcore_executor_bound",
            &[threads[0], ("bound", "max")]
        ),
        4.0
    );
    // Each pool thread's CPU, under its executor.
    let thread_cpu = samples
        .iter()
        .filter(|s| {
            s.name == "seedcore_worker_cpu_percent"
                && s.labels.get("executor").map(String::as_str) == Some("threads")
        })
        .count();
    assert_eq!(thread_cpu, 2);
    assert!(
        value(
            &samples,
            "seedcore_machine_memory_bytes",
            &[("kind", "total")]
        ) > 0.0
    );
    assert!(value(&samples, "seedcore_process_rss_bytes", &[]) > 0.0);

    // Every histogram: cumulative buckets that never fall, `+Inf` equal to
    // `_count`, and the count equal to the stats'.
    let mut series: BTreeMap<String, Vec<&Sample>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name.ends_with("_bucket")) {
        let mut key = s.name.clone();
        for (k, v) in &s.labels {
            if k != "le" {
                key.push_str(&format!(",{k}={v}"));
            }
        }
        series.entry(key).or_default().push(s);
    }
    assert!(!series.is_empty());
    for (key, buckets) in &series {
        let mut last = (0.0f64, 0.0f64);
        for b in buckets {
            let le: f64 = match b.labels["le"].as_str() {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap(),
            };
            assert!(
                le > last.0 && b.value >= last.1,
                "{key}: buckets out of order"
            );
            last = (le, b.value);
        }
        assert!(last.0.is_infinite(), "{key}: no +Inf bucket: {buckets:?}");
        let base = buckets[0].name.trim_end_matches("_bucket");
        let labels: Vec<(&str, &str)> = buckets[0]
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(value(&samples, &format!("{base}_count"), &labels), last.1);
    }
    let queue_wait_count = samples
        .iter()
        .find(|s| s.name == "seedcore_queue_wait_seconds_count")
        .unwrap()
        .value;
    assert_eq!(queue_wait_count, st.queue_wait.count() as f64);
    assert_eq!(st.queue_wait_by_priority.len(), 11);
    assert_eq!(st.run_time_by_priority.len(), 11);
}

#[test]
fn label_values_are_escaped() {
    let system = common::builder("met\"odd\\name").build().unwrap();
    let (_, samples) = parse_prometheus(&system.metrics_prometheus());
    assert_eq!(samples[0].labels["system"], "met\\\"odd\\\\name");
}

#[test]
fn json_parses_and_agrees_with_the_stats() {
    let system = busy_system("met-json");
    let doc: serde_json::Value = serde_json::from_str(&system.metrics_json()).unwrap();
    let st = system.stats();
    assert_eq!(doc["name"], "met-json");
    assert_eq!(doc["closed"], false);
    assert!(doc["uptime_s"].as_f64().unwrap() > 0.0);
    assert_eq!(doc["config"]["core_threads"], 2);
    assert_eq!(doc["config"]["max_threads"], 4);
    assert_eq!(doc["config"]["expand_policy"], "auto");
    assert_eq!(doc["config"]["shrink_policy"], "auto");
    let s = &doc["stats"];
    assert_eq!(s["submitted"], st.submitted);
    assert_eq!(s["completed"], 30);
    assert_eq!(s["failed"], 1);
    assert_eq!(s["panicked"], 1);
    assert_eq!(s["pending"], 0);
    assert_eq!(s["queued"], st.queued());
    let rows = s["executors"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["executor"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["threads", "processes", "async", "services"]);
    for (row, want) in rows.iter().zip(&st.executors) {
        assert_eq!(row["queue_depth"].as_array().unwrap().len(), 11);
        assert_eq!(row["queued"], want.queued);
        assert_eq!(row["workers"], want.workers);
        assert_eq!(row["target"], want.target);
        assert_eq!(
            (row["core"].clone(), row["max"].clone()),
            (want.core.into(), want.max.into())
        );
        assert_eq!(row["core"].as_u64() < row["max"].as_u64(), want.resizable());
        assert_eq!(row["pids"].as_array().unwrap().len(), want.pids.len());
    }
    let threads = st.executor(ExecutorKind::Threads).unwrap();
    assert_eq!(rows[0]["workers"], threads.workers);
    assert_eq!(
        (rows[0]["workers"].as_u64(), rows[0]["max"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(s["queue_wait"]["count"], st.queue_wait.count());
    assert_eq!(s["run_time"]["count"], st.run_time.count());
    let buckets = s["run_time"]["buckets_ns"].as_array().unwrap();
    let total: u64 = buckets.iter().map(|b| b[1].as_u64().unwrap()).sum();
    assert_eq!(total, st.run_time.count());
    // Every task slept 1 ms or ran at once: the median is a real duration,
    // in microseconds, not a bucket bound.
    let p50 = s["run_time"]["p50_us"].as_f64().unwrap();
    let want = st.run_time.percentile(0.5).as_nanos() as f64 / 1e3;
    assert!((p50 - want).abs() < 1e-6, "{p50} {want}");
    assert_eq!(s["queue_wait_by_priority"].as_array().unwrap().len(), 11);
    assert!(s["balance_events"].is_array());
    let m = &doc["monitor"];
    assert!(m["logical_cores"].as_u64().unwrap() >= 1);
    assert!(m["memory_total"].as_u64().unwrap() > 0);
    assert_eq!(m["pid"], std::process::id());
    let threads: Vec<&serde_json::Value> = m["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["executor"] == "threads")
        .collect();
    assert_eq!(threads.len(), 2, "{threads:?}");
    assert!(threads[0]["name"]
        .as_str()
        .unwrap()
        .starts_with("met-json-"));
}

/// Nearest-rank percentile of sorted values.
fn exact(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

#[test]
fn percentiles_of_a_known_distribution_are_within_one_percent() {
    // A long-tailed mix from 1 µs to 10 s: a uniform body and an
    // exponential tail, shuffled by a fixed seed.
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut values: Vec<Duration> = (0..200_000)
        .map(|i| {
            if i % 10 == 0 {
                Duration::from_secs_f64(1e-6 * (1e7f64).powf(rng.gen::<f64>()))
            } else {
                Duration::from_nanos(rng.gen_range(50_000..5_000_000))
            }
        })
        .collect();
    let mut h = seedcore::observe::Histogram::default();
    for v in &values {
        h.record(*v);
    }
    values.sort();
    assert_eq!(h.count(), values.len() as u64);
    for q in [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0] {
        let (got, want) = (
            h.percentile(q).as_secs_f64(),
            exact(&values, q).as_secs_f64(),
        );
        assert!(
            (got - want).abs() <= want * 0.01,
            "p{}: {got} s, exactly {want} s",
            q * 100.0
        );
    }
    let sum: f64 = values.iter().map(Duration::as_secs_f64).sum();
    assert!((h.sum().as_secs_f64() - sum).abs() <= sum * 0.01);
    // Merging two halves gives the same percentiles.
    let (mut a, mut b) = (
        seedcore::observe::Histogram::default(),
        seedcore::observe::Histogram::default(),
    );
    for (i, v) in values.iter().enumerate() {
        if i % 2 == 0 {
            a.record(*v)
        } else {
            b.record(*v)
        }
    }
    a.merge(&b);
    assert_eq!(a.percentile(0.99), h.percentile(0.99));
}

#[test]
fn an_attempts_run_time_is_recorded_as_measured() {
    // The attempt's run time lands in the system's histogram as itself
    // (within the two clocks' agreement), not as a bucket bound.
    let system = common::builder("met-hdr").build().unwrap();
    let ran = system
        .submit_thread(TaskOptions::new(), |_| {
            let t = std::time::Instant::now();
            std::thread::sleep(Duration::from_millis(20));
            t.elapsed()
        })
        .unwrap()
        .wait()
        .unwrap();
    let st = system.stats();
    assert_eq!(st.run_time.count(), 1);
    let max = st.run_time.max();
    assert_eq!(st.run_time.percentile(1.0), max);
    assert_eq!(st.run_time.percentile(0.5), max);
    // The recorded span encloses the task's own measurement.
    assert!(
        max.as_secs_f64() >= ran.as_secs_f64() * 0.99,
        "{max:?} {ran:?}"
    );
    let mean = st.run_time.mean().as_secs_f64();
    assert!(
        (mean - max.as_secs_f64()).abs() <= max.as_secs_f64() * 0.001,
        "{mean} {max:?}"
    );
}

#[cfg(feature = "http")]
#[test]
fn the_http_endpoint_serves_both_formats() {
    /// `(status, content type, body)` of a GET.
    fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut r = agent.get(&format!("http://{addr}{path}")).call().unwrap();
        let kind = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = r.body_mut().read_to_string().unwrap();
        (r.status().as_u16(), kind, body)
    }

    let system = busy_system("met-http");
    let server = system.serve_metrics("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let (status, kind, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(kind, seedcore::observe::PROMETHEUS_CONTENT_TYPE);
    let (_, samples) = parse_prometheus(&body);
    assert_eq!(
        value(
            &samples,
            "seedcore_tasks_resolved_total",
            &[("outcome", "completed")]
        ),
        30.0
    );
    let (status, kind, body) = get(addr, "/stats.json");
    assert_eq!((status, kind.as_str()), (200, "application/json"));
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["stats"]["completed"], 30);
    assert_eq!(doc["name"], "met-http");
    let (status, _, _) = get(addr, "/nope");
    assert_eq!(status, 404);
    server.stop();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the port is closed once the server stops"
    );
}
