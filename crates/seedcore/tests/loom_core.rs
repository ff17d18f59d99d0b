//! Model checks of the scheduler's concurrency core with loom: the task's
//! attempt state machine (`src/task/state.rs`), the completion state
//! machine (`src/task/completion.rs`) and the hand-off between submitters
//! and sleeping pool threads (`src/sched/idle.rs`).
//!
//! Those files name their primitives only through `crate::sync`; this test
//! compiles the very same files against loom's primitives, so loom explores
//! every interleaving of the code that ships.

#![allow(dead_code, unreachable_pub)]

mod sync {
    pub(crate) use loom::sync::atomic::{
        fence, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
    };
    pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

    pub(crate) mod thread {
        pub(crate) use loom::thread::{current, park, Thread};

        /// loom has no clock: a timed park is a plain park in the model.
        pub(crate) fn park_timeout(_: std::time::Duration) {
            park()
        }
    }

    pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[path = "../src/task/completion.rs"]
mod completion;
#[path = "../src/sched/idle.rs"]
mod idle;
#[path = "../src/task/state.rs"]
mod state;

use completion::{Completion, Resolve};
use idle::Idle;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use state::{Begin, End, LockWait, Phase, TaskState};

#[test]
fn a_blocked_waiter_is_woken_with_the_value() {
    loom::model(|| {
        let c = Arc::new(Completion::<u32>::new());
        let c2 = c.clone();
        let t = thread::spawn(move || assert!(c2.complete(7).won()));
        assert_eq!(c.wait(), 7);
        t.join().unwrap();
    });
}

#[test]
fn exactly_one_of_two_racing_completers_wins() {
    loom::model(|| {
        let c = Arc::new(Completion::<u32>::new());
        let wins = Arc::new(AtomicUsize::new(0));
        let spawn = |v: u32| {
            let (c, wins) = (c.clone(), wins.clone());
            thread::spawn(move || match c.complete(v) {
                Resolve::Won => {
                    wins.fetch_add(1, Ordering::SeqCst);
                    v
                }
                Resolve::Lost(back) => {
                    assert_eq!(back, v, "the loser gets its own value back");
                    0
                }
            })
        };
        let (a, b) = (spawn(1), spawn(2));
        let got = c.wait();
        let (ra, rb) = (a.join().unwrap(), b.join().unwrap());
        assert_eq!(wins.load(Ordering::SeqCst), 1);
        assert_eq!(got, ra + rb, "the waiter sees the winner's value");
        assert!(c.try_take().is_none(), "the value is taken once");
    });
}

#[test]
fn a_callback_registered_during_completion_runs_exactly_once() {
    loom::model(|| {
        let c = Arc::new(Completion::<u32>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let c2 = c.clone();
        let t = thread::spawn(move || assert!(c2.complete(5).won()));
        let r = runs.clone();
        c.on_complete(Box::new(move |v| {
            assert_eq!(v, 5);
            r.fetch_add(1, Ordering::SeqCst);
        }));
        t.join().unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn an_async_waiter_is_woken_with_the_value() {
    loom::model(|| {
        let c = Arc::new(Completion::<u32>::new());
        let c2 = c.clone();
        let t = thread::spawn(move || assert!(c2.complete(9).won()));
        let v = loom::future::block_on(std::future::poll_fn(|cx| match c.poll_take(cx.waker()) {
            Some(v) => std::task::Poll::Ready(v),
            None => std::task::Poll::Pending,
        }));
        assert_eq!(v, 9);
        t.join().unwrap();
    });
}

#[test]
fn the_owners_note_stays_until_the_result_comes() {
    loom::model(|| {
        let c = Arc::new(Completion::<u32>::with_note(42));
        assert_eq!(c.note(), Some(42));
        // A waiter that gives up hands the note back.
        assert_eq!(c.wait_deadline(std::time::Instant::now()), None);
        assert_eq!(c.note(), Some(42));
        let c2 = c.clone();
        let t = thread::spawn(move || assert!(c2.complete(3).won()));
        let note = c.note();
        assert!(
            note.is_none() || note == Some(42),
            "a note, or no note once resolved"
        );
        assert_eq!(c.wait(), 3);
        assert_eq!(c.note(), None);
        t.join().unwrap();
    });
}

#[test]
fn a_completion_drops_what_it_holds_once() {
    loom::model(|| {
        let value = Arc::new(());
        // A result never taken.
        let c = Completion::<Arc<()>>::new();
        assert!(c.complete(value.clone()).won());
        assert_eq!(Arc::strong_count(&value), 2);
        drop(c);
        assert_eq!(Arc::strong_count(&value), 1);
        // A callback never run.
        let c = Completion::<u32>::new();
        let held = value.clone();
        c.on_complete(Box::new(move |_| drop(held)));
        assert_eq!(Arc::strong_count(&value), 2);
        drop(c);
        assert_eq!(Arc::strong_count(&value), 1);
        // A result taken: the completion drops nothing more.
        let c = Completion::<Arc<()>>::new();
        assert!(c.complete(value.clone()).won());
        drop(c.try_take());
        drop(c);
        assert_eq!(Arc::strong_count(&value), 1);
    });
}

/// A queue as the pool sees it: counters of items published and taken.
struct Work {
    published: AtomicUsize,
    taken: AtomicUsize,
}

impl Work {
    fn new() -> Self {
        Work {
            published: AtomicUsize::new(0),
            taken: AtomicUsize::new(0),
        }
    }

    fn try_take(&self) -> bool {
        let mut t = self.taken.load(Ordering::SeqCst);
        loop {
            if t >= self.published.load(Ordering::SeqCst) {
                return false;
            }
            match self
                .taken
                .compare_exchange(t, t + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(now) => t = now,
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.taken.load(Ordering::SeqCst) >= self.published.load(Ordering::SeqCst)
    }
}

/// The worker loop of `thread_pool.rs`, reduced to the hand-off: take work,
/// or announce, look again, and sleep. Returns when `want` items are done.
fn worker(idle: &Idle, work: &Work, want: usize, done: &AtomicUsize) {
    while done.load(Ordering::SeqCst) < want {
        if work.try_take() {
            done.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        idle.prepare();
        if !work.is_empty() || done.load(Ordering::SeqCst) >= want {
            idle.cancel();
            continue;
        }
        idle.sleep(None);
    }
    // A sibling asleep must learn that everything is done.
    idle.notify_all();
}

#[test]
fn a_submission_never_leaves_a_sleeping_worker_behind() {
    loom::model(|| {
        let idle = Arc::new(Idle::new());
        let work = Arc::new(Work::new());
        let done = Arc::new(AtomicUsize::new(0));
        let (i2, w2, d2) = (idle.clone(), work.clone(), done.clone());
        let t = thread::spawn(move || worker(&i2, &w2, 1, &d2));
        work.published.fetch_add(1, Ordering::SeqCst);
        idle.notify_one();
        // loom reports a deadlock if the worker can sleep through this.
        t.join().unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn two_submissions_reach_two_sleeping_workers() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let idle = Arc::new(Idle::new());
        let work = Arc::new(Work::new());
        let done = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (i, w, d) = (idle.clone(), work.clone(), done.clone());
                thread::spawn(move || worker(&i, &w, 2, &d))
            })
            .collect();
        for _ in 0..2 {
            work.published.fetch_add(1, Ordering::SeqCst);
            idle.notify_one();
        }
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(done.load(Ordering::SeqCst), 2);
    });
}

/// A task begun once, as the executor holds it.
fn running_task() -> TaskState {
    let s = TaskState::new(0, 0);
    assert_eq!(
        s.transition_to_running(),
        Begin::Started {
            n: 1,
            was_waiting: false
        }
    );
    s
}

#[test]
fn the_end_of_an_attempt_is_won_by_exactly_one_of_its_code_and_its_deadline() {
    loom::model(|| {
        let s = Arc::new(running_task());
        let wins = Arc::new(AtomicUsize::new(0));
        let racer = |s: Arc<TaskState>, wins: Arc<AtomicUsize>| {
            thread::spawn(move || {
                if s.transition_to_ended(1).won() {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let a = racer(s.clone(), wins.clone());
        let b = racer(s.clone(), wins.clone());
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(wins.load(Ordering::SeqCst), 1);
        assert_eq!(s.phase(), (1, Phase::Ended));
    });
}

#[test]
fn a_revert_and_a_deadline_never_both_take_an_attempt() {
    loom::model(|| {
        let s = Arc::new(running_task());
        let s2 = s.clone();
        let deadline = thread::spawn(move || s2.transition_to_ended(1));
        let reverted = s.revert(1);
        let ended = deadline.join().unwrap();
        assert_ne!(reverted.won(), ended.won(), "exactly one of them wins");
        if reverted.won() {
            // Undone: the attempt does not count, the next begin is 1 again.
            assert_eq!(s.phase(), (0, Phase::Queued));
        } else {
            assert_eq!(s.phase(), (1, Phase::Ended));
        }
    });
}

#[test]
fn exactly_one_resolution_wins_and_its_outcome_stays() {
    loom::model(|| {
        let s = Arc::new(TaskState::new(0, 0));
        let handles: Vec<_> = [1u8, 4, 5]
            .into_iter()
            .map(|code| {
                let s = s.clone();
                thread::spawn(move || (code, s.transition_to_resolved(code)))
            })
            .collect();
        let results: Vec<(u8, state::Resolve)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<u8> = results
            .iter()
            .filter(|(_, r)| *r == state::Resolve::Won)
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(winners.len(), 1);
        assert_eq!(s.outcome(), winners[0]);
    });
}

#[test]
fn a_lock_timeout_and_the_lock_holder_waking_the_task_never_both_act() {
    loom::model(|| {
        let s = Arc::new(TaskState::new(0, 0));
        let LockWait::First(wait) = s.transition_to_lock_wait() else {
            panic!("the first wait of an attempt is the first");
        };
        let s2 = s.clone();
        let timeout = thread::spawn(move || s2.end_lock_wait(wait));
        let begun = s.transition_to_running();
        let timed_out = timeout.join().unwrap();
        match begun {
            Begin::Started { n, was_waiting } => {
                assert_eq!((n, was_waiting), (1, true));
                assert_eq!(timed_out, End::Lost);
            }
            Begin::NotQueued => assert_eq!(timed_out, End::Won),
        }
    });
}

#[test]
fn a_task_handed_to_two_workers_begins_once() {
    loom::model(|| {
        let s = Arc::new(TaskState::new(0, 0));
        let s2 = s.clone();
        let other = thread::spawn(move || s2.transition_to_running());
        let mine = s.transition_to_running();
        let theirs = other.join().unwrap();
        let started = [mine, theirs]
            .iter()
            .filter(|b| matches!(b, Begin::Started { n: 1, .. }))
            .count();
        assert_eq!(started, 1);
    });
}

#[test]
fn a_stale_deadline_cannot_end_the_retry_that_follows() {
    loom::model(|| {
        let s = Arc::new(running_task());
        let s2 = s.clone();
        // The attempt's code ends it and, as the winner, schedules attempt 2.
        let worker = thread::spawn(move || {
            if s2.transition_to_ended(1).won() {
                s2.transition_to_backoff(1);
                s2.transition_to_queued();
                return Some(s2.transition_to_running());
            }
            None
        });
        // The deadline of attempt 1 races with all of it.
        let deadline = s.transition_to_ended(1);
        let retried = worker.join().unwrap();
        match retried {
            Some(begun) => {
                assert_eq!(deadline, End::Lost);
                assert_eq!(
                    begun,
                    Begin::Started {
                        n: 2,
                        was_waiting: false
                    }
                );
                assert_eq!(s.phase(), (2, Phase::Running));
            }
            None => {
                assert_eq!(deadline, End::Won);
                assert_eq!(s.phase(), (1, Phase::Ended));
            }
        }
        s.cancel_through(1);
        assert!(s.is_cancelled(1) && !s.is_cancelled(2));
    });
}
