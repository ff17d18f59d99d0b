//! The balancer's command-line parts with the real binary: the `balance`
//! benchmark's output shape, and `seedcore top --once` reading a
//! `seedcore demo --serve` run at three terminal sizes, which stops cleanly
//! on Ctrl-C. No timing is asserted.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common;

use common::BIN;

#[test]
fn bench_balance_quick_json_has_every_subject_and_metric() {
    let (stdout, lines) = common::bench_json("balance", &[]);
    for subject in ["auto", "fixed_core", "fixed_max"] {
        for (metric, unit) in [
            ("total_s", "s"),
            ("peak_threads", "threads"),
            ("idle_threads", "threads"),
            ("peak_processes", "processes"),
            ("idle_processes", "processes"),
        ] {
            let line = lines
                .iter()
                .find(|l| l["metric"] == metric && l["subject"] == subject)
                .unwrap_or_else(|| panic!("missing {metric}/{subject} in:\n{stdout}"));
            assert_eq!(line["suite"], "balance");
            assert_eq!(line["unit"], unit);
            assert!(line["value"].as_f64().unwrap() > 0.0, "{line}");
        }
    }
}

#[test]
fn top_once_reads_a_serving_demo_which_stops_on_ctrl_c() {
    let mut demo = Command::new(BIN)
        .args(["demo", "--quick", "--serve", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo starts");
    let stderr = demo.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("metrics at http://").nth(1) {
                let addr = rest.split('/').next().unwrap_or("").to_owned();
                let _ = tx.send(addr);
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the demo says where it serves");
    // Let the scenarios finish and the bursty load start.
    let _ = rx.recv_timeout(Duration::from_secs(60));
    let url = format!("http://{addr}");
    let frame_at = |w: u16, h: u16| {
        let top = Command::new(BIN)
            .args(["top", "--url", &url, "--once", "--interval", "500ms"])
            .args(["--width", &w.to_string(), "--height", &h.to_string()])
            .output()
            .expect("top runs");
        assert!(
            top.status.success(),
            "{}",
            String::from_utf8_lossy(&top.stderr)
        );
        let frame = String::from_utf8_lossy(&top.stdout).into_owned();
        assert_eq!(frame.lines().count(), h as usize, "{frame}");
        assert!(
            frame.lines().all(|l| l.chars().count() <= w as usize),
            "{frame}"
        );
        frame
    };
    // Every size shows every executor's row and the summary's counts.
    for (w, h) in [(80, 24), (120, 40), (200, 60)] {
        let frame = frame_at(w, h);
        let starts_a_row = |name: &str| {
            frame
                .lines()
                .any(|l| l.trim_start_matches('│').starts_with(&format!("{name} ")))
        };
        for executor in ["threads", "processes", "async", "services"] {
            assert!(
                starts_a_row(executor),
                "{w}x{h}: no {executor} row:\n{frame}"
            );
        }
        for part in [
            "seedcore top",
            "executors (4)",
            " submitted",
            " done",
            " queued",
            " running",
        ] {
            assert!(frame.contains(part), "{w}x{h}: no `{part}` in:\n{frame}");
        }
    }
    // A large one shows every panel.
    let frame = frame_at(200, 60);
    for part in [
        "throughput",
        "queue wait p99",
        "run time p99",
        "workers (",
        "queued per priority",
        "balancer:",
    ] {
        assert!(frame.contains(part), "no `{part}` in the frame:\n{frame}");
    }

    let pid = demo.id().to_string();
    let killed = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(killed.success());
    let status = demo.wait().unwrap();
    let log = reader.join().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut demo.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{status:?}\n{log}\n{stdout}");
    assert!(log.contains("stopped after"), "{log}");
    assert!(stdout.contains("scenarios OK"), "{stdout}");

    // Unreachable endpoint: a clear error, not a hang.
    let out = Command::new(BIN)
        .args(["top", "--url", &url, "--once", "--interval", "100ms"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("fetching {url}/stats.json")), "{err}");
}

#[test]
fn top_without_a_terminal_says_to_use_once() {
    // The test's stdout is a pipe, never a terminal.
    let out = Command::new(BIN)
        .args(["top", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a terminal"), "{err}");
    assert!(err.contains("seedcore top --once"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
