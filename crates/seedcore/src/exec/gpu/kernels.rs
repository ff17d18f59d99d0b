//! Kernels compiled at run time (NVRTC), once per device, and cuBLAS
//! matrix multiplication on a task's own stream.

use super::GpuError;
use cudarc::cublas::{sys as blas_sys, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream};
use cudarc::nvrtc::CompileOptions;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// The compiled modules of one device, keyed by a hash of their source,
/// and the functions taken from them.
#[derive(Default)]
pub(crate) struct ModuleCache {
    modules: Mutex<HashMap<u64, Arc<CudaModule>>>,
    functions: Mutex<HashMap<(u64, String), CudaFunction>>,
}

impl std::fmt::Debug for ModuleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleCache")
            .field("modules", &self.modules.lock().len())
            .finish()
    }
}

/// The cache key of `src`.
fn source_hash(src: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    src.hash(&mut h);
    h.finish()
}

impl ModuleCache {
    /// Modules compiled so far.
    pub(crate) fn len(&self) -> usize {
        self.modules.lock().len()
    }

    /// The function `name` of CUDA C source `src` on the device of `ctx`:
    /// compiled for the device's architecture on first use, then cached.
    pub(crate) fn function(
        &self,
        ctx: &Arc<CudaContext>,
        src: &str,
        name: &str,
    ) -> Result<CudaFunction, GpuError> {
        let key = source_hash(src);
        if let Some(f) = self.functions.lock().get(&(key, name.to_owned())) {
            return Ok(f.clone());
        }
        let module = self.module(ctx, key, src)?;
        let f = module.load_function(name).map_err(GpuError::from)?;
        self.functions
            .lock()
            .insert((key, name.to_owned()), f.clone());
        Ok(f)
    }

    fn module(
        &self,
        ctx: &Arc<CudaContext>,
        key: u64,
        src: &str,
    ) -> Result<Arc<CudaModule>, GpuError> {
        // Held across the compile: two tasks asking for the same new
        // module wait for one compile rather than doing two.
        let mut modules = self.modules.lock();
        if let Some(m) = modules.get(&key) {
            return Ok(m.clone());
        }
        // SAFETY: only tries to open the NVRTC library by its usual names.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(GpuError::Missing("the NVRTC library (libnvrtc)"));
        }
        let (major, minor) = ctx.compute_capability().map_err(GpuError::from)?;
        let opts = CompileOptions {
            options: vec![format!("--gpu-architecture=compute_{major}{minor}")],
            ..CompileOptions::default()
        };
        let ptx = catch_unwind(AssertUnwindSafe(|| {
            cudarc::nvrtc::compile_ptx_with_opts(src, opts)
        }))
        .map_err(|p| GpuError::Compile(crate::error::panic_message(&*p)))?
        .map_err(|e| GpuError::Compile(e.to_string()))?;
        let m = ctx.load_module(ptx).map_err(GpuError::from)?;
        modules.insert(key, m.clone());
        Ok(m)
    }
}

/// A cuBLAS handle bound to one stream, made on first use (its creation
/// costs milliseconds and device memory, so it lives with the stream).
#[derive(Debug, Default)]
pub(crate) struct BlasSlot(Mutex<Option<Arc<CudaBlas>>>);

impl BlasSlot {
    pub(crate) fn get(&self, stream: &Arc<CudaStream>) -> Result<Arc<CudaBlas>, GpuError> {
        let mut slot = self.0.lock();
        if let Some(b) = &*slot {
            return Ok(b.clone());
        }
        // SAFETY: only tries to open the cuBLAS library by its usual names.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(GpuError::Missing("the cuBLAS library (libcublas)"));
        }
        let b = catch_unwind(AssertUnwindSafe(|| CudaBlas::new(stream.clone())))
            .map_err(|p| GpuError::Blas(crate::error::panic_message(&*p)))?
            .map_err(|e| GpuError::Blas(e.to_string()))?;
        let b = Arc::new(b);
        *slot = Some(b.clone());
        Ok(b)
    }
}

/// Row-major `c = alpha * a(m x k) * b(k x n) + beta * c(m x n)` with
/// cuBLAS on `blas`'s stream.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    blas: &CudaBlas,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    beta: f32,
    c: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    if a.len() < m * k || b.len() < k * n || c.len() < m * n {
        return Err(GpuError::Shape(format!(
            "sgemm {m}x{k} * {k}x{n}: buffers of {}, {} and {} elements",
            a.len(),
            b.len(),
            c.len()
        )));
    }
    let dim =
        |v: usize| i32::try_from(v).map_err(|_| GpuError::Shape(format!("dimension {v} over i32")));
    let (m, n, k) = (dim(m)?, dim(n)?, dim(k)?);
    // cuBLAS is column-major: a row-major C = A B is the column-major
    // C^T = B^T A^T, so the operands swap and nothing is transposed.
    let cfg = GemmConfig {
        transa: blas_sys::cublasOperation_t::CUBLAS_OP_N,
        transb: blas_sys::cublasOperation_t::CUBLAS_OP_N,
        m: n,
        n: m,
        k,
        alpha,
        lda: n,
        ldb: k,
        beta,
        ldc: n,
    };
    // SAFETY: the buffers hold at least the elements the shapes read and
    // write (checked above), and all live on this context.
    unsafe { blas.gemm(cfg, b, a, c) }.map_err(|e| GpuError::Blas(e.to_string()))
}
