//! Parallel patterns on the thread pool: ordered and unordered maps,
//! errors in place and stop-on-error, backpressure, cancellation, chunk
//! timeouts and retries, streams, folds, channels and pipelines.

use crate::common;

use common::{builder, eventually, system, Gate, LONG, PANIC_MARKER};
use futures_util::StreamExt;
use seedcore::channel::bounded;
use seedcore::parallel::{MapIter, PipelineIter};
use seedcore::{
    ChunkSize, ConcurrentSystem, Priority, RetryOn, RetryPolicy, ShutdownMode, Stage, TaskError,
    TaskOptions,
};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Some CPU work whose cost varies with `i`, so that chunks finish out of
/// order.
fn work(i: u64) -> u64 {
    let mut x = i | 1;
    for _ in 0..(i % 7) * 200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x);
    i * 2
}

#[test]
fn ordered_map_keeps_input_order() {
    let sys = system("par-ordered", 2, 4);
    let got: Vec<u64> = sys
        .map(0..20_000u64, work)
        .ordered()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, (0..20_000u64).map(|i| i * 2).collect::<Vec<_>>());
}

#[test]
fn ordered_map_with_fixed_chunks_and_small_window() {
    let sys = system("par-ordered-fixed", 2, 4);
    for chunk in [1, 3, 64, 100_000] {
        let got: Vec<u64> = sys
            .map(0..1_000u64, work)
            .chunk_size(ChunkSize::Fixed(chunk))
            .max_in_flight(2)
            .ordered()
            .collect::<Result<_, _>>()
            .unwrap();
        let want: Vec<u64> = (0..1_000u64).map(|i| i * 2).collect();
        assert_eq!(got, want, "chunk {chunk}");
    }
}

#[test]
fn collect_vec_keeps_order_and_stops_at_the_first_error() {
    let sys = system("par-collect", 2, 4);
    let all = sys.map(0..50_000u64, work).collect_vec().unwrap();
    assert_eq!(all, (0..50_000u64).map(|i| i * 2).collect::<Vec<_>>());
    let small = sys
        .map(vec![3u8, 1, 2], |x| x)
        .chunk_size(ChunkSize::Fixed(1))
        .collect_vec()
        .unwrap();
    assert_eq!(small, [3, 1, 2]);
    let e = sys
        .try_map(0..10_000u64, |i| {
            if i == 7_000 || i == 9_000 {
                Err(format!("bad {i}"))
            } else {
                Ok(i)
            }
        })
        .chunk_size(ChunkSize::Fixed(100))
        .collect_vec()
        .unwrap_err();
    assert_eq!(e.to_string(), "task failed: bad 7000");
    assert!(sys.map(0..0u64, |x| x).collect_vec().unwrap().is_empty());
}

#[test]
fn empty_input_ends_at_once() {
    let sys = system("par-empty", 2, 4);
    let mut it = sys.map(Vec::<u64>::new(), |x| x).ordered();
    assert!(it.next().is_none());
    assert!(it.next().is_none());
    assert_eq!(sys.map(0..0u64, |x| x).count().unwrap(), 0);
}

#[test]
fn unordered_map_yields_others_while_one_item_is_stuck() {
    let sys = system("par-unordered", 2, 4);
    let gate = Gate::new();
    let g = gate.clone();
    let mut it = sys
        .map(0..50u64, move |i| {
            if i == 0 {
                assert!(g.wait(), "the test never released item 0");
            }
            i
        })
        .chunk_size(ChunkSize::Fixed(1))
        .unordered();
    // Item 0 holds one pool thread until the test has seen ten others.
    let mut seen = HashSet::new();
    for _ in 0..10 {
        let v = it.next().unwrap().unwrap();
        assert_ne!(v, 0, "item 0 cannot finish before it is released");
        seen.insert(v);
    }
    gate.open();
    for r in it {
        assert!(seen.insert(r.unwrap()), "an item came twice");
    }
    assert_eq!(seen, (0..50).collect::<HashSet<_>>());
}

#[test]
fn item_errors_and_panics_are_reported_in_place() {
    let sys = system("par-errors", 2, 4);
    for ordered in [true, false] {
        let b = sys
            .try_map(0..1000u64, |i| match i % 10 {
                3 => Err(format!("bad {i}")),
                7 => panic!("{PANIC_MARKER} {i}"),
                _ => Ok(i),
            })
            .chunk_size(ChunkSize::Fixed(16));
        let it = if ordered { b.ordered() } else { b.unordered() };
        let mut n = 0;
        for (pos, r) in it.enumerate() {
            n += 1;
            match r {
                Ok(v) => {
                    assert!(v % 10 != 3 && v % 10 != 7);
                    if ordered {
                        assert_eq!(v, pos as u64);
                    }
                }
                Err(TaskError::Failed(e)) => {
                    assert!(e.to_string().starts_with("bad "), "{e}");
                    if ordered {
                        assert_eq!(e.to_string(), format!("bad {pos}"));
                    }
                }
                Err(TaskError::Panicked(m)) => assert!(m.contains(PANIC_MARKER), "{m}"),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!(n, 1000);
    }
}

#[test]
fn stop_on_error_ends_the_map_and_cancels_the_rest() {
    let sys = system("par-stop", 2, 4);
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let (chunk, window) = (10, 4);
    let mut it = sys
        .try_map(0..100_000u64, move |i| {
            r.fetch_add(1, Ordering::Relaxed);
            if i == 505 {
                Err("item 505 is bad")
            } else {
                Ok(i)
            }
        })
        .chunk_size(ChunkSize::Fixed(chunk))
        .max_in_flight(window)
        .stop_on_error(true)
        .ordered();
    for i in 0..505 {
        assert_eq!(it.next().unwrap().unwrap(), i);
    }
    let e = it.next().unwrap().unwrap_err();
    assert!(e.is_failed(), "{e}");
    assert!(it.next().is_none());
    assert!(it.next().is_none());
    drop(it);
    // Nothing new starts after the stop: at most the window beyond the
    // failing chunk ever ran.
    let bound = 510 + (window + 1) * chunk;
    assert!(eventually(LONG, || sys.stats().running == 0));
    let n = ran.load(Ordering::Relaxed);
    assert!(n <= bound, "{n} items ran");
}

#[test]
fn stop_on_error_unordered_yields_one_error() {
    let sys = system("par-stop-unordered", 2, 4);
    let results: Vec<_> = sys
        .try_map(0..10_000u64, |i| {
            if i % 1000 == 999 {
                Err("bad")
            } else {
                Ok(i)
            }
        })
        .chunk_size(ChunkSize::Fixed(50))
        .stop_on_error(true)
        .unordered()
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    assert!(results.last().unwrap().is_err());
    assert!(results.len() < 10_000);
}

#[test]
fn a_huge_lazy_input_is_pulled_only_as_far_as_the_window() {
    let sys = system("par-backpressure", 2, 4);
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let input = (0..10_000_000u64).inspect(move |_| {
        p.fetch_add(1, Ordering::Relaxed);
    });
    let (chunk, window) = (8, 6);
    let mut it = sys
        .map(input, |x| x + 1)
        .chunk_size(ChunkSize::Fixed(chunk))
        .max_in_flight(window)
        .ordered();
    for i in 0..1000 {
        assert_eq!(it.next().unwrap().unwrap(), i + 1);
        // At every step: what was consumed, the chunks in flight, and one
        // chunk being read.
        let n = pulled.load(Ordering::Relaxed);
        assert!(
            n <= (i as usize + 1) + (window + 1) * chunk,
            "pulled {n} after {i}"
        );
    }
    drop(it);
    let n = pulled.load(Ordering::Relaxed);
    assert!(n <= 1000 + (window + 1) * chunk, "pulled {n}");
    assert_eq!(pulled.load(Ordering::Relaxed), n, "dropped map still pulls");
}

#[test]
fn automatic_chunks_stay_within_their_bound() {
    let sys = system("par-backpressure-auto", 2, 4);
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let input = (0..10_000_000u64).inspect(move |_| {
        p.fetch_add(1, Ordering::Relaxed);
    });
    let (max, window) = (512, 4);
    let taken = sys
        .map(input, |x| x)
        .chunk_size(ChunkSize::Adaptive {
            min: 1,
            max,
            target: Duration::from_micros(200),
        })
        .max_in_flight(window)
        .unordered()
        .take(5_000)
        .count();
    assert_eq!(taken, 5_000);
    let n = pulled.load(Ordering::Relaxed);
    assert!(n <= 5_000 + (window + 1) * max, "pulled {n}");
}

#[test]
fn a_long_map_of_known_length_runs_in_fewer_chunks_unless_it_has_a_timeout() {
    let sys = system("par-guided", 2, 2);
    // About a microsecond an item: the plain 500 µs target is some 500
    // items a chunk, 400 chunks for the map.
    let item = |i: u64| {
        let mut x = i | 1;
        for _ in 0..400 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
        i + 1
    };
    let n = 200_000u64;
    let chunks = |opts: TaskOptions| {
        let before = sys.stats().submitted;
        let out = sys.map(0..n, item).options(opts).collect_vec().unwrap();
        assert!(out.iter().copied().eq(1..=n), "results out of order");
        sys.stats().submitted - before
    };
    let guided = chunks(TaskOptions::new());
    // A timeout applies per chunk: such a map keeps the plain chunks.
    let plain = chunks(TaskOptions::new().timeout(Duration::from_secs(60)));
    assert!(
        guided * 3 <= plain,
        "guided: {guided} chunks, with a timeout: {plain}"
    );
}

#[test]
fn cancelling_a_map_cancels_its_chunks() {
    let sys = system("par-cancel", 2, 4);
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let mut it = sys
        .map(0..10_000u64, move |i| {
            r.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(1));
            i
        })
        .chunk_size(ChunkSize::Fixed(4))
        .max_in_flight(8)
        .ordered();
    for i in 0..20 {
        assert_eq!(it.next().unwrap().unwrap(), i);
    }
    it.cancel();
    assert!(it.next().is_none());
    assert!(eventually(LONG, || sys.stats().running == 0));
    let stats = sys.stats();
    assert!(stats.cancelled >= 1, "{stats:?}");
    let n = ran.load(Ordering::Relaxed);
    assert!(n < 200, "{n} ran");
}

#[test]
fn dropping_a_map_cancels_its_chunks() {
    let sys = system("par-drop", 2, 4);
    let gate = Gate::new();
    let g = gate.clone();
    let mut it = sys
        .map(0..1_000u64, move |i| {
            if i > 0 {
                g.wait();
            }
            i
        })
        .chunk_size(ChunkSize::Fixed(1))
        .max_in_flight(6)
        .unordered();
    assert_eq!(it.next().unwrap().unwrap(), 0);
    drop(it);
    gate.open();
    assert!(eventually(LONG, || sys.stats().running == 0));
    // Six chunks were outstanding (two of them running): all cancelled.
    assert!(sys.stats().cancelled >= 4, "{:?}", sys.stats());
}

/// Runs `f` on its own thread; fails the test if it takes longer than
/// [`LONG`] (a hang ends in a failure, not a stuck test run).
fn within_long<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(LONG)
        .expect("the map did not end: it hangs")
}

#[test]
fn a_map_past_its_deadline_yields_timed_out_cancels_the_rest_and_ends() {
    let sys = Arc::new(system("par-deadline", 2, 2));
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let (s2, st, fi) = (sys.clone(), started.clone(), finished.clone());
    let got: Vec<Result<u64, TaskError>> = within_long(move || {
        s2.map(0..200u64, move |i| {
            st.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(200));
            fi.fetch_add(1, Ordering::SeqCst);
            i
        })
        .chunk_size(ChunkSize::Fixed(1))
        .timeout(Duration::from_millis(300))
        .ordered()
        .collect()
    });
    // Whatever finished in time, in order, then one timeout, then the end.
    let (last, done) = got.split_last().expect("the map yields its timeout");
    assert!(
        matches!(last, Err(TaskError::TimedOut(d)) if *d == Duration::from_millis(300)),
        "{last:?}"
    );
    for (i, r) in done.iter().enumerate() {
        assert_eq!(r.as_ref().ok(), Some(&(i as u64)), "{r:?}");
    }
    assert!(done.len() < 200, "every item finished: no timeout was due");
    // The chunks still out were cancelled: once the running ones end,
    // nothing else starts.
    assert!(eventually(LONG, || sys.stats().running == 0));
    let ran = started.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        started.load(Ordering::SeqCst),
        ran,
        "items started after the timeout"
    );
    assert_eq!(finished.load(Ordering::SeqCst), ran);
    assert!(ran < 200, "{ran} items ran");
    assert!(sys.stats().cancelled >= 1, "{:?}", sys.stats());

    // The same for a fold and for a stream: the timeout is their error.
    let s3 = sys.clone();
    let folded = within_long(move || {
        s3.map(0..200u64, |i| {
            std::thread::sleep(Duration::from_millis(200));
            i
        })
        .chunk_size(ChunkSize::Fixed(1))
        .deadline(std::time::Instant::now() + Duration::from_millis(100))
        .fold(0, |a, x| a + x)
    });
    assert!(matches!(folded, Err(TaskError::TimedOut(_))), "{folded:?}");
    let s4 = sys.clone();
    let streamed: Vec<Result<u64, TaskError>> = within_long(move || {
        common::block_on(
            s4.map(0..200u64, |i| {
                std::thread::sleep(Duration::from_millis(200));
                i
            })
            .chunk_size(ChunkSize::Fixed(1))
            .timeout(Duration::from_millis(100))
            .unordered()
            .into_stream()
            .collect(),
        )
    });
    assert!(
        matches!(streamed.last(), Some(Err(TaskError::TimedOut(_)))),
        "{streamed:?}"
    );
    assert_eq!(streamed.iter().filter(|r| r.is_err()).count(), 1);
}

#[test]
fn a_map_that_ends_before_its_deadline_yields_every_result() {
    let sys = system("par-deadline-met", 2, 4);
    let want: Vec<u64> = (0..5_000u64).map(|i| i * 2).collect();
    let got: Vec<u64> = sys
        .map(0..5_000u64, work)
        .timeout(LONG)
        .ordered()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, want);
    let mut got: Vec<u64> = sys
        .map(0..5_000u64, work)
        .deadline(std::time::Instant::now() + LONG)
        .unordered()
        .collect::<Result<_, _>>()
        .unwrap();
    got.sort_unstable();
    assert_eq!(got, want);
    // Results that arrived in time are still read after the deadline:
    // one chunk holds every item, so the first brings them all.
    let mut it = sys
        .map(0..4u64, |i| i)
        .chunk_size(ChunkSize::Fixed(4))
        .timeout(Duration::from_millis(200))
        .ordered();
    assert_eq!(it.next().unwrap().unwrap(), 0);
    std::thread::sleep(Duration::from_millis(300));
    let rest: Vec<u64> = it.collect::<Result<_, _>>().unwrap();
    assert_eq!(rest, [1, 2, 3]);
}

#[test]
fn a_chunk_timeout_fails_its_items_only() {
    let sys = system("par-timeout", 2, 4);
    let got: Vec<_> = sys
        .map(0..8u64, |i| {
            if i == 5 {
                std::thread::sleep(Duration::from_secs(2));
            }
            i
        })
        .options(TaskOptions::new().timeout(Duration::from_millis(300)))
        .chunk_size(ChunkSize::Fixed(1))
        .ordered()
        .collect();
    for (i, r) in got.iter().enumerate() {
        if i == 5 {
            assert!(r.as_ref().is_err_and(|e| e.is_timeout()), "{r:?}");
        } else {
            assert_eq!(*r.as_ref().unwrap(), i as u64);
        }
    }
}

#[test]
fn a_retried_chunk_goes_on_where_the_timed_out_attempt_stopped() {
    let sys = system("par-retry", 2, 4);
    let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..4).map(|_| AtomicUsize::new(0)).collect());
    let r = runs.clone();
    let slow_once = Arc::new(AtomicBool::new(true));
    let got: Vec<u64> = sys
        .map(0..4u64, move |i| {
            r[i as usize].fetch_add(1, Ordering::SeqCst);
            if i == 1 && slow_once.swap(false, Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(500));
            }
            i * 10
        })
        .options(
            TaskOptions::new()
                .timeout(Duration::from_millis(300))
                .retry(RetryPolicy::retries(5).on(RetryOn::TIMEOUT)),
        )
        .chunk_size(ChunkSize::Fixed(4))
        .ordered()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, [0, 10, 20, 30]);
    for (i, n) in runs.iter().enumerate() {
        assert_eq!(n.load(Ordering::SeqCst), 1, "item {i} ran more than once");
    }
    assert!(sys.stats().retried >= 1);
}

#[test]
fn submission_errors_are_reported_per_item() {
    let sys = system("par-closed", 2, 4);
    sys.shutdown(ShutdownMode::Graceful);
    let got: Vec<_> = sys.map(0..5u64, |x| x).ordered().collect();
    assert_eq!(got.len(), 5);
    assert!(got
        .iter()
        .all(|r| matches!(r, Err(TaskError::SystemShutdown))));
}

#[test]
fn starmap_unpacks_tuples() {
    let sys = system("par-starmap", 2, 4);
    let got: Vec<String> = sys
        .starmap(
            vec![(1u8, 'a', "x"), (2, 'b', "y")],
            |n: u8, c: char, s: &str| format!("{n}{c}{s}"),
        )
        .ordered()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, ["1ax", "2by"]);
}

#[test]
fn folds_reduce_as_results_arrive() {
    let sys = system("par-fold", 2, 4);
    let sum = sys.map_reduce(0..100_000u64, |x| x * x, 0u128, |a, x| a + u128::from(x));
    assert_eq!(sum.unwrap(), (0..100_000u128).map(|x| x * x).sum());
    let product = sys.map(1..=10u64, |x| x).reduce(|a, b| a * b).unwrap();
    assert_eq!(product, Some(3_628_800));
    assert_eq!(sys.map(0..0u64, |x| x).reduce(|a, b| a + b).unwrap(), None);
    let e = sys
        .try_map(0..1000u64, |x| if x == 500 { Err("no") } else { Ok(x) })
        .fold(0, |a, x| a + x)
        .unwrap_err();
    assert!(e.is_failed());
    let all = sys
        .try_map(0..1000u64, |x| if x % 100 == 0 { Err("no") } else { Ok(x) })
        .fold_all(0, |a, x| a + x);
    assert_eq!(all.succeeded, 990);
    assert_eq!(all.errors.len(), 10);
    assert_eq!(
        all.value,
        (0..1000u64).filter(|x| x % 100 != 0).sum::<u64>()
    );
    let mut seen = 0;
    sys.map(0..300u64, |x| x).for_each(|_| seen += 1).unwrap();
    assert_eq!(seen, 300);
}

#[test]
fn a_map_is_a_stream_too() {
    let sys = system("par-stream", 2, 4);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let got: Vec<u64> = rt.block_on(async {
        let mut s = sys.map(0..5_000u64, work).ordered().into_stream();
        let mut v = Vec::new();
        while let Some(r) = s.next().await {
            v.push(r.unwrap());
        }
        v
    });
    assert_eq!(got, (0..5_000u64).map(|i| i * 2).collect::<Vec<_>>());
}

#[test]
fn maps_and_pipelines_are_send() {
    fn is_send<T: Send>() {}
    is_send::<MapIter<'static, u64>>();
    is_send::<seedcore::parallel::MapStream<'static, String>>();
    is_send::<PipelineIter<'static, u64>>();
    is_send::<seedcore::channel::Sender<u64>>();
    is_send::<seedcore::channel::Receiver<u64>>();
}

#[test]
fn a_consumer_stage_reads_a_channel() {
    let sys = system("par-consume", 2, 4);
    let (rx, producer) = sys
        .produce("numbers", 8, |tx, _ctx| {
            for i in 0..10_000u64 {
                tx.send(i).unwrap();
            }
            "done"
        })
        .unwrap();
    let total: u64 = sys
        .consume(rx, |x| x * 3)
        .max_in_flight(4)
        .unordered()
        .map(Result::unwrap)
        .sum();
    assert_eq!(total, 3 * (0..10_000u64).sum::<u64>());
    assert_eq!(producer.wait().unwrap(), "done");
}

#[test]
fn a_slow_consumer_holds_back_the_producer() {
    let sys = system("par-consume-slow", 2, 4);
    let sent = Arc::new(AtomicUsize::new(0));
    let s = sent.clone();
    let (tx, rx) = bounded(4);
    let producer = std::thread::spawn(move || {
        for i in 0..100_000u64 {
            if tx.send(i).is_err() {
                break;
            }
            s.fetch_add(1, Ordering::Relaxed);
        }
    });
    let mut it = sys
        .consume(rx, |x| x)
        .chunk_size(ChunkSize::Fixed(2))
        .max_in_flight(3)
        .ordered();
    for i in 0..100 {
        assert_eq!(it.next().unwrap().unwrap(), i);
    }
    // Give the producer time to run ahead if it could. Consumed 100; at
    // most 3 chunks of 2 in flight plus one being read; 4 in the channel.
    std::thread::sleep(Duration::from_millis(50));
    let n = sent.load(Ordering::Relaxed);
    assert!(n <= 100 + 4 * 2 + 4 + 1, "sent {n}");
    drop(it);
    producer.join().unwrap();
}

#[test]
fn pipeline_stages_pass_failures_to_the_output() {
    let sys = system("par-pipeline", 2, 4);
    let out: Vec<_> = sys
        .pipeline(0..1000u64)
        .stage(Stage::thread(|x: u64| x + 1).name("inc").concurrency(3))
        .stage(
            Stage::try_thread(|x: u64| {
                if x % 5 == 0 {
                    Err("multiple of five")
                } else {
                    Ok(x)
                }
            })
            .name("check")
            .chunk_size(ChunkSize::Fixed(8)),
        )
        .stage(Stage::thread(|x: u64| {
            if x % 7 == 0 {
                panic!("{PANIC_MARKER} seven");
            }
            x.to_string()
        }))
        .run()
        .collect();
    assert_eq!(out.len(), 1000);
    let mut values = HashSet::new();
    let (mut failed1, mut failed2) = (0, 0);
    for r in out {
        match r {
            Ok(s) => {
                values.insert(s.parse::<u64>().unwrap());
            }
            Err(e) if e.stage() == 1 => {
                assert_eq!(e.stage_name(), Some("check"));
                assert!(e.error().is_failed());
                failed1 += 1;
            }
            Err(e) => {
                assert_eq!((e.stage(), e.stage_name()), (2, None));
                assert!(e.error().is_panic(), "{e}");
                failed2 += 1;
            }
        }
    }
    let want: HashSet<u64> = (1..=1000).filter(|x| x % 5 != 0 && x % 7 != 0).collect();
    assert_eq!(values, want);
    assert_eq!(failed1, 200);
    let sevens = (1..=1000u64).filter(|x| x % 5 != 0 && x % 7 == 0).count();
    assert_eq!(failed2, sevens);
}

#[test]
fn a_pipeline_pulls_its_input_only_as_far_as_its_buffers() {
    let sys = system("par-pipeline-bp", 2, 4);
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let input = (0..10_000_000u64).inspect(move |_| {
        p.fetch_add(1, Ordering::Relaxed);
    });
    let mut out = sys
        .pipeline(input)
        .stage(Stage::thread(|x: u64| x).concurrency(2).buffer(2))
        .stage(Stage::thread(|x: u64| x).concurrency(2).buffer(2))
        .run();
    for _ in 0..100 {
        out.next().unwrap().unwrap();
    }
    // Consumed, plus what the output holds (it takes up to 64 at a time),
    // plus per stage at most concurrency + buffer one-item chunks and one
    // being handed on.
    let n = pulled.load(Ordering::Relaxed);
    assert!(n <= 100 + 64 + 2 * (4 + 1), "pulled {n}");
    out.cancel();
    assert!(out.next().is_none());
}

#[test]
fn a_pipeline_can_read_a_channel_and_be_a_stream() {
    let sys = builder("par-pipeline-chan").build().unwrap();
    let (tx, rx) = bounded(2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    std::thread::spawn(move || {
        for w in ["alpha", "beta", "gamma"] {
            tx.send(w.to_string()).unwrap();
        }
    });
    let mut got: Vec<usize> = rt.block_on(async {
        sys.pipeline_from(rx)
            .stage(Stage::thread(|s: String| s.len()))
            .run()
            .into_stream()
            .map(|r| r.unwrap())
            .collect()
            .await
    });
    got.sort();
    assert_eq!(got, [4, 5, 5]);
}

#[test]
fn map_options_set_chunk_priority() {
    // One pool thread, held by a blocker: queued chunks of a HIGH map start
    // before the LOW tasks queued earlier.
    let sys: ConcurrentSystem = builder("par-priority")
        .core_threads(1)
        .max_threads(1)
        .build()
        .unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let started = Gate::new();
    let st = started.clone();
    let blocker = sys
        .submit_thread(TaskOptions::new(), move |_| {
            st.open();
            g.wait();
        })
        .unwrap();
    assert!(started.wait());
    let order = Arc::new(Mutex::new(Vec::new()));
    let low: Vec<_> = (0..3)
        .map(|_| {
            let o = order.clone();
            sys.submit_thread(TaskOptions::new().priority(Priority::LOW), move |_| {
                o.lock().unwrap().push("low")
            })
            .unwrap()
        })
        .collect();
    let o = order.clone();
    std::thread::scope(|scope| {
        // Open the gate once the map's three chunks are queued (the map
        // submits them on its first poll, from the thread that reads it).
        let sys = &sys;
        scope.spawn(move || {
            let high = usize::from(Priority::HIGH.level());
            assert!(eventually(LONG, || {
                common::threads(&sys.stats()).queue_depth[high] == 3
            }));
            gate.open();
        });
        let done = sys
            .map(0..3u64, move |_| o.lock().unwrap().push("map"))
            .options(TaskOptions::new().priority(Priority::HIGH))
            .chunk_size(ChunkSize::Fixed(1))
            .unordered()
            .count();
        assert_eq!(done, 3);
    });
    blocker.wait().unwrap();
    for f in low {
        f.wait().unwrap();
    }
    let log = order.lock().unwrap().clone();
    assert_eq!(log, ["map", "map", "map", "low", "low", "low"]);
}

#[test]
fn a_map_and_a_pipeline_iterated_in_a_task_of_a_full_pool_finish() {
    // The only pool thread runs the task that iterates: the chunks queued
    // behind it run on the thread the pool starts while that task waits.
    let sys = Arc::new(system("par-nested-full", 1, 1));
    let inner = sys.clone();
    let f = sys
        .submit_thread(TaskOptions::new(), move |_| {
            let mapped: u64 = inner
                .map(0..1_000u64, work)
                .ordered()
                .map(|r| r.unwrap())
                .sum();
            let piped: u64 = inner
                .pipeline(0..100u64)
                .stage(Stage::thread(|i: u64| i + 1))
                .run()
                .map(|r| r.unwrap())
                .sum();
            (mapped, piped)
        })
        .unwrap();
    let (mapped, piped) = f
        .wait_timeout(Duration::from_secs(30))
        .expect("the nested map and pipeline ended")
        .unwrap();
    assert_eq!(mapped, (0..1_000u64).map(|i| i * 2).sum::<u64>());
    assert_eq!(piped, (1..=100u64).sum::<u64>());
}

#[test]
fn a_producer_and_a_consumer_task_on_a_one_thread_pool_meet_over_a_channel() {
    // The consumer takes the only thread and waits for items that the
    // producer, queued behind it, sends into a channel of one slot.
    let sys = system("par-channel-full", 1, 1);
    let (tx, rx) = bounded::<u64>(1);
    let consumer = sys
        .submit_thread(TaskOptions::new(), move |_| rx.iter().sum::<u64>())
        .unwrap();
    let producer = sys
        .submit_thread(TaskOptions::new(), move |_| {
            for i in 0..100u64 {
                tx.send(i).unwrap();
            }
        })
        .unwrap();
    producer
        .wait_timeout(Duration::from_secs(30))
        .expect("the producer ended")
        .unwrap();
    let total = consumer
        .wait_timeout(Duration::from_secs(30))
        .expect("the consumer ended")
        .unwrap();
    assert_eq!(total, (0..100u64).sum::<u64>());
}
