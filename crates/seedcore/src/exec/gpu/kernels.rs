//! Kernels compiled at run time (NVRTC), once per device, and cuBLAS
//! matrix multiplication on a task's own stream.
//!
//! A kernel is compiled for the device's own architecture: NVRTC is asked
//! for `--gpu-architecture=sm_XY` (the device's compute capability X.Y,
//! read from the driver) and the module is loaded from the CUBIN it makes,
//! which the driver runs as it is. PTX is what a driver older than the
//! NVRTC that wrote it refuses (`CUDA_ERROR_UNSUPPORTED_PTX_VERSION`), so
//! it is used only where NVRTC does not know the device's `sm` (a device
//! newer than the NVRTC): then the PTX is for the newest `compute_XY` that
//! NVRTC knows below the device's, for the driver to compile.

use super::discovery::Library;
use super::GpuError;
use cudarc::cublas::{sys as blas_sys, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream};
use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys, Ptx};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

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
        let m = compile_module(ctx, src)?;
        modules.insert(key, m.clone());
        Ok(m)
    }
}

/// The module of CUDA C `src` compiled for the device of `ctx` (see the
/// module docs for the target), loaded into `ctx`.
pub(crate) fn compile_module(
    ctx: &Arc<CudaContext>,
    src: &str,
) -> Result<Arc<CudaModule>, GpuError> {
    if !Library::Nvrtc.is_present() {
        return Err(GpuError::Missing(Library::Nvrtc.name()));
    }
    let (major, minor) = ctx.compute_capability().map_err(GpuError::from)?;
    let cc = (major.max(0) * 10 + minor.max(0)) as u32;
    let archs = catch_unwind(nvrtc_archs).unwrap_or(&[]);
    let target = target(cc, archs).map_err(|why| {
        let (major, minor) = nvrtc_version();
        GpuError::Compile(format!("{why}; NVRTC {major}.{minor}"))
    })?;
    let image = catch_unwind(AssertUnwindSafe(|| compile(src, target)))
        .map_err(|p| GpuError::Compile(crate::error::panic_message(&*p)))??;
    ctx.load_module(image).map_err(|e| {
        let (nv_major, nv_minor) = nvrtc_version();
        log::warn!(
            "seedcore: the driver did not load a kernel compiled for {target} by NVRTC \
             {nv_major}.{nv_minor} (driver {}): {e}",
            driver_version()
        );
        GpuError::from(e)
    })
}

/// What NVRTC compiles a kernel to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// CUBIN for the real architecture `sm_N` (N = 10 major + minor).
    Cubin(u32),
    /// PTX for the virtual architecture `compute_N`.
    Ptx(u32),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Cubin(n) => write!(f, "sm_{n}"),
            Target::Ptx(n) => write!(f, "compute_{n}"),
        }
    }
}

/// The target for a device of compute capability `cc` (10 major + minor)
/// where NVRTC knows the architectures `archs` (empty where it could not
/// say): CUBIN for the device's own `sm` where NVRTC knows it, else PTX
/// for the newest architecture NVRTC knows below it; an error for a
/// device older than every architecture NVRTC knows.
pub(crate) fn target(cc: u32, archs: &[u32]) -> Result<Target, String> {
    if archs.is_empty() || archs.contains(&cc) {
        return Ok(Target::Cubin(cc));
    }
    match archs.iter().copied().filter(|&a| a < cc).max() {
        Some(a) => Ok(Target::Ptx(a)),
        None => Err(format!(
            "NVRTC does not compile for sm_{cc} (it knows sm_{}..sm_{})",
            archs.iter().min().copied().unwrap_or(0),
            archs.iter().max().copied().unwrap_or(0)
        )),
    }
}

/// The architectures this NVRTC compiles for (`nvrtcGetSupportedArchs`),
/// asked once; empty where it could not say.
fn nvrtc_archs() -> &'static [u32] {
    static ARCHS: OnceLock<Vec<u32>> = OnceLock::new();
    ARCHS.get_or_init(|| {
        let mut n: i32 = 0;
        // SAFETY: writes one int.
        if unsafe { nvrtc_sys::nvrtcGetNumSupportedArchs(&mut n) }
            .result()
            .is_err()
        {
            return Vec::new();
        }
        let mut archs = vec![0i32; n.max(0) as usize];
        // SAFETY: `archs` holds the `n` ints NVRTC said it would write.
        if unsafe { nvrtc_sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
            .result()
            .is_err()
        {
            return Vec::new();
        }
        archs.into_iter().map(|a| a.max(0) as u32).collect()
    })
}

/// The NVRTC version, `(0, 0)` where it could not say.
fn nvrtc_version() -> (i32, i32) {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: writes two ints; a missing symbol panics, caught here.
    let asked = catch_unwind(AssertUnwindSafe(|| unsafe {
        nvrtc_sys::nvrtcVersion(&mut major, &mut minor)
    }));
    match asked {
        Ok(r) if r.result().is_ok() => (major, minor),
        _ => (0, 0),
    }
}

/// The CUDA version of the driver (`13.0`), `?` where it could not say.
fn driver_version() -> String {
    let mut v = 0;
    // SAFETY: writes one int; the driver library is loaded (a context
    // exists).
    match unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }.result() {
        Ok(()) => format!("{}.{}", v / 1000, v % 1000 / 10),
        Err(_) => "?".into(),
    }
}

/// The image of `src` compiled by NVRTC for `target`.
fn compile(src: &str, target: Target) -> Result<Ptx, GpuError> {
    let c_src = CString::new(src)
        .map_err(|_| GpuError::Compile("the kernel source holds a NUL byte".into()))?;
    let prog = nvrtc::create_program(&c_src, None)
        .map_err(|e| GpuError::Compile(format!("NVRTC could not take the source: {e}")))?;
    /// Destroys the program however the compile ends.
    struct Program(nvrtc_sys::nvrtcProgram);
    impl Drop for Program {
        fn drop(&mut self) {
            // SAFETY: made by `create_program` above, destroyed once.
            let _ = unsafe { nvrtc::destroy_program(self.0) };
        }
    }
    let prog = Program(prog);
    let options = [format!("--gpu-architecture={target}")];
    // SAFETY: `prog` is a live program; `c_src` outlives it.
    if let Err(e) = unsafe { nvrtc::compile_program(prog.0, &options) } {
        // SAFETY: `prog` is a live program.
        let log = unsafe { nvrtc::get_program_log(prog.0) }
            .map(|l| text(&l))
            .unwrap_or_default();
        return Err(GpuError::Compile(format!(
            "{e} ({}): {}",
            options[0],
            log.trim()
        )));
    }
    match target {
        Target::Cubin(_) => {
            let mut size = 0usize;
            // SAFETY: `prog` compiled for a real architecture; writes one
            // size, then that many bytes into a buffer of that size.
            let cubin = unsafe {
                nvrtc_sys::nvrtcGetCUBINSize(prog.0, &mut size)
                    .result()
                    .and_then(|()| {
                        let mut buf = vec![0u8; size];
                        nvrtc_sys::nvrtcGetCUBIN(prog.0, buf.as_mut_ptr().cast::<c_char>())
                            .result()
                            .map(|()| buf)
                    })
            }
            .map_err(|e| GpuError::Compile(format!("NVRTC made no CUBIN: {e}")))?;
            Ok(Ptx::from_binary(cubin))
        }
        Target::Ptx(_) => {
            // SAFETY: `prog` compiled.
            let ptx = unsafe { nvrtc::get_ptx(prog.0) }
                .map_err(|e| GpuError::Compile(format!("NVRTC made no PTX: {e}")))?;
            Ok(Ptx::from_src(text(&ptx)))
        }
    }
}

/// A NUL-terminated buffer of NVRTC's as text.
fn text(buf: &[c_char]) -> String {
    // SAFETY: c_char and u8 have the same size and alignment.
    let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), buf.len()) };
    match CStr::from_bytes_until_nul(bytes) {
        Ok(s) => s.to_string_lossy().into_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// A cuBLAS handle bound to one stream, made on first use (its creation
/// costs milliseconds and device memory, so it lives with the stream).
#[derive(Debug, Default)]
pub(crate) struct BlasSlot(Mutex<Option<Arc<CudaBlas>>>);

impl Drop for BlasSlot {
    fn drop(&mut self) {
        if let Some(b) = self.0.get_mut().take() {
            // cudarc's drop unwraps cuBLAS's status, which a context that
            // faulted may make an error: the panic is kept here, not let
            // out of the executor's drop.
            if catch_unwind(AssertUnwindSafe(|| drop(b))).is_err() {
                log::warn!("seedcore: a cuBLAS handle did not close (its device faulted)");
            }
        }
    }
}

impl BlasSlot {
    pub(crate) fn get(&self, stream: &Arc<CudaStream>) -> Result<Arc<CudaBlas>, GpuError> {
        let mut slot = self.0.lock();
        if let Some(b) = &*slot {
            return Ok(b.clone());
        }
        if !Library::Cublas.is_present() {
            return Err(GpuError::Missing(Library::Cublas.name()));
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

#[cfg(test)]
mod tests {
    use super::{target, Target};

    #[test]
    fn kernels_compile_to_the_devices_own_sm_where_nvrtc_knows_it() {
        // The list of an NVRTC that knows neither Maxwell nor Pascal.
        let archs = [75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121];
        assert_eq!(target(90, &archs), Ok(Target::Cubin(90)));
        assert_eq!(target(121, &archs), Ok(Target::Cubin(121)));
        assert_eq!(Target::Cubin(90).to_string(), "sm_90");
        assert_eq!(Target::Cubin(121).to_string(), "sm_121");
        // An NVRTC that could not say: the device's own sm all the same.
        assert_eq!(target(90, &[]), Ok(Target::Cubin(90)));
    }

    #[test]
    fn a_device_newer_than_nvrtc_gets_ptx_of_the_newest_arch_below_it() {
        let archs = [50, 60, 70, 75, 80, 86, 89, 90];
        assert_eq!(target(100, &archs), Ok(Target::Ptx(90)));
        assert_eq!(target(87, &archs), Ok(Target::Ptx(86)));
        assert_eq!(Target::Ptx(90).to_string(), "compute_90");
    }

    #[test]
    fn a_device_older_than_every_arch_nvrtc_knows_is_an_error_naming_them() {
        let e = target(61, &[75, 80, 90]).unwrap_err();
        assert!(e.contains("sm_61") && e.contains("sm_75..sm_90"), "{e}");
    }
}
