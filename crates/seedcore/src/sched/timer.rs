//! One thread that fires deadlines: attempt timeouts, lock timeouts and
//! retry back-offs. Only tasks that have such a deadline touch it.
//!
//! Actions hold weak references to their tasks, so a task that finishes
//! long before its deadline is freed at once; its entry fires as a no-op.

use parking_lot::{Condvar, Mutex};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

type Action = Box<dyn FnOnce() + Send>;

struct Entry {
    at: Instant,
    seq: u64,
    /// A retry back-off (fired early by an immediate shutdown) rather than
    /// a deadline (dropped by it).
    backoff: bool,
    action: Action,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at && self.seq == o.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap and the earliest deadline must
    // come out first; `seq` keeps equal deadlines in scheduling order.
    fn cmp(&self, o: &Self) -> Ordering {
        o.at.cmp(&self.at).then(o.seq.cmp(&self.seq))
    }
}

struct State {
    heap: BinaryHeap<Entry>,
    seq: u64,
    stopped: bool,
}

struct Inner {
    state: Mutex<State>,
    cv: Condvar,
}

pub(crate) struct Timer {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Timer {
    pub(crate) fn start(name: &str) -> std::io::Result<Timer> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                heap: BinaryHeap::new(),
                seq: 0,
                stopped: false,
            }),
            cv: Condvar::new(),
        });
        let run = inner.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-timer"))
            .spawn(move || run.run())?;
        Ok(Timer {
            inner,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `action` on the timer thread at `at` (or at once if past).
    /// After [`stop`](Self::stop) the action is dropped unrun.
    pub(crate) fn schedule(&self, at: Instant, action: impl FnOnce() + Send + 'static) {
        self.push(at, false, Box::new(action));
    }

    /// Like [`schedule`](Self::schedule), for the start of a retry.
    pub(crate) fn schedule_backoff(&self, at: Instant, action: impl FnOnce() + Send + 'static) {
        self.push(at, true, Box::new(action));
    }

    fn push(&self, at: Instant, backoff: bool, action: Action) {
        let mut st = self.inner.state.lock();
        if st.stopped {
            drop(st);
            // A retry that raced with the stop still has to resolve: run it
            // now (the system is closed, so it resolves at once).
            if backoff {
                action();
            }
            return;
        }
        st.seq += 1;
        let seq = st.seq;
        let earliest = st.heap.peek().map_or(true, |e| at < e.at);
        st.heap.push(Entry {
            at,
            seq,
            backoff,
            action,
        });
        if earliest {
            self.inner.cv.notify_one();
        }
    }

    /// Runs every pending back-off now (an immediate shutdown, so that
    /// tasks waiting to retry resolve); deadlines stay.
    pub(crate) fn fire_backoffs(&self) {
        self.run_backoffs(false);
    }

    /// Takes the back-offs out of the heap (with `stop`, also marks the
    /// timer stopped and drops the deadlines), then runs them unlocked.
    fn run_backoffs(&self, stop: bool) {
        let due: Vec<Entry> = {
            let mut st = self.inner.state.lock();
            st.stopped |= stop;
            let (due, keep): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut st.heap)
                .into_iter()
                .partition(|e| e.backoff);
            if !stop {
                st.heap = keep.into();
            }
            due
        };
        for e in due {
            (e.action)();
        }
    }

    /// Stops the thread: pending back-offs run now (their tasks resolve),
    /// deadlines are dropped.
    pub(crate) fn stop(&self) {
        self.run_backoffs(true);
        self.inner.cv.notify_all();
        if let Some(t) = self.thread.lock().take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Inner {
    fn run(&self) {
        let mut st = self.state.lock();
        loop {
            if st.stopped {
                return;
            }
            let now = Instant::now();
            match st.heap.peek() {
                Some(e) if e.at <= now => {
                    let e = st.heap.pop().expect("peeked");
                    drop(st);
                    // Actions only flip task state; a panic here would be a
                    // scheduler bug, and must not kill the timer thread.
                    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(e.action))
                    {
                        log::error!(
                            "seedcore timer action panicked: {}",
                            crate::error::panic_message(&*p)
                        );
                    }
                    st = self.state.lock();
                }
                Some(e) => {
                    let at = e.at;
                    self.cv.wait_until(&mut st, at);
                }
                None => self.cv.wait(&mut st),
            }
        }
    }
}
