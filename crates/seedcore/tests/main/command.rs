//! Command tasks: external commands on the command executor, each in its
//! own process group, with the options every task has.

use seedcore::command::{failed_output, CommandExecutor, CommandSpec, Stdin};
use seedcore::{ConcurrentSystem, Priority, RetryPolicy, TaskError, TaskOptions};
use std::time::{Duration, Instant};

fn system(slots: usize) -> ConcurrentSystem {
    let system = ConcurrentSystem::builder().build().unwrap();
    system
        .add_executor(
            CommandExecutor::new(slots)
                .max_slots(slots)
                .grace(Duration::from_millis(200)),
        )
        .unwrap();
    system
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn wait_gone(pid: u32) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    while !gone(pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    gone(pid)
}

#[test]
fn a_command_runs_directly_with_its_arguments_env_cwd_and_stdin() {
    let system = system(2);
    let dir = std::env::temp_dir();
    let out = system
        .submit_command(
            TaskOptions::new(),
            CommandSpec::new("sh")
                .args([
                    "-c",
                    "printf '%s|%s|%s|' \"$1\" \"$GREETING\" \"$(pwd)\"; cat; echo oops >&2",
                    "sh",
                    "a b",
                ])
                .env("GREETING", "hello")
                .cwd(&dir)
                .stdin(Stdin::Bytes(b"from stdin".to_vec())),
        )
        .unwrap()
        .wait()
        .unwrap();
    let dir = dir.canonicalize().unwrap();
    assert_eq!(
        out.stdout.to_string_lossy().unwrap(),
        format!("a b|hello|{}|from stdin", dir.display())
    );
    assert_eq!(out.stderr.as_bytes(), Some(&b"oops\n"[..]));
    assert_eq!((out.code, out.signal, out.attempts), (Some(0), None, 1));
    let st = system.stats();
    assert_eq!(st.completed, 1);
    assert!(st.executor(seedcore::command::KIND).is_some());
}

#[test]
fn a_non_zero_exit_fails_with_the_output_and_is_retried() {
    let system = system(2);
    let marker = std::env::temp_dir().join(format!("seedcore-cmd-retry-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    // Fails on the first attempt (creates the marker), succeeds after.
    let line = format!(
        "if [ -e {m} ]; then echo second; else touch {m}; echo first; exit 3; fi",
        m = marker.display()
    );
    let out = system
        .submit_command(
            TaskOptions::new().retry(RetryPolicy::retries(2)),
            CommandSpec::shell(line),
        )
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(out.stdout.as_bytes(), Some(&b"second\n"[..]));
    assert_eq!(out.attempts, 2);
    assert_eq!(system.stats().retried, 1);
    let _ = std::fs::remove_file(&marker);

    let e = system
        .submit_command(TaskOptions::new(), CommandSpec::shell("echo bad; exit 7"))
        .unwrap()
        .wait()
        .unwrap_err();
    let failed = failed_output(&e).expect("the output travels with the failure");
    assert_eq!(failed.code, Some(7));
    assert_eq!(failed.stdout.as_bytes(), Some(&b"bad\n"[..]));
    assert!(e.to_string().contains("exited with status 7"), "{e}");
}

#[test]
fn a_missing_program_fails_to_start_with_its_name() {
    let system = system(1);
    let e = system
        .submit_command(
            TaskOptions::new(),
            CommandSpec::new("/nonexistent/seedcore-no-such"),
        )
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(e.to_string().contains("seedcore-no-such"), "{e}");
}

#[test]
fn a_timeout_kills_the_whole_process_group_grandchildren_included() {
    let system = system(2);
    let pidfile = std::env::temp_dir().join(format!("seedcore-cmd-gc-{}", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    let f = system
        .submit_command(
            TaskOptions::new().timeout(Duration::from_millis(300)),
            CommandSpec::shell(format!("sleep 100 & echo $! > {}; wait", pidfile.display())),
        )
        .unwrap();
    assert!(matches!(f.wait(), Err(TaskError::TimedOut(_))));
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(wait_gone(pid), "grandchild {pid} survived the timeout");
    let _ = std::fs::remove_file(&pidfile);
    // The slot is free again.
    let out = system
        .submit_command(TaskOptions::new(), CommandSpec::new("true"))
        .unwrap()
        .wait()
        .unwrap();
    assert!(out.success());
}

#[test]
fn a_child_ignoring_sigterm_is_killed_after_the_grace_period() {
    let system = system(1);
    let f = system
        .submit_command(
            TaskOptions::new().timeout(Duration::from_millis(100)),
            CommandSpec::shell("trap '' TERM; while :; do sleep 0.05; done"),
        )
        .unwrap();
    assert!(matches!(f.wait(), Err(TaskError::TimedOut(_))));
    // The slot comes back only once the group is killed.
    let out = system
        .submit_command(TaskOptions::new(), CommandSpec::new("true"))
        .unwrap()
        .wait_timeout(Duration::from_secs(20))
        .expect("the stubborn child was killed");
    assert!(out.unwrap().success());
    assert!(system
        .stats()
        .executor(seedcore::command::KIND)
        .unwrap()
        .pids
        .is_empty());
}

#[test]
fn large_output_is_spooled_to_a_file_removed_on_drop() {
    let system = ConcurrentSystem::builder().build().unwrap();
    system
        .add_executor(CommandExecutor::new(1).spool_threshold(1024))
        .unwrap();
    let out = system
        .submit_command(
            TaskOptions::new(),
            CommandSpec::shell("head -c 100000 /dev/zero"),
        )
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(out.stdout.len(), 100_000);
    assert!(out.stdout.as_bytes().is_none());
    let path = out.stdout.spool_path().unwrap().to_path_buf();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 100_000);
    assert_eq!(out.stdout.to_vec().unwrap(), vec![0u8; 100_000]);
    drop(out);
    assert!(!path.exists());
}

#[test]
fn commands_wait_in_priority_order_for_a_slot() {
    let system = system(1);
    let gate = std::env::temp_dir().join(format!("seedcore-cmd-gate-{}", std::process::id()));
    let _ = std::fs::remove_file(&gate);
    let blocker = system
        .submit_command(
            TaskOptions::new(),
            CommandSpec::shell(format!(
                "while [ ! -e {} ]; do sleep 0.01; done",
                gate.display()
            )),
        )
        .unwrap();
    while system
        .stats()
        .executor(seedcore::command::KIND)
        .unwrap()
        .busy
        == 0
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let log = std::env::temp_dir().join(format!("seedcore-cmd-order-{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut fs = Vec::new();
    for (label, p) in [
        ("low", Priority::LOW),
        ("high", Priority::HIGH),
        ("normal", Priority::NORMAL),
    ] {
        fs.push(
            system
                .submit_command(
                    TaskOptions::new().priority(p),
                    CommandSpec::shell(format!("echo {label} >> {}", log.display())),
                )
                .unwrap(),
        );
    }
    std::fs::write(&gate, b"").unwrap();
    blocker.wait().unwrap();
    for f in fs {
        f.wait().unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "high\nnormal\nlow\n"
    );
    let _ = std::fs::remove_file(&gate);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn submit_command_adds_a_default_executor_on_first_use() {
    let system = ConcurrentSystem::builder().build().unwrap();
    let out = system
        .submit_command(TaskOptions::new(), CommandSpec::new("echo").arg("hi"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(out.stdout.as_bytes(), Some(&b"hi\n"[..]));
}

#[test]
fn a_command_is_done_when_it_exits_though_a_child_it_left_holds_its_pipes() {
    let system = system(1);
    let dir = std::env::temp_dir().join(format!("seedcore-cmd-detached-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (release, marker) = (dir.join("release"), dir.join("marker"));
    // The background child keeps stdout and stderr open until the test
    // releases it, then writes to both and leaves a marker.
    let line = format!(
        "(while [ ! -e {r} ]; do sleep 0.02; done; echo late; echo late >&2; touch {m}) & \
         echo started; echo warn >&2",
        r = release.display(),
        m = marker.display()
    );
    let out = system
        .submit_command(TaskOptions::new(), CommandSpec::shell(line))
        .unwrap()
        .wait_timeout(Duration::from_secs(30))
        .expect("done when the shell exits, not when its child does")
        .unwrap();
    assert_eq!(out.stdout.as_bytes(), Some(&b"started\n"[..]));
    assert_eq!(out.stderr.as_bytes(), Some(&b"warn\n"[..]));
    // The child's later writes go nowhere, and do not kill it (SIGPIPE).
    std::fs::write(&release, "").unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while !marker.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        marker.exists(),
        "the detached child died writing its output"
    );
    // The next command on the same slot runs as usual.
    let out = system
        .submit_command(TaskOptions::new(), CommandSpec::new("echo").arg("next"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(out.stdout.as_bytes(), Some(&b"next\n"[..]));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_command_section_sizes_the_executor_added_on_first_use() {
    let config = seedcore::Config::from_toml_str("[command]\nslots = 1\nmax_slots = 3").unwrap();
    let system = ConcurrentSystem::builder().config(config).build().unwrap();
    system
        .submit_command(TaskOptions::new(), CommandSpec::new("true"))
        .unwrap()
        .wait()
        .unwrap();
    let stats = system.stats();
    let e = stats
        .executors
        .iter()
        .find(|e| e.kind.name() == "command")
        .expect("added");
    assert_eq!((e.core, e.max), (1, 3));
}
