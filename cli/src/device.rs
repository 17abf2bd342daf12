//! Choosing the backend at run time: `--device cpu|cuda`.

use clap::ValueEnum;
use vdm_backends::ops::TrainBackend;

/// Where to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// burn-ndarray on the CPU (the reference).
    Cpu,
    /// burn-cuda on the first NVIDIA GPU.
    Cuda,
}

/// Work generic over the training backend; `run` is instantiated once per compiled backend.
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Runs on backend `B` (autodiff over `B::InnerBackend`) at `device`.
    fn run<B: TrainBackend>(self, device: B::Device) -> Result<Self::Output, String>;
}

/// Runs `job` on `device`, or explains why this binary cannot.
pub fn dispatch<J: BackendJob>(device: Device, job: J) -> Result<J::Output, String> {
    match device {
        Device::Cpu => run_cpu(job),
        Device::Cuda => run_cuda(job),
    }
}

#[cfg(feature = "ndarray")]
fn run_cpu<J: BackendJob>(job: J) -> Result<J::Output, String> {
    job.run::<vdm_backends::Autodiff<vdm_backends::Cpu>>(Default::default())
}

#[cfg(not(feature = "ndarray"))]
fn run_cpu<J: BackendJob>(_job: J) -> Result<J::Output, String> {
    Err("this vdm binary was built without the CPU backend; rebuild it with `cargo build --release --features ndarray -p vdm-cli`".into())
}

/// What a panic inside burn-cuda (it panics, from its device thread, when no driver can be
/// loaded) is reported as.
#[cfg(feature = "cuda")]
pub const CUDA_FAILED: &str =
    "the CUDA backend failed (see the message above); is an NVIDIA driver installed and a GPU visible?";

/// Runs `job` on CUDA, turning a panic of the backend into [`CUDA_FAILED`].
#[cfg(feature = "cuda")]
fn run_cuda<J: BackendJob>(job: J) -> Result<J::Output, String> {
    let run =
        std::panic::AssertUnwindSafe(|| job.run::<vdm_backends::Autodiff<vdm_backends::Cuda>>(Default::default()));
    std::panic::catch_unwind(run).unwrap_or_else(|_| Err(CUDA_FAILED.into()))
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<J: BackendJob>(_job: J) -> Result<J::Output, String> {
    Err("this vdm binary was built without CUDA support; rebuild it with \
         `cargo build --release --features cuda -p vdm-cli` to use --device cuda"
        .into())
}
