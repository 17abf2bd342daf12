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
use vdm_core::rng::SplitMix64;
use vdm_core::time::{antithetic_times, discretize};
use vdm_core::vlb::{self, VlbTerms, PIXEL_VALUES};
use vdm_core::{process, BatchTensor};

use crate::data::ImageSet;
use crate::schedule::{LearnedSchedule, ScheduleConfig};
use crate::nn::score_unet::{ScoreNet, ScoreNetConfig};
use crate::tensor::BurnBatch;

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

    /// A freshly initialised model.
    ///
    /// burn initialises parameters lazily, on first use; they are materialised here, in a fixed
    /// order, so that copies (the EMA) start from the same weights as the model.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Vdm<B> {
        struct Materialise;
        impl<B: Backend> ModuleVisitor<B> for Materialise {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let _ = param.val();
            }
        }
        let model = Vdm { score: self.score.init(device), schedule: self.schedule.init(device) };
        model.visit(&mut Materialise);
        model
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
    /// `0` means continuous, `T > 0` means `T` steps.
    pub fn from_steps(steps: usize) -> Self {
        if steps == 0 {
            Self::Continuous
        } else {
            Self::Discrete(steps)
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

impl<B: Backend> Vdm<B> {
    /// The VLB terms of each image in nats (VDM eq. 11–17), from `pixels` (`[N, C, H, W]`,
    /// values `0..=255`) and `noise`.
    pub fn vlb_terms(&self, pixels: Tensor<B, 4>, noise: &Noise, time: TimeMode) -> VlbTerms<Batch4<B>> {
        let device = pixels.device();
        let shape: [usize; 4] = pixels.dims();
        let n = shape[0];
        let f = vlb::encode(BurnBatch(pixels), PIXEL_VALUES);
        let eps = BurnBatch(tensor4::<B>(noise.eps.clone(), shape, &device));
        let eps_0 = BurnBatch(tensor4::<B>(noise.eps_0.clone(), shape, &device));

        let (g0, g1) = self.schedule.endpoints(&device);
        let (g0, g1) = (per_example(g0), per_example(g1));
        let prior = vlb::prior_kl(f.clone(), g1);
        let z_0 = process::diffuse(f.clone(), eps_0, g0.clone());
        let reconstruction = vlb::reconstruction_nll(f.clone(), z_0, g0, PIXEL_VALUES);

        let times: Vec<f64> = antithetic_times(noise.u0, n).collect();
        let host = |v: Vec<f64>| Tensor::<B, 1>::from_floats(v.iter().map(|&x| x as f32).collect::<Vec<_>>().as_slice(), &device);
        let diffusion = match time {
            TimeMode::Continuous => {
                let (g_t, g_prime) = self.schedule.gamma_and_prime(host(times));
                let z_t = process::diffuse(f, eps.clone(), per_example(g_t.clone()));
                let eps_hat = BurnBatch(self.score.forward(z_t.0, g_t));
                vlb::diffusion_loss_continuous(eps, eps_hat, per_example(g_prime))
            }
            TimeMode::Discrete(steps) => {
                let (s, t): (Vec<f64>, Vec<f64>) = times.iter().map(|&t| discretize(t, steps)).unzip();
                let g_t = self.schedule.gamma(host(t));
                let g_s = self.schedule.gamma(host(s));
                let z_t = process::diffuse(f, eps.clone(), per_example(g_t.clone()));
                let eps_hat = BurnBatch(self.score.forward(z_t.0, g_t.clone()));
                vlb::diffusion_loss_discrete(eps, eps_hat, per_example(g_s), per_example(g_t), steps)
            }
        };
        VlbTerms { prior, reconstruction, diffusion }
    }

    /// Ancestral sampling with `steps` steps (VDM Appendix A.4): `z_1 ~ N(0, I)`, then
    /// `z_t → z_s` for `t = i/T`, `s = (i−1)/T`, and finally the decoder's mode at `z_0/α_0`.
    /// `on_step` is called after each step (for progress reporting).
    pub fn sample(&self, n: usize, height: usize, width: usize, steps: usize, seed: u64, device: &B::Device, mut on_step: impl FnMut(usize)) -> ImageSet {
        assert!(steps > 0, "sampling needs at least one step");
        let channels = self.score.channels();
        let shape = [n, channels, height, width];
        let d = channels * height * width;
        let mut rng = SplitMix64::new(seed);
        let mut normals = |count: usize| (0..count).map(|_| rng.normal::<f32>()).collect::<Vec<f32>>();
        let times: Vec<f64> = (0..=steps).map(|i| i as f64 / steps as f64).collect();
        let gammas = self.schedule.gamma_values(&times, device);
        let scalar = |g: f64| BurnBatch(Tensor::<B, 4>::from_data(TensorData::new(vec![g as f32], [1, 1, 1, 1]), device));

        let mut z = BurnBatch(tensor4::<B>(normals(n * d), shape, device));
        for i in (1..=steps).rev() {
            let (g_s, g_t) = (gammas[i - 1], gammas[i]);
            let eps_hat = BurnBatch(self.score.forward(z.0.clone(), Tensor::full([n], g_t as f32, device)));
            let noise = BurnBatch(tensor4::<B>(normals(n * d), shape, device));
            z = process::ancestral_step(z, eps_hat, noise, scalar(g_s), scalar(g_t));
            on_step(steps - i + 1);
        }
        let x = z.div(process::alpha(scalar(gammas[0])));
        let values = x.0.into_data().convert::<f32>().to_vec::<f32>().expect("float tensor");
        let pixels = values.iter().map(|&v| vlb::decode_nearest(v, PIXEL_VALUES) as u8).collect();
        ImageSet { pixels, channels, height, width }
    }
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
pub fn evaluate<B: Backend>(model: &Vdm<B>, images: &ImageSet, time: TimeMode, batch_size: usize, seed: u64, device: &B::Device, mut on_batch: impl FnMut(usize)) -> EvalReport {
    let mut rng = SplitMix64::new(seed);
    let d = images.features();
    let (mut totals, mut terms) = (Vec::with_capacity(images.len()), [0.0f64; 3]);
    let indices: Vec<usize> = (0..images.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = images.select(chunk);
        let noise = Noise::draw(&mut rng, chunk.len(), d);
        let vlb = model.vlb_terms(pixels_tensor::<B>(&batch, device), &noise, time).map(|t| vlb::nats_to_bpd(t, d));
        let host = |t: Batch4<B>| t.0.into_data().convert::<f64>().to_vec::<f64>().expect("float tensor");
        let total = host(vlb.total());
        for (acc, term) in terms.iter_mut().zip([vlb.prior, vlb.reconstruction, vlb.diffusion]) {
            *acc += host(term).iter().sum::<f64>();
        }
        totals.extend(total);
        on_batch(chunk.len());
    }
    let n = totals.len() as f64;
    EvalReport { bpd: Estimate::of(&totals), prior: terms[0] / n, reconstruction: terms[1] / n, diffusion: terms[2] / n, per_image: totals }
}
