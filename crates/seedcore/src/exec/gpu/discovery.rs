//! The machine's CUDA devices, found through the driver loaded at run time.
//!
//! The driver library is opened once per process. Where it is missing, or
//! the driver cannot start, there are no devices and the reason is kept for
//! [`SubmitError::NoGpu`](crate::SubmitError::NoGpu). Every first call
//! into the library is made under `catch_unwind`: cudarc panics on a
//! library or a symbol it cannot load, and a missing GPU must never panic
//! the program.

use crate::error::panic_message;
use cudarc::driver::{sys, CudaContext};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

/// One CUDA device, as [`gpu_devices`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GpuDevice {
    /// The driver's ordinal of the device (what `GpuOptions::device` takes).
    pub ordinal: usize,
    /// The device's name (`NVIDIA H200`).
    pub name: String,
    /// Its compute capability, `(major, minor)`.
    pub compute_capability: (u32, u32),
    /// Its memory, in bytes.
    pub total_memory: u64,
    /// Its free memory when listed, in bytes.
    pub free_memory: u64,
    /// Its utilisation in percent, where NVML reports one (not read by
    /// this version: always `None`).
    pub utilization: Option<u32>,
}

/// The primary contexts of the usable devices, or why there are none.
type Loaded = Result<Vec<Arc<CudaContext>>, String>;

static DRIVER: OnceLock<Loaded> = OnceLock::new();

/// The contexts of the usable devices (opened once per process), or why
/// there are none.
pub(crate) fn contexts() -> Result<&'static [Arc<CudaContext>], &'static str> {
    match DRIVER.get_or_init(load) {
        Ok(v) => Ok(v),
        Err(why) => Err(why),
    }
}

fn load() -> Loaded {
    // SAFETY: only tries to open the driver library by its usual names;
    // no symbol of it is called.
    if !unsafe { sys::is_culib_present() } {
        return Err("the CUDA driver library (libcuda) is not installed".into());
    }
    let found = catch_unwind(AssertUnwindSafe(|| -> Loaded {
        let n = CudaContext::device_count()
            .map_err(|e| format!("the CUDA driver did not start: {e}"))?;
        let mut out = Vec::new();
        for i in 0..n.max(0) as usize {
            match CudaContext::new(i) {
                Ok(ctx) => out.push(ctx),
                Err(e) => log::warn!("seedcore: GPU {i} is not usable: {e}"),
            }
        }
        if out.is_empty() {
            return Err(format!(
                "the CUDA driver found no usable device ({n} listed)"
            ));
        }
        Ok(out)
    }));
    found.unwrap_or_else(|p| {
        Err(format!(
            "the CUDA driver could not be used: {}",
            panic_message(&*p)
        ))
    })
}

/// Why there is no usable GPU, or `None` where there is one.
pub fn why_no_gpu() -> Option<&'static str> {
    contexts().err()
}

/// The usable CUDA devices of this machine, with their free memory now;
/// empty where CUDA is not installed or the driver finds no device (see
/// [`why_no_gpu`]). Never panics.
///
/// ```
/// for d in seedcore::gpu::gpu_devices() {
///     println!("{} {}: {} MiB free", d.ordinal, d.name, d.free_memory >> 20);
/// }
/// ```
pub fn gpu_devices() -> Vec<GpuDevice> {
    let Ok(ctxs) = contexts() else {
        return Vec::new();
    };
    catch_unwind(AssertUnwindSafe(|| {
        ctxs.iter().filter_map(|c| describe(c).ok()).collect()
    }))
    .unwrap_or_default()
}

/// One device's figures from its context.
pub(crate) fn describe(ctx: &Arc<CudaContext>) -> Result<GpuDevice, cudarc::driver::DriverError> {
    let (major, minor) = ctx.compute_capability()?;
    let (free, total) = ctx.mem_get_info()?;
    Ok(GpuDevice {
        ordinal: ctx.ordinal(),
        name: ctx.name()?,
        compute_capability: (major.max(0) as u32, minor.max(0) as u32),
        total_memory: total as u64,
        free_memory: free as u64,
        utilization: None,
    })
}
