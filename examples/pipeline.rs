//! A three-stage pipeline: documents are generated on the thread pool,
//! analysed in worker processes (the stage that runs "untrusted" code),
//! and summarised on the thread pool again. Each stage has its own pool
//! and concurrency; the stages are joined by bounded buffers, so the input
//! is read only as fast as the slowest stage goes. A document that fails
//! in a stage comes out as an error naming the stage; the rest go on.
//!
//! Run with `cargo run --release -p seedcore --example pipeline`.

use seedcore::{ConcurrentSystem, Stage, TaskOptions};
use std::collections::HashMap;
use std::time::{Duration, Instant};

seedcore::process_task! {
    /// Counts the words of a document and finds its most frequent one. A
    /// stand-in for a parser that may crash on bad input: it refuses
    /// documents that contain "corrupt".
    fn analyse(doc: (u32, String)) -> Result<(u32, usize, String, usize), String> {
        let (id, text) = doc;
        if text.contains("corrupt") {
            return Err(format!("document {id} is corrupt"));
        }
        let mut counts: HashMap<&str, usize> = HashMap::new();
        let mut words = 0;
        for w in text.split_whitespace() {
            *counts.entry(w).or_default() += 1;
            words += 1;
        }
        let (top, n) = counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(w, n)| (w.to_owned(), n))
            .unwrap_or_default();
        Ok((id, words, top, n))
    }
}

const WORDS: [&str; 12] = [
    "alpha", "beta", "gamma", "delta", "task", "pool", "future", "chunk", "stage", "queue",
    "worker", "retry",
];

/// A synthetic document of a few thousand words.
fn generate(id: u32) -> (u32, String) {
    // Wrapping: a hash of the id, not an amount (debug builds check overflow).
    let mut x = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n = 2_000 + (id as usize % 7) * 500;
    let mut text = String::with_capacity(n * 7);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Skewed: low indices are more frequent.
        let i = ((x % 144) as f64).sqrt() as usize;
        text.push_str(WORDS[i.min(WORDS.len() - 1)]);
        text.push(' ');
    }
    if id % 25 == 24 {
        text.push_str("corrupt");
    }
    (id, text)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In a worker process this serves tasks and never returns.
    seedcore::init();
    let system = ConcurrentSystem::new()?;
    let docs = 200u32;
    let t = Instant::now();
    let mut summaries = Vec::new();
    let mut failures = Vec::new();
    let output = system
        .pipeline(0..docs)
        .stage(Stage::thread(generate).name("generate").concurrency(2))
        .stage(
            Stage::process(analyse)
                .name("analyse")
                .concurrency(system.config().processes.core)
                .buffer(4)
                .options(TaskOptions::new().timeout(Duration::from_secs(10))),
        )
        .stage(
            Stage::thread(|(id, words, top, n): (u32, usize, String, usize)| {
                format!(
                    "doc {id:>3}: {words:>5} words, top `{top}` ({:.0}%)",
                    100.0 * n as f64 / words as f64
                )
            })
            .name("summarise"),
        )
        .progress(true)
        .run();
    for item in output {
        match item {
            Ok(line) => summaries.push(line),
            Err(e) => failures.push(e),
        }
    }
    summaries.sort();
    for line in summaries.iter().take(5) {
        println!("{line}");
    }
    println!("...");
    for e in &failures {
        println!("failed: {e}");
    }
    println!(
        "{} documents summarised, {} failed, in {:?}",
        summaries.len(),
        failures.len(),
        t.elapsed()
    );
    assert_eq!(summaries.len() + failures.len(), docs as usize);
    assert!(failures
        .iter()
        .all(|e| e.stage_name() == Some("analyse") && e.error().is_failed()));
    assert_eq!(failures.len(), (docs / 25) as usize);
    Ok(())
}
