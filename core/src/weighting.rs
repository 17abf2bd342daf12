//! Weightings of the diffusion loss over log-SNR (Kingma & Gao 2023, "Understanding diffusion
//! objectives as the ELBO with simple data augmentation", §2–4).
//!
//! With `λ = −γ = log SNR`, every common diffusion objective is one integral over the noise level,
//! differing only in its weight `w(λ)`:
//!
//! `L_w(x) = ½ ∫_{λ_min}^{λ_max} w(λ) E_ε ‖ε − ε̂(z_λ; λ)‖² dλ`,
//!
//! and `w = 1` is VDM's continuous-time diffusion loss (VDM eq. 17 after the change of variables
//! `λ = −γ(t)`). Sampled at `t ~ U(0, 1)` on a schedule `γ(t)`, `dλ = −γ'(t) dt`, so the one-sample
//! estimate is `½ w(−γ_t) γ'(t) ‖ε − ε̂‖²`: the VDM loss's weight `γ'(t)` times `w(−γ_t)`
//! ([`Weighting::weight`]), unbiased for every schedule. In continuous time `L_w` depends on the
//! schedule only through its endpoints, so the schedule's shape only changes the estimator's
//! variance, as for the bound itself (VDM §5.2).
//!
//! Every weight is floored at [`MIN_WEIGHT`], so that it stays a normal `f32` and the bound's share
//! of each example can be recovered from the weighted loss by dividing by `w`.

/// The weight `w(λ)` of the diffusion loss at `λ = log SNR`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Weighting {
    /// `w = 1`: the variational bound (VDM eq. 17).
    Elbo,
    /// DDPM's `L_simple = E_{t~U{1..T}} ‖ε − ε̂‖²` in continuous time: `w(λ) = p(λ)`, the density of
    /// `λ` when `t ~ U(0, 1)` on DDPM's linear-β process (Kingma & Gao 2023 §4; the VP SDE of
    /// Song et al. 2021 with `β(t) = β₀ + (β₁ − β₀) t`, `β₀ = 0.1`, `β₁ = 20`, DDPM's `T β_t`).
    ///
    /// With `B(t) = ∫₀ᵗ β = β₀ t + ½(β₁ − β₀) t²`, `ᾱ = e^{−B}` and `λ = −ln expm1(B)`, so
    /// `B = softplus(−λ)` and `p(λ) = −dt/dλ = σ(−λ)/β(t(λ))` with
    /// `β(t(λ)) = √(β₀² + 2(β₁ − β₀) softplus(−λ))`. `∫ p dλ = 1` over DDPM's range
    /// `λ ∈ (λ(1), ∞) = (−10.05, ∞)`; below it the same formula continues the process past `t = 1`.
    EpsMse,
    /// `w(λ) = σ(b − λ)`, a monotone weighting (Kingma & Gao 2023 §5, "sigmoid"): close to the
    /// bound at high noise (`λ < b`), decaying as `e^{b − λ}` at low noise.
    Sigmoid {
        /// The shift `b`.
        bias: f64,
    },
    /// EDM's loss (Karras et al. 2022, Table 1; Kingma & Gao 2023 Appendix D):
    /// `ln σ_EDM ~ N(P_mean, P_std²)` with `σ_EDM² = e^{−λ}`, weighted by
    /// `(σ_EDM² + σ_data²)/(σ_EDM σ_data)²` in `x` units, which is
    /// `w(λ) = N(λ; −2 P_mean, (2 P_std)²) (e^{−λ} + σ_data²)/σ_data²` in `ε` units.
    Edm {
        /// `P_mean` (EDM: −1.2).
        p_mean: f64,
        /// `P_std` (EDM: 1.2).
        p_std: f64,
        /// `σ_data` (EDM: 0.5).
        sigma_data: f64,
    },
}

/// The smallest weight: far below any weight that matters (`σ(b − λ)` reaches it at `λ = b + 69`),
/// and a normal `f32`.
pub const MIN_WEIGHT: f64 = 1e-30;

/// `β₀` of DDPM's linear-β process in continuous time (`T β_1 = 1000 · 10⁻⁴`).
pub const DDPM_BETA_0: f64 = 0.1;
/// `β₁` of DDPM's linear-β process in continuous time (`T β_T = 1000 · 0.02`).
pub const DDPM_BETA_1: f64 = 20.0;

impl Weighting {
    /// `w(λ)` at `λ = log SNR = −γ`, in `f64`, at least [`MIN_WEIGHT`].
    pub fn weight(&self, lambda: f64) -> f64 {
        let w = match *self {
            Self::Elbo => 1.0,
            Self::EpsMse => {
                let integral = softplus(-lambda); // B(t(λ))
                let beta = libm::sqrt(DDPM_BETA_0 * DDPM_BETA_0 + 2.0 * (DDPM_BETA_1 - DDPM_BETA_0) * integral);
                sigmoid(-lambda) / beta
            }
            Self::Sigmoid { bias } => sigmoid(bias - lambda),
            Self::Edm { p_mean, p_std, sigma_data } => {
                let (mean, std) = (-2.0 * p_mean, 2.0 * p_std);
                let u = (lambda - mean) / std;
                let density = libm::exp(-0.5 * u * u) / (std * libm::sqrt(2.0 * core::f64::consts::PI));
                let var = sigma_data * sigma_data;
                density * (libm::exp(-lambda) + var) / var
            }
        };
        w.max(MIN_WEIGHT)
    }

    /// Whether this is the bound itself (`w = 1`).
    pub fn is_elbo(&self) -> bool {
        matches!(self, Self::Elbo)
    }
}

/// `σ(x) = 1/(1 + e^{−x})` without overflow.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + libm::exp(-x))
    } else {
        let e = libm::exp(x);
        e / (1.0 + e)
    }
}

/// `ln(1 + e^x)` without overflow.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + libm::log1p(libm::exp(-libm::fabs(x)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trapezoid rule of `f` over `[a, b]` with `n` intervals.
    fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64, n: usize) -> f64 {
        let h = (b - a) / n as f64;
        (0..=n).map(|i| f(a + i as f64 * h) * if i == 0 || i == n { 0.5 } else { 1.0 }).sum::<f64>() * h
    }

    #[test]
    fn eps_mse_is_the_density_of_lambda_under_ddpm_time() {
        // λ(t) on DDPM's continuous linear-β process, written from ᾱ(t) directly.
        let lambda = |t: f64| {
            let b = DDPM_BETA_0 * t + 0.5 * (DDPM_BETA_1 - DDPM_BETA_0) * t * t;
            -libm::log(libm::expm1(b))
        };
        // ∫ p(λ) dλ between λ(t₂) and λ(t₁) is t₂ − t₁.
        for (t1, t2) in [(0.001, 1.0), (0.1, 0.3), (0.5, 0.9)] {
            let mass = integrate(|l| Weighting::EpsMse.weight(l), lambda(t2), lambda(t1), 200_000);
            assert!((mass - (t2 - t1)).abs() < 1e-6, "mass {mass} on [{t1}, {t2}]");
        }
    }

    #[test]
    fn sigmoid_and_edm_weights_match_their_definitions() {
        let w = Weighting::Sigmoid { bias: 2.0 };
        assert!((w.weight(2.0) - 0.5).abs() < 1e-15);
        assert_eq!(w.weight(-800.0), 1.0);
        assert_eq!(w.weight(800.0), MIN_WEIGHT);
        // EDM: E_{ln σ ~ N(P_mean, P_std²)} g(σ) equals ∫ N(λ; −2P_mean, 4P_std²) g(e^{−λ/2}) dλ.
        let (p_mean, p_std, sigma_data) = (-1.2, 1.2, 0.5);
        let edm = Weighting::Edm { p_mean, p_std, sigma_data };
        let x_weight = |s: f64| (s * s + sigma_data * sigma_data) / (s * sigma_data).powi(2);
        // ε units: ‖ε − ε̂‖² = ‖x − x̂‖²/σ_EDM², so the ε weight is σ_EDM² times the x weight.
        let in_ln_sigma = integrate(
            |ls: f64| {
                let s = libm::exp(ls);
                let density =
                    libm::exp(-0.5 * ((ls - p_mean) / p_std).powi(2)) / (p_std * (2.0 * core::f64::consts::PI).sqrt());
                density * x_weight(s) * s * s * libm::cos(ls)
            },
            -15.0,
            15.0,
            200_000,
        );
        let in_lambda = integrate(|l| edm.weight(l) * libm::cos(-l / 2.0), -30.0, 30.0, 200_000);
        assert!((in_ln_sigma - in_lambda).abs() < 1e-8, "{in_ln_sigma} vs {in_lambda}");
    }
}
