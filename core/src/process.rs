//! The Gaussian diffusion process in `γ` form: marginals, posterior and sampling steps.
//!
//! Notation (VDM §3): `α_t² = sigmoid(−γ_t)`, `σ_t² = sigmoid(γ_t)`, `SNR_t = e^{−γ_t}`;
//! `s < t` are two times, and `c = 1 − SNR_t/SNR_s = −expm1(γ_s − γ_t) ∈ [0, 1)`.
//!
//! Every function takes `γ` as a tensor broadcastable against the data (per-example or full),
//! so one code path serves per-example training times and shared sampling times. Scalars
//! (`f32`, `f64`) are tensors too, so all of this also works on plain numbers.

use crate::tensor::BatchTensor;
use num_traits::Zero;

/// `α² = sigmoid(−γ)` (VDM eq. 4).
pub fn alpha_sq<T: BatchTensor>(gamma: T) -> T {
    gamma.neg().sigmoid()
}

/// `σ² = sigmoid(γ)` (VDM eq. 3).
pub fn sigma_sq<T: BatchTensor>(gamma: T) -> T {
    gamma.sigmoid()
}

/// `α = √sigmoid(−γ)`.
pub fn alpha<T: BatchTensor>(gamma: T) -> T {
    alpha_sq(gamma).sqrt()
}

/// `σ = √sigmoid(γ)`.
pub fn sigma<T: BatchTensor>(gamma: T) -> T {
    sigma_sq(gamma).sqrt()
}

/// `SNR = α²/σ² = e^{−γ}` (VDM eq. 2).
pub fn snr<T: BatchTensor>(gamma: T) -> T {
    gamma.neg().exp()
}

/// `c = 1 − SNR_t/SNR_s = −expm1(γ_s − γ_t)`, the fraction of `z_s`'s signal-to-noise lost by `t`.
pub fn snr_loss_fraction<T: BatchTensor>(gamma_s: T, gamma_t: T) -> T {
    gamma_s.sub(gamma_t).expm1().neg()
}

/// Forward sample `z_t = α_t x + σ_t ε` of `q(z_t | x) = N(α_t x, σ_t² I)` (VDM eq. 1).
pub fn diffuse<T: BatchTensor>(x: T, eps: T, gamma: T) -> T {
    alpha(gamma.clone()).mul(x).add(sigma(gamma).mul(eps))
}

/// The noise-prediction parametrisation's data estimate `x̂ = (z_t − σ_t ε̂)/α_t` (VDM eq. 12).
pub fn predict_x<T: BatchTensor>(z_t: T, eps_hat: T, gamma_t: T) -> T {
    z_t.sub(sigma(gamma_t.clone()).mul(eps_hat)).div(alpha(gamma_t))
}

/// What a network's output estimates; every target is read back as the noise prediction `ε̂`, so
/// the loss `‖ε − ε̂‖²` has the same units whichever is predicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The noise `ε` (VDM, DDPM).
    Eps,
    /// The data `x`: `ε̂ = (z_t − α_t x̂)/σ_t`.
    X,
    /// The velocity `v = α_t ε − σ_t x` (Salimans & Ho 2022, §4): `ε̂ = σ_t z_t + α_t v̂`, since
    /// `σ_t z_t + α_t v = (σ_t² + α_t²) ε`.
    V,
}

impl Target {
    /// The noise prediction `ε̂` from the network's `output` at `z_t`, `γ_t`.
    pub fn eps<T: BatchTensor>(self, output: T, z_t: T, gamma_t: T) -> T {
        match self {
            Self::Eps => output,
            Self::X => z_t.sub(alpha(gamma_t.clone()).mul(output)).div(sigma(gamma_t)),
            Self::V => sigma(gamma_t.clone()).mul(z_t).add(alpha(gamma_t).mul(output)),
        }
    }
}

/// A diagonal Gaussian `N(mean, variance)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Gaussian<T> {
    /// The mean.
    pub mean: T,
    /// The variance (per element or broadcastable).
    pub variance: T,
}

/// The posterior `q(z_s | z_t, x) = N(μ_Q, σ_Q² I)` for `s < t` (VDM eq. 6–7, DDPM eq. 6–7):
///
/// `μ_Q = α_s ((1 − c) z_t/α_t + c x)`, `σ_Q² = σ_s² c`, with `1 − c = e^{γ_s − γ_t}`.
///
/// This equals VDM's `α_{t|s} σ_s²/σ_t² z_t + α_s σ²_{t|s}/σ_t² x` and DDPM's
/// `β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t)`, written so that no term cancels.
pub fn posterior<T: BatchTensor>(x: T, z_t: T, gamma_s: T, gamma_t: T) -> Gaussian<T> {
    let c = snr_loss_fraction(gamma_s.clone(), gamma_t.clone());
    let keep = gamma_s.clone().sub(gamma_t.clone()).exp(); // 1 − c
    let alpha_s = alpha(gamma_s.clone());
    let mean = alpha_s.mul(keep.mul(z_t).div(alpha(gamma_t)).add(c.clone().mul(x)));
    Gaussian { mean, variance: sigma_sq(gamma_s).mul(c) }
}

/// One reverse step `z_t → z_s` as a linear combination `z_s = a z_t + b ε̂ + c ε`, `ε ~ N(0, I)`.
///
/// Every sampler here (VDM's ancestral step, DDPM's, DDIM's) has this form. The coefficients can
/// be tensors (per-example times) or plain `f64`s computed once per step on the host, where a
/// step of a `T`-step sampler needs `γ_t − γ_s ≈ (γ₁ − γ₀)/T` at full precision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step<T> {
    /// `a`, the weight of `z_t`.
    pub z: T,
    /// `b`, the weight of the noise prediction `ε̂`.
    pub eps_hat: T,
    /// `c`, the standard deviation of the fresh noise.
    pub noise: T,
}

impl<T: BatchTensor> Step<T> {
    /// `a z_t + b ε̂ + c ε`.
    pub fn apply(self, z_t: T, eps_hat: T, noise: T) -> T {
        self.z.mul(z_t).add(self.eps_hat.mul(eps_hat)).add(self.noise.mul(noise))
    }
}

/// `p(z_s | z_t) = q(z_s | z_t, x = x̂(z_t))` with variance `variance`: the posterior mean at the
/// noise prediction, `(α_s/α_t)(z_t − σ_t c ε̂)`, plus `√variance ε`.
fn posterior_step<T: BatchTensor>(gamma_s: T, gamma_t: T, c: T, variance: T) -> Step<T> {
    let ratio = alpha(gamma_s).div(alpha(gamma_t.clone()));
    let eps_hat = ratio.clone().mul(sigma(gamma_t)).mul(c).neg();
    Step { z: ratio, eps_hat, noise: variance.sqrt() }
}

/// VDM's ancestral step (VDM Appendix A.4): `z_s = (α_s/α_t)(z_t − σ_t c ε̂) + √(σ_s² c) ε`,
/// a draw from `p(z_s | z_t) = q(z_s | z_t, x = x̂(z_t))`.
pub fn ancestral<T: BatchTensor>(gamma_s: T, gamma_t: T) -> Step<T> {
    let c = snr_loss_fraction(gamma_s.clone(), gamma_t.clone());
    let variance = sigma_sq(gamma_s.clone()).mul(c.clone());
    posterior_step(gamma_s, gamma_t, c, variance)
}

/// [`ancestral`] applied: `z_s` from `z_t`, the prediction `ε̂` and fresh noise.
pub fn ancestral_step<T: BatchTensor>(z_t: T, eps_hat: T, noise: T, gamma_s: T, gamma_t: T) -> T {
    ancestral(gamma_s, gamma_t).apply(z_t, eps_hat, noise)
}

/// The reverse-process variance of a DDPM step (DDPM §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DdpmVariance {
    /// `σ² = β_t = σ²_{t|s} = c σ_t²` (the upper bound of Ho et al.).
    Beta,
    /// `σ² = β̃_t = c σ_s²`, the true posterior variance (the lower bound of Ho et al.).
    BetaTilde,
}

/// DDPM's ancestral step (DDPM Algorithm 2) in `γ` form:
///
/// `z_s = (1/√(1−β_t))(z_t − β_t/√(1−ᾱ_t) ε̂) + σ ε`, which is `(α_s/α_t)(z_t − σ_t c ε̂) + σ ε`
/// because `β_t = 1 − α_t²/α_s² = c σ_t²`; `σ²` is chosen by `variance`.
pub fn ddpm<T: BatchTensor>(gamma_s: T, gamma_t: T, variance: DdpmVariance) -> Step<T> {
    let c = snr_loss_fraction(gamma_s.clone(), gamma_t.clone());
    let var = match variance {
        DdpmVariance::Beta => sigma_sq(gamma_t.clone()).mul(c.clone()),
        DdpmVariance::BetaTilde => sigma_sq(gamma_s.clone()).mul(c.clone()),
    };
    posterior_step(gamma_s, gamma_t, c, var)
}

/// [`ddpm`] applied.
pub fn ddpm_step<T: BatchTensor>(z_t: T, eps_hat: T, noise: T, gamma_s: T, gamma_t: T, variance: DdpmVariance) -> T {
    ddpm(gamma_s, gamma_t, variance).apply(z_t, eps_hat, noise)
}

/// The DDIM step (Song, Meng & Ermon 2021, eq. 12) with stochasticity `eta ∈ [0, 1]`:
///
/// `z_s = α_s x̂ + √(σ_s² − σ_η²) ε̂ + σ_η ε`, `x̂ = (z_t − σ_t ε̂)/α_t`, `σ_η² = η² σ_s² c`
/// (`η = 0`: deterministic, `η = 1`: DDPM's `β̃` step), i.e. `a = α_s/α_t`,
/// `b = √(σ_s² − σ_η²) − α_s σ_t/α_t`, `c = σ_η`.
pub fn ddim<T: BatchTensor>(gamma_s: T, gamma_t: T, eta: T::Scalar) -> Step<T> {
    let c = snr_loss_fraction(gamma_s.clone(), gamma_t.clone());
    let sigma_s_sq = sigma_sq(gamma_s.clone());
    let var_eta = sigma_s_sq.clone().mul(c).mul_scalar(eta * eta);
    // σ_s² − σ_η² = σ_s² (1 − η² c) ≥ 0 for η ≤ 1.
    let direction = sigma_s_sq.sub(var_eta.clone()).clamp_min(T::Scalar::zero()).sqrt();
    let ratio = alpha(gamma_s).div(alpha(gamma_t.clone()));
    let eps_hat = direction.sub(ratio.clone().mul(sigma(gamma_t)));
    Step { z: ratio, eps_hat, noise: var_eta.sqrt() }
}

/// [`ddim`] applied.
pub fn ddim_step<T: BatchTensor>(z_t: T, eps_hat: T, noise: T, gamma_s: T, gamma_t: T, eta: T::Scalar) -> T {
    ddim(gamma_s, gamma_t, eta).apply(z_t, eps_hat, noise)
}
