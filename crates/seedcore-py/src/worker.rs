//! What crosses to a Python worker process and what runs there: the
//! pickled call, its pickled result, and the two registered tasks.
//!
//! A buffer of [`SHM_THRESHOLD`] bytes or more crosses as a memfd: the
//! Python side writes it into a memfd of its own and hands the descriptor
//! over as `(fd, len)`; the receiving side gets `(fd, len)` back and maps
//! it itself (`mmap`, copy-on-write), so the bytes are copied once, into
//! shared memory, and never through the socket. Smaller ones are `bytes`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyTuple};
use seedcore::process::{ProcessTask, Raised, TaskEntry};
use seedcore::SharedBytes;
use serde::{Deserialize, Serialize};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

/// From this many bytes a buffer crosses in shared memory.
pub(crate) const SHM_THRESHOLD: usize = 64 << 10;

/// The registered name of a pickled call.
const CALL_NAME: &str = "seedcore.py.call";
/// The registered name of the pickled initializer.
const INIT_NAME: &str = "seedcore.py.init";

/// A pickled call, `(fn, args, kwargs)`, and its out-of-band buffers.
#[derive(Serialize, Deserialize)]
pub(crate) struct Call {
    pub(crate) payload: SharedBytes,
    pub(crate) buffers: Vec<SharedBytes>,
}

/// A pickled result and its out-of-band buffers.
#[derive(Serialize, Deserialize)]
pub(crate) struct Reply {
    pub(crate) payload: SharedBytes,
    pub(crate) buffers: Vec<SharedBytes>,
}

/// The initializer: pickled `(authkey, pickled (fn, args) or None)` (see
/// `seedcore._worker.initialize`).
#[derive(Serialize, Deserialize)]
pub(crate) struct Init {
    pub(crate) payload: SharedBytes,
}

/// The call task, as the parent submits it.
pub(crate) const CALL: ProcessTask<Call, Reply> = ProcessTask::external(CALL_NAME);
/// The initializer task, as the parent names it.
pub(crate) const INIT: ProcessTask<Init, ()> = ProcessTask::external(INIT_NAME);

#[linkme::distributed_slice(seedcore::__private::PROCESS_TASKS)]
#[linkme(crate = seedcore::__private::linkme)]
static CALL_ENTRY: TaskEntry = TaskEntry::__sync(CALL_NAME, |args, fds| {
    seedcore::__private::run_raising(args, fds, run_call)
});

#[linkme::distributed_slice(seedcore::__private::PROCESS_TASKS)]
#[linkme(crate = seedcore::__private::linkme)]
static INIT_ENTRY: TaskEntry = TaskEntry::__sync(INIT_NAME, |args, fds| {
    seedcore::__private::run_raising(args, fds, run_init)
});

/// `seedcore._worker`, imported once.
fn worker_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || py.import("seedcore._worker").map(Bound::unbind))
        .map(|m| m.bind(py))
}

/// Runs a pickled call in this worker: `seedcore._worker.run` unpickles,
/// calls and pickles; a Python exception comes back pickled.
fn run_call(call: Call) -> Result<Reply, Raised> {
    Python::attach(|py| {
        let out = (|| -> PyResult<Result<Reply, Raised>> {
            let payload = to_py(py, &call.payload)?;
            let buffers = call
                .buffers
                .iter()
                .map(|b| to_py(py, b))
                .collect::<PyResult<Vec<_>>>()?;
            drop(call);
            let r = worker_module(py)?
                .getattr("run")?
                .call1((payload, PyList::new(py, buffers)?))?;
            let r = r.cast_into::<PyTuple>()?;
            let ok: bool = r.get_item(0)?.extract()?;
            if ok {
                let payload = from_py(&r.get_item(1)?)?;
                let buffers = r
                    .get_item(2)?
                    .try_iter()?
                    .map(|b| from_py(&b?))
                    .collect::<PyResult<Vec<_>>>()?;
                Ok(Ok(Reply { payload, buffers }))
            } else {
                let message: String = r.get_item(1)?.extract()?;
                let payload: Vec<u8> = r.get_item(2)?.extract()?;
                Ok(Err(Raised::new(message, payload)))
            }
        })();
        out.unwrap_or_else(|e| Err(Raised::new(describe(py, e), Vec::new())))
    })
}

/// Runs the pickled initializer in this worker.
fn run_init(init: Init) -> Result<(), Raised> {
    Python::attach(|py| {
        let r = worker_module(py)
            .and_then(|m| m.getattr("initialize"))
            .and_then(|f| f.call1((PyBytes::new(py, init.payload.as_slice()),)));
        match r {
            Ok(_) => Ok(()),
            Err(e) => Err(Raised::new(describe(py, e), Vec::new())),
        }
    })
}

/// An exception as one line: `Type: message`, with the traceback's last
/// lines where there is one.
pub(crate) fn describe(py: Python<'_>, e: PyErr) -> String {
    let text = (|| -> PyResult<String> {
        let tb = py.import("traceback")?;
        let lines = tb.getattr("format_exception_only")?.call1((e.value(py),))?;
        let parts: Vec<String> = lines.extract()?;
        Ok(parts.concat().trim_end().to_owned())
    })();
    text.unwrap_or_else(|_| e.to_string())
}

/// Shared bytes for Python: `(fd, len)` for a memfd (the caller owns the
/// descriptor and maps it), else `bytes`.
pub(crate) fn to_py<'py>(py: Python<'py>, b: &SharedBytes) -> PyResult<Bound<'py, PyAny>> {
    if let Some(fd) = b.memfd() {
        let fd = fd.map_err(|e| PyValueError::new_err(format!("cannot share a buffer: {e}")))?;
        let t = (fd.into_raw_fd(), b.len()).into_pyobject(py)?;
        return Ok(t.into_any());
    }
    Ok(PyBytes::new(py, b.as_slice()).into_any())
}

/// Shared bytes from Python: a bytes-like object (copied), or `(fd, len)`,
/// a memfd whose descriptor this takes over.
pub(crate) fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<SharedBytes> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(SharedBytes::from_vec(b.as_bytes().to_vec()));
    }
    if let Ok((fd, len)) = obj.extract::<(i32, usize)>() {
        if fd < 0 {
            return Err(PyValueError::new_err("a shared buffer needs a descriptor"));
        }
        // SAFETY: the package hands over a memfd it created for this
        // buffer and never uses again (seedcore/_pickling.py); from here on
        // this value owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        return SharedBytes::from_memfd(fd, len)
            .map_err(|e| PyValueError::new_err(format!("cannot share a buffer: {e}")));
    }
    let bytes: Vec<u8> = obj.call_method0("__bytes__").and_then(|b| b.extract())?;
    Ok(SharedBytes::from_vec(bytes))
}

/// Serves as a worker if this interpreter was started as one by a pool;
/// returns the exit code when the pool lets it go, `None` at once in any
/// other process. The GIL is released while it serves: tasks take it.
#[pyfunction]
pub(crate) fn worker_main(py: Python<'_>) -> Option<i32> {
    py.detach(seedcore::process::run_worker)
}

/// Whether this process is a seedcore worker.
#[pyfunction]
pub(crate) fn is_worker() -> bool {
    seedcore::is_worker()
}
