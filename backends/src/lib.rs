#![warn(missing_docs)]
//! # vdm-backends
//!
//! [burn](https://burn.dev) implementations for [`vdm_core`]: the [`BatchTensor`](vdm_core::BatchTensor)
//! trait on burn tensors ([`tensor::BurnBatch`]), the networks ([`nn`]) and their fast kernels
//! ([`ops`]), learnable schedules ([`schedule`]), the two model families ([`model`]), one
//! evaluation loop ([`eval`]) and one sampling loop with its samplers ([`sample`](mod@sample)), training
//! ([`train`]) with checkpoints ([`checkpoint`]), datasets ([`data`]), run configuration
//! ([`config`]), sample-quality metrics ([`metrics`]) and lossless compression by bits-back coding
//! ([`codec`]). What most programs need is re-exported at the root.
//!
//! Backends are chosen by cargo feature: `ndarray` (default; the CPU reference), `cuda` and `wgpu`
//! (Vulkan). The same generic code runs on all; see [`Cpu`], `Cuda` and `Wgpu`.

pub mod checkpoint;
pub mod codec;
pub mod config;
pub mod data;
pub mod diffusers;
pub mod error;
pub mod eval;
pub mod files;
pub mod memory;
pub mod metrics;
pub mod model;
mod named_tensors;
pub mod nn;
pub mod ops;
pub mod parallel;
pub mod pytorch_layout;
pub mod sample;
pub mod schedule;
pub mod tensor;
pub mod train;
pub mod transfer;

pub use checkpoint::Checkpoint;
pub use config::{DataConfig, DdpmConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig, VdmConfig};
pub use data::ImageSet;
pub use error::{Error, Result};
pub use eval::{evaluate, EvalOptions, EvalReport, Likelihood};
pub use model::ddpm::Ddpm;
pub use model::{Generative, TimeMode, Vdm};
pub use sample::{sample, Denoiser, SampleOptions, Sampler, SamplerKind};
pub use train::{load_ema, Trainer};

/// A backend with automatic differentiation, for training.
pub type Autodiff<B> = burn::backend::Autodiff<B>;

/// The CPU reference backend (burn-ndarray, f32).
#[cfg(feature = "ndarray")]
pub type Cpu = burn::backend::NdArray<f32>;

/// The CUDA backend (burn-cuda, f32).
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda<f32, i32>;

/// The Vulkan backend (burn-wgpu with CubeCL's SPIR-V compiler, f32): the CUDA backend's kernels
/// on any Vulkan device, Mesa's CPU driver lavapipe included.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Vulkan<f32, i32>;
