//! The variational diffusion model: score network + noise schedule, its VLB, evaluation and
//! what its samplers need ([`Denoiser`]), all through [`vdm_core`]'s generic math on [`BurnBatch`] tensors.
//!
//! All randomness (times, noise, data order) is drawn on the host from [`SplitMix64`] and
//! uploaded, so a seed gives the same numbers on every backend: this is what makes CPU and GPU
//! results comparable.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use vdm_core::process::{DdpmVariance, Target};
use vdm_core::rng::SplitMix64;
use vdm_core::schedule::NoiseSchedule;
use vdm_core::time::{antithetic_times, discretize};
use vdm_core::vlb::{self, VlbTerms, PIXEL_VALUES};
use vdm_core::weighting::Weighting;
use vdm_core::{process, BatchTensor};

use crate::config::{VdmConfig, MAX_TIME_STEPS};
use crate::error::{Error, Result};
use crate::eval::{ImageBound, Likelihood};
use crate::memory;
use crate::nn::score_unet::ScoreNet;
use crate::ops::{self, FastOps, TrainBackend};
use crate::parallel::Shard;
use crate::sample::{Denoised, Denoiser, GridPoint, Spacing};
use crate::schedule::{HostSchedule, LearnedSchedule, Part, ShapeObjective};
use crate::tensor::{host_tensor, normal_values, BurnBatch};
use crate::transfer::{download, upload, upload_rows};

use super::check_channels;

/// Per-example values of shape `[B, 1, 1, 1]` (or images `[B, C, H, W]`).
pub type Batch4<B> = BurnBatch<B, 4>;

impl VdmConfig {
    /// A model for images of `channels` channels with its parameters not yet allocated (burn
    /// initialises them lazily, on first use): cheap, for counting parameters.
    pub fn build<B: Backend>(&self, channels: usize, device: &B::Device) -> Vdm<B> {
        Vdm {
            score: self.score.init(channels, device),
            schedule: self.schedule.init(device),
            target: self.prediction.into(),
        }
    }

    /// A freshly initialised model for images of `channels` channels (see [`crate::nn::materialise`]).
    pub fn init<B: Backend>(&self, channels: usize, device: &B::Device) -> Vdm<B> {
        crate::nn::materialise(self.build(channels, device))
    }

    /// Refuses a training batch that cannot fit in memory: the weights, their gradients, the
    /// optimiser's moments and the EMA (six copies), and the activations kept for the backward pass.
    pub fn check_training_memory<B: Backend>(
        &self,
        shape: [usize; 3],
        batch_size: usize,
        device: &B::Device,
    ) -> Result<()> {
        let params = self.build::<B>(shape[0], device).num_params() as u128;
        let values = 6 * params + batch_size as u128 * self.score.activations_per_image(shape);
        memory::check(
            &format!(
                "training {params} parameters on batches of {batch_size} images of {}x{}x{}",
                shape[0], shape[1], shape[2]
            ),
            memory::f32s(values),
            "lower train.batch_size or the model's n_embd / n_layer",
        )
    }

    /// Refuses an evaluation or sampling batch that cannot fit in memory (no backward pass: about a
    /// quarter of a training step's activations, plus the weights).
    pub fn check_inference_memory<B: Backend>(
        &self,
        shape: [usize; 3],
        batch_size: usize,
        device: &B::Device,
    ) -> Result<()> {
        let params = self.build::<B>(shape[0], device).num_params() as u128;
        let values = params + batch_size as u128 * self.score.activations_per_image(shape) / 4;
        memory::check(
            &format!("a batch of {batch_size} images through {params} parameters"),
            memory::f32s(values),
            "lower the batch size",
        )
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
    pub fn from_steps(steps: usize) -> Result<Self> {
        match steps {
            0 => Ok(Self::Continuous),
            1..=MAX_TIME_STEPS => Ok(Self::Discrete(steps)),
            _ => Err(Error::setting("time_steps", format!(
                "T = {steps} steps is beyond the supported {MAX_TIME_STEPS}; at that many steps the bound equals the continuous-time one (T = 0)"
            ))),
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

/// The randomness of one VLB estimate of a batch, or of a replica's share of it: noise for `z_t`
/// and `z_0`, and the offset of the antithetic times.
#[derive(Clone, Debug)]
pub struct Noise {
    eps: Vec<f32>,
    eps_0: Vec<f32>,
    u0: f64,
    shard: Shard,
}

impl Noise {
    /// Draws the noise for `n` images of `d` values.
    pub fn draw(rng: &mut SplitMix64, n: usize, d: usize) -> Self {
        Self::draw_shard(rng, Shard::whole(n), d)
    }

    /// The noise of `shard`'s images: drawn for the whole batch, so that an image's noise and time
    /// do not depend on how the batch is split among replicas, and sliced.
    pub fn draw_shard(rng: &mut SplitMix64, shard: Shard, d: usize) -> Self {
        let eps = shard.slice(&normal_values(rng, shard.of * d), d);
        let eps_0 = shard.slice(&normal_values(rng, shard.of * d), d);
        Self { eps, eps_0, u0: rng.uniform(), shard }
    }

    /// The offset of the antithetic times (`vdm_core::time::antithetic_times`).
    pub fn u0(&self) -> f64 {
        self.u0
    }

    /// The antithetic times of the share's images (those of the whole batch, sliced).
    fn times(&self) -> impl Iterator<Item = f64> {
        antithetic_times(self.u0, self.shard.of).skip(self.shard.start).take(self.shard.len)
    }
}

fn tensor4<B: Backend>(values: Vec<f32>, shape: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
    upload(TensorData::new(values, shape), device)
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
    /// What the score network's output estimates.
    #[module(skip)]
    pub target: Target,
}

/// `device`, a tensor computed in `f32` that carries the gradient, with its values replaced by
/// the `exact` values computed on the host: `device − stopgrad(device) + exact`. The value is
/// `exact` (rounded once to the backend's precision); the gradient is `device`'s.
fn with_host_values<B: Backend>(device: Tensor<B, 1>, exact: Tensor<B, 1>) -> Tensor<B, 1> {
    device.clone() - device.detach() + exact
}

impl<B: Backend> Vdm<B> {
    /// Image channels.
    pub fn channels(&self) -> usize {
        self.score.channels()
    }
}

impl<B: FastOps> Vdm<B> {
    /// `ε̂(z_t; γ_t)` for `z_t` of shape `[N, C, H, W]` and `γ_t` of shape `[N]`: the score
    /// network's output read as the model's target ([`Target::eps`]).
    pub fn eps_hat(&self, z: Tensor<B, 4>, gamma: Tensor<B, 1>) -> Tensor<B, 4> {
        let output = BurnBatch(self.score.forward(z.clone(), gamma.clone()));
        self.target.eps(output, BurnBatch(z), per_example(gamma)).0
    }

    /// The VLB terms of each image in nats (VDM eq. 11–17), from `pixels` (`[N, C, H, W]`,
    /// values `0..=255`) and `noise`. Gradients reach every parameter.
    pub fn vlb_terms(&self, pixels: Tensor<B, 4>, noise: &Noise, time: TimeMode) -> VlbTerms<Batch4<B>> {
        let host = self.schedule.to_host();
        let (g_t, weight) = self.diffusion_inputs(&host, noise, time, Part::All);
        self.vlb_terms_at(&host, pixels, noise, g_t, weight)
    }

    /// Each example's `γ_t` and diffusion-loss weight (`[N]` each): `γ'(t)` in continuous time
    /// (VDM eq. 17), `T·expm1(γ_t − γ_s)` with `T` steps (eq. 13 in ε form), at the antithetic
    /// times of `noise`, with gradients to the schedule's parameters of `part`.
    ///
    /// The values are computed in `f64` on the host from `host`, the schedule's current parameters
    /// ([`LearnedSchedule::to_host`](crate::schedule::LearnedSchedule::to_host)), and carry the
    /// gradient of their `f32` device counterparts (see `with_host_values`): in `f32`, `γ_t` and
    /// `γ_s` of a bound with many steps would round to the same value. One upload.
    pub fn diffusion_inputs(
        &self,
        host: &HostSchedule,
        noise: &Noise,
        time: TimeMode,
        part: Part,
    ) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let device = self.schedule.endpoints().0.device();
        let times: Vec<f64> = noise.times().collect();
        let gammas = |times: &[f64]| times.iter().map(|&t| host.gamma(t)).collect::<Vec<_>>();
        match time {
            TimeMode::Continuous => {
                let prime: Vec<f64> = times.iter().map(|&t| host.gamma_prime(t)).collect();
                let [t, exact_g, exact_prime] = upload_rows::<B, 3>([&times, &gammas(&times), &prime], &device);
                let (g_t, g_prime) = self.schedule.gamma_and_prime_of(t, part);
                (with_host_values(g_t, exact_g), with_host_values(g_prime, exact_prime))
            }
            TimeMode::Discrete(steps) => {
                let (s, t): (Vec<f64>, Vec<f64>) = times.iter().map(|&t| discretize(t, steps)).unzip();
                let exact_weight: Vec<f64> =
                    s.iter().zip(&t).map(|(&s, &t)| steps as f64 * (host.gamma(t) - host.gamma(s)).exp_m1()).collect();
                let [t_on, s_on, exact_g, exact_weight] =
                    upload_rows::<B, 4>([&t, &s, &gammas(&t), &exact_weight], &device);
                let g_t = self.schedule.gamma_and_prime_of(t_on, part).0;
                let g_s = self.schedule.gamma_and_prime_of(s_on, part).0;
                let weight = (g_t.clone() - g_s).exp().sub_scalar(1.0).mul_scalar(steps as f64);
                (with_host_values(g_t, exact_g), with_host_values(weight, exact_weight))
            }
        }
    }

    /// The VLB terms as [`Vdm::vlb_terms`], with the diffusion term's `γ_t` and weight given
    /// (`[N]` each, from [`Vdm::diffusion_inputs`]) and the schedule's endpoints from `host`.
    /// Two uploads: the noise, and the endpoints.
    pub fn vlb_terms_at(
        &self,
        host: &HostSchedule,
        pixels: Tensor<B, 4>,
        noise: &Noise,
        g_t: Tensor<B, 1>,
        weight: Tensor<B, 1>,
    ) -> VlbTerms<Batch4<B>> {
        let device = pixels.device();
        let [n, c, h, w] = pixels.dims();
        let f = vlb::encode(BurnBatch(pixels), PIXEL_VALUES);
        let both = tensor4::<B>([noise.eps.as_slice(), &noise.eps_0].concat(), [2 * n, c, h, w], &device);
        let [eps, eps_0] = [0, n].map(|start| BurnBatch(both.clone().narrow(0, start, n)));

        let (g0, g1) = self.schedule.endpoints();
        let [exact_g0, exact_g1] = upload_rows::<B, 2>([&[host.gamma_0()], &[host.gamma_1()]], &device);
        let g0 = per_example(with_host_values(g0, exact_g0));
        let g1 = per_example(with_host_values(g1, exact_g1));
        let prior = vlb::prior_kl(f.clone(), g1);
        let z_0 = process::diffuse(f.clone(), eps_0, g0.clone());
        // vlb::reconstruction_nll, as one fused operation (tested against it).
        let z = z_0.div(process::alpha(g0.clone()));
        let reconstruction =
            BurnBatch(ops::decoder_nll(z.0, f.0.clone(), g0.neg().exp().0, PIXEL_VALUES)).sum_example();

        let z_t = process::diffuse(f, eps.clone(), per_example(g_t.clone()));
        let eps_hat = BurnBatch(self.eps_hat(z_t.0, g_t));
        let diffusion = vlb::diffusion_loss(eps, eps_hat, per_example(weight));
        VlbTerms { prior, reconstruction, diffusion }
    }
}

impl<B: FastOps> Denoiser<B> for Vdm<B> {
    fn channels(&self) -> usize {
        self.score.channels()
    }

    /// `t_i = i/T` for `i = 0..=T` with the learned `γ(t_i)`, computed in `f64` on the host; the
    /// chain ends at `z_0`, not at the data.
    /// `t_i = i/T` with the learned `γ(t_i)`, or `γ` itself spaced between `γ(0)` and `γ(1)`
    /// (the network takes `γ`, so any value between them is a grid point).
    fn grid(&self, steps: usize, spacing: Spacing) -> Result<Vec<GridPoint>> {
        if steps == 0 {
            return Err(Error::setting("steps", "sampling needs at least 1 step, got 0"));
        }
        TimeMode::from_steps(steps)?;
        let host = self.schedule.to_host();
        let gammas = spacing
            .gammas(host.gamma_0(), host.gamma_1(), steps + 1)
            .unwrap_or_else(|| (0..=steps).map(|i| host.gamma(i as f64 / steps as f64)).collect());
        Ok(gammas.into_iter().map(|gamma| GridPoint { gamma, net_input: gamma }).collect())
    }

    /// `ε̂(z_t; γ_t)` from the score network's output ([`Target::eps`]) and
    /// `x̂ = (z_t − σ_t ε̂)/α_t` (VDM eq. 12).
    fn predict(&self, z: Tensor<B, 4>, at: GridPoint) -> Denoised<B> {
        let count = z.dims()[0];
        let eps = self.eps_hat(z.clone(), Tensor::full([count], at.net_input as f32, &z.device()));
        let x = (z - eps.clone().mul_scalar(process::sigma(at.gamma))).div_scalar(process::alpha(at.gamma));
        Denoised { eps, x, reverse_mean_eps: None }
    }

    /// The decoder's mode at `z_0/α_0`: the nearest of the 256 levels.
    fn decode(&self, z: Tensor<B, 4>) -> Vec<u8> {
        let x = z.div_scalar(process::alpha(self.schedule.to_host().gamma_0()));
        download(x).iter::<f32>().map(|v| vlb::decode_nearest(v, PIXEL_VALUES) as u8).collect()
    }

    fn ancestral_variance(&self, _steps: usize) -> Result<DdpmVariance> {
        Ok(DdpmVariance::BetaTilde)
    }
}

impl<B: TrainBackend> Vdm<B> {
    /// One training batch: the mean weighted loss (the VLB in bits per dimension for
    /// [`Weighting::Elbo`]; `[1]`, left on the device) and the gradient of every parameter. The
    /// schedule is read once (one download).
    ///
    /// The score network follows the gradient of the mean weighted loss `W̄`, whose diffusion term
    /// is the VLB's scaled per example by `w(λ_t)` ([`vdm_core::weighting`]). The schedule's
    /// endpoints follow the mean VLB `L̄`, and its shape follows `objective` (VDM §5.2): `L̄` again,
    /// or the mean square of the per-example training losses `mean_i W_i²`, whose gradient for
    /// the shape is that of the estimator's variance (the weighted loss, like the bound, depends on
    /// the shape only through that variance).
    ///
    /// No higher-order autodiff is needed. The diffusion term depends on the schedule only through
    /// `g_i = γ(t_i)` and the weight `w_i` (`γ'(t_i)` in continuous time), so the batch's loss is
    /// computed from detached copies of `g` and `w` that require gradients: one backward pass gives
    /// the network's gradient, the endpoints' gradient through the prior and reconstruction terms,
    /// and `∂W̄/∂g_i`, `∂W̄/∂w_i`. Example `i`'s diffusion term is the only one that depends on
    /// `(g_i, w_i)`, scaled by the constant `w(λ_i)`, so `∂L̄/∂(g_i, w_i) = ∂W̄/∂(g_i, w_i) / w(λ_i)`.
    /// A second, cheap backward pass through the schedule alone, of
    ///
    /// `Σ_i a_i γ(t_i) + b_i w(t_i)`, with `(a_i, b_i) = ∂L̄/∂(g_i, w_i)` for the endpoints and,
    /// for the shape under the variance objective, `2 W_i ∂W̄/∂(g_i, w_i) = ∂(mean_j W_j²)/∂(g_i, w_i)`,
    ///
    /// adds the schedule's share (the chain rule with the per-example coefficients held fixed).
    ///
    /// `pixels` are the images of `noise`'s share of the batch ([`Noise::draw_shard`]); the loss
    /// and gradients are then the share's part of the whole batch's (its means times
    /// [`Shard::weight`]), and summed over the shares they are the whole batch's. Every term above
    /// is a sum over examples, the variance objective's `mean_j W_j²` included.
    pub fn loss_and_gradients(
        &self,
        pixels: Tensor<B, 4>,
        noise: &Noise,
        time: TimeMode,
        weighting: Weighting,
        objective: ShapeObjective,
    ) -> Result<(Tensor<B::InnerBackend, 1>, GradientsParams)> {
        if objective == ShapeObjective::Variance && time != TimeMode::Continuous {
            return Err(Error::setting("train.time_steps", format!(
                "the variance shape objective needs continuous-time training (train.time_steps = 0), not {time}: only in continuous time does the bound not depend on the shape"
            )));
        }
        let [n, c, h, w] = pixels.dims();
        let device = pixels.device();
        let host = self.schedule.to_host();
        let (g_t, weight) = self.diffusion_inputs(&host, noise, time, Part::All);
        let (g_leaf, w_leaf) = (g_t.detach().require_grad(), weight.detach().require_grad());
        let mut terms = self.vlb_terms_at(&host, pixels, noise, g_leaf.clone(), w_leaf.clone());
        // w(λ_i) = w(−γ_i), held constant; `None` for the bound itself.
        let emphasis = (!weighting.is_elbo()).then(|| {
            let lambdas = noise.times().map(|t| match time {
                TimeMode::Continuous => -host.gamma(t),
                TimeMode::Discrete(steps) => -host.gamma(discretize(t, steps).1),
            });
            host_tensor::<B>(&lambdas.map(|l| weighting.weight(l)).collect::<Vec<_>>(), &device)
        });
        if let Some(emphasis) = &emphasis {
            terms.diffusion = terms.diffusion.mul(per_example(emphasis.clone()));
        }
        let per_image = vlb::nats_to_bpd(terms.total(), c * h * w).0.reshape([n]);
        let losses = per_image.clone().inner();
        // The share's part of the whole batch's mean (the mean itself on one device).
        let loss = per_image.mean().mul_scalar(noise.shard.weight());
        let value = loss.clone().inner();
        let grads = loss.backward();
        let coefficient =
            |leaf: &Tensor<B, 1>| Tensor::<B, 1>::from_inner(leaf.grad(&grads).unwrap_or_else(|| losses.zeros_like()));
        let (dg, dw) = (coefficient(&g_leaf), coefficient(&w_leaf));
        let mut gradients = GradientsParams::from_grads(grads, self);
        if !self.schedule.is_trainable() {
            return Ok((value, gradients));
        }
        // The bound's coefficients ∂L̄/∂(g_i, w_i).
        let (bound_dg, bound_dw) = match emphasis {
            None => (dg.clone(), dw.clone()),
            Some(emphasis) => (dg.clone() / emphasis.clone(), dw.clone() / emphasis),
        };
        let surrogate = match objective {
            ShapeObjective::Vlb => {
                let (g, w) = self.diffusion_inputs(&host, noise, time, Part::All);
                bound_dg * g + bound_dw * w
            }
            ShapeObjective::Variance => {
                let (g_e, w_e) = self.diffusion_inputs(&host, noise, time, Part::Endpoints);
                let (g_s, w_s) = self.diffusion_inputs(&host, noise, time, Part::Shape);
                let twice_w = Tensor::<B, 1>::from_inner(losses).mul_scalar(2.0);
                bound_dg * g_e + bound_dw * w_e + twice_w * (dg * g_s + dw * w_s)
            }
        };
        let schedule_gradients = GradientsParams::from_grads(surrogate.sum().backward(), &self.schedule);
        add_gradients(&self.schedule, &mut gradients, schedule_gradients);
        Ok((value, gradients))
    }
}

/// `into += extra`, parameter by parameter, for the parameters of `module`.
fn add_gradients<B: AutodiffBackend, M: Module<B>>(module: &M, into: &mut GradientsParams, mut extra: GradientsParams) {
    struct Add<'a> {
        into: &'a mut GradientsParams,
        extra: &'a mut GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Add<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.extra.remove::<B::InnerBackend, D>(param.id) {
                let sum = match self.into.remove::<B::InnerBackend, D>(param.id) {
                    Some(acc) => acc + g,
                    None => g,
                };
                self.into.register::<B::InnerBackend, D>(param.id, sum);
            }
        }
    }
    module.visit(&mut Add { into, extra: &mut extra });
}

/// VDM's bound at `T` steps or in continuous time (VDM eq. 11–17), one antithetic draw of
/// times and noise per batch and draw.
impl<B: FastOps> Likelihood<B> for Vdm<B> {
    type Bound = TimeMode;

    fn bound_name(&self, bound: TimeMode, _draws: usize) -> String {
        bound.to_string()
    }

    /// The network is convolutional at one resolution: any height and width, its channel count.
    fn check_image_shape(&self, [c, ..]: [usize; 3]) -> Result<()> {
        check_channels(c, self.channels())
    }

    fn work_per_image(&self, _bound: TimeMode, draws: usize) -> usize {
        draws
    }

    fn estimate(
        &self,
        pixels: Tensor<B, 4>,
        _indices: &[usize],
        bound: TimeMode,
        draws: usize,
        _seed: u64,
        rng: &mut SplitMix64,
        on_progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Vec<ImageBound>>> {
        let [n, c, h, w] = pixels.dims();
        let d = c * h * w;
        let host = |t: Batch4<B>| download(t.0).iter::<f64>().collect::<Vec<f64>>();
        let mut estimates = Vec::with_capacity(draws);
        for _ in 0..draws {
            let noise = Noise::draw(rng, n, d);
            let vlb = self.vlb_terms(pixels.clone(), &noise, bound).map(|t| vlb::nats_to_bpd(t, d));
            let total = host(vlb.total());
            let [prior, reconstruction, diffusion] = [vlb.prior, vlb.reconstruction, vlb.diffusion].map(host);
            estimates.push(
                (0..n)
                    .map(|i| ImageBound { total: total[i], terms: [prior[i], reconstruction[i], diffusion[i]] })
                    .collect(),
            );
            on_progress(n);
        }
        Ok(estimates)
    }
}
