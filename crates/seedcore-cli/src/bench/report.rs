//! Printing results: a human table, or JSON lines.
//!
//! JSON: one object per line, exactly
//! `{"suite": "threads", "metric": "tiny_task_ns", "subject": "seedcore", "value": 412.0, "unit": "ns"}`.
//! A subject that was not measured gets `"value": null` and a `"skipped"` key
//! with the reason:
//! `{"suite": "process", "metric": "tiny_task_ns", "subject": "pebble", "value": null, "unit": "ns", "skipped": "..."}`.
//! Table: one row per measurement with the ratio of its value to seedcore's value
//! for the same metric (above 1 means the subject took longer than seedcore or,
//! for a size in bytes, held more: worse; for a rate such as GB/s, it moved
//! more: better), then the skip reasons and the suites' notes.

use super::Entry;
use serde::Serialize;
use std::io::{self, Write};

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

/// Nearest-rank percentile of sorted values (the rule of `shared/peers`).
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = (p / 100.0 * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Prints every entry to stdout, as JSON lines or as a table followed by
/// `notes` (the notes are not part of the JSON output).
pub(crate) fn print(results: &[Entry], notes: &[String], json: bool) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        for e in results {
            writeln!(out, "{}", json_line(e)?)?;
        }
    } else {
        write!(out, "{}", table(results, notes))?;
    }
    out.flush()?;
    Ok(())
}

/// One line of `--json`: the documented keys, in this order.
#[derive(Debug, Serialize)]
struct JsonLine<'a> {
    suite: &'a str,
    metric: &'a str,
    subject: &'a str,
    /// Rounded to one decimal place; `null` for a subject not measured.
    value: Option<f64>,
    unit: &'a str,
    /// Why the subject was not measured; absent for a measured one.
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<&'a str>,
}

impl<'a> JsonLine<'a> {
    fn of(e: &'a Entry) -> JsonLine<'a> {
        match e {
            Entry::Measured(m) => JsonLine {
                suite: m.suite,
                metric: m.metric,
                subject: m.subject,
                value: Some(round(m.value)),
                unit: m.unit,
                skipped: None,
            },
            Entry::Skipped(s) => JsonLine {
                suite: s.suite,
                metric: s.metric,
                subject: s.subject,
                value: None,
                unit: s.unit,
                skipped: Some(&s.reason),
            },
        }
    }
}

/// serde_json's compact form with a space after each `:` and `,`: the
/// shape `--json` has always printed (Python's `json.dumps` default), so
/// that readers matching on text keep working.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
}

/// One entry as its JSON line (without the newline).
fn json_line(e: &Entry) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    JsonLine::of(e).serialize(&mut serde_json::Serializer::with_formatter(
        &mut buf, Spaced,
    ))?;
    Ok(String::from_utf8(buf)?)
}

/// Rounds to one decimal place (always printed as a float, e.g. `412.0`).
fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// The seedcore value of a metric in this run, if it was measured.
fn seedcore_value(results: &[Entry], suite: &str, metric: &str) -> Option<f64> {
    results.iter().find_map(|e| match e {
        Entry::Measured(m) if m.suite == suite && m.metric == metric && m.subject == "seedcore" => {
            Some(m.value)
        }
        _ => None,
    })
}

/// Renders the human table, the skip reasons and `notes`.
fn table(results: &[Entry], notes: &[String]) -> String {
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
        .map(|e| {
            let m = match e {
                Entry::Measured(m) => m,
                Entry::Skipped(s) => {
                    return vec![
                        s.suite.to_string(),
                        s.metric.to_string(),
                        s.subject.to_string(),
                        "skipped".to_string(),
                        s.unit.to_string(),
                        "-".to_string(),
                        "-".to_string(),
                    ]
                }
            };
            let ratio = match seedcore_value(results, m.suite, m.metric) {
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
    if results
        .iter()
        .any(|e| matches!(e, Entry::Measured(m) if m.subject != "seedcore"))
    {
        s.push_str(
            "\nvs seedcore = subject's median / seedcore's median for the same metric \
             (above 1: slower than seedcore, or more bytes; for a rate such as GB/s, faster).\n",
        );
    }
    let mut reasons: Vec<String> = Vec::new();
    for e in results {
        if let Entry::Skipped(k) = e {
            let line = format!("{}/{} skipped: {}", k.suite, k.subject, k.reason);
            if !reasons.contains(&line) {
                reasons.push(line);
            }
        }
    }
    if !reasons.is_empty() || !notes.is_empty() {
        s.push('\n');
    }
    for line in reasons.iter().chain(notes) {
        s.push_str("- ");
        s.push_str(line);
        s.push('\n');
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
    use crate::bench::{Measurement, Skipped};

    fn measurement(subject: &'static str, value: f64) -> Measurement {
        Measurement {
            suite: "threads",
            metric: "tiny_task_ns",
            subject,
            value,
            unit: "ns",
            samples: vec![value],
        }
    }

    fn m(subject: &'static str, value: f64) -> Entry {
        Entry::Measured(measurement(subject, value))
    }

    fn skipped(subject: &'static str, reason: &str) -> Entry {
        Entry::Skipped(Skipped {
            suite: "process",
            metric: "tiny_task_ns",
            subject,
            unit: "ns",
            reason: reason.to_string(),
        })
    }

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
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
        let t = table(&[m("seedcore", 100.0), m("rayon_spawn", 250.0)], &[]);
        assert!(t.contains("2.50x"), "{t}");
        assert!(t.contains("1.00x"), "{t}");
    }

    #[test]
    fn skip_line_has_reason_and_null_value() {
        let line = json_line(&skipped("pebble", "not \"installed\"")).unwrap();
        assert_eq!(
            line,
            r#"{"suite": "process", "metric": "tiny_task_ns", "subject": "pebble", "value": null, "unit": "ns", "skipped": "not \"installed\""}"#
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(v["value"].is_null());
    }

    #[test]
    fn table_lists_skips_once_and_notes() {
        let t = table(
            &[
                skipped("pebble", "not installed"),
                skipped("pebble", "not installed"),
            ],
            &["a note".to_string()],
        );
        assert_eq!(
            t.matches("process/pebble skipped: not installed").count(),
            1,
            "{t}"
        );
        assert!(t.contains("- a note"), "{t}");
        assert!(t.contains("skipped"), "{t}");
    }
}
