//! `seedcore bench remote`: tiny tasks through a Redis server, seedcore's
//! remote executor with 2 worker processes against Celery with 2 worker
//! processes, on one `redis-server` this suite starts on a free loopback
//! port.
//!
//! | subject | what is timed |
//! | --- | --- |
//! | `seedcore` | `tasks_per_s`: N `submit_remote` of an add task, then `wait` on each; `round_trip_p50_us`: one task at a time, submit to result. Two `seedcore worker` processes of this binary, one pool process each |
//! | `celery` | the same with `add.delay(..)` and `.get()` (Redis broker and result backend), one worker node with `--concurrency 2` (prefork) |
//!
//! Celery runs from a virtual environment (`$SEEDCORE_CELERY_VENV`, else
//! `peers-venv-celery` beside the process suite's): used when it has
//! Celery, made and given `celery[redis]` by pip only when asked
//! (`--install-peers` or `SEEDCORE_BENCH_INSTALL_PEERS=1`), skipped with
//! the reason otherwise.

use super::pyharness::{probe, venv_dir};
use super::report::median;
use super::{note, Entry, Measurement, Scale};
use anyhow::{ensure, Context};
use seedcore::{ConcurrentSystem, ProcessTask, ShutdownMode, TaskOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SUITE: &str = "remote";
const RATE: &str = "tasks_per_s";
const RTT: &str = "round_trip_p50_us";
const CELERY: &str = "celery[redis]>=5.3,<6";
const PY_SCRIPT: &str = include_str!("celery_peer.py");
const ADD: ProcessTask<(u64, u64), u64> = ProcessTask::external("seedcore::worker::remote_add");

/// Environment variable that allows installing Celery.
const INSTALL_ENV: &str = "SEEDCORE_BENCH_INSTALL_PEERS";

struct Workload {
    n: usize,
    reps: usize,
    rtt: usize,
}

fn workload(scale: Scale) -> Workload {
    if scale.quick {
        Workload {
            n: 300,
            reps: 1,
            rtt: 30,
        }
    } else {
        Workload {
            n: 5_000,
            reps: 3,
            rtt: 300,
        }
    }
}

/// Runs the suite: entries and notes.
pub(crate) fn run(scale: Scale, install: bool) -> anyhow::Result<(Vec<Entry>, Vec<String>)> {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let redis = match RedisServer::start() {
        Ok(r) => r,
        Err(why) => {
            for subject in ["seedcore", "celery"] {
                for (metric, unit) in [(RATE, "1/s"), (RTT, "us")] {
                    out.push(skipped(metric, subject, unit, why.clone()));
                }
            }
            return Ok((out, notes));
        }
    };
    notes.push(format!("remote: redis-server on 127.0.0.1:{}", redis.port));
    let w = workload(scale);
    match seedcore_side(&redis, &w) {
        Ok(ms) => out.extend(ms.into_iter().map(Entry::Measured)),
        Err(e) => {
            for (metric, unit) in [(RATE, "1/s"), (RTT, "us")] {
                out.push(skipped(metric, "seedcore", unit, format!("{e:#}")));
            }
        }
    }
    match celery_python(install) {
        Ok((python, version)) => {
            notes.push(format!(
                "remote: Celery {version} from {}",
                python.display()
            ));
            match celery_side(&python, &redis, &w) {
                Ok(ms) => out.extend(ms.into_iter().map(Entry::Measured)),
                Err(e) => {
                    for (metric, unit) in [(RATE, "1/s"), (RTT, "us")] {
                        out.push(skipped(metric, "celery", unit, format!("{e:#}")));
                    }
                }
            }
        }
        Err(why) => {
            for (metric, unit) in [(RATE, "1/s"), (RTT, "us")] {
                out.push(skipped(metric, "celery", unit, why.clone()));
            }
        }
    }
    Ok((out, notes))
}

fn skipped(
    metric: &'static str,
    subject: &'static str,
    unit: &'static str,
    reason: String,
) -> Entry {
    Entry::skipped(SUITE, metric, subject, unit, reason)
}

fn measurement(
    metric: &'static str,
    subject: &'static str,
    unit: &'static str,
    samples: Vec<f64>,
) -> Measurement {
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
    let _workers: Vec<Proc> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args(["worker", "--redis", &redis.url()])
                .env("SEEDCORE_REMOTE_SECRET", &secret)
                .args(["--namespace", &namespace, "--processes", "1"])
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
    let mut lat = Vec::with_capacity(w.rtt);
    for i in 0..w.rtt as u64 {
        let t = Instant::now();
        let r = sys.submit_remote(opts.clone(), ADD, (i, 1))?.wait()?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        ensure!(r == i + 1, "wrong result");
    }
    sys.shutdown(ShutdownMode::Graceful);
    Ok(vec![
        measurement(RATE, "seedcore", "1/s", rates),
        measurement(RTT, "seedcore", "us", vec![median(&lat)]),
    ])
}

fn fastrand_u64() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

fn celery_venv() -> PathBuf {
    if let Some(p) = std::env::var_os("SEEDCORE_CELERY_VENV") {
        return PathBuf::from(p);
    }
    venv_dir().with_file_name("peers-venv-celery")
}

/// An interpreter with Celery and its version, or why there is none.
fn celery_python(install: bool) -> Result<(PathBuf, String), String> {
    let venv = celery_venv();
    let python = venv.join("bin").join("python");
    let check = "import celery, redis; print(celery.__version__)";
    if let Ok(v) = probe(&python, check) {
        return Ok((python, v));
    }
    let asked = install || std::env::var_os(INSTALL_ENV).is_some_and(|v| v != "0");
    if !asked {
        return Err(format!(
            "Celery is not installed in {} (run with --install-peers or {INSTALL_ENV}=1 to install {CELERY} there)",
            venv.display()
        ));
    }
    note(&format!(
        "installing {CELERY} into {} with pip",
        venv.display()
    ));
    install_celery(&venv)?;
    probe(&python, check)
        .map(|v| (python, v))
        .map_err(|e| format!("Celery was installed but does not import: {e}"))
}

fn install_celery(venv: &Path) -> Result<(), String> {
    let ok = |mut c: Command, what: &str| -> Result<(), String> {
        let out = c
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ))
        }
    };
    if !venv.join("bin").join("python").exists() {
        let mut c = Command::new("python3");
        c.args(["-m", "venv"]).arg(venv);
        ok(c, "python3 -m venv")?;
    }
    let mut c = Command::new(venv.join("bin").join("pip"));
    c.args(["install", "--quiet", CELERY]);
    ok(c, "pip install")
}

fn celery_side(
    python: &Path,
    redis: &RedisServer,
    w: &Workload,
) -> anyhow::Result<Vec<Measurement>> {
    let script =
        std::env::temp_dir().join(format!("seedcore-bench-celery-{}.py", std::process::id()));
    std::fs::write(&script, PY_SCRIPT)?;
    // Celery on another database of the same server.
    let url = format!("redis://127.0.0.1:{}/1", redis.port);
    let out = Command::new(python)
        .arg(&script)
        .arg(&url)
        .args(["--workers", "2", "--n", &w.n.to_string()])
        .args(["--reps", &w.reps.to_string(), "--rtt", &w.rtt.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    let _ = std::fs::remove_file(&script);
    let out = out.context("running the Celery peer")?;
    ensure!(
        out.status.success(),
        "the Celery peer failed ({})",
        out.status
    );
    let mut ms = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let samples: Vec<f64> = v["samples"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default();
        if samples.is_empty() {
            continue;
        }
        match v["metric"].as_str() {
            Some(RATE) => ms.push(measurement(RATE, "celery", "1/s", samples)),
            Some(RTT) => ms.push(measurement(RTT, "celery", "us", samples)),
            _ => {}
        }
    }
    ensure!(
        ms.len() == 2,
        "the Celery peer reported {} of 2 metrics",
        ms.len()
    );
    Ok(ms)
}
