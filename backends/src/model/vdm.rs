//! The variational diffusion model: score network + noise schedule, its VLB, evaluation and
//! ancestral sampling, all through [`vdm_core`]'s generic math on [`BurnBatch`] tensors.
//!
//! All randomness (times, noise, data order) is drawn on the host from [`SplitMix64`] and
//! uploaded, so a seed gives the same numbers on every backend: this is what makes CPU and GPU
//! results comparable.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use vdm_core::rng::{derive_seed, SplitMix64};
use vdm_core::schedule::NoiseSchedule;
use vdm_core::time::{antithetic_times, discretize};
use vdm_core::vlb::{self, VlbTerms, PIXEL_VALUES};
use vdm_core::{process, BatchTensor};

use crate::data::ImageSet;
use crate::memory;
use crate::nn::score_unet::{ScoreNet, ScoreNetConfig};
use crate::ops::{self, FastOps};
use crate::schedule::{LearnedSchedule, ScheduleConfig};
use crate::tensor::BurnBatch;

/// The largest `T` of a discrete-time bound or sampler. Times `i/T` and the differences
/// `γ(i/T) − γ((i−1)/T)` are computed in `f64` on the host; beyond `10⁹` steps their rounding
/// would start to show in the bound, which by then equals the continuous one (`T = 0`) anyway.
pub const MAX_TIME_STEPS: usize = 1_000_000_000;

/// Per-example values of shape `[B, 1, 1, 1]` (or images `[B, C, H, W]`).
pub type Batch4<B> = BurnBatch<B, 4>;

/// The architecture of a [`Vdm`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// The noise-prediction network.
    pub score: ScoreNetConfig,
    /// The noise schedule.
    pub schedule: ScheduleConfig,
}

impl ModelConfig {
    /// Checks every part.
    pub fn validate(&self) -> Result<(), String> {
        self.score.validate()?;
        self.schedule.validate()
    }

    /// A model for images of `channels` channels with its parameters not yet allocated (burn
    /// initialises them lazily, on first use): cheap, for counting parameters.
    pub fn build<B: Backend>(&self, channels: usize, device: &B::Device) -> Vdm<B> {
        Vdm { score: self.score.init(channels, device), schedule: self.schedule.init(device) }
    }

    /// A freshly initialised model for images of `channels` channels.
    ///
    /// Its parameters are materialised here, in a fixed order, so that copies (the EMA) start
    /// from the same weights as the model.
    pub fn init<B: Backend>(&self, channels: usize, device: &B::Device) -> Vdm<B> {
        struct Materialise;
        impl<B: Backend> ModuleVisitor<B> for Materialise {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let _ = param.val();
            }
        }
        let model = self.build(channels, device);
        model.visit(&mut Materialise);
        model
    }

    /// Refuses a training batch that cannot fit in memory: the weights, their gradients, the
    /// optimiser's moments and the EMA (six copies), and the activations kept for the backward pass.
    pub fn check_training_memory<B: Backend>(&self, shape: [usize; 3], batch_size: usize, device: &B::Device) -> Result<(), String> {
        let params = self.build::<B>(shape[0], device).num_params() as u128;
        let values = 6 * params + batch_size as u128 * self.score.activations_per_image(shape);
        memory::check(
            &format!("training {params} parameters on batches of {batch_size} images of {}x{}x{}", shape[0], shape[1], shape[2]),
            memory::f32s(values),
            "lower train.batch_size or the model's n_embd / n_layer",
        )
    }

    /// Refuses an evaluation or sampling batch that cannot fit in memory (no backward pass: about a
    /// quarter of a training step's activations, plus the weights).
    pub fn check_inference_memory<B: Backend>(&self, shape: [usize; 3], batch_size: usize, device: &B::Device) -> Result<(), String> {
        let params = self.build::<B>(shape[0], device).num_params() as u128;
        let values = params + batch_size as u128 * self.score.activations_per_image(shape) / 4;
        memory::check(&format!("a batch of {batch_size} images through {params} parameters"), memory::f32s(values), "lower the batch size")
    }
}

/// Continuous time (`T = ∞`) or `T` discrete steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeMode {
    /// The continuous-time loss `L_∞` (VDM eq. 17).
    Continuous,
    /// The `T`-step loss `L_T` (VDM eq. 13).
    Discrete(usize),
}

impl TimeMode {
    /// `0` means continuous, `T > 0` means `T` steps (at most [`MAX_TIME_STEPS`]).
    pub fn from_steps(steps: usize) -> Result<Self, String> {
        match steps {
            0 => Ok(Self::Continuous),
            1..=MAX_TIME_STEPS => Ok(Self::Discrete(steps)),
            _ => Err(format!(
                "T = {steps} steps is beyond the supported {MAX_TIME_STEPS}; at that many steps the bound equals the continuous-time one (T = 0)"
            )),
        }
    }
}

impl std::fmt::Display for TimeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Continuous => f.write_str("T=inf (continuous)"),
            Self::Discrete(t) => write!(f, "T={t}"),
        }
    }
}

/// The randomness of one VLB estimate of a batch: noise for `z_t` and `z_0`, and the offset of
/// the antithetic times.
#[derive(Clone, Debug)]
pub struct Noise {
    eps: Vec<f32>,
    eps_0: Vec<f32>,
    u0: f64,
}

impl Noise {
    /// Draws the noise for `n` images of `d` values.
    pub fn draw(rng: &mut SplitMix64, n: usize, d: usize) -> Self {
        let mut normals = |count: usize| (0..count).map(|_| rng.normal::<f32>()).collect::<Vec<f32>>();
        let eps = normals(n * d);
        let eps_0 = normals(n * d);
        Self { eps, eps_0, u0: rng.uniform() }
    }
}

/// `[N, C, H, W]` pixel values as floats on `device`.
pub fn pixels_tensor<B: Backend>(images: &ImageSet, device: &B::Device) -> Tensor<B, 4> {
    let data: Vec<f32> = images.pixels.iter().map(|&p| f32::from(p)).collect();
    tensor4(data, [images.len(), images.channels, images.height, images.width], device)
}

fn tensor4<B: Backend>(values: Vec<f32>, shape: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

fn per_example<B: Backend>(values: Tensor<B, 1>) -> Batch4<B> {
    let n = values.dims()[0];
    BurnBatch(values.reshape([n, 1, 1, 1]))
}

/// A variational diffusion model.
#[derive(Module, Debug)]
pub struct Vdm<B: Backend> {
    /// `ε̂(z_t; γ_t)`.
    pub score: ScoreNet<B>,
    /// `γ(t)`.
    pub schedule: LearnedSchedule<B>,
}

/// `device`, a tensor computed in `f32` that carries the gradient, with its values replaced by
/// the exact `host` values: `device − stopgrad(device) + host`. The value is `host` (rounded once
/// to `f32`); the gradient is `device`'s.
fn with_host_values<B: Backend>(device: Tensor<B, 1>, host: &[f64]) -> Tensor<B, 1> {
    let exact = Tensor::from_floats(host.iter().map(|&v| v as f32).collect::<Vec<_>>().as_slice(), &device.device());
    device.clone() - device.detach() + exact
}

impl<B: Backend> Vdm<B> {
    /// Image channels.
    pub fn channels(&self) -> usize {
        self.score.channels()
    }
}

impl<B: FastOps> Vdm<B> {
    /// The VLB terms of each image in nats (VDM eq. 11–17), from `pixels` (`[N, C, H, W]`,
    /// values `0..=255`) and `noise`.
    ///
    /// Times, `γ` values and the `T`-step weights `T·expm1(γ_t − γ_s)` are computed in `f64` on
    /// the host (from the schedule's current parameters) and enter the device computation with
    /// the gradient of their `f32` device counterparts (see [`with_host_values`]): in `f32`, `γ_t`
    /// and `γ_s` of a bound with many steps would round to the same value.
    pub fn vlb_terms(&self, pixels: Tensor<B, 4>, noise: &Noise, time: TimeMode) -> VlbTerms<Batch4<B>> {
        let device = pixels.device();
        let shape: [usize; 4] = pixels.dims();
        let n = shape[0];
        let host = self.schedule.to_host();
        let f = vlb::encode(BurnBatch(pixels), PIXEL_VALUES);
        let eps = BurnBatch(tensor4::<B>(noise.eps.clone(), shape, &device));
        let eps_0 = BurnBatch(tensor4::<B>(noise.eps_0.clone(), shape, &device));

        let (g0, g1) = self.schedule.endpoints(&device);
        let g0 = per_example(with_host_values(g0, &[host.gamma_0()]));
        let g1 = per_example(with_host_values(g1, &[host.gamma_1()]));
        let prior = vlb::prior_kl(f.clone(), g1);
        let z_0 = process::diffuse(f.clone(), eps_0, g0.clone());
        // vlb::reconstruction_nll, as one fused operation (tested against it).
        let z = z_0.div(process::alpha(g0.clone()));
        let reconstruction = BurnBatch(ops::decoder_nll(z.0, f.0.clone(), g0.neg().exp().0, PIXEL_VALUES)).sum_example();

        let times: Vec<f64> = antithetic_times(noise.u0, n).collect();
        let on_device = |v: &[f64]| Tensor::<B, 1>::from_floats(v.iter().map(|&x| x as f32).collect::<Vec<_>>().as_slice(), &device);
        let (g_t, weight) = match time {
            TimeMode::Continuous => {
                // L_∞ = ½ γ'(t) ‖ε − ε̂‖² (VDM eq. 17).
                let (g_t, g_prime) = self.schedule.gamma_and_prime(on_device(&times));
                let g_t = with_host_values(g_t, &times.iter().map(|&t| host.gamma(t)).collect::<Vec<_>>());
                let g_prime = with_host_values(g_prime, &times.iter().map(|&t| host.gamma_prime(t)).collect::<Vec<_>>());
                (g_t, g_prime)
            }
            TimeMode::Discrete(steps) => {
                // L_T = ½ T expm1(γ_t − γ_s) ‖ε − ε̂‖² (VDM eq. 13 in ε form).
                let (s, t): (Vec<f64>, Vec<f64>) = times.iter().map(|&t| discretize(t, steps)).unzip();
                let g_t = self.schedule.gamma(on_device(&t));
                let g_s = self.schedule.gamma(on_device(&s));
                let weight = (g_t.clone() - g_s).exp().sub_scalar(1.0).mul_scalar(steps as f64);
                let exact: Vec<f64> = s.iter().zip(&t).map(|(&s, &t)| steps as f64 * (host.gamma(t) - host.gamma(s)).exp_m1()).collect();
                let g_t = with_host_values(g_t, &t.iter().map(|&t| host.gamma(t)).collect::<Vec<_>>());
                (g_t, with_host_values(weight, &exact))
            }
        };
        let z_t = process::diffuse(f, eps.clone(), per_example(g_t.clone()));
        let eps_hat = BurnBatch(self.score.forward(z_t.0, g_t));
        let diffusion = vlb::diffusion_loss(eps, eps_hat, per_example(weight));
        VlbTerms { prior, reconstruction, diffusion }
    }

    /// Ancestral sampling with `steps` steps (VDM Appendix A.4): `z_1 ~ N(0, I)`, then
    /// `z_t → z_s` for `t = i/T`, `s = (i−1)/T`, and finally the decoder's mode at `z_0/α_0`.
    ///
    /// Images are drawn `batch_size` at a time; image `i`'s noise comes from its own stream
    /// `(seed, i)`, so the result does not depend on the batch size. `on_step` is called after
    /// every network evaluation.
    #[allow(clippy::too_many_arguments)]
    pub fn sample(&self, n: usize, [height, width]: [usize; 2], steps: usize, seed: u64, batch_size: usize, device: &B::Device, mut on_step: impl FnMut()) -> ImageSet {
        let channels = self.channels();
        let host = self.schedule.to_host();
        let gammas: Vec<f64> = (0..=steps).map(|i| host.gamma(i as f64 / steps as f64)).collect();
        let mut pixels = Vec::with_capacity(n * channels * height * width);
        for first in (0..n).step_by(batch_size.max(1)) {
            let count = batch_size.min(n - first);
            let shape = [count, channels, height, width];
            let mut streams: Vec<SplitMix64> = (first..first + count).map(|i| SplitMix64::new(derive_seed(seed, STREAM_SAMPLE, i as u64))).collect();
            let mut normals = || tensor4::<B>(streams.iter_mut().flat_map(|rng| (0..channels * height * width).map(|_| rng.normal::<f32>()).collect::<Vec<_>>()).collect(), shape, device);
            let mut z = normals();
            for i in (1..=steps).rev() {
                let (g_s, g_t) = (gammas[i - 1], gammas[i]);
                let eps_hat = self.score.forward(z.clone(), Tensor::full([count], g_t as f32, device));
                let step = process::ancestral(g_s, g_t);
                z = z.mul_scalar(step.z) + eps_hat.mul_scalar(step.eps_hat) + normals().mul_scalar(step.noise);
                on_step();
            }
            let x = z.div_scalar(process::alpha(gammas[0]));
            pixels.extend(x.into_data().iter::<f32>().map(|v| vlb::decode_nearest(v, PIXEL_VALUES) as u8));
        }
        ImageSet::new(pixels, [channels, height, width])
    }
}

/// The random stream of an image's sampling noise.
const STREAM_SAMPLE: u64 = 3;

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
        let var = if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
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
    /// Each image's VLB estimate, bpd.
    pub per_image: Vec<f64>,
}

/// Evaluates the VLB of every image of `images` once, in batches of `batch_size`, with noise
/// drawn from `seed`. The estimate is unbiased; its standard error covers data and noise.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: FastOps>(model: &Vdm<B>, images: &ImageSet, time: TimeMode, batch_size: usize, seed: u64, device: &B::Device, mut on_batch: impl FnMut(usize)) -> Result<EvalReport, String> {
    if images.is_empty() {
        return Err("there are no images to evaluate".into());
    }
    if batch_size == 0 {
        return Err("the evaluation batch size must be at least 1".into());
    }
    let mut rng = SplitMix64::new(seed);
    let d = images.features();
    let (mut totals, mut terms) = (Vec::with_capacity(images.len()), [0.0f64; 3]);
    let indices: Vec<usize> = (0..images.len()).collect();
    for chunk in indices.chunks(batch_size) {
        let batch = images.select(chunk);
        let noise = Noise::draw(&mut rng, chunk.len(), d);
        let vlb = model.vlb_terms(pixels_tensor::<B>(&batch, device), &noise, time).map(|t| vlb::nats_to_bpd(t, d));
        let host = |t: Batch4<B>| t.0.into_data().iter::<f64>().collect::<Vec<f64>>();
        let total = host(vlb.total());
        for (acc, term) in terms.iter_mut().zip([vlb.prior, vlb.reconstruction, vlb.diffusion]) {
            *acc += host(term).iter().sum::<f64>();
        }
        totals.extend(total);
        on_batch(chunk.len());
    }
    let n = totals.len() as f64;
    Ok(EvalReport { bpd: Estimate::of(&totals), prior: terms[0] / n, reconstruction: terms[1] / n, diffusion: terms[2] / n, per_image: totals })
}
