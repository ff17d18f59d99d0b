//! Printing results: a human table, or JSON lines.
//!
//! JSON: one object per line, exactly
//! `{"suite": "threads", "metric": "tiny_task_ns", "subject": "seedcore", "value": 412.0, "unit": "ns"}`.
//! Table: one row per measurement with the ratio of its value to seedcore's value
//! for the same metric (above 1 means the subject took longer than seedcore).

use super::Measurement;
use std::io::Write;

/// Median of the samples (mean of the middle two for an even count).
pub(crate) fn median(samples: &[f64]) -> f64 {
    assert!(!samples.is_empty(), "median of no samples");
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Prints every measurement to stdout, as JSON lines or as a table.
pub(crate) fn print(results: &[Measurement], json: bool) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        for m in results {
            writeln!(out, "{}", json_line(m)?)?;
        }
    } else {
        write!(out, "{}", table(results))?;
    }
    out.flush()?;
    Ok(())
}

/// One measurement as a JSON object with keys in the documented order and a
/// space after each `:` and `,` as in DESIGN.md.
fn json_line(m: &Measurement) -> anyhow::Result<String> {
    let value = round(m.value);
    let fields = [
        ("suite", serde_json::to_string(m.suite)?),
        ("metric", serde_json::to_string(m.metric)?),
        ("subject", serde_json::to_string(m.subject)?),
        ("value", serde_json::to_string(&value)?),
        ("unit", serde_json::to_string(m.unit)?),
    ];
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("\"{k}\": {v}"))
        .collect();
    Ok(format!("{{{}}}", body.join(", ")))
}

/// Rounds to one decimal place (always printed as a float, e.g. `412.0`).
fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// The seedcore value of a metric in this run, if it was measured.
fn seedcore_value(results: &[Measurement], metric: &str) -> Option<f64> {
    results
        .iter()
        .find(|m| m.metric == metric && m.subject == "seedcore")
        .map(|m| m.value)
}

/// Renders the human table.
fn table(results: &[Measurement]) -> String {
    let header = [
        "suite",
        "metric",
        "subject",
        "median",
        "unit",
        "min..max",
        "vs seedcore",
    ];
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|m| {
            let ratio = match seedcore_value(results, m.metric) {
                Some(base) if base > 0.0 => format!("{:.2}x", m.value / base),
                _ => "-".to_string(),
            };
            let lo = m.samples.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = m.samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let range = if m.samples.is_empty() {
                "-".to_string()
            } else {
                format!("{}..{}", fmt_value(lo), fmt_value(hi))
            };
            vec![
                m.suite.to_string(),
                m.metric.to_string(),
                m.subject.to_string(),
                fmt_value(m.value),
                m.unit.to_string(),
                range,
                ratio,
            ]
        })
        .collect();
    let mut s = crate::table::render(&header, &rows, &[3, 5, 6]);
    if results.iter().any(|m| m.subject != "seedcore") {
        s.push_str(
            "\nvs seedcore = subject's median / seedcore's median for the same metric \
             (above 1: slower than seedcore).\n",
        );
    }
    s
}

/// Formats a value with precision suited to its size.
fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(subject: &'static str, value: f64) -> Measurement {
        Measurement {
            suite: "threads",
            metric: "tiny_task_ns",
            subject,
            value,
            unit: "ns",
            samples: vec![value],
        }
    }

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn json_line_has_documented_shape() {
        let line = json_line(&m("seedcore", 412.04)).unwrap();
        assert_eq!(
            line,
            r#"{"suite": "threads", "metric": "tiny_task_ns", "subject": "seedcore", "value": 412.0, "unit": "ns"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["value"], 412.0);
    }

    #[test]
    fn table_shows_ratio_against_seedcore() {
        let t = table(&[m("seedcore", 100.0), m("rayon_spawn", 250.0)]);
        assert!(t.contains("2.50x"), "{t}");
        assert!(t.contains("1.00x"), "{t}");
    }
}
