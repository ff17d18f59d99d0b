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

mod bench;
mod cli;
mod demo;
mod table;
mod top;

use clap::Parser;
use std::process::ExitCode;

/// The binary allocates with mimalloc: task records are allocated on the
/// submitting thread and freed elsewhere, a pattern glibc's arenas serve
/// with lock contention. Every subject of `seedcore bench` runs in this
/// process, so peers and seedcore measure with the same allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // First: in a worker process of a seedcore pool (this executable started
    // again by the pool) this serves tasks and never returns.
    seedcore::init();
    if let Some(code) = bench::helper_child() {
        return code;
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = cli::Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("seedcore: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command and returns the exit code it asks for.
fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        cli::Command::Bench(args) => bench::run(&args),
        cli::Command::Demo(args) => demo::run(&args),
        cli::Command::Top(args) => top::run(&args),
    }
}
