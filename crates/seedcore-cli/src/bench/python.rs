//! Suite `python`: seedcore's Python package against Python's process pools,
//! all in one interpreter: the Python of the active environment
//! (`$SEEDCORE_PYTHON`, else `python3` from `PATH`), where seedcore is
//! installed (`pip install .` from the checkout). Every pool has as many
//! worker processes as there are cores; each is built and warmed up before
//! the clock starts, and every repetition checks its result. Reported: the
//! median over the repetitions.
//!
//! | metric | unit | what is timed | subjects |
//! | --- | --- | --- | --- |
//! | `tiny_task_ns` | ns | N no-op tasks submitted, then every result awaited; per task | `seedcore`, `python_ppe`, `mp_pool_apply_async`, `pebble`, `loky` |
//! | `map_tiny_ns` | ns | `map` of 200,000 tiny items, default chunk sizes; per item | `seedcore`, `mp_pool_map` |
//! | `numpy_64mib_gbps` | GB/s | a 64 MiB numpy array echoed through a process task (2 × 64 MiB / s) | `seedcore`, `python_ppe` |
//! | `bytes_64mib_gbps` | GB/s | 64 MiB of `bytes` echoed (2 × 64 MiB / s) | `seedcore`, `python_ppe` |
//! | `timeout_resolve_ms` | ms | from a process task's deadline (200 ms after it was handed to an idle worker) to its resolved future | `seedcore`, `pebble` |
//!
//! The script is the `process` suite's (`python_peers.py`, see
//! [`pyharness`](super::pyharness)). With `--install-peers`, the missing
//! peers (pebble, loky, numpy) are installed with pip into that same
//! environment; otherwise they are skipped with the reason.

use super::pyharness::{install_peers, module_version, python_version, Harness, PEBBLE};
use super::{note, Entry, Scale};
use std::path::PathBuf;

const SUITE: &str = "python";
const TINY: &str = "tiny_task_ns";
const MAP: &str = "map_tiny_ns";
const NUMPY: &str = "numpy_64mib_gbps";
const BYTES: &str = "bytes_64mib_gbps";
const TIMEOUT: &str = "timeout_resolve_ms";
/// Metrics in report order, with their units.
const METRICS: [(&str, &str); 5] = [
    (TINY, "ns"),
    (MAP, "ns"),
    (NUMPY, "GB/s"),
    (BYTES, "GB/s"),
    (TIMEOUT, "ms"),
];
/// Every subject, in report order.
const SUBJECTS: [&str; 6] = [
    "seedcore",
    "python_ppe",
    "mp_pool_apply_async",
    "mp_pool_map",
    "pebble",
    "loky",
];
const HARNESS: Harness = Harness {
    suite: SUITE,
    metrics: &METRICS,
    subjects: &SUBJECTS,
};
/// The interpreter to measure with, instead of `python3`.
const PYTHON_ENV: &str = "SEEDCORE_PYTHON";
/// The deadline of the timeout workload.
const TIMEOUT_MS: usize = 200;

/// What the interpreter has: `None` where a package imports, else why not.
#[derive(Debug)]
struct Env {
    python: Result<PathBuf, String>,
    seedcore: Option<String>,
    pebble: Option<String>,
    loky: Option<String>,
    numpy: Option<String>,
    notes: Vec<String>,
}

impl Env {
    fn prepare(install: bool) -> Env {
        let python = std::env::var_os(PYTHON_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("python3"));
        let version = match python_version(&python) {
            Ok(v) => v,
            Err(e) => {
                return Env {
                    python: Err(format!("{} cannot run: {e}", python.display())),
                    seedcore: None,
                    pebble: None,
                    loky: None,
                    numpy: None,
                    notes: Vec::new(),
                }
            }
        };
        let has = |module: &str| module_version(&python, module);
        let seedcore = has("seedcore").err().map(|e| {
            format!(
                "seedcore is not installed in {} ({e}); install it from the checkout: \
                 `pip install .`",
                python.display()
            )
        });
        let peers = [("pebble", PEBBLE), ("loky", "loky"), ("numpy", "numpy")];
        let mut missing: Vec<(&str, &str)> =
            peers.into_iter().filter(|(m, _)| has(m).is_err()).collect();
        let mut install_error = None;
        if install && !missing.is_empty() {
            let specs: Vec<&str> = missing.iter().map(|(_, s)| *s).collect();
            if let Err(e) = install_peers("python", &python, None, &specs) {
                install_error = Some(e.to_string());
            }
            missing.retain(|(m, _)| has(m).is_err());
        }
        let why = |module: &str| -> Option<String> {
            let (_, spec) = missing.iter().find(|(m, _)| *m == module)?;
            Some(match (&install_error, install) {
                (Some(e), _) => format!("{module} is not installed ({e})"),
                (None, true) => format!("{module} does not import after installing it"),
                (None, false) => format!(
                    "{module} is not installed in {}; `seedcore bench python --install-peers` \
                     installs it (or `pip install {spec}`)",
                    python.display()
                ),
            })
        };
        let versions: Vec<String> = ["seedcore", "pebble", "loky", "numpy"]
            .iter()
            .map(|m| match has(m) {
                Ok(v) => format!("{m} {v}"),
                Err(_) => format!("no {m}"),
            })
            .collect();
        Env {
            notes: vec![format!(
                "python: {} (Python {version}): {}",
                python.display(),
                versions.join(", ")
            )],
            seedcore,
            pebble: why("pebble"),
            loky: why("loky"),
            numpy: why("numpy"),
            python: Ok(python),
        }
    }

    /// Why `subject` cannot run in this environment (for `workload`).
    fn missing(&self, subject: &str, workload: &str) -> Option<String> {
        if workload == "numpy" {
            if let Some(why) = &self.numpy {
                return Some(why.clone());
            }
        }
        match subject {
            "seedcore" => self.seedcore.clone(),
            "pebble" => self.pebble.clone(),
            "loky" => self.loky.clone(),
            _ => None,
        }
    }

    fn run(
        &self,
        workload: &str,
        metric: &'static str,
        subjects: &[&'static str],
        scale: Scale,
        n: usize,
        reps: usize,
    ) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut peers = Vec::new();
        for &s in subjects {
            match self.missing(s, workload) {
                Some(why) => out.push(HARNESS.skipped(metric, s, why)),
                None => peers.push(s),
            }
        }
        let python = self.python.as_deref().map_err(Clone::clone);
        out.extend(HARNESS.run(python, workload, &[metric], &peers, scale, n, reps, 0));
        out
    }
}

/// Runs the suite.
pub(crate) fn run(scale: Scale) -> anyhow::Result<(Vec<Entry>, Vec<String>)> {
    let env = Env::prepare(scale.install_peers);
    let q = scale.quick;
    let (tiny_n, map_n, payload, reps) = if q {
        (2_000, 20_000, 8 << 20, 2)
    } else {
        (20_000, 200_000, 64 << 20, 5)
    };
    let mut entries = Vec::new();
    let all_pools = [
        "seedcore",
        "python_ppe",
        "mp_pool_apply_async",
        "pebble",
        "loky",
    ];
    note(&format!("{TINY}: N={tiny_n}, {} workers", scale.workers));
    entries.extend(env.run("tiny", TINY, &all_pools, scale, tiny_n, reps));
    note(&format!("{MAP}: N={map_n}"));
    entries.extend(env.run("map", MAP, &["seedcore", "mp_pool_map"], scale, map_n, reps));
    note(&format!(
        "{NUMPY} and {BYTES}: {} MiB echoed",
        payload >> 20
    ));
    let pair = ["seedcore", "python_ppe"];
    entries.extend(env.run("numpy", NUMPY, &pair, scale, payload, reps));
    entries.extend(env.run("bytes", BYTES, &pair, scale, payload, reps));
    note(&format!("{TIMEOUT}: a {TIMEOUT_MS} ms deadline"));
    entries.extend(env.run(
        "timeout",
        TIMEOUT,
        &["seedcore", "pebble"],
        scale,
        TIMEOUT_MS,
        reps,
    ));
    Entry::sort_in(&mut entries, &METRICS, &SUBJECTS);
    let mut notes = env.notes;
    notes.push(format!(
        "python: {} worker processes per pool (= cores); the standard library's pools start with fork, seedcore's workers as fresh interpreters",
        scale.workers
    ));
    notes.push(
        "python: the payload metrics count both directions (2 x payload / s, 1 GB = 10^9 B); seedcore's buffers cross as memfds".to_string(),
    );
    if q {
        notes.push(format!(
            "python: --quick: tiny N={tiny_n}, map N={map_n}, payload {} MiB (the metrics keep their names), {reps} reps: a smoke run, not a measurement",
            payload >> 20
        ));
    }
    Ok((entries, notes))
}
