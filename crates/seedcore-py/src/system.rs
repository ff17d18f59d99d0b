//! A [`ConcurrentSystem`] for Python: built from TOML, fed pickled calls,
//! Python callables and coroutine starters, every blocking step with the
//! GIL released.

use crate::handle::{keep, kept, Handle, PyFailure, Raw};
use crate::worker::{from_py, Call, Init, CALL, INIT};
use parking_lot::Mutex;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict, PyList};
use seedcore::command::CommandSpec;
use seedcore::{
    Backoff, ConcurrentSystem, Config, Priority, RetryOn, RetryPolicy, ShutdownMode, SubmitError,
    TaskOptions,
};
use std::sync::Arc;
use std::time::Duration;

/// How often a blocked shutdown wakes to let Python handle signals.
const SIGNAL_SLICE: Duration = Duration::from_millis(100);

/// A concurrent system, as `seedcore.ConcurrentSystem` drives it.
#[pyclass(frozen, module = "seedcore._seedcore")]
pub(crate) struct System {
    inner: Mutex<Option<Arc<ConcurrentSystem>>>,
}

impl System {
    fn sys(&self, py: Python<'_>) -> PyResult<Arc<ConcurrentSystem>> {
        match &*self.inner.lock() {
            Some(s) => Ok(s.clone()),
            None => Err(submit_error(py, SubmitError::SystemClosed)),
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        // Dropping a system waits for its work, and thread tasks need the
        // GIL, which the dropping thread may hold: the wait happens on a
        // thread of its own.
        if let Some(s) = self.inner.get_mut().take() {
            let _ = std::thread::Builder::new()
                .name("seedcore-py-drop".into())
                .spawn(move || drop(s));
        }
    }
}

/// `seedcore._errors.NAME(*args)` as a `PyErr`.
fn py_error(py: Python<'_>, name: &str, args: (String, String)) -> PyErr {
    let made = py
        .import("seedcore._errors")
        .and_then(|m| m.getattr(name))
        .and_then(|cls| cls.call1(args));
    match made {
        Ok(v) => PyErr::from_value(v),
        Err(e) => e,
    }
}

/// A refused submission as its Python exception.
fn submit_error(py: Python<'_>, e: SubmitError) -> PyErr {
    let kind = match &e {
        SubmitError::SystemClosed => "closed",
        SubmitError::InvalidOptions(_) => "invalid_options",
        SubmitError::UnknownTask(_) => "unknown_task",
        SubmitError::Serialize(_) => "serialize",
        SubmitError::PayloadTooLarge { .. } | SubmitError::TooManySharedBuffers { .. } => {
            "too_large"
        }
        SubmitError::PoolBroken(_) => "pool_broken",
        SubmitError::InsideWorker => "inside_worker",
        SubmitError::QueueFull { .. } => "queue_full",
        _ => "refused",
    };
    py_error(py, "from_submit", (kind.to_owned(), e.to_string()))
}

fn seconds(v: &Bound<'_, PyAny>, what: &str) -> PyResult<Duration> {
    let s: f64 = v
        .extract()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a number of seconds")))?;
    Duration::try_from_secs_f64(s).map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a non-negative number of seconds, not {s}"
        ))
    })
}

/// Reads the task options the Python package passes as a dict.
fn options(opts: Option<&Bound<'_, PyDict>>) -> PyResult<TaskOptions> {
    let mut o = TaskOptions::new();
    let Some(opts) = opts else { return Ok(o) };
    let mut retry: Option<RetryPolicy> = None;
    let mut retry_on: Option<RetryOn> = None;
    let mut backoff: Option<Backoff> = None;
    let mut jitter: Option<f64> = None;
    for (k, v) in opts.iter() {
        if v.is_none() {
            continue;
        }
        let key: String = k.extract()?;
        match key.as_str() {
            "priority" => {
                let p: i64 = v.extract().map_err(|_| {
                    PyTypeError::new_err("priority must be an int from 0 (most urgent) to 10")
                })?;
                let p = u8::try_from(p)
                    .ok()
                    .and_then(Priority::new)
                    .ok_or_else(|| {
                        PyValueError::new_err(format!(
                            "priority must be from 0 (most urgent) to 10, not {p}"
                        ))
                    })?;
                o = o.priority(p);
            }
            "timeout" => o = o.timeout(seconds(&v, "timeout")?),
            "lock_timeout" => o = o.lock_timeout(seconds(&v, "lock_timeout")?),
            "name" => o = o.name(v.extract::<String>()?),
            "lock" => {
                if let Ok(one) = v.extract::<String>() {
                    o = o.lock(one);
                } else {
                    let many: Vec<String> = v.extract().map_err(|_| {
                        PyTypeError::new_err("lock must be a name or a list of names")
                    })?;
                    for l in many {
                        o = o.lock(l);
                    }
                }
            }
            "limit" => {
                let pairs: Vec<(String, usize)> = if let Ok(d) = v.cast::<PyDict>() {
                    d.iter()
                        .map(|(k, v)| Ok((k.extract()?, v.extract()?)))
                        .collect::<PyResult<_>>()?
                } else if let Ok(one) = v.extract::<(String, usize)>() {
                    vec![one]
                } else {
                    return Err(PyTypeError::new_err(
                        "limit must be (name, permits) or a dict of name to permits",
                    ));
                };
                for (name, n) in pairs {
                    o = o.limit(name, n);
                }
            }
            "retries" => {
                let n: u32 = v
                    .extract()
                    .map_err(|_| PyValueError::new_err("retries must be a non-negative int"))?;
                retry = Some(RetryPolicy::retries(n));
            }
            "retry_on" => {
                let names: Vec<String> = if let Ok(one) = v.extract::<String>() {
                    vec![one]
                } else {
                    v.extract()?
                };
                let mut on: Option<RetryOn> = None;
                for n in names {
                    let one = match n.as_str() {
                        "error" | "exception" => RetryOn::ERROR,
                        "panic" => RetryOn::PANIC,
                        "timeout" => RetryOn::TIMEOUT,
                        "crash" => RetryOn::CRASH,
                        "all" => RetryOn::ALL,
                        other => {
                            return Err(PyValueError::new_err(format!(
                                "retry_on: unknown failure {other:?} (one of \"error\", \"timeout\", \"crash\", \"panic\", \"all\")"
                            )))
                        }
                    };
                    on = Some(match on {
                        Some(a) => a | one,
                        None => one,
                    });
                }
                retry_on = on;
            }
            "backoff" => {
                backoff = Some(if let Ok(t) = v.extract::<(f64, f64, f64)>() {
                    let secs = |x: f64, what: &str| {
                        Duration::try_from_secs_f64(x).map_err(|_| {
                            PyValueError::new_err(format!(
                                "backoff {what} must be non-negative seconds"
                            ))
                        })
                    };
                    Backoff::Exponential {
                        initial: secs(t.0, "initial")?,
                        factor: t.1.max(1.0),
                        max: secs(t.2, "max")?,
                    }
                } else {
                    Backoff::Fixed(seconds(&v, "backoff")?)
                });
            }
            "jitter" => jitter = Some(v.extract()?),
            other => {
                return Err(PyTypeError::new_err(format!(
                    "unknown task option {other:?}"
                )));
            }
        }
    }
    if retry.is_some() || retry_on.is_some() || backoff.is_some() || jitter.is_some() {
        let mut r = retry.unwrap_or_else(|| RetryPolicy::retries(0));
        if let Some(on) = retry_on {
            r = r.on(on);
        }
        if let Some(b) = backoff {
            r = r.backoff(b);
        }
        if let Some(j) = jitter {
            r = r.jitter(j);
        }
        o = o.retry(r);
    }
    Ok(o)
}

thread_local! {
    /// Whether Python knows this pool thread by its name.
    static NAMED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Gives the calling pool thread's name to Python's `threading` the
/// first time it runs Python code, so that `threading.current_thread()`
/// and the logging module's `threadName` show the pool's names (as
/// `thread_name_prefix` promises) rather than `Dummy-N`.
fn name_python_thread(py: Python<'_>) {
    if NAMED.with(|n| n.replace(true)) {
        return;
    }
    if let Some(name) = std::thread::current().name() {
        let named = py
            .import("threading")
            .and_then(|t| t.call_method0("current_thread"))
            .and_then(|t| t.setattr("name", name));
        if let Err(e) = named {
            e.write_unraisable(py, None);
        }
    }
}

/// A coroutine's `concurrent.futures.Future`, cancelled if the attempt is
/// dropped (timeout, cancel) before it finished.
struct CancelOnDrop(Option<Py<PyAny>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            Python::attach(|py| {
                let _ = f.call_method0(py, "cancel");
            });
        }
    }
}

#[pymethods]
impl System {
    /// Builds a system from TOML `config`; worker processes run `program`
    /// with `args`; `init` is the pickled initializer of each worker.
    #[new]
    #[pyo3(signature = (config, program=None, args=Vec::new(), init=None))]
    fn new(
        py: Python<'_>,
        config: &str,
        program: Option<String>,
        args: Vec<String>,
        init: Option<Vec<u8>>,
    ) -> PyResult<System> {
        let cfg = Config::from_toml_str(config)
            .map_err(|e| py_error(py, "ConfigError", (e.field.clone(), e.reason.clone())))?;
        let mut b = ConcurrentSystem::builder().config(cfg);
        if let Some(p) = program {
            b = b.process_program(p).process_args(args);
        }
        if let Some(payload) = init {
            if payload.len() > seedcore::MAX_INITIALIZER_ARGS_BYTES {
                return Err(py_error(
                    py,
                    "ConfigError",
                    (
                        "initializer".to_owned(),
                        format!(
                            "the pickled initializer and its arguments take {} bytes, over the {} a worker's start carries",
                            payload.len(),
                            seedcore::MAX_INITIALIZER_ARGS_BYTES
                        ),
                    ),
                ));
            }
            let payload = seedcore::SharedBytes::from_vec(payload);
            b = b.process_initializer_with(INIT, Init { payload });
        }
        let sys = py
            .detach(|| b.build())
            .map_err(|e| py_error(py, "ConfigError", (e.field.clone(), e.reason.clone())))?;
        Ok(System {
            inner: Mutex::new(Some(Arc::new(sys))),
        })
    }

    /// Submits a pickled call to the process pool.
    #[pyo3(signature = (payload, buffers, opts=None))]
    fn submit_process(
        &self,
        py: Python<'_>,
        payload: &Bound<'_, PyAny>,
        buffers: &Bound<'_, PyList>,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Handle> {
        let o = options(opts)?;
        let call = Call {
            payload: from_py(payload)?,
            buffers: buffers
                .iter()
                .map(|b| from_py(&b))
                .collect::<PyResult<_>>()?,
        };
        let sys = self.sys(py)?;
        let fut = py
            .detach(|| sys.submit_process(o, CALL, call))
            .map_err(|e| submit_error(py, e))?;
        Ok(Handle::of(fut, Raw::Process, None))
    }

    /// Submits `fn()` to the thread pool; it takes the GIL while it runs.
    #[pyo3(signature = (func, opts=None))]
    fn submit_thread(
        &self,
        py: Python<'_>,
        func: Py<PyAny>,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Handle> {
        let o = options(opts)?;
        let sys = self.sys(py)?;
        let body = keep(func);
        let k = body.clone();
        // With one attempt the callable (and what it holds) goes as soon
        // as that attempt ends, under the GIL held then, as
        // concurrent.futures lets a finished task's callable go.
        let one_attempt = o.get_retry().max_retries() == 0;
        let fut = py
            .detach(|| {
                sys.submit_thread_fallible(o, move |_cx| {
                    Python::attach(|py| {
                        name_python_thread(py);
                        let out = kept(py, &k)
                            .and_then(|f| f.call0(py))
                            .map_err(|e| PyFailure::new(py, e));
                        if one_attempt {
                            drop(k.lock().take());
                        }
                        out
                    })
                })
            })
            .map_err(|e| submit_error(py, e))?;
        Ok(Handle::of(fut, Raw::Object, Some(body)))
    }

    /// Submits an async task: `start()` schedules the coroutine on the
    /// package's event loop and returns its `concurrent.futures.Future`;
    /// it is called once per attempt, and cancelled when the attempt is
    /// dropped (timeout, cancel).
    #[pyo3(signature = (start, opts=None))]
    fn submit_async(
        &self,
        py: Python<'_>,
        start: Py<PyAny>,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Handle> {
        let o = options(opts)?;
        let sys = self.sys(py)?;
        let body = keep(start);
        let k = body.clone();
        let fut = py
            .detach(|| {
                sys.submit_async_fallible(o, move |_cx| {
                    let start = k.clone();
                    async move {
                        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                        let fut = Python::attach(|py| -> PyResult<Py<PyAny>> {
                            let f = kept(py, &start)?.call0(py)?;
                            let tx = std::sync::Mutex::new(Some(tx));
                            let cb = PyCFunction::new_closure(py, None, None, move |_a, _k| {
                                if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                                    let _ = tx.send(());
                                }
                            })?;
                            f.call_method1(py, "add_done_callback", (cb,))?;
                            Ok(f)
                        })
                        .map_err(|e| Python::attach(|py| PyFailure::new(py, e)))?;
                        let mut guard = CancelOnDrop(Some(fut));
                        let _ = rx.await;
                        let fut = guard.0.take().expect("held until here");
                        Python::attach(|py| {
                            fut.call_method0(py, "result")
                                .map_err(|e| PyFailure::new(py, e))
                        })
                    }
                })
            })
            .map_err(|e| submit_error(py, e))?;
        Ok(Handle::of(fut, Raw::Object, Some(body)))
    }

    /// Submits an external command: `argv` run directly, or `shell` as a
    /// line for `sh -c`.
    #[pyo3(signature = (argv=None, shell=None, cwd=None, env=None, opts=None))]
    fn submit_command(
        &self,
        py: Python<'_>,
        argv: Option<Vec<String>>,
        shell: Option<String>,
        cwd: Option<String>,
        env: Option<Vec<(String, String)>>,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Handle> {
        let o = options(opts)?;
        let mut spec = match (argv, shell) {
            (Some(argv), None) => {
                let mut it = argv.into_iter();
                let program = it
                    .next()
                    .ok_or_else(|| PyValueError::new_err("a command needs a program"))?;
                CommandSpec::new(program).args(it)
            }
            (None, Some(line)) => CommandSpec::shell(line),
            _ => {
                return Err(PyValueError::new_err(
                    "give a command as a list of arguments or as one shell line, not both",
                ))
            }
        };
        if let Some(dir) = cwd {
            spec = spec.cwd(dir);
        }
        for (k, v) in env.unwrap_or_default() {
            spec = spec.env(k, v);
        }
        let sys = self.sys(py)?;
        let fut = py
            .detach(|| sys.submit_command(o, spec))
            .map_err(|e| submit_error(py, e))?;
        Ok(Handle::of(fut, Raw::Command, None))
    }

    /// The stats snapshot, as JSON.
    fn stats_json(&self, py: Python<'_>) -> PyResult<String> {
        let sys = self.sys(py)?;
        serde_json::to_string(&sys.stats()).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The monitor's reading (machine and workers), as JSON.
    fn monitor_json(&self, py: Python<'_>) -> PyResult<String> {
        let sys = self.sys(py)?;
        let snap = py.detach(|| sys.monitor());
        serde_json::to_string(&snap).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The metrics in the Prometheus text format.
    fn metrics(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.sys(py)?.metrics_prometheus())
    }

    /// Resizes `"threads"` or `"processes"` towards `target`; the size it
    /// is going to.
    fn resize(&self, py: Python<'_>, kind: &str, target: usize) -> PyResult<usize> {
        let sys = self.sys(py)?;
        match kind {
            "threads" => Ok(py.detach(|| sys.resize_threads(target))),
            "processes" => Ok(py.detach(|| sys.resize_processes(target))),
            other => Err(PyValueError::new_err(format!(
                "resize: unknown pool {other:?} (\"threads\" or \"processes\")"
            ))),
        }
    }

    /// Whether the system is shut down (or shutting down).
    #[getter]
    fn closed(&self) -> bool {
        match &*self.inner.lock() {
            Some(s) => s.is_closed(),
            None => true,
        }
    }

    /// Shuts down: `"graceful"`, `"cancel_queued"` or `"immediate"`;
    /// waits for it unless `wait` is false (the wait wakes for signals: a
    /// Ctrl-C makes it immediate and raises). Idempotent; an immediate
    /// shutdown asked for during a graceful one makes that one immediate.
    #[pyo3(signature = (mode="graceful", wait=true))]
    fn shutdown(&self, py: Python<'_>, mode: &str, wait: bool) -> PyResult<()> {
        let mode = match mode {
            "graceful" => ShutdownMode::Graceful,
            "cancel_queued" => ShutdownMode::CancelQueued,
            "immediate" => ShutdownMode::Immediate,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown shutdown mode {other:?} (\"graceful\", \"cancel_queued\" or \"immediate\")"
                )))
            }
        };
        let Some(sys) = self.inner.lock().clone() else {
            return Ok(());
        };
        let handle = sys.shutdown_background(mode);
        if !wait {
            return Ok(());
        }
        loop {
            if py.detach(|| handle.wait_timeout(SIGNAL_SLICE)).is_some() {
                break;
            }
            if let Err(interrupted) = py.check_signals() {
                // Ctrl-C while the work finishes: stop it now (workers
                // killed, queued work cancelled) and let the signal's
                // exception through.
                if mode != ShutdownMode::Immediate {
                    let s = sys.clone();
                    let _ = std::thread::Builder::new()
                        .name("seedcore-py-stop".into())
                        .spawn(move || s.shutdown(ShutdownMode::Immediate));
                }
                return Err(interrupted);
            }
        }
        self.inner.lock().take();
        Ok(())
    }
}
