//! The sum of 0..10^9, split into chunks that run in parallel: the seed's
//! `ParallelProcessor`, on threads and on worker processes, checked
//! against the closed form and timed against one thread.
//!
//! Each item of the map is a range of numbers: a chunk of the sum, so that
//! the pool's per-task cost is paid once per million numbers, not once
//! per number. The results are folded on this thread as they arrive.
//!
//! Run with `cargo run --release -p seedcore --example parallel_sum`
//! (`-- 100000000` for a smaller total).

use seedcore::{ChunkSize, ConcurrentSystem};
use std::hint::black_box;
use std::ops::Range;
use std::time::Instant;

seedcore::process_task! {
    /// Sums one range of numbers, in a worker process.
    fn sum_range(r: (u64, u64)) -> u64 { sum(r.0..r.1) }
}

/// The sum of a range, one number at a time (the work being spread out).
fn sum(r: Range<u64>) -> u64 {
    let mut s = 0u64;
    for i in r {
        s = s.wrapping_add(black_box(i));
    }
    s
}

/// `n` split into ranges of about `size` numbers.
fn ranges(n: u64, size: u64) -> impl Iterator<Item = (u64, u64)> + Send {
    (0..n.div_ceil(size)).map(move |c| (c * size, ((c + 1) * size).min(n)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In a worker process this serves tasks and never returns.
    seedcore::init();
    let n: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 1_000_000_000,
    };
    let want = n * (n - 1) / 2;
    let system = ConcurrentSystem::new()?;
    println!(
        "sum of 0..{n} on {} threads / {} worker processes",
        system.config().threads.core,
        system.config().processes.core
    );

    let t = Instant::now();
    let one = sum(0..n);
    let sequential = t.elapsed();
    println!("one thread:        {one} in {sequential:?}");

    let t = Instant::now();
    let threads = system
        .map(ranges(n, 1_000_000), |(lo, hi)| sum(lo..hi))
        .chunk_size(ChunkSize::Fixed(1))
        .progress(true)
        .fold(0u64, u64::wrapping_add)?;
    let on_threads = t.elapsed();
    println!(
        "thread pool:       {threads} in {on_threads:?} ({:.2}x)",
        sequential.as_secs_f64() / on_threads.as_secs_f64()
    );

    let t = Instant::now();
    let processes = system
        .map_process(ranges(n, 10_000_000), sum_range)
        .chunk_size(ChunkSize::Fixed(1))
        .progress(true)
        .fold(0u64, u64::wrapping_add)?;
    let on_processes = t.elapsed();
    println!(
        "worker processes:  {processes} in {on_processes:?} ({:.2}x)",
        sequential.as_secs_f64() / on_processes.as_secs_f64()
    );

    assert_eq!(one, want);
    assert_eq!(threads, want);
    assert_eq!(processes, want);
    println!("all three agree with n(n-1)/2 = {want}");
    Ok(())
}
