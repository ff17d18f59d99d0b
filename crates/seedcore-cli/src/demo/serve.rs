//! `seedcore demo --serve ADDR`: after the scenarios, a bursty load on the
//! demo system until Ctrl-C, while the metrics endpoint serves it, so that
//! `seedcore top` shows the pools growing and shrinking.
//!
//! One cycle: a burst of blocking thread tasks spread over the priority
//! levels (the thread pool grows), a pause, a burst of CPU tasks (it does
//! not: the cores are full), a pause, a burst of blocking process tasks
//! (the process pool grows), and a longer pause (both shrink back). Every
//! task succeeds, so the demo's final stats check still holds.

use anyhow::Context;
use seedcore::{ConcurrentSystem, Priority, TaskFuture, TaskOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

seedcore::process_task! {
    /// Sleeps `ms` milliseconds in a worker process.
    pub fn demo_nap(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
}

/// Sets the returned flag on Ctrl-C (SIGINT); from then on Ctrl-C no longer
/// kills the process, so the demo can finish and print its summary.
fn ctrl_c_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a runtime for the Ctrl-C handler")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let f = flag.clone();
    std::thread::Builder::new()
        .name("demo-ctrl-c".into())
        .spawn(move || {
            rt.block_on(async {
                let signal = tokio::signal::ctrl_c();
                let _ = tx.send(());
                if signal.await.is_ok() {
                    f.store(true, Ordering::SeqCst);
                }
            })
        })
        .context("starting the Ctrl-C thread")?;
    // The handler is installed once the future is first polled; give it a
    // moment so that an early Ctrl-C is not lost.
    let _ = rx.recv_timeout(Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(20));
    Ok(flag)
}

/// Sleeps `d`, or less if `stop` is set meanwhile.
fn pause(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for every future (they always finish: no timeouts, no failures).
fn wait_all<T: Send + 'static>(futs: Vec<TaskFuture<T>>) -> anyhow::Result<()> {
    for f in futs {
        f.wait()?;
    }
    Ok(())
}

/// Runs the bursty load until Ctrl-C.
pub(crate) fn keep_running(
    sys: &ConcurrentSystem,
    addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let stop = ctrl_c_flag()?;
    eprintln!(
        "seedcore demo: scenarios done; bursty load running, metrics at http://{addr}/metrics and /stats.json"
    );
    eprintln!("seedcore demo: watch it with `seedcore top --url http://{addr}`; Ctrl-C to stop");
    let mut cycle = 0u64;
    while !stop.load(Ordering::SeqCst) {
        cycle += 1;
        let io: Vec<_> = (0..240u32)
            .map(|i| {
                let p = Priority::new((i % 11) as u8).unwrap_or_default();
                sys.submit_thread(TaskOptions::new().priority(p), |_| {
                    std::thread::sleep(Duration::from_millis(25))
                })
            })
            .collect::<Result<_, _>>()?;
        wait_all(io)?;
        pause(Duration::from_secs(2), &stop);
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let cpu: Vec<_> = (0..150)
            .map(|_| {
                sys.submit_thread(TaskOptions::new(), |_| {
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_millis(5) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        wait_all(cpu)?;
        pause(Duration::from_secs(2), &stop);
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let procs: Vec<_> = (0..60)
            .map(|_| sys.submit_process(TaskOptions::new(), demo_nap, 40))
            .collect::<Result<_, _>>()?;
        wait_all(procs)?;
        pause(Duration::from_secs(4), &stop);
    }
    eprintln!("seedcore demo: stopped after {cycle} load cycle(s)");
    Ok(())
}
