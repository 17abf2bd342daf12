//! DDPM (Ho, Jain & Abbeel 2020): a `T`-step diffusion with a fixed β schedule, DDPM's U-Net,
//! the losses `L_simple`, `L_vlb` and `L_simple + λ L_vlb`, the `T`-term bound in bits per
//! dimension, and what its samplers need ([`Denoiser`]) — all through [`vdm_core`]'s math in `γ` form.
//!
//! Indexing follows the paper: latents `x_1 … x_T`, `x_0` the data on the grid `x/127.5 − 1`,
//! `γ_t = ln((1 − ᾱ_t)/ᾱ_t)` and `γ_0 = −∞` (`ᾱ_0 = 1`). The network sees the 0-based index
//! `t − 1`, as DDPM's code does. Every per-step coefficient is computed in `f64` on the host.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use vdm_core::ddpm::{self, DiscreteSchedule, NormalCdf};
use vdm_core::process::{self, DdpmVariance};
use vdm_core::rng::{derive_seed, SplitMix64};
use vdm_core::time::antithetic_times;
use vdm_core::vlb::{self, VlbTerms};
use vdm_core::BatchTensor;

use crate::config::{DdpmConfig, Loss, Prediction, Variance};
use crate::error::{Error, Result};
use crate::eval::{ImageBound, Likelihood};
use crate::memory;
use crate::nn::ddpm_unet::UNet;
use crate::ops::{FastOps, TrainBackend};
use crate::parallel::Shard;
use crate::sample::{Denoised, Denoiser, GridPoint, Spacing};
use crate::tensor::{normal_values, normals, BurnBatch};
use crate::transfer::{download, upload, upload_rows};

use super::check_channels;

/// Per-example values `[N, 1, 1, 1]` or images `[N, C, H, W]`.
type Batch4<B> = BurnBatch<B, 4>;

/// The random stream of an image's noise in [`evaluate_full_bound`].
const STREAM_EVAL: u64 = 5;

impl DdpmConfig {
    /// The model with its parameters not yet allocated (burn initialises them lazily).
    pub fn build<B: Backend>(&self, shape: [usize; 3], device: &B::Device) -> Result<Ddpm<B>> {
        self.validate()?;
        self.unet.check_image_shape(shape)?;
        let process = Process::new(self);
        Ok(Ddpm { net: self.unet.init(shape, device), process })
    }

    /// Refuses a training batch that cannot fit in memory (weights six times over, activations).
    pub fn check_training_memory<B: Backend>(
        &self,
        shape: [usize; 3],
        batch_size: usize,
        device: &B::Device,
    ) -> Result<()> {
        let params = self.build::<B>(shape, device)?.num_params() as u128;
        let values = 6 * params + batch_size as u128 * self.unet.activations_per_image(shape);
        memory::check(
            &format!(
                "training {params} parameters on batches of {batch_size} images of {}x{}x{}",
                shape[0], shape[1], shape[2]
            ),
            memory::f32s(values),
            "lower train.batch_size or model.unet.ch",
        )
    }

    /// Refuses an evaluation or sampling batch that cannot fit in memory.
    pub fn check_inference_memory<B: Backend>(
        &self,
        shape: [usize; 3],
        batch_size: usize,
        device: &B::Device,
    ) -> Result<()> {
        let params = self.build::<B>(shape, device)?.num_params() as u128;
        let values = params + batch_size as u128 * self.unet.activations_per_image(shape) / 4;
        memory::check(
            &format!("a batch of {batch_size} images through {params} parameters"),
            memory::f32s(values),
            "lower the batch size",
        )
    }
}

/// The host side of a DDPM: the schedule in `γ` form and the settings that turn the network's
/// output into a reverse step.
#[derive(Clone, Debug)]
pub struct Process {
    schedule: DiscreteSchedule,
    prediction: Prediction,
    variance: Variance,
    loss: Loss,
    hybrid_lambda: f64,
    clip: bool,
    l0_cdf: NormalCdf,
}

/// The per-example coefficients of step `t` (`s = t − 1`), all from `f64` on the host.
struct Coefficients {
    /// The network's time input `t − 1`.
    index: Vec<f64>,
    alpha_t: Vec<f64>,
    sigma_t: Vec<f64>,
    /// `α_s`.
    alpha_s: Vec<f64>,
    /// `c = 1 − SNR_t/SNR_s` (1 at `t = 1`).
    c: Vec<f64>,
    /// The posterior variance `β̃_t` (for `t = 1`, where it is 0, the decoder's: see [`Process::reverse_variance`]).
    var_q: Vec<f64>,
    /// The reverse process's variance `σ_t²`.
    var_p: Vec<f64>,
    /// 1 where `t = 1` (the decoder term `L_0`), else 0.
    decoder: Vec<f64>,
}

impl Process {
    fn new(config: &DdpmConfig) -> Self {
        Self {
            schedule: DiscreteSchedule::new(config.betas.into(), config.time_steps),
            prediction: config.prediction,
            variance: config.variance,
            loss: config.loss,
            hybrid_lambda: config.hybrid_lambda,
            clip: config.clip_denoised,
            l0_cdf: config.l0_cdf.into(),
        }
    }

    /// `T`.
    pub fn steps(&self) -> usize {
        self.schedule.steps()
    }

    /// The normal CDF of `L_0`'s bin masses.
    pub fn l0_cdf(&self) -> NormalCdf {
        self.l0_cdf
    }

    /// `γ_t` for `t ∈ 0..=T`, with `γ_0 = −∞`.
    pub fn gamma(&self, t: usize) -> f64 {
        if t == 0 {
            f64::NEG_INFINITY
        } else {
            self.schedule.gamma_at(t)
        }
    }

    /// The step `t ∈ 1..=T` whose `γ_t` is nearest to `gamma` (`γ_t` increases with `t`).
    pub fn nearest_step(&self, gamma: f64) -> usize {
        // The first step at or above `gamma`, by bisection.
        let (mut lo, mut hi) = (1, self.steps());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.gamma(mid) < gamma {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        match lo {
            t if t > 1 && gamma - self.gamma(t - 1) < self.gamma(t) - gamma => t - 1,
            t => t,
        }
    }

    /// `c_t = 1 − SNR_t/SNR_{t−1} = −expm1(γ_{t−1} − γ_t)` (so that `β_t = c_t σ_t²`).
    fn c(&self, t: usize) -> f64 {
        -(self.gamma(t - 1) - self.gamma(t)).exp_m1()
    }

    /// The reverse step's variance `σ_t²`: `β_t = c σ_t²` or `β̃_t = c σ_{t−1}²`. At `t = 1`
    /// both are replaced by `β̃_2`, as DDPM's code does (`posterior_log_variance_clipped`, and the
    /// log-variance of "fixedlarge"): it is the decoder's variance, and `β̃_1 = 0`.
    pub fn reverse_variance(&self, t: usize) -> f64 {
        if t == 1 {
            return self.posterior_variance(2);
        }
        match self.variance {
            Variance::Beta => self.c(t) * process::sigma_sq(self.gamma(t)),
            Variance::BetaTilde => self.posterior_variance(t),
        }
    }

    /// `β̃_t = c_t σ_{t−1}²` for `t ≥ 2`.
    fn posterior_variance(&self, t: usize) -> f64 {
        self.c(t) * process::sigma_sq(self.gamma(t - 1))
    }

    fn coefficients(&self, times: &[usize]) -> Coefficients {
        let each = |f: &dyn Fn(usize) -> f64| times.iter().map(|&t| f(t)).collect::<Vec<f64>>();
        Coefficients {
            index: each(&|t| (t - 1) as f64),
            alpha_t: each(&|t| process::alpha(self.gamma(t))),
            sigma_t: each(&|t| process::sigma(self.gamma(t))),
            alpha_s: each(&|t| process::alpha(self.gamma(t - 1))),
            c: each(&|t| self.c(t)),
            var_q: each(&|t| if t == 1 { self.reverse_variance(1) } else { self.posterior_variance(t) }),
            var_p: each(&|t| self.reverse_variance(t)),
            decoder: each(&|t| f64::from(t == 1)),
        }
    }
}

/// A DDPM: the U-Net and its process.
#[derive(Module, Debug)]
pub struct Ddpm<B: Backend> {
    /// The network.
    pub net: UNet<B>,
    /// The schedule and settings (not parameters).
    #[module(skip)]
    pub process: Process,
}

/// `values` as per-example `[N, 1, 1, 1]` values on `device`.
fn per_example<B: Backend>(values: &[f64], device: &B::Device) -> Batch4<B> {
    BurnBatch(upload(TensorData::new(values.to_vec(), [values.len(), 1, 1, 1]), device))
}

/// Standard normal noise of `shape`, all from `rng`.
fn normals_from<B: Backend>(rng: &mut SplitMix64, shape: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
    upload(TensorData::new(normal_values(rng, shape.iter().product()), shape), device)
}

/// One pass of the network at per-example times, with everything the losses need.
struct Pass<B: Backend> {
    x0: Batch4<B>,
    eps: Batch4<B>,
    z: Batch4<B>,
    out: Batch4<B>,
    k: PassCoefficients<B>,
}

/// [`Coefficients`] on the device.
struct PassCoefficients<B: Backend> {
    alpha_t: Batch4<B>,
    sigma_t: Batch4<B>,
    alpha_s: Batch4<B>,
    c: Batch4<B>,
    var_q: Batch4<B>,
    var_p: Batch4<B>,
    decoder: Batch4<B>,
}

impl<B: Backend> PassCoefficients<B> {
    /// The coefficients, and the network's time input `[N]`, in one upload.
    fn upload(k: &Coefficients, device: &B::Device) -> (Self, Tensor<B, 1>) {
        let rows = [&k.index, &k.alpha_t, &k.sigma_t, &k.alpha_s, &k.c, &k.var_q, &k.var_p, &k.decoder];
        let [index, rest @ ..] = upload_rows::<B, 8>(rows.map(Vec::as_slice), device);
        let [alpha_t, sigma_t, alpha_s, c, var_q, var_p, decoder] =
            rest.map(|row| BurnBatch(row.reshape([k.index.len(), 1, 1, 1])));
        (Self { alpha_t, sigma_t, alpha_s, c, var_q, var_p, decoder }, index)
    }

    /// The posterior mean `μ̃_t(z, x) = α_s((1 − c) z/α_t + c x)` (DDPM eq. 7 in `γ` form; see
    /// [`process::posterior`]).
    fn posterior_mean(&self, z: Batch4<B>, x: Batch4<B>) -> Batch4<B> {
        let keep = self.c.clone().neg().add_scalar(1.0);
        self.alpha_s.clone().mul(keep.mul(z).div(self.alpha_t.clone()).add(self.c.clone().mul(x)))
    }
}

impl<B: Backend> Ddpm<B> {
    /// Image channels.
    pub fn channels(&self) -> usize {
        self.net.channels()
    }
}

impl<B: FastOps> Ddpm<B> {
    /// The network at `x_t = α_t x_0 + σ_t ε` for each image's `t` in `times` (`1..=T`).
    fn pass(&self, pixels: Tensor<B, 4>, eps: Tensor<B, 4>, times: &[usize]) -> Pass<B> {
        let device = pixels.device();
        let host = self.process.coefficients(times);
        let (k, index) = PassCoefficients::upload(&host, &device);
        let x0 = ddpm::encode(BurnBatch(pixels));
        let eps = BurnBatch(eps);
        let z = k.alpha_t.clone().mul(x0.clone()).add(k.sigma_t.clone().mul(eps.clone()));
        let out = BurnBatch(self.net.forward(z.0.clone(), index));
        Pass { x0, eps, z, out, k }
    }

    /// The prediction `x̂_0` from the network's output (clipped to `[−1, 1]` if `clip`), and the
    /// noise prediction `ε̂ = (z − α_t x̂_0)/σ_t` consistent with it.
    fn x0_and_eps(&self, z: Batch4<B>, out: Batch4<B>, k: &PassCoefficients<B>, clip: bool) -> (Batch4<B>, Batch4<B>) {
        let x_hat = match self.process.prediction {
            Prediction::Eps => z.clone().sub(k.sigma_t.clone().mul(out.clone())).div(k.alpha_t.clone()),
            Prediction::X0 => out.clone(),
            // The inverse of PassCoefficients::posterior_mean: x̂ = (μ/α_s − (1 − c) z/α_t)/c.
            Prediction::Mean => {
                let keep = k.c.clone().neg().add_scalar(1.0);
                out.clone().div(k.alpha_s.clone()).sub(keep.mul(z.clone()).div(k.alpha_t.clone())).div(k.c.clone())
            }
        };
        if !clip && self.process.prediction == Prediction::Eps {
            return (x_hat, out);
        }
        let x_hat = if clip { BurnBatch(x_hat.0.clamp(-1.0, 1.0)) } else { x_hat };
        let eps_hat = z.sub(k.alpha_t.clone().mul(x_hat.clone())).div(k.sigma_t.clone());
        (x_hat, eps_hat)
    }

    /// `L_simple` per example (DDPM eq. 14): the mean squared error of the output against the
    /// target of the parametrisation.
    fn simple_loss(&self, p: &Pass<B>) -> Batch4<B> {
        let target = match self.process.prediction {
            Prediction::Eps => p.eps.clone(),
            Prediction::X0 => p.x0.clone(),
            Prediction::Mean => p.k.posterior_mean(p.z.clone(), p.x0.clone()),
        };
        ddpm::l_simple(target, p.out.clone())
    }

    /// The bound's terms for each example at its own `t`, in nats: the prior `L_T`, and
    /// `weight · L_0` (where `t = 1`) or `weight · L_{t−1}` (where `t > 1`).
    ///
    /// The reverse mean `μ_θ` and the decoder's mean are DDPM's (`p_mean_variance`): a
    /// μ-predicting network's output itself, never clipped; otherwise the posterior mean at `x̂_0`
    /// (clipped with `clip`), which at `t = 1` is `x̂_0`.
    fn vlb_terms(&self, p: &Pass<B>, clip: bool, weight: f64) -> VlbTerms<Batch4<B>> {
        let k = &p.k;
        let (mean_diff, decoder_mean) = if self.process.prediction == Prediction::Mean {
            (k.posterior_mean(p.z.clone(), p.x0.clone()).sub(p.out.clone()), p.out.clone())
        } else {
            let (x_hat, eps_hat) = self.x0_and_eps(p.z.clone(), p.out.clone(), k, clip);
            // x_0 − x̂_0, in ε form where that is exact: (σ_t/α_t)(ε̂ − ε).
            let x_error = if !clip && self.process.prediction == Prediction::Eps {
                k.sigma_t.clone().div(k.alpha_t.clone()).mul(eps_hat.sub(p.eps.clone()))
            } else {
                p.x0.clone().sub(x_hat.clone())
            };
            // μ̃ − μ_θ = α_s c (x_0 − x̂_0): both means are the posterior mean, at x_0 and at x̂_0.
            (k.alpha_s.clone().mul(k.c.clone()).mul(x_error), x_hat)
        };
        let kl = ddpm::gaussian_kl(mean_diff, k.var_q.clone(), k.var_p.clone());
        let log_scale = k.var_p.clone().ln().mul_scalar(0.5);
        let decoder = ddpm::discretized_gaussian_nll_with(p.x0.clone(), decoder_mean, log_scale, self.process.l0_cdf);
        let is_kl = k.decoder.clone().neg().add_scalar(1.0);
        let gamma_1 =
            per_example::<B>(&vec![self.process.gamma(self.process.steps()); p.x0.0.dims()[0]], &p.x0.0.device());
        VlbTerms {
            prior: vlb::prior_kl(p.x0.clone(), gamma_1),
            reconstruction: k.decoder.clone().mul(decoder).mul_scalar(weight),
            diffusion: is_kl.mul(kl).mul_scalar(weight),
        }
    }
}

/// `times` (increasing, not strictly; `times.len() ≤ big_t`) made strictly increasing within
/// `1..=big_t` by moving each as little as the ones before and after it require.
fn distinct_steps(mut times: Vec<usize>, big_t: usize) -> Vec<usize> {
    for k in 1..times.len() {
        times[k] = times[k].max(times[k - 1] + 1);
    }
    let last = times.len().saturating_sub(1);
    for k in (0..times.len()).rev() {
        times[k] = times[k].min(big_t - (last - k));
    }
    times
}

impl<B: FastOps> Denoiser<B> for Ddpm<B> {
    fn channels(&self) -> usize {
        self.net.channels()
    }

    /// The data end, then the times `τ_k = 1 + ⌊k T/steps⌋` for `k = 0..steps` (all `T` when
    /// `steps = T`; DDIM's strided schedule otherwise).
    /// DDIM's strided steps `1 + kT/S` (time spacing), or the steps nearest to `γ` values
    /// spaced between `γ(1)` and `γ(T)` (diffusers rounds the same way), moved apart where two
    /// would fall on one step (near `t = 1`, where `γ` moves fastest); then the data end.
    fn grid(&self, steps: usize, spacing: Spacing) -> Result<Vec<GridPoint>> {
        let big_t = self.process.steps();
        if steps == 0 || steps > big_t {
            return Err(Error::setting(
                "steps",
                format!("a DDPM with T = {big_t} samples with 1 to {big_t} steps, got {steps}"),
            ));
        }
        let times: Vec<usize> = match spacing.gammas(self.process.gamma(1), self.process.gamma(big_t), steps) {
            None => (0..steps).map(|k| 1 + k * big_t / steps).collect(),
            Some(gammas) => {
                distinct_steps(gammas.iter().map(|&gamma| self.process.nearest_step(gamma)).collect(), big_t)
            }
        };
        Ok(std::iter::once(GridPoint::DATA)
            .chain(times.into_iter().map(|t| GridPoint { gamma: self.process.gamma(t), net_input: (t - 1) as f64 }))
            .collect())
    }

    /// The network at step `t` (input `t − 1`), turned into `x̂` (clipped to `[−1, 1]` with
    /// `clip_denoised`) and the `ε̂` consistent with it; a μ-predicting network's unclipped mean
    /// for the ancestral step.
    fn predict(&self, z: Tensor<B, 4>, at: GridPoint) -> Denoised<B> {
        let (count, device) = (z.dims()[0], z.device());
        let t = at.net_input as usize + 1;
        let (k, _) = PassCoefficients::upload(&self.process.coefficients(&vec![t; count]), &device);
        let out = BurnBatch(self.net.forward(z.clone(), Tensor::full([count], at.net_input as f32, &device)));
        let (x, eps) = self.x0_and_eps(BurnBatch(z.clone()), out.clone(), &k, self.process.clip);
        // A μ-predicting network's output is the reverse mean whether or not x̂ is clipped.
        let reverse_mean_eps = (self.process.clip && self.process.prediction == Prediction::Mean)
            .then(|| self.x0_and_eps(BurnBatch(z), out, &k, false).1 .0);
        Denoised { eps: eps.0, x: x.0, reverse_mean_eps }
    }

    /// `x̂` at the data end, rounded to the nearest of the 256 levels.
    fn decode(&self, z: Tensor<B, 4>) -> Vec<u8> {
        download(z).iter::<f32>().map(ddpm::decode_nearest).collect()
    }

    fn ancestral_variance(&self, steps: usize) -> Result<DdpmVariance> {
        let big_t = self.process.steps();
        if steps != big_t {
            return Err(Error::setting(
                "steps",
                format!(
                "DDPM's ancestral sampler takes all T = {big_t} steps (got {steps}); use the DDIM sampler for fewer"
            ),
            ));
        }
        Ok(self.process.variance.into())
    }
}

impl<B: TrainBackend> Ddpm<B> {
    /// One training batch: the loss (`L_simple` as a mean squared error per value, `L_vlb` in
    /// bits per dimension, or their hybrid; `[1]`, left on the device) and the gradient of every
    /// parameter. Times are antithetic over `1..=T` and the noise comes from `rng`. Given the
    /// images of a `shard` of the batch, the share's part of them ([`Trainable`](super::Trainable)).
    pub fn loss_and_gradients(
        &self,
        pixels: Tensor<B, 4>,
        shard: Shard,
        rng: &mut SplitMix64,
    ) -> (Tensor<B::InnerBackend, 1>, GradientsParams) {
        let [n, c, h, w] = pixels.dims();
        let d = c * h * w;
        // Drawn for the whole batch and sliced: an image's time and noise do not depend on the split.
        let times = shard.slice(&self.process.draw_times(rng, shard.of), 1);
        let eps =
            upload(TensorData::new(shard.slice(&normal_values(rng, shard.of * d), d), [n, c, h, w]), &pixels.device());
        let p = self.pass(pixels, eps, &times);
        let vlb_bpd = || vlb::nats_to_bpd(self.vlb_terms(&p, false, self.process.steps() as f64).total(), d).0.mean();
        let loss = match self.process.loss {
            Loss::Simple => self.simple_loss(&p).0.mean(),
            Loss::Vlb => vlb_bpd(),
            Loss::Hybrid => self.simple_loss(&p).0.mean() + vlb_bpd().mul_scalar(self.process.hybrid_lambda),
        };
        // The share's part of the whole batch's mean (the mean itself on one device).
        let loss = loss.mul_scalar(shard.weight());
        (loss.clone().inner(), GradientsParams::from_grads(loss.backward(), self))
    }
}

impl Process {
    /// `n` antithetic times in `1..=T`: `t_i = 1 + ⌊T u_i⌋` with `u_i = (u₀ + i/n) mod 1`.
    fn draw_times(&self, rng: &mut SplitMix64, n: usize) -> Vec<usize> {
        self.draw_times_from(rng, n, 1)
    }

    /// `n` antithetic times in `first..=T`.
    fn draw_times_from(&self, rng: &mut SplitMix64, n: usize, first: usize) -> Vec<usize> {
        let (big_t, span) = (self.steps(), (self.steps() + 1 - first) as f64);
        antithetic_times(rng.uniform(), n).map(|u: f64| (first + (u * span) as usize).min(big_t)).collect()
    }
}

/// Which of a DDPM's bounds to evaluate (both `L_T + Σ_{t=2}^{T} L_{t−1} + L_0`, DDPM eq. 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Every one of the `T` terms for every image (DDPM's `calc_bpd_loop`): `T` network
    /// evaluations per image and draw; the only randomness is each term's `x_t`, drawn from the
    /// image's own stream.
    Full,
    /// An unbiased estimate: `L_T` and `L_0` exactly, and `Σ_{t≥2} L_{t−1}` estimated from a
    /// uniform draw of `t ∈ 2..=T` as `(T − 1) L_{t−1}` (two network evaluations per image and
    /// draw).
    Sampled,
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Full => "all terms",
            Self::Sampled => "sampled terms",
        })
    }
}

/// The terms of the bound are `prior = L_T`, `reconstruction = L_0` and
/// `diffusion = Σ_{t=2}^{T} L_{t−1}`.
impl<B: FastOps> Likelihood<B> for Ddpm<B> {
    type Bound = Bound;

    fn bound_name(&self, bound: Bound, draws: usize) -> String {
        let big_t = self.process.steps();
        // The convention of L_0's bin masses, beside the bound (published DDPM numbers use tanh).
        let cdf = match self.process.l0_cdf() {
            NormalCdf::Exact => "L_0 with the exact normal CDF",
            NormalCdf::Tanh => "L_0 with DDPM's tanh approximation of the normal CDF",
        };
        match bound {
            Bound::Sampled => format!("T={big_t}, estimate from {draws} sampled t per image; {cdf}"),
            Bound::Full if draws == 1 => format!("T={big_t}, all {big_t} terms; {cdf}"),
            Bound::Full => format!("T={big_t}, all {big_t} terms, {draws} draws per image; {cdf}"),
        }
    }

    fn check_image_shape(&self, shape: [usize; 3]) -> Result<()> {
        check_channels(shape[0], self.channels())?;
        self.net.check_image_size(shape)
    }

    fn work_per_image(&self, bound: Bound, draws: usize) -> usize {
        match bound {
            Bound::Full => self.process.steps() * draws,
            Bound::Sampled => draws,
        }
    }

    fn estimate(
        &self,
        pixels: Tensor<B, 4>,
        indices: &[usize],
        bound: Bound,
        draws: usize,
        seed: u64,
        rng: &mut SplitMix64,
        on_progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Vec<ImageBound>>> {
        let shape @ [n, c, h, w] = pixels.dims();
        let device = pixels.device();
        let (d, big_t, clip) = (c * h * w, self.process.steps(), self.process.clip);
        let host = |t: Batch4<B>| download(vlb::nats_to_bpd(t, d).0).iter::<f64>().collect::<Vec<f64>>();
        // Per draw and image: the three terms in bpd.
        let mut estimates: Vec<Vec<[f64; 3]>> = Vec::with_capacity(draws);
        match bound {
            Bound::Full => {
                let mut rngs: Vec<SplitMix64> =
                    indices.iter().map(|&i| SplitMix64::new(derive_seed(seed, STREAM_EVAL, i as u64))).collect();
                for _ in 0..draws {
                    let mut sums = vec![[0.0; 3]; n];
                    for t in 1..=big_t {
                        let p = self.pass(pixels.clone(), normals::<B>(&mut rngs, shape, &device), &vec![t; n]);
                        let terms = self.vlb_terms(&p, clip, 1.0);
                        let (recon, diffusion) = (host(terms.reconstruction), host(terms.diffusion));
                        if t == 1 {
                            for (sum, prior) in sums.iter_mut().zip(host(terms.prior)) {
                                sum[0] = prior;
                            }
                        }
                        for ((sum, r), k) in sums.iter_mut().zip(recon).zip(diffusion) {
                            sum[1] += r;
                            sum[2] += k;
                        }
                        on_progress(n);
                    }
                    estimates.push(sums);
                }
            }
            Bound::Sampled => {
                // L_0 is far larger than a typical L_{t−1}: drawn with probability 1/T and
                // weighted by T it would dominate the estimate's variance. It is computed exactly
                // instead (one pass at t = 1), and only Σ_{t≥2} L_{t−1} is estimated, as
                // (T − 1) L_{t−1} with t uniform on 2..=T.
                for _ in 0..draws {
                    let first = self.vlb_terms(
                        &self.pass(pixels.clone(), normals_from::<B>(rng, shape, &device), &vec![1; n]),
                        clip,
                        1.0,
                    );
                    let times = self.process.draw_times_from(rng, n, 2);
                    let eps = normals_from::<B>(rng, shape, &device);
                    let rest = self.vlb_terms(&self.pass(pixels.clone(), eps, &times), clip, (big_t - 1) as f64);
                    let [prior, recon, diffusion] = [first.prior, first.reconstruction, rest.diffusion].map(host);
                    estimates.push((0..n).map(|i| [prior[i], recon[i], diffusion[i]]).collect());
                    on_progress(n);
                }
            }
        }
        let bound = |terms: [f64; 3]| ImageBound { total: terms.iter().sum(), terms };
        Ok(estimates.into_iter().map(|draw| draw.into_iter().map(bound).collect()).collect())
    }
}
