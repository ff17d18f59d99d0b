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
    /// Appends a line to the file `path`, then fails while the file has at
    /// most `fails` lines: a task that succeeds on attempt `fails + 1`,
    /// which returns the number of attempts.
    fn remote_flaky(args: (String, u32)) -> Result<u32, String> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.0)
            .map_err(|e| e.to_string())?;
        f.write_all(b"x\n").map_err(|e| e.to_string())?;
        let n = std::fs::read_to_string(&args.0).map_err(|e| e.to_string())?.lines().count() as u32;
        if n <= args.1 {
            Err(format!("attempt {n} fails"))
        } else {
            Ok(n)
        }
    }
}

seedcore::process_task! {
    /// Aborts its worker process.
    fn remote_crash() { std::process::abort() }
}

seedcore::process_task! {
    /// Appends this process's id to the file `path`, then kills the
    /// `seedcore worker` that runs it (its parent) and itself: a poison
    /// message.
    fn remote_kill_worker(path: String) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
            let _ = f.write_all(format!("{}\n", std::process::id()).as_bytes());
        }
        // SAFETY: plain signals to this process's parent and itself.
        unsafe {
            libc::kill(libc::getppid(), libc::SIGKILL);
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Runs the worker until SIGINT or SIGTERM, or lists or requeues dead
/// letters.
pub(crate) fn run(args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    // The `[remote]` section (file, then environment), then the flags.
    let mut settings = match &args.config {
        Some(path) => seedcore::Config::load(path)?,
        None => seedcore::Config::from_env()?,
    }
    .remote;
    if let Some(url) = &args.redis {
        settings.url = Some(url.clone());
    }
    if settings.url.is_none() {
        anyhow::bail!("no Redis server: give --redis URL, or set remote.url (SEEDCORE_REMOTE_URL)");
    }
    let grace = args.grace_ms.map_or(settings.grace, Duration::from_millis);
    let mut cfg = RemoteConfig::from_settings(&settings)?;
    if let Some(ms) = args.visibility_timeout_ms {
        cfg = cfg.visibility_timeout(Duration::from_millis(ms));
    }
    if let Some(n) = args.max_deliveries {
        cfg = cfg.max_deliveries(n);
    }
    if let Some(path) = &args.secret_file {
        cfg = cfg.secret_file(path)?;
    }
    if let Some(ns) = &args.namespace {
        cfg = cfg.namespace(ns);
    }
    if let Some(path) = &args.tls_ca_file {
        cfg = cfg.tls_ca_file(path);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) {
        cfg = cfg.tls_client_cert(cert, key);
    }
    if args.list_dead {
        for d in seedcore::remote::dead_letters(&cfg, 100_000)? {
            println!(
                "{} {} id={} deliveries={} attempt={} level={} at_ms={}",
                d.id, d.task_name, d.task_id, d.deliveries, d.attempt, d.level, d.at_ms
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(id) = &args.requeue_dead {
        let ids: Vec<String> = if id == "all" {
            seedcore::remote::dead_letters(&cfg, 100_000)?
                .into_iter()
                .map(|d| d.id)
                .collect()
        } else {
            vec![id.clone()]
        };
        let mut n = 0;
        for id in &ids {
            if seedcore::remote::requeue_dead_letter(&cfg, id)? {
                n += 1;
            } else {
                eprintln!("no dead letter {id}");
            }
        }
        println!("requeued {n}");
        return Ok(if n == ids.len() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let mut opts = ServeOptions::default().prefetch(args.prefetch);
    for a in &args.alias {
        let Some((old, new)) = a.split_once('=') else {
            anyhow::bail!("--alias takes OLD=NEW, got `{a}`");
        };
        opts = opts.alias(old, new);
    }
    if let Some(n) = args.processes {
        opts = opts.processes(n);
    }
    let url = cfg.redacted_url();
    let worker = seedcore::remote::serve(cfg, opts).context("cannot start the worker")?;
    eprintln!("seedcore worker {} serving {}", worker.name(), url);
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
    worker.stop(grace);
    Ok(ExitCode::SUCCESS)
}
