//! The machine's CUDA devices, found through the driver loaded at run time,
//! and which of the CUDA libraries the executor uses are installed.
//!
//! The driver library is opened once per process. Where it is missing, or
//! the driver cannot start, there are no devices and the reason is kept for
//! [`SubmitError::NoGpu`](crate::SubmitError::NoGpu). cudarc panics on a
//! library or a symbol it cannot load, so each library is probed with
//! cudarc's own presence check (`is_culib_present`, which tries the same
//! file names its loader does) before anything is called in it, and every
//! first call into a library is made under `catch_unwind` besides: a
//! missing GPU or toolkit must never panic the program.

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

/// A CUDA library the executor loads at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Library {
    /// The driver (`libcuda.so.1`): devices, memory, streams, modules.
    Driver,
    /// NVRTC (`libnvrtc.so.13` or `.12`): [`GpuContext::function`](super::GpuContext::function).
    Nvrtc,
    /// cuBLAS (`libcublas.so.13` or `.12`): [`GpuContext::sgemm`](super::GpuContext::sgemm).
    Cublas,
}

impl Library {
    /// Whether the library can be opened (probed once per process).
    pub(crate) fn is_present(self) -> bool {
        static PRESENT: [OnceLock<bool>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        *PRESENT[self as usize].get_or_init(|| {
            let probe = || {
                // SAFETY: each probe only tries to open its library by the
                // file names cudarc's loader tries, and closes it again; no
                // symbol of it is called.
                unsafe {
                    match self {
                        Library::Driver => sys::is_culib_present(),
                        Library::Nvrtc => cudarc::nvrtc::sys::is_culib_present(),
                        Library::Cublas => cudarc::cublas::sys::is_culib_present(),
                    }
                }
            };
            catch_unwind(probe).unwrap_or(false)
        })
    }

    /// The library, for people (what [`GpuError::Missing`](super::GpuError::Missing) holds).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Library::Driver => "the CUDA driver library (libcuda)",
            Library::Nvrtc => "the NVRTC library (libnvrtc.so.13 or .12)",
            Library::Cublas => "the cuBLAS library (libcublas.so.13 or .12)",
        }
    }

    /// Why the executor cannot use all it offers, where it is missing.
    pub(crate) fn missing(self) -> &'static str {
        match self {
            Library::Driver => "the CUDA driver library (libcuda) is not installed",
            Library::Nvrtc => {
                "the NVRTC library (libnvrtc.so.13 or .12) is not installed: GPU tasks run, \
                 but kernels cannot be compiled"
            }
            Library::Cublas => {
                "the cuBLAS library (libcublas.so.13 or .12) is not installed: GPU tasks run, \
                 but cannot multiply matrices"
            }
        }
    }
}

fn load() -> Loaded {
    if !Library::Driver.is_present() {
        return Err(Library::Driver.missing().into());
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

/// Why GPU tasks cannot do everything the executor offers, naming what is
/// missing, or `None` where the driver, a device, NVRTC and cuBLAS are
/// all there. The CUDA driver library (libcuda) and a driver that starts
/// and lists a usable device come first; where they are there, the
/// message names each of the NVRTC library (libnvrtc, for
/// [`GpuContext::function`](super::GpuContext::function)) and the cuBLAS
/// library (libcublas, for [`GpuContext::sgemm`](super::GpuContext::sgemm))
/// that is missing.
///
/// Where only NVRTC or cuBLAS is missing, [`gpu_devices`] still lists the
/// devices and GPU tasks run; the helpers that need the missing library
/// fail with [`GpuError::Missing`](super::GpuError::Missing). Each library
/// is probed once per process, before anything is called in it. Never
/// panics.
pub fn why_no_gpu() -> Option<&'static str> {
    if let Err(why) = contexts() {
        return Some(why);
    }
    match (Library::Nvrtc.is_present(), Library::Cublas.is_present()) {
        (true, true) => None,
        (false, true) => Some(Library::Nvrtc.missing()),
        (true, false) => Some(Library::Cublas.missing()),
        (false, false) => Some(
            "neither the NVRTC library (libnvrtc.so.13 or .12) nor the cuBLAS library \
             (libcublas.so.13 or .12) is installed: GPU tasks run, but kernels cannot be \
             compiled nor matrices multiplied",
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::{why_no_gpu, Library};

    #[test]
    fn library_probes_answer_without_panicking_and_name_the_library() {
        for (lib, file) in [
            (Library::Driver, "libcuda"),
            (Library::Nvrtc, "libnvrtc"),
            (Library::Cublas, "libcublas"),
        ] {
            // Present or not, asking twice gives one answer and no panic.
            assert_eq!(lib.is_present(), lib.is_present());
            assert!(lib.name().contains(file) && lib.missing().contains(file));
        }
        if !Library::Driver.is_present() {
            assert!(why_no_gpu().is_some_and(|why| why.contains("libcuda")));
        }
    }
}
