//! The behaviour tests of seedcore, one module per subject, built and
//! linked as one test binary. Run a subject alone with a filter:
//! `cargo test --release -p seedcore --test main locks::`.
//!
//! Process tasks are registered under their module's path, so the modules'
//! tasks never collide, and a worker started from this binary (by the
//! modules' `enable_test_workers!()`) can run any of them.
//!
//! A new test file joins as a module here unless it changes something that
//! the whole process shares; those stay binaries of their own in `tests/`:
//! `config` (sets environment variables), `tracing` (installs the global
//! subscriber), `stress` (replaces the panic hook with a silent one),
//! `process_chaos` (counts every child process and descriptor of the test
//! process, sets the logger and the panic hook), `missing_init` (a binary
//! without `init()`, run as its own worker) and `loom_core` (the core
//! compiled against loom's primitives as `crate::sync`).

#[path = "../common/mod.rs"]
mod common;

mod async_tasks;
mod balance;
mod callbacks;
mod command;
mod custom_executor;
mod futures_promises;
#[cfg(feature = "cuda")]
mod gpu;
mod layers;
mod locks;
mod metrics;
mod parallel;
mod parallel_process;
mod process_failures;
mod process_nested;
mod process_task_call;
mod process_tasks;
mod scope;
mod shutdown;
mod thread_tasks;
