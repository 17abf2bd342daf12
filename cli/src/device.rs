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

/// The devices of data-parallel training, `--devices`: a comma-separated list of `KIND` (the
/// backend's default device; repeated, several replicas on it), `KIND:I` (device `I`) or
/// `KIND:A..B` (devices `A` to `B − 1`), all of one kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList {
    /// The backend.
    pub kind: Device,
    /// Each replica's device index; `None` for the default device.
    pub indices: Vec<Option<u16>>,
}

impl std::str::FromStr for DeviceList {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, String> {
        let mut kind = None;
        let mut indices = Vec::new();
        for entry in list.split(',').map(str::trim) {
            let (name, index) = entry.split_once(':').map_or((entry, None), |(n, i)| (n, Some(i)));
            let this = Device::from_str(name, true)
                .map_err(|_| format!("`{entry}`: the kind must be cpu, cuda or wgpu (as in cpu,cpu or cuda:0..8)"))?;
            if kind.is_some_and(|k| k != this) {
                return Err(format!("`{list}` mixes device kinds; the replicas of one process share one backend"));
            }
            kind = Some(this);
            let parse = |s: &str| s.parse::<u16>().map_err(|_| format!("`{entry}`: `{s}` is not a device index"));
            match index {
                None => indices.push(None),
                Some(_) if this == Device::Cpu => {
                    return Err(format!("`{entry}`: the CPU is one device; repeat `cpu` for several replicas on it"))
                }
                Some(range) => match range.split_once("..") {
                    None => indices.push(Some(parse(range)?)),
                    Some((a, b)) => {
                        let (a, b) = (parse(a)?, parse(b)?);
                        if a >= b {
                            return Err(format!("`{entry}`: the range {a}..{b} is empty (B is excluded)"));
                        }
                        indices.extend((a..b).map(Some));
                    }
                },
            }
        }
        let kind = kind.ok_or("--devices needs at least one device")?;
        Ok(Self { kind, indices })
    }
}

/// Device `index` of backend `B` (`None`: its default device): CUDA's GPU `index`, wgpu's
/// discrete GPU `index`.
pub fn device_at<B: TrainBackend>(index: Option<u16>) -> B::Device {
    use burn::tensor::backend::{Device as _, DeviceId};
    index.map_or_else(Default::default, |i| B::Device::from_id(DeviceId::new(0, i)))
}
