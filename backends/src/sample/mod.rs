//! Sampling: the reverse chain `z_1 → z_0` of either family, by any sampler.
//!
//! Three parts, kept apart as diffusers keeps schedulers apart from networks and pipelines:
//! - a [`Denoiser`] is what a model offers: its time grid, and `ε̂`, `x̂` at a latent;
//! - a [`Sampler`] turns the prediction at `z_t` into `z_s` (its `step` may keep state between
//!   steps, as multistep solvers need, and evaluate the denoiser again, as Heun's method does);
//! - [`sample`] is the one loop: batches, per-image noise streams, progress and decoding.
//!
//! Adding a sampler means one file here and one variant of [`SamplerKind`].

mod ancestral;
mod ddim;
mod dpm_solver;
mod heun;
mod spacing;

pub use ancestral::Ancestral;
pub use ddim::Ddim;
pub use dpm_solver::DpmSolverPp;
pub use heun::Heun;
pub use spacing::Spacing;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use vdm_core::process::{DdpmVariance, Step};
use vdm_core::rng::{derive_seed, SplitMix64};

use crate::data::ImageSet;
use crate::error::{Error, Result};
use crate::tensor::normals;

/// The random stream of an image's sampling noise: image `i` draws from `(seed, STREAM_SAMPLE, i)`.
pub(crate) const STREAM_SAMPLE: u64 = 3;

/// A point of a sampling grid: the log-SNR `γ` of its latent, and the time input the network
/// takes there (VDM's network takes `γ` itself, DDPM's the step index `t − 1`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GridPoint {
    /// `γ_t`; `−∞` at the data end of a chain ([`GridPoint::DATA`]).
    pub gamma: f64,
    /// The network's time input at this point.
    pub net_input: f64,
}

impl GridPoint {
    /// The data end of a chain, `γ = −∞`, where `z = x` (a DDPM's chain ends there, with `x̂`).
    pub const DATA: Self = Self { gamma: f64::NEG_INFINITY, net_input: f64::NAN };

    /// Whether this is the data end.
    pub fn is_data(&self) -> bool {
        self.gamma == f64::NEG_INFINITY
    }
}

/// A model's predictions at a latent `z_t`, `[N, C, H, W]` each.
#[derive(Clone, Debug)]
pub struct Denoised<B: Backend> {
    /// The noise prediction `ε̂`.
    pub eps: Tensor<B, 4>,
    /// The data prediction `x̂ = (z_t − σ_t ε̂)/α_t` (clipped where the model clips, with `ε̂`
    /// made consistent with it).
    pub x: Tensor<B, 4>,
    /// Where the model's reverse mean `μ_θ` is not the posterior mean at `x̂`, the noise
    /// prediction it implies: a μ-predicting DDPM's mean is its output, which clipping does not
    /// touch (DDPM's `p_mean_variance`). The ancestral step draws around it.
    pub reverse_mean_eps: Option<Tensor<B, 4>>,
}

/// What a model offers its samplers (either family implements it).
pub trait Denoiser<B: Backend> {
    /// Image channels.
    fn channels(&self) -> usize;

    /// The grid of a chain of `steps` steps spaced by `spacing`, from the data end `grid[0]` to
    /// the start `grid[steps]`, where `z ~ N(0, I)`; `γ` increases along it. An error for
    /// `steps = 0` or more than the model supports.
    fn grid(&self, steps: usize, spacing: Spacing) -> Result<Vec<GridPoint>>;

    /// `ε̂` and `x̂` at `z` (`[N, C, H, W]`), a latent at `at`.
    fn predict(&self, z: Tensor<B, 4>, at: GridPoint) -> Denoised<B>;

    /// The pixels (`0..=255`, `[N, C, H, W]` order) of the chain's last latent, at `grid[0]`.
    fn decode(&self, z: Tensor<B, 4>) -> Vec<u8>;

    /// The variance of the model's ancestral step on a chain of `steps` steps: VDM's is the
    /// posterior's (`β̃`, VDM Appendix A.4); a DDPM's is its configured one and needs all `T` steps.
    fn ancestral_variance(&self, steps: usize) -> Result<DdpmVariance>;
}

/// What a step may call on besides the prediction at `z_t`.
pub struct StepContext<'a, B: Backend> {
    /// The denoiser's prediction at another latent and grid point (a second-order step's
    /// correction); every call is one network evaluation.
    pub predict: &'a mut dyn FnMut(Tensor<B, 4>, GridPoint) -> Denoised<B>,
    /// Fresh `N(0, I)` noise, drawn only by a stochastic step.
    pub noise: &'a mut dyn FnMut() -> Tensor<B, 4>,
}

/// One reverse step `z_t → z_s`; `step` may keep state between the steps of a chain (a fresh
/// sampler starts each chain).
pub trait Sampler<B: Backend> {
    /// `z_s` from `z_t` and the prediction at `t`; `s` precedes `t` on the grid. It is never the
    /// data end (`γ = −∞`): [`chain`] takes `x̂` there, where every sampler's step lands.
    fn step(
        &mut self,
        z: Tensor<B, 4>,
        prediction: Denoised<B>,
        t: GridPoint,
        s: GridPoint,
        context: &mut StepContext<B>,
    ) -> Tensor<B, 4>;
}

/// `a z_t + b ε̂ (+ c ε)`: the linear form of every first-order step ([`Step`]); `noise` is drawn
/// only where `stochastic`.
fn linear_step<B: Backend>(
    step: Step<f64>,
    z: Tensor<B, 4>,
    eps: Tensor<B, 4>,
    stochastic: bool,
    noise: &mut dyn FnMut() -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    let deterministic = z.mul_scalar(step.z) + eps.mul_scalar(step.eps_hat);
    if stochastic {
        deterministic + noise().mul_scalar(step.noise)
    } else {
        deterministic
    }
}

/// A sampler as a user names it (CLI, JSON reports).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum SamplerKind {
    /// The family's ancestral step ([`Ancestral`]).
    Ancestral,
    /// DDIM with stochasticity `eta ∈ [0, 1]` ([`Ddim`]).
    Ddim {
        /// `η`: `0` deterministic, `1` the posterior (`β̃`) step.
        eta: f64,
    },
    /// DPM-Solver++ of order 1 to 3, multistep ([`DpmSolverPp`]): order 2 is "2M", 3 is "3M".
    DpmSolverPp {
        /// The order.
        order: usize,
    },
    /// Heun's second-order method ([`Heun`]): two network evaluations per step.
    Heun,
}

impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ancestral => f.write_str("ancestral"),
            Self::Ddim { eta } => write!(f, "ddim η={eta}"),
            Self::DpmSolverPp { order: 1 } => f.write_str("dpm-solver++ 1"),
            Self::DpmSolverPp { order } => write!(f, "dpm-solver++ {order}M"),
            Self::Heun => f.write_str("heun"),
        }
    }
}

impl SamplerKind {
    /// A fresh sampler for a chain of `steps` steps of `denoiser`, or why it cannot run there.
    pub fn build<B: Backend>(self, denoiser: &impl Denoiser<B>, steps: usize) -> Result<Box<dyn Sampler<B>>> {
        Ok(match self {
            Self::Ancestral => Box::new(Ancestral::new(denoiser.ancestral_variance(steps)?)),
            Self::Ddim { eta } => Box::new(Ddim::new(eta)?),
            Self::DpmSolverPp { order } => Box::new(DpmSolverPp::new(order)?),
            Self::Heun => Box::new(Heun),
        })
    }

    /// Network evaluations per image of a chain on `grid`: one per step, and Heun's correction
    /// at every step but one that ends at the data.
    pub fn evaluations(self, grid: &[GridPoint]) -> usize {
        let steps = grid.len().saturating_sub(1);
        match self {
            Self::Heun => 2 * steps - usize::from(grid.first().is_some_and(GridPoint::is_data)),
            _ => steps,
        }
    }
}

/// What to draw: how many images, with which sampler and steps, from which seed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleOptions {
    /// The number of images.
    pub n: usize,
    /// Steps of the chain (network evaluations per image; [`SamplerKind::evaluations`]).
    pub steps: usize,
    /// The sampler.
    pub sampler: SamplerKind,
    /// How the chain's points are spaced.
    pub spacing: Spacing,
    /// Image `i`'s noise comes from the stream `(seed, i)` alone.
    pub seed: u64,
    /// Images per network evaluation (the result does not depend on it).
    pub batch_size: usize,
}

impl Default for SampleOptions {
    /// 64 images, 1000 ancestral steps spaced in time, seed 0, 64 at a time.
    fn default() -> Self {
        Self { n: 64, steps: 1000, sampler: SamplerKind::Ancestral, spacing: Spacing::Time, seed: 0, batch_size: 64 }
    }
}

/// Draws `options.n` images of `[height, width]` from `denoiser`: for each batch, `z ~ N(0, I)`
/// at the grid's start, the [`chain`] down to its data end, and the denoiser's decoding.
/// `on_step` follows every network evaluation.
pub fn sample<B: Backend, D: Denoiser<B>>(
    denoiser: &D,
    [height, width]: [usize; 2],
    options: &SampleOptions,
    device: &B::Device,
    on_step: &mut dyn FnMut(),
) -> Result<ImageSet> {
    let SampleOptions { n, steps, sampler, spacing, seed, batch_size } = *options;
    if batch_size == 0 {
        return Err(Error::setting("batch_size", "the sampling batch size must be at least 1"));
    }
    let grid = denoiser.grid(steps, spacing)?;
    sampler.build(denoiser, steps)?;
    let channels = denoiser.channels();
    let mut pixels = Vec::with_capacity(n * channels * height * width);
    for first in (0..n).step_by(batch_size) {
        let count = batch_size.min(n - first);
        let shape = [count, channels, height, width];
        let mut streams: Vec<SplitMix64> =
            (first..first + count).map(|i| SplitMix64::new(derive_seed(seed, STREAM_SAMPLE, i as u64))).collect();
        let start = normals::<B>(&mut streams, shape, device);
        let z = chain(
            denoiser,
            sampler.build(denoiser, steps)?.as_mut(),
            &grid,
            start,
            &mut || normals::<B>(&mut streams, shape, device),
            on_step,
        );
        pixels.extend(denoiser.decode(z));
    }
    Ok(ImageSet::new(pixels, [channels, height, width]))
}

/// The reverse chain of one batch: `z` at the last point of `grid`, stepped down to `grid[0]` by
/// `sampler`, or to `x̂` where `grid[0]` is the data end (a DDPM's); `on_step` follows every
/// network evaluation ([`SamplerKind::evaluations`]).
pub fn chain<B: Backend>(
    denoiser: &impl Denoiser<B>,
    sampler: &mut dyn Sampler<B>,
    grid: &[GridPoint],
    mut z: Tensor<B, 4>,
    noise: &mut dyn FnMut() -> Tensor<B, 4>,
    on_step: &mut dyn FnMut(),
) -> Tensor<B, 4> {
    let mut predict = |z: Tensor<B, 4>, at: GridPoint| {
        let prediction = denoiser.predict(z, at);
        on_step();
        prediction
    };
    for i in (1..grid.len()).rev() {
        let prediction = predict(z.clone(), grid[i]);
        if grid[i - 1].is_data() {
            return prediction.x;
        }
        let mut context = StepContext { predict: &mut predict, noise: &mut *noise };
        z = sampler.step(z, prediction, grid[i], grid[i - 1], &mut context);
    }
    z
}
