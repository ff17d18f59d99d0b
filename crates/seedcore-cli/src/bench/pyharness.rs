//! The one harness of the Python peers: a script embedded in this binary
//! (written to a temporary file for each run), run with a given interpreter,
//! its JSON lines read back as the suite's [`Entry`]s. A peer the script did
//! not report, or that could not run, comes back skipped with the reason;
//! never a made-up figure. The `process` and `python` suites run
//! `python_peers.py` for one workload and a list of peers
//! ([`Harness::run`]); the `parallel` and `remote` suites run their own
//! scripts ([`Harness::run_script`]). Every suite looks its interpreter and
//! peers up with [`python_version`] and [`module_version`] (or [`probe`]),
//! finds its virtual environment under [`venv_dir`], and installs missing
//! peers with [`install_peers`], the one place that runs pip.

use super::{note, Entry, Measurement, Scale};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The script both suites run.
const PY_SCRIPT: &str = include_str!("python_peers.py");
/// Set (to anything) to forbid installing peers with pip.
const NO_PIP_ENV: &str = "SEEDCORE_BENCH_NO_PIP";
/// Where to put the virtual environment for pebble, instead of the default.
const VENV_ENV: &str = "SEEDCORE_PEERS_VENV";
/// The pebble release installed when it is missing (the one of `shared/peers`).
pub(super) const PEBBLE: &str = "pebble==5.2.3";

/// What one suite reads from the script: its name, its metrics with their
/// units, and the subjects the script may report.
#[derive(Debug)]
pub(super) struct Harness {
    /// The suite the figures belong to.
    pub(super) suite: &'static str,
    /// Every metric of the suite, with its unit.
    pub(super) metrics: &'static [(&'static str, &'static str)],
    /// The subjects the script runs for this suite.
    pub(super) subjects: &'static [&'static str],
}

impl Harness {
    /// A skipped subject of this suite.
    pub(super) fn skipped(
        &self,
        metric: &'static str,
        subject: &'static str,
        reason: String,
    ) -> Entry {
        Entry::skipped(self.suite, metric, subject, self.unit(metric), reason)
    }

    fn unit(&self, metric: &str) -> &'static str {
        self.metrics
            .iter()
            .find(|(m, _)| *m == metric)
            .map_or("", |(_, u)| *u)
    }

    /// One JSON line of the script, if it names a known metric and subject
    /// and has positive samples or a skip reason.
    pub(super) fn parse_line(&self, line: &str) -> Option<Entry> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let metric = self
            .metrics
            .iter()
            .map(|(m, _)| *m)
            .find(|m| v["metric"] == *m)?;
        let subject = self.subjects.iter().copied().find(|s| v["subject"] == *s)?;
        if let Some(reason) = v["skipped"].as_str() {
            return Some(self.skipped(metric, subject, reason.to_string()));
        }
        let samples: Vec<f64> = v["samples"]
            .as_array()?
            .iter()
            .map(serde_json::Value::as_f64)
            .collect::<Option<_>>()?;
        if samples.is_empty() || samples.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return None;
        }
        Some(Entry::Measured(Measurement::of(
            self.suite,
            metric,
            subject,
            self.unit(metric),
            samples,
        )))
    }

    /// Runs `workload` of the script with `python` (or skips every peer
    /// with the reason there is none) for `peers`, reporting `metrics`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run(
        &self,
        python: Result<&Path, String>,
        workload: &str,
        metrics: &[&'static str],
        peers: &[&'static str],
        scale: Scale,
        n: usize,
        reps: usize,
        warmup: usize,
    ) -> Vec<Entry> {
        let expected: Vec<(&'static str, &'static str)> = peers
            .iter()
            .flat_map(|&peer| metrics.iter().map(move |&metric| (metric, peer)))
            .collect();
        let python = match python {
            Ok(p) => p,
            Err(why) => {
                return expected
                    .iter()
                    .map(|&(metric, peer)| self.skipped(metric, peer, why.clone()))
                    .collect()
            }
        };
        if peers.is_empty() {
            return Vec::new();
        }
        let args: Vec<String> = [
            workload.to_string(),
            "--workers".into(),
            scale.workers.to_string(),
            "--n".into(),
            n.to_string(),
            "--reps".into(),
            reps.to_string(),
            "--warmup".into(),
            warmup.to_string(),
            "--peers".into(),
            peers.join(","),
        ]
        .into();
        // Generous: the full run of one workload takes about 30 s here.
        let limit = Duration::from_secs(if scale.quick { 300 } else { 900 });
        self.run_script(python, ("python-peers", PY_SCRIPT), &args, &expected, limit)
    }

    /// Runs `script` (a name for its temporary file, and its text) with
    /// `python` and `args`, killed past `limit`, and reads back its lines
    /// for the `expected` metric and subject pairs: each pair it did not
    /// report comes back skipped with the reason.
    pub(super) fn run_script(
        &self,
        python: &Path,
        script: (&str, &str),
        args: &[String],
        expected: &[(&'static str, &'static str)],
        limit: Duration,
    ) -> Vec<Entry> {
        let mut out = Vec::new();
        let skip_all = |out: &mut Vec<Entry>, reason: &str| {
            for &(metric, subject) in expected {
                out.push(self.skipped(metric, subject, reason.to_string()));
            }
        };
        let file = match ScriptFile::write(script.0, script.1) {
            Ok(s) => s,
            Err(e) => {
                skip_all(&mut out, &format!("cannot write the Python script: {e}"));
                return out;
            }
        };
        let mut cmd = Command::new(python);
        cmd.arg(&file.0).args(args).env("PYTHONUNBUFFERED", "1");
        let (status, stdout, _) = match run_with_limit(cmd, limit, false) {
            Ok(r) => r,
            Err(e) => {
                skip_all(&mut out, &format!("the Python peers did not run: {e:#}"));
                return out;
            }
        };
        let mut reported: Vec<(&'static str, &'static str)> = Vec::new();
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            match self.parse_line(line) {
                Some(e) => {
                    reported.push(e.key());
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
        for &key in expected {
            if !reported.contains(&key) {
                out.push(self.skipped(key.0, key.1, missing.clone()));
            }
        }
        out
    }
}

/// An embedded Python script, written to a temporary file that is removed
/// when this value is dropped.
#[derive(Debug)]
struct ScriptFile(PathBuf);

impl ScriptFile {
    fn write(name: &str, text: &str) -> std::io::Result<ScriptFile> {
        let path =
            std::env::temp_dir().join(format!("seedcore-bench-{name}-{}.py", std::process::id()));
        std::fs::write(&path, text)?;
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

/// `python`'s version (`3.11.4`), or why it cannot run.
pub(super) fn python_version(python: &Path) -> Result<String, String> {
    probe(
        python,
        "import sys; print('%d.%d.%d' % sys.version_info[:3])",
    )
}

/// The `__version__` of `module` in `python`'s environment, or why it does
/// not import.
pub(super) fn module_version(python: &Path, module: &str) -> Result<String, String> {
    probe(
        python,
        &format!("import {module}; print({module}.__version__)"),
    )
}

/// Why [`install_peers`] installed nothing.
#[derive(Debug)]
pub(super) enum InstallError {
    /// [`NO_PIP_ENV`] is set: pip was not run.
    Forbidden,
    /// Making the virtual environment or pip failed, with its reason.
    Failed(String),
}

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstallError::Forbidden => write!(f, "{NO_PIP_ENV} forbids installing it"),
            InstallError::Failed(e) => write!(f, "installing it with pip failed: {e}"),
        }
    }
}

/// Installs the pip requirements `specs` for suite `who`: into the virtual
/// environment `venv` (made with `python` first, unless it has an
/// interpreter already), or with no `venv` into `python`'s own
/// environment. Refused when [`NO_PIP_ENV`] is set; says on stderr what it
/// installs where, since pip may take minutes.
pub(super) fn install_peers(
    who: &str,
    python: &Path,
    venv: Option<&Path>,
    specs: &[&str],
) -> Result<(), InstallError> {
    if std::env::var_os(NO_PIP_ENV).is_some() {
        return Err(InstallError::Forbidden);
    }
    note(&format!(
        "{who}: installing {} into {} with pip",
        specs.join(" "),
        venv.unwrap_or(python).display()
    ));
    let target = match venv {
        Some(venv) => {
            make_venv(python, venv).map_err(InstallError::Failed)?;
            venv.join("bin").join("python")
        }
        None => python.to_path_buf(),
    };
    pip_install(&target, specs).map_err(InstallError::Failed)
}

/// Creates the virtual environment `venv` with `python`, unless it has an
/// interpreter already.
fn make_venv(python: &Path, venv: &Path) -> Result<(), String> {
    if venv.join("bin").join("python").exists() {
        return Ok(());
    }
    let mut cmd = Command::new(python);
    cmd.args(["-m", "venv"]).arg(venv);
    check(
        run_with_limit(cmd, Duration::from_secs(300), true),
        "python3 -m venv",
    )
}

/// `python -m pip install specs...` into that interpreter's environment.
fn pip_install(python: &Path, specs: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new(python);
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
    ])
    .args(specs);
    // Generous: numpy or celery with its dependencies on a slow mirror.
    check(
        run_with_limit(cmd, Duration::from_secs(600), true),
        "pip install",
    )
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
