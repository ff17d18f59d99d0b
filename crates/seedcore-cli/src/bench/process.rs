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

use super::pyharness::{
    install_peers, module_version, python_version, venv_dir, Harness, InstallError, PEBBLE,
};
use super::report::percentile;
use super::tiny::{expected, task};
use super::{note, Entry, Measurement, Scale};
use anyhow::{ensure, Context};
use seedcore::{ConcurrentSystem, SharedBytes, ShutdownMode, TaskOptions};
use std::hint::black_box;
use std::io::{Read, Write};
use std::path::PathBuf;
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
/// The script's side of the suite.
const HARNESS: Harness = Harness {
    suite: SUITE,
    metrics: &METRICS,
    subjects: &PY_PEERS,
};
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
/// Environment variable that turns this binary into the pipe-echo child.
const PIPE_ECHO_ENV: &str = "SEEDCORE_BENCH_PIPE_ECHO_CHILD";

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

    Entry::sort_in(&mut entries, &METRICS, &SUBJECTS);

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
        let version = match python_version(&system) {
            Ok(v) => v,
            Err(e) => {
                return PythonEnv {
                    python: Err(format!("python3 cannot run: {e}")),
                    no_pebble: None,
                    notes: Vec::new(),
                }
            }
        };
        let found = |python: PathBuf, pebble: String, place: &str| PythonEnv {
            notes: vec![format!(
                "process: Python peers: {} (Python {version}), pebble {pebble} ({place})",
                python.display()
            )],
            python: Ok(python),
            no_pebble: None,
        };
        if let Ok(v) = module_version(&system, "pebble") {
            return found(system, v, "installed in the system Python");
        }
        let venv = venv_dir();
        let venv_python = venv.join("bin").join("python");
        if let Ok(v) = module_version(&venv_python, "pebble") {
            return found(venv_python, v, &format!("from {}", venv.display()));
        }
        let why = if !install {
            format!(
                "pebble is not installed; `seedcore bench process --install-peers` installs \
                 {PEBBLE} with pip into {}, or install it yourself: `pip install {PEBBLE}`",
                venv.display()
            )
        } else {
            match install_peers("process", &system, Some(&venv), &[PEBBLE]) {
                Ok(()) => match module_version(&venv_python, "pebble") {
                    Ok(v) => {
                        return found(
                            venv_python,
                            v,
                            &format!("installed with pip into {}", venv.display()),
                        )
                    }
                    Err(e) => format!("pebble was installed but does not import: {e}"),
                },
                Err(e @ InstallError::Forbidden) => format!("pebble is not installed (and {e})"),
                Err(InstallError::Failed(e)) => format!(
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
        let peers: Vec<&'static str> = PY_PEERS
            .into_iter()
            .filter(|p| match (&self.no_pebble, *p) {
                (Some(why), "pebble") => {
                    for &metric in metrics {
                        out.push(HARNESS.skipped(metric, "pebble", why.clone()));
                    }
                    false
                }
                _ => true,
            })
            .collect();
        let python = self.python.as_deref().map_err(Clone::clone);
        out.extend(HARNESS.run(python, workload, metrics, &peers, scale, n, reps, warmup));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_python_lines() {
        let m = HARNESS.parse_line(
            r#"{"metric": "tiny_task_ns", "subject": "python_ppe", "unit": "ns", "samples": [3.0, 1.0, 2.0]}"#,
        );
        assert!(
            matches!(m, Some(Entry::Measured(ref m)) if m.value == 2.0 && m.unit == "ns" && m.suite == "process")
        );
        let s = HARNESS.parse_line(
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
            assert!(HARNESS.parse_line(bad).is_none(), "{bad}");
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
