//! The terms of VDM's variational lower bound, per example, in nats (VDM §3–4, eq. 11–17).
//!
//! `−log p(x) ≤ L(x) = D_KL(q(z_1|x) ‖ p(z_1))  +  E[−log p(x|z_0)]  +  L_T(x)`
//!
//! The three terms are [`prior_kl`], [`reconstruction_nll`] and [`diffusion_loss_discrete`]
//! (finite `T`) or [`diffusion_loss_continuous`] (`T → ∞`). Every function returns one value per
//! example (summed over features); [`nats_to_bpd`] converts to bits per dimension.

use crate::process::{alpha, alpha_sq};
use crate::real::Real;
use crate::tensor::BatchTensor;

/// Pixel values per channel in 8-bit images.
pub const PIXEL_VALUES: usize = 256;

/// VDM's data encoding `f = 2 (x + ½)/V − 1` of pixel values `x ∈ {0, …, V−1}`: bin centres in `(−1, 1)`.
pub fn encode<T: BatchTensor>(pixels: T, vocab: usize) -> T {
    let scale = <T::Scalar as Real>::of(2.0 / vocab as f64);
    pixels.add_scalar(<T::Scalar as Real>::of(0.5)).mul_scalar(scale).add_scalar(<T::Scalar as Real>::of(-1.0))
}

/// The pixel value whose encoding is nearest to `value`: the mode of VDM's decoder
/// `p(x | z_0)` at `value = z_0/α_0`, used as the final sampling step.
pub fn decode_nearest<F: Real>(value: F, vocab: usize) -> u32 {
    let k = libm::round((value.as_f64() + 1.0) * vocab as f64 / 2.0 - 0.5);
    k.clamp(0.0, (vocab - 1) as f64) as u32
}

/// The prior term `D_KL(q(z_1|x) ‖ N(0, I))` (VDM eq. 11 and its code):
///
/// `½ Σ [α₁² f² + σ₁² − ln σ₁² − 1] = ½ Σ [α₁² f² − α₁² + softplus(−γ₁)]`,
///
/// the second form avoiding the cancellation of `σ₁² − ln σ₁² − 1` as `σ₁² → 1`.
pub fn prior_kl<T: BatchTensor>(f: T, gamma_1: T) -> T {
    let a2 = alpha_sq(gamma_1.clone());
    let per_feature = a2.clone().mul(f.square()).sub(a2).add(gamma_1.neg().softplus());
    per_feature.sum_example().mul_scalar(<T::Scalar as Real>::of(0.5))
}

/// The diffusion loss with a per-example weight `w`: `½ w ‖ε − ε̂‖²`. The weight `γ'(t)` gives
/// [`diffusion_loss_continuous`], `T expm1(γ_t − γ_s)` gives [`diffusion_loss_discrete`].
pub fn diffusion_loss<T: BatchTensor>(eps: T, eps_hat: T, weight: T) -> T {
    let sq = eps.sub(eps_hat).square().sum_example();
    sq.mul(weight).mul_scalar(<T::Scalar as Real>::of(0.5))
}

/// The continuous-time diffusion loss (VDM eq. 17), one-sample estimate at time `t`:
///
/// `L_∞ ≈ ½ γ'(t) ‖ε − ε̂(z_t; t)‖²`, `t ~ U(0, 1)`.
pub fn diffusion_loss_continuous<T: BatchTensor>(eps: T, eps_hat: T, gamma_prime: T) -> T {
    diffusion_loss(eps, eps_hat, gamma_prime)
}

/// The discrete-time diffusion loss with `T` steps (VDM eq. 13 in ε form), one-sample estimate:
///
/// `L_T ≈ ½ T expm1(γ_t − γ_s) ‖ε − ε̂(z_t; t)‖²`, `t = i/T`, `s = (i−1)/T`, `i ~ U{1..T}`.
///
/// `expm1(γ_t − γ_s) = SNR_s/SNR_t − 1`; see [`crate::time::discretize`] for `(s, t)`.
pub fn diffusion_loss_discrete<T: BatchTensor>(eps: T, eps_hat: T, gamma_s: T, gamma_t: T, steps: usize) -> T {
    let weight = gamma_t.sub(gamma_s).expm1().mul_scalar(<T::Scalar as Real>::of(steps as f64));
    diffusion_loss(eps, eps_hat, weight)
}

/// The reconstruction term `−ln p(x | z_0)` with VDM's discretised decoder over `vocab` values,
/// per example: [`decoder_nll`] at `z = z_0/α_0` and precision `e^{−γ₀}`, summed over features.
pub fn reconstruction_nll<T: BatchTensor>(f: T, z_0: T, gamma_0: T, vocab: usize) -> T {
    let z = z_0.div(alpha(gamma_0.clone()));
    decoder_nll(f, z, gamma_0.neg().exp(), vocab).sum_example()
}

/// VDM's discretised decoder, per feature: `−ln p(x | z) = logsumexp_k ℓ_k − ℓ_x`,
/// `ℓ_k = −½ P (z − f_k)²`, with `z = z_0/α_0` and precision `P = e^{−γ₀}` (VDM code `logprob`):
/// a softmax over the `vocab` bin centres `f_k` ([`encode`]) of a Gaussian around `z` with
/// variance `σ_0²/α_0² = e^{γ₀}`. `f` is the encoded data.
///
/// The log-sum-exp is taken relative to the largest logit, which belongs to the bin `k*` nearest
/// to `z` and is known in closed form. With `δ = z − f_{k*}` and `Δ_k = f_{k*} − f_k`,
/// `ℓ_k − ℓ_{k*} = −½ P Δ_k (2δ + Δ_k) ≤ 0`, so
///
/// `−ln p(x | z) = ½ P Δ_x (2δ + Δ_x) + ln Σ_k e^{ℓ_k − ℓ_{k*}}`,
///
/// a sum of terms in `[0, 1]` that includes `1` for `k*`: nothing overflows, the result is never
/// negative, and no term is a difference of two large logits. `Δ_k = (k* − k)·2/V` is exact in
/// binary floating point, so the value is accurate to rounding in `f32` for every `γ₀`.
pub fn decoder_nll<T: BatchTensor>(f: T, z: T, precision: T, vocab: usize) -> T {
    assert!(vocab >= 2, "decoder_nll: vocab must be at least 2");
    let of = <T::Scalar as Real>::of;
    // k* = clamp(⌊(z + 1) V/2⌋, 0, V − 1), the nearest bin (bin k covers [f_k − 1/V, f_k + 1/V)).
    let nearest = z
        .clone()
        .add_scalar(of(1.0))
        .mul_scalar(of(vocab as f64 / 2.0))
        .floor()
        .clamp_min(of(0.0))
        .clamp_max(of((vocab - 1) as f64));
    let centre = encode(nearest.clone(), vocab);
    let two_delta = z.sub(centre.clone()).mul_scalar(of(2.0));
    let half_precision = precision.mul_scalar(of(0.5));
    // ½ P Δ (2δ + Δ) = ℓ_{k*} − ℓ_k.
    let logit_gap = |delta: T| delta.clone().mul(two_delta.clone().add(delta)).mul(half_precision.clone());
    let step = of(2.0 / vocab as f64);
    let mut sum = two_delta.full_like(of(0.0));
    for k in 0..vocab {
        let delta_k = nearest.clone().add_scalar(of(-(k as f64))).mul_scalar(step);
        sum = sum.add(logit_gap(delta_k).neg().exp());
    }
    logit_gap(centre.sub(f)).add(sum.ln())
}

/// Converts per-example nats to bits per dimension: `nats / (D ln 2)`.
pub fn nats_to_bpd<T: BatchTensor>(nats: T, features: usize) -> T {
    nats.mul_scalar(<T::Scalar as Real>::of(1.0 / (features as f64 * core::f64::consts::LN_2)))
}

/// The three VLB terms of a batch, each per example.
#[derive(Clone, Debug, PartialEq)]
pub struct VlbTerms<T> {
    /// `D_KL(q(z_1|x) ‖ p(z_1))`.
    pub prior: T,
    /// `−ln p(x | z_0)`.
    pub reconstruction: T,
    /// `L_T` or `L_∞`.
    pub diffusion: T,
}

impl<T: BatchTensor> VlbTerms<T> {
    /// The VLB `prior + reconstruction + diffusion`, per example.
    pub fn total(&self) -> T {
        self.prior.clone().add(self.reconstruction.clone()).add(self.diffusion.clone())
    }

    /// Applies `f` to every term (e.g. [`nats_to_bpd`]).
    pub fn map(self, f: impl Fn(T) -> T) -> Self {
        Self { prior: f(self.prior), reconstruction: f(self.reconstruction), diffusion: f(self.diffusion) }
    }
}
