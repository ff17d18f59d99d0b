//! SAXPY on every GPU of the machine: a kernel compiled at run time with
//! NVRTC (once per device), launched by GPU tasks spread over the devices,
//! each result checked against the CPU.
//!
//! Run with `cargo run -p seedcore --features cuda --example saxpy`. Without
//! a GPU, NVRTC or cuBLAS it says so and exits 0.

use seedcore::gpu::cudarc::driver::{LaunchConfig, PushKernelArg};
use seedcore::gpu::{why_no_gpu, DeviceChoice, GpuError, GpuOptions};
use seedcore::{ConcurrentSystem, SubmitError};
use std::sync::Arc;

const SAXPY: &str = r#"
extern "C" __global__ void saxpy(float a, const float *x, float *y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { y[i] = a * x[i] + y[i]; }
}
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(why) = why_no_gpu() {
        println!("saxpy: cannot run ({why}); nothing to do");
        return Ok(());
    }
    let system = ConcurrentSystem::new()?;
    let n = 1 << 20;
    let x: Arc<Vec<f32>> = Arc::new((0..n).map(|i| (i % 97) as f32 * 0.5).collect());
    let mut futures = Vec::new();
    for t in 0..8 {
        let a = t as f32 + 1.0;
        let x = x.clone();
        let submitted = system.submit_gpu(
            GpuOptions::new().device(DeviceChoice::Spread),
            move |gpu| -> Result<(usize, f32, Vec<f32>), GpuError> {
                let f = gpu.function(SAXPY, "saxpy")?;
                let dx = gpu.htod(&x)?;
                let mut dy = gpu.htod(&vec![1.0f32; x.len()])?;
                let len = x.len() as i32;
                let mut launch = gpu.launch_builder(&f);
                launch.arg(&a).arg(&dx).arg(&mut dy).arg(&len);
                // SAFETY: the arguments match the kernel's signature and
                // both buffers hold `len` elements.
                unsafe { launch.launch(LaunchConfig::for_num_elems(len as u32)) }?;
                Ok((gpu.device(), a, gpu.dtoh(&dy)?))
            },
        );
        match submitted {
            Ok(f) => futures.push(f),
            Err(SubmitError::NoGpu(why)) => {
                println!("saxpy: no GPU to run on ({why}); nothing to do");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    for f in futures {
        let (device, a, y) = f.wait()?;
        let wrong = y
            .iter()
            .zip(x.iter())
            .filter(|(y, x)| (**y - (a * **x + 1.0)).abs() > 1e-4)
            .count();
        println!(
            "a = {a}: {} elements on GPU {device}, {wrong} wrong",
            y.len()
        );
        assert_eq!(wrong, 0);
    }
    Ok(())
}
