//! # vdm-backends
//!
//! [burn](https://burn.dev) implementations for [`vdm_core`]: the [`BatchTensor`](vdm_core::BatchTensor)
//! trait on burn tensors ([`tensor::BurnBatch`]), VDM's score network ([`nn`]), learnable
//! schedules ([`schedule`]), the model with its VLB, evaluation and sampling ([`model`]),
//! training ([`train`]) with checkpoints ([`checkpoint`]), datasets ([`data`]), run configuration
//! ([`config`]) and lossless compression by bits-back coding ([`codec`]).
//!
//! Backends are chosen by cargo feature: `ndarray` (default; the CPU reference) and `cuda`.
//! The same generic code runs on both; see [`Cpu`] and `Cuda`.

pub mod checkpoint;
pub mod codec;
pub mod config;
pub mod data;
pub mod eval;
pub mod files;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod nn;
pub mod ops;
pub mod sample;
pub mod schedule;
pub mod tensor;
pub mod train;

/// A backend with automatic differentiation, for training.
pub type Autodiff<B> = burn::backend::Autodiff<B>;

/// The CPU reference backend (burn-ndarray, f32).
#[cfg(feature = "ndarray")]
pub type Cpu = burn::backend::NdArray<f32>;

/// The CUDA backend (burn-cuda, f32).
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda<f32, i32>;
