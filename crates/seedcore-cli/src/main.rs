//! `seedcore`: the command line of the seedcore concurrent task system.
//!
//! `main` parses the flags, calls [`run`] and turns its result into the process
//! exit code:
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | the command ran but its checks failed (a demo scenario mismatched), or an error |
//! | 2 | bad command line (printed by clap) |
//!
//! `seedcore exec` has its own: the number of failed jobs (at most 101),
//! 130 after Ctrl-C, 255 for a usage error.

mod bench;
mod cli;
mod counting_alloc;
mod demo;
mod exec;
mod table;
mod top;
mod worker;

use clap::Parser;
use std::process::ExitCode;

/// The binary allocates with mimalloc: task records are allocated on the
/// submitting thread and freed elsewhere, a pattern glibc's arenas serve
/// with lock contention. Every subject of `seedcore bench` runs in this
/// process, so peers and seedcore measure with the same allocator. It counts
/// the bytes live on the heap for `seedcore bench threads`' memory figure
/// ([`counting_alloc`]).
#[global_allocator]
static GLOBAL: counting_alloc::CountingMiMalloc = counting_alloc::CountingMiMalloc;

fn main() -> ExitCode {
    no_huge_pages();
    // First: in a worker process of a seedcore pool (this executable started
    // again by the pool) this serves tasks and never returns.
    seedcore::init();
    if let Some(code) = bench::helper_child() {
        return code;
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // `seedcore exec` reports usage errors with 255, as GNU parallel.
        Err(e) if e.use_stderr() && std::env::args().nth(1).as_deref() == Some("exec") => {
            let _ = e.print();
            return ExitCode::from(255);
        }
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("seedcore: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process and the workers it
/// starts (the setting survives fork and exec). mimalloc maps its memory in
/// 2 MiB-aligned regions; where the kernel backs those with huge pages
/// (`transparent_hugepage=always`), each memory page it takes back after a
/// burst of work costs a 2 MiB zeroing fault when reused. Maps of small
/// items through worker processes ran 1.5x to 3x slower, and far less
/// steadily, for it.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no
    // memory of this process; a failure (an old kernel) changes nothing.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Runs one parsed command and returns the exit code it asks for.
fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        cli::Command::Bench(args) => bench::run(&args),
        cli::Command::Demo(args) => demo::run(&args),
        cli::Command::Top(args) => top::run(&args),
        cli::Command::Worker(args) => worker::run(&args),
        cli::Command::Exec(args) => exec::run(*args),
    }
}
