//! The tests that run the real `seedcore` binary, one module per subject,
//! built and linked as one test binary. Run a module alone with a filter:
//! `cargo test --release -p seedcore-cli --test main remote::`.

#[path = "../common/mod.rs"]
mod common;

mod balance_top;
mod bench_exec;
mod bench_parallel;
mod bench_process;
mod cli;
mod exec;
mod exec_jobsfile;
mod redis_server;
mod remote;
mod remote_tls;
