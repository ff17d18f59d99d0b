//! `seedcore bench remote`: tiny tasks (`a + b`) through one Redis server,
//! seedcore's remote executor against Celery and Dramatiq. Every subject
//! has two worker processes, on the `redis-server` this suite starts on a
//! free loopback port (each on its own database); every batch checks its
//! sum and every round trip its result. Reported: the median over the
//! repetitions.
//!
//! | metric | unit | what is timed | subjects |
//! | --- | --- | --- | --- |
//! | `tasks_per_s` | 1/s | N tasks sent, then every result collected; N / time | `seedcore`, `celery`, `celery_group`, `dramatiq` |
//! | `round_trip_p50_us`, `round_trip_p99_us` | us | one task at a time, submit to result, M trips per repetition; nearest-rank percentiles of each repetition | `seedcore`, `celery`, `dramatiq` |
//!
//! | subject | how | in flight |
//! | --- | --- | --- |
//! | `seedcore` | `submit_remote` of an add task, then `wait` on each: the client sends every waiting message in one pipeline. Two `seedcore worker --processes 1 --prefetch 64` processes of this binary | 64 per worker process, 128 |
//! | `celery` | `add.delay(..)` for each task, then `.get()` on each (Redis broker and result backend); one worker node, `--concurrency 2` (prefork), Celery's default prefetch multiplier (4) | 4 per process, 8 |
//! | `celery_group` | throughput only: `group(N signatures).apply_async()`, then `join_native()`; the worker node restarted with `--prefetch-multiplier 64` | 64 per process, 128 |
//! | `dramatiq` | `add.send(..)` for each task, then `get_result(block=True)` on each: Redis broker, Results middleware with the Redis backend; `dramatiq --processes 2` with its default 8 threads each and `dramatiq_queue_prefetch=64` | 64 per process, 128 |
//!
//! Celery and Dramatiq send each task in its own Redis call (neither batches
//! sends across tasks); Dramatiq's Redis consumer polls an empty queue with
//! a growing back-off (from a few milliseconds up to 1 s), which sets its
//! round trips.
//!
//! The peers run from one virtual environment (`$SEEDCORE_REMOTE_PEERS_VENV`,
//! else `peers-venv-remote` beside the process suite's) with the script
//! `remote_peers.py`, embedded in this binary. A peer is used when it imports
//! there; a missing one is installed with pip (`celery[redis]>=5.3,<6`,
//! `dramatiq[redis]>=1.15,<2`) only when asked (`--install-peers` or
//! `SEEDCORE_BENCH_INSTALL_PEERS=1`; `SEEDCORE_BENCH_NO_PIP` forbids it),
//! and skipped with the reason otherwise.

use super::pyharness::{install_peers, probe, venv_dir, Harness};
use super::report::percentile;
use super::{note, Entry, Measurement, Scale};
use anyhow::{ensure, Context};
use seedcore::{ConcurrentSystem, ProcessTask, ShutdownMode, TaskOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SUITE: &str = "remote";
const RATE: &str = "tasks_per_s";
const P50: &str = "round_trip_p50_us";
const P99: &str = "round_trip_p99_us";
/// Metrics in report order, with their units.
const METRICS: [(&str, &str); 3] = [(RATE, "1/s"), (P50, "us"), (P99, "us")];
/// Every subject, in report order.
const SUBJECTS: [&str; 4] = ["seedcore", "celery", "celery_group", "dramatiq"];
/// The peers' script and the subjects it may report.
const HARNESS: Harness = Harness {
    suite: SUITE,
    metrics: &METRICS,
    subjects: &SUBJECTS,
};
const PY_SCRIPT: &str = include_str!("remote_peers.py");
const ADD: ProcessTask<(u64, u64), u64> = ProcessTask::external("seedcore::worker::remote_add");
/// Worker processes of every subject.
const WORKERS: usize = 2;
/// Tasks held per worker process where a subject is pipelined: seedcore's
/// `--prefetch`, `celery_group`'s prefetch multiplier, Dramatiq's queue
/// prefetch.
const PREFETCH: usize = 64;
/// Environment variable that allows installing the peers.
const INSTALL_ENV: &str = "SEEDCORE_BENCH_INSTALL_PEERS";
/// Where to put the peers' virtual environment, instead of the default.
const VENV_ENV: &str = "SEEDCORE_REMOTE_PEERS_VENV";

/// A Python peer: its module, the pip requirement that installs it, the
/// Redis database it uses and what it reports.
#[derive(Debug)]
struct Peer {
    name: &'static str,
    module: &'static str,
    spec: &'static str,
    db: u8,
    reports: &'static [(&'static str, &'static str)],
}

const PEERS: [Peer; 2] = [
    Peer {
        name: "celery",
        module: "celery",
        spec: "celery[redis]>=5.3,<6",
        db: 1,
        reports: &[
            (RATE, "celery"),
            (P50, "celery"),
            (P99, "celery"),
            (RATE, "celery_group"),
        ],
    },
    Peer {
        name: "dramatiq",
        module: "dramatiq",
        spec: "dramatiq[redis]>=1.15,<2",
        db: 2,
        reports: &[(RATE, "dramatiq"), (P50, "dramatiq"), (P99, "dramatiq")],
    },
];

/// Sizes of a run.
#[derive(Debug)]
struct Workload {
    /// Tasks per throughput repetition.
    n: usize,
    /// Repetitions of each measurement.
    reps: usize,
    /// Round trips per repetition.
    rtt: usize,
    /// Untimed round trips before the first repetition.
    warmup: usize,
}

fn workload(scale: Scale) -> Workload {
    if scale.quick {
        Workload {
            n: 300,
            reps: 1,
            rtt: 30,
            warmup: 10,
        }
    } else {
        Workload {
            n: 5_000,
            reps: 3,
            rtt: 300,
            warmup: 100,
        }
    }
}

/// Runs the suite: entries and notes.
pub(crate) fn run(scale: Scale) -> anyhow::Result<(Vec<Entry>, Vec<String>)> {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let redis = match RedisServer::start() {
        Ok(r) => r,
        Err(why) => {
            for (metric, subject) in every_pair() {
                out.push(HARNESS.skipped(metric, subject, why.clone()));
            }
            return Ok((out, notes));
        }
    };
    notes.push(format!("remote: redis-server on 127.0.0.1:{}", redis.port));
    let w = workload(scale);
    note(&format!(
        "remote: seedcore: N={}, {} reps, {} round trips per rep",
        w.n, w.reps, w.rtt
    ));
    match seedcore_side(&redis, &w) {
        Ok(ms) => out.extend(ms.into_iter().map(Entry::Measured)),
        Err(e) => {
            for (metric, _) in METRICS {
                out.push(HARNESS.skipped(metric, "seedcore", format!("{e:#}")));
            }
        }
    }
    let env = PeersEnv::prepare(scale.install_peers);
    notes.extend(env.notes.iter().cloned());
    for (peer, found) in PEERS.iter().zip(&env.peers) {
        let python = match found {
            Ok(_) => &env.python,
            Err(why) => {
                for &(metric, subject) in peer.reports {
                    out.push(HARNESS.skipped(metric, subject, why.clone()));
                }
                continue;
            }
        };
        note(&format!("remote: {}", peer.name));
        let args: Vec<String> = vec![
            peer.name.to_string(),
            format!("redis://127.0.0.1:{}/{}", redis.port, peer.db),
            "--workers".into(),
            WORKERS.to_string(),
            "--n".into(),
            w.n.to_string(),
            "--reps".into(),
            w.reps.to_string(),
            "--rtt".into(),
            w.rtt.to_string(),
            "--warmup".into(),
            w.warmup.to_string(),
            "--prefetch".into(),
            PREFETCH.to_string(),
        ];
        let limit = Duration::from_secs(if scale.quick { 300 } else { 900 });
        out.extend(HARNESS.run_script(
            python,
            ("remote-peers", PY_SCRIPT),
            &args,
            peer.reports,
            limit,
        ));
    }
    Entry::sort_in(&mut out, &METRICS, &SUBJECTS);
    notes.push(format!(
        "remote: {WORKERS} worker processes per subject; in flight: seedcore, celery_group and dramatiq {PREFETCH} per worker process, celery 4 (Celery's default)"
    ));
    if scale.quick {
        notes.push(format!(
            "remote: --quick: N={}, {} round trips, {} rep: a smoke run, not a measurement",
            w.n, w.rtt, w.reps
        ));
    }
    Ok((out, notes))
}

/// Every metric and subject the suite reports.
fn every_pair() -> impl Iterator<Item = (&'static str, &'static str)> {
    METRICS
        .iter()
        .map(|&(metric, _)| (metric, "seedcore"))
        .chain(PEERS.iter().flat_map(|p| p.reports.iter().copied()))
}

fn measurement(metric: &'static str, subject: &'static str, samples: Vec<f64>) -> Measurement {
    let unit = METRICS
        .iter()
        .find(|(m, _)| *m == metric)
        .map_or("", |(_, u)| *u);
    Measurement::of(SUITE, metric, subject, unit, samples)
}

/// The suite's own `redis-server`, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    fn start() -> Result<RedisServer, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let dir = std::env::temp_dir().join(format!("seedcore-bench-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("redis-server is not installed ({e}); apt-get install redis-server")
            })?;
        let r = RedisServer { child, port, dir };
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let mut buf = [0u8; 8];
                if s.write_all(b"PING\r\n").is_ok()
                    && matches!(s.read(&mut buf), Ok(n) if n > 0 && buf[0] == b'+')
                {
                    return Ok(r);
                }
            }
            if Instant::now() > until {
                return Err("redis-server did not answer PING".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn seedcore_side(redis: &RedisServer, w: &Workload) -> anyhow::Result<Vec<Measurement>> {
    let exe = std::env::current_exe().context("this executable")?;
    let secret = format!("bench-{:016x}{:016x}", fastrand_u64(), fastrand_u64());
    let namespace = format!("bench{}", std::process::id());
    let _workers: Vec<Proc> = (0..WORKERS)
        .map(|_| {
            Command::new(&exe)
                .args(["worker", "--redis", &redis.url()])
                .env("SEEDCORE_REMOTE_SECRET", &secret)
                .args(["--namespace", &namespace, "--processes", "1"])
                .args(["--prefetch", &PREFETCH.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map(Proc)
        })
        .collect::<Result<_, _>>()
        .context("starting seedcore workers")?;
    let cfg = seedcore::remote::RemoteConfig::new(redis.url())
        .secret(&secret)
        .namespace(&namespace);
    let sys = ConcurrentSystem::builder().remote_config(cfg).build()?;
    let opts = TaskOptions::new();
    // Warm up: both workers up and their pools started.
    for _ in 0..200 {
        sys.submit_remote(opts.clone(), ADD, (1, 1))?.wait()?;
    }
    let mut rates = Vec::new();
    for _ in 0..w.reps {
        let t = Instant::now();
        let fs = (0..w.n as u64)
            .map(|i| sys.submit_remote(opts.clone(), ADD, (i, i)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut s = 0;
        for f in fs {
            s += f.wait()?;
        }
        let el = t.elapsed().as_secs_f64();
        ensure!(s == (w.n as u64) * (w.n as u64 - 1), "wrong sum {s}");
        rates.push(w.n as f64 / el);
    }
    for i in 0..w.warmup as u64 {
        ensure!(sys.submit_remote(opts.clone(), ADD, (i, 1))?.wait()? == i + 1);
    }
    let (mut p50, mut p99) = (Vec::new(), Vec::new());
    let mut us = Vec::with_capacity(w.rtt);
    for _ in 0..w.reps {
        us.clear();
        for i in 0..w.rtt as u64 {
            let t = Instant::now();
            let r = sys.submit_remote(opts.clone(), ADD, (i, 1))?.wait()?;
            us.push(t.elapsed().as_secs_f64() * 1e6);
            ensure!(r == i + 1, "wrong result {r} for {i} + 1");
        }
        us.sort_by(f64::total_cmp);
        p50.push(percentile(&us, 50.0));
        p99.push(percentile(&us, 99.0));
    }
    sys.shutdown(ShutdownMode::Graceful);
    Ok(vec![
        measurement(RATE, "seedcore", rates),
        measurement(P50, "seedcore", p50),
        measurement(P99, "seedcore", p99),
    ])
}

fn fastrand_u64() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

/// The peers' virtual environment: which peers import there (with their
/// versions) and why the others cannot run.
#[derive(Debug)]
struct PeersEnv {
    python: PathBuf,
    /// Per peer of [`PEERS`], in order: its version, or why it cannot run.
    peers: Vec<Result<String, String>>,
    notes: Vec<String>,
}

impl PeersEnv {
    /// Looks the peers up, installing the missing ones when `install` (or
    /// the environment) asks for it.
    fn prepare(install: bool) -> PeersEnv {
        let venv = std::env::var_os(VENV_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| venv_dir().with_file_name("peers-venv-remote"));
        let python = venv.join("bin").join("python");
        let version = |p: &Peer| {
            probe(
                &python,
                &format!("import {m}, redis; print({m}.__version__)", m = p.module),
            )
        };
        let asked = install || std::env::var_os(INSTALL_ENV).is_some_and(|v| v != "0");
        let missing: Vec<&str> = PEERS
            .iter()
            .filter(|p| version(p).is_err())
            .map(|p| p.spec)
            .collect();
        let mut install_error = None;
        if asked && !missing.is_empty() {
            let made = install_peers("remote", Path::new("python3"), Some(&venv), &missing);
            if let Err(e) = made {
                install_error = Some(e.to_string());
            }
        }
        let peers: Vec<Result<String, String>> = PEERS
            .iter()
            .map(|p| {
                version(p).map_err(|e| match (&install_error, asked) {
                    (Some(why), _) => format!("{} is not installed ({why})", p.name),
                    (None, true) => format!("{} does not import after installing it: {e}", p.name),
                    (None, false) => format!(
                        "{} is not installed in {} (run with --install-peers or {INSTALL_ENV}=1 to install {} there)",
                        p.name,
                        venv.display(),
                        p.spec
                    ),
                })
            })
            .collect();
        let found: Vec<String> = PEERS
            .iter()
            .zip(&peers)
            .filter_map(|(p, v)| Some(format!("{} {}", p.name, v.as_ref().ok()?)))
            .collect();
        let notes = if found.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "remote: {} from {}",
                found.join(", "),
                venv.display()
            )]
        };
        PeersEnv {
            python,
            peers,
            notes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_and_subject_once() {
        let pairs: Vec<_> = every_pair().collect();
        assert_eq!(pairs.len(), 10);
        for (i, p) in pairs.iter().enumerate() {
            assert!(!pairs[..i].contains(p), "{p:?} twice");
            assert!(SUBJECTS.contains(&p.1) && METRICS.iter().any(|m| m.0 == p.0));
        }
    }

    #[test]
    fn reads_the_peers_lines() {
        let e = HARNESS.parse_line(
            r#"{"metric": "tasks_per_s", "subject": "celery_group", "samples": [3.0, 1.0, 2.0]}"#,
        );
        assert!(
            matches!(e, Some(Entry::Measured(ref m)) if m.value == 2.0 && m.unit == "1/s" && m.suite == "remote")
        );
        let e = HARNESS.parse_line(
            r#"{"metric": "round_trip_p99_us", "subject": "dramatiq", "skipped": "why"}"#,
        );
        assert!(matches!(e, Some(Entry::Skipped(ref s)) if s.unit == "us" && s.reason == "why"));
    }
}
