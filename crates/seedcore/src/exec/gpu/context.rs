//! What a GPU task is handed: its device, a stream of its own from the
//! device's stream pool, and helpers to allocate, copy, compile, launch and
//! multiply on that stream.

use super::kernels::{self, BlasSlot};
use super::{Device, GpuError};
use crate::task::TaskContext;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, DriverError,
    LaunchArgs, ValidAsZeroBits,
};
use parking_lot::Mutex;
use std::sync::Arc;

/// A stream of a device's pool and the cuBLAS handle bound to it.
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: BlasSlot,
}

impl Lane {
    /// The sticky error the stream reports, if the device's context
    /// faulted: `cuStreamQuery` returns it on every stream of the context
    /// (and success or "not ready" otherwise). One driver call, made after
    /// each task, whose stream is idle by then.
    pub(crate) fn sticky_error(&self) -> Option<DriverError> {
        // SAFETY: the stream is alive (the lane holds it) and its context
        // is the device's primary context, which outlives it; the query
        // only reads its state.
        let r = unsafe { cudarc::driver::sys::cuStreamQuery(self.stream.cu_stream()) };
        r.result().err().filter(is_sticky)
    }
}

/// Whether `e` is a sticky error: one after which the context is unusable
/// for the rest of the process, every later call failing the same way
/// (the driver API's docs say so of each of these; an uncorrectable ECC
/// error, besides, wants the device reset).
pub(crate) fn is_sticky(e: &DriverError) -> bool {
    use cudarc::driver::sys::cudaError_enum::*;
    matches!(
        e.0,
        CUDA_ERROR_ILLEGAL_ADDRESS
            | CUDA_ERROR_LAUNCH_TIMEOUT
            | CUDA_ERROR_ASSERT
            | CUDA_ERROR_HARDWARE_STACK_ERROR
            | CUDA_ERROR_ILLEGAL_INSTRUCTION
            | CUDA_ERROR_MISALIGNED_ADDRESS
            | CUDA_ERROR_INVALID_ADDRESS_SPACE
            | CUDA_ERROR_INVALID_PC
            | CUDA_ERROR_LAUNCH_FAILED
            | CUDA_ERROR_ECC_UNCORRECTABLE
    )
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

    /// The module of CUDA C source `src` compiled with NVRTC for the device
    /// of `ctx` and loaded into it, as [`function`](Self::function)
    /// compiles (CUBIN for the device's own `sm`; no cache), for code that
    /// holds its own context outside a GPU task: a process worker bound
    /// to one device, say.
    pub fn compile_for(ctx: &Arc<CudaContext>, src: &str) -> Result<Arc<CudaModule>, GpuError> {
        kernels::compile_module(ctx, src)
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

#[cfg(test)]
mod tests {
    use super::is_sticky;
    use cudarc::driver::sys::cudaError_enum::*;
    use cudarc::driver::DriverError;

    #[test]
    fn faults_that_poison_the_context_are_sticky_and_others_are_not() {
        for e in [
            CUDA_ERROR_ILLEGAL_ADDRESS,
            CUDA_ERROR_LAUNCH_FAILED,
            CUDA_ERROR_LAUNCH_TIMEOUT,
            CUDA_ERROR_ILLEGAL_INSTRUCTION,
            CUDA_ERROR_MISALIGNED_ADDRESS,
        ] {
            assert!(is_sticky(&DriverError(e)), "{e:?}");
        }
        for e in [
            CUDA_ERROR_OUT_OF_MEMORY,
            CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,
            CUDA_ERROR_INVALID_VALUE,
            CUDA_ERROR_NOT_READY,
            CUDA_ERROR_UNSUPPORTED_PTX_VERSION,
        ] {
            assert!(!is_sticky(&DriverError(e)), "{e:?}");
        }
    }
}
