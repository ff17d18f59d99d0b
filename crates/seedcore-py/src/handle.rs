//! One task's outcome as Python sees it.
//!
//! The core resolves a task on its own threads, which never take the GIL:
//! the outcome is stored in a [`Slot`] and waiters are woken. Only when
//! Python code asked to be told (a done callback, `concurrent.futures.wait`)
//! is a notifier queued, and one notifier thread per process takes the GIL
//! to run them, so a resolving thread never waits on the interpreter.
//! The outcome becomes a Python value once, on first read, and is kept.

use crate::worker::{describe, to_py, Reply};
use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use seedcore::command::{CommandFailed, CommandOutput};
use seedcore::process::Raised;
use seedcore::{TaskError, TaskErrorKind, TaskFuture, TaskHandle, TaskStatus};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How often a blocked wait wakes to let Python handle signals (Ctrl-C).
const SIGNAL_SLICE: Duration = Duration::from_millis(100);

/// A Python exception raised by a thread or async task, kept as the
/// exception object itself.
#[derive(Debug)]
pub(crate) struct PyFailure {
    pub(crate) err: PyErr,
    pub(crate) text: String,
}

impl PyFailure {
    pub(crate) fn new(py: Python<'_>, err: PyErr) -> PyFailure {
        let text = describe(py, err.clone_ref(py));
        PyFailure { err, text }
    }
}

impl std::fmt::Display for PyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for PyFailure {}

/// The raw outcome, as the core delivered it.
pub(crate) enum Raw {
    Process(Result<Reply, TaskError>),
    Object(Result<Py<PyAny>, TaskError>),
    Command(Result<CommandOutput, TaskError>),
}

impl Raw {
    fn code(&self) -> u8 {
        let err = match self {
            Raw::Process(r) => r.as_ref().err(),
            Raw::Object(r) => r.as_ref().err(),
            Raw::Command(r) => r.as_ref().err(),
        };
        match err {
            None => DONE_OK,
            Some(TaskError::Cancelled) => DONE_CANCELLED,
            Some(_) => DONE_ERR,
        }
    }
}

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const DONE_OK: u8 = 2;
const DONE_ERR: u8 = 3;
const DONE_CANCELLED: u8 = 4;

/// A Python callable that a task's body holds while the task may run.
/// When the task resolves it moves into the task's slot, so that it is
/// released where the GIL is held (the future's owner) instead of on the
/// scheduler's thread, where its release would wait for the next time
/// any thread takes the GIL.
pub(crate) type Keep = Arc<Mutex<Option<Py<PyAny>>>>;

/// A new [`Keep`] holding `f`.
pub(crate) fn keep(f: Py<PyAny>) -> Keep {
    Arc::new(Mutex::new(Some(f)))
}

/// The callable in `k`, for one call (with the GIL).
pub(crate) fn kept(py: Python<'_>, k: &Keep) -> PyResult<Py<PyAny>> {
    k.lock()
        .as_ref()
        .map(|f| f.clone_ref(py))
        .ok_or_else(|| PyRuntimeError::new_err("the task has already resolved"))
}

enum State {
    /// Not resolved; the notifiers to run when it is.
    Pending(Vec<Py<PyAny>>),
    /// Resolved; not yet read from Python.
    Done(u8, Raw),
    /// Being converted by a reader (others wait for it).
    Converting(u8),
    /// Converted: `(ok, value)`.
    Ready(u8, Py<PyTuple>),
}

/// Where the core leaves a task's outcome.
pub(crate) struct Slot {
    state: Mutex<State>,
    cv: Condvar,
    /// What the task's body held, once the task resolved.
    kept: Mutex<Option<Py<PyAny>>>,
}

impl Slot {
    pub(crate) fn new() -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(State::Pending(Vec::new())),
            cv: Condvar::new(),
            kept: Mutex::new(None),
        })
    }

    /// Stores the outcome (on the thread that resolves the task: no GIL,
    /// no blocking) and wakes every waiter.
    pub(crate) fn complete(&self, raw: Raw) {
        let code = raw.code();
        let notify = {
            let mut st = self.state.lock();
            match std::mem::replace(&mut *st, State::Done(code, raw)) {
                State::Pending(n) => n,
                // Resolved once only; keep what was there.
                other => {
                    *st = other;
                    return;
                }
            }
        };
        self.cv.notify_all();
        if !notify.is_empty() {
            notifier().send(notify).ok();
        }
    }

    fn code(&self) -> Option<u8> {
        match &*self.state.lock() {
            State::Pending(_) => None,
            State::Done(c, _) | State::Converting(c) | State::Ready(c, _) => Some(*c),
        }
    }
}

/// The notifier thread's queue, started on first use.
fn notifier() -> &'static Sender<Vec<Py<PyAny>>> {
    static TX: OnceLock<Sender<Vec<Py<PyAny>>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = channel::<Vec<Py<PyAny>>>();
        std::thread::Builder::new()
            .name("seedcore-py-notify".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    Python::attach(|py| {
                        // Everything queued meanwhile runs under the same GIL hold.
                        for batch in std::iter::once(first).chain(rx.try_iter()) {
                            for cb in batch {
                                if let Err(e) = cb.call0(py) {
                                    e.write_unraisable(py, Some(cb.bind(py)));
                                }
                            }
                        }
                    });
                }
            })
            .expect("the notifier thread starts");
        tx
    })
}

/// A task's outcome, for `seedcore.TaskFuture`.
#[pyclass(frozen, module = "seedcore._seedcore")]
pub(crate) struct Handle {
    slot: Arc<Slot>,
    task: TaskHandle,
}

impl Handle {
    /// Connects `fut` to a new handle: the core stores the outcome inline.
    pub(crate) fn of<T: Send + 'static>(
        fut: TaskFuture<T>,
        wrap: fn(Result<T, TaskError>) -> Raw,
        body: Option<Keep>,
    ) -> Handle {
        let slot = Slot::new();
        let s = slot.clone();
        let task = fut.on_resolved(move |r| {
            if let Some(k) = body {
                *s.kept.lock() = k.lock().take();
            }
            s.complete(wrap(r))
        });
        Handle { slot, task }
    }

    /// Waits (GIL released, waking for signals) until resolved or the
    /// timeout passes; whether it resolved.
    fn block(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        loop {
            if self.slot.code().is_some() {
                return Ok(true);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(false);
            }
            let until = match deadline {
                Some(d) => d.min(now + SIGNAL_SLICE),
                None => now + SIGNAL_SLICE,
            };
            py.detach(|| {
                let mut st = self.slot.state.lock();
                if matches!(*st, State::Pending(_)) {
                    self.slot.cv.wait_until(&mut st, until);
                }
            });
            py.check_signals()?;
        }
    }
}

#[pymethods]
impl Handle {
    /// Whether the task resolved.
    fn done(&self) -> bool {
        self.slot.code().is_some()
    }

    /// 0 queued, 1 running, 2 succeeded, 3 failed, 4 cancelled.
    fn state(&self) -> u8 {
        match self.slot.code() {
            Some(c) => c,
            None => match self.task.status() {
                TaskStatus::Running => RUNNING,
                _ => PENDING,
            },
        }
    }

    /// Blocks until resolved or `timeout` seconds pass (GIL released;
    /// Ctrl-C interrupts it); whether it resolved.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        self.block(py, timeout)
    }

    /// `(ok, value)`: the value, or the exception to raise. Only once
    /// resolved.
    fn outcome(&self, py: Python<'_>) -> PyResult<Py<PyTuple>> {
        loop {
            let mut st = self.slot.state.lock();
            match &*st {
                State::Ready(_, t) => return Ok(t.clone_ref(py)),
                State::Pending(_) => {
                    return Err(PyRuntimeError::new_err("the task has not resolved yet"))
                }
                State::Converting(_) => {
                    drop(st);
                    py.detach(|| {
                        let mut st = self.slot.state.lock();
                        if matches!(*st, State::Converting(_)) {
                            self.slot.cv.wait_for(&mut st, SIGNAL_SLICE);
                        }
                    });
                    continue;
                }
                State::Done(code, _) => {
                    let code = *code;
                    let State::Done(_, raw) = std::mem::replace(&mut *st, State::Converting(code))
                    else {
                        unreachable!()
                    };
                    drop(st);
                    // Unpickling runs Python code: never under the lock.
                    let t = convert(py, raw)?;
                    *self.slot.state.lock() = State::Ready(code, t.clone_ref(py));
                    self.slot.cv.notify_all();
                    return Ok(t);
                }
            }
        }
    }

    /// Cancels the task (a running process task's worker is killed);
    /// whether it is cancelled.
    fn cancel(&self) -> bool {
        self.task.cancel()
    }

    /// Runs `notify()` (with the GIL, on the notifier thread) once the task
    /// resolves; `False` if it already has (then it is not called).
    fn arm(&self, notify: Py<PyAny>) -> bool {
        match &mut *self.slot.state.lock() {
            State::Pending(n) => {
                n.push(notify);
                true
            }
            _ => false,
        }
    }

    /// The task's id.
    #[getter]
    fn id(&self) -> String {
        self.task.id().to_string()
    }
}

fn convert(py: Python<'_>, raw: Raw) -> PyResult<Py<PyTuple>> {
    let pair = |ok: bool, v: Bound<'_, PyAny>| -> PyResult<Py<PyTuple>> {
        Ok(PyTuple::new(py, [ok.into_pyobject(py)?.to_owned().into_any(), v])?.unbind())
    };
    match raw {
        Raw::Process(Ok(reply)) => {
            let payload = to_py(py, &reply.payload)?;
            let buffers = reply
                .buffers
                .iter()
                .map(|b| to_py(py, b))
                .collect::<PyResult<Vec<_>>>()?;
            drop(reply);
            let loads = py.import("seedcore._pickling")?.getattr("loads")?;
            match loads.call1((payload, PyList::new(py, buffers)?)) {
                Ok(v) => pair(true, v),
                Err(e) => pair(false, e.value(py).clone().into_any()),
            }
        }
        Raw::Object(Ok(v)) => pair(true, v.into_bound(py)),
        Raw::Command(Ok(out)) => pair(true, command_dict(py, &out)?.into_any()),
        Raw::Process(Err(e)) | Raw::Object(Err(e)) | Raw::Command(Err(e)) => {
            pair(false, error_object(py, e)?)
        }
    }
}

/// A command's outcome as a dict.
fn command_dict<'py>(py: Python<'py>, out: &CommandOutput) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("returncode", out.code)?;
    d.set_item("signal", out.signal)?;
    let read = |c: &seedcore::command::Captured| c.to_vec().unwrap_or_default();
    d.set_item("stdout", pyo3::types::PyBytes::new(py, &read(&out.stdout)))?;
    d.set_item("stderr", pyo3::types::PyBytes::new(py, &read(&out.stderr)))?;
    d.set_item("duration", out.duration.as_secs_f64())?;
    d.set_item("attempts", out.attempts)?;
    d.set_item("pid", out.pid)?;
    Ok(d)
}

/// The Python exception for a task error, made by
/// `seedcore._errors.from_core(kind, message, info, payload, exc)`.
fn error_object(py: Python<'_>, e: TaskError) -> PyResult<Bound<'_, PyAny>> {
    let info = PyDict::new(py);
    let mut payload: Option<Vec<u8>> = None;
    let mut exc: Option<Py<PyAny>> = None;
    let kind = match &e {
        TaskError::Failed(b) => {
            if let Some(r) = b.downcast_ref::<Raised>() {
                payload = Some(r.payload().to_vec());
            } else if let Some(f) = b.downcast_ref::<PyFailure>() {
                exc = Some(f.err.value(py).clone().into_any().unbind());
            } else if let Some(CommandFailed(out)) = b.downcast_ref::<CommandFailed>() {
                info.set_item("output", command_dict(py, out)?)?;
            }
            "failed"
        }
        TaskError::Panicked(p) => {
            info.set_item("location", p.location())?;
            "panicked"
        }
        TaskError::TimedOut(d) => {
            info.set_item("after", d.as_secs_f64())?;
            "timed_out"
        }
        TaskError::Cancelled => "cancelled",
        TaskError::LockTimeout { lock, waited } => {
            info.set_item("lock", lock)?;
            info.set_item("waited", waited.as_secs_f64())?;
            "lock_timeout"
        }
        TaskError::SystemShutdown => "shutdown",
        TaskError::WorkerDied {
            exit_code,
            signal,
            pid,
            ..
        } => {
            info.set_item("exit_code", exit_code)?;
            info.set_item("signal", signal)?;
            info.set_item("pid", pid)?;
            "worker_died"
        }
        TaskError::MemoryLimit { limit, rss } => {
            info.set_item("limit", limit)?;
            info.set_item("rss", rss)?;
            "memory_limit"
        }
        TaskError::PoolBroken(_) => "pool_broken",
        _ => match e.kind() {
            TaskErrorKind::GpuMemory => "gpu_memory",
            _ => "failed",
        },
    };
    let from_core = py.import("seedcore._errors")?.getattr("from_core")?;
    from_core.call1((
        kind,
        e.to_string(),
        info,
        payload.map(|p| pyo3::types::PyBytes::new(py, &p)),
        exc,
    ))
}
