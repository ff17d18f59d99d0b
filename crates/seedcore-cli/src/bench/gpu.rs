//! Suite `gpu`: GPU tasks through `submit_gpu` against the same CUDA work
//! done directly, with the same parallelism. Needs the `cuda` feature, a
//! GPU, NVRTC and cuBLAS; otherwise every subject is reported skipped with
//! the reason.
//!
//! Both sides of each ratio run in alternating rounds (direct, seedcore,
//! then seedcore, direct, ...) after one warm-up round each; each figure is
//! the median of its rounds. Inputs are deterministic pseudo-random
//! numbers, and every round's results are checksummed: a seedcore round
//! whose checksums differ from the direct round's fails the suite.
//!
//! Metrics:
//! - `small_tasks_per_s` (subjects `seedcore`, `direct_streams`): 2,000
//!   independent tasks, each copying two 256x256 f32 matrices to the
//!   device, multiplying them with cuBLAS and copying the product back
//!   (its end awaited). With N = the executor's streams per device times
//!   the devices: `seedcore` submits them with `submit_gpu` from N threads
//!   (default options: any device, 4 streams per device); `direct_streams`
//!   runs them on N threads, each with a stream and a cuBLAS handle of its
//!   own, spread over the devices: the same parallelism done by hand.
//! - `task_overhead_us` (subject `seedcore`): the round trip of an empty
//!   GPU task (submit, run on a device worker with its stream
//!   synchronised, wait), one at a time from one thread.
//! - `gemm_8192_ms` (subjects `seedcore`, `direct`): one 8192x8192x8192
//!   SGEMM on device 0 over buffers filled before, timed from submit to
//!   the future's value (`seedcore`) or from the call to the stream's
//!   synchronisation on a stream and cuBLAS handle of its own (`direct`).

use super::{Entry, Scale, Skipped};

const SUITE: &str = "gpu";

/// Every metric and subject, with its unit.
const SUBJECTS: [(&str, &str, &str); 5] = [
    ("small_tasks_per_s", "seedcore", "tasks/s"),
    ("small_tasks_per_s", "direct_streams", "tasks/s"),
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
    if let Some(why) = seedcore::gpu::why_no_gpu() {
        let why = format!("no usable GPU: {why}");
        return Ok((skipped(&why), vec![format!("gpu suite skipped: {why}")]));
    }
    let devices = seedcore::gpu::gpu_devices();
    if devices.is_empty() {
        let why = "no usable GPU: none listed";
        return Ok((skipped(why), vec![format!("gpu suite skipped: {why}")]));
    }
    let names: Vec<String> = devices
        .iter()
        .map(|d| format!("{} {} ({} MiB)", d.ordinal, d.name, d.total_memory >> 20))
        .collect();
    let notes = vec![format!("gpu: devices {}", names.join(", "))];
    let ordinals: Vec<usize> = devices.iter().map(|d| d.ordinal).collect();
    Ok((on_gpu::run(scale, &ordinals)?, notes))
}

#[cfg(feature = "cuda")]
mod on_gpu {
    use super::super::report::median;
    use super::super::{note, Entry, Measurement, Scale};
    use super::SUITE;
    use anyhow::{anyhow, bail, Context};
    use seedcore::gpu::cudarc::cublas::{sys as blas_sys, CudaBlas, Gemm, GemmConfig};
    use seedcore::gpu::cudarc::driver::{CudaContext, CudaSlice, CudaStream};
    use seedcore::gpu::{DeviceChoice, GpuConfig, GpuContext, GpuError, GpuOptions};
    use seedcore::{ConcurrentSystem, TaskFuture};
    use std::sync::Arc;
    use std::time::Instant;

    const SMALL: usize = 256;
    const BIG: usize = 8192;
    /// Input pairs of the small tasks: task `i` multiplies pair `i % PAIRS`.
    const PAIRS: usize = 8;

    struct Work {
        tasks: usize,
        reps: usize,
        empty: usize,
    }

    pub(super) fn run(scale: Scale, devices: &[usize]) -> anyhow::Result<Vec<Entry>> {
        let w = if scale.quick {
            Work {
                tasks: 200,
                reps: 2,
                empty: 200,
            }
        } else {
            Work {
                tasks: 2000,
                reps: 6,
                empty: 2000,
            }
        };
        let config = GpuConfig::default();
        let streams = config.streams_per_device * devices.len();
        note(&format!(
            "gpu: {} alternating rounds; {} tasks of {SMALL}^3 SGEMM on {streams} streams \
             (seedcore: from {streams} threads; direct: {streams} threads x 1 stream); \
             {} empty tasks; one {BIG}^3 SGEMM",
            w.reps, w.tasks, w.empty
        ));
        let system = ConcurrentSystem::builder()
            .build()
            .context("building the seedcore system")?;
        system
            .start_gpu(config)
            .context("starting the GPU executor")?;
        let inputs = Arc::new(Inputs::new());
        let lanes = (0..streams)
            .map(|t| DirectLane::new(devices[t % devices.len()]))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (seedcore_small, direct_small) = alternate(
            w.reps,
            || small_direct(&lanes, &inputs, w.tasks),
            || small_seedcore(&system, &inputs, w.tasks, streams),
            "small tasks",
        )?;
        let mut out = vec![
            measured("small_tasks_per_s", "seedcore", "tasks/s", seedcore_small),
            measured(
                "small_tasks_per_s",
                "direct_streams",
                "tasks/s",
                direct_small,
            ),
        ];
        out.push(measured(
            "task_overhead_us",
            "seedcore",
            "us",
            reps(w.reps, || overhead(&system, w.empty))?,
        ));
        let (seedcore_ms, direct_ms) = big_gemm(&system, devices[0], w.reps)?;
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

    /// A warm-up round of each side, then `n` rounds of both in turn
    /// (direct first in even rounds, seedcore first in odd ones). Each run
    /// gives its figure and its checksums; a seedcore run whose checksums
    /// differ from those of the direct run of its round is an error.
    /// Returns the seedcore figures and the direct ones.
    fn alternate(
        n: usize,
        mut direct: impl FnMut() -> anyhow::Result<(f64, Vec<Checksum>)>,
        mut seedcore: impl FnMut() -> anyhow::Result<(f64, Vec<Checksum>)>,
        what: &str,
    ) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..=n {
            let (d, s) = if round % 2 == 0 {
                let d = direct()?;
                (d, seedcore()?)
            } else {
                let s = seedcore()?;
                (direct()?, s)
            };
            if let Some(i) = (0..d.1.len()).find(|&i| !d.1[i].matches(&s.1[i])) {
                bail!(
                    "{what}: seedcore's result {i} differs from the direct one ({:?} vs {:?})",
                    s.1[i],
                    d.1[i]
                );
            }
            if round > 0 {
                ours.push(s.0);
                theirs.push(d.0);
            }
        }
        Ok((ours, theirs))
    }

    /// The sum and the sum of magnitudes of a result.
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Checksum {
        sum: f64,
        abs: f64,
    }

    impl Checksum {
        fn of(v: &[f32]) -> Self {
            v.iter()
                .fold(Checksum { sum: 0.0, abs: 0.0 }, |c, &x| Checksum {
                    sum: c.sum + f64::from(x),
                    abs: c.abs + f64::from(x).abs(),
                })
        }

        /// Equal up to rounding: the same inputs through cuBLAS on
        /// another stream (or device) may sum in another order.
        fn matches(&self, other: &Checksum) -> bool {
            let tol = 1e-5 * self.abs.max(other.abs).max(1.0);
            self.abs > 0.0
                && (self.abs - other.abs).abs() <= tol
                && (self.sum - other.sum).abs() <= tol
        }
    }

    /// `len` deterministic pseudo-random numbers in [-1, 1) (xorshift64*).
    fn fill(seed: u64, len: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
                (r as f32 / (1u64 << 23) as f32) - 1.0
            })
            .collect()
    }

    /// The small tasks' input matrices.
    struct Inputs {
        pairs: Vec<(Vec<f32>, Vec<f32>)>,
    }

    impl Inputs {
        fn new() -> Self {
            let pairs = (0..PAIRS as u64)
                .map(|p| {
                    (
                        fill(2 * p + 1, SMALL * SMALL),
                        fill(2 * p + 2, SMALL * SMALL),
                    )
                })
                .collect();
            Inputs { pairs }
        }

        /// Task `i`'s matrices and factor.
        fn task(&self, i: usize) -> (&[f32], &[f32], f32) {
            let (a, b) = &self.pairs[i % PAIRS];
            (a, b, 1.0 + (i % 7) as f32 * 0.25)
        }
    }

    /// Small task `i` on `gpu`'s stream: its product's checksum.
    fn small_task(gpu: &GpuContext, inputs: &Inputs, i: usize) -> Result<Checksum, GpuError> {
        let (a, b, alpha) = inputs.task(i);
        let a = gpu.htod(a)?;
        let b = gpu.htod(b)?;
        let mut c = gpu.alloc_zeros::<f32>(SMALL * SMALL)?;
        gpu.sgemm(SMALL, SMALL, SMALL, alpha, &a, &b, 0.0, &mut c)?;
        Ok(Checksum::of(&gpu.dtoh(&c)?))
    }

    /// `tasks` small tasks through seedcore, submitted from `threads`
    /// threads (thread `t` takes tasks `t`, `t + threads`, ...): tasks per
    /// second and each task's checksum.
    fn small_seedcore(
        system: &ConcurrentSystem,
        inputs: &Arc<Inputs>,
        tasks: usize,
        threads: usize,
    ) -> anyhow::Result<(f64, Vec<Checksum>)> {
        let started = Instant::now();
        let done = std::thread::scope(|s| -> anyhow::Result<Vec<(usize, Checksum)>> {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || -> anyhow::Result<Vec<(usize, Checksum)>> {
                        let futures: Vec<(usize, TaskFuture<Checksum>)> = (t..tasks)
                            .step_by(threads)
                            .map(|i| {
                                let inputs = inputs.clone();
                                system
                                    .submit_gpu(GpuOptions::new(), move |gpu| {
                                        small_task(gpu, &inputs, i)
                                    })
                                    .map(|f| (i, f))
                            })
                            .collect::<Result<_, _>>()?;
                        futures
                            .into_iter()
                            .map(|(i, f)| Ok((i, f.wait()?)))
                            .collect()
                    })
                })
                .collect();
            join_all(handles, tasks, "a submitting thread")
        })?;
        let rate = tasks as f64 / started.elapsed().as_secs_f64();
        Ok((rate, in_order(done, tasks)))
    }

    /// A stream and a cuBLAS handle of one direct thread.
    struct DirectLane {
        stream: Arc<CudaStream>,
        blas: CudaBlas,
    }

    impl DirectLane {
        fn new(device: usize) -> anyhow::Result<Self> {
            let ctx = CudaContext::new(device)?;
            let stream = ctx.new_stream()?;
            let blas = CudaBlas::new(stream.clone())?;
            Ok(DirectLane { stream, blas })
        }

        fn small_task(&self, inputs: &Inputs, i: usize) -> anyhow::Result<Checksum> {
            let (a, b, alpha) = inputs.task(i);
            let a = self.stream.clone_htod(a)?;
            let b = self.stream.clone_htod(b)?;
            let mut c = self.stream.alloc_zeros::<f32>(SMALL * SMALL)?;
            gemm(&self.blas, SMALL, alpha, &a, &b, &mut c)?;
            Ok(Checksum::of(&self.stream.clone_dtoh(&c)?))
        }
    }

    /// `tasks` small tasks on one thread per lane (thread `t` takes tasks
    /// `t`, `t + lanes`, ...): tasks per second and each task's checksum.
    fn small_direct(
        lanes: &[DirectLane],
        inputs: &Inputs,
        tasks: usize,
    ) -> anyhow::Result<(f64, Vec<Checksum>)> {
        let n = lanes.len();
        let started = Instant::now();
        let done = std::thread::scope(|s| -> anyhow::Result<Vec<(usize, Checksum)>> {
            let handles: Vec<_> = lanes
                .iter()
                .enumerate()
                .map(|(t, lane)| {
                    s.spawn(move || -> anyhow::Result<Vec<(usize, Checksum)>> {
                        (t..tasks)
                            .step_by(n)
                            .map(|i| Ok((i, lane.small_task(inputs, i)?)))
                            .collect()
                    })
                })
                .collect();
            join_all(handles, tasks, "a direct thread")
        })?;
        let rate = tasks as f64 / started.elapsed().as_secs_f64();
        Ok((rate, in_order(done, tasks)))
    }

    /// What one thread of a round did: each task's index and checksum.
    type Done = anyhow::Result<Vec<(usize, Checksum)>>;

    /// Joins the threads that ran `tasks` tasks and gathers what each did;
    /// `who` names them in the error of one that panicked.
    fn join_all(
        handles: Vec<std::thread::ScopedJoinHandle<'_, Done>>,
        tasks: usize,
        who: &str,
    ) -> Done {
        let mut done = Vec::with_capacity(tasks);
        for h in handles {
            done.extend(h.join().map_err(|_| anyhow!("{who} panicked"))??);
        }
        Ok(done)
    }

    /// The checksums by task index.
    fn in_order(mut done: Vec<(usize, Checksum)>, tasks: usize) -> Vec<Checksum> {
        done.sort_by_key(|&(i, _)| i);
        debug_assert_eq!(done.len(), tasks);
        done.into_iter().map(|(_, c)| c).collect()
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

    /// Square row-major `c = alpha * a * b` of side `n` on `blas`'s stream.
    fn gemm(
        blas: &CudaBlas,
        n: usize,
        alpha: f32,
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
            alpha,
            lda: n,
            ldb: n,
            beta: 0.0f32,
            ldc: n,
        };
        // SAFETY: the three buffers hold n*n elements on this context.
        unsafe { blas.gemm(cfg, b, a, c) }?;
        Ok(())
    }

    /// Buffers of the big GEMM, made once on one device.
    struct Big {
        a: CudaSlice<f32>,
        b: CudaSlice<f32>,
        c: std::sync::Mutex<CudaSlice<f32>>,
    }

    fn big_gemm(
        system: &ConcurrentSystem,
        device: usize,
        n: usize,
    ) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
        let ctx = CudaContext::new(device)?;
        let stream: Arc<CudaStream> = ctx.new_stream()?;
        let big = Arc::new(Big {
            a: stream.clone_htod(&fill(101, BIG * BIG))?,
            b: stream.clone_htod(&fill(102, BIG * BIG))?,
            c: std::sync::Mutex::new(stream.alloc_zeros::<f32>(BIG * BIG)?),
        });
        stream.synchronize()?;
        let blas = CudaBlas::new(stream.clone())?;
        // The product's checksum, read after the timing.
        let checksum = || -> anyhow::Result<Checksum> {
            let c = big.c.lock().map_err(|_| anyhow!("poisoned"))?;
            Ok(Checksum::of(&stream.clone_dtoh(&*c)?))
        };
        let direct = || -> anyhow::Result<(f64, Vec<Checksum>)> {
            let ms = {
                let mut c = big.c.lock().map_err(|_| anyhow!("poisoned"))?;
                stream.memset_zeros(&mut *c)?;
                stream.synchronize()?;
                let started = Instant::now();
                gemm(&blas, BIG, 1.0, &big.a, &big.b, &mut c)?;
                stream.synchronize()?;
                started.elapsed().as_secs_f64() * 1e3
            };
            Ok((ms, vec![checksum()?]))
        };
        let through = || -> anyhow::Result<(f64, Vec<Checksum>)> {
            {
                let mut c = big.c.lock().map_err(|_| anyhow!("poisoned"))?;
                stream.memset_zeros(&mut *c)?;
                stream.synchronize()?;
            }
            let task = big.clone();
            let started = Instant::now();
            system
                .submit_gpu(
                    GpuOptions::new().device(DeviceChoice::One(device)),
                    move |gpu| {
                        let mut c = task
                            .c
                            .lock()
                            .map_err(|_| GpuError::Shape("poisoned".into()))?;
                        gpu.sgemm(BIG, BIG, BIG, 1.0, &task.a, &task.b, 0.0, &mut c)
                    },
                )?
                .wait()?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            Ok((ms, vec![checksum()?]))
        };
        alternate(n, direct, through, "the 8192^3 SGEMM")
    }
}
