//! `seedcore exec` through the real binary: inputs, replacement strings and
//! quoting (against GNU parallel's documented outputs), the job shell,
//! jobs that leave children behind, timeouts that kill grandchildren,
//! retries, halt rules, keep-order, the job log (GNU parallel's) and resume
//! after the runner itself is SIGKILLed or from GNU parallel's log, gating,
//! Ctrl-C, usage errors; and, where GNU parallel is installed, the same
//! command lines through both.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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
    exec_stdin(args, b"")
}

fn exec_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = seedcore()
        .arg("exec")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the seedcore binary runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

/// A fresh directory for one test, removed when the test ends.
fn dir(name: &str) -> TestDir {
    TestDir::new(&format!("exec-{name}"))
}

fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Waits (up to a generous bound) for `cond`; returns whether it held.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(30);
    while !cond() {
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn read_pid(p: &Path) -> Option<u32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn wait_exit(child: &mut Child) -> Option<std::process::ExitStatus> {
    let mut st = None;
    eventually(|| {
        st = child.try_wait().unwrap();
        st.is_some()
    });
    st
}

#[test]
fn replacement_strings_match_gnu_parallels_documented_outputs() {
    // From GNU parallel's man page (20221122): {.} {/} {//} {/.} {#} {%}.
    let o = exec(&[
        "-j1",
        "-k",
        "echo",
        "{.}",
        "{/}",
        "{//}",
        "{/.}",
        "{#}",
        "{%}",
        ":::",
        "dir.d/sub/file.tar.gz",
        "nodir",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "dir.d/sub/file.tar file.tar.gz dir.d/sub file.tar 1 1\nnodir nodir . nodir 2 1\n"
    );
    // Positional: parallel echo {2}-{1} ::: a b ::: 1 2 (cartesian).
    let o = exec(&["-k", "echo", "{2}-{1}", ":::", "a", "b", ":::", "1", "2"]);
    assert_eq!(stdout(&o), "1-a\n2-a\n1-b\n2-b\n");
}

#[test]
fn inputs_are_quoted_for_the_shell_as_gnu_parallel_quotes_them() {
    let tricky = ["a b", "it's", "$HOME", "x;y", "`id`", "*"];
    let mut args = vec!["--dry-run", "-k", "echo {} | cat", ":::"];
    args.extend(tricky);
    let o = exec(&args);
    assert_eq!(
        stdout(&o),
        "echo 'a b' | cat\necho 'it'\"'\"'s' | cat\necho '$HOME' | cat\necho 'x;y' | cat\necho '`id`' | cat\necho '*' | cat\n"
    );
    // Run through sh (a pipe) and directly (a plain template): the input
    // arrives as it is either way.
    for template in ["echo {} | cat", "echo {}"] {
        let mut args = vec!["-k", template, ":::"];
        args.extend(tricky);
        let o = exec(&args);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(stdout(&o), "a b\nit's\n$HOME\nx;y\n`id`\n*\n", "{template}");
    }
    // No command: the input is the command, run by the shell.
    let o = exec(&[":::", "echo raw | tr a-z A-Z"]);
    assert_eq!(stdout(&o), "RAW\n");
}

#[test]
fn groups_make_a_cartesian_product_and_linked_groups_pair_up() {
    let o = exec(&["-k", "echo", ":::", "a", "b", ":::", "1", "2"]);
    assert_eq!(stdout(&o), "a 1\na 2\nb 1\nb 2\n");
    // parallel echo ::: a b c :::+ 1 2 → a 1, b 2 (the longer cut short).
    let o = exec(&["-k", "echo", ":::", "a", "b", "c", ":::+", "1", "2"]);
    assert_eq!(stdout(&o), "a 1\nb 2\n");
}

#[test]
fn files_and_stdin_lines_are_inputs() {
    let d = dir("files");
    let f = d.join("in.txt");
    std::fs::write(&f, "x\ny\n").unwrap();
    let o = exec(&[
        "-k",
        "echo",
        "{}",
        "::::",
        f.to_str().unwrap(),
        ":::",
        "1",
        "2",
    ]);
    assert_eq!(stdout(&o), "x 1\nx 2\ny 1\ny 2\n");
    let o = exec_stdin(&["-k", "echo", "line"], b"one\ntwo\n");
    assert_eq!(stdout(&o), "line one\nline two\n");
}

#[test]
fn a_timeout_kills_the_jobs_grandchildren_and_counts_as_a_failure() {
    let d = dir("timeout");
    let pidfile = d.join("gc.pid");
    let o = exec(&[
        "--timeout",
        "0.5",
        "--grace",
        "0.2",
        "sleep 100 & echo $! > {}; wait",
        ":::",
        pidfile.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    let pid = read_pid(&pidfile).expect("the job wrote its grandchild's pid");
    assert!(
        eventually(|| gone(pid)),
        "grandchild {pid} survived the timeout"
    );
}

#[test]
fn a_failing_job_is_retried_and_json_counts_its_attempts() {
    let d = dir("retry");
    let marker = d.join("marker");
    let log = d.join("log");
    let job = "if [ -e {} ]; then echo ok; else touch {}; exit 1; fi";
    let o = exec(&[
        "--retries",
        "2",
        "--retry-delay",
        "10ms",
        "--json",
        "--joblog",
        log.to_str().unwrap(),
        job,
        ":::",
        marker.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (v["stdout"].as_str(), v["attempts"].as_u64()),
        (Some("ok\n"), Some(2))
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let rec: Vec<&str> = text.lines().nth(1).unwrap().split('\t').collect();
    assert_eq!((rec[6], rec[7]), ("0", "0"), "{text}");
    // Without retries the same job fails: exit status 1.
    std::fs::remove_file(&marker).unwrap();
    let o = exec(&[job, ":::", marker.to_str().unwrap()]);
    assert_eq!(code(&o), 1);
}

#[test]
fn halt_now_kills_at_the_first_failure_and_halt_soon_lets_running_jobs_finish() {
    // GNU parallel: -j1 --halt now,fail=1 'echo {}; exit {}' ::: 0 1 0 0 → 0 1, status 1.
    let o = exec(&[
        "-j1",
        "--halt",
        "now,fail=1",
        "echo {}; exit {}",
        ":::",
        "0",
        "1",
        "0",
        "0",
    ]);
    assert_eq!(stdout(&o), "0\n1\n");
    assert_eq!(code(&o), 1);
    let o = exec(&[
        "-j1",
        "--halt",
        "soon,fail=2",
        "echo {}; exit {}",
        ":::",
        "0",
        "1",
        "1",
        "0",
        "0",
    ]);
    assert_eq!(stdout(&o), "0\n1\n1\n");
    assert_eq!(code(&o), 2);
    // A percentage is of all the jobs: 2 of 6 never reach half, and the
    // status is the percentage that failed, rounded up (GNU parallel's 34).
    let six = |exits: [&'static str; 6]| {
        let mut args = vec!["-j1", "--halt", "soon,fail=50%", "echo {}; exit {}", ":::"];
        args.extend(exits);
        exec(&args)
    };
    let o = six(["0", "0", "1", "1", "0", "0"]);
    assert_eq!(
        (stdout(&o), code(&o)),
        ("0\n0\n1\n1\n0\n0\n".to_owned(), 34)
    );
    let o = six(["1", "1", "1", "0", "0", "0"]);
    assert_eq!((stdout(&o), code(&o)), ("1\n1\n1\n".to_owned(), 50));
    let o = exec(&["--halt", "sometimes", "true", ":::", "1"]);
    assert_eq!(code(&o), 255);
}

#[test]
fn keep_order_prints_in_input_order_whatever_the_finishing_order() {
    let o = exec(&[
        "-j4",
        "-k",
        "sleep {}; echo {}",
        ":::",
        "0.4",
        "0.2",
        "0.1",
        "0",
    ]);
    assert_eq!(stdout(&o), "0.4\n0.2\n0.1\n0\n");
}

#[test]
fn the_exit_status_is_the_number_of_failures_capped_at_101() {
    let o = exec(&["exit {}", ":::", "0", "1", "2", "3"]);
    assert_eq!(code(&o), 3);
    let input: String = (0..150).map(|i| format!("{i}\n")).collect();
    let o = exec_stdin(&["-j4", "false"], input.as_bytes());
    assert_eq!(code(&o), 101);
}

#[test]
fn the_joblog_has_gnu_parallels_nine_columns_exactly() {
    let d = dir("joblog");
    let log = d.join("log");
    let o = exec(&[
        "-j1",
        "--joblog",
        log.to_str().unwrap(),
        "printf {}; exit {}",
        ":::",
        "0",
        "3",
        "12",
    ]);
    assert_eq!(code(&o), 2);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // GNU parallel's header, column for column.
    assert_eq!(
        lines[0],
        "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"
    );
    assert_eq!(lines.len(), 4);
    let mut by_seq = HashMap::new();
    for l in &lines[1..] {
        let c: Vec<&str> = l.split('\t').collect();
        assert_eq!(c.len(), 9, "{l}");
        assert_eq!(c[1], ":");
        assert!(c[2].parse::<f64>().unwrap() > 1.6e9, "an epoch time: {l}");
        // JobRuntime right-aligned in ten characters, as `%10.3f`.
        assert_eq!(c[3].len(), 10, "{l}");
        assert!(c[3].trim().parse::<f64>().unwrap() >= 0.0);
        assert_eq!(c[4], "0");
        by_seq.insert(c[0].to_string(), [c[5], c[6], c[7], c[8]].map(String::from));
    }
    // Receive: the bytes the job wrote to stdout.
    assert_eq!(by_seq["1"], ["1", "0", "0", "printf 0; exit 0"]);
    assert_eq!(by_seq["2"], ["1", "3", "0", "printf 3; exit 3"]);
    assert_eq!(by_seq["3"], ["2", "12", "0", "printf 12; exit 12"]);
}

#[test]
fn json_prints_one_object_per_job() {
    let o = exec(&["-k", "--json", "echo", ":::", "a", "b"]);
    let objs: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objs.len(), 2);
    assert_eq!(objs[0]["seq"], 1);
    assert_eq!(objs[0]["stdout"], "a\n");
    assert_eq!(objs[1]["command"], "echo b");
    assert_eq!(objs[1]["status"], "ok");
    assert_eq!(objs[1]["exit"], 0);
}

/// Records of a job log: seq → (exit, signal), and how many records.
fn log_records(log: &Path) -> (HashMap<u64, (i32, i32)>, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut m = HashMap::new();
    let mut n = 0;
    for l in text.lines().skip(1) {
        let c: Vec<&str> = l.split('\t').collect();
        if c.len() < 9 {
            continue;
        }
        n += 1;
        m.insert(
            c[0].parse().unwrap(),
            (c[6].parse().unwrap(), c[7].parse().unwrap()),
        );
    }
    (m, n)
}

#[test]
fn resume_after_the_runner_is_sigkilled_loses_no_job_and_reruns_none_logged() {
    let d = dir("resume");
    let log = d.join("log");
    let runs = d.join("runs");
    let n = 40u64;
    let input: String = (1..=n).map(|i| format!("{i}\n")).collect();
    let job = format!("echo {{}} >> {}; sleep 0.05", runs.display());
    let args = ["-j2", "--joblog", log.to_str().unwrap(), job.as_str()];
    let mut child = seedcore()
        .arg("exec")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(
        eventually(|| log_records(&log).1 >= 6),
        "the run logged jobs"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (before, _) = log_records(&log);
    assert!((before.len() as u64) < n, "killed mid-run");
    // Jobs running at the kill finish on their own; let them.
    std::thread::sleep(Duration::from_millis(500));

    let o = exec_stdin(
        &[
            "-j2",
            "--resume",
            "--joblog",
            log.to_str().unwrap(),
            job.as_str(),
        ],
        input.as_bytes(),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (after, records) = log_records(&log);
    assert_eq!(records as u64, n, "one record per job, none twice");
    assert_eq!(after.keys().copied().max(), Some(n));
    assert!((1..=n).all(|s| after.contains_key(&s)), "no job lost");
    let mut count: HashMap<u64, usize> = HashMap::new();
    for l in std::fs::read_to_string(&runs).unwrap().lines() {
        *count.entry(l.parse().unwrap()).or_default() += 1;
    }
    for seq in before.keys() {
        assert_eq!(
            count[seq], 1,
            "job {seq} was logged done before the kill and ran again"
        );
    }
    assert_eq!(count.len() as u64, n);
}

#[test]
fn resume_failed_runs_again_only_the_jobs_that_failed() {
    let d = dir("resume-failed");
    let log = d.join("log");
    let runs = d.join("runs");
    let job = format!(
        "echo {{}} >> {}; [ -e {}/fixed ] || exit {{}}",
        runs.display(),
        d.display()
    );
    let args = |extra: &'static str| {
        let mut a = vec![
            "-j1".to_string(),
            "--joblog".into(),
            log.to_str().unwrap().into(),
        ];
        if !extra.is_empty() {
            a.push(extra.into());
        }
        a.extend([
            job.clone(),
            ":::".into(),
            "0".into(),
            "1".into(),
            "0".into(),
        ]);
        a
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        exec(&a)
    };
    assert_eq!(code(&run(args(""))), 1);
    std::fs::write(d.join("fixed"), "").unwrap();
    assert_eq!(code(&run(args("--resume"))), 0, "nothing left to run");
    assert_eq!(code(&run(args("--resume-failed"))), 0);
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "0\n1\n0\n1\n");
    let (recs, _) = log_records(&log);
    assert_eq!(recs[&2], (0, 0), "the last record of job 2 is its success");
}

#[test]
fn usage_errors_exit_255_with_a_message() {
    for (args, says) in [
        (vec!["--no-such-option", "true"], "--no-such-option"),
        (vec!["echo", "{0}", ":::", "a"], "bad template"),
        (vec!["echo", "{3}", ":::", "a"], "bad template"),
        (
            vec!["echo", "::::", "/nonexistent/seedcore-in"],
            "/nonexistent/seedcore-in",
        ),
        (vec!["-j", "many", "true", ":::", "a"], "-j many"),
        (vec!["--timeout", "soon", "true", ":::", "a"], "--timeout"),
        (vec!["--resume", "true", ":::", "a"], "--joblog"),
    ] {
        let o = exec(&args);
        assert_eq!(code(&o), 255, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn memfree_and_load_hold_jobs_back_until_the_readings_allow_them() {
    let d = dir("gating");
    let readings = d.join("readings");
    let marker = d.join("ran");
    // Plenty of memory but a load over the limit: nothing may start.
    std::fs::write(&readings, "8000000000 9.5").unwrap();
    let mut child = seedcore()
        .args(["exec", "--memfree", "1G", "--load", "4", "--readings"])
        .arg(&readings)
        .args(["touch", ":::"])
        .arg(&marker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marker.exists(), "a job started under a high load");
    // The load drops, but memory is short.
    std::fs::write(&readings, "1000 0.5").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marker.exists(), "a job started without free memory");
    assert!(child.try_wait().unwrap().is_none());
    std::fs::write(&readings, "8000000000 0.5").unwrap();
    let st = wait_exit(&mut child).expect("the job ran once the readings allowed it");
    assert!(st.success());
    assert!(marker.exists());
}

#[test]
fn ctrl_c_stops_running_jobs_and_a_second_ctrl_c_kills_them() {
    let d = dir("ctrl-c");
    // A job that dies on SIGTERM.
    let pidfile = d.join("polite");
    let mut child = seedcore()
        .args([
            "exec",
            "--grace",
            "60s",
            "sleep 100 & echo $! > {}; wait",
            ":::",
        ])
        .arg(&pidfile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(|| read_pid(&pidfile).is_some()));
    let pid = read_pid(&pidfile).unwrap();
    libc_kill(child.id(), libc::SIGINT);
    let st = wait_exit(&mut child).expect("the runner ended after Ctrl-C");
    assert_eq!(st.code(), Some(130));
    assert!(
        eventually(|| gone(pid)),
        "the job's grandchild survived Ctrl-C"
    );

    // A job that ignores SIGTERM: the second Ctrl-C kills it.
    let pidfile = d.join("stubborn");
    let mut child = seedcore()
        .args([
            "exec",
            "--grace",
            "60s",
            "trap '' TERM; echo $$ > {}; while :; do sleep 0.05; done",
            ":::",
        ])
        .arg(&pidfile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(|| read_pid(&pidfile).is_some()));
    let pid = read_pid(&pidfile).unwrap();
    libc_kill(child.id(), libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !gone(pid),
        "the first Ctrl-C only asks (SIGTERM, ignored here)"
    );
    libc_kill(child.id(), libc::SIGINT);
    let st = wait_exit(&mut child).expect("the runner ended after the second Ctrl-C");
    assert_eq!(st.code(), Some(130));
    assert!(
        eventually(|| gone(pid)),
        "the stubborn job survived the second Ctrl-C"
    );
}

/// Sends `sig` to process `pid`.
fn libc_kill(pid: u32, sig: i32) {
    // SAFETY: kill takes plain integers; the process is this test's child.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

#[test]
fn a_jobs_file_gives_each_job_its_command_env_cwd_and_options() {
    let d = dir("jobs-file");
    let jobs = d.join("jobs.jsonl");
    std::fs::write(
        &jobs,
        format!(
            "{{\"command\": \"echo $X $(pwd)\", \"env\": {{\"X\": \"from-env\"}}, \"cwd\": \"{}\"}}\n\
             {{\"command\": [\"echo\", \"a b\"], \"priority\": 1}}\n\
             {{\"command\": \"sleep 100\", \"timeout\": 0.2}}\n",
            d.display()
        ),
    )
    .unwrap();
    let o = exec(&[
        "-j1",
        "-k",
        "--grace",
        "0.1",
        "--jobs-file",
        jobs.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 1, "the sleep timed out: {}", stderr(&o));
    let d = d.canonicalize().unwrap();
    assert_eq!(stdout(&o), format!("from-env {}\na b\n", d.display()));
    std::fs::write(&jobs, "{\"comand\": \"true\"}\n").unwrap();
    let o = exec(&["--jobs-file", jobs.to_str().unwrap()]);
    assert_eq!(code(&o), 255, "a typo is a usage error");
}

/// Runs `seedcore exec ARGS` with `env` set (a `None` value unsets it).
fn exec_env(args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
    let mut c = seedcore();
    c.arg("exec").args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.stdin(Stdio::null())
        .output()
        .expect("the seedcore binary runs")
}

#[test]
fn a_job_killed_by_a_signal_logs_exitval_0_and_the_signal_as_gnu_parallel() {
    let d = dir("signal");
    let log = d.join("log");
    let o = exec(&[
        "--json",
        "--joblog",
        log.to_str().unwrap(),
        "kill -9 $$; echo {}",
        ":::",
        "a",
    ]);
    assert_eq!(code(&o), 1, "a killed job failed");
    let (recs, n) = log_records(&log);
    assert_eq!((recs[&1], n), ((0, 9), 1));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (v["exit"].as_i64(), v["signal"].as_i64()),
        (Some(0), Some(9))
    );
}

#[test]
fn retries_counts_tries_in_all_as_gnu_parallel() {
    let d = dir("tries");
    let runs = d.join("runs");
    let job = format!("echo {{}} >> {}; exit 1", runs.display());
    let count = || {
        let n = std::fs::read_to_string(&runs).map_or(0, |t| t.lines().count());
        let _ = std::fs::remove_file(&runs);
        n
    };
    // parallel --retries 3 'echo x >> runs; exit 1' ::: a runs it 3 times.
    for (retries, tries) in [(Some("3"), 3), (Some("1"), 1), (None, 1)] {
        let mut args = vec!["--retry-delay", "0", "--json"];
        if let Some(r) = retries {
            args.extend(["--retries", r]);
        }
        args.extend([job.as_str(), ":::", "a"]);
        let o = exec(&args);
        assert_eq!(code(&o), 1);
        assert_eq!(count(), tries, "--retries {retries:?}");
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(v["attempts"].as_u64(), Some(tries as u64));
    }
    // 0: no limit; this job succeeds at its fifth try.
    let job = format!(
        "echo {{}} >> {r}; [ $(wc -l < {r}) -ge 5 ]",
        r = runs.display()
    );
    let mut child = seedcore()
        .args([
            "exec",
            "--retries",
            "0",
            "--retry-delay",
            "0",
            &job,
            ":::",
            "a",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let st = wait_exit(&mut child);
    if st.is_none() {
        child.kill().unwrap();
    }
    assert!(st.is_some_and(|s| s.success()), "{st:?}");
    assert_eq!(count(), 5);
    let help = seedcore().args(["exec", "--help"]).output().unwrap();
    assert!(
        stdout(&help).contains("N times in all"),
        "{}",
        stdout(&help)
    );
}

#[test]
fn a_job_is_done_when_its_shell_exits_though_a_child_keeps_its_output_open() {
    let d = dir("detached");
    let release = d.join("release");
    let log = d.join("log");
    // The child holds stdout and stderr until the test releases it (or
    // its folder is gone: a failed test must not leave it running).
    let mut child = seedcore()
        .args(["exec", "--joblog", log.to_str().unwrap()])
        .arg(format!(
            "(while [ -d {} ] && [ ! -e {{}} ]; do sleep 0.02; done) & echo started",
            d.display()
        ))
        .arg(":::")
        .arg(&release)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let st = wait_exit(&mut child);
    std::fs::write(&release, "").unwrap();
    assert!(
        st.is_some_and(|s| s.success()),
        "the run waited for the job's child: {st:?}"
    );
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert_eq!(out, "started\n");
    assert_eq!(log_records(&log).0[&1], (0, 0));
}

#[test]
fn jobs_run_in_the_shell_gnu_parallel_picks() {
    // bash's echo leaves backslashes be; dash's expands them.
    let tab = |o: &Output| stdout(o).contains('\t');
    let job = ["echo {} ${BASH_VERSION:+bash}", ":::", "a\\tb"];
    let o = exec_env(&job, &[("PARALLEL_SHELL", Some("/bin/bash"))]);
    assert_eq!(stdout(&o), "a\\tb bash\n", "{}", stderr(&o));
    let dash = Path::new("/bin/dash").exists();
    if dash {
        let o = exec_env(&job, &[("PARALLEL_SHELL", Some("/bin/dash"))]);
        assert!(tab(&o) && !stdout(&o).contains("bash"), "{}", stdout(&o));
    }
    // Unset: the shell it was started from (`; true` keeps the shell
    // from exec'ing it), before $SHELL.
    let line = format!("{BIN} exec 'echo {{}} ${{BASH_VERSION:+bash}}' ::: 'a\\tb'; true");
    for (shell, is_bash) in [("/bin/bash", true), ("/bin/dash", false)] {
        if !Path::new(shell).exists() {
            continue;
        }
        let o = Command::new(shell)
            .args(["-c", &line])
            .env_remove("PARALLEL_SHELL")
            .env("SHELL", if is_bash { "/bin/dash" } else { "/bin/bash" })
            .output()
            .unwrap();
        assert_eq!(
            stdout(&o).contains("bash"),
            is_bash,
            "{shell}: {}",
            stdout(&o)
        );
        assert_eq!(tab(&o), !is_bash, "{shell}: {}", stdout(&o));
    }
    let o = exec_env(
        &["true", ":::", "a"],
        &[("PARALLEL_SHELL", Some("/nonexistent/seedcore-sh"))],
    );
    assert_eq!(code(&o), 255);
    assert!(
        stderr(&o).contains("/nonexistent/seedcore-sh"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn echo_true_and_false_give_the_shells_own_results_started_directly_or_not() {
    // Plain arguments may start the programs; options and escapes go to the
    // shell's builtin: every job prints what the shell's `echo` prints.
    let inputs = ["a", "b  c", "", "-n", "x\\ty", "--help", "-e", "a\\c"];
    for shell in ["/bin/sh", "/bin/bash", "/bin/dash"] {
        if !Path::new(shell).exists() {
            continue;
        }
        let mut args = vec!["-k", "echo", ":::"];
        args.extend(inputs);
        let o = exec_env(&args, &[("PARALLEL_SHELL", Some(shell))]);
        let want: String = inputs
            .iter()
            .map(|i| {
                let line = format!("echo '{}'", i.replace('\'', "'\\''"));
                let out = Command::new(shell).args(["-c", &line]).output().unwrap();
                stdout(&out)
            })
            .collect();
        assert_eq!(stdout(&o), want, "{shell}: {}", stderr(&o));
        assert_eq!(code(&o), 0, "{shell}");
    }
    let o = exec(&["true", ":::", "a", "--help", "--version"]);
    assert_eq!((code(&o), stdout(&o)), (0, String::new()), "{}", stderr(&o));
    let o = exec(&["false", ":::", "a", "--help", "--version"]);
    assert_eq!((code(&o), stdout(&o)), (3, String::new()), "{}", stderr(&o));
}

#[test]
fn input_lines_keep_a_carriage_return_and_values_split_at_newlines() {
    let o = exec_stdin(&["-k", "printf '[%s]\\n' {}"], b"a\r\nb\n\nc");
    assert_eq!(stdout(&o), "[a\r]\n[b]\n[]\n[c]\n");
    let o = exec(&["-k", "echo", "x{}x", ":::", "a\n", "b"]);
    assert_eq!(stdout(&o), "xax\nxx\nxbx\n");
}

#[test]
fn dotfiles_trailing_slashes_and_plus_strings_follow_gnu_parallel() {
    // parallel -k --plus "printf '%s|' {.} {/} {//} {/.} {+/} {+.} {..} {+..}; echo" ::: .bashrc a/b/ dir.d/f.tar.gz
    let o = exec(&[
        "-k",
        "--plus",
        "printf '%s|' {.} {/} {//} {/.} {+/} {+.} {..} {+..}; echo",
        ":::",
        ".bashrc",
        "a/b/",
        "dir.d/f.tar.gz",
    ]);
    assert_eq!(
        stdout(&o),
        "|.bashrc|.|||bashrc|.bashrc||\n\
         a/b/||a||a/b||a/b/||\n\
         dir.d/f.tar|f.tar.gz|dir.d|f.tar|dir.d|gz|dir.d/f|tar.gz|\n",
        "{}",
        stderr(&o)
    );
    // {##} needs every input first: stdin is read to its end.
    let o = exec_stdin(&["-k", "--plus", "echo", "{0#}/{##}"], b"a\nb\n");
    assert_eq!(stdout(&o), "1/2\n2/2\n");
    // Without --plus they are text, as in GNU parallel.
    let o = exec(&["echo", "{+/}", ":::", "a/b"]);
    assert_eq!(stdout(&o), "{+/} a/b\n");
    for bad in ["{:-x}", "{%.c}", "{/a/b}", "{uniq}"] {
        let o = exec(&["--plus", "echo", bad, ":::", "a"]);
        assert_eq!(code(&o), 255, "{bad}");
        assert!(stderr(&o).contains(bad), "{bad}: {}", stderr(&o));
    }
    let o = exec(&["echo", "{= $_ .= 1 =}", ":::", "a"]);
    assert_eq!(code(&o), 255);
    assert!(stderr(&o).contains("perl"), "{}", stderr(&o));
}

#[test]
fn resume_reads_a_log_gnu_parallel_wrote() {
    let d = dir("gnu-log");
    let log = d.join("log");
    let runs = d.join("runs");
    // As GNU parallel 20221122 writes it: job 1 succeeded, 2 exited 1,
    // 3 was killed by SIGKILL; 4 never ran.
    let gnu = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n\
               1\t:\t1796612122.290\t     0.000\t0\t2\t0\t0\techo 1\n\
               2\t:\t1796612122.297\t     0.005\t0\t0\t1\t0\techo 2; exit 1\n\
               3\t:\t1796612122.456\t     0.000\t0\t0\t0\t9\tkill -9 $$\n";
    let job = format!("echo {{}} >> {}", runs.display());
    let run = |flag: &str| {
        let o = exec(&[
            "-j1",
            flag,
            "--joblog",
            log.to_str().unwrap(),
            &job,
            ":::",
            "1",
            "2",
            "3",
            "4",
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let ran = std::fs::read_to_string(&runs).unwrap_or_default();
        let _ = std::fs::remove_file(&runs);
        ran
    };
    std::fs::write(&log, gnu).unwrap();
    assert_eq!(run("--resume"), "4\n");
    std::fs::write(&log, gnu).unwrap();
    assert_eq!(run("--resume-failed"), "2\n3\n4\n");
    // Appended to, still GNU parallel's format.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.starts_with(gnu));
    assert!(text.lines().all(|l| l.split('\t').count() == 9), "{text}");
    // A line that is no record makes the log unusable.
    std::fs::write(&log, "Seq\nnonsense\n").unwrap();
    let o = exec(&[
        "--resume",
        "--joblog",
        log.to_str().unwrap(),
        "true",
        ":::",
        "1",
    ]);
    assert_eq!(code(&o), 255);
}

/// Runs ARGS through GNU parallel with jobs in `shell` (`home` keeps its
/// state).
fn gnu(args: &[&str], shell: &str, home: &Path) -> Output {
    Command::new("parallel")
        .arg("--will-cite")
        .args(args)
        .env("PARALLEL_SHELL", shell)
        .env("HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("GNU parallel runs")
}

/// Runs ARGS through `seedcore exec` and through GNU parallel, both with
/// jobs in `shell`; (seedcore's, GNU parallel's).
fn both(args: &[&str], shell: &str, home: &Path) -> (Output, Output) {
    let ours = exec_env(args, &[("PARALLEL_SHELL", Some(shell))]);
    (ours, gnu(args, shell, home))
}

/// A job log's records without the times (Starttime, JobRuntime), by Seq.
fn log_without_times(log: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(log).unwrap();
    let mut rows: Vec<Vec<String>> = text
        .lines()
        .map(|l| {
            let mut c: Vec<String> = l.split('\t').map(String::from).collect();
            c.drain(2..4);
            c
        })
        .collect();
    rows[1..].sort();
    rows
}

#[test]
fn matches_gnu_parallel_where_it_is_installed() {
    let installed = Command::new("parallel")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        eprintln!("GNU parallel is not installed: nothing to compare with");
        return;
    }
    let d = dir("gnu-oracle");
    let home = d.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let inputs = d.join("inputs");
    std::fs::write(
        &inputs,
        ".bashrc\na/b/\na/b/.c\ndir.d/sub/file.tar.gz\nnodir\n/\n//\n/a\na//b\na b.c\n\nx.\n.a.b\n\
         ../x\n./y.tar.gz\na.b/c\na.b.c.d/e.f.g.h\n..\n.\na..b\n/.x\ncr\r\nit's\n'q'\n$HOME\n",
    )
    .unwrap();
    let inputs = inputs.to_str().unwrap();
    let parts =
        "printf '%s|' {} {.} {/} {//} {/.} {+/} {+.} {..} {...} {+..} {+...} {/..} {/...}; echo";
    // One job a value of `exits`, each exiting with it, under --halt `rule`.
    let halt = |rule: &'static str, exits: &'static str| {
        let mut args = vec!["-j1", "-k", "--halt", rule, "echo {}; exit {}", ":::"];
        args.extend(exits.split(' '));
        args
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-k", "--plus", parts, "::::", inputs], "/bin/sh"),
        (
            vec!["-k", "--dry-run", "echo", "{}", "::::", inputs],
            "/bin/sh",
        ),
        (
            vec!["-k", "echo", "{2}-{1}", ":::", "a\nb", "c", ":::", "1", "2"],
            "/bin/sh",
        ),
        (
            vec![
                "-k",
                "--plus",
                "echo",
                "{0#}/{##}",
                "{#}",
                ":::",
                "1",
                "2",
                "3",
                "4",
                "5",
                "6",
                "7",
                "8",
                "9",
                "10",
            ],
            "/bin/sh",
        ),
        (vec!["-k", "echo", ":::", "a\\tb", "c\\\\d"], "/bin/bash"),
        (vec!["-k", "echo", ":::", "a\\tb", "c\\\\d"], "/bin/sh"),
        (
            vec!["-k", "sleep 5 & echo started {}", ":::", "1"],
            "/bin/sh",
        ),
        (
            vec!["-k", "echo", "{+/}", "{..}", ":::", "a/b.c.d"],
            "/bin/sh",
        ),
        // The template's own whitespace: newlines, runs of spaces, a comment.
        (
            vec!["-k", "\n echo start {}\n echo end {}\n", ":::", "a", "b"],
            "/bin/sh",
        ),
        (
            vec!["-k", "printf '%s  |  %s\\n' {} x; # note", ":::", "a"],
            "/bin/sh",
        ),
        (vec!["-k", "# say it\necho {}", ":::", "a", "b"], "/bin/sh"),
        (vec!["-k", "echo {}\necho two", ":::", "a"], "/bin/sh"),
        // A replacement string in the command word: inputs are commands.
        (
            vec!["-k", "{}", ":::", "echo a  b", "printf %s\\n x"],
            "/bin/sh",
        ),
        (
            vec!["-k", "{1}", "{2}", ":::", "echo", ":::", "a  b"],
            "/bin/sh",
        ),
        // --halt's exit statuses.
        (halt("now,fail=1", "0 3 0"), "/bin/sh"),
        (halt("soon,fail=20%", "1 0 0 0 0 0 0 0 0 0"), "/bin/sh"),
        (halt("now,fail=30%", "1 1 1 1 0 0 0 0 0 0"), "/bin/sh"),
        (halt("now,success=1", "1 1 0 1"), "/bin/sh"),
        (
            vec![
                "-j1",
                "-k",
                "--halt-on-error",
                "2",
                "echo {}; exit {}",
                ":::",
                "0",
                "7",
                "0",
            ],
            "/bin/sh",
        ),
        // Other names of -j, -k and --dry-run.
        (
            vec![
                "-P",
                "2",
                "--keeporder",
                "--dryrun",
                "echo",
                ":::",
                "a",
                "b",
            ],
            "/bin/sh",
        ),
    ];
    for (args, shell) in &cases {
        let (ours, gnu) = both(args, shell, &home);
        assert_eq!(
            (stdout(&ours), code(&ours)),
            (stdout(&gnu), code(&gnu)),
            "{args:?} in {shell}: {}",
            stderr(&ours)
        );
    }

    // The job log, times aside: columns, Receive, a signal, a failure.
    let (ours_log, gnu_log) = (d.join("ours.log"), d.join("gnu.log"));
    let job = ["-j1", "printf {}; exit {}", ":::", "0", "3", "12"];
    let kill = ["-j1", "kill -9 $$; echo {}", ":::", "a"];
    for (job, code_both) in [(&job[..], 2), (&kill[..], 1)] {
        let mut ours_args = vec!["--joblog", ours_log.to_str().unwrap()];
        ours_args.extend(job);
        let ours = exec_env(&ours_args, &[("PARALLEL_SHELL", Some("/bin/sh"))]);
        let mut gnu_args = vec!["--joblog", gnu_log.to_str().unwrap()];
        gnu_args.extend(job);
        let theirs = gnu(&gnu_args, "/bin/sh", &home);
        assert_eq!((code(&ours), code(&theirs)), (code_both, code_both));
        assert_eq!(
            log_without_times(&ours_log),
            log_without_times(&gnu_log),
            "{job:?}"
        );
    }

    // --retries: the same number of tries.
    for (tool, runs) in [
        ("seedcore", d.join("runs-ours")),
        ("gnu", d.join("runs-gnu")),
    ] {
        let job = format!("echo {{}} >> {}; exit 1", runs.display());
        let args = ["--retries", "3", job.as_str(), ":::", "a"];
        let o = if tool == "gnu" {
            gnu(&args, "/bin/sh", &home)
        } else {
            exec(&[&["--retry-delay", "0"][..], &args[..]].concat())
        };
        assert_eq!(code(&o), 1);
        assert_eq!(
            std::fs::read_to_string(&runs).unwrap(),
            "a\na\na\n",
            "{tool}"
        );
    }

    // Each resumes the other's log.
    let runs = d.join("runs-resume");
    let job = format!("echo {{}} >> {}; exit $(({{}} % 2))", runs.display());
    let log = d.join("shared.log");
    let log = log.to_str().unwrap();
    let o = gnu(
        &["-j1", "--joblog", log, &job, ":::", "1", "2"],
        "/bin/sh",
        &home,
    );
    assert_eq!(code(&o), 1);
    let o = exec(&[
        "-j1",
        "--resume-failed",
        "--joblog",
        log,
        &job,
        ":::",
        "1",
        "2",
        "3",
        "4",
    ]);
    assert_eq!(code(&o), 2);
    let o = gnu(
        &[
            "-j1", "--resume", "--joblog", log, &job, ":::", "1", "2", "3", "4", "6",
        ],
        "/bin/sh",
        &home,
    );
    assert_eq!(code(&o), 0);
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap(),
        "1\n2\n1\n3\n4\n6\n",
        "GNU parallel ran 1 and 2, this runner 1 again (failed), 3 and 4, GNU parallel 6"
    );
}

#[test]
fn halt_gives_gnu_parallels_exit_statuses() {
    let run = |halt: &str, exits: &[&str]| {
        let mut args = vec!["-j1", "-k", "--halt", halt, "echo {}; exit {}", ":::"];
        args.extend(exits);
        let o = exec(&args);
        (code(&o), stdout(&o).lines().count())
    };
    // fail=1: the failed job's own status, and nothing after it starts.
    assert_eq!(run("now,fail=1", &["0", "3", "0"]), (3, 2));
    assert_eq!(run("soon,fail=1", &["0", "200", "0"]), (200, 2));
    // fail=P%: of all the jobs; the status is the percentage that failed.
    let ten = ["1", "0", "0", "0", "0", "0", "0", "0", "0", "0"];
    assert_eq!(run("soon,fail=20%", &ten), (10, 10));
    let ten = ["1", "1", "1", "1", "0", "0", "0", "0", "0", "0"];
    assert_eq!(run("now,fail=30%", &ten), (30, 3));
    // success= and done=, and the older forms.
    assert_eq!(run("now,success=1", &["1", "1", "0", "1"]), (0, 3));
    assert_eq!(run("-1", &["1", "0", "1"]), (0, 2));
    assert_eq!(run("soon,done=2", &["0", "5", "0"]), (1, 2));
    assert_eq!(run("2", &["0", "7", "0"]), (7, 2));
    let o = exec(&["--halt", "later,fail=1", "true", ":::", "a"]);
    assert_eq!(code(&o), 255, "{}", stderr(&o));
}

#[test]
fn jobs_can_be_counted_from_the_cores_and_named_as_gnu_parallel_names_them() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slots = |j: &str| {
        // Eight jobs long enough that every slot gets one.
        let mut args = vec!["-j", j, "sleep 0.2; echo {%}", ":::"];
        args.extend("1 2 3 4 5 6 7 8".split(' '));
        let o = exec(&args);
        assert_eq!(code(&o), 0, "-j {j}: {}", stderr(&o));
        stdout(&o)
            .lines()
            .map(|l| l.parse::<usize>().unwrap())
            .max()
            .unwrap()
    };
    assert_eq!(slots("+1"), (cores + 1).min(8));
    assert_eq!(slots("-100"), 1);
    assert_eq!(slots(&format!("-{}", cores.saturating_sub(1))), 1);
    let o = exec(&[
        "-P",
        "1",
        "--keeporder",
        "--dryrun",
        "echo",
        ":::",
        "b",
        "a",
    ]);
    assert_eq!((code(&o), stdout(&o)), (0, "echo b\necho a\n".to_owned()));
}

#[test]
fn a_script_without_a_shebang_line_runs_in_the_shell() {
    let d = dir("noshebang");
    let script = d.join("ns");
    std::fs::write(&script, "echo hi $1\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let o = exec(&[script.to_str().unwrap(), ":::", "a"]);
    assert_eq!(
        (code(&o), stdout(&o)),
        (0, "hi a\n".to_owned()),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_run_quietly() {
    // `seedcore exec ... | head -1`: the status of a process SIGPIPE ended,
    // and no error message.
    let mut child = seedcore()
        .args(["exec", "-k", "echo", "::::", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = (1..=2000).map(|i| format!("{i}\n")).collect();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 2];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    drop(out);
    let st = wait_exit(&mut child).expect("the run ends once its reader is gone");
    feeder.join().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(st.code(), Some(141), "{err}");
    assert!(err.is_empty(), "{err}");
}
