//! Work that may crash, hang or leak, run in isolated worker processes:
//! a timeout kills the worker, a crash is reported and healed, a memory
//! hog is stopped, and a large buffer crosses through shared memory.
//!
//! Run with `cargo run -p seedcore --example process_pool`.

use seedcore::{
    ConcurrentSystem, ExecutorKind, RetryOn, RetryPolicy, SharedBytes, TaskError, TaskOptions,
    WorkerOutput,
};
use std::time::{Duration, Instant};

seedcore::process_task! {
    /// A well-behaved task.
    fn word_count(text: String) -> usize {
        text.split_whitespace().count()
    }
}

seedcore::process_task! {
    /// A "third-party parser" that hangs on some inputs.
    fn parse(input: String) -> usize {
        if input.contains("evil") {
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        input.len()
    }
}

seedcore::process_task! {
    /// A native library that aborts the whole process.
    fn crash() {
        std::process::abort()
    }
}

seedcore::process_task! {
    /// Leaks memory until something stops it.
    fn leak() -> usize {
        let mut hoard = Vec::new();
        loop {
            hoard.push(vec![1u8; 8 << 20]);
            std::thread::sleep(Duration::from_millis(5));
            if hoard.len() > 10_000 {
                return hoard.len();
            }
        }
    }
}

seedcore::process_task! {
    /// Sums a large buffer that arrives through shared memory.
    fn checksum(data: SharedBytes) -> u64 {
        data.iter().map(|&b| b as u64).sum()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In a worker process this serves tasks and never returns.
    seedcore::init();

    let system = ConcurrentSystem::builder()
        .core_processes(2)
        .max_memory_per_process(256 << 20)
        .process_output(WorkerOutput::Discard)
        .build()?;

    let words = system.submit_process(TaskOptions::new(), word_count, "to be or not".to_owned())?;
    println!("word_count: {}", words.wait()?);

    let t = Instant::now();
    let hung = system.submit_process(
        TaskOptions::new().timeout(Duration::from_millis(300)),
        parse,
        "evil input".to_owned(),
    )?;
    println!(
        "parse(evil): {} after {:?}",
        hung.wait().unwrap_err(),
        t.elapsed()
    );

    match system.submit_process(TaskOptions::new(), crash, ())?.wait() {
        Err(e @ TaskError::WorkerDied { .. }) => println!("crash: {e}"),
        other => println!("crash: unexpected {other:?}"),
    }

    let leaked = system.submit_process(TaskOptions::new(), leak, ())?;
    println!("leak: {}", leaked.wait().unwrap_err());

    // A crash that happens once is retried on a fresh worker.
    let retried = system.submit_process(
        TaskOptions::new().retry(RetryPolicy::retries(1).on(RetryOn::CRASH)),
        word_count,
        "still fine after all that".to_owned(),
    )?;
    println!("word_count after the chaos: {}", retried.wait()?);

    let data = SharedBytes::from_slice(&vec![3u8; 64 << 20])?;
    let t = Instant::now();
    let sum = system
        .submit_process(TaskOptions::new(), checksum, data)?
        .wait()?;
    println!(
        "checksum of 64 MiB through shared memory: {sum} in {:?}",
        t.elapsed()
    );

    let s = system.stats();
    let pids = s
        .executor(ExecutorKind::Processes)
        .map(|p| p.pids.clone())
        .unwrap_or_default();
    println!(
        "stats: {} submitted, {} completed, {} timed out, {} worker deaths, {} over memory; workers now {pids:?}",
        s.submitted, s.completed, s.timed_out, s.worker_died, s.memory_limit
    );
    Ok(())
}
