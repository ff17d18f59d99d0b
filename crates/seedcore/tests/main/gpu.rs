//! The GPU executor (feature `cuda`). Discovery and the no-GPU errors run
//! everywhere; the tests that need a device skip with a printed reason
//! where there is none, or where NVRTC or cuBLAS is not installed.
#![cfg(feature = "cuda")]

use rand::Rng;
use seedcore::gpu::cudarc::driver::PushKernelArg;
use seedcore::gpu::{
    gpu_devices, why_no_gpu, DeviceChoice, GpuConfig, GpuContext, GpuError, GpuOptions,
};
use seedcore::{ConcurrentSystem, ExecutorKind, RetryPolicy, SubmitError, TaskError, TaskOptions};
use std::collections::BTreeSet;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

seedcore::enable_test_workers!();

seedcore::process_task! {
    /// The worker's pid and the devices CUDA may see in it.
    fn visible_devices() -> (u32, Option<String>) {
        (std::process::id(), std::env::var("CUDA_VISIBLE_DEVICES").ok())
    }
}

seedcore::process_task! {
    /// Runs `kernel` (`spin` or `fault`) of [`WORKER_KERNELS`] on the
    /// worker's one device and waits for it. A fault leaves the worker's
    /// CUDA context unusable, so the worker ends itself and the pool starts
    /// a fresh one.
    fn gpu_in_worker(kernel: String) -> Result<String, String> {
        use seedcore::gpu::cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg};
        let ctx = CudaContext::new(0).map_err(|e| e.to_string())?;
        let stream = ctx.default_stream();
        if kernel == "none" {
            return ctx.name().map_err(|e| e.to_string());
        }
        let module = GpuContext::compile_for(&ctx, WORKER_KERNELS).map_err(|e| e.to_string())?;
        let f = module.load_function(&kernel).map_err(|e| e.to_string())?;
        let cycles: i64 = 60_000_000_000;
        let mut launch = stream.launch_builder(&f);
        launch.arg(&cycles);
        let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: both kernels take one long long.
        unsafe { launch.launch(cfg) }.map_err(|e| e.to_string())?;
        if let Err(e) = stream.synchronize() {
            eprintln!("device fault: {e}");
            std::process::abort();
        }
        Ok("done".into())
    }
}

seedcore::process_task! {
    /// In a system of the worker's own, on its one device: a GPU task whose
    /// kernel writes through a bad pointer, then a task for any device and
    /// one for device 0. Returns the three outcomes and the device's
    /// `gpu0_healthy` gauge after them.
    fn gpu_fault_in_a_system() -> Result<(String, String, String, u64), String> {
        use seedcore::gpu::cudarc::driver::LaunchConfig;
        let system = ConcurrentSystem::builder().core_threads(1).build().map_err(|e| e.to_string())?;
        let fault = system
            .submit_gpu(GpuOptions::new(), |gpu| {
                let f = gpu.function(WORKER_KERNELS, "fault")?;
                let cycles: i64 = 0;
                let mut launch = gpu.launch_builder(&f);
                launch.arg(&cycles);
                let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
                // SAFETY: the kernel takes one long long (and faults, as meant).
                unsafe { launch.launch(cfg) }.map_err(GpuError::from)?;
                gpu.synchronize()
            })
            .map_err(|e| e.to_string())?
            .wait();
        let after = |choice| -> Result<String, String> {
            let got = system
                .submit_gpu(GpuOptions::new().device(choice), |gpu| Ok::<_, GpuError>(gpu.device()))
                .map_err(|e| e.to_string())?
                .wait();
            Ok(match got {
                Ok(d) => format!("ran on GPU {d}"),
                Err(TaskError::Failed(inner)) => match inner.downcast_ref::<GpuError>() {
                    Some(GpuError::DeviceFaulted { device, .. }) => format!("faulted {device}: {inner}"),
                    _ => format!("other: {inner}"),
                },
                Err(e) => format!("other: {e}"),
            })
        };
        let any = after(DeviceChoice::Any)?;
        let one = after(DeviceChoice::One(0))?;
        let healthy = system
            .stats()
            .executors
            .into_iter()
            .find(|r| r.kind == ExecutorKind::Gpu)
            .and_then(|r| r.gauges.into_iter().find(|(n, _)| n == "gpu0_healthy"))
            .map_or(u64::MAX, |(_, v)| v);
        Ok((format!("{fault:?}"), any, one, healthy))
    }
}

const WORKER_KERNELS: &str = r#"
extern "C" __global__ void spin(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) { }
}
extern "C" __global__ void fault(long long cycles) {
    *((volatile int *)(cycles * 0 + 8)) = 1;
}
"#;

const SAXPY: &str = r#"
extern "C" __global__ void saxpy(float a, const float *x, float *y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { y[i] = a * x[i] + y[i]; }
}
"#;

const SPIN: &str = r#"
extern "C" __global__ void spin(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) { }
}
"#;

/// The devices, or `None` with the reason printed where there is none or
/// NVRTC or cuBLAS is missing.
fn devices_or_skip(test: &str) -> Option<Vec<seedcore::gpu::GpuDevice>> {
    if let Some(why) = why_no_gpu() {
        eprintln!("skipping {test}: {why}");
        return None;
    }
    let d = gpu_devices();
    if d.is_empty() {
        eprintln!("skipping {test}: no usable GPU listed");
        return None;
    }
    Some(d)
}

fn system() -> ConcurrentSystem {
    ConcurrentSystem::builder().core_threads(2).build().unwrap()
}

#[test]
fn discovery_lists_consistent_devices_or_says_why_there_are_none() {
    let devices = gpu_devices();
    match why_no_gpu() {
        // Devices are listed where only NVRTC or cuBLAS is missing.
        Some(why) if !devices.is_empty() => {
            assert!(
                why.contains("libnvrtc") || why.contains("libcublas"),
                "{devices:?} listed, yet: {why}"
            );
        }
        Some(why) => assert!(!why.is_empty()),
        None => {
            assert!(!devices.is_empty());
            let ordinals: BTreeSet<usize> = devices.iter().map(|d| d.ordinal).collect();
            assert_eq!(ordinals.len(), devices.len(), "{devices:?}");
            for d in &devices {
                assert!(!d.name.is_empty(), "{d:?}");
                assert!(
                    d.total_memory > 0 && d.free_memory <= d.total_memory,
                    "{d:?}"
                );
                assert!(d.compute_capability.0 >= 3, "{d:?}");
            }
        }
    }
    // Asking again neither panics nor changes the answer.
    assert_eq!(gpu_devices().len(), devices.len());
}

#[test]
fn without_a_gpu_submit_gpu_fails_at_once_with_no_gpu() {
    if !gpu_devices().is_empty() {
        eprintln!("skipping without_a_gpu_submit_gpu_fails_at_once_with_no_gpu: a GPU is present");
        return;
    }
    let system = system();
    for _ in 0..2 {
        let got = system.submit_gpu(GpuOptions::new(), |_gpu| Ok::<_, GpuError>(1));
        match got {
            Err(SubmitError::NoGpu(why)) => assert!(!why.is_empty()),
            other => panic!("expected NoGpu, got {:?}", other.map(|_| ())),
        }
    }
    assert!(matches!(
        system.start_gpu(GpuConfig::default()),
        Err(SubmitError::NoGpu(_))
    ));
    let e = SubmitError::NoGpu("the CUDA driver library (libcuda) is not installed".into());
    assert!(e.to_string().starts_with("no usable GPU: "), "{e}");
    // No GPU row, and the rest of the system works.
    assert!(system
        .stats()
        .executors
        .iter()
        .all(|r| r.kind != ExecutorKind::Gpu));
    assert_eq!(
        system
            .submit_thread(TaskOptions::new(), |_| 7)
            .unwrap()
            .wait()
            .unwrap(),
        7
    );
}

#[test]
fn gpu_memory_errors_read_as_people_write_them() {
    let e = TaskError::GpuMemory {
        device: None,
        requested: 8 << 30,
        available: 2 << 30,
    };
    assert!(
        e.to_string().contains("8 GiB") && e.to_string().contains("2 GiB"),
        "{e}"
    );
    let e = TaskError::GpuMemory {
        device: Some(1),
        requested: 1 << 20,
        available: 0,
    };
    assert!(e.to_string().contains("GPU 1 ran out of memory"), "{e}");
    assert_eq!(e.kind(), seedcore::TaskErrorKind::GpuMemory);
}

#[test]
fn saxpy_matches_a_cpu_reference_on_random_inputs() {
    if devices_or_skip("saxpy_matches_a_cpu_reference_on_random_inputs").is_none() {
        return;
    }
    let system = system();
    let mut rng = rand::thread_rng();
    let n = 100_003usize;
    let a: f32 = rng.gen_range(-4.0..4.0);
    let x: Arc<Vec<f32>> = Arc::new((0..n).map(|_| rng.gen_range(-1.0..1.0)).collect());
    let y: Arc<Vec<f32>> = Arc::new((0..n).map(|_| rng.gen_range(-1.0..1.0)).collect());
    let (xs, ys) = (x.clone(), y.clone());
    let got = system
        .submit_gpu(GpuOptions::new(), move |gpu| {
            let f = gpu.function(SAXPY, "saxpy")?;
            let dx = gpu.htod(&xs)?;
            let mut dy = gpu.htod(&ys)?;
            let cfg = seedcore::gpu::cudarc::driver::LaunchConfig::for_num_elems(n as u32);
            let mut launch = gpu.launch_builder(&f);
            let n = n as i32;
            launch.arg(&a).arg(&dx).arg(&mut dy).arg(&n);
            // SAFETY: the arguments match the kernel's signature and the
            // buffers hold n elements.
            unsafe { launch.launch(cfg) }.map_err(GpuError::from)?;
            gpu.dtoh(&dy)
        })
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(got.len(), n);
    for i in 0..n {
        let want = a * x[i] + y[i];
        assert!(
            (got[i] - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{i}: {} vs {want}",
            got[i]
        );
    }
}

#[test]
fn sgemm_matches_a_cpu_reference_and_kernels_compile_once_per_device() {
    let Some(devices) =
        devices_or_skip("sgemm_matches_a_cpu_reference_and_kernels_compile_once_per_device")
    else {
        return;
    };
    let system = system();
    let (m, n, k) = (37usize, 29usize, 53usize);
    let mut rng = rand::thread_rng();
    let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let b: Vec<f32> = (0..k * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let (ha, hb) = (a.clone(), b.clone());
    let c = system
        .submit_gpu(GpuOptions::new(), move |gpu| {
            let da = gpu.htod(&ha)?;
            let db = gpu.htod(&hb)?;
            let mut dc = gpu.alloc_zeros::<f32>(m * n)?;
            gpu.sgemm(m, n, k, 1.0, &da, &db, 0.0, &mut dc)?;
            gpu.dtoh(&dc)
        })
        .unwrap()
        .wait()
        .unwrap();
    for i in 0..m {
        for j in 0..n {
            let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            let got = c[i * n + j];
            assert!((got - want).abs() < 1e-3, "({i},{j}): {got} vs {want}");
        }
    }
    // The same source, many tasks: one module per device.
    let futures: Vec<_> = (0..40)
        .map(|_| {
            system
                .submit_gpu(GpuOptions::new().device(DeviceChoice::Spread), |gpu| {
                    gpu.function(SAXPY, "saxpy").map(|_| gpu.device())
                })
                .unwrap()
        })
        .collect();
    let used: BTreeSet<usize> = futures.into_iter().map(|f| f.wait().unwrap()).collect();
    let row = system
        .stats()
        .executors
        .into_iter()
        .find(|r| r.kind == ExecutorKind::Gpu)
        .expect("a GPU row");
    for d in &devices {
        let modules = row
            .gauges
            .iter()
            .find(|(name, _)| *name == format!("gpu{}_modules", d.ordinal))
            .map(|(_, v)| *v);
        let want = u64::from(used.contains(&d.ordinal));
        assert_eq!(modules, Some(want), "{:?}", row.gauges);
    }
}

#[test]
fn placement_spreads_over_devices_and_honours_one_device() {
    let Some(devices) = devices_or_skip("placement_spreads_over_devices_and_honours_one_device")
    else {
        return;
    };
    let system = system();
    let spread: Vec<_> = (0..4 * devices.len())
        .map(|_| {
            system
                .submit_gpu(GpuOptions::new().device(DeviceChoice::Spread), |gpu| {
                    Ok::<_, GpuError>(gpu.device())
                })
                .unwrap()
        })
        .collect();
    let used: BTreeSet<usize> = spread.into_iter().map(|f| f.wait().unwrap()).collect();
    let all: BTreeSet<usize> = devices.iter().map(|d| d.ordinal).collect();
    assert_eq!(used, all);
    let last = devices.last().unwrap().ordinal;
    for _ in 0..8 {
        let f = system
            .submit_gpu(GpuOptions::new().device(DeviceChoice::One(last)), |gpu| {
                Ok::<_, GpuError>(gpu.device())
            })
            .unwrap();
        assert_eq!(f.wait().unwrap(), last);
    }
    let missing = all.iter().max().unwrap() + 1;
    let e = system
        .submit_gpu(GpuOptions::new().device(DeviceChoice::One(missing)), |_| {
            Ok::<_, GpuError>(())
        })
        .unwrap_err();
    assert!(matches!(e, SubmitError::InvalidOptions(_)), "{e}");
    let row = system
        .stats()
        .executors
        .into_iter()
        .find(|r| r.kind == ExecutorKind::Gpu)
        .unwrap();
    let tasks: u64 = row
        .gauges
        .iter()
        .filter(|(n, _)| n.ends_with("_tasks"))
        .map(|(_, v)| v)
        .sum();
    assert!(tasks >= (4 * devices.len() + 8) as u64, "{:?}", row.gauges);
}

#[test]
fn a_memory_request_waits_for_memory_or_fails_gpu_memory() {
    let Some(devices) = devices_or_skip("a_memory_request_waits_for_memory_or_fails_gpu_memory")
    else {
        return;
    };
    let system = system();
    let d0 = devices[0].clone();
    // Larger than any device: fails at once.
    let too_big = devices.iter().map(|d| d.total_memory).max().unwrap() + 1;
    let e = system
        .submit_gpu(GpuOptions::new().memory(too_big), |_| Ok::<_, GpuError>(()))
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(
        matches!(e, TaskError::GpuMemory { device: None, requested, .. } if requested == too_big),
        "{e}"
    );
    // A holder reserves most of device 0; a second request as large waits.
    let big = d0.free_memory / 4 * 3;
    let one = DeviceChoice::One(d0.ordinal);
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let started_tx = Mutex::new(started_tx);
    let holder = system
        .submit_gpu(GpuOptions::new().memory(big).device(one), move |_| {
            started_tx.lock().unwrap().send(()).unwrap();
            release_rx.lock().unwrap().recv().unwrap();
            Ok::<_, GpuError>("held")
        })
        .unwrap();
    started_rx.recv().unwrap();
    // With a timeout, it gives up while the holder holds.
    let timed = system
        .submit_gpu(
            GpuOptions::new()
                .memory(big)
                .device(one)
                .task(TaskOptions::new().timeout(Duration::from_millis(200))),
            |_| Ok::<_, GpuError>("ran"),
        )
        .unwrap();
    let e = timed.wait().unwrap_err();
    assert!(
        matches!(e, TaskError::GpuMemory { device: None, .. }),
        "{e}"
    );
    // Without one, it waits and runs once the holder ends.
    let waiter = system
        .submit_gpu(GpuOptions::new().memory(big).device(one), |_| {
            Ok::<_, GpuError>("ran")
        })
        .unwrap();
    assert!(!waiter.is_done());
    release_tx.send(()).unwrap();
    assert_eq!(holder.wait().unwrap(), "held");
    assert_eq!(waiter.wait().unwrap(), "ran");
}

#[test]
fn a_hung_kernel_times_out_and_the_device_keeps_running_tasks() {
    let Some(devices) =
        devices_or_skip("a_hung_kernel_times_out_and_the_device_keeps_running_tasks")
    else {
        return;
    };
    let system = system();
    system
        .start_gpu(GpuConfig::default().streams_per_device(1))
        .unwrap();
    let one = DeviceChoice::One(devices[0].ordinal);
    // The kernel is compiled before the timed task starts, so its timeout
    // measures the hang and not NVRTC.
    system
        .submit_gpu(GpuOptions::new().device(one), |gpu| {
            gpu.function(SPIN, "spin").map(|_| ())
        })
        .unwrap()
        .wait()
        .unwrap();
    let hung = system
        .submit_gpu(
            GpuOptions::new()
                .device(one)
                .task(TaskOptions::new().timeout(Duration::from_millis(200))),
            |gpu| {
                // A cache hit: compiled by the task above.
                let f = gpu.function(SPIN, "spin")?;
                // About three seconds at 2 GHz: far past the timeout.
                let cycles: i64 = 6_000_000_000;
                let cfg = seedcore::gpu::cudarc::driver::LaunchConfig {
                    grid_dim: (1, 1, 1),
                    block_dim: (1, 1, 1),
                    shared_mem_bytes: 0,
                };
                let mut launch = gpu.launch_builder(&f);
                launch.arg(&cycles);
                // SAFETY: the kernel takes one long long.
                unsafe { launch.launch(cfg) }.map_err(GpuError::from)?;
                gpu.synchronize()
            },
        )
        .unwrap();
    let started = std::time::Instant::now();
    assert!(hung.wait().unwrap_err().is_timeout());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "timed out after {:?}",
        started.elapsed()
    );
    // The stuck worker was replaced: the device's one stream slot is free.
    let next = system
        .submit_gpu(GpuOptions::new().device(one), |gpu| {
            Ok::<_, GpuError>(gpu.device())
        })
        .unwrap();
    assert_eq!(next.wait().unwrap(), devices[0].ordinal);
}

#[test]
fn out_of_memory_in_a_task_follows_the_retry_policy() {
    let Some(devices) = devices_or_skip("out_of_memory_in_a_task_follows_the_retry_policy") else {
        return;
    };
    let system = system();
    let huge = (devices[0].total_memory as usize) * 2 / 4;
    let one = DeviceChoice::One(devices[0].ordinal);
    let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = attempts.clone();
    let e = system
        .submit_gpu(
            GpuOptions::new()
                .device(one)
                .task(TaskOptions::new().retry(RetryPolicy::retries(2))),
            move |gpu| {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Twice the device's memory, in f32s.
                gpu.alloc_zeros::<f32>(huge).map(|_| ())
            },
        )
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(
        matches!(
            e,
            TaskError::GpuMemory {
                device: Some(_),
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[test]
fn worker_processes_are_bound_to_one_gpu_each() {
    // Runs without a GPU: the binding is the worker's environment.
    let system = ConcurrentSystem::builder()
        .name("gpu-bound")
        .core_threads(1)
        .core_processes(2)
        .max_processes(2)
        .process_gpu_devices(["3", "GPU-5"])
        .process_output(seedcore::WorkerOutput::Discard)
        .build()
        .unwrap();
    let futures: Vec<_> = (0..8)
        .map(|_| {
            system
                .submit_process(TaskOptions::new(), visible_devices, ())
                .unwrap()
        })
        .collect();
    let mut seen = std::collections::BTreeMap::new();
    for f in futures {
        let (pid, devices) = f.wait().unwrap();
        let devices = devices.expect("CUDA_VISIBLE_DEVICES set in the worker");
        assert!(devices == "3" || devices == "GPU-5", "{devices}");
        // One device per worker, for its whole life.
        assert_eq!(seen.entry(pid).or_insert_with(|| devices.clone()), &devices);
    }
}

/// A system of one worker process bound to device 0.
fn one_gpu_worker(name: &str) -> ConcurrentSystem {
    ConcurrentSystem::builder()
        .name(name)
        .core_threads(1)
        .core_processes(1)
        .max_processes(1)
        .process_gpu_devices(["0"])
        .process_output(seedcore::WorkerOutput::Discard)
        .shutdown_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[test]
fn gpu_process_tasks_hung_or_faulting_kill_only_their_worker() {
    if devices_or_skip("gpu_process_tasks_hung_or_faulting_kill_only_their_worker").is_none() {
        return;
    }
    let system = one_gpu_worker("gpu-workers");
    let run = |kernel: &str, opts: TaskOptions| {
        system
            .submit_process(opts, gpu_in_worker, kernel.to_owned())
            .unwrap()
            .wait()
    };
    assert!(!run("none", TaskOptions::new()).unwrap().is_empty());
    // A kernel that would spin for about half a minute: the timeout kills
    // the worker (and with it the kernel).
    let e = run("spin", TaskOptions::new().timeout(Duration::from_secs(2))).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(!run("none", TaskOptions::new()).unwrap().is_empty());
    // A kernel that writes through a bad pointer: its worker dies alone.
    let e = run("fault", TaskOptions::new()).unwrap_err();
    assert!(e.is_worker_died(), "{e}");
    assert!(!run("none", TaskOptions::new()).unwrap().is_empty());
}

#[test]
fn a_device_whose_context_faulted_takes_no_new_tasks() {
    if devices_or_skip("a_device_whose_context_faulted_takes_no_new_tasks").is_none() {
        return;
    }
    // A fault poisons the device's context for its whole process: it
    // happens in a worker process of its own, never in this one.
    let system = one_gpu_worker("gpu-fault");
    let (fault, any, one, healthy) = system
        .submit_process(
            TaskOptions::new().timeout(Duration::from_secs(60)),
            gpu_fault_in_a_system,
            (),
        )
        .unwrap()
        .wait()
        .unwrap();
    assert!(
        fault.contains("ILLEGAL_ADDRESS") || fault.contains("LAUNCH_FAILED"),
        "{fault}"
    );
    assert!(any.starts_with("faulted 0: "), "{any}");
    assert!(one.starts_with("faulted 0: "), "{one}");
    assert_eq!(healthy, 0);
}
