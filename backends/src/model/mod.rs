//! Diffusion models: the two families, VDM ([`Vdm`]) and DDPM ([`ddpm::Ddpm`]), what the trainer
//! needs of a family ([`Family`], [`Trainable`]) and what a trained one offers ([`Generative`]:
//! a denoiser for the samplers, a likelihood for evaluation).
//!
//! A run's `[model]` table names its family (`family = "vdm"`, the default, or `"ddpm"`); the
//! checkpoint stores that configuration, so every command knows which family it loads.

pub mod ddpm;
mod vdm;

pub use vdm::*;

use burn::module::{AutodiffModule, Module};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use vdm_core::rng::SplitMix64;

use crate::config::{EvalConfig, ModelConfig, TrainConfig};
use crate::data::ImageSet;
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalOptions, EvalReport, Likelihood};
use crate::ops::{FastOps, TrainBackend};
use crate::parallel::Shard;
use crate::sample::Denoiser;
use ddpm::Ddpm;

impl ModelConfig {
    /// Refuses a training batch that cannot fit in memory.
    pub fn check_training_memory<B: Backend>(
        &self,
        shape: [usize; 3],
        batch_size: usize,
        device: &B::Device,
    ) -> Result<()> {
        match self {
            Self::Vdm(c) => c.check_training_memory::<B>(shape, batch_size, device),
            Self::Ddpm(c) => c.check_training_memory::<B>(shape, batch_size, device),
        }
    }

    /// Refuses an evaluation or sampling batch that cannot fit in memory.
    pub fn check_inference_memory<B: Backend>(
        &self,
        shape: [usize; 3],
        batch_size: usize,
        device: &B::Device,
    ) -> Result<()> {
        match self {
            Self::Vdm(c) => c.check_inference_memory::<B>(shape, batch_size, device),
            Self::Ddpm(c) => c.check_inference_memory::<B>(shape, batch_size, device),
        }
    }
}

/// A model family: its network built from a run's [`ModelConfig`].
pub trait Family<B: Backend>: Module<B> {
    /// The model for images of `shape` (`[C, H, W]`), parameters not yet allocated; an error if
    /// `config` is of another family.
    fn build(config: &ModelConfig, shape: [usize; 3], device: &B::Device) -> Result<Self>;
}

/// A family the trainer can optimise.
pub trait Trainable<B: TrainBackend>: Family<B> + AutodiffModule<B> {
    /// The loss of one batch with randomness from `rng` (`[1]`, left on the device: the trainer
    /// reads it with the gradient norm in one copy), and the gradient of every parameter, under the
    /// run's `model` and `train` settings; or their `shard`'s part of them, given only the shard's
    /// `pixels` (`[shard.len, C, H, W]`, values `0..=255`): summed over the shares, the whole
    /// batch's ([`crate::parallel`]).
    fn loss_and_gradients(
        &self,
        pixels: Tensor<B, 4>,
        shard: Shard,
        rng: &mut SplitMix64,
        model: &ModelConfig,
        train: &TrainConfig,
    ) -> Result<(Tensor<B::InnerBackend, 1>, GradientsParams)>;
}

impl<B: Backend> Family<B> for Vdm<B> {
    fn build(config: &ModelConfig, shape: [usize; 3], device: &B::Device) -> Result<Self> {
        match config {
            ModelConfig::Vdm(c) => Ok(c.build(shape[0], device)),
            ModelConfig::Ddpm(_) => Err(Error::Mismatch("this run is a DDPM, not a VDM".into())),
        }
    }
}

impl<B: Backend> Family<B> for Ddpm<B> {
    fn build(config: &ModelConfig, shape: [usize; 3], device: &B::Device) -> Result<Self> {
        match config {
            ModelConfig::Ddpm(c) => c.build::<B>(shape, device),
            ModelConfig::Vdm(_) => Err(Error::Mismatch("this run is a VDM, not a DDPM".into())),
        }
    }
}

impl<B: TrainBackend> Trainable<B> for Vdm<B> {
    fn loss_and_gradients(
        &self,
        pixels: Tensor<B, 4>,
        shard: Shard,
        rng: &mut SplitMix64,
        model: &ModelConfig,
        train: &TrainConfig,
    ) -> Result<(Tensor<B::InnerBackend, 1>, GradientsParams)> {
        let [_, c, h, w] = pixels.dims();
        let noise = Noise::draw_shard(rng, shard, c * h * w);
        let time = TimeMode::from_steps(train.time_steps)?;
        let config = model.vdm("VDM training")?;
        let objective = config.schedule.shape_objective();
        Vdm::loss_and_gradients(self, pixels, &noise, time, config.weighting.into(), objective)
    }
}

impl<B: TrainBackend> Trainable<B> for Ddpm<B> {
    fn loss_and_gradients(
        &self,
        pixels: Tensor<B, 4>,
        shard: Shard,
        rng: &mut SplitMix64,
        _model: &ModelConfig,
        _train: &TrainConfig,
    ) -> Result<(Tensor<B::InnerBackend, 1>, GradientsParams)> {
        Ok(Ddpm::loss_and_gradients(self, pixels, shard, rng))
    }
}

/// What every family offers once trained: a [`Denoiser`] for the samplers, a [`Likelihood`] for
/// evaluation, and the bound the trainer reports.
pub trait Generative<B: FastOps>: Family<B> + Denoiser<B> + Likelihood<B> {
    /// The bound reported during training (`[eval]` of the run).
    fn reported_bound(eval: &EvalConfig) -> Result<Self::Bound>;

    /// The [`Generative::reported_bound`] of `images`, one draw per image, with its name.
    fn training_bound(&self, images: &ImageSet, eval: &EvalConfig, device: &B::Device) -> Result<(String, EvalReport)> {
        let bound = Self::reported_bound(eval)?;
        let options = EvalOptions { batch_size: eval.batch_size, draws: 1, seed: eval.seed };
        Ok((self.bound_name(bound, 1), evaluate(self, images, bound, &options, device, |_| {})?))
    }
}

/// VDM's bound at `eval.time_steps` (0: continuous time).
impl<B: FastOps> Generative<B> for Vdm<B> {
    fn reported_bound(eval: &EvalConfig) -> Result<TimeMode> {
        TimeMode::from_steps(eval.time_steps)
    }
}

/// DDPM's estimate of its `T`-term bound from sampled terms.
impl<B: FastOps> Generative<B> for Ddpm<B> {
    fn reported_bound(_eval: &EvalConfig) -> Result<ddpm::Bound> {
        Ok(ddpm::Bound::Sampled)
    }
}

/// Refuses images of `channels` channels for a network of `expected`.
fn check_channels(channels: usize, expected: usize) -> Result<()> {
    if channels != expected {
        return Err(Error::Mismatch(format!("the images have {channels} channels; the model takes {expected}")));
    }
    Ok(())
}
