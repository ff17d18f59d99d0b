//! `seedcore._seedcore`: the Python binding of seedcore, kept thin. Every
//! scheduling decision stays in the Rust core; this module adds what
//! Python needs around it:
//!
//! * [`System`], a [`ConcurrentSystem`] built from the TOML the Python
//!   package writes, with its worker processes started as Python
//!   interpreters (`python -m seedcore._worker`).
//! * [`Handle`], one task's outcome: stored without the GIL when the task
//!   resolves, waited on with the GIL released (waking for signals every
//!   100 ms), converted to Python once, on first read.
//! * Two registered process tasks, `seedcore.py.call` and
//!   `seedcore.py.init`, that run pickled Python calls in the workers;
//!   a Python exception travels back as a [`Raised`] error carrying the
//!   pickled exception.
//!
//! The Python package (`python/seedcore`) builds the concurrent.futures and
//! asyncio surface on these; see its docs for the user-facing API.

mod handle;
mod system;
mod worker;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _seedcore(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<system::System>()?;
    m.add_class::<handle::Handle>()?;
    m.add_function(wrap_pyfunction!(worker::worker_main, m)?)?;
    m.add_function(wrap_pyfunction!(worker::is_worker, m)?)?;
    m.add("SHM_THRESHOLD", worker::SHM_THRESHOLD)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
