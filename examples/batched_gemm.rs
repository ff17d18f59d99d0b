//! A batch of matrix products as GPU tasks: each task multiplies one pair
//! of random matrices with cuBLAS on a stream of its own, the executor
//! placing the tasks over the devices by load and free memory (each asks
//! for the memory it needs). One product is checked against the CPU.
//!
//! Run with `cargo run -p seedcore --features cuda --example batched_gemm`.
//! Without a GPU, NVRTC or cuBLAS it says so and exits 0.

use rand::Rng;
use seedcore::gpu::{gpu_devices, why_no_gpu, GpuError, GpuOptions};
use seedcore::ConcurrentSystem;
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(why) = why_no_gpu() {
        println!("batched_gemm: cannot run ({why}); nothing to do");
        return Ok(());
    }
    let devices = gpu_devices();
    if devices.is_empty() {
        println!("batched_gemm: no GPU listed; nothing to do");
        return Ok(());
    }
    for d in &devices {
        println!(
            "GPU {}: {} (sm {}.{}), {} MiB free of {}",
            d.ordinal,
            d.name,
            d.compute_capability.0,
            d.compute_capability.1,
            d.free_memory >> 20,
            d.total_memory >> 20
        );
    }
    let system = ConcurrentSystem::new()?;
    let (m, n, k) = (512usize, 384usize, 256usize);
    let bytes = (4 * (m * k + k * n + m * n)) as u64;
    let mut rng = rand::thread_rng();
    let mut inputs = Vec::new();
    let mut futures = Vec::new();
    for _ in 0..64 {
        let a: Arc<Vec<f32>> = Arc::new((0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect());
        let b: Arc<Vec<f32>> = Arc::new((0..k * n).map(|_| rng.gen_range(-1.0..1.0)).collect());
        let (ha, hb) = (a.clone(), b.clone());
        futures.push(system.submit_gpu(
            GpuOptions::new().memory(bytes),
            move |gpu| -> Result<(usize, Vec<f32>), GpuError> {
                let da = gpu.htod(&ha)?;
                let db = gpu.htod(&hb)?;
                let mut dc = gpu.alloc_zeros::<f32>(m * n)?;
                gpu.sgemm(m, n, k, 1.0, &da, &db, 0.0, &mut dc)?;
                Ok((gpu.device(), gpu.dtoh(&dc)?))
            },
        )?);
        inputs.push((a, b));
    }
    let mut per_device = std::collections::BTreeMap::new();
    let mut first = None;
    for f in futures {
        let (device, c) = f.wait()?;
        *per_device.entry(device).or_insert(0) += 1;
        first.get_or_insert(c);
    }
    let (a, b) = &inputs[0];
    let c = first.expect("64 products");
    let worst = (0..m * n)
        .map(|ij| {
            let (i, j) = (ij / n, ij % n);
            let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            (c[ij] - want).abs()
        })
        .fold(0.0f32, f32::max);
    println!("64 products of {m}x{k} by {k}x{n}; tasks per GPU: {per_device:?}; worst error of the first: {worst:e}");
    assert!(worst < 1e-2);
    Ok(())
}
