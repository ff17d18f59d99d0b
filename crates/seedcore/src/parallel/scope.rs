//! Scoped work: thread tasks and maps that borrow from the caller's stack,
//! as `std::thread::scope` and rayon's `scope` allow.
//!
//! # Soundness
//!
//! A scoped task's code is kept in a slot (`Slot`) that the task's
//! `'static` body reads under a read lock for each call. When the scope's
//! closure returns (or panics), the scope first waits until every task it
//! submitted has resolved, then closes each slot under its write lock: that
//! waits for any call still running (an attempt past its timeout keeps
//! running on its thread) and drops the code on the scope's thread. After
//! that no call can begin — a body that finds its slot empty resolves an
//! error without touching the code — so nothing borrowed outlives the
//! scope. The lifetimes are erased only inside the slot, which never lets
//! the code out.

use crate::error::{BoxError, SubmitError, TaskError};
use crate::options::TaskOptions;
use crate::system::{ConcurrentSystem, THREADS};
use crate::task::completion::Completion;
use crate::task::{spin_until, wait_blocking, TaskContext, TaskHandle, TaskId};
use parking_lot::{Condvar, Mutex, RwLock};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A scoped task's code, with its borrows erased; see the module's
/// soundness note.
type Code<T> = ScopedCode<'static, T>;

/// A scoped task's code as submitted, borrowing for `'a`.
type ScopedCode<'a, T> = Box<dyn Fn(&TaskContext) -> Result<T, BoxError> + Send + Sync + 'a>;

/// Where a scoped task's code lives until its scope closes.
struct Slot<T>(RwLock<Option<Code<T>>>);

/// What a scope closes when it ends.
trait Closable: Send + Sync {
    fn close(&self);
}

impl<T: 'static> Closable for Slot<T> {
    fn close(&self) {
        // Waits for calls in progress, then drops the code here.
        drop(self.0.write().take());
    }
}

/// The tasks of one scope.
#[derive(Default)]
struct ScopeState {
    /// The slots to close when the scope ends.
    slots: Mutex<Vec<Arc<dyn Closable>>>,
    /// Tasks submitted and not yet resolved.
    pending: Mutex<usize>,
    /// Signalled when `pending` reaches zero.
    settled: Condvar,
}

impl ScopeState {
    /// One task of this scope has resolved.
    fn resolved(&self) {
        let mut pending = self.pending.lock();
        *pending -= 1;
        if *pending == 0 {
            self.settled.notify_all();
        }
    }
}

/// A scope opened by [`ConcurrentSystem::scope`]: what is submitted through
/// it may borrow anything that outlives the scope.
pub struct Scope<'scope, 'env: 'scope> {
    system: &'scope ConcurrentSystem,
    state: Arc<ScopeState>,
    // Invariant in both lifetimes, as `std::thread::Scope` is.
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("tasks", &self.state.slots.lock().len())
            .field("pending", &*self.state.pending.lock())
            .finish()
    }
}

/// The future of a scoped task: like [`TaskFuture`](crate::TaskFuture), but it cannot leave
/// its scope.
#[must_use = "the scope waits for the task anyway; its result is lost"]
pub struct ScopedFuture<'scope, T> {
    /// The result, handed over by the task as it resolves, so that the
    /// scope learns of every resolution as it happens (a cancel or a
    /// timeout included) while this future is waited on.
    result: Arc<Completion<Result<T, TaskError>>>,
    handle: TaskHandle,
    _scope: PhantomData<&'scope ()>,
}

impl<T: Send + 'static> ScopedFuture<'_, T> {
    /// Blocks until the task resolves; from a thread task, the pool keeps
    /// its capacity meanwhile, as with [`TaskFuture::wait`](crate::TaskFuture::wait).
    pub fn wait(self) -> Result<T, TaskError> {
        // A decided task hands its result over in a moment.
        let decided = spin_until(|| self.handle.is_done());
        wait_blocking(decided, || self.result.wait())
    }

    /// Blocks until the task resolves or `timeout` passes; on timeout the
    /// future is handed back.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Result<T, TaskError>, Self> {
        let deadline = Instant::now() + timeout;
        match wait_blocking(self.handle.is_done(), || {
            self.result.wait_deadline(deadline)
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
        let code: ScopedCode<'scope, T> = Box::new(f);
        // SAFETY: only the lifetime bound of the trait object changes (same
        // layout). The code stays in the slot, which this scope closes
        // before `'scope` ends: after every call in progress has returned,
        // and so that no call begins afterwards (see the module docs).
        let code: Code<T> = unsafe { std::mem::transmute(code) };
        let slot = Arc::new(Slot(RwLock::new(Some(code))));
        let reader = slot.clone();
        let future =
            self.system
                .submit_thread_fallible(opts, move |cx| match &*reader.0.read() {
                    Some(code) => code(cx),
                    None => Err("the scope of this task has ended".into()),
                })?;
        self.state.slots.lock().push(slot);
        *self.state.pending.lock() += 1;
        let result = Arc::new(Completion::new());
        let (into, state) = (result.clone(), self.state.clone());
        // Runs on the resolving thread (here, if it has resolved already):
        // stores the result for the future, then counts the task settled.
        let handle = future.on_resolved_inline(move |r| {
            let _ = into.complete(r);
            state.resolved();
        });
        Ok(ScopedFuture {
            result,
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

    /// Waits for every task to resolve, then closes their slots (which
    /// waits for calls still running).
    fn finish(&self) {
        {
            let mut pending = self.state.pending.lock();
            let settled = *pending == 0;
            wait_blocking(settled, || {
                while *pending > 0 {
                    self.state.settled.wait(&mut pending);
                }
            });
        }
        let slots = std::mem::take(&mut *self.state.slots.lock());
        for slot in slots {
            slot.close();
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
            state: Arc::new(ScopeState::default()),
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
    /// A panic in either closure is raised again here, after both have
    /// stopped (`a`'s first, with its own payload).
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
