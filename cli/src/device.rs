//! Choosing the backend at run time: `--device cpu|cuda|wgpu`.

use clap::ValueEnum;
use vdm_backends::ops::TrainBackend;

/// Where to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// burn-ndarray on the CPU (the reference).
    Cpu,
    /// burn-cuda on the first NVIDIA GPU.
    Cuda,
    /// burn-wgpu on the first Vulkan device (Mesa's lavapipe runs it on the CPU).
    Wgpu,
}

impl Device {
    /// The name `--device` takes.
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::Wgpu => "wgpu",
        }
    }
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
        Device::Wgpu => run_wgpu(job),
    }
}

#[cfg(feature = "ndarray")]
fn run_cpu<J: BackendJob>(job: J) -> Result<J::Output, String> {
    job.run::<vdm_backends::Autodiff<vdm_backends::Cpu>>(Default::default())
}

#[cfg(not(feature = "ndarray"))]
fn run_cpu<J: BackendJob>(_job: J) -> Result<J::Output, String> {
    Err(missing("the CPU backend", "ndarray", Device::Cpu))
}

/// Runs `job` on backend `B`'s default device, turning a panic of the backend (burn-cuda and
/// burn-wgpu panic, from their device threads, when no driver or adapter can be loaded) into the
/// error `failed`.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn run_gpu<B: TrainBackend, J: BackendJob>(job: J, failed: &str) -> Result<J::Output, String> {
    let run = std::panic::AssertUnwindSafe(|| job.run::<B>(Default::default()));
    std::panic::catch_unwind(run).unwrap_or_else(|_| Err(failed.into()))
}

#[cfg(feature = "cuda")]
fn run_cuda<J: BackendJob>(job: J) -> Result<J::Output, String> {
    run_gpu::<vdm_backends::Autodiff<vdm_backends::Cuda>, J>(
        job,
        "the CUDA backend failed (see the message above); is an NVIDIA driver installed and a GPU visible?",
    )
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<J: BackendJob>(_job: J) -> Result<J::Output, String> {
    Err(missing("CUDA support", "cuda", Device::Cuda))
}

#[cfg(feature = "wgpu")]
fn run_wgpu<J: BackendJob>(job: J) -> Result<J::Output, String> {
    run_gpu::<vdm_backends::Autodiff<vdm_backends::Wgpu>, J>(
        job,
        "the wgpu backend failed (see the message above); is a Vulkan driver installed? \
         (without a GPU, Debian's mesa-vulkan-drivers runs Vulkan on the CPU)",
    )
}

#[cfg(not(feature = "wgpu"))]
fn run_wgpu<J: BackendJob>(_job: J) -> Result<J::Output, String> {
    Err(missing("wgpu (Vulkan) support", "wgpu", Device::Wgpu))
}

/// The error for a backend this binary was built without.
#[allow(dead_code)] // unused in a binary built with every backend
fn missing(what: &str, feature: &str, device: Device) -> String {
    format!(
        "this vdm binary was built without {what}; rebuild it with \
         `cargo build --release --features {feature} -p vdm-cli` to use --device {}",
        device.name()
    )
}
