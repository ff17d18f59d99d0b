//! Suite `gpu`: GPU tasks through `submit_gpu` against the same CUDA work
//! done directly. Needs the `cuda` feature and a GPU; otherwise every
//! subject is reported skipped with the reason.
//!
//! Metrics:
//! - `small_tasks_per_s` (subjects `seedcore`, `serial_stream`): 2,000
//!   independent tasks, each allocating three zeroed 256x256 f32 matrices
//!   and multiplying them with cuBLAS, its end awaited (the stream
//!   synchronised). `seedcore`: submitted with `submit_gpu` from 8 threads
//!   (default options: any device, 4 streams per device). `serial_stream`:
//!   the same work done by one thread on one stream, one task after the
//!   other.
//! - `task_overhead_us` (subject `seedcore`): the round trip of an empty
//!   GPU task (submit, run on a device worker with its stream
//!   synchronised, wait), one at a time from one thread.
//! - `gemm_8192_ms` (subjects `seedcore`, `direct`): one 8192x8192x8192
//!   SGEMM on device 0 over buffers allocated before, timed from submit to
//!   the future's value (`seedcore`) or from the call to the stream's
//!   synchronisation on a stream and cuBLAS handle of its own (`direct`).

use super::{Entry, Scale, Skipped};

const SUITE: &str = "gpu";

/// Every metric and subject, with its unit.
const SUBJECTS: [(&str, &str, &str); 5] = [
    ("small_tasks_per_s", "seedcore", "tasks/s"),
    ("small_tasks_per_s", "serial_stream", "tasks/s"),
    ("task_overhead_us", "seedcore", "us"),
    ("gemm_8192_ms", "seedcore", "ms"),
    ("gemm_8192_ms", "direct", "ms"),
];

/// Every subject skipped for `reason`.
fn skipped(reason: &str) -> Vec<Entry> {
    SUBJECTS
        .iter()
        .map(|&(metric, subject, unit)| {
            Entry::Skipped(Skipped {
                suite: SUITE,
                metric,
                subject,
                unit,
                reason: reason.to_owned(),
            })
        })
        .collect()
}

/// Runs the suite, or reports it skipped.
#[cfg(not(feature = "cuda"))]
pub(crate) fn run(_scale: Scale) -> anyhow::Result<(Vec<Entry>, Vec<String>)> {
    let why = "seedcore was built without the `cuda` feature (cargo build --features cuda)";
    Ok((skipped(why), vec![format!("gpu suite skipped: {why}")]))
}

/// Runs the suite, or reports it skipped.
#[cfg(feature = "cuda")]
pub(crate) fn run(scale: Scale) -> anyhow::Result<(Vec<Entry>, Vec<String>)> {
    let devices = seedcore::gpu::gpu_devices();
    if devices.is_empty() {
        let why = format!(
            "no usable GPU: {}",
            seedcore::gpu::why_no_gpu().unwrap_or("none listed")
        );
        return Ok((skipped(&why), vec![format!("gpu suite skipped: {why}")]));
    }
    let names: Vec<String> = devices
        .iter()
        .map(|d| format!("{} {} ({} MiB)", d.ordinal, d.name, d.total_memory >> 20))
        .collect();
    let notes = vec![format!("gpu: devices {}", names.join(", "))];
    Ok((on_gpu::run(scale)?, notes))
}

#[cfg(feature = "cuda")]
mod on_gpu {
    use super::super::report::median;
    use super::super::{note, Entry, Measurement, Scale};
    use super::SUITE;
    use anyhow::{anyhow, Context};
    use seedcore::gpu::cudarc::cublas::{sys as blas_sys, CudaBlas, Gemm, GemmConfig};
    use seedcore::gpu::cudarc::driver::{CudaContext, CudaSlice, CudaStream};
    use seedcore::gpu::{DeviceChoice, GpuContext, GpuError, GpuOptions};
    use seedcore::{ConcurrentSystem, TaskFuture};
    use std::sync::Arc;
    use std::time::Instant;

    const SMALL: usize = 256;
    const BIG: usize = 8192;
    const THREADS: usize = 8;

    struct Work {
        tasks: usize,
        reps: usize,
        empty: usize,
    }

    pub(super) fn run(scale: Scale) -> anyhow::Result<Vec<Entry>> {
        let w = if scale.quick {
            Work {
                tasks: 200,
                reps: 1,
                empty: 200,
            }
        } else {
            Work {
                tasks: 2000,
                reps: 5,
                empty: 2000,
            }
        };
        note(&format!(
            "gpu: {} reps; {} tasks of {SMALL}^3 SGEMM from {THREADS} threads; {} empty tasks; one {BIG}^3 SGEMM",
            w.reps, w.tasks, w.empty
        ));
        let system = ConcurrentSystem::builder()
            .build()
            .context("building the seedcore system")?;
        system
            .start_gpu(seedcore::gpu::GpuConfig::default())
            .context("starting the GPU executor")?;
        let mut out = Vec::new();
        out.push(measured(
            "small_tasks_per_s",
            "seedcore",
            "tasks/s",
            reps(w.reps, || small_seedcore(&system, w.tasks))?,
        ));
        out.push(measured(
            "small_tasks_per_s",
            "serial_stream",
            "tasks/s",
            reps(w.reps, || small_serial(w.tasks))?,
        ));
        out.push(measured(
            "task_overhead_us",
            "seedcore",
            "us",
            reps(w.reps, || overhead(&system, w.empty))?,
        ));
        let (seedcore_ms, direct_ms) = big_gemm(&system, w.reps)?;
        out.push(measured("gemm_8192_ms", "seedcore", "ms", seedcore_ms));
        out.push(measured("gemm_8192_ms", "direct", "ms", direct_ms));
        Ok(out)
    }

    fn measured(
        metric: &'static str,
        subject: &'static str,
        unit: &'static str,
        samples: Vec<f64>,
    ) -> Entry {
        Entry::Measured(Measurement {
            suite: SUITE,
            metric,
            subject,
            value: median(&samples),
            unit,
            samples,
        })
    }

    /// One warm-up run, then `n` measured ones.
    fn reps(n: usize, mut f: impl FnMut() -> anyhow::Result<f64>) -> anyhow::Result<Vec<f64>> {
        f()?;
        (0..n).map(|_| f()).collect()
    }

    /// One small task's work on `gpu`'s stream.
    fn small_task(gpu: &GpuContext) -> Result<(), GpuError> {
        let a = gpu.alloc_zeros::<f32>(SMALL * SMALL)?;
        let b = gpu.alloc_zeros::<f32>(SMALL * SMALL)?;
        let mut c = gpu.alloc_zeros::<f32>(SMALL * SMALL)?;
        gpu.sgemm(SMALL, SMALL, SMALL, 1.0, &a, &b, 0.0, &mut c)
    }

    fn small_seedcore(system: &ConcurrentSystem, tasks: usize) -> anyhow::Result<f64> {
        let started = Instant::now();
        std::thread::scope(|s| -> anyhow::Result<()> {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    s.spawn(move || -> anyhow::Result<()> {
                        let mine = tasks / THREADS + usize::from(t < tasks % THREADS);
                        let futures: Vec<TaskFuture<()>> = (0..mine)
                            .map(|_| system.submit_gpu(GpuOptions::new(), small_task))
                            .collect::<Result<_, _>>()?;
                        for f in futures {
                            f.wait()?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow!("a submitting thread panicked"))??;
            }
            Ok(())
        })?;
        Ok(tasks as f64 / started.elapsed().as_secs_f64())
    }

    fn small_serial(tasks: usize) -> anyhow::Result<f64> {
        let ctx = CudaContext::new(0)?;
        let stream = ctx.new_stream()?;
        let blas = CudaBlas::new(stream.clone())?;
        let started = Instant::now();
        for _ in 0..tasks {
            let a = stream.alloc_zeros::<f32>(SMALL * SMALL)?;
            let b = stream.alloc_zeros::<f32>(SMALL * SMALL)?;
            let mut c = stream.alloc_zeros::<f32>(SMALL * SMALL)?;
            gemm(&blas, SMALL, &a, &b, &mut c)?;
            stream.synchronize()?;
        }
        Ok(tasks as f64 / started.elapsed().as_secs_f64())
    }

    fn overhead(system: &ConcurrentSystem, n: usize) -> anyhow::Result<f64> {
        let started = Instant::now();
        for _ in 0..n {
            system
                .submit_gpu(GpuOptions::new(), |_| Ok::<_, GpuError>(()))?
                .wait()?;
        }
        Ok(started.elapsed().as_secs_f64() * 1e6 / n as f64)
    }

    /// Square row-major SGEMM of side `n` on `blas`'s stream.
    fn gemm(
        blas: &CudaBlas,
        n: usize,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        c: &mut CudaSlice<f32>,
    ) -> anyhow::Result<()> {
        let n = n as i32;
        let cfg = GemmConfig {
            transa: blas_sys::cublasOperation_t::CUBLAS_OP_N,
            transb: blas_sys::cublasOperation_t::CUBLAS_OP_N,
            m: n,
            n,
            k: n,
            alpha: 1.0f32,
            lda: n,
            ldb: n,
            beta: 0.0f32,
            ldc: n,
        };
        // SAFETY: the three buffers hold n*n elements on this context.
        unsafe { blas.gemm(cfg, b, a, c) }?;
        Ok(())
    }

    /// Buffers of the big GEMM, made once on device 0.
    struct Big {
        a: CudaSlice<f32>,
        b: CudaSlice<f32>,
        c: std::sync::Mutex<CudaSlice<f32>>,
    }

    fn big_gemm(system: &ConcurrentSystem, n: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
        let ctx = CudaContext::new(0)?;
        let stream: Arc<CudaStream> = ctx.new_stream()?;
        let big = Arc::new(Big {
            a: stream.alloc_zeros::<f32>(BIG * BIG)?,
            b: stream.alloc_zeros::<f32>(BIG * BIG)?,
            c: std::sync::Mutex::new(stream.alloc_zeros::<f32>(BIG * BIG)?),
        });
        stream.synchronize()?;
        let blas = CudaBlas::new(stream.clone())?;
        let direct = reps(n, || {
            let mut c = big.c.lock().map_err(|_| anyhow!("poisoned"))?;
            let started = Instant::now();
            gemm(&blas, BIG, &big.a, &big.b, &mut c)?;
            stream.synchronize()?;
            Ok(started.elapsed().as_secs_f64() * 1e3)
        })?;
        let through = reps(n, || {
            let big = big.clone();
            let started = Instant::now();
            system
                .submit_gpu(GpuOptions::new().device(DeviceChoice::One(0)), move |gpu| {
                    let mut c = big
                        .c
                        .lock()
                        .map_err(|_| GpuError::Shape("poisoned".into()))?;
                    gpu.sgemm(BIG, BIG, BIG, 1.0, &big.a, &big.b, 0.0, &mut c)
                })?
                .wait()?;
            Ok(started.elapsed().as_secs_f64() * 1e3)
        })?;
        Ok((through, direct))
    }
}
