//! Distributed mode against a real `redis-server` started by each test on a
//! free loopback port, with real `seedcore worker` processes. Skips with a
//! printed reason where `redis-server` is not installed.

use crate::common;
use crate::redis_server::{free_port, installed, temp_dir, RedisServer};

use common::BIN;
use seedcore::remote::{RemoteClient, RemoteConfig, RemoteError, RemoteId, ServeOptions};
use seedcore::{ConcurrentSystem, Priority, ProcessTask, TaskError, TaskOptions};
use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "test-secret-of-at-least-32-bytes!";
const LONG: Duration = Duration::from_secs(60);

/// Polls `cond` until it holds or `within` passes; whether it held.
fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

const ADD: ProcessTask<(u64, u64), u64> = ProcessTask::external("seedcore::worker::remote_add");
const ECHO: ProcessTask<String, String> = ProcessTask::external("seedcore::worker::remote_echo");
const SLEEP: ProcessTask<u64, u64> = ProcessTask::external("seedcore::worker::remote_sleep");
const MARKED: ProcessTask<(String, u64), u32> =
    ProcessTask::external("seedcore::worker::remote_marked_sleep");
const KILL_WORKER: ProcessTask<String, ()> =
    ProcessTask::external("seedcore::worker::remote_kill_worker");

/// A `seedcore worker` process in its own process group, killed on drop.
struct Worker(Child);

impl Worker {
    fn start(redis: &RedisServer, processes: usize, prefetch: usize) -> Worker {
        let child = Command::new(BIN)
            .args(["worker", "--redis", &redis.url()])
            .env("SEEDCORE_REMOTE_SECRET", SECRET)
            .args(["--processes", &processes.to_string()])
            .args(["--prefetch", &prefetch.to_string()])
            .args(["--visibility-timeout-ms", "1500"])
            .process_group(0)
            .stdout(Stdio::null())
            .spawn()
            .expect("seedcore worker starts");
        Worker(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: signals the process group this test started.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

fn client(redis: &RedisServer) -> ConcurrentSystem {
    ConcurrentSystem::builder()
        .remote(redis.url())
        .remote_secret(SECRET)
        .build()
        .expect("the client connects")
}

/// Waits until `n` workers have sent a heartbeat.
fn wait_workers(redis: &RedisServer, n: usize) {
    let mut c = redis.conn();
    let ok = eventually(LONG, || {
        let len: usize = redis::cmd("HLEN")
            .arg("{seedcore}:workers")
            .query(&mut c)
            .unwrap_or(0);
        len >= n
    });
    assert!(ok, "{n} workers never sent a heartbeat");
}

fn queued(redis: &RedisServer) -> usize {
    let mut c = redis.conn();
    (0..=10)
        .map(|l| {
            redis::cmd("XLEN")
                .arg(format!("{{seedcore}}:q:{l}"))
                .query::<usize>(&mut c)
                .unwrap_or(0)
        })
        .sum()
}

/// The remote executor's gauge `name` in the client's stats.
fn gauge(sys: &ConcurrentSystem, name: &str) -> u64 {
    sys.stats()
        .executors
        .iter()
        .find(|e| e.kind.name() == "remote")
        .and_then(|e| e.gauges.iter().find(|g| g.0 == name).map(|g| g.1))
        .unwrap_or(0)
}

fn live_workers(sys: &ConcurrentSystem) -> usize {
    sys.stats()
        .executors
        .iter()
        .find(|e| e.kind.name() == "remote")
        .map_or(0, |e| e.workers)
}

fn lines(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn round_trip_of_tasks_errors_and_timeouts() {
    let Some(redis) = RedisServer::start("rt", &[]) else {
        return;
    };
    let _w = Worker::start(&redis, 1, 8);
    let sys = client(&redis);
    let f = sys.submit_remote(TaskOptions::new(), ADD, (2, 3)).unwrap();
    assert_eq!(f.wait().unwrap(), 5);
    let f = sys
        .submit_remote(TaskOptions::new(), ECHO, "hello".to_string())
        .unwrap();
    assert_eq!(f.wait().unwrap(), "hello");
    let unknown: ProcessTask<u8, u8> = ProcessTask::external("no_such_task");
    let err = sys
        .submit_remote(TaskOptions::new(), unknown, 1)
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(
        err.to_string().contains("no task named `no_such_task`"),
        "{err}"
    );
    // A timeout resolves the future and stops the task on the worker.
    let err = sys
        .submit_remote(
            TaskOptions::new().timeout(Duration::from_millis(300)),
            SLEEP,
            60_000,
        )
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(matches!(err, TaskError::TimedOut(_)), "{err}");
    // The worker still serves (its local pool replaced the killed process).
    let f = sys.submit_remote(TaskOptions::new(), ADD, (40, 2)).unwrap();
    assert_eq!(f.wait().unwrap(), 42);
    // The stats row shows the live worker from its heartbeats.
    assert!(eventually(LONG, || live_workers(&sys) == 1));
}

#[test]
fn higher_priorities_run_first_under_a_backlog() {
    let Some(redis) = RedisServer::start("prio", &[]) else {
        return;
    };
    let sys = client(&redis);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    let submit = |label: String, p: Priority| {
        let o = order.clone();
        let l = label.clone();
        sys.submit_remote(TaskOptions::new().priority(p), ECHO, label)
            .unwrap()
            .on_complete(move |r| {
                assert_eq!(r.unwrap(), l);
                o.lock().unwrap().push(l);
            })
    };
    for i in 0..12 {
        handles.push(submit(format!("low{i}"), Priority::LOW));
    }
    for i in 0..6 {
        handles.push(submit(format!("high{i}"), Priority::HIGH));
    }
    // The backlog is in Redis before any worker runs.
    assert!(eventually(LONG, || queued(&redis) == 18));
    let _w = Worker::start(&redis, 1, 1);
    assert!(eventually(LONG, || order.lock().unwrap().len() == 18));
    let order = order.lock().unwrap().clone();
    let first_low = order.iter().position(|l| l.starts_with("low")).unwrap();
    assert_eq!(
        first_low, 6,
        "every high task before any low one: {order:?}"
    );
    // Within one level, first in first out.
    let lows: Vec<&String> = order.iter().filter(|l| l.starts_with("low")).collect();
    let want: Vec<String> = (0..12).map(|i| format!("low{i}")).collect();
    assert_eq!(lows, want.iter().collect::<Vec<_>>());
}

#[test]
fn a_task_cancelled_while_queued_never_runs() {
    let Some(redis) = RedisServer::start("cancel", &[]) else {
        return;
    };
    let _w = Worker::start(&redis, 1, 1);
    wait_workers(&redis, 1);
    let sys = client(&redis);
    let dir = temp_dir("cancel-marks");
    let (busy, queued_mark) = (dir.join("busy"), dir.join("queued"));
    let a = sys
        .submit_remote(
            TaskOptions::new(),
            MARKED,
            (busy.display().to_string(), 1_500),
        )
        .unwrap();
    assert!(eventually(LONG, || lines(&busy).len() == 1));
    // The worker holds one entry at a time: this one waits in the stream.
    let b = sys
        .submit_remote(
            TaskOptions::new(),
            MARKED,
            (queued_mark.display().to_string(), 1),
        )
        .unwrap();
    assert!(b.cancel());
    assert!(matches!(b.wait(), Err(TaskError::Cancelled)));
    a.wait().unwrap();
    let c = sys.submit_remote(TaskOptions::new(), ADD, (1, 2)).unwrap();
    assert_eq!(c.wait().unwrap(), 3);
    assert!(
        lines(&queued_mark).is_empty(),
        "the cancelled task never ran"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn three_worker_processes_share_the_work() {
    let Some(redis) = RedisServer::start("three", &[]) else {
        return;
    };
    let workers: Vec<Worker> = (0..3).map(|_| Worker::start(&redis, 1, 2)).collect();
    wait_workers(&redis, 3);
    let sys = client(&redis);
    let dir = temp_dir("three-marks");
    let mark = dir.join("starts").display().to_string();
    let fs: Vec<_> = (0..45)
        .map(|_| {
            sys.submit_remote(TaskOptions::new(), MARKED, (mark.clone(), 40))
                .unwrap()
        })
        .collect();
    let pids: HashSet<u32> = fs.into_iter().map(|f| f.wait().unwrap()).collect();
    assert_eq!(pids.len(), 3, "each worker ran tasks: {pids:?}");
    assert_eq!(lines(Path::new(&mark)).len(), 45, "each task ran once");
    drop(workers);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_task_of_a_sigkilled_worker_completes_on_another_once() {
    let Some(redis) = RedisServer::start("kill", &[]) else {
        return;
    };
    let a = Worker::start(&redis, 1, 4);
    let b = Worker::start(&redis, 1, 4);
    wait_workers(&redis, 2);
    let sys = client(&redis);
    let dir = temp_dir("kill-marks");
    let mark = dir.join("starts");
    let f = sys
        .submit_remote(
            TaskOptions::new(),
            MARKED,
            (mark.display().to_string(), 2_000),
        )
        .unwrap();
    assert!(
        eventually(LONG, || lines(&mark).len() == 1),
        "the task never started"
    );
    let first = lines(&mark)[0];
    // The worker holding it: the parent of the pool process that runs it.
    let status = std::fs::read_to_string(format!("/proc/{first}/status")).unwrap();
    let ppid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (victim, survivor) = if ppid == a.pid() { (a, b) } else { (b, a) };
    assert_eq!(victim.pid(), ppid, "the task runs under one of the workers");
    drop(victim); // SIGKILL to its whole process group, mid-task.
    let pid = f.wait().expect("the task completes on the other worker");
    assert_ne!(pid, first);
    let starts = lines(&mark);
    assert_eq!(starts.len(), 2, "started once per worker: {starts:?}");
    assert!(
        eventually(LONG, || gauge(&sys, "reclaimed") == 1),
        "the survivor reports the entry it took over"
    );
    drop(survivor);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn forged_and_unsigned_messages_are_refused() {
    let Some(redis) = RedisServer::start("forged", &[]) else {
        return;
    };
    let _w = Worker::start(&redis, 1, 4);
    wait_workers(&redis, 1);
    let mut c = redis.conn();
    // A message signed with another secret is a forgery.
    let other = ConcurrentSystem::builder()
        .remote(redis.url())
        .remote_secret("not-the-secret-but-32-bytes-long!")
        .build()
        .unwrap();
    let forged = other
        .submit_remote(
            TaskOptions::new().timeout(Duration::from_secs(2)),
            ECHO,
            "forged".to_string(),
        )
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("{seedcore}:q:5")
        .arg("*")
        .arg("m")
        .arg(b"\x01\x02\x03".as_slice())
        .query(&mut c)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("{seedcore}:q:5")
        .arg("*")
        .arg("m")
        .arg(b"\x01\x02\x03".as_slice())
        .arg("s")
        .arg([7u8; 32].as_slice())
        .query(&mut c)
        .unwrap();
    // The forged one is never run: no result reaches its client.
    assert!(matches!(forged.wait(), Err(TaskError::TimedOut(_))));
    let sys = client(&redis);
    let f = sys
        .submit_remote(TaskOptions::new(), ECHO, "signed".to_string())
        .unwrap();
    assert_eq!(f.wait().unwrap(), "signed");
    let refused: u64 = redis::cmd("GET")
        .arg("{seedcore}:refused")
        .query(&mut c)
        .unwrap();
    assert_eq!(refused, 3, "the forged, the unsigned and the garbage entry");
    assert!(eventually(LONG, || gauge(&sys, "refused") == 3));
    // The signed task's result was deleted once delivered; the refused
    // ones never stored any.
    assert!(
        eventually(LONG, || redis::cmd("KEYS")
            .arg("{seedcore}:r:*")
            .query::<Vec<String>>(&mut c)
            .unwrap()
            .is_empty()),
        "no result key is left"
    );
}

#[test]
fn redis_restarted_mid_run_loses_nothing_accepted() {
    let Some(mut redis) = RedisServer::start(
        "restart",
        &["--appendonly", "yes", "--appendfsync", "always"],
    ) else {
        return;
    };
    let _a = Worker::start(&redis, 1, 4);
    let _b = Worker::start(&redis, 1, 4);
    wait_workers(&redis, 2);
    let sys = client(&redis);
    let mut fs: Vec<_> = (0..30)
        .map(|i| {
            sys.submit_remote(TaskOptions::new(), SLEEP, 20 + i % 3)
                .unwrap()
        })
        .collect();
    redis.restart();
    // Tasks accepted right after the restart also go through.
    fs.extend((0..10).map(|_| sys.submit_remote(TaskOptions::new(), SLEEP, 5).unwrap()));
    for f in fs {
        f.wait_timeout(LONG)
            .expect("resolves after the restart")
            .expect("and succeeds");
    }
    let f = sys.submit_remote(TaskOptions::new(), ADD, (1, 1)).unwrap();
    assert_eq!(f.wait().unwrap(), 2);
}

#[test]
fn bad_urls_and_wrong_passwords_are_typed_errors() {
    let Some(redis) = RedisServer::start("auth", &["--requirepass", "right"]) else {
        return;
    };
    let serve = |url: String| {
        seedcore::remote::serve(
            RemoteConfig::new(url).secret(SECRET),
            ServeOptions::default().processes(1),
        )
        .map(|_| ())
        .unwrap_err()
    };
    assert!(matches!(
        serve("http://127.0.0.1:1/".into()),
        RemoteError::BadUrl { .. }
    ));
    assert!(matches!(
        serve("redis://127.0.0.1:notaport/".into()),
        RemoteError::BadUrl { .. }
    ));
    // `rediss://` is TLS (tests/remote_tls.rs); nothing listens here.
    assert!(matches!(
        serve(format!("rediss://127.0.0.1:{}/", free_port())),
        RemoteError::Connect { .. }
    ));
    let wrong = format!("redis://:wrong@127.0.0.1:{}/", redis.port());
    let e = serve(wrong.clone());
    assert!(matches!(e, RemoteError::Auth { .. }), "{e:?}");
    assert!(
        !e.to_string().contains("wrong@"),
        "the password is hidden: {e}"
    );
    let e = serve(redis.url());
    assert!(matches!(e, RemoteError::Auth { .. }), "no password: {e:?}");
    let closed = format!("redis://127.0.0.1:{}/", free_port());
    assert!(matches!(serve(closed), RemoteError::Connect { .. }));
    // The builder names the setting.
    let e = ConcurrentSystem::builder()
        .remote(wrong)
        .remote_secret(SECRET)
        .build()
        .unwrap_err();
    assert_eq!(e.field, "remote.url");
    assert!(e.reason.contains("refused the credentials"), "{e}");
    // And a right password works.
    let right = format!("redis://:right@127.0.0.1:{}/", redis.port());
    let sys = ConcurrentSystem::builder()
        .remote(right)
        .remote_secret(SECRET)
        .build();
    assert!(sys.is_ok());
    // Without a secret nothing starts.
    let e = seedcore::remote::serve(
        RemoteConfig::new(redis.url()).secret(""),
        ServeOptions::default(),
    )
    .map(|_| ())
    .unwrap_err();
    assert_eq!(e, RemoteError::NoSecret);
}

#[test]
fn bench_remote_reports_seedcore_celery_and_dramatiq() {
    let (stdout, lines) = common::bench_json("remote", &[("SEEDCORE_BENCH_INSTALL_PEERS", "0")]);
    let all = ["seedcore", "celery", "celery_group", "dramatiq"];
    let one_at_a_time = ["seedcore", "celery", "dramatiq"];
    let expected = all.iter().map(|s| ("tasks_per_s", *s)).chain(
        ["round_trip_p50_us", "round_trip_p99_us"]
            .into_iter()
            .flat_map(|m| one_at_a_time.iter().map(move |s| (m, *s))),
    );
    for (metric, subject) in expected {
        let line = lines
            .iter()
            .find(|l| l["metric"] == metric && l["subject"] == subject)
            .unwrap_or_else(|| panic!("no {subject} {metric} line:\n{stdout}"));
        // A figure, or a reason it was not measured (no redis-server, no
        // Celery or Dramatiq in the bench's virtual environment).
        assert!(
            line["value"].as_f64().is_some_and(|v| v > 0.0) || line["skipped"].is_string(),
            "{line}"
        );
    }
    assert_eq!(
        lines.len(),
        10,
        "one line per metric and subject:\n{stdout}"
    );
    if installed() {
        for metric in ["tasks_per_s", "round_trip_p50_us", "round_trip_p99_us"] {
            let line = lines
                .iter()
                .find(|l| l["metric"] == metric && l["subject"] == "seedcore")
                .unwrap();
            assert!(
                line["value"].as_f64().is_some(),
                "seedcore measured: {line}"
            );
        }
    }
}

fn client_with(
    redis: &RedisServer,
    f: impl FnOnce(RemoteConfig) -> RemoteConfig,
) -> ConcurrentSystem {
    ConcurrentSystem::builder()
        .remote_config(f(RemoteConfig::new(redis.url()).secret(SECRET)))
        .build()
        .expect("the client connects")
}

fn remote_error(e: &TaskError) -> Option<&RemoteError> {
    match e {
        TaskError::Failed(b) => b.downcast_ref::<RemoteError>(),
        _ => None,
    }
}

#[test]
fn redis_killed_for_good_fails_every_future_within_the_window() {
    let Some(mut redis) = RedisServer::start("gone", &[]) else {
        return;
    };
    let _w = Worker::start(&redis, 1, 2);
    wait_workers(&redis, 1);
    let window = Duration::from_secs(2);
    let sys = client_with(&redis, |c| c.reconnect_window(window));
    // Running, queued behind them, and one without a worker's attention.
    let fs: Vec<_> = (0..6)
        .map(|_| {
            sys.submit_remote(TaskOptions::new(), SLEEP, 30_000)
                .unwrap()
        })
        .collect();
    assert!(eventually(LONG, || queued(&redis) == 6));
    std::thread::sleep(Duration::from_millis(300));
    redis.kill();
    let t = std::time::Instant::now();
    // Submitted while the server is gone: also inside the window.
    let late = sys.submit_remote(TaskOptions::new(), ADD, (1, 1)).unwrap();
    for f in fs.into_iter().chain([late]) {
        let e = f
            .wait_timeout(window + Duration::from_secs(5))
            .expect("resolves within the reconnect window")
            .unwrap_err();
        match remote_error(&e) {
            Some(RemoteError::Unreachable { url, .. }) => {
                assert!(url.contains("127.0.0.1"), "{url}")
            }
            _ => panic!("not Unreachable: {e:?}"),
        }
    }
    assert!(
        t.elapsed() < window + Duration::from_secs(3),
        "{:?}",
        t.elapsed()
    );
    // Past the window a new task fails at once.
    let t = std::time::Instant::now();
    let e = sys
        .submit_remote(TaskOptions::new(), ADD, (2, 2))
        .unwrap()
        .wait_timeout(Duration::from_secs(1))
        .expect("fails at once")
        .unwrap_err();
    assert!(
        matches!(remote_error(&e), Some(RemoteError::Unreachable { .. })),
        "{e:?}"
    );
    assert!(t.elapsed() < Duration::from_millis(500));
    // Once the server is back, tasks run again: the worker stops the
    // tasks whose futures failed meanwhile (it does not finish 30 s
    // sleeps for nobody).
    redis.start_again();
    let t = std::time::Instant::now();
    assert!(eventually(LONG, || {
        sys.submit_remote(TaskOptions::new(), ADD, (2, 3))
            .unwrap()
            .wait_timeout(LONG)
            .is_ok_and(|r| r.ok() == Some(5))
    }));
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the abandoned sleeps were stopped: {:?}",
        t.elapsed()
    );
}

#[test]
fn errors_from_redis_fail_the_attempts() {
    let Some(redis) = RedisServer::start("oom", &[]) else {
        return;
    };
    let _w = Worker::start(&redis, 1, 2);
    wait_workers(&redis, 1);
    let sys = client(&redis);
    let mut c = redis.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query(&mut c)
        .unwrap();
    let e = sys
        .submit_remote(TaskOptions::new(), ADD, (1, 2))
        .unwrap()
        .wait_timeout(LONG)
        .expect("resolves")
        .unwrap_err();
    match remote_error(&e) {
        Some(RemoteError::Redis(m)) => assert!(m.contains("OOM"), "{m}"),
        _ => panic!("not a Redis error: {e:?}"),
    }
    // Retryable: with room again, the retry goes through.
    let f = sys
        .submit_remote(
            TaskOptions::new().retry(
                seedcore::RetryPolicy::retries(5)
                    .backoff(seedcore::Backoff::Fixed(Duration::from_millis(300))),
            ),
            ADD,
            (2, 2),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut c)
        .unwrap();
    assert_eq!(f.wait_timeout(LONG).expect("resolves").unwrap(), 4);
}

#[test]
fn redis_restarted_empty_pending_tasks_complete_once() {
    let Some(mut redis) = RedisServer::start("empty", &[]) else {
        return;
    };
    let _w = Worker::start(&redis, 1, 1);
    wait_workers(&redis, 1);
    let sys = client(&redis);
    let dir = temp_dir("empty-marks");
    let marks: Vec<PathBuf> = (0..6).map(|i| dir.join(format!("t{i}"))).collect();
    let fs: Vec<_> = marks
        .iter()
        .map(|m| {
            sys.submit_remote(TaskOptions::new(), MARKED, (m.display().to_string(), 400))
                .unwrap()
        })
        .collect();
    assert!(eventually(LONG, || lines(&marks[0]).len() == 1));
    redis.restart(); // no persistence: everything in it is gone
    for f in fs {
        f.wait_timeout(LONG)
            .expect("resolves after the restart")
            .expect("and succeeds");
    }
    for m in &marks {
        assert_eq!(lines(m).len(), 1, "{} ran once", m.display());
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_poison_message_is_dead_lettered_after_max_deliveries() {
    let Some(redis) = RedisServer::start("poison", &[]) else {
        return;
    };
    // A supervisor: a worker again whenever the last one died.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sup = {
        let stop = stop.clone();
        let url = redis.url();
        std::thread::spawn(move || {
            let spawn = || {
                Command::new(BIN)
                    .args(["worker", "--redis", &url])
                    .env("SEEDCORE_REMOTE_SECRET", SECRET)
                    .args(["--processes", "1", "--visibility-timeout-ms", "1500"])
                    .process_group(0)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            };
            let mut w = spawn();
            let mut starts = 1;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                if let Ok(Some(_)) = w.try_wait() {
                    w = spawn();
                    starts += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: signals the process group this test started.
            unsafe {
                libc::kill(-(w.id() as i32), libc::SIGKILL);
            }
            let _ = w.wait();
            starts
        })
    };
    wait_workers(&redis, 1);
    let sys = client(&redis);
    let dir = temp_dir("poison-marks");
    let mark = dir.join("runs");
    let f = sys
        .submit_remote(TaskOptions::new(), KILL_WORKER, mark.display().to_string())
        .unwrap();
    let e = f.wait_timeout(LONG).expect("resolves").unwrap_err();
    match &e {
        TaskError::WorkerDied { detail, .. } => {
            assert!(detail.contains("delivered 3 times"), "{detail}");
            assert!(detail.contains("dead-letter"), "{detail}");
        }
        _ => panic!("not WorkerDied: {e:?}"),
    }
    assert_eq!(lines(&mark).len(), 3, "delivered (and run) 3 times");
    // The dead letter is listed, and can be put back.
    let list = Command::new(BIN)
        .args(["worker", "--redis", &redis.url(), "--list-dead"])
        .env("SEEDCORE_REMOTE_SECRET", SECRET)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&list.stdout);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("remote_kill_worker id="), "{out}");
    assert!(out.contains(" deliveries=3 "), "{out}");
    let requeue = Command::new(BIN)
        .args(["worker", "--redis", &redis.url(), "--requeue-dead", "all"])
        .env("SEEDCORE_REMOTE_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(requeue.status.success());
    assert!(String::from_utf8_lossy(&requeue.stdout).contains("requeued 1"));
    assert!(
        eventually(LONG, || lines(&mark).len() == 4),
        "a requeued dead letter runs again"
    );
    // Dead workers leave the workers hash.
    let mut c = redis.conn();
    assert!(eventually(LONG, || {
        let n: usize = redis::cmd("HLEN")
            .arg("{seedcore}:workers")
            .query(&mut c)
            .unwrap_or(0);
        n <= 2
    }));
    stop.store(true, std::sync::atomic::Ordering::Release);
    let starts = sup.join().unwrap();
    assert!(starts >= 4, "{starts}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_replayed_message_is_refused() {
    let Some(redis) = RedisServer::start("replay", &[]) else {
        return;
    };
    let sys = client(&redis);
    let dir = temp_dir("replay-marks");
    let mark = dir.join("runs");
    let f = sys
        .submit_remote(TaskOptions::new(), MARKED, (mark.display().to_string(), 1))
        .unwrap();
    // Captured while it waits in the stream.
    let mut c = redis.conn();
    assert!(eventually(LONG, || queued(&redis) == 1));
    let stream = "{seedcore}:q:5";
    type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;
    let v: Entries = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    let fields = v[0].1.clone();
    let field = |k: &str| fields.iter().find(|f| f.0 == k).unwrap().1.clone();
    let (m, sig) = (field("m"), field("s"));
    let w = Worker::start(&redis, 1, 4);
    f.wait_timeout(LONG).expect("resolves").unwrap();
    assert_eq!(lines(&mark).len(), 1);
    // Added again after it ran: refused, never run.
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("m")
        .arg(&m)
        .arg("s")
        .arg(&sig)
        .query(&mut c)
        .unwrap();
    // And moved to another priority level: its signature is bound to it.
    let _: String = redis::cmd("XADD")
        .arg("{seedcore}:q:0")
        .arg("*")
        .arg("m")
        .arg(&m)
        .arg("s")
        .arg(&sig)
        .query(&mut c)
        .unwrap();
    assert!(eventually(LONG, || queued(&redis) == 0));
    let dup: u64 = redis::cmd("GET")
        .arg("{seedcore}:duplicates")
        .query(&mut c)
        .unwrap();
    let refused: u64 = redis::cmd("GET")
        .arg("{seedcore}:refused")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        (dup, refused),
        (1, 1),
        "the replay dropped, the moved one refused"
    );
    // A later task still runs; the replayed one never did.
    let g = sys.submit_remote(TaskOptions::new(), ADD, (1, 1)).unwrap();
    assert_eq!(g.wait().unwrap(), 2);
    assert_eq!(lines(&mark).len(), 1, "the side effect happened once");
    drop(w);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn short_secrets_and_secrets_on_the_command_line_are_refused() {
    let Some(redis) = RedisServer::start("secret", &[]) else {
        return;
    };
    let e = seedcore::remote::serve(
        RemoteConfig::new(redis.url()).secret("short"),
        ServeOptions::default().processes(1),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(
        matches!(e, RemoteError::BadSetting(ref m) if m.contains("32 bytes")),
        "{e}"
    );
    let out = Command::new(BIN)
        .args(["worker", "--redis", &redis.url(), "--secret", SECRET])
        .output()
        .unwrap();
    assert!(!out.status.success(), "--secret is not a flag");
    // From a file, with the password hidden in what it prints.
    let dir = temp_dir("secret-file");
    let file = dir.join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let mut w = Command::new(BIN)
        .args(["worker", "--redis"])
        .arg(format!("redis://:hunter2@127.0.0.1:{}/", redis.port()))
        .arg("--secret-file")
        .arg(&file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let _ = w.kill();
    let out = w.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("hunter2"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn many_tasks_leave_redis_bounded() {
    let Some(redis) = RedisServer::start("bounded", &[]) else {
        return;
    };
    // 100,000 in a release build; fewer in a debug one, same assertions.
    let n: usize = if cfg!(debug_assertions) {
        20_000
    } else {
        100_000
    };
    let window = 2_000;
    let _a = Worker::start(&redis, 1, 256);
    let _b = Worker::start(&redis, 1, 256);
    wait_workers(&redis, 2);
    let sys = client(&redis);
    let mut c = redis.conn();
    let memory = |c: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("memory").query(c).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    // Warm up (streams, groups, scripts), then measure from there.
    for f in (0..100)
        .map(|i| sys.submit_remote(TaskOptions::new(), ADD, (i, 1)).unwrap())
        .collect::<Vec<_>>()
    {
        f.wait().unwrap();
    }
    let before = memory(&mut c);
    let t = std::time::Instant::now();
    let mut fs = std::collections::VecDeque::new();
    let mut sum = 0u64;
    for i in 0..n as u64 {
        fs.push_back(sys.submit_remote(TaskOptions::new(), ADD, (i, 1)).unwrap());
        if fs.len() >= window {
            sum += fs.pop_front().unwrap().wait().unwrap();
        }
    }
    for f in fs {
        sum += f.wait().unwrap();
    }
    let n64 = n as u64;
    assert_eq!(sum, n64 * (n64 + 1) / 2);
    eprintln!("{n} tasks in {:?}", t.elapsed());
    // What is left: the streams, the workers, the counters: no result, no
    // reply, no live set, no cancel key.
    let ok = eventually(Duration::from_secs(10), || {
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
        keys.len() <= 16
            && keys
                .iter()
                .all(|k| !k.contains(":r:") && !k.contains(":live:") && !k.contains(":reply:"))
    });
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert!(ok, "{} keys: {:?}", keys.len(), &keys[..keys.len().min(20)]);
    let after = memory(&mut c);
    eprintln!("used_memory before {before}, after {after}");
    assert!(
        after < before + (1 << 20),
        "memory grew from {before} to {after} bytes"
    );
}

const FLAKY: ProcessTask<(String, u32), u32> =
    ProcessTask::external("seedcore::worker::remote_flaky");

fn remote_config(redis: &RedisServer) -> RemoteConfig {
    RemoteConfig::new(redis.url()).secret(SECRET)
}

/// Run by [`results_and_retries_outlive_the_submitting_process`] in a
/// child process: submits two tasks by id and exits at once.
#[test]
#[ignore = "a child process of another test"]
fn detached_submitter() {
    let (Ok(url), Ok(dir)) = (
        std::env::var("SEEDCORE_TEST_REDIS"),
        std::env::var("SEEDCORE_TEST_DIR"),
    ) else {
        return;
    };
    let client = RemoteClient::connect(RemoteConfig::new(url).secret(SECRET)).unwrap();
    client
        .submit(
            &TaskOptions::new(),
            RemoteId::new("sum-of-two").unwrap(),
            ADD,
            &(40, 2),
        )
        .unwrap();
    // Fails twice, then succeeds: the worker retries, not this process.
    client
        .submit(
            &TaskOptions::new().retry(seedcore::RetryPolicy::retries(3)),
            RemoteId::new("flaky").unwrap(),
            FLAKY,
            &(format!("{dir}/flaky"), 2),
        )
        .unwrap();
}

#[test]
fn results_and_retries_outlive_the_submitting_process() {
    let Some(redis) = RedisServer::start("byid", &[]) else {
        return;
    };
    let dir = temp_dir("byid");
    // The submitter runs and exits before any worker is up.
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "remote::detached_submitter",
            "--ignored",
            "--quiet",
        ])
        .env("SEEDCORE_TEST_REDIS", redis.url())
        .env("SEEDCORE_TEST_DIR", &dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(queued(&redis), 2, "both tasks wait in Redis");
    let _w = Worker::start(&redis, 1, 4);
    let other = RemoteClient::connect(remote_config(&redis)).unwrap();
    let sum = other
        .result(&RemoteId::new("sum-of-two").unwrap(), ADD, LONG)
        .unwrap();
    assert_eq!(sum.map(|r| r.ok()), Some(Some(42)));
    let flaky = other
        .result(&RemoteId::new("flaky").unwrap(), FLAKY, LONG)
        .unwrap();
    assert_eq!(
        flaky.map(|r| r.ok()),
        Some(Some(3)),
        "two failed attempts, then the third"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("flaky"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    // Kept: read again; an unknown id is not there.
    assert_eq!(
        other
            .result(&RemoteId::new("sum-of-two").unwrap(), ADD, Duration::ZERO)
            .unwrap()
            .map(|r| r.ok()),
        Some(Some(42))
    );
    assert!(other
        .result(
            &RemoteId::new("never-sent").unwrap(),
            ADD,
            Duration::from_millis(50)
        )
        .unwrap()
        .is_none());
    // From a system, under its own id: kept once delivered too.
    let sys = client(&redis);
    let id = RemoteId::new("from-a-system").unwrap();
    let f = sys
        .submit_remote_as(TaskOptions::new(), id.clone(), ADD, (1, 2))
        .unwrap();
    assert_eq!(f.wait().unwrap(), 3);
    assert_eq!(
        other.result(&id, ADD, LONG).unwrap().map(|r| r.ok()),
        Some(Some(3))
    );
    // A generated id names the task too.
    let f = sys.submit_remote(TaskOptions::new(), SLEEP, 300).unwrap();
    let gen = sys.remote_id(f.id()).unwrap();
    assert!(!gen.as_str().is_empty());
    assert_eq!(f.wait().unwrap(), 300);
    assert!(RemoteId::new("bad id").is_err());
}

#[test]
fn retries_run_on_the_worker_once_each() {
    let Some(redis) = RedisServer::start("wretry", &[]) else {
        return;
    };
    let dir = temp_dir("wretry");
    let _w = Worker::start(&redis, 1, 4);
    wait_workers(&redis, 1);
    let sys = client(&redis);
    let ok = dir.join("ok");
    let f = sys
        .submit_remote(
            TaskOptions::new()
                .retry(seedcore::RetryPolicy::retries(2))
                .timeout(Duration::from_secs(20)),
            FLAKY,
            (ok.display().to_string(), 2),
        )
        .unwrap();
    assert_eq!(f.wait().unwrap(), 3);
    assert_eq!(std::fs::read_to_string(&ok).unwrap().lines().count(), 3);
    // Out of retries: the worker's last error, after exactly 1 + 1
    // attempts (the client does not retry what the worker retried).
    let bad = dir.join("bad");
    let e = sys
        .submit_remote(
            TaskOptions::new().retry(seedcore::RetryPolicy::retries(1)),
            FLAKY,
            (bad.display().to_string(), 5),
        )
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(e.to_string().contains("attempt 2 fails"), "{e}");
    assert_eq!(std::fs::read_to_string(&bad).unwrap().lines().count(), 2);
}

#[test]
fn a_task_is_cancelled_by_id_from_another_client() {
    let Some(redis) = RedisServer::start("cancelid", &[]) else {
        return;
    };
    let dir = temp_dir("cancelid");
    let _w = Worker::start(&redis, 1, 1);
    wait_workers(&redis, 1);
    let sys = client(&redis);
    let other = RemoteClient::connect(remote_config(&redis)).unwrap();
    let marks = dir.join("marks");
    let running_id = RemoteId::new("running").unwrap();
    let running = sys
        .submit_remote_as(
            TaskOptions::new(),
            running_id.clone(),
            MARKED,
            (marks.display().to_string(), 30_000),
        )
        .unwrap();
    assert!(eventually(LONG, || lines(&marks).len() == 1), "it started");
    // Behind it (one process, prefetch 1): still in the stream.
    let queued_id = RemoteId::new("queued").unwrap();
    let waiting = sys
        .submit_remote_as(
            TaskOptions::new(),
            queued_id.clone(),
            MARKED,
            (marks.display().to_string(), 0),
        )
        .unwrap();
    assert!(other.cancel(&queued_id).unwrap());
    assert!(other.cancel(&running_id).unwrap());
    assert!(matches!(
        running.wait_timeout(LONG).expect("stopped"),
        Err(TaskError::Cancelled)
    ));
    assert!(matches!(
        waiting.wait_timeout(LONG).expect("answered"),
        Err(TaskError::Cancelled)
    ));
    assert_eq!(lines(&marks).len(), 1, "the queued task never ran");
    assert!(matches!(
        other.result(&running_id, MARKED, Duration::ZERO).unwrap(),
        Some(Err(TaskError::Cancelled))
    ));
    // A finished task cannot be cancelled.
    let id = RemoteId::new("done").unwrap();
    sys.submit_remote_as(TaskOptions::new(), id.clone(), ADD, (1, 1))
        .unwrap()
        .wait()
        .unwrap();
    assert!(!other.cancel(&id).unwrap());
}

#[test]
fn a_graceful_stop_hands_back_what_it_has_not_started() {
    let Some(redis) = RedisServer::start("handback", &[]) else {
        return;
    };
    let dir = temp_dir("handback");
    let marks = dir.join("marks");
    // One process, eight held: one runs, seven wait in its pool. A long
    // visibility timeout: what it holds would otherwise wait a minute.
    let first = Command::new(BIN)
        .args(["worker", "--redis", &redis.url()])
        .env("SEEDCORE_REMOTE_SECRET", SECRET)
        .args(["--processes", "1", "--prefetch", "8"])
        .args(["--visibility-timeout-ms", "60000", "--grace-ms", "30000"])
        .process_group(0)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let first = Worker(first);
    wait_workers(&redis, 1);
    let sys = client(&redis);
    let fs: Vec<_> = (0..8)
        .map(|_| {
            sys.submit_remote(
                TaskOptions::new(),
                MARKED,
                (marks.display().to_string(), 1_000),
            )
            .unwrap()
        })
        .collect();
    assert!(eventually(LONG, || lines(&marks).len() == 1), "one started");
    assert!(eventually(LONG, || queued(&redis) == 8), "all held");
    // The process of the stopping worker, whichever task it took first.
    let stopping = lines(&marks)[0];
    // SIGTERM: the running task finishes, the rest go back at once.
    // SAFETY: a plain signal to the worker this test started.
    unsafe {
        libc::kill(first.pid() as i32, libc::SIGTERM);
    }
    let second = Worker::start(&redis, 2, 4);
    let t = std::time::Instant::now();
    let pids: Vec<u32> = fs
        .into_iter()
        .map(|f| f.wait_timeout(LONG).expect("resolves").unwrap())
        .collect();
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "not left for the visibility timeout: {:?}",
        t.elapsed()
    );
    assert_eq!(lines(&marks).len(), 8, "each ran once");
    assert_eq!(
        pids.iter().filter(|&&p| p == stopping).count(),
        1,
        "the stopping worker ({stopping}) ran only the one it had started: {pids:?}"
    );
    drop(second);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_remote_section_configures_the_client_and_the_worker() {
    let Some(redis) = RedisServer::start("section", &[]) else {
        return;
    };
    let dir = temp_dir("section");
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let toml = dir.join("seedcore.toml");
    std::fs::write(
        &toml,
        format!(
            "[remote]\nurl = \"{}\"\nsecret_file = \"{}\"\nnamespace = \"sect\"\n\
             visibility_timeout = \"2s\"\ngrace = \"5s\"\n",
            redis.url(),
            secret.display()
        ),
    )
    .unwrap();
    // The worker takes the file alone: no --redis, no secret in its
    // environment.
    let worker = Command::new(BIN)
        .args(["worker", "--config"])
        .arg(&toml)
        .args(["--processes", "1"])
        .env_remove("SEEDCORE_REMOTE_SECRET")
        .process_group(0)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _worker = Worker(worker);
    let cfg = seedcore::Config::load(&toml).unwrap();
    assert_eq!(cfg.remote.namespace, "sect");
    let sys = ConcurrentSystem::builder()
        .config(cfg)
        .build()
        .expect("the [remote] section attaches the remote executor");
    let f = sys
        .submit_remote(TaskOptions::new(), ADD, (20, 22))
        .unwrap();
    assert_eq!(f.wait_timeout(LONG).expect("runs").unwrap(), 42);
    // In its own namespace.
    let mut c = redis.conn();
    let n: usize = redis::cmd("HLEN")
        .arg("{sect}:workers")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    // A bad section is a typed error naming the key.
    std::fs::write(&toml, "[remote]\nurl = \"redis://127.0.0.1:1/\"\n").unwrap();
    let err = ConcurrentSystem::builder()
        .config(seedcore::Config::load(&toml).unwrap())
        .build()
        .unwrap_err();
    assert_eq!(err.field, "remote.url");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn remote_workers_show_in_the_monitor_and_prometheus_by_host_and_pid() {
    let Some(redis) = RedisServer::start("observe", &[]) else {
        return;
    };
    let w = Worker::start(&redis, 1, 4);
    wait_workers(&redis, 1);
    let sys = client(&redis);
    sys.submit_remote(TaskOptions::new(), ADD, (1, 1))
        .unwrap()
        .wait()
        .unwrap();
    assert!(eventually(LONG, || live_workers(&sys) == 1));
    let mon = sys.monitor();
    let remote: Vec<_> = mon
        .workers
        .iter()
        .filter(|r| r.executor.name() == "remote")
        .collect();
    assert_eq!(remote.len(), 1, "{:?}", mon.workers);
    let r = remote[0];
    assert_eq!(
        r.id,
        w.pid(),
        "the worker's own pid, not one of this machine's"
    );
    assert_eq!(r.state, "remote");
    let host = r.host.clone().expect("its host");
    assert!(!host.is_empty());
    assert!(r.name.starts_with(&host), "{}", r.name);
    let prom = sys.metrics_prometheus();
    assert!(
        prom.lines()
            .any(|l| l.starts_with("seedcore_executor_gauge")
                && l.contains("executor=\"remote\"")
                && l.contains("name=\"reclaimed\"")),
        "{prom}"
    );
    assert!(
        prom.lines()
            .any(|l| l.starts_with("seedcore_worker_cpu_percent")
                && l.contains(&format!("host=\"{host}\""))),
        "{prom}"
    );
}

#[test]
fn a_renamed_task_serves_its_old_name_through_an_alias() {
    let Some(redis) = RedisServer::start("alias", &[]) else {
        return;
    };
    let worker = Command::new(BIN)
        .args(["worker", "--redis", &redis.url(), "--processes", "1"])
        .args(["--alias", "billing::v1::add=seedcore::worker::remote_add"])
        .env("SEEDCORE_REMOTE_SECRET", SECRET)
        .process_group(0)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _w = Worker(worker);
    wait_workers(&redis, 1);
    let sys = client(&redis);
    const OLD: ProcessTask<(u64, u64), u64> = ProcessTask::external("billing::v1::add");
    let f = sys.submit_remote(TaskOptions::new(), OLD, (2, 3)).unwrap();
    assert_eq!(f.wait_timeout(LONG).expect("runs").unwrap(), 5);
    // An unknown name is still refused, by name.
    const NONE: ProcessTask<u8, u8> = ProcessTask::external("billing::v1::gone");
    let e = sys
        .submit_remote(TaskOptions::new(), NONE, 1)
        .unwrap()
        .wait_timeout(LONG)
        .expect("answered")
        .unwrap_err();
    assert!(e.to_string().contains("billing::v1::gone"), "{e}");
}
