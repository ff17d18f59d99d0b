//! Where completion callbacks run.
//!
//! Callbacks never run on a pool worker by surprise: the completing thread
//! only hands them to the executor chosen when the system was built. A
//! panicking callback is caught, logged and counted; it harms nothing else.

use crate::sched::counters::Counters;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) type Callback = Box<dyn FnOnce() + Send>;

/// Which thread runs completion callbacks ([`TaskFuture::on_complete`]).
///
/// [`TaskFuture::on_complete`]: crate::TaskFuture::on_complete
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum CallbackExecutor {
    /// A dedicated callback thread owned by the system (the default).
    #[default]
    Thread,
    /// Spawned on a tokio runtime, typically the application's own.
    Tokio(tokio::runtime::Handle),
    /// Queued for the application to run on a thread of its choice, usually
    /// its GUI or main loop, with [`CallbackQueue::run_pending`].
    Queue(CallbackQueue),
}

impl fmt::Debug for CallbackExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallbackExecutor::Thread => f.write_str("Thread"),
            CallbackExecutor::Tokio(_) => f.write_str("Tokio"),
            CallbackExecutor::Queue(q) => write!(f, "Queue({} pending)", q.len()),
        }
    }
}

#[derive(Default)]
struct QueueInner {
    items: Mutex<VecDeque<Callback>>,
    cv: Condvar,
}

/// A queue of callbacks that the application drains on its own thread: the
/// equivalent of delivering results to a GUI event loop. Clones share the
/// queue.
///
/// ```
/// use seedcore::{CallbackExecutor, CallbackQueue, ConcurrentSystem, TaskOptions};
/// use std::time::Duration;
///
/// let queue = CallbackQueue::new();
/// let system = ConcurrentSystem::builder()
///     .callback_executor(CallbackExecutor::Queue(queue.clone()))
///     .build()?;
/// let main = std::thread::current().id();
/// system
///     .submit_thread(TaskOptions::new(), |_| 6 * 7)?
///     .on_complete(move |r| {
///         assert_eq!(r.unwrap(), 42);
///         assert_eq!(std::thread::current().id(), main);
///     });
/// // The event loop: run what has arrived, waiting up to a second for it.
/// assert_eq!(queue.run_pending_timeout(Duration::from_secs(1)), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct CallbackQueue {
    inner: Arc<QueueInner>,
    stats: Arc<Mutex<Option<Arc<Counters>>>>,
}

impl CallbackQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Callbacks waiting to run.
    pub fn len(&self) -> usize {
        self.inner.items.lock().len()
    }

    /// Whether no callback is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs the callbacks queued now, on the calling thread; returns how
    /// many ran. Callbacks queued meanwhile wait for the next call.
    pub fn run_pending(&self) -> usize {
        let batch: Vec<Callback> = self.inner.items.lock().drain(..).collect();
        let n = batch.len();
        let stats = self.stats.lock().clone();
        for cb in batch {
            run_guarded(cb, stats.as_deref());
        }
        n
    }

    /// Waits up to `timeout` for at least one callback, then runs what is
    /// queued; returns how many ran.
    pub fn run_pending_timeout(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        {
            let mut items = self.inner.items.lock();
            while items.is_empty() {
                if self.inner.cv.wait_until(&mut items, deadline).timed_out() {
                    break;
                }
            }
        }
        self.run_pending()
    }

    fn push(&self, cb: Callback) {
        self.inner.items.lock().push_back(cb);
        self.inner.cv.notify_all();
    }
}

impl fmt::Debug for CallbackQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackQueue")
            .field("pending", &self.len())
            .finish()
    }
}

/// Runs one callback, catching and logging a panic.
fn run_guarded(cb: Callback, stats: Option<&Counters>) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(cb)) {
        log::error!(
            "seedcore: a completion callback panicked: {}",
            crate::error::panic_message(&*p)
        );
        if let Some(s) = stats {
            s.callback_panicked();
        }
    }
}

/// The running form of a [`CallbackExecutor`].
pub(crate) enum Dispatcher {
    Thread {
        tx: Mutex<Option<Sender<Callback>>>,
        thread: Mutex<Option<super::Latched>>,
    },
    Tokio(tokio::runtime::Handle, Arc<Counters>),
    Queue(CallbackQueue),
}

impl Dispatcher {
    pub(crate) fn start(
        exec: CallbackExecutor,
        name: &str,
        stats: Arc<Counters>,
    ) -> std::io::Result<Dispatcher> {
        Ok(match exec {
            CallbackExecutor::Thread => {
                let (tx, rx): (Sender<Callback>, Receiver<Callback>) =
                    crossbeam_channel::unbounded();
                let thread = super::spawn_latched(
                    std::thread::Builder::new().name(format!("{name}-callbacks")),
                    move || {
                        for cb in rx {
                            run_guarded(cb, Some(&stats));
                        }
                    },
                )?;
                Dispatcher::Thread {
                    tx: Mutex::new(Some(tx)),
                    thread: Mutex::new(Some(thread)),
                }
            }
            CallbackExecutor::Tokio(h) => Dispatcher::Tokio(h, stats),
            CallbackExecutor::Queue(q) => {
                *q.stats.lock() = Some(stats);
                Dispatcher::Queue(q)
            }
        })
    }

    pub(crate) fn dispatch(&self, cb: Callback) {
        match self {
            Dispatcher::Thread { tx, .. } => {
                let cb = match &*tx.lock() {
                    Some(tx) => match tx.send(cb) {
                        Ok(()) => return,
                        Err(e) => e.into_inner(),
                    },
                    None => cb,
                };
                // The callback thread is gone (shutdown): the callback still
                // runs, on the caller's thread, or on a thread of its own
                // where the caller is a worker running a task.
                if crate::task::in_task() {
                    let spawned = std::thread::Builder::new()
                        .name("seedcore-late-callback".into())
                        .spawn(move || run_guarded(cb, None));
                    if let Err(e) = spawned {
                        log::error!("seedcore: cannot start a thread for a late callback: {e}");
                    }
                } else {
                    run_guarded(cb, None);
                }
            }
            Dispatcher::Tokio(h, stats) => {
                let stats = stats.clone();
                // Dropped unrun if the application's runtime is gone.
                drop(h.spawn(async move { run_guarded(cb, Some(&stats)) }));
            }
            Dispatcher::Queue(q) => q.push(cb),
        }
    }

    /// Lets queued callbacks run until `deadline`, then stops the callback
    /// thread; returns `false` if it was still busy then (it is detached:
    /// a callback cannot be stopped from outside).
    pub(crate) fn stop(&self, deadline: Instant) -> bool {
        if let Dispatcher::Thread { tx, thread } = self {
            drop(tx.lock().take());
            if let Some(t) = thread.lock().take() {
                if !super::join_by(t, deadline) {
                    log::warn!(
                        "seedcore: the callback thread was still busy at shutdown and was detached"
                    );
                    return false;
                }
            }
        }
        true
    }
}
