//! The GPU executor (feature `cuda`): worker threads per CUDA device, each
//! running one task at a time on a stream of the device's pool.
//!
//! A task is placed when it is queued (and again for each retry): on the
//! device it names, on the next device in turn (`Spread`), or on the least
//! loaded device with the most free memory (`Any`). A memory request is
//! reserved on the device until the task ends; a request that fits no
//! device now waits for one (up to the task's timeout) and fails
//! [`TaskError::GpuMemory`] after, or at once if no device is that large.
//! A device runs at most `streams_per_device` tasks at once (its workers).
//!
//! An attempt past its deadline resolves `TimedOut` at the deadline like
//! any thread task; a worker still stuck in it (a kernel that does not
//! end) is replaced, so the device keeps its concurrency. A kernel cannot
//! be stopped from inside the process: isolating one needs a worker
//! process bound to the device.
//!
//! # A device that faulted
//!
//! Some CUDA errors are sticky: after a kernel's illegal address, illegal
//! instruction, failed launch or a launch killed for running too long,
//! every later call on the device's context in this process fails the same
//! way. The executor watches for them (in every driver error that becomes
//! a [`GpuError`] on a worker, and on the task's stream after each task)
//! and marks the device unhealthy for the rest of the process: placement
//! passes over it, the tasks queued on it go to a healthy device, and a
//! task bound to it (or with no healthy device left) fails with
//! [`GpuError::DeviceFaulted`]. The stats show it (`gpu{N}_healthy` is 0)
//! and count only healthy devices in the GPU row's capacity.
//!
//! # CUDA versions
//!
//! The driver, NVRTC and cuBLAS are loaded at run time, so seedcore builds
//! without CUDA, and what is missing is reported by [`why_no_gpu`] before
//! anything is called in it. cudarc's bindings are those of CUDA 13.0
//! (its feature `cuda-13000`); cudarc builds for one CUDA major version and
//! looks, on Linux, for `libnvrtc.so` then `libnvrtc.so.13` then
//! `libnvrtc.so.12` (the same for `libcublas`; the driver is
//! `libcuda.so.1`), so this loads on a CUDA 13 driver with the NVRTC and
//! cuBLAS of CUDA 13 or 12. The driver must be CUDA 13 or newer: the
//! bindings name calls that CUDA 13 added (`cuEventElapsedTime_v2`, say),
//! which a CUDA 12 driver lacks; for one, build with cudarc's `cuda-12080`
//! instead. Kernels are compiled to the device's own `sm` (CUBIN), so an
//! NVRTC newer than the driver does not make PTX the driver cannot read.

mod context;
mod discovery;
mod kernels;
mod placement;

pub use context::GpuContext;
pub use discovery::{gpu_devices, why_no_gpu, GpuDevice};

use crate::error::{BoxError, SubmitError, TaskError};
use crate::options::TaskOptions;
use crate::sched::idle::Idle;
use crate::sched::timer::Timer;
use crate::sched::{join_by, spawn_latched, Latched, ShutdownMode};
use crate::sched::{Executor, ExecutorStats, PriorityQueue, Runnable, StopReport, WorkerInfo};
use crate::task::StopReason;
use crate::task::{
    caught, Attempt, Body, ExecutorKind, InTask, Job, TaskCell, TaskContext, TaskId,
};
use context::{Lane, StreamPool};
use cudarc::driver::CudaContext;
use kernels::ModuleCache;
use parking_lot::Mutex;
use placement::Pick;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

/// An error of the GPU helpers of [`GpuContext`]. Returned from a GPU
/// task, [`GpuError::OutOfMemory`] resolves the task
/// [`TaskError::GpuMemory`] (retried like an error); the rest resolve
/// [`TaskError::Failed`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// The device ran out of memory.
    #[error("GPU {} out of memory (asked for {requested} bytes)", device.map_or("?".to_owned(), |d| d.to_string()))]
    OutOfMemory {
        /// The device, where known.
        device: Option<usize>,
        /// The bytes asked for, 0 where unknown.
        requested: u64,
    },
    /// The CUDA driver returned an error.
    #[error("CUDA driver error: {0}")]
    Driver(cudarc::driver::DriverError),
    /// NVRTC could not compile the source (the message holds its log).
    #[error("the kernel did not compile: {0}")]
    Compile(String),
    /// cuBLAS returned an error.
    #[error("cuBLAS error: {0}")]
    Blas(String),
    /// Shapes or sizes that do not fit the buffers.
    #[error("{0}")]
    Shape(String),
    /// A CUDA library is not installed.
    #[error("{0} is not installed")]
    Missing(&'static str),
    /// The device's context faulted (a sticky CUDA error, such as an
    /// illegal address in a kernel): it takes no new task for the rest of
    /// the process. Where the task could go to any device, every device
    /// had faulted and `device` is the first of them.
    #[error("GPU {device} faulted ({cause}) and takes no new tasks")]
    DeviceFaulted {
        /// The device's ordinal.
        device: usize,
        /// The error that faulted it.
        cause: String,
    },
}

impl From<cudarc::driver::DriverError> for GpuError {
    /// The error of a driver call. On a GPU worker, a sticky error marks
    /// the worker's device unhealthy (see the module docs).
    fn from(e: cudarc::driver::DriverError) -> Self {
        use cudarc::driver::sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY;
        if context::is_sticky(&e) {
            if let Ok(Some((device, _))) = CURRENT.try_with(|c| c.borrow().clone()) {
                device.mark_faulted(&e);
            }
        }
        if e.0 == CUDA_ERROR_OUT_OF_MEMORY {
            GpuError::OutOfMemory {
                device: None,
                requested: 0,
            }
        } else {
            GpuError::Driver(e)
        }
    }
}

/// Which device a GPU task may run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DeviceChoice {
    /// The least loaded device (queued and running tasks per stream), the
    /// one with the most free memory among equals.
    #[default]
    Any,
    /// Only the device of this ordinal.
    One(usize),
    /// The next device in turn (round robin over the devices that fit the
    /// memory request), to spread a batch evenly whatever the load now.
    Spread,
}

/// The options of a GPU task: its [`TaskOptions`] (priority, timeout,
/// retries, locks, name), a memory request and a device choice.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    pub(crate) task: TaskOptions,
    memory: u64,
    device: DeviceChoice,
}

impl GpuOptions {
    /// Defaults: any device, no memory request, default task options.
    pub fn new() -> Self {
        GpuOptions::default()
    }

    /// The task's priority, timeout, retries, locks and name.
    pub fn task(mut self, opts: TaskOptions) -> Self {
        self.task = opts;
        self
    }

    /// Device memory the task needs, in bytes: it runs only on a device
    /// with that much free (as last measured, less what placed tasks
    /// requested), and waits for one up to its timeout.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = bytes;
        self
    }

    /// Which device it may run on.
    pub fn device(mut self, choice: DeviceChoice) -> Self {
        self.device = choice;
        self
    }
}

impl From<TaskOptions> for GpuOptions {
    fn from(task: TaskOptions) -> Self {
        GpuOptions::new().task(task)
    }
}

/// The GPU executor's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GpuConfig {
    /// Tasks one device runs at once: its worker threads, each with a
    /// stream of its own (default 4).
    pub streams_per_device: usize,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            streams_per_device: 4,
        }
    }
}

impl GpuConfig {
    /// The `[gpu]` section's settings.
    pub fn from_settings(s: &crate::config::GpuSettings) -> Self {
        GpuConfig::default().streams_per_device(s.streams_per_device)
    }

    /// Sets [`streams_per_device`](Self::streams_per_device) (at least 1).
    pub fn streams_per_device(mut self, n: usize) -> Self {
        self.streams_per_device = n.max(1);
        self
    }
}

/// Where a task may go and what it reserves.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Route {
    choice: DeviceChoice,
    memory: u64,
}

/// A task on a device's queue, with the memory it reserved there and
/// where it may go (to place it again if the device faults).
struct Placed {
    task: Runnable,
    reserve: u64,
    route: Route,
}

/// One device: its context, streams, kernels, queue and figures.
pub(crate) struct Device {
    pub(crate) ordinal: usize,
    pub(crate) name: String,
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) kernels: ModuleCache,
    pool: StreamPool,
    total: u64,
    /// Free memory as last measured.
    free: AtomicU64,
    /// Memory requested by the tasks placed here and not ended.
    reserved: AtomicU64,
    queue: PriorityQueue<Placed>,
    /// Where its workers sleep when the queue is empty.
    idle: Idle,
    /// Tasks in `queue`, for the load and the watch after a task: one
    /// load instead of a scan of the levels.
    queued: AtomicUsize,
    running: AtomicUsize,
    tasks: AtomicU64,
    busy_ns: AtomicU64,
    limit: usize,
    /// The sticky error that faulted the context, once one did.
    fault: OnceLock<String>,
}

impl Device {
    /// Whether it may take tasks: its context has not faulted.
    fn healthy(&self) -> bool {
        self.fault.get().is_none()
    }

    /// Marks it unhealthy for the rest of the process (the first fault
    /// is the one kept and logged).
    pub(crate) fn mark_faulted(&self, e: &cudarc::driver::DriverError) {
        let mut first = false;
        self.fault.get_or_init(|| {
            first = true;
            e.to_string()
        });
        if first {
            log::error!(
                "seedcore: GPU {} ({}) faulted: {e}; it takes no new tasks",
                self.ordinal,
                self.name
            );
        }
    }

    /// Why it takes no task (its fault), for [`GpuError::DeviceFaulted`].
    fn faulted_error(&self) -> TaskError {
        TaskError::Failed(Box::new(GpuError::DeviceFaulted {
            device: self.ordinal,
            cause: self.fault.get().cloned().unwrap_or_default(),
        }))
    }

    fn available(&self) -> u64 {
        let free = self.free.load(Ordering::Relaxed);
        let unreserved = self
            .total
            .saturating_sub(self.reserved.load(Ordering::Relaxed));
        free.min(unreserved)
    }

    /// Queued and running tasks per stream, scaled to compare devices of
    /// different limits.
    fn load(&self) -> usize {
        (self.queued.load(Ordering::Relaxed) + self.running.load(Ordering::Relaxed)) * 1024
            / self.limit
    }

    fn refresh_free(&self) {
        let got = catch_unwind(AssertUnwindSafe(|| self.ctx.mem_get_info()));
        if let Ok(Ok((free, _))) = got {
            self.free.store(free as u64, Ordering::Relaxed);
        }
    }

    fn push(&self, p: Placed) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.queue.push(p.task.priority(), p);
        self.idle.notify_one();
    }

    /// The next task, or `None` once `closed` is set. Right after a task
    /// (`spin`) it watches the queue for a few microseconds before it
    /// sleeps: a task that follows at once then starts without a wake-up.
    /// It sleeps by the protocol of `sched/idle.rs`, as pool threads do.
    fn next(&self, closed: &AtomicBool, spin: bool) -> Option<Placed> {
        if spin {
            let until = Instant::now() + SPIN;
            while self.queued.load(Ordering::Relaxed) == 0
                && !closed.load(Ordering::Relaxed)
                && Instant::now() < until
            {
                std::hint::spin_loop();
            }
        }
        loop {
            if closed.load(Ordering::SeqCst) {
                return None;
            }
            if let Some(p) = self.queue.pop() {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                return Some(p);
            }
            self.idle.prepare();
            if closed.load(Ordering::SeqCst) || !self.queue.is_empty() {
                self.idle.cancel();
                continue;
            }
            self.idle.sleep(None);
        }
    }
}

/// How long a worker watches its queue after a task before it parks.
const SPIN: std::time::Duration = std::time::Duration::from_micros(20);

/// A worker thread of a device.
struct Worker {
    device: usize,
    tid: AtomicU64,
    name: String,
    done: AtomicU64,
    current: Mutex<Option<Arc<dyn Job>>>,
    stuck: AtomicBool,
    handle: Mutex<Option<Latched>>,
}

/// A task waiting for device memory.
struct Waiter {
    task: Runnable,
    route: Route,
    deadline: Option<Instant>,
}

#[derive(Default)]
struct Placement {
    waiting: Vec<Waiter>,
}

impl placement::Figures for Arc<Device> {
    fn ordinal(&self) -> usize {
        self.ordinal
    }
    fn healthy(&self) -> bool {
        Device::healthy(self)
    }
    fn available(&self) -> u64 {
        Device::available(self)
    }
    fn total(&self) -> u64 {
        self.total
    }
    fn load(&self) -> usize {
        Device::load(self)
    }
}

/// The GPU executor of one system.
pub(crate) struct GpuExecutor {
    me: Weak<GpuExecutor>,
    name: String,
    devices: Vec<Arc<Device>>,
    placement: Mutex<Placement>,
    waiting: AtomicUsize,
    /// The next device in turn, for `DeviceChoice::Spread`.
    turn: AtomicUsize,
    workers: Mutex<Vec<Arc<Worker>>>,
    /// Set by `stop`; shared with the workers.
    closed: Arc<AtomicBool>,
    timer: Arc<Timer>,
}

thread_local! {
    /// The device and lane of the GPU worker running on this thread.
    static CURRENT: RefCell<Option<(Arc<Device>, Arc<Lane>)>> = const { RefCell::new(None) };
}

impl GpuExecutor {
    /// An executor over every usable device, its workers started; `NoGpu`
    /// where there is none.
    pub(crate) fn start(
        name: &str,
        config: &GpuConfig,
        timer: Arc<Timer>,
    ) -> Result<Arc<GpuExecutor>, SubmitError> {
        let ctxs = discovery::contexts().map_err(|why| SubmitError::NoGpu(why.to_owned()))?;
        let limit = config.streams_per_device.max(1);
        let mut devices = Vec::new();
        for ctx in ctxs {
            let d = catch_unwind(AssertUnwindSafe(|| discovery::describe(ctx)));
            let Ok(Ok(d)) = d else { continue };
            devices.push(Arc::new(Device {
                ordinal: d.ordinal,
                name: d.name,
                ctx: ctx.clone(),
                kernels: ModuleCache::default(),
                pool: StreamPool::default(),
                total: d.total_memory,
                free: AtomicU64::new(d.free_memory),
                reserved: AtomicU64::new(0),
                queue: PriorityQueue::new(),
                idle: Idle::new(),
                queued: AtomicUsize::new(0),
                running: AtomicUsize::new(0),
                tasks: AtomicU64::new(0),
                busy_ns: AtomicU64::new(0),
                limit,
                fault: OnceLock::new(),
            }));
        }
        if devices.is_empty() {
            return Err(SubmitError::NoGpu("no device answered the driver".into()));
        }
        let exec = Arc::new_cyclic(|me| GpuExecutor {
            me: me.clone(),
            name: name.to_owned(),
            devices,
            placement: Mutex::new(Placement::default()),
            waiting: AtomicUsize::new(0),
            turn: AtomicUsize::new(0),
            workers: Mutex::new(Vec::new()),
            closed: Arc::new(AtomicBool::new(false)),
            timer,
        });
        for d in 0..exec.devices.len() {
            for _ in 0..limit {
                exec.spawn_worker(d)
                    .map_err(|e| SubmitError::NoGpu(format!("the OS refused a thread: {e}")))?;
            }
        }
        Ok(exec)
    }

    /// The ordinals of the devices.
    pub(crate) fn ordinals(&self) -> impl Iterator<Item = usize> + '_ {
        self.devices.iter().map(|d| d.ordinal)
    }

    fn spawn_worker(&self, d: usize) -> std::io::Result<()> {
        let dev = self.devices[d].clone();
        let n = self.workers.lock().len();
        let w = Arc::new(Worker {
            device: d,
            tid: AtomicU64::new(0),
            name: format!("{}-gpu{}-{n}", self.name, dev.ordinal),
            done: AtomicU64::new(0),
            current: Mutex::new(None),
            stuck: AtomicBool::new(false),
            handle: Mutex::new(None),
        });
        let me = self.me.clone();
        let worker = w.clone();
        let h = spawn_latched(
            std::thread::Builder::new().name(w.name.clone()),
            move || work(me, dev, worker),
        )?;
        *w.handle.lock() = Some(h);
        self.workers.lock().push(w);
        Ok(())
    }

    fn pick(&self, route: &Route) -> Pick {
        placement::pick(&self.devices, route.choice, route.memory, &self.turn)
    }

    fn go(&self, i: usize, task: Runnable, route: &Route) {
        let d = &self.devices[i];
        d.reserved.fetch_add(route.memory, Ordering::Relaxed);
        d.push(Placed {
            task,
            reserve: route.memory,
            route: *route,
        });
    }

    /// Queues `task` on a device by `route`, parks it until memory frees,
    /// or fails it.
    pub(crate) fn place(&self, task: Runnable, route: Route) {
        if self.closed.load(Ordering::SeqCst) {
            task.fail(TaskError::SystemShutdown);
            return;
        }
        if route.memory == 0 {
            // Nothing to reserve: no lock on the way to the device's queue.
            match self.pick(&route) {
                Pick::Go(i) => return self.go(i, task, &route),
                Pick::Faulted(i) => {
                    task.fail(self.devices[i].faulted_error());
                    return;
                }
                Pick::Wait(_) | Pick::Never(_) => {}
            }
        }
        // A check and a reservation that must not interleave with another.
        let mut pl = self.placement.lock();
        match self.pick(&route) {
            Pick::Go(i) => {
                self.go(i, task, &route);
                drop(pl);
            }
            Pick::Never(available) => {
                drop(pl);
                task.fail(TaskError::GpuMemory {
                    device: None,
                    requested: route.memory,
                    available,
                });
            }
            Pick::Faulted(i) => {
                drop(pl);
                task.fail(self.devices[i].faulted_error());
            }
            Pick::Wait(_) => {
                let deadline = task
                    .job()
                    .header()
                    .opts()
                    .get_timeout()
                    .map(|t| Instant::now() + t);
                if let Some(at) = deadline {
                    let me = self.me.clone();
                    self.timer.schedule(at, move || {
                        if let Some(e) = me.upgrade() {
                            e.retry_waiters();
                        }
                    });
                }
                pl.waiting.push(Waiter {
                    task,
                    route,
                    deadline,
                });
                self.waiting.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Places the tasks waiting for memory that fit now; fails those whose
    /// timeout passed.
    fn retry_waiters(&self) {
        let mut pl = self.placement.lock();
        let waiting = std::mem::take(&mut pl.waiting);
        let now = Instant::now();
        let mut failed = Vec::new();
        for w in waiting {
            if w.task.is_done() {
                continue;
            }
            let memory = |available| TaskError::GpuMemory {
                device: None,
                requested: w.route.memory,
                available,
            };
            match self.pick(&w.route) {
                Pick::Go(i) => self.go(i, w.task, &w.route),
                Pick::Wait(available) if w.deadline.is_some_and(|d| d <= now) => {
                    failed.push((w.task, memory(available)))
                }
                Pick::Wait(_) => pl.waiting.push(w),
                Pick::Never(available) => failed.push((w.task, memory(available))),
                Pick::Faulted(i) => failed.push((w.task, self.devices[i].faulted_error())),
            }
        }
        self.waiting.store(pl.waiting.len(), Ordering::SeqCst);
        drop(pl);
        for (task, e) in failed {
            task.fail(e);
        }
    }

    /// A task placed on `dev` ended: its reservation is free again.
    fn release(&self, dev: &Device, reserve: u64) {
        if reserve > 0 {
            dev.reserved.fetch_sub(reserve, Ordering::Relaxed);
        }
        if self.waiting.load(Ordering::SeqCst) > 0 {
            dev.refresh_free();
            self.retry_waiters();
        } else if reserve > 0 {
            dev.refresh_free();
        }
    }
}

/// A worker's loop: takes a stream for each task, runs it, gives the
/// stream back.
fn work(exec: Weak<GpuExecutor>, dev: Arc<Device>, me: Arc<Worker>) {
    me.tid.store(current_tid(), Ordering::Relaxed);
    let _ = catch_unwind(AssertUnwindSafe(|| dev.ctx.bind_to_thread()));
    let Some(closed) = exec.upgrade().map(|e| e.closed.clone()) else {
        return;
    };
    let mut spin = false;
    while let Some(p) = dev.next(&closed, spin) {
        spin = true;
        let Some(exec) = exec.upgrade() else { break };
        if p.task.is_done() {
            exec.release(&dev, p.reserve);
            continue;
        }
        if !dev.healthy() {
            // Queued before the device faulted: placed again, on a
            // healthy device or failed.
            exec.release(&dev, p.reserve);
            exec.place(p.task, p.route);
            continue;
        }
        let lane = match dev.pool.take(&dev.ctx) {
            Ok(l) => l,
            Err(e) => {
                exec.release(&dev, p.reserve);
                if let GpuError::Driver(d) = &e {
                    if context::is_sticky(d) {
                        dev.mark_faulted(d);
                        exec.place(p.task, p.route);
                        continue;
                    }
                }
                p.task.fail(TaskError::failed(e));
                continue;
            }
        };
        *me.current.lock() = Some(p.task.job().clone());
        dev.running.fetch_add(1, Ordering::Relaxed);
        CURRENT.with(|c| *c.borrow_mut() = Some((dev.clone(), lane.clone())));
        let started = Instant::now();
        p.task.run();
        dev.busy_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        // A fault the task's code kept to itself still shows on its stream.
        if let Some(e) = lane.sticky_error() {
            dev.mark_faulted(&e);
        }
        CURRENT.with(|c| c.borrow_mut().take());
        dev.running.fetch_sub(1, Ordering::Relaxed);
        dev.tasks.fetch_add(1, Ordering::Relaxed);
        me.done.fetch_add(1, Ordering::Relaxed);
        *me.current.lock() = None;
        let stuck = me.stuck.load(Ordering::SeqCst);
        if !stuck {
            dev.pool.give_back(lane);
        }
        exec.release(&dev, p.reserve);
        if stuck {
            // Replaced while it was stuck: the replacement keeps the
            // device's concurrency, this one leaves.
            exec.workers.lock().retain(|w| !Arc::ptr_eq(w, &me));
            break;
        }
    }
}

#[cfg(target_os = "linux")]
fn current_tid() -> u64 {
    rustix::thread::gettid().as_raw_nonzero().get() as u64
}

#[cfg(not(target_os = "linux"))]
fn current_tid() -> u64 {
    0
}

impl Executor for GpuExecutor {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Gpu
    }

    fn accept(&self, task: Runnable) {
        let route = task.route::<Route>().unwrap_or_default();
        self.place(task, route);
    }

    fn stop_attempt(&self, task: TaskId, _attempt: u32, why: StopReason) {
        if why != StopReason::Timeout || self.closed.load(Ordering::SeqCst) {
            return;
        }
        let workers = self.workers.lock().clone();
        for w in workers {
            let on_it = w
                .current
                .lock()
                .as_ref()
                .is_some_and(|j| j.header().id == task);
            if on_it && !w.stuck.swap(true, Ordering::SeqCst) {
                if let Err(e) = self.spawn_worker(w.device) {
                    log::error!("seedcore: could not replace a stuck GPU worker: {e}");
                }
            }
        }
    }

    fn drain(&self) -> Vec<Runnable> {
        let mut out: Vec<Runnable> = std::mem::take(&mut self.placement.lock().waiting)
            .into_iter()
            .map(|w| w.task)
            .collect();
        self.waiting.store(0, Ordering::SeqCst);
        for d in &self.devices {
            while let Some(p) = d.queue.pop() {
                d.queued.fetch_sub(1, Ordering::Relaxed);
                d.reserved.fetch_sub(p.reserve, Ordering::Relaxed);
                out.push(p.task);
            }
        }
        out
    }

    fn stop(&self, deadline: Instant, mode: ShutdownMode) -> StopReport {
        let _ = mode;
        self.closed.store(true, Ordering::SeqCst);
        for d in &self.devices {
            d.idle.notify_all();
        }
        let workers = std::mem::take(&mut *self.workers.lock());
        let mut detached = 0;
        for w in workers {
            let h = w.handle.lock().take();
            if let Some(h) = h {
                if !join_by(h, deadline) {
                    detached += 1;
                    if let Some(j) = w.current.lock().as_ref() {
                        j.fail(TaskError::SystemShutdown);
                    }
                }
            }
        }
        StopReport::detached(detached)
    }

    fn stats(&self) -> ExecutorStats {
        let mut row = ExecutorStats::new(ExecutorKind::Gpu);
        let workers = self.workers.lock();
        row.workers = workers.len();
        row.stuck = workers
            .iter()
            .filter(|w| w.stuck.load(Ordering::Relaxed))
            .count();
        drop(workers);
        row.queued = self.waiting.load(Ordering::Relaxed);
        for d in &self.devices {
            for (lvl, n) in d.queue.depths().into_iter().enumerate() {
                row.queue_depth[lvl] += n;
                row.queued += n;
            }
            row.busy += d.running.load(Ordering::Relaxed);
            if d.healthy() {
                row.target += d.limit;
            }
            d.refresh_free();
            let o = d.ordinal;
            let used = d.total.saturating_sub(d.free.load(Ordering::Relaxed));
            row.gauges.extend([
                (format!("gpu{o}_tasks"), d.tasks.load(Ordering::Relaxed)),
                (
                    format!("gpu{o}_busy_us"),
                    d.busy_ns.load(Ordering::Relaxed) / 1000,
                ),
                (format!("gpu{o}_memory_used_bytes"), used),
                (
                    format!("gpu{o}_memory_reserved_bytes"),
                    d.reserved.load(Ordering::Relaxed),
                ),
                (format!("gpu{o}_memory_total_bytes"), d.total),
                (
                    format!("gpu{o}_running"),
                    d.running.load(Ordering::Relaxed) as u64,
                ),
                (format!("gpu{o}_streams"), d.pool.made() as u64),
                (format!("gpu{o}_healthy"), u64::from(d.healthy())),
                (format!("gpu{o}_modules"), d.kernels.len() as u64),
            ]);
        }
        row.core = row.target;
        row.max = row.target;
        row
    }

    fn workers(&self) -> Vec<WorkerInfo> {
        self.workers
            .lock()
            .iter()
            .map(|w| {
                let mut i = WorkerInfo::thread(w.tid.load(Ordering::Relaxed) as u32, &w.name);
                i.tasks_done = w.done.load(Ordering::Relaxed);
                i.current_task = w.current.lock().as_ref().map(|j| j.header().id);
                i
            })
            .collect()
    }
}

/// A GPU task's body: its code, run on a device's worker with a
/// [`GpuContext`], and where it may be placed.
pub(crate) struct GpuBody<T, F> {
    f: F,
    route: Route,
    _out: PhantomData<fn() -> T>,
}

impl<T, F> Body for GpuBody<T, F>
where
    T: Send + 'static,
    F: Fn(&GpuContext) -> Result<T, TaskError> + Send + Sync + 'static,
{
    type Output = T;

    fn start(cell: &Arc<TaskCell<Self>>, a: Attempt) -> bool {
        let task = TaskContext::new(cell.clone(), a.n);
        let here = CURRENT.with(|c| c.borrow().clone());
        let out = match here {
            None => Err(TaskError::failed("a GPU task ran outside a GPU worker")),
            Some((device, lane)) => {
                let gpu = GpuContext { device, lane, task };
                let _in_task = InTask::enter();
                let out = caught(catch_unwind(AssertUnwindSafe(|| (cell.body().f)(&gpu))));
                // The attempt ends when its GPU work has: a later task on
                // this stream starts clean, and a fault is this task's.
                let synced = catch_unwind(AssertUnwindSafe(|| gpu.lane.stream.synchronize()));
                match (out, synced) {
                    (Ok(v), Ok(Ok(()))) => Ok(v),
                    (Ok(_), Ok(Err(e))) => Err(task_error(GpuError::from(e).into(), gpu.device())),
                    (Ok(_), Err(p)) => {
                        Err(TaskError::Panicked(crate::error::panic_message(&*p).into()))
                    }
                    (Err(e), _) => Err(e),
                }
            }
        };
        cell.end(a, out);
        false
    }

    /// Where the task may be placed.
    fn route(cell: Arc<TaskCell<Self>>, visit: &mut dyn FnMut(&dyn std::any::Any)) {
        visit(&cell.body().route);
    }
}

impl GpuExecutor {
    /// The task body of `f`, placed by `opts`. Fails for a device ordinal
    /// that is not there.
    pub(crate) fn body<T, E, F>(
        &self,
        opts: &GpuOptions,
        f: F,
    ) -> Result<impl Body<Output = T>, SubmitError>
    where
        T: Send + 'static,
        E: Into<BoxError>,
        F: Fn(&GpuContext) -> Result<T, E> + Send + Sync + 'static,
    {
        if let DeviceChoice::One(o) = opts.device {
            if !self.ordinals().any(|d| d == o) {
                let have: Vec<usize> = self.ordinals().collect();
                return Err(SubmitError::InvalidOptions(format!(
                    "no GPU of ordinal {o} (devices: {have:?})"
                )));
            }
        }
        Ok(GpuBody {
            f: move |g: &GpuContext| f(g).map_err(|e| task_error(e.into(), g.device())),
            route: Route {
                choice: opts.device,
                memory: opts.memory,
            },
            _out: PhantomData,
        })
    }
}

/// The task error of a GPU task's own error: running out of device memory
/// is [`TaskError::GpuMemory`], the rest [`TaskError::Failed`].
fn task_error(e: BoxError, device: usize) -> TaskError {
    match e.downcast::<GpuError>() {
        Ok(g) => match *g {
            GpuError::OutOfMemory {
                device: d,
                requested,
            } => TaskError::GpuMemory {
                device: Some(d.unwrap_or(device)),
                requested,
                available: 0,
            },
            other => TaskError::Failed(Box::new(other)),
        },
        Err(e) => TaskError::Failed(e),
    }
}
