//! Closed-form ground truth for Gaussian data `x ~ N(μ, diag(s²))`.
//!
//! For this data the optimal denoiser and the expected VLB have closed forms, so the
//! Monte-Carlo machinery of the rest of the crate can be checked against exact numbers, and
//! a model trained on such data can be compared with its exact NLL.
//!
//! With `v_t = α_t² s² + σ_t²`: `q(z_t) = N(α_t μ, v_t)`, the optimal noise prediction is
//! `ε̂*(z_t) = E[ε | z_t] = σ_t (z_t − α_t μ)/v_t`, and its expected error per feature is
//! `E‖ε − ε̂*‖² = s²/(s² + e^{γ_t}) = sigmoid(ln s² − γ_t)`.

use alloc::vec::Vec;

use crate::process::{alpha, alpha_sq, sigma, sigma_sq};
use crate::real::Real;
use crate::schedule::NoiseSchedule;
use crate::tensor::BatchTensor;
use crate::time::discretize;

/// The Bayes-optimal noise prediction `E[ε | z_t] = σ_t (z_t − α_t μ)/(α_t² s² + σ_t²)` for data
/// `N(mean, variance)` (elementwise; `mean` and `variance` broadcast like the data).
pub fn optimal_eps<T: BatchTensor>(z_t: T, mean: T, variance: T, gamma_t: T) -> T {
    let a = alpha(gamma_t.clone());
    let v = alpha_sq(gamma_t.clone()).mul(variance).add(sigma_sq(gamma_t.clone()));
    sigma(gamma_t).mul(z_t.sub(a.mul(mean))).div(v)
}

/// The reconstruction term for *continuous* data with the Gaussian decoder
/// `p(x | z_0) = N(z_0/α_0, e^{γ₀})`: `½ Σ [ln 2π + γ₀ + e^{−γ₀} (x − z_0/α_0)²]`.
pub fn gaussian_reconstruction_nll<T: BatchTensor>(x: T, z_0: T, gamma_0: T) -> T {
    let of = <T::Scalar as Real>::of;
    let residual = x.sub(z_0.div(alpha(gamma_0.clone())));
    let per_feature = residual
        .square()
        .mul(gamma_0.clone().neg().exp())
        .add(gamma_0)
        .add_scalar(of(libm::log(2.0 * core::f64::consts::PI)));
    per_feature.sum_example().mul_scalar(of(0.5))
}

/// Independent Gaussian data `x_d ~ N(mean_d, std_d²)`.
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianData {
    /// Per-feature means `μ_d`.
    pub mean: Vec<f64>,
    /// Per-feature standard deviations `s_d > 0`.
    pub std: Vec<f64>,
}

/// The expected value of each VLB term over data and noise, in nats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExpectedVlb {
    /// `E D_KL(q(z_1|x) ‖ N(0, I))`.
    pub prior: f64,
    /// `E −ln p(x | z_0)` with the Gaussian decoder.
    pub reconstruction: f64,
    /// `E L_T` or `E L_∞` with the optimal denoiser.
    pub diffusion: f64,
}

impl ExpectedVlb {
    /// The expected VLB.
    pub fn total(&self) -> f64 {
        self.prior + self.reconstruction + self.diffusion
    }
}

impl GaussianData {
    /// Data with the given per-feature means and standard deviations.
    pub fn new(mean: Vec<f64>, std: Vec<f64>) -> Self {
        assert_eq!(mean.len(), std.len(), "GaussianData: one mean and one std per feature");
        assert!(std.iter().all(|&s| s > 0.0), "GaussianData: every std must be positive");
        Self { mean, std }
    }

    /// Number of features `D`.
    pub fn features(&self) -> usize {
        self.mean.len()
    }

    /// The exact NLL of one example, `−ln N(x; μ, diag(s²))`.
    pub fn nll(&self, x: &[f64]) -> f64 {
        self.mean
            .iter()
            .zip(&self.std)
            .zip(x)
            .map(|((&m, &s), &x)| {
                0.5 * libm::log(2.0 * core::f64::consts::PI * s * s) + 0.5 * ((x - m) / s) * ((x - m) / s)
            })
            .sum()
    }

    /// The exact expected NLL (differential entropy) `Σ ½ ln(2πe s_d²)`: the value every
    /// expected VLB bounds from above.
    pub fn entropy(&self) -> f64 {
        let two_pi_e = 2.0 * core::f64::consts::PI * core::f64::consts::E;
        self.std.iter().map(|&s| 0.5 * libm::log(two_pi_e * s * s)).sum()
    }

    /// `E‖ε − ε̂*(z_t)‖² = Σ_d sigmoid(ln s_d² − γ)`: the optimal denoiser's expected error.
    pub fn optimal_mse(&self, gamma: f64) -> f64 {
        self.std.iter().map(|&s| Real::sigmoid(libm::log(s * s) - gamma)).sum()
    }

    fn prior_and_reconstruction(&self, gamma_0: f64, gamma_1: f64) -> (f64, f64) {
        let a2 = Real::sigmoid(-gamma_1);
        let prior = self
            .mean
            .iter()
            .zip(&self.std)
            .map(|(&m, &s)| 0.5 * (a2 * (m * m + s * s) - a2 + Real::softplus(-gamma_1)))
            .sum();
        let log_2pi = libm::log(2.0 * core::f64::consts::PI);
        (prior, 0.5 * self.features() as f64 * (log_2pi + gamma_0 + 1.0))
    }

    /// The expected continuous-time VLB with the optimal denoiser, which depends on the schedule
    /// only through its endpoints (VDM eq. 20):
    /// `E L_∞ = ½ ∫_{γ₀}^{γ₁} Σ_d sigmoid(ln s_d² − γ) dγ = ½ Σ_d [softplus(ln s_d² − γ₀) − softplus(ln s_d² − γ₁)]`.
    pub fn expected_vlb_continuous(&self, gamma_0: f64, gamma_1: f64) -> ExpectedVlb {
        let (prior, reconstruction) = self.prior_and_reconstruction(gamma_0, gamma_1);
        let diffusion = self
            .std
            .iter()
            .map(|&s| {
                let l = libm::log(s * s);
                0.5 * (Real::softplus(l - gamma_0) - Real::softplus(l - gamma_1))
            })
            .sum();
        ExpectedVlb { prior, reconstruction, diffusion }
    }

    /// The expected `T`-step VLB with the optimal denoiser:
    /// `E L_T = Σ_{i=1}^{T} ½ expm1(γ(i/T) − γ((i−1)/T)) E‖ε − ε̂*(z_{i/T})‖²`.
    pub fn expected_vlb_discrete(&self, schedule: &impl NoiseSchedule<f64>, steps: usize) -> ExpectedVlb {
        let (prior, reconstruction) = self.prior_and_reconstruction(schedule.gamma_0(), schedule.gamma_1());
        let diffusion = (1..=steps)
            .map(|i| {
                let (s, t) = discretize(i as f64 / steps as f64, steps);
                let (g_s, g_t) = (schedule.gamma(s), schedule.gamma(t));
                0.5 * libm::expm1(g_t - g_s) * self.optimal_mse(g_t)
            })
            .sum();
        ExpectedVlb { prior, reconstruction, diffusion }
    }
}
