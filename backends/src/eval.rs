//! Evaluation: test-set bits per dimension with its standard error, by term of the bound, in one
//! loop for both families. A family says how to estimate the bound of a batch ([`Likelihood`]);
//! [`evaluate`] owns the checks, the batches, the progress and the statistics.

use std::fmt::Display;

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use vdm_core::rng::SplitMix64;

use crate::data::ImageSet;
use crate::error::{Error, Result};
use crate::tensor::pixels_tensor;

/// How to evaluate, for either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalOptions {
    /// Images per network evaluation.
    pub batch_size: usize,
    /// Independent estimates of each image's bound (their spread is the Monte-Carlo noise).
    pub draws: usize,
    /// Seed of all of the evaluation's randomness.
    pub seed: u64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { batch_size: 256, draws: 1, seed: 1234 }
    }
}

/// One estimate of one image's negative bound, in bits per dimension.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageBound {
    /// The whole bound.
    pub total: f64,
    /// Its terms: prior, reconstruction, diffusion.
    pub terms: [f64; 3],
}

/// What [`evaluate`] needs of a family: estimates of the bound of a batch of images.
pub trait Likelihood<B: Backend> {
    /// The bounds this family can evaluate (VDM: `T` steps or continuous time; DDPM: every term or
    /// sampled terms).
    type Bound: Copy + Display;

    /// The bound's name as reports print it.
    fn bound_name(&self, bound: Self::Bound, draws: usize) -> String;

    /// Refuses images of `shape` (`[C, H, W]`) that the network cannot take, saying why.
    fn check_image_shape(&self, shape: [usize; 3]) -> Result<()>;

    /// Units of work per image (what the progress callback counts) for `draws` draws of `bound`.
    fn work_per_image(&self, bound: Self::Bound, draws: usize) -> usize;

    /// `draws` estimates of the bound of each image of `pixels` (`[N, C, H, W]`, values
    /// `0..=255`), indexed `[draw][image]`. `indices` are the images' positions in the evaluated
    /// set, for randomness drawn per image from `seed`; randomness drawn per batch comes from
    /// `rng`, shared by all batches in order. `on_progress` receives units of work as they finish.
    #[allow(clippy::too_many_arguments)]
    fn estimate(
        &self,
        pixels: burn::tensor::Tensor<B, 4>,
        indices: &[usize],
        bound: Self::Bound,
        draws: usize,
        seed: u64,
        rng: &mut SplitMix64,
        on_progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Vec<ImageBound>>>;
}

/// The bound of every image of `images`, `options.draws` times each, `options.batch_size` images
/// at a time; `on_progress` receives units of work ([`Likelihood::work_per_image`]) as they
/// finish. Every estimate is unbiased; the standard error covers the data and the noise.
pub fn evaluate<B: Backend, M: Likelihood<B>>(
    model: &M,
    images: &ImageSet,
    bound: M::Bound,
    options: &EvalOptions,
    device: &B::Device,
    mut on_progress: impl FnMut(usize),
) -> Result<EvalReport> {
    if images.is_empty() {
        return Err(Error::Mismatch("there are no images to evaluate".into()));
    }
    if options.batch_size == 0 || options.draws == 0 {
        return Err(Error::setting(
            "batch_size",
            "the evaluation batch size and the number of draws must be at least 1",
        ));
    }
    model.check_image_shape(images.shape())?;
    let mut rng = SplitMix64::new(options.seed);
    let (mut per_image, mut term_sums) = (Vec::with_capacity(images.len()), [0.0f64; 3]);
    let indices: Vec<usize> = (0..images.len()).collect();
    for chunk in indices.chunks(options.batch_size) {
        let pixels = pixels_tensor::<B>(&images.select(chunk), device);
        let draws = model.estimate(pixels, chunk, bound, options.draws, options.seed, &mut rng, &mut on_progress)?;
        for i in 0..chunk.len() {
            per_image.push(draws.iter().map(|draw| draw[i].total).collect::<Vec<f64>>());
            for draw in &draws {
                term_sums.iter_mut().zip(draw[i].terms).for_each(|(sum, term)| *sum += term);
            }
        }
    }
    Ok(EvalReport::from_draws(&per_image, term_sums))
}

/// Mean and standard error of a sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The sample mean.
    pub mean: f64,
    /// Its standard error `sd/√n`.
    pub se: f64,
}

impl Estimate {
    /// The mean and standard error of `values`.
    pub fn of(values: &[f64]) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var =
            if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        Self { mean, se: (var / n).sqrt() }
    }
}

/// Test-set bits per dimension, with its standard error, broken into the VLB's terms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Total bpd (mean ± standard error over images; includes the Monte-Carlo noise).
    pub bpd: Estimate,
    /// Prior term, bpd.
    pub prior: f64,
    /// Reconstruction term, bpd.
    pub reconstruction: f64,
    /// Diffusion term, bpd.
    pub diffusion: f64,
    /// Each image's VLB estimate, bpd (the mean of its draws).
    pub per_image: Vec<f64>,
    /// With several noise draws per image: the standard deviation of one draw's estimate around
    /// its image's mean, `√(mean over images of the per-image sample variance)`, in bpd. This is
    /// the Monte-Carlo noise of the VLB estimator, the part the schedule's shape controls.
    pub noise_sd: Option<f64>,
}

impl EvalReport {
    /// The report of images evaluated `draws` times each: `per_image[i]` holds image `i`'s
    /// `draws` totals (bpd), `term_sums` the prior, reconstruction and diffusion terms summed over
    /// all images and draws.
    pub fn from_draws(per_image: &[Vec<f64>], term_sums: [f64; 3]) -> Self {
        let draws = per_image.first().map_or(1, Vec::len);
        let estimates: Vec<Estimate> = per_image.iter().map(|e| Estimate::of(e)).collect();
        let means: Vec<f64> = estimates.iter().map(|e| e.mean).collect();
        let n = (per_image.len() * draws) as f64;
        let mean_variance = estimates.iter().map(|e| e.se * e.se * draws as f64).sum::<f64>() / estimates.len() as f64;
        Self {
            bpd: Estimate::of(&means),
            prior: term_sums[0] / n,
            reconstruction: term_sums[1] / n,
            diffusion: term_sums[2] / n,
            per_image: means,
            noise_sd: (draws > 1).then(|| mean_variance.sqrt()),
        }
    }
}
