//! Parallel patterns on worker processes: batched process maps, errors and
//! crashes in place, async tasks without a batch form, frame-size
//! splitting, cancellation, consumer stages and pipelines with process
//! stages.

seedcore::enable_test_workers!();

use seedcore::process::BatchItemError;
use seedcore::{
    ChunkSize, ConcurrentSystem, SharedBytes, Stage, SystemBuilder, TaskError, TaskOptions,
    WorkerOutput,
};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen soon.
const LONG: Duration = Duration::from_secs(30);

seedcore::process_task! {
    /// Doubles a number.
    fn double(x: u64) -> u64 { x * 2 }
}

seedcore::process_task! {
    /// Fails on multiples of 10, panics on numbers ending in 7.
    fn picky(x: u64) -> Result<u64, String> {
        if x % 10 == 7 {
            panic!("seven: {x}");
        }
        if x % 10 == 0 {
            Err(format!("round: {x}"))
        } else {
            Ok(x)
        }
    }
}

seedcore::process_task! {
    /// Kills its worker on 13.
    fn unlucky(x: u64) -> u64 {
        if x == 13 {
            std::process::abort();
        }
        x
    }
}

seedcore::process_task! {
    /// Sleeps `ms` milliseconds, then returns them.
    fn nap(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
}

seedcore::process_task! {
    /// An async task (no batch form): the length of a string.
    async fn async_len(s: String) -> usize { s.len() }
}

seedcore::process_task! {
    /// A sum of bytes, with the pid of the worker that did it.
    fn byte_sum(b: Vec<u8>) -> (u64, u32) {
        (b.iter().map(|&x| u64::from(x)).sum(), std::process::id())
    }
}

seedcore::process_task! {
    /// The sum of a shared buffer's bytes.
    fn shared_sum(b: SharedBytes) -> u64 {
        b.iter().map(|&x| u64::from(x)).sum()
    }
}

seedcore::process_task! {
    /// Box-filters 2x2 blocks of a shared RGB image of `w` x `h`.
    fn halve(img: SharedBytes, w: u32, h: u32) -> SharedBytes {
        let (w, h) = (w as usize, h as usize);
        let mut out = vec![0u8; (w / 2) * (h / 2) * 3];
        for y in 0..h / 2 {
            for x in 0..w / 2 {
                for c in 0..3 {
                    let at = |dx: usize, dy: usize| u32::from(img[((2 * y + dy) * w + 2 * x + dx) * 3 + c]);
                    out[(y * (w / 2) + x) * 3 + c] = ((at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1)) / 4) as u8;
                }
            }
        }
        SharedBytes::from_vec(out)
    }
}

/// Two worker processes, quiet, with a bounded shutdown.
fn builder(name: &str) -> SystemBuilder {
    ConcurrentSystem::builder()
        .name(name)
        .core_threads(2)
        .max_threads(4)
        .async_threads(1)
        .core_processes(2)
        .max_processes(2)
        .process_output(WorkerOutput::Discard)
        .shutdown_timeout(Duration::from_secs(10))
}

fn system(name: &str) -> ConcurrentSystem {
    builder(name).build().expect("valid test configuration")
}

#[test]
fn process_map_in_order_and_unordered() {
    let sys = system("pp-map");
    let got: Vec<u64> = sys
        .map_process(0..20_000u64, double)
        .ordered()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, (0..20_000u64).map(|x| x * 2).collect::<Vec<_>>());
    let mut un: Vec<u64> = sys
        .map_process(0..5_000u64, double)
        .chunk_size(ChunkSize::Fixed(7))
        .unordered()
        .collect::<Result<_, _>>()
        .unwrap();
    un.sort_unstable();
    assert_eq!(un, (0..5_000u64).map(|x| x * 2).collect::<Vec<_>>());
}

#[test]
fn process_item_errors_and_panics_stay_in_place() {
    let sys = system("pp-errors");
    let got: Vec<_> = sys
        .map_process(0..200u64, picky)
        .chunk_size(ChunkSize::Fixed(16))
        .ordered()
        .collect();
    assert_eq!(got.len(), 200);
    for (i, r) in got.into_iter().enumerate() {
        let i = i as u64;
        match r {
            Ok(v) => assert_eq!(v, i),
            Err(TaskError::Panicked(m)) => {
                assert_eq!(i % 10, 7);
                assert!(m.contains(&format!("seven: {i}")), "{m}");
            }
            Err(TaskError::Failed(e)) => {
                assert_eq!(i % 10, 0);
                assert_eq!(e.to_string(), format!("round: {i}"));
            }
            Err(e) => panic!("item {i}: unexpected {e}"),
        }
    }
}

#[test]
fn the_batch_form_submitted_directly_keeps_each_outcome_in_place() {
    let sys = system("pp-batch");
    let batch = picky.batch().expect("a sync task has a batch form");
    let results = sys
        .submit_process(TaskOptions::new(), batch, (0..30u64).collect())
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(results.len(), 30);
    assert_eq!(results.failed(), 6);
    let all: Vec<_> = results.into_iter().collect();
    for (i, r) in all.iter().enumerate() {
        let i = i as u64;
        match (i % 10, r) {
            (7, Err(BatchItemError::Panicked(m))) => assert!(m.contains(&format!("seven: {i}"))),
            (0, Err(BatchItemError::Failed(m))) => assert_eq!(m, &format!("round: {i}")),
            (_, Ok(v)) => assert_eq!(*v, i),
            (_, other) => panic!("item {i}: unexpected {other:?}"),
        }
    }
    // An empty batch is a call too.
    let none = sys
        .submit_process(TaskOptions::new(), batch, Vec::new())
        .unwrap()
        .wait()
        .unwrap();
    assert!(none.is_empty());
}

#[test]
fn process_map_stops_on_first_error() {
    let sys = system("pp-stop");
    let mut it = sys
        .map_process(1..100_000u64, picky)
        .chunk_size(ChunkSize::Fixed(5))
        .stop_on_error(true)
        .ordered();
    for i in 1..7 {
        assert_eq!(it.next().unwrap().unwrap(), i);
    }
    assert!(it.next().unwrap().unwrap_err().is_panic());
    assert!(it.next().is_none());
}

#[test]
fn a_crashing_worker_fails_only_its_chunk() {
    let sys = system("pp-crash");
    let got: Vec<_> = sys
        .map_process(0..40u64, unlucky)
        .chunk_size(ChunkSize::Fixed(4))
        .ordered()
        .collect();
    for (i, r) in got.into_iter().enumerate() {
        if (12..16).contains(&i) {
            assert!(
                r.as_ref().is_err_and(|e| e.is_worker_died()),
                "item {i}: {r:?}"
            );
        } else {
            assert_eq!(r.unwrap(), i as u64);
        }
    }
}

#[test]
fn a_process_chunk_timeout_kills_and_fails_that_chunk() {
    let sys = system("pp-timeout");
    let got: Vec<_> = sys
        .map_process(vec![1u64, 1, 5_000, 1, 1], nap)
        .options(TaskOptions::new().timeout(Duration::from_millis(500)))
        .chunk_size(ChunkSize::Fixed(1))
        .ordered()
        .collect();
    for (i, r) in got.iter().enumerate() {
        if i == 2 {
            assert!(r.as_ref().is_err_and(|e| e.is_timeout()), "{r:?}");
        } else {
            assert_eq!(*r.as_ref().unwrap(), 1);
        }
    }
}

#[test]
fn async_tasks_run_one_task_per_item() {
    let sys = system("pp-async");
    let words: Vec<String> = (0..100).map(|i| "x".repeat(i)).collect();
    let got: Vec<usize> = sys
        .map_process(words, async_len)
        .chunk_size(ChunkSize::Fixed(1))
        .max_in_flight(4)
        .ordered()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
}

#[test]
fn chunks_are_split_to_fit_the_frame_limit() {
    let sys = builder("pp-frame")
        .max_frame_bytes(256 << 10)
        .build()
        .unwrap();
    // 10 KiB items in chunks of 100 would be 1 MB frames: the map splits
    // them to fit 128 KiB.
    let items: Vec<Vec<u8>> = (0..300).map(|i| vec![(i % 251) as u8; 10 << 10]).collect();
    let got: Vec<u64> = sys
        .map_process(items, byte_sum)
        .chunk_size(ChunkSize::Fixed(100))
        .ordered()
        .map(|r| r.map(|(s, _)| s))
        .collect::<Result<_, _>>()
        .unwrap();
    let want: Vec<u64> = (0..300u64).map(|i| (i % 251) * (10 << 10)).collect();
    assert_eq!(got, want);
}

#[test]
fn chunks_are_split_to_carry_at_most_one_frame_of_shared_buffers() {
    let sys = system("pp-fds");
    // A chunk of 1,000 shared buffers would need 1,000 descriptors in one
    // frame; the map splits it.
    let items: Vec<SharedBytes> = (0..1_000u32)
        .map(|i| SharedBytes::from_slice(&i.to_le_bytes()).unwrap())
        .collect();
    let got: Vec<u64> = sys
        .map_process(items, shared_sum)
        .chunk_size(ChunkSize::Fixed(1_000))
        .ordered()
        .collect::<Result<_, _>>()
        .unwrap();
    let want: Vec<u64> = (0..1_000u32)
        .map(|i| i.to_le_bytes().iter().map(|&b| u64::from(b)).sum())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn process_chunks_spread_over_the_workers() {
    let sys = system("pp-spread");
    let pids: HashSet<u32> = sys
        .map_process((0..64).map(|_| vec![1u8; 1 << 20]), byte_sum)
        .chunk_size(ChunkSize::Fixed(1))
        .unordered()
        .map(|r| r.unwrap().1)
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
}

#[test]
fn a_process_map_past_its_deadline_yields_timed_out_and_stops_its_tasks() {
    let sys = std::sync::Arc::new(system("pp-deadline"));
    let s2 = sys.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let got: Vec<Result<u64, TaskError>> = s2
            .map_process(
                std::iter::once(0)
                    .chain(std::iter::repeat(120_000))
                    .take(50),
                nap,
            )
            .chunk_size(ChunkSize::Fixed(1))
            .max_in_flight(6)
            .timeout(Duration::from_millis(1_500))
            .ordered()
            .collect();
        let _ = tx.send(got);
    });
    let got = rx
        .recv_timeout(LONG)
        .expect("the map did not end: it hangs");
    // The first nap is short; it may or may not beat the deadline on a
    // loaded machine. The long ones cannot.
    let (last, done) = got.split_last().expect("the map yields its timeout");
    assert!(matches!(last, Err(TaskError::TimedOut(_))), "{got:?}");
    assert!(done.iter().all(|r| r.as_ref().ok() == Some(&0)), "{got:?}");
    assert!(done.len() <= 1, "{got:?}");
    // The running naps were stopped (their workers killed), not left to
    // sleep on: a new task runs at once, well before any nap could end.
    let f = sys.submit_process(TaskOptions::new(), double, 21).unwrap();
    assert_eq!(f.wait_timeout(LONG).ok().unwrap().unwrap(), 42);
    assert!(sys.stats().cancelled >= 2, "{:?}", sys.stats());
}

#[test]
fn a_process_map_within_its_deadline_yields_every_result() {
    let sys = system("pp-deadline-met");
    let got: Vec<u64> = sys
        .map_process(0..2_000u64, double)
        .timeout(LONG)
        .ordered()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, (0..2_000u64).map(|x| x * 2).collect::<Vec<_>>());
}

#[test]
fn dropping_a_process_map_cancels_its_chunks() {
    let sys = system("pp-drop");
    let mut it = sys
        .map_process(
            std::iter::once(0).chain(std::iter::repeat(2_000)).take(100),
            nap,
        )
        .chunk_size(ChunkSize::Fixed(1))
        .max_in_flight(8)
        .ordered();
    assert_eq!(it.next().unwrap().unwrap(), 0);
    let t = Instant::now();
    drop(it);
    // The outstanding naps are cancelled (their workers killed): a new
    // task runs at once.
    let f = sys.submit_process(TaskOptions::new(), double, 21).unwrap();
    assert_eq!(f.wait().unwrap(), 42);
    assert!(sys.stats().cancelled >= 6, "{:?}", sys.stats());
    assert!(t.elapsed() < LONG);
}

#[test]
fn a_process_consumer_stage_reads_a_channel() {
    let sys = system("pp-consume");
    let (rx, producer) = sys
        .produce("reader", 4, |tx, _ctx| {
            for i in 0..1_000u64 {
                if tx.send(i).is_err() {
                    return false;
                }
            }
            true
        })
        .unwrap();
    let sum: u64 = sys
        .consume_process(rx, double)
        .unordered()
        .map(Result::unwrap)
        .sum();
    assert_eq!(sum, 2 * (0..1_000u64).sum::<u64>());
    assert!(producer.wait().unwrap());
}

#[test]
fn a_pipeline_mixes_thread_and_process_stages() {
    let sys = system("pp-pipeline");
    let (w, h) = (32u32, 16u32);
    let out: Vec<_> = sys
        .pipeline(0..20u8)
        .stage(
            Stage::thread(move |i: u8| {
                let img = SharedBytes::from_vec(vec![i; (w * h * 3) as usize]);
                (img, w, h)
            })
            .name("generate"),
        )
        .stage(Stage::process(halve).name("halve").concurrency(2))
        .stage(
            Stage::try_thread(|img: SharedBytes| {
                let v = img[0];
                if v == 13 {
                    Err("thirteen")
                } else {
                    Ok((v, img.len()))
                }
            })
            .name("check"),
        )
        .run()
        .collect();
    assert_eq!(out.len(), 20);
    let mut seen = HashSet::new();
    for r in out {
        match r {
            Ok((v, len)) => {
                assert_eq!(len, (w / 2 * h / 2 * 3) as usize);
                seen.insert(v);
            }
            Err(e) => {
                assert_eq!(e.stage_name(), Some("check"));
                assert!(e.to_string().contains("thirteen"), "{e}");
            }
        }
    }
    assert_eq!(seen, (0..20u8).filter(|&v| v != 13).collect::<HashSet<_>>());
}

#[test]
fn a_failing_process_stage_item_reaches_the_output() {
    let sys = system("pp-pipeline-fail");
    let out: Vec<_> = sys
        .pipeline(0..50u64)
        .stage(Stage::process(picky).name("picky"))
        .stage(Stage::process(double).chunk_size(ChunkSize::Fixed(4)))
        .run()
        .collect();
    assert_eq!(out.len(), 50);
    let ok: HashSet<u64> = out
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let want: HashSet<u64> = (0..50u64)
        .filter(|x| x % 10 != 0 && x % 10 != 7)
        .map(|x| x * 2)
        .collect();
    assert_eq!(ok, want);
    for e in out.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!((e.stage(), e.stage_name()), (0, Some("picky")));
    }
}
