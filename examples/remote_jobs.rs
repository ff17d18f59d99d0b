//! Jobs through Redis by id: a worker serves this binary's process tasks,
//! a client submits jobs under ids of its own and goes, and any process
//! that knows an id fetches its result or cancels it. Retries run on the
//! worker, so they survive the client.
//!
//! Needs a Redis server: `SEEDCORE_REMOTE_URL` (default
//! `redis://127.0.0.1:6379/`), and the shared secret in
//! `SEEDCORE_REMOTE_SECRET` (at least 32 bytes). For example:
//!
//! ```sh
//! redis-server --port 6399 --save '' &
//! SEEDCORE_REMOTE_URL=redis://127.0.0.1:6399/ \
//! SEEDCORE_REMOTE_SECRET=an-example-secret-of-32-bytes-at-least \
//!     cargo run --release -p seedcore --features remote --example remote_jobs
//! ```

use seedcore::remote::{serve, RemoteClient, RemoteConfig, RemoteId, ServeOptions};
use seedcore::{process_task, RetryPolicy, TaskError, TaskOptions};
use std::time::Duration;

process_task! {
    /// A report: the sum of the squares below `n`.
    fn report(n: u64) -> u64 {
        (0..n).map(|x| x * x).sum()
    }
}

process_task! {
    /// A job that takes its time.
    fn slow(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    seedcore::init();
    let url = std::env::var("SEEDCORE_REMOTE_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
    // The secret from SEEDCORE_REMOTE_SECRET (or SEEDCORE_REMOTE_SECRET_FILE).
    let cfg = RemoteConfig::new(url).namespace("example-jobs");

    // Jobs first, with no worker anywhere: they wait in Redis.
    let client = RemoteClient::connect(cfg.clone())?;
    let retried = TaskOptions::new()
        .timeout(Duration::from_secs(10))
        .retry(RetryPolicy::retries(2));
    for n in [10u64, 1_000, 100_000] {
        let id = RemoteId::new(format!("report-{n}"))?;
        client.submit(&retried, id, report, &n)?;
    }
    let long = RemoteId::new("slow-job")?;
    client.submit(&TaskOptions::new(), long.clone(), slow, &60_000)?;
    drop(client); // Submitted jobs do not depend on the client.

    // A worker on this machine, two processes.
    let worker = serve(cfg.clone(), ServeOptions::default().processes(2))?;

    // Anyone with the URL and the secret reads results by id, or cancels:
    // the slow job is stopped wherever it is (queued: never run; running:
    // its process is killed).
    let reader = RemoteClient::connect(cfg)?;
    println!("cancel {long}: {}", reader.cancel(&long)?);
    for n in [10u64, 1_000, 100_000] {
        let id = RemoteId::new(format!("report-{n}"))?;
        match reader.result(&id, report, Duration::from_secs(30))? {
            Some(Ok(sum)) => println!("{id}: {sum}"),
            Some(Err(e)) => println!("{id}: failed: {e}"),
            None => println!("{id}: not finished in 30 s"),
        }
    }
    match reader.result(&long, slow, Duration::from_secs(30))? {
        Some(Err(TaskError::Cancelled)) => println!("{long}: cancelled"),
        other => println!("{long}: {other:?}"),
    }
    worker.stop(Duration::from_secs(5));
    Ok(())
}
