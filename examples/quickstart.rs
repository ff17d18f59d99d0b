//! A first look: thread tasks with priorities and a timeout, a retry, a
//! caught panic, a lock, an async task and callbacks.
//!
//! Run with `cargo run -p seedcore --example quickstart`.

use seedcore::{ConcurrentSystem, Priority, RetryPolicy, TaskError, TaskOptions};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let system = ConcurrentSystem::builder().build()?;

    let primes = system.submit_thread(TaskOptions::new().priority(Priority::HIGH), |_| {
        (2..50_000u32)
            .filter(|n| (2..*n).take_while(|d| d * d <= *n).all(|d| n % d != 0))
            .count()
    })?;

    let slow = system.submit_thread(
        TaskOptions::new().timeout(Duration::from_millis(50)),
        |ctx| {
            while !ctx.is_cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
        },
    )?;

    let tries = Arc::new(AtomicU32::new(0));
    let t = tries.clone();
    let flaky = system.submit_thread_fallible(
        TaskOptions::new().retry(RetryPolicy::retries(3)),
        move |_| match t.fetch_add(1, Ordering::SeqCst) {
            0 | 1 => Err("connection reset"),
            n => Ok(n + 1),
        },
    )?;

    let panics = system.submit_thread(TaskOptions::new(), |_| -> u32 { panic!("parser bug") })?;

    let counter = Arc::new(AtomicU32::new(0));
    let locked: Vec<_> = (0..4)
        .map(|_| {
            let c = counter.clone();
            system.submit_thread(TaskOptions::new().lock("ledger"), move |_| {
                // Read, think, write: only safe because of the lock.
                let v = c.load(Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                c.store(v + 1, Ordering::SeqCst);
            })
        })
        .collect::<Result<_, _>>()?;

    let greeting = system.submit_async(TaskOptions::new(), |_| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        "hello from async"
    })?;
    let (tx, rx) = std::sync::mpsc::channel();
    greeting.on_complete(move |r| tx.send(r.map(str::to_owned)).unwrap());

    println!("primes below 50,000: {}", primes.wait()?);
    println!("slow task: {}", slow.wait().unwrap_err());
    println!("flaky task succeeded on attempt {}", flaky.wait()?);
    match panics.wait() {
        Err(TaskError::Panicked(m)) => println!("caught panic: {m}"),
        other => println!("unexpected: {other:?}"),
    }
    for f in locked {
        f.wait()?;
    }
    println!("ledger: {}", counter.load(Ordering::SeqCst));
    println!("callback got: {:?}", rx.recv()?);
    let s = system.stats();
    println!(
        "stats: {} submitted, {} completed, {} panicked, {} timed out, {} retries",
        s.submitted, s.completed, s.panicked, s.timed_out, s.retried
    );
    Ok(())
}
