//! `seedcore exec --jobs-file` through the real binary: JSON lines and
//! TOML jobs with their own command, env, cwd, retries and timeout;
//! malformed files are usage errors.

use std::process::{Command, Output, Stdio};

use crate::common;

use common::{TestDir, BIN};

/// The binary, its jobs run by `/bin/sh` whatever shell started the tests
/// (tests of the shell's choice set their own).
fn seedcore() -> Command {
    let mut c = Command::new(BIN);
    c.env("PARALLEL_SHELL", "/bin/sh");
    c
}

fn exec(args: &[&str]) -> Output {
    seedcore()
        .arg("exec")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("the seedcore binary runs")
}

/// A fresh directory for one test, removed when the test ends.
fn dir(name: &str) -> TestDir {
    TestDir::new(&format!("jobsfile-{name}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The joblog's records: (Seq, Exitval, Signal, Command) by Seq.
fn records(log: &std::path::Path) -> Vec<(u64, i32, i32, String)> {
    let t = std::fs::read_to_string(log).unwrap();
    let mut lines = t.lines();
    assert!(lines.next().unwrap().starts_with("Seq\tHost\tStarttime"));
    let mut r: Vec<_> = lines
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert_eq!(
                c.len(),
                9,
                "a record has GNU parallel's nine columns: {l:?}"
            );
            (
                c[0].parse().unwrap(),
                c[6].parse().unwrap(),
                c[7].parse().unwrap(),
                c[8].to_string(),
            )
        })
        .collect();
    r.sort_by_key(|x| x.0);
    r
}

#[test]
fn json_lines_jobs_bring_their_command_env_cwd_and_retries() {
    let d = dir("jsonl");
    let jobs = d.join("jobs.jsonl");
    let log = d.join("log");
    let flag = d.join("flag");
    let flag = flag.to_str().unwrap();
    let runs = d.join("runs");
    std::fs::write(
        &jobs,
        format!(
            concat!(
                "{{\"command\": \"echo $GREETING\", \"env\": {{\"GREETING\": \"hello there\"}}, \"priority\": 1}}\n",
                "\n",
                "{{\"command\": [\"pwd\"], \"cwd\": \"/\"}}\n",
                "{{\"command\": [\"printf\", \"%s|\", \"a b\", \"c\"]}}\n",
                // Fails once, then succeeds: two attempts.
                "{{\"command\": \"test -e {flag} || {{ touch {flag}; exit 3; }}\", \"retries\": 2}}\n",
                "{{\"command\": \"exit 4\"}}\n",
                // `retries` as --retries: three tries in all.
                "{{\"command\": \"echo x >> {runs}; exit 5\", \"retries\": 3}}\n",
            ),
            flag = flag,
            runs = runs.display()
        ),
    )
    .unwrap();
    let o = exec(&[
        "-k",
        "-j2",
        "--retry-delay",
        "10ms",
        "--json",
        "--joblog",
        log.to_str().unwrap(),
        "--jobs-file",
        jobs.to_str().unwrap(),
    ]);
    let objs: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let outs: String = objs.iter().map(|v| v["stdout"].as_str().unwrap()).collect();
    assert_eq!(
        outs,
        "hello there\n/\na b|c|",
        "stderr: {}",
        text(&o.stderr)
    );
    // Two jobs failed for good.
    assert_eq!(o.status.code(), Some(2));
    let r = records(&log);
    assert_eq!(
        r.iter().map(|x| x.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    let attempts = |k: usize| objs[k]["attempts"].as_u64().unwrap();
    assert_eq!((r[3].1, attempts(3)), (0, 2), "the retried job: {:?}", r[3]);
    assert_eq!((r[4].1, attempts(4)), (4, 1));
    assert_eq!((r[5].1, attempts(5)), (5, 3));
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "x\nx\nx\n");
    assert_eq!(r[2].3, "printf '%s|' 'a b' c");
}

#[test]
fn toml_jobs_have_their_own_timeout() {
    let d = dir("toml");
    let jobs = d.join("jobs.toml");
    let log = d.join("log");
    std::fs::write(
        &jobs,
        "[[job]]\ncommand = \"echo quick\"\n\n[[job]]\ncommand = [\"sleep\", \"100\"]\ntimeout = \"200ms\"\n",
    )
    .unwrap();
    let o = exec(&[
        "--grace",
        "100ms",
        "--joblog",
        log.to_str().unwrap(),
        "--jobs-file",
        jobs.to_str().unwrap(),
    ]);
    assert_eq!(text(&o.stdout), "quick\n");
    assert_eq!(o.status.code(), Some(1), "stderr: {}", text(&o.stderr));
    let r = records(&log);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].1, 0);
    assert_ne!(
        (r[1].1, r[1].2),
        (0, 0),
        "the timed-out job is logged failed: {:?}",
        r[1]
    );
}

#[test]
fn malformed_jobs_files_are_usage_errors() {
    let d = dir("bad");
    let typo = d.join("typo.jsonl");
    std::fs::write(&typo, "{\"command\": \"true\"}\n{\"comand\": \"true\"}\n").unwrap();
    let o = exec(&["--jobs-file", typo.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(255));
    let e = text(&o.stderr);
    assert!(e.contains("line 2") && e.contains("comand"), "{e}");

    let prio = d.join("prio.toml");
    std::fs::write(&prio, "[[job]]\ncommand = \"true\"\npriority = 11\n").unwrap();
    let o = exec(&["--jobs-file", prio.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(255));
    assert!(text(&o.stderr).contains("priority"));

    let o = exec(&["--jobs-file", d.join("absent.jsonl").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(255));
    assert!(text(&o.stderr).contains("absent.jsonl"));

    let o = exec(&["--jobs-file", prio.to_str().unwrap(), "echo", ":::", "a"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(text(&o.stderr).contains("--jobs-file"));
}
