//! GPU tasks on the system (feature `cuda`): the GPU executor joins the
//! table on first use.

use super::ConcurrentSystem;
use crate::error::{BoxError, SubmitError};
use crate::exec::gpu::{GpuConfig, GpuContext, GpuExecutor, GpuOptions};
use crate::kind::ExecutorKind;
use std::sync::Arc;

impl ConcurrentSystem {
    /// Starts the GPU executor with `config` (feature `cuda`); without
    /// this, the first [`submit_gpu`](Self::submit_gpu) starts it with the
    /// `[gpu]` section of the system's configuration. Fails with
    /// [`SubmitError::NoGpu`] where there is no usable GPU, and changes
    /// nothing if it already started.
    pub fn start_gpu(&self, config: GpuConfig) -> Result<(), SubmitError> {
        self.gpu_executor(&config).map(|_| ())
    }

    fn gpu_executor(&self, config: &GpuConfig) -> Result<(u8, Arc<GpuExecutor>), SubmitError> {
        let shared = self.shared();
        shared.sched.check_open()?;
        shared.executor_or_start(ExecutorKind::Gpu, || {
            GpuExecutor::start(&shared.config.name, config, shared.sched.timer.clone())
        })
    }

    /// Runs `f` on a GPU (feature `cuda`) and returns its future at once.
    ///
    /// The task is placed by `opts` (device choice, memory request) and
    /// runs on a worker of that device with a [`GpuContext`]: a stream of
    /// its own and helpers to allocate, copy, compile and launch kernels
    /// and multiply matrices. It has every task option (priority, timeout,
    /// retries, locks, callbacks); `Err(e)` resolves
    /// [`TaskError::Failed`](crate::TaskError::Failed), or
    /// [`TaskError::GpuMemory`](crate::TaskError::GpuMemory) where `e` is a
    /// [`GpuError::OutOfMemory`](crate::gpu::GpuError::OutOfMemory), and is
    /// retried by the policy.
    ///
    /// Fails at once with [`SubmitError::NoGpu`] where there is no usable
    /// GPU, and with [`SubmitError::InvalidOptions`] for a device ordinal
    /// that is not there.
    ///
    /// ```
    /// use seedcore::gpu::GpuOptions;
    /// use seedcore::{ConcurrentSystem, SubmitError};
    ///
    /// let system = ConcurrentSystem::new()?;
    /// let sum = system.submit_gpu(GpuOptions::new(), |gpu| {
    ///     let x = gpu.htod(&[1.0f32, 2.0, 3.0])?;
    ///     Ok::<_, seedcore::gpu::GpuError>(gpu.dtoh(&x)?.iter().sum::<f32>())
    /// });
    /// match sum {
    ///     Ok(f) => assert_eq!(f.wait()?, 6.0),
    ///     Err(SubmitError::NoGpu(why)) => println!("no GPU: {why}"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit_gpu<T, E, F>(
        &self,
        opts: GpuOptions,
        f: F,
    ) -> Result<crate::TaskFuture<T>, SubmitError>
    where
        T: Send + 'static,
        E: Into<BoxError>,
        F: Fn(&GpuContext) -> Result<T, E> + Send + Sync + 'static,
    {
        let config = GpuConfig::from_settings(&self.shared().config.gpu);
        let (slot, exec) = self.gpu_executor(&config)?;
        let body = exec.body(&opts, f)?;
        self.submit_body(opts.task, slot, body)
    }
}
