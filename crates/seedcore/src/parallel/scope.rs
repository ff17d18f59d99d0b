//! Scoped work: thread tasks and maps that borrow from the caller's stack,
//! as `std::thread::scope` and rayon's `scope` allow.
//!
//! # Soundness
//!
//! A scoped task's code is kept in its slot (`Slot`), which the task's
//! `'static` body reads under a read lock for each call. When the scope's
//! closure returns (or panics), the scope takes each slot in turn, waits
//! until its task has resolved, then closes it under its write lock: that
//! waits for any call still running (an attempt past its timeout keeps
//! running on its thread) and drops the code on the scope's thread. After
//! that no call can begin — a body that finds its slot empty resolves an
//! error without touching the code. A call still running may submit more
//! tasks to the scope, so the scope ends only when it finds no slot left
//! to close; then nothing borrowed outlives it. The lifetimes are erased
//! only on the slot's trait objects, whose methods never let the code out;
//! the slot itself may outlive the scope (the task's record holds it), but
//! only with its code dropped.
//!
//! # Cost
//!
//! A scoped task costs its task, one slot (code, result and resolution
//! mark in one allocation) and the callback that hands the result over.
//! Each task marks only its own slot as it resolves, so tasks that end at
//! the same time share no counter. The scope's end spins briefly on a slot
//! before it sleeps, since tiny tasks resolve within microseconds and a
//! sleep and wake-up cost more than that.

use crate::error::{BoxError, SubmitError, TaskError};
use crate::options::TaskOptions;
use crate::system::{ConcurrentSystem, THREADS};
use crate::task::completion::Completion;
use crate::task::{spin_until, wait_blocking, TaskContext, TaskHandle, TaskId};
use parking_lot::{Condvar, Mutex, RwLock};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A scoped task's result, as its future sees it.
type Outcome<T> = Result<T, TaskError>;

/// Where a scoped task's code lives until its scope closes, next to the
/// result that its future reads and the mark the scope's end waits for.
struct Slot<T, F> {
    code: RwLock<Option<F>>,
    result: Completion<Outcome<T>>,
    /// Whether the task has resolved (its result is handed over).
    resolved: AtomicBool,
    /// Taken by the scope's end around its sleep, and by the task as it
    /// resolves before it wakes the end, so that the wake-up cannot fall
    /// between the end's look at `resolved` and its sleep.
    lock: Mutex<()>,
    /// Signalled when the task resolves.
    settled: Condvar,
}

/// A slot as the task's body, its callback and its future use it, with
/// the code's type (and borrows) hidden.
trait Run<T>: Send + Sync {
    /// One call of the code, unless the scope has closed the slot.
    fn call(&self, cx: &TaskContext) -> Result<T, BoxError>;
    /// Where the task's result is handed over.
    fn result(&self) -> &Completion<Outcome<T>>;
    /// Hands the task's result over and marks it resolved.
    fn resolve(&self, r: Outcome<T>);
}

impl<T, F> Run<T> for Slot<T, F>
where
    T: Send,
    F: Fn(&TaskContext) -> Result<T, BoxError> + Send + Sync,
{
    fn call(&self, cx: &TaskContext) -> Result<T, BoxError> {
        match &*self.code.read() {
            Some(code) => code(cx),
            None => Err("the scope of this task has ended".into()),
        }
    }

    fn result(&self) -> &Completion<Outcome<T>> {
        &self.result
    }

    fn resolve(&self, r: Outcome<T>) {
        let _ = self.result.complete(r);
        self.resolved.store(true, Ordering::Release);
        let _g = self.lock.lock();
        self.settled.notify_all();
    }
}

/// A slot as its scope's end sees it.
trait Closable: Send + Sync {
    /// Whether the slot's task has resolved.
    fn is_resolved(&self) -> bool;
    /// Blocks until the slot's task has resolved.
    fn wait(&self);
    /// Drops the code, once no call is in progress.
    fn close(&self);
}

impl<T: Send, F: Send + Sync> Closable for Slot<T, F> {
    fn is_resolved(&self) -> bool {
        self.resolved.load(Ordering::Acquire)
    }

    fn wait(&self) {
        // Tiny tasks resolve within the spin; a sleep costs a wake-up.
        let resolved = spin_until(|| self.is_resolved());
        wait_blocking(resolved, || {
            let mut g = self.lock.lock();
            while !self.is_resolved() {
                self.settled.wait(&mut g);
            }
        });
    }

    fn close(&self) {
        // Waits for calls in progress, then drops the code here.
        drop(self.code.write().take());
    }
}

/// A scope opened by [`ConcurrentSystem::scope`]: what is submitted through
/// it may borrow anything that outlives the scope.
pub struct Scope<'scope, 'env: 'scope> {
    system: &'scope ConcurrentSystem,
    /// The slots of the tasks submitted and not yet closed.
    slots: Mutex<Vec<Arc<dyn Closable>>>,
    // Invariant in both lifetimes, as `std::thread::Scope` is.
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots = self.slots.lock();
        let pending = slots.iter().filter(|s| !s.is_resolved()).count();
        f.debug_struct("Scope")
            .field("tasks", &slots.len())
            .field("pending", &pending)
            .finish()
    }
}

/// The future of a scoped task: like [`TaskFuture`](crate::TaskFuture), but it cannot leave
/// its scope.
#[must_use = "the scope waits for the task anyway; its result is lost"]
pub struct ScopedFuture<'scope, T> {
    /// The task's slot, where the task hands its result over as it
    /// resolves and marks itself resolved, so that the scope's end sees
    /// every resolution (a cancel or a timeout included) even while this
    /// future is waited on.
    slot: Arc<dyn Run<T> + 'scope>,
    handle: TaskHandle,
    _scope: PhantomData<&'scope ()>,
}

impl<T: Send + 'static> ScopedFuture<'_, T> {
    /// Blocks until the task resolves; from a thread task, the pool keeps
    /// its capacity meanwhile, as with [`TaskFuture::wait`](crate::TaskFuture::wait).
    pub fn wait(self) -> Result<T, TaskError> {
        // A decided task hands its result over in a moment.
        let decided = spin_until(|| self.handle.is_done());
        wait_blocking(decided, || self.slot.result().wait())
    }

    /// Blocks until the task resolves or `timeout` passes; on timeout the
    /// future is handed back.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Result<T, TaskError>, Self> {
        let deadline = Instant::now() + timeout;
        match wait_blocking(self.handle.is_done(), || {
            self.slot.result().wait_deadline(deadline)
        }) {
            Some(r) => Ok(r),
            None => Err(self),
        }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.handle.id()
    }

    /// Whether the task has resolved.
    pub fn is_done(&self) -> bool {
        self.handle.is_done()
    }

    /// Cancels the task; see [`TaskFuture::cancel`](crate::TaskFuture::cancel).
    pub fn cancel(&self) -> bool {
        self.handle.cancel()
    }
}

impl<T: 'static> std::fmt::Debug for ScopedFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ScopedFuture")
            .field(&self.handle.id())
            .finish()
    }
}

impl<'scope> Scope<'scope, '_> {
    /// Runs `f` on the thread pool, like
    /// [`ConcurrentSystem::submit_thread`], where `f` may borrow from
    /// outside the scope.
    pub fn submit_thread<T, F>(
        &'scope self,
        opts: TaskOptions,
        f: F,
    ) -> Result<ScopedFuture<'scope, T>, SubmitError>
    where
        T: Send + 'static,
        F: Fn(&TaskContext) -> T + Send + Sync + 'scope,
    {
        self.submit_fallible(opts, move |cx| Ok::<T, BoxError>(f(cx)))
    }

    /// Like [`submit_thread`](Self::submit_thread) for code that returns
    /// its own errors.
    pub fn submit_thread_fallible<T, E, F>(
        &'scope self,
        opts: TaskOptions,
        f: F,
    ) -> Result<ScopedFuture<'scope, T>, SubmitError>
    where
        T: Send + 'static,
        E: Into<BoxError>,
        F: Fn(&TaskContext) -> Result<T, E> + Send + Sync + 'scope,
    {
        self.submit_fallible(opts, move |cx| f(cx).map_err(Into::into))
    }

    fn submit_fallible<T, F>(
        &'scope self,
        opts: TaskOptions,
        f: F,
    ) -> Result<ScopedFuture<'scope, T>, SubmitError>
    where
        T: Send + 'static,
        F: Fn(&TaskContext) -> Result<T, BoxError> + Send + Sync + 'scope,
    {
        let slot = Arc::new(Slot {
            code: RwLock::new(Some(f)),
            result: Completion::new(),
            resolved: AtomicBool::new(false),
            lock: Mutex::new(()),
            settled: Condvar::new(),
        });
        let run: Arc<dyn Run<T> + 'scope> = slot.clone();
        // SAFETY: only the lifetime bound of the trait object changes (same
        // layout). The code stays in the slot, which this scope closes
        // before `'scope` ends: after every call in progress has returned,
        // and so that no call begins afterwards (see the module docs).
        let erased: Arc<dyn Run<T>> = unsafe { std::mem::transmute(run.clone()) };
        let reader = erased.clone();
        let future = self
            .system
            .submit_thread_fallible(opts, move |cx| reader.call(cx))?;
        let closable: Arc<dyn Closable + 'scope> = slot;
        // SAFETY: as above; closing is what ends the borrows.
        let closable: Arc<dyn Closable> = unsafe { std::mem::transmute(closable) };
        self.slots.lock().push(closable);
        // Runs on the resolving thread (here, if it has resolved already).
        let handle = future.on_resolved_inline(move |r| erased.resolve(r));
        Ok(ScopedFuture {
            slot: run,
            handle,
            _scope: PhantomData,
        })
    }

    /// Maps `f` over `input` on the thread pool, where both may borrow
    /// from outside the scope; returns the results in input order, or the
    /// first item's error (the other items still run to their end).
    ///
    /// The input is split into a few chunks per pool thread, one task each.
    pub fn map<I, F, R>(&'scope self, input: I, f: F) -> Result<Vec<R>, TaskError>
    where
        I: IntoIterator,
        I::Item: Send + 'scope,
        F: Fn(I::Item) -> R + Send + Sync + 'scope,
        R: Send + 'static,
    {
        let items: Vec<I::Item> = input.into_iter().collect();
        let width = self.system.config().threads.max.max(1) * 4;
        let per = items.len().div_ceil(width).max(1);
        // Shared by the chunk tasks; dropped when the last slot holding it
        // closes, on the scope's thread at the latest.
        let f = Arc::new(f);
        let mut futures = Vec::new();
        let mut first_error = None;
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let chunk = Mutex::new(Some(items.by_ref().take(per).collect::<Vec<_>>()));
            let f = f.clone();
            let r = self.submit_thread_fallible(TaskOptions::new(), move |_| {
                match chunk.lock().take() {
                    Some(c) => Ok(c.into_iter().map(&*f).collect::<Vec<R>>()),
                    // A retry finds its items gone: chunks run once.
                    None => Err("a map chunk runs once"),
                }
            });
            match r {
                Ok(fu) => futures.push(fu),
                Err(e) => {
                    first_error = Some(crate::parallel::chunk::submit_error(e));
                    break;
                }
            }
        }
        let mut out = Vec::new();
        for fu in futures {
            match fu.wait() {
                Ok(v) => out.extend(v),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Waits for each task to resolve and closes its slot (which waits
    /// for a call still running), until no slot is left: a call may
    /// submit more tasks until its slot is closed.
    fn finish(&self) {
        loop {
            let slots = std::mem::take(&mut *self.slots.lock());
            if slots.is_empty() {
                return;
            }
            for slot in slots {
                slot.wait();
                slot.close();
            }
        }
    }
}

impl ConcurrentSystem {
    /// Opens a scope in which thread tasks and maps may borrow from the
    /// caller's stack; it returns when every task submitted through it has
    /// resolved and its code has returned (an attempt past its timeout
    /// included), as [`std::thread::scope`] does.
    ///
    /// ```
    /// use seedcore::{ConcurrentSystem, TaskOptions};
    ///
    /// let system = ConcurrentSystem::builder().core_threads(2).build()?;
    /// let words = vec!["alpha".to_string(), "beta".into(), "gamma".into()];
    /// let (lengths, total) = system.scope(|s| {
    ///     let total = s.submit_thread(TaskOptions::new(), |_| {
    ///         words.iter().map(String::len).sum::<usize>()
    ///     })?;
    ///     let lengths = s.map(&words, |w| w.len())?;
    ///     Ok::<_, Box<dyn std::error::Error>>((lengths, total.wait()?))
    /// })?;
    /// assert_eq!(lengths, vec![5, 4, 5]);
    /// assert_eq!(total, 14);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn scope<'env, F, R>(&self, f: F) -> R
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
    {
        let scope = Scope {
            system: self,
            slots: Mutex::new(Vec::new()),
            _scope: PhantomData,
            _env: PhantomData,
        };
        /// Closes the scope also when `f` panics.
        struct Finish<'a, 'scope, 'env>(&'a Scope<'scope, 'env>);
        impl Drop for Finish<'_, '_, '_> {
            fn drop(&mut self) {
                self.0.finish();
            }
        }
        let guard = Finish(&scope);
        let out = f(guard.0);
        drop(guard);
        out
    }

    /// Runs `a` on the calling thread and `b` on the thread pool at the
    /// same time, and returns both results, as `rayon::join` does: both may
    /// borrow from the caller's stack. If no pool thread has taken `b` by
    /// the time `a` returns, the calling thread runs `b` itself, so a join
    /// never waits for a thread. While a pool thread runs `b`, a caller
    /// that is itself a pool thread runs other queued work of the pool
    /// (rayon's way), and any other caller sleeps.
    ///
    /// `b` is not a task: it has no id, future, timeout or retries, and it
    /// does not count in [`stats`](Self::stats); it is queued at the
    /// priority of the task that joins (normal outside a task).
    ///
    /// Both closures always run, as with `rayon::join`: a panic in either
    /// is raised again here once both have returned or panicked (`a`'s
    /// first, with its own payload).
    ///
    /// ```
    /// use seedcore::ConcurrentSystem;
    ///
    /// fn sum(system: &ConcurrentSystem, v: &[u64]) -> u64 {
    ///     if v.len() <= 1_000 {
    ///         return v.iter().sum();
    ///     }
    ///     let (left, right) = v.split_at(v.len() / 2);
    ///     let (a, b) = system.join(|| sum(system, left), || sum(system, right));
    ///     a + b
    /// }
    ///
    /// let system = ConcurrentSystem::builder().core_threads(2).build()?;
    /// let v: Vec<u64> = (1..=100_000).collect();
    /// assert_eq!(sum(&system, &v), 5_000_050_000);
    /// # Ok::<(), seedcore::ConfigError>(())
    /// ```
    pub fn join<A, B, RA, RB>(&self, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce() -> RA,
        B: FnOnce() -> RB + Send,
        RB: Send,
    {
        let shared = self.shared();
        crate::exec::thread::join::join(shared.threads(), &shared.env, THREADS, a, b)
    }
}
