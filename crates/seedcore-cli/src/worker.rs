//! `seedcore worker --redis URL`: serves the tasks registered in this
//! binary to a seedcore deployment on Redis, until interrupted.
//!
//! The tasks below are for demos, tests and `seedcore bench remote`.

use crate::cli::WorkerArgs;
use anyhow::Context;
use seedcore::remote::{RemoteConfig, ServeOptions};
use std::process::ExitCode;
use std::time::Duration;

seedcore::process_task! {
    /// The tiny task: adds two numbers.
    fn remote_add(args: (u64, u64)) -> u64 { args.0 + args.1 }
}

seedcore::process_task! {
    /// Returns its argument.
    fn remote_echo(s: String) -> String { s }
}

seedcore::process_task! {
    /// Sleeps `ms` milliseconds, then returns `ms`.
    fn remote_sleep(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
}

seedcore::process_task! {
    /// Appends this worker's process id to the file `path` (one line per
    /// start), sleeps `ms` milliseconds, then returns the process id: a
    /// task whose starts a test can see and whose worker it can kill.
    fn remote_marked_sleep(args: (String, u64)) -> u32 {
        use std::io::Write;
        let pid = std::process::id();
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&args.0) {
            // One write per line: workers append to the same file at once,
            // and `writeln!` may split a line over several writes.
            let _ = f.write_all(format!("{pid}\n").as_bytes());
        }
        std::thread::sleep(Duration::from_millis(args.1));
        pid
    }
}

seedcore::process_task! {
    /// Aborts its worker process.
    fn remote_crash() { std::process::abort() }
}

/// Runs the worker until SIGINT or SIGTERM.
pub(crate) fn run(args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = RemoteConfig::new(&args.redis)
        .visibility_timeout(Duration::from_millis(args.visibility_timeout_ms));
    if let Some(s) = &args.secret {
        cfg = cfg.secret(s);
    }
    if let Some(ns) = &args.namespace {
        cfg = cfg.namespace(ns);
    }
    let mut opts = ServeOptions::default().prefetch(args.prefetch);
    if let Some(n) = args.processes {
        opts = opts.processes(n);
    }
    let worker = seedcore::remote::serve(cfg, opts).context("cannot start the worker")?;
    eprintln!("seedcore worker {} serving {}", worker.name(), args.redis);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    worker.stop(Duration::from_secs(5));
    Ok(ExitCode::SUCCESS)
}
