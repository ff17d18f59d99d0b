//! `seedcore exec` through the real binary: inputs, replacement strings and
//! quoting (against GNU parallel's documented outputs), timeouts that kill
//! grandchildren, retries, halt rules, keep-order, the job log and resume
//! after the runner itself is SIGKILLed, gating, Ctrl-C, usage errors.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::BIN;

fn exec(args: &[&str]) -> Output {
    exec_stdin(args, b"")
}

fn exec_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(BIN)
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

/// A fresh directory for one test.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("seedcore-exec-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
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
fn a_failing_job_is_retried_and_the_log_counts_its_attempts() {
    let d = dir("retry");
    let marker = d.join("marker");
    let log = d.join("log");
    let job = "if [ -e {} ]; then echo ok; else touch {}; exit 1; fi";
    let o = exec(&[
        "--retries",
        "2",
        "--retry-delay",
        "10ms",
        "--joblog",
        log.to_str().unwrap(),
        job,
        ":::",
        marker.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "ok\n");
    let text = std::fs::read_to_string(&log).unwrap();
    let rec: Vec<&str> = text.lines().nth(1).unwrap().split('\t').collect();
    assert_eq!((rec[6], rec[8]), ("0", "2"), "{text}");
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
    // Half of the finished jobs failed.
    let o = exec(&[
        "-j1",
        "--halt",
        "soon,fail=50%",
        "echo {}; exit {}",
        ":::",
        "0",
        "0",
        "1",
        "1",
        "0",
        "0",
    ]);
    assert_eq!(stdout(&o), "0\n0\n1\n1\n");
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
fn the_joblog_has_gnu_parallels_columns_plus_attempts() {
    let d = dir("joblog");
    let log = d.join("log");
    let o = exec(&[
        "-j1",
        "--joblog",
        log.to_str().unwrap(),
        "exit {}",
        ":::",
        "0",
        "3",
    ]);
    assert_eq!(code(&o), 1);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tAttempts\tCommand"
    );
    assert_eq!(lines.len(), 3);
    let mut by_seq = HashMap::new();
    for l in &lines[1..] {
        let c: Vec<&str> = l.split('\t').collect();
        assert_eq!(c.len(), 10, "{l}");
        assert_eq!(c[1], ":");
        assert!(c[2].parse::<f64>().unwrap() > 1.6e9, "an epoch time: {l}");
        assert!(c[3].trim().parse::<f64>().unwrap() >= 0.0);
        assert_eq!((c[4], c[5]), ("0", "0"));
        by_seq.insert(
            c[0].to_string(),
            (c[6].to_string(), c[7].to_string(), c[9].to_string()),
        );
    }
    assert_eq!(by_seq["1"], ("0".into(), "0".into(), "exit 0".into()));
    assert_eq!(by_seq["2"], ("3".into(), "0".into(), "exit 3".into()));
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
        if c.len() < 10 {
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
    let mut child = Command::new(BIN)
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
    let mut child = Command::new(BIN)
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
    let mut child = Command::new(BIN)
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
    let mut child = Command::new(BIN)
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
