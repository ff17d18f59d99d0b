//! Suite `process`: the seedcore process pool against Python's process pools,
//! with the workloads and method of `shared/peers` (workloads 1-3 of
//! `shared/peers/RESULTS.md`), so the figures are comparable with it.
//!
//! Every pool has as many worker processes as there are cores (seedcore:
//! `processes.core = processes.max = cores`, `processes.prefetch = 16`; Python:
//! start method `fork`). Each pool is built and warmed up before the clock
//! starts and every repetition checks its result. Reported: the median over
//! the repetitions. The metrics are measured one after the other, each for
//! every subject in the same order, all in this one run.
//!
//! | metric | unit | what is timed |
//! | --- | --- | --- |
//! | `tiny_task_ns` | ns | N tiny tasks (`i & 7`) submitted, then every result awaited and summed (the sum checked); per task |
//! | `round_trip_p50_us`, `round_trip_p99_us` | us | one task submitted and awaited, 5,000 times in sequence after 500 warm-up trips; nearest-rank percentiles of each repetition |
//! | `payload_64mib_gbps` | GB/s | 64 MiB sent to a task that returns them; counts both directions (2 × 64 MiB / s, 1 GB = 10⁹ bytes) |
//!
//! | subject | how |
//! | --- | --- |
//! | `seedcore` | `submit_process` of a registered task, `TaskFuture::wait`. Payload: the 64 MiB start in a `SharedBytes` made before the clock (as the peers' `bytes` object is); the clock covers the echo task's round trip and reading one byte of every 4 KiB page of the result |
//! | `seedcore_from_vec` | payload only: as `seedcore`, but the bytes start in a `Vec<u8>` and the clock also covers copying them into shared memory (`SharedBytes::from_slice`) |
//! | `python_ppe` | `concurrent.futures.ProcessPoolExecutor`: `submit`, `result()` |
//! | `mp_pool_apply_async` | `multiprocessing.Pool`: `apply_async`, `get()` |
//! | `mp_pool_map_chunk1` | `multiprocessing.Pool.map(chunksize=1)` (one list per round trip or payload) |
//! | `pebble` | `pebble.ProcessPool`: `schedule`, `result()` |
//! | `pipe_floor` | round trips only: a raw 8-byte ping-pong through pipes with a child process (this binary re-executed); a reference floor, not a pool |
//! | `memcpy` | payload only: one copy of the payload into an already-touched buffer, counting the payload once |
//!
//! The Python peers run in `python3` from `PATH`, from the script
//! `python_peers.py` embedded in this binary and written to a temporary file.
//! pebble is used from the system Python, or from the virtual environment
//! under the cargo target folder (`target/peers-venv`, or
//! `$SEEDCORE_PEERS_VENV`). Nothing is installed unless asked: with
//! `seedcore bench --install-peers` a missing pebble is installed with pip
//! into that environment (`SEEDCORE_BENCH_NO_PIP` forbids even that).
//! A peer that cannot run is reported as skipped, with the reason and how
//! to install it.

use super::tiny::{expected, task};
use super::{note, Entry, Measurement, Scale};
use anyhow::{ensure, Context};
use seedcore::{ConcurrentSystem, SharedBytes, ShutdownMode, TaskOptions};
use std::hint::black_box;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

seedcore::process_task! {
    /// The tiny task, in a worker process: `i & 7`.
    fn tiny_task(i: u64) -> u64 { task(i) }
}

seedcore::process_task! {
    /// The payload task, in a worker process: returns its bytes.
    fn echo_bytes(b: SharedBytes) -> SharedBytes { b }
}

/// The suite's name in reports.
const SUITE: &str = "process";
/// Per-task time of the tiny-task workload.
const TINY: &str = "tiny_task_ns";
/// Median round trip.
const P50: &str = "round_trip_p50_us";
/// 99th percentile round trip.
const P99: &str = "round_trip_p99_us";
/// Payload throughput.
const PAYLOAD: &str = "payload_64mib_gbps";
/// Metrics in report order, with their units.
const METRICS: [(&str, &str); 4] = [(TINY, "ns"), (P50, "us"), (P99, "us"), (PAYLOAD, "GB/s")];
/// The Python peers, in the order they run and are reported.
const PY_PEERS: [&str; 4] = [
    "python_ppe",
    "mp_pool_apply_async",
    "mp_pool_map_chunk1",
    "pebble",
];
/// Every subject in report order.
const SUBJECTS: [&str; 7] = [
    "seedcore",
    "pipe_floor",
    "memcpy",
    "python_ppe",
    "mp_pool_apply_async",
    "mp_pool_map_chunk1",
    "pebble",
];
/// The pebble release installed when it is missing (the one of `shared/peers`).
const PEBBLE: &str = "pebble==5.2.3";
/// The Python side of the suite.
const PY_SCRIPT: &str = include_str!("python_peers.py");
/// Environment variable that turns this binary into the pipe-echo child.
const PIPE_ECHO_ENV: &str = "SEEDCORE_BENCH_PIPE_ECHO_CHILD";
/// Set (to anything) to forbid installing pebble with pip.
const NO_PIP_ENV: &str = "SEEDCORE_BENCH_NO_PIP";
/// Where to put the virtual environment for pebble, instead of the default.
const VENV_ENV: &str = "SEEDCORE_PEERS_VENV";

/// Workload sizes and repetitions of a run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Tasks per tiny-task repetition.
    tiny_n: usize,
    /// Measured tiny-task repetitions.
    tiny_reps: usize,
    /// Round trips per repetition.
    trips: usize,
    /// Untimed round trips before the first repetition.
    trip_warmup: usize,
    /// Measured round-trip repetitions.
    trip_reps: usize,
    /// Payload bytes.
    payload: usize,
    /// Measured payload repetitions.
    payload_reps: usize,
    /// Measured memcpy repetitions.
    memcpy_reps: usize,
}

impl Sizes {
    fn of(scale: Scale) -> Sizes {
        if scale.quick {
            Sizes {
                tiny_n: 2_000,
                tiny_reps: 2,
                trips: 500,
                trip_warmup: 100,
                trip_reps: 2,
                payload: 8 << 20,
                payload_reps: 2,
                memcpy_reps: 3,
            }
        } else {
            Sizes {
                tiny_n: 20_000,
                tiny_reps: 5,
                trips: 5_000,
                trip_warmup: 500,
                trip_reps: 5,
                payload: 64 << 20,
                payload_reps: 5,
                memcpy_reps: 11,
            }
        }
    }
}

/// Runs the suite: every metric for every subject, then the report lines in
/// order (metric, then subject) and the notes for the table.
pub(crate) fn run(scale: Scale) -> anyhow::Result<(Vec<Entry>, Vec<String>)> {
    let sz = Sizes::of(scale);
    let w = scale.workers;
    let py = PythonEnv::prepare(scale.install_peers);
    let mut entries = Vec::new();

    note(&format!("{TINY}: N={}, {w} workers", sz.tiny_n));
    entries.push(Entry::Measured(seedcore_tiny(scale, sz)?));
    entries.extend(py.run("tiny", scale, sz.tiny_n, sz.tiny_reps, 0));

    note(&format!(
        "round trips: {} sequential after {} warm-up, {w} workers",
        sz.trips, sz.trip_warmup
    ));
    entries.extend(pipe_floor(sz)?.map(Entry::Measured));
    entries.extend(seedcore_round_trips(scale, sz)?.map(Entry::Measured));
    entries.extend(py.run("latency", scale, sz.trips, sz.trip_reps, sz.trip_warmup));

    note(&format!("payload: {} MiB echo", sz.payload >> 20));
    let data = payload_bytes(sz.payload);
    entries.push(Entry::Measured(memcpy(&data, sz)));
    entries.extend(
        seedcore_payload(scale, sz, &data)?
            .into_iter()
            .map(Entry::Measured),
    );
    drop(data);
    entries.extend(py.run("payload", scale, sz.payload, sz.payload_reps, 0));

    entries.sort_by_key(|e| {
        let (metric, subject) = match e {
            Entry::Measured(m) => (m.metric, m.subject),
            Entry::Skipped(s) => (s.metric, s.subject),
        };
        (
            METRICS.iter().position(|(m, _)| *m == metric),
            SUBJECTS.iter().position(|s| *s == subject),
        )
    });

    let mut notes = vec![format!(
        "process: {w} worker processes per pool (= cores); seedcore processes.prefetch 16; Python start method fork"
    )];
    notes.extend(py.notes.iter().cloned());
    if scale.quick {
        notes.push(format!(
            "process: --quick: tiny N={}, {} round trips, payload {} MiB (the metric keeps the name payload_64mib_gbps), {} reps: a smoke run, not a measurement",
            sz.tiny_n,
            sz.trips,
            sz.payload >> 20,
            sz.tiny_reps
        ));
    }
    notes.push(
        "process: payload_64mib_gbps counts both directions (2 x payload / s, 1 GB = 10^9 B); memcpy counts one copy into a warm buffer (payload / s)".to_string(),
    );
    notes.push(
        "process: seedcore's payload crosses as a memfd (no copy through the socket): `seedcore` starts from a SharedBytes made before the clock, `seedcore_from_vec` from a Vec copied into shared memory on the clock; both clocks cover the round trip and reading one byte per 4 KiB page of the result".to_string(),
    );
    notes.push(
        "process: pipe_floor = raw 8-byte ping-pong through pipes to a child process: the cost of a blocking wake-up, not a pool".to_string(),
    );
    Ok((entries, notes))
}

/// A seedcore system with `cores` worker processes.
fn system(scale: Scale) -> anyhow::Result<ConcurrentSystem> {
    ConcurrentSystem::builder()
        .core_processes(scale.workers)
        .max_processes(scale.workers)
        .process_prefetch(16)
        .build()
        .context("building the seedcore system")
}

/// A measurement of this suite.
fn measurement(metric: &'static str, subject: &'static str, samples: Vec<f64>) -> Measurement {
    let unit = METRICS
        .iter()
        .find(|(m, _)| *m == metric)
        .map_or("", |(_, u)| *u);
    Measurement::of(SUITE, metric, subject, unit, samples)
}

/// Tiny-task throughput of `submit_process` + `TaskFuture::wait`.
fn seedcore_tiny(scale: Scale, sz: Sizes) -> anyhow::Result<Measurement> {
    let sys = system(scale)?;
    let n = sz.tiny_n;
    let want = expected(n);
    let rep = || -> anyhow::Result<(Duration, u64)> {
        let t = Instant::now();
        let mut fs = Vec::with_capacity(n);
        for i in 0..n as u64 {
            fs.push(sys.submit_process(TaskOptions::new(), tiny_task, i)?);
        }
        let mut s = 0u64;
        for f in fs {
            s += f.wait()?;
        }
        Ok((t.elapsed(), s))
    };
    note(&format!(
        "{TINY}: seedcore: 1 warm-up + {} reps",
        sz.tiny_reps
    ));
    let (_, s) = rep()?;
    ensure!(s == want, "seedcore: wrong sum in warm-up: {s} != {want}");
    let mut samples = Vec::with_capacity(sz.tiny_reps);
    for _ in 0..sz.tiny_reps {
        let (t, s) = rep()?;
        ensure!(s == want, "seedcore: wrong sum: {s} != {want}");
        samples.push(t.as_secs_f64() * 1e9 / n as f64);
    }
    sys.shutdown(ShutdownMode::Graceful);
    Ok(measurement(TINY, "seedcore", samples))
}

/// Nearest-rank percentile of sorted values (the rule of `shared/peers`).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = (p / 100.0 * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Round trips of `one` (which returns `task(i)` for `i`): warm-up, then
/// per repetition the p50 and p99 of its trips, in µs.
fn round_trips(
    subject: &'static str,
    sz: Sizes,
    mut one: impl FnMut(u64) -> anyhow::Result<u64>,
) -> anyhow::Result<[Measurement; 2]> {
    note(&format!(
        "round trips: {subject}: {} warm-up + {} reps",
        sz.trip_warmup, sz.trip_reps
    ));
    for i in 0..sz.trip_warmup as u64 {
        let v = one(i)?;
        ensure!(v == task(i), "{subject}: wrong result {v} for {i}");
    }
    let (mut p50, mut p99) = (Vec::new(), Vec::new());
    let mut us = Vec::with_capacity(sz.trips);
    for _ in 0..sz.trip_reps {
        us.clear();
        for i in 0..sz.trips as u64 {
            let t = Instant::now();
            let v = one(i)?;
            us.push(t.elapsed().as_secs_f64() * 1e6);
            ensure!(v == task(i), "{subject}: wrong result {v} for {i}");
        }
        us.sort_by(f64::total_cmp);
        p50.push(percentile(&us, 50.0));
        p99.push(percentile(&us, 99.0));
    }
    Ok([
        measurement(P50, subject, p50),
        measurement(P99, subject, p99),
    ])
}

/// Sequential `submit_process` + `wait` round trips.
fn seedcore_round_trips(scale: Scale, sz: Sizes) -> anyhow::Result<[Measurement; 2]> {
    let sys = system(scale)?;
    let m = round_trips("seedcore", sz, |i| {
        Ok(sys
            .submit_process(TaskOptions::new(), tiny_task, i)?
            .wait()?)
    })?;
    sys.shutdown(ShutdownMode::Graceful);
    Ok(m)
}

/// The floor: 8-byte frames echoed by a child process over its stdin and
/// stdout pipes (this binary re-executed, see [`pipe_echo_child`]).
fn pipe_floor(sz: Sizes) -> anyhow::Result<[Measurement; 2]> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut child = Command::new(exe)
        .env(PIPE_ECHO_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the pipe-echo child")?;
    let mut tx = child.stdin.take().context("child stdin")?;
    let mut rx = child.stdout.take().context("child stdout")?;
    let m = round_trips("pipe_floor", sz, |i| {
        tx.write_all(&i.to_le_bytes())?;
        let mut b = [0u8; 8];
        rx.read_exact(&mut b)?;
        Ok(task(u64::from_le_bytes(b)))
    });
    drop(tx);
    let status = child.wait();
    let m = m?;
    ensure!(
        status.as_ref().is_ok_and(ExitStatus::success),
        "the pipe-echo child failed: {status:?}"
    );
    Ok(m)
}

/// The child side of `pipe_floor`, when this process was started as one:
/// echoes 8-byte frames from stdin to stdout until stdin closes.
pub(crate) fn pipe_echo_child() -> Option<ExitCode> {
    std::env::var_os(PIPE_ECHO_ENV)?;
    let mut i = std::io::stdin().lock();
    let mut o = std::io::stdout().lock();
    let mut b = [0u8; 8];
    while i.read_exact(&mut b).is_ok() {
        if o.write_all(&b).and_then(|()| o.flush()).is_err() {
            return Some(ExitCode::FAILURE);
        }
    }
    Some(ExitCode::SUCCESS)
}

/// `len` bytes of a non-constant pattern, every page touched.
fn payload_bytes(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes()[7])
        .collect()
}

/// Sum of one byte of every 4 KiB page: reads every page of a mapping.
fn page_sample_sum(b: &[u8]) -> u64 {
    b.iter().step_by(4096).map(|&x| u64::from(x)).sum()
}

/// One copy of the payload into an already-touched buffer.
fn memcpy(data: &[u8], sz: Sizes) -> Measurement {
    note(&format!(
        "payload: memcpy: 1 warm-up + {} reps",
        sz.memcpy_reps
    ));
    let mut dst = vec![0u8; data.len()];
    dst.copy_from_slice(data); // warm-up: every page of dst touched
    let samples = (0..sz.memcpy_reps)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(black_box(data));
            black_box(&mut dst);
            data.len() as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    measurement(PAYLOAD, "memcpy", samples)
}

/// The payload echoed by a seedcore worker: from a `SharedBytes` (subject
/// `seedcore`) and from a `Vec` copied in on the clock (`seedcore_from_vec`),
/// to the result's bytes read back.
fn seedcore_payload(scale: Scale, sz: Sizes, data: &[u8]) -> anyhow::Result<Vec<Measurement>> {
    note(&format!(
        "payload: seedcore: 1 warm-up + {} reps, from SharedBytes and from a Vec",
        sz.payload_reps
    ));
    let sys = system(scale)?;
    let want = page_sample_sum(data);
    let v = sys
        .submit_process(TaskOptions::new(), tiny_task, 3)?
        .wait()?;
    ensure!(v == task(3), "seedcore: wrong tiny result {v}");
    let rep = |copy_in: bool| -> anyhow::Result<f64> {
        let shared = if copy_in {
            None
        } else {
            Some(SharedBytes::from_slice(data).context("copying the payload into shared memory")?)
        };
        let t = Instant::now();
        let arg = match shared {
            Some(s) => s,
            None => {
                SharedBytes::from_slice(data).context("copying the payload into shared memory")?
            }
        };
        let back = sys
            .submit_process(TaskOptions::new(), echo_bytes, arg)?
            .wait()?;
        let len = back.len();
        let got = page_sample_sum(back.as_slice());
        let secs = t.elapsed().as_secs_f64();
        ensure!(len == data.len(), "seedcore: echo returned {len} bytes");
        ensure!(got == want, "seedcore: echo returned other bytes");
        drop(back);
        Ok(2.0 * data.len() as f64 / secs / 1e9)
    };
    let mut out = Vec::new();
    for (subject, copy_in) in [("seedcore", false), ("seedcore_from_vec", true)] {
        rep(copy_in)?; // warm-up
        let samples = (0..sz.payload_reps)
            .map(|_| rep(copy_in))
            .collect::<anyhow::Result<Vec<f64>>>()?;
        out.push(measurement(PAYLOAD, subject, samples));
    }
    sys.shutdown(ShutdownMode::Graceful);
    Ok(out)
}

// ---------------------------------------------------------------------------
// Python
// ---------------------------------------------------------------------------

/// The Python interpreter the peers run in, and what it lacks.
#[derive(Debug)]
struct PythonEnv {
    /// The interpreter, or why there is none.
    python: Result<PathBuf, String>,
    /// Why pebble cannot run (`None`: it can).
    no_pebble: Option<String>,
    /// Lines for the table's notes.
    notes: Vec<String>,
}

impl PythonEnv {
    /// Finds `python3`, and an interpreter that has pebble: the system one,
    /// else the virtual environment, which is created and given pebble with
    /// pip only when `install` (`--install-peers`) asks for it. Never fails:
    /// what is missing becomes a reason to skip.
    fn prepare(install: bool) -> PythonEnv {
        let system = PathBuf::from("python3");
        let version = match probe(
            &system,
            "import sys; print('%d.%d.%d' % sys.version_info[:3])",
        ) {
            Ok(v) => v,
            Err(e) => {
                return PythonEnv {
                    python: Err(format!("python3 cannot run: {e}")),
                    no_pebble: None,
                    notes: Vec::new(),
                }
            }
        };
        let pebble_probe = "import pebble; print(pebble.__version__)";
        let found = |python: PathBuf, pebble: String, place: &str| PythonEnv {
            notes: vec![format!(
                "process: Python peers: {} (Python {version}), pebble {pebble} ({place})",
                python.display()
            )],
            python: Ok(python),
            no_pebble: None,
        };
        if let Ok(v) = probe(&system, pebble_probe) {
            return found(system, v, "installed in the system Python");
        }
        let venv = venv_dir();
        let venv_python = venv.join("bin").join("python");
        if let Ok(v) = probe(&venv_python, pebble_probe) {
            return found(venv_python, v, &format!("from {}", venv.display()));
        }
        let why = if !install {
            format!(
                "pebble is not installed; `seedcore bench process --install-peers` installs \
                 {PEBBLE} with pip into {}, or install it yourself: `pip install {PEBBLE}`",
                venv.display()
            )
        } else if std::env::var_os(NO_PIP_ENV).is_some() {
            format!("pebble is not installed (and {NO_PIP_ENV} forbids installing it)")
        } else {
            match install_pebble(&system, &venv) {
                Ok(()) => match probe(&venv_python, pebble_probe) {
                    Ok(v) => {
                        return found(
                            venv_python,
                            v,
                            &format!("installed with pip into {}", venv.display()),
                        )
                    }
                    Err(e) => format!("pebble was installed but does not import: {e}"),
                },
                Err(e) => format!(
                    "pebble is not installed, and installing {PEBBLE} into {} failed: {e}",
                    venv.display()
                ),
            }
        };
        PythonEnv {
            notes: vec![format!(
                "process: Python peers: python3 (Python {version}), without pebble"
            )],
            python: Ok(system),
            no_pebble: Some(why),
        }
    }

    /// Runs one workload of the Python script for every peer that can run;
    /// the others, and any the script did not report, come back skipped.
    fn run(
        &self,
        workload: &str,
        scale: Scale,
        n: usize,
        reps: usize,
        warmup: usize,
    ) -> Vec<Entry> {
        let metrics: &[&'static str] = match workload {
            "tiny" => &[TINY],
            "latency" => &[P50, P99],
            _ => &[PAYLOAD],
        };
        let mut out = Vec::new();
        let skip_all = |out: &mut Vec<Entry>, peer: &'static str, reason: &str| {
            for &metric in metrics {
                out.push(skipped(metric, peer, reason.to_string()));
            }
        };
        let python = match &self.python {
            Ok(p) => p,
            Err(why) => {
                for peer in PY_PEERS {
                    skip_all(&mut out, peer, why);
                }
                return out;
            }
        };
        let peers: Vec<&'static str> = PY_PEERS
            .into_iter()
            .filter(|p| match (&self.no_pebble, *p) {
                (Some(why), "pebble") => {
                    skip_all(&mut out, "pebble", why);
                    false
                }
                _ => true,
            })
            .collect();
        let script = match ScriptFile::write() {
            Ok(s) => s,
            Err(e) => {
                for peer in peers {
                    skip_all(
                        &mut out,
                        peer,
                        &format!("cannot write the Python script: {e}"),
                    );
                }
                return out;
            }
        };
        // Generous: the full run of one workload takes about 30 s here.
        let limit = Duration::from_secs(if scale.quick { 300 } else { 900 });
        let mut cmd = Command::new(python);
        cmd.arg(&script.0)
            .arg(workload)
            .args(["--workers", &scale.workers.to_string()])
            .args(["--n", &n.to_string()])
            .args(["--reps", &reps.to_string()])
            .args(["--warmup", &warmup.to_string()])
            .args(["--peers", &peers.join(",")])
            .env("PYTHONUNBUFFERED", "1");
        let (status, stdout, _) = match run_with_limit(cmd, limit, false) {
            Ok(r) => r,
            Err(e) => {
                for peer in peers {
                    skip_all(
                        &mut out,
                        peer,
                        &format!("the Python peers did not run: {e:#}"),
                    );
                }
                return out;
            }
        };
        let mut reported: Vec<(&'static str, &'static str)> = Vec::new();
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            match parse_line(line) {
                Some(e) => {
                    let key = match &e {
                        Entry::Measured(m) => (m.metric, m.subject),
                        Entry::Skipped(s) => (s.metric, s.subject),
                    };
                    reported.push(key);
                    out.push(e);
                }
                None => note(&format!("python peers: ignored output line {line:?}")),
            }
        }
        let missing = match status {
            Some(s) if s.success() => "the Python script did not report it".to_string(),
            Some(s) => format!("the Python peers script failed ({s}); see its stderr above"),
            None => format!(
                "the Python peers script ran past {} s and was killed",
                limit.as_secs()
            ),
        };
        for peer in peers {
            for &metric in metrics {
                if !reported.contains(&(metric, peer)) {
                    out.push(skipped(metric, peer, missing.clone()));
                }
            }
        }
        out
    }
}

/// A skipped subject of this suite.
fn skipped(metric: &'static str, subject: &'static str, reason: String) -> Entry {
    let unit = METRICS
        .iter()
        .find(|(m, _)| *m == metric)
        .map_or("", |(_, u)| *u);
    Entry::skipped(SUITE, metric, subject, unit, reason)
}

/// One JSON line of the Python script, if it names a known metric and peer
/// and has positive samples or a skip reason.
fn parse_line(line: &str) -> Option<Entry> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let metric = METRICS
        .iter()
        .map(|(m, _)| *m)
        .find(|m| v["metric"] == *m)?;
    let subject = PY_PEERS.into_iter().find(|s| v["subject"] == *s)?;
    if let Some(reason) = v["skipped"].as_str() {
        return Some(skipped(metric, subject, reason.to_string()));
    }
    let samples: Vec<f64> = v["samples"]
        .as_array()?
        .iter()
        .map(serde_json::Value::as_f64)
        .collect::<Option<_>>()?;
    if samples.is_empty() || samples.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return None;
    }
    Some(Entry::Measured(measurement(metric, subject, samples)))
}

/// The embedded Python script, written to a temporary file that is removed
/// when this value is dropped.
#[derive(Debug)]
struct ScriptFile(PathBuf);

impl ScriptFile {
    fn write() -> std::io::Result<ScriptFile> {
        let path = std::env::temp_dir().join(format!(
            "seedcore-bench-python-peers-{}.py",
            std::process::id()
        ));
        std::fs::write(&path, PY_SCRIPT)?;
        Ok(ScriptFile(path))
    }
}

impl Drop for ScriptFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `python -c code` and returns its trimmed stdout, or why it failed.
pub(super) fn probe(python: &Path, code: &str) -> Result<String, String> {
    let out = Command::new(python)
        .args(["-c", code])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(last_line(&out.stderr))
    }
}

/// The last non-empty line of a command's output.
fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no output)")
        .trim()
        .to_string()
}

/// Where the virtual environment for pebble goes: `$SEEDCORE_PEERS_VENV`,
/// else `peers-venv` in the cargo target folder this binary was built in,
/// else the user's cache folder.
pub(super) fn venv_dir() -> PathBuf {
    if let Some(p) = std::env::var_os(VENV_ENV) {
        return PathBuf::from(p);
    }
    let target = std::env::current_exe().ok().and_then(|exe| {
        // target/<profile>/seedcore, or target/<profile>/deps/... for tests.
        exe.ancestors()
            .skip(1)
            .take(3)
            .find(|d| d.join("CACHEDIR.TAG").is_file())
            .map(Path::to_path_buf)
    });
    if let Some(t) = target {
        return t.join("peers-venv");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("seedcore").join("peers-venv")
}

/// Creates the virtual environment (if missing) and installs pebble into it.
fn install_pebble(python: &Path, venv: &Path) -> Result<(), String> {
    note(&format!(
        "pebble is missing: installing {PEBBLE} into {} with pip",
        venv.display()
    ));
    let limit = Duration::from_secs(300);
    if !venv.join("bin").join("python").exists() {
        let mut cmd = Command::new(python);
        cmd.args(["-m", "venv"]).arg(venv);
        check(run_with_limit(cmd, limit, true), "python3 -m venv")?;
    }
    let mut cmd = Command::new(venv.join("bin").join("python"));
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--timeout",
        "15",
        "--retries",
        "1",
        PEBBLE,
    ]);
    check(run_with_limit(cmd, limit, true), "pip install")
}

/// What [`run_with_limit`] returns: the exit status (`None`: killed at the
/// limit), stdout and stderr (when captured).
type RunResult = std::io::Result<(Option<ExitStatus>, String, String)>;

/// Turns a run into `Ok` when it exited with success, else a reason.
fn check(r: RunResult, what: &str) -> Result<(), String> {
    match r {
        Ok((Some(s), _, _)) if s.success() => Ok(()),
        Ok((Some(s), _, err)) => Err(format!("{what}: {s}: {}", last_line(err.as_bytes()))),
        Ok((None, _, _)) => Err(format!("{what}: timed out")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// Runs `cmd` with stdout captured (and stderr captured when
/// `capture_stderr`, else shown on this process's stderr), killing it if it
/// runs longer than `limit`.
fn run_with_limit(mut cmd: Command, limit: Duration, capture_stderr: bool) -> RunResult {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    cmd.stderr(if capture_stderr {
        Stdio::piped()
    } else {
        Stdio::inherit()
    });
    let mut child = cmd.spawn()?;
    let reader = |s: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = String::new();
            if let Some(mut s) = s {
                let _ = s.read_to_string(&mut buf);
            }
            buf
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // Rare wake-ups: the child may be measuring on these cores.
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    Ok((status, out, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn parses_python_lines() {
        let m = parse_line(
            r#"{"metric": "tiny_task_ns", "subject": "python_ppe", "unit": "ns", "samples": [3.0, 1.0, 2.0]}"#,
        );
        assert!(
            matches!(m, Some(Entry::Measured(ref m)) if m.value == 2.0 && m.unit == "ns" && m.suite == "process")
        );
        let s = parse_line(
            r#"{"metric": "round_trip_p99_us", "subject": "pebble", "unit": "us", "skipped": "no"}"#,
        );
        assert!(matches!(s, Some(Entry::Skipped(ref s)) if s.reason == "no" && s.unit == "us"));
        for bad in [
            r#"{"metric": "tiny_task_ns", "subject": "nobody", "samples": [1.0]}"#,
            r#"{"metric": "other", "subject": "pebble", "samples": [1.0]}"#,
            r#"{"metric": "tiny_task_ns", "subject": "pebble", "samples": []}"#,
            r#"{"metric": "tiny_task_ns", "subject": "pebble", "samples": [0.0]}"#,
            "not json",
        ] {
            assert!(parse_line(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn page_sample_reads_one_byte_per_page() {
        let mut v = vec![0u8; 3 * 4096];
        v[0] = 1;
        v[4096] = 2;
        v[4097] = 100;
        assert_eq!(page_sample_sum(&v), 3);
    }
}
