//! What a GPU task is handed: its device, a stream of its own from the
//! device's stream pool, and helpers to allocate, copy, compile, launch and
//! multiply on that stream.

use super::kernels::{self, BlasSlot};
use super::{Device, GpuError};
use crate::task::TaskContext;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchArgs, ValidAsZeroBits,
};
use parking_lot::Mutex;
use std::sync::Arc;

/// A stream of a device's pool and the cuBLAS handle bound to it.
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: BlasSlot,
}

/// The streams of one device: a task takes one for its attempt and gives
/// it back, so streams are made once per concurrent task, never per task.
#[derive(Debug, Default)]
pub(crate) struct StreamPool {
    free: Mutex<Vec<Arc<Lane>>>,
    made: std::sync::atomic::AtomicUsize,
}

impl StreamPool {
    pub(crate) fn take(&self, ctx: &Arc<CudaContext>) -> Result<Arc<Lane>, GpuError> {
        if let Some(l) = self.free.lock().pop() {
            return Ok(l);
        }
        let stream = ctx.new_stream().map_err(GpuError::from)?;
        self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Arc::new(Lane {
            stream,
            blas: BlasSlot::default(),
        }))
    }

    pub(crate) fn give_back(&self, lane: Arc<Lane>) {
        self.free.lock().push(lane);
    }

    /// Streams made so far.
    pub(crate) fn made(&self) -> usize {
        self.made.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The GPU side of a task's attempt, handed to the code of
/// [`ConcurrentSystem::submit_gpu`](crate::ConcurrentSystem::submit_gpu):
/// the device it was placed on, a CUDA stream no other running task uses,
/// and helpers that work on that stream. The attempt ends when the code
/// returns and the stream's work has finished (the executor waits for it).
///
/// The cudarc types are re-exported as [`seedcore::gpu::cudarc`](crate::gpu::cudarc)
/// for what the helpers do not cover.
pub struct GpuContext {
    pub(crate) device: Arc<Device>,
    pub(crate) lane: Arc<Lane>,
    pub(crate) task: TaskContext,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("device", &self.device.ordinal)
            .field("task", &self.task.id())
            .finish()
    }
}

impl GpuContext {
    /// The ordinal of the device the task runs on.
    pub fn device(&self) -> usize {
        self.device.ordinal
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        &self.device.name
    }

    /// The task's own context: id, attempt, cancellation.
    pub fn task(&self) -> &TaskContext {
        &self.task
    }

    /// Whether the task was cancelled or ran past its timeout: long GPU
    /// loops should look at it between launches.
    pub fn is_cancelled(&self) -> bool {
        self.task.is_cancelled()
    }

    /// The task's stream.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.lane.stream
    }

    /// The device's (primary) CUDA context.
    pub fn cuda(&self) -> &Arc<CudaContext> {
        &self.device.ctx
    }

    /// `len` zeroed elements on the device, on the task's stream.
    pub fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>, GpuError> {
        self.stream()
            .alloc_zeros(len)
            .map_err(|e| self.oom(e, len * std::mem::size_of::<T>()))
    }

    /// A copy of `host` on the device.
    pub fn htod<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>, GpuError> {
        self.stream()
            .clone_htod(host)
            .map_err(|e| self.oom(e, std::mem::size_of_val(host)))
    }

    /// Copies `host` into `dev` (which holds at least as many elements).
    pub fn htod_into<T: DeviceRepr>(
        &self,
        host: &[T],
        dev: &mut CudaSlice<T>,
    ) -> Result<(), GpuError> {
        if dev.len() < host.len() {
            return Err(GpuError::Shape(format!(
                "copy of {} elements into a buffer of {}",
                host.len(),
                dev.len()
            )));
        }
        self.stream().memcpy_htod(host, dev).map_err(GpuError::from)
    }

    /// A copy of `dev` on the host (waits for the stream's work before it).
    pub fn dtoh<T: DeviceRepr>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>, GpuError> {
        self.stream().clone_dtoh(dev).map_err(GpuError::from)
    }

    /// The kernel `name` of CUDA C source `src` (declared `extern "C"`),
    /// compiled with NVRTC for this device on first use and cached by the
    /// source's hash, so later tasks on the device pay a hash and a lookup.
    pub fn function(&self, src: &str, name: &str) -> Result<CudaFunction, GpuError> {
        self.device.kernels.function(&self.device.ctx, src, name)
    }

    /// A launch of `f` on the task's stream: add arguments with `arg` and
    /// call `launch` (unsafe: the arguments must match the kernel's).
    pub fn launch_builder<'a>(&'a self, f: &'a CudaFunction) -> LaunchArgs<'a> {
        self.lane.stream.launch_builder(f)
    }

    /// Row-major single-precision matrix multiply with cuBLAS on the
    /// task's stream: `c = alpha * a * b + beta * c`, where `a` is `m x k`,
    /// `b` is `k x n` and `c` is `m x n`.
    #[allow(clippy::too_many_arguments)]
    pub fn sgemm(
        &self,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        beta: f32,
        c: &mut CudaSlice<f32>,
    ) -> Result<(), GpuError> {
        let blas = self.lane.blas.get(&self.lane.stream)?;
        kernels::sgemm(&blas, m, n, k, alpha, a, b, beta, c)
    }

    /// Waits for the work queued on the task's stream.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.lane.stream.synchronize().map_err(GpuError::from)
    }

    fn oom(&self, e: cudarc::driver::DriverError, bytes: usize) -> GpuError {
        match GpuError::from(e) {
            GpuError::OutOfMemory { .. } => GpuError::OutOfMemory {
                device: Some(self.device.ordinal),
                requested: bytes as u64,
            },
            other => other,
        }
    }
}
