//! `join`'s second half as the pool sees it: a job that runs a closure
//! borrowed from the joining thread's stack, once, on whichever thread
//! claims it first.
//!
//! # How a join runs
//!
//! The joining thread queues a [`JoinJob`] for `b`, runs `a` itself, then
//! claims `b` back. If no pool thread has claimed it meanwhile, it runs
//! `b` inline. If a pool thread claimed it, the joining thread waits for
//! its latch: a thread of the same pool runs other queued work while it
//! waits (rayon's way: the stolen half runs on another thread and needs
//! nothing from this one), any other thread parks until the claimer
//! unparks it.
//!
//! Where the job waits depends on who joins. A pool thread (a join inside
//! a thread task) pushes it on its own deque, as rayon's workers do: no
//! other thread touches it unless one is idle and steals it, and once `a`
//! returns the job is on top (the joins inside `a` took theirs off), so
//! taking it back is a pop from the thread's own end. Idle threads steal a
//! half before a queued task that is less urgent than the joining task,
//! after one that is more urgent. Any other thread queues the job on the
//! pool's queue at the joining task's priority; taken back by its joiner,
//! it stays there as an empty shell that does nothing when popped.
//!
//! A join half is not a task: it has no id, no future, no retries and no
//! timeout, and it does not count in the system's task figures, as
//! `rayon::join` spawns no task. Its priority is that of the task that
//! joins, so a join inside an urgent task stays urgent.
//!
//! # Soundness
//!
//! The job points at the stack frame of [`join`] with its lifetime erased.
//! The frame is read only by the thread that wins the claim, and [`join`]
//! does not return (nor unwind: `a`'s panic is caught) before it has
//! claimed the job itself or seen the claimer's latch open. The claimer
//! opens the latch as its last touch of the frame; the latch and the
//! waiter to unpark live in the job's own allocation.

use super::ThreadPool;
use crate::error::TaskError;
use crate::options::Priority;
use crate::task::{EnvRef, Header, InTask, Job};
use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::Instant;

/// `b` and its result, on the joining thread's stack.
struct Half<B, RB> {
    b: UnsafeCell<Option<B>>,
    out: UnsafeCell<Option<std::thread::Result<RB>>>,
}

/// What the claimer calls through the erased pointer.
trait RunHalf {
    /// Runs `b` and stores its result (or its panic).
    ///
    /// # Safety
    /// Only the claimer may call it, once, while the frame lives.
    unsafe fn run(&self);
}

impl<B: FnOnce() -> RB, RB> RunHalf for Half<B, RB> {
    unsafe fn run(&self) {
        // SAFETY: the claimer is the only one touching the cells (the
        // joining thread reads `out` only after the latch opens).
        let b = unsafe { (*self.b.get()).take() };
        if let Some(b) = b {
            let out = catch_unwind(AssertUnwindSafe(b));
            // SAFETY: as above.
            unsafe { *self.out.get() = Some(out) };
        }
    }
}

/// The queued half of one join.
pub(crate) struct JoinJob {
    /// The pool's shared header for the half's priority (see
    /// [`ThreadPool::join_header`]): a join touches no reference count
    /// shared between threads.
    header: *const Header,
    /// Taken by a pool thread (which runs it) or by the joining thread.
    claimed: AtomicBool,
    /// The claimer has finished with the frame.
    done: AtomicBool,
    /// The joining thread, unparked when `done` is set.
    waiter: Thread,
    half: *const (dyn RunHalf + 'static),
}

// SAFETY: `half` is dereferenced only by the claimer, under the protocol
// of the module's soundness note; `header` points into the pool, which
// outlives every job in its queue and slots; the rest is `Send + Sync`.
unsafe impl Send for JoinJob {}
// SAFETY: as for `Send`: shared references never reach the frame unclaimed.
unsafe impl Sync for JoinJob {}

impl JoinJob {
    /// Claims the job; `true` for the first caller only.
    fn claim(&self) -> bool {
        !self.claimed.swap(true, Ordering::AcqRel)
    }
}

impl Job for JoinJob {
    fn header(&self) -> &Header {
        // SAFETY: see `JoinJob::header`.
        unsafe { &*self.header }
    }

    fn run(self: Arc<Self>) -> bool {
        if self.claim() {
            // A blocking wait inside `b` is a wait inside a task: its pool
            // thread is stood in for, as for any task.
            let _in_task = InTask::enter();
            // SAFETY: claimed, and the joining thread waits for `done`.
            unsafe { (*self.half).run() };
            self.done.store(true, Ordering::Release);
            self.waiter.unpark();
        }
        false
    }

    /// Never queued again: it has no retries and waits for no lock.
    fn schedule(self: Arc<Self>) {}

    /// Nothing to resolve: a half that no pool thread runs (a shutdown
    /// drained it) is claimed back and run by the joining thread.
    fn fail(&self, _e: TaskError) -> bool {
        false
    }

    fn deadline(self: Arc<Self>, _n: u32) {}

    fn lock_deadline(&self, _wait: u64, _lock: Arc<str>, _since: Instant) {}

    fn route(self: Arc<Self>, _visit: &mut dyn FnMut(&dyn Any)) {}

    /// The claimer has finished with the frame.
    fn is_resolved(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// Runs `a` here and `b` on `pool` (or here, if no thread takes it first);
/// both always run, and panics of either are raised again once both have
/// stopped, `a`'s first.
pub(crate) fn join<A, B, RA, RB>(pool: &ThreadPool, env: &EnvRef, exec: u8, a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA,
    B: FnOnce() -> RB + Send,
    RB: Send,
{
    let half = Half {
        b: UnsafeCell::new(Some(b)),
        out: UnsafeCell::new(None),
    };
    let erased: *const (dyn RunHalf + '_) = &half;
    // SAFETY: only the lifetime changes; see the module's soundness note.
    let erased: *const (dyn RunHalf + 'static) = unsafe { std::mem::transmute(erased) };
    let priority = pool.current_priority().unwrap_or(Priority::NORMAL);
    let job = Arc::new(JoinJob {
        header: pool.join_header(env, exec, priority),
        claimed: AtomicBool::new(false),
        done: AtomicBool::new(false),
        waiter: std::thread::current(),
        half: erased,
    });
    let local = pool.push_half(&job);
    let ra = catch_unwind(AssertUnwindSafe(a));
    if local {
        pool.take_back_half(&job);
    }
    let rb = if job.claim() {
        // Nobody took it: run it here, even if `a` panicked (as rayon's
        // join, both closures always run; `a`'s panic is raised after).
        // SAFETY: claimed by this thread; the frame is ours.
        unsafe { half.run() };
        half.out.into_inner()
    } else {
        pool.wait_helping(&|| job.is_resolved());
        half.out.into_inner()
    };
    let ra = ra.unwrap_or_else(|p: Box<dyn Any + Send>| resume_unwind(p));
    match rb {
        Some(Ok(rb)) => (ra, rb),
        Some(Err(p)) => resume_unwind(p),
        None => unreachable!("the second half of a join ran once"),
    }
}
