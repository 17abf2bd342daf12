//! DDPM (Ho, Jain & Abbeel 2020): β schedules, their `γ` form, `L_simple` and the discretised
//! Gaussian decoder.
//!
//! A DDPM with `T` steps has latents `x_1 … x_T` with `ᾱ_i = Π_{j≤i} (1 − β_j)`. In VDM's
//! notation `α_i² = ᾱ_i` and `γ_i = ln((1 − ᾱ_i)/ᾱ_i)`; latent `i` sits at time
//! `t_i = (i − 1)/(T − 1)`, so `x_1` (the decoder's input) is VDM's `z_0` and `x_T` is `z_1`.
//! The sampling steps of DDPM are [`crate::process::ddpm_step`].

use alloc::vec::Vec;

use crate::real::Real;
use crate::schedule::NoiseSchedule;
use crate::tensor::BatchTensor;

/// A DDPM β schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BetaSchedule {
    /// `β_i` linearly spaced from `start` to `end` (DDPM: `1e-4 … 0.02`, `T = 1000`).
    Linear {
        /// `β_1`.
        start: f64,
        /// `β_T`.
        end: f64,
    },
    /// Nichol & Dhariwal (2021) eq. 17: `ᾱ(t) = f(t)/f(0)`, `f(t) = cos²(((t/T) + s)/(1 + s) · π/2)`,
    /// `β_i = min(1 − ᾱ(i)/ᾱ(i−1), max_beta)`; `t/T` is computed in floating point.
    Cosine {
        /// Offset `s` (0.008).
        s: f64,
        /// Clip on `β` (0.999).
        max_beta: f64,
    },
}

impl BetaSchedule {
    /// DDPM's linear schedule `1e-4 … 0.02`.
    pub const DDPM_LINEAR: Self = Self::Linear { start: 1e-4, end: 0.02 };
    /// Nichol & Dhariwal's cosine schedule with `s = 0.008`, `β ≤ 0.999`.
    pub const COSINE: Self = Self::Cosine { s: 0.008, max_beta: 0.999 };

    /// `β_1 … β_T` in `f64`.
    pub fn betas(&self, steps: usize) -> Vec<f64> {
        assert!(steps > 0, "BetaSchedule::betas: need at least one step");
        match *self {
            Self::Linear { start, end } => {
                let last = (steps - 1).max(1) as f64;
                (0..steps).map(|i| start + (end - start) * i as f64 / last).collect()
            }
            Self::Cosine { s, max_beta } => {
                let f = |i: usize| {
                    let t = i as f64 / steps as f64; // floating point, never integer division
                    let c = libm::cos((t + s) / (1.0 + s) * core::f64::consts::FRAC_PI_2);
                    c * c
                };
                (1..=steps).map(|i| (1.0 - f(i) / f(i - 1)).min(max_beta)).collect()
            }
        }
    }
}

/// A discrete `T`-step schedule in `γ` form, `γ_i = ln(1 − ᾱ_i) − ln ᾱ_i`, as a [`NoiseSchedule`]
/// that interpolates `γ` linearly between latents `t_i = (i − 1)/(T − 1)`.
///
/// `ln ᾱ_i = Σ ln1p(−β_j)` and `ln(1 − ᾱ_i) = ln(−expm1(ln ᾱ_i))` keep `γ` accurate at both ends.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscreteSchedule {
    betas: Vec<f64>,
    log_alpha_bar: Vec<f64>,
    gammas: Vec<f64>,
}

impl DiscreteSchedule {
    /// The schedule of `betas` (`β_1 … β_T`, each in `(0, 1)`, `T ≥ 2`).
    pub fn from_betas(betas: Vec<f64>) -> Self {
        assert!(betas.len() >= 2, "DiscreteSchedule: need at least two steps");
        assert!(betas.iter().all(|&b| b > 0.0 && b < 1.0), "DiscreteSchedule: every beta must lie in (0, 1)");
        let mut log_ab = 0.0;
        let log_alpha_bar: Vec<f64> = betas
            .iter()
            .map(|&b| {
                log_ab += libm::log1p(-b);
                log_ab
            })
            .collect();
        let gammas = log_alpha_bar.iter().map(|&l| libm::log(-libm::expm1(l)) - l).collect();
        Self { betas, log_alpha_bar, gammas }
    }

    /// `schedule.betas(steps)` in `γ` form.
    pub fn new(schedule: BetaSchedule, steps: usize) -> Self {
        Self::from_betas(schedule.betas(steps))
    }

    /// Number of latents `T`.
    pub fn steps(&self) -> usize {
        self.betas.len()
    }
    /// `β_i`, `i ∈ 1..=T`.
    pub fn beta(&self, i: usize) -> f64 {
        self.betas[i - 1]
    }
    /// `ᾱ_i`, `i ∈ 1..=T`.
    pub fn alpha_bar(&self, i: usize) -> f64 {
        libm::exp(self.log_alpha_bar[i - 1])
    }
    /// `γ_i = −log SNR` of latent `i ∈ 1..=T`.
    pub fn gamma_at(&self, i: usize) -> f64 {
        self.gammas[i - 1]
    }
    /// The time `t_i = (i − 1)/(T − 1)` of latent `i`.
    pub fn time_of(&self, i: usize) -> f64 {
        (i - 1) as f64 / (self.steps() - 1) as f64
    }

    /// The segment `k` (between latents `k+1` and `k+2`) containing `t`, and `t`'s position in it.
    fn segment(&self, t: f64) -> (usize, f64) {
        let span = (self.steps() - 1) as f64;
        let x = (t * span).clamp(0.0, span);
        let k = (libm::floor(x) as usize).min(self.steps() - 2);
        (k, x - k as f64)
    }
}

impl<F: Real> NoiseSchedule<F> for DiscreteSchedule {
    fn gamma(&self, t: F) -> F {
        let (k, frac) = self.segment(t.as_f64());
        F::of(self.gammas[k] + (self.gammas[k + 1] - self.gammas[k]) * frac)
    }
    fn gamma_prime(&self, t: F) -> F {
        let (k, _) = self.segment(t.as_f64());
        F::of((self.gammas[k + 1] - self.gammas[k]) * (self.steps() - 1) as f64)
    }
}

/// DDPM's simple loss (DDPM eq. 14) per example: `‖ε − ε̂‖² / D`, the mean over features.
pub fn l_simple<T: BatchTensor>(eps: T, eps_hat: T) -> T {
    let d = eps.features();
    eps.sub(eps_hat).square().sum_example().mul_scalar(<T::Scalar as Real>::of(1.0 / d as f64))
}

/// DDPM's data encoding `x/127.5 − 1` of 8-bit pixel values: the grid `{−1, −1 + 2/255, …, 1}`.
pub fn encode<T: BatchTensor>(pixels: T) -> T {
    pixels.mul_scalar(<T::Scalar as Real>::of(1.0 / 127.5)).add_scalar(<T::Scalar as Real>::of(-1.0))
}

/// DDPM's discretised Gaussian decoder (DDPM §3.3, eq. 13), per example:
/// `−ln p(x | μ, e^{log_scale})` with bins `[x − 1/255, x + 1/255]` and open-ended bins at `x = ±1`.
///
/// `x` is on DDPM's grid ([`encode`]). Bin masses are differences of `erfc`, taken in the tail
/// that avoids cancellation (bins with centre below the mean are reflected), and floored at
/// `1e-12` as in DDPM's code, so one pixel contributes at most `27.6` nats.
pub fn discretized_gaussian_nll<T: BatchTensor>(x: T, mean: T, log_scale: T) -> T {
    let of = <T::Scalar as Real>::of;
    let half_bin = of(1.0 / 255.0);
    let inv_scale_sqrt2 = log_scale.neg().exp().mul_scalar(of(core::f64::consts::FRAC_1_SQRT_2));
    let centred = x.clone().sub(mean);
    let a = centred.clone().add_scalar(-half_bin).mul(inv_scale_sqrt2.clone());
    let b = centred.add_scalar(half_bin).mul(inv_scale_sqrt2);
    // Reflect bins whose centre lies below the mean so both edges sit in the upper tail.
    let centre = a.clone().add(b.clone());
    let lo = centre.clone().where_lt(of(0.0), b.clone().neg(), a.clone());
    let hi = centre.where_lt(of(0.0), a.clone().neg(), b.clone());
    let twice_mid = lo.erfc().sub(hi.erfc());
    let twice_lowest = b.neg().erfc(); // 2 Φ(b): the bin (−∞, −1 + 1/255]
    let twice_highest = a.erfc(); // 2 (1 − Φ(a)): the bin [1 − 1/255, ∞)
    let twice_mass = x.clone().where_lt(of(-0.999), twice_lowest, x.where_lt(of(0.999), twice_mid, twice_highest));
    twice_mass.mul_scalar(of(0.5)).clamp_min(of(1e-12)).ln().neg().sum_example()
}

/// The standard normal CDF `Φ` that the decoder's bin masses (`L_0`) are computed with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NormalCdf {
    /// `Φ` itself, through `erfc`: [`discretized_gaussian_nll`] (vdm-rs's default).
    #[default]
    Exact,
    /// The approximation `Φ(u) ≈ ½(1 + tanh(√(2/π)(u + 0.044715 u³)))` of DDPM's and
    /// improved-diffusion's code (`approx_standard_normal_cdf`), to reproduce their published
    /// bounds: [`discretized_gaussian_nll_tanh`].
    Tanh,
}

/// [`discretized_gaussian_nll`] with `cdf`.
pub fn discretized_gaussian_nll_with<T: BatchTensor>(x: T, mean: T, log_scale: T, cdf: NormalCdf) -> T {
    match cdf {
        NormalCdf::Exact => discretized_gaussian_nll(x, mean, log_scale),
        NormalCdf::Tanh => discretized_gaussian_nll_tanh(x, mean, log_scale),
    }
}

/// DDPM's decoder as DDPM's code computes it (`discretized_gaussian_log_likelihood` in
/// `diffusion_utils_2.py`): bin masses from the tanh approximation of `Φ` ([`NormalCdf::Tanh`]),
/// `Φ(b) − Φ(a)` subtracted directly, open-ended bins at `x = ±1`, floored at `1e-12`.
///
/// `½(1 + tanh v)` is written as `sigmoid(2v)`, the same function, which keeps the far tails
/// from rounding to zero before the floor.
pub fn discretized_gaussian_nll_tanh<T: BatchTensor>(x: T, mean: T, log_scale: T) -> T {
    let of = <T::Scalar as Real>::of;
    let half_bin = of(1.0 / 255.0);
    let inv_scale = log_scale.neg().exp();
    let centred = x.clone().sub(mean);
    let plus = centred.clone().add_scalar(half_bin).mul(inv_scale.clone());
    let minus = centred.add_scalar(-half_bin).mul(inv_scale);
    // 2v = 2√(2/π)(u + 0.044715 u³), so that Φ(u) ≈ sigmoid(2v).
    let twice_v = |u: T| {
        u.clone()
            .add(u.clone().square().mul(u).mul_scalar(of(0.044715)))
            .mul_scalar(of(2.0 * libm::sqrt(2.0 / core::f64::consts::PI)))
    };
    let cdf_plus = twice_v(plus).sigmoid();
    let v_minus = twice_v(minus);
    let (cdf_minus, above_minus) = (v_minus.clone().sigmoid(), v_minus.neg().sigmoid());
    let mid = cdf_plus.clone().sub(cdf_minus);
    let mass = x.clone().where_lt(of(-0.999), cdf_plus, x.where_lt(of(0.999), mid, above_minus));
    mass.clamp_min(of(1e-12)).ln().neg().sum_example()
}

/// `KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²))` per example, summed over features, for diagonal Gaussians
/// with per-example variances: `½ Σ [r − 1 − ln r + (μ_q − μ_p)²/σ_p²]`, `r = σ_q²/σ_p²`.
///
/// This is DDPM's `L_{t−1}` (eq. 5) between the posterior `q(x_{t−1} | x_t, x_0)` and a reverse
/// step with fixed variance; `mean_diff` is `μ_q − μ_p`. With `σ_p² = σ_q²` (DDPM's `β̃`) the
/// first three terms vanish exactly.
pub fn gaussian_kl<T: BatchTensor>(mean_diff: T, var_q: T, var_p: T) -> T {
    let of = <T::Scalar as Real>::of;
    let r = var_q.div(var_p.clone());
    let per_feature = r.clone().add_scalar(of(-1.0)).sub(r.ln()).add(mean_diff.square().div(var_p));
    per_feature.sum_example().mul_scalar(of(0.5))
}

/// A sample's pixel values: `x ∈ [−1, 1]` to the nearest of the 256 levels `k/127.5 − 1` (the
/// inverse of [`encode`]), values outside clamped.
///
/// DDPM's own image dumps truncate instead (`uint8` cast of `(x + 1) · 127.5`), which moves every
/// value down by half a level on average and maps only `x = 1` itself to 255. Rounding picks the
/// level whose bin of the decoder (`[x − 1/255, x + 1/255]`, DDPM eq. 13) holds `x`, so a sample is
/// read out on the same grid the bound is computed on; the two differ by at most one level.
pub fn decode_nearest<F: Real>(x: F) -> u8 {
    let level = libm::round((x.as_f64() + 1.0) * 127.5);
    if level.is_nan() {
        return 0;
    }
    level.clamp(0.0, 255.0) as u8
}
