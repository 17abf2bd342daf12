//! Property tests: schedules, posterior consistency, f32/f64 agreement.

use proptest::prelude::*;
use vdm_core::ddpm::discretized_gaussian_nll;
use vdm_core::process::{
    alpha, alpha_sq, ancestral_step, ddim_step, ddpm_step, diffuse, posterior, sigma, sigma_sq, DdpmVariance,
};
use vdm_core::schedule::{Cosine, FixedLinear, LearnedScalar, MonotoneNet, NoiseSchedule};
use vdm_core::vlb::{diffusion_loss_continuous, diffusion_loss_discrete, prior_kl, reconstruction_nll, PIXEL_VALUES};
use vdm_core::{Batch, BatchTensor};

fn rel_close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a - b).abs() <= abs + rel * a.abs().max(b.abs())
}

/// Monotone in `t`, `γ'` non-negative and equal to the central difference of `γ`, endpoints as set.
fn check_schedule(s: &impl NoiseSchedule<f64>, endpoints: Option<(f64, f64)>) -> Result<(), TestCaseError> {
    if let Some((g0, g1)) = endpoints {
        prop_assert!(rel_close(s.gamma_0(), g0, 1e-9, 1e-9), "γ(0) = {} ≠ {g0}", s.gamma_0());
        prop_assert!(rel_close(s.gamma_1(), g1, 1e-9, 1e-9), "γ(1) = {} ≠ {g1}", s.gamma_1());
    }
    let h = 1e-6;
    let mut previous = f64::NEG_INFINITY;
    for i in 0..=100 {
        let t = i as f64 / 100.0;
        let g = s.gamma(t);
        prop_assert!(g >= previous, "γ decreases at t = {t}");
        previous = g;
        let gp = s.gamma_prime(t);
        prop_assert!(gp >= 0.0);
        if i > 0 && i < 100 {
            let fd = (s.gamma(t + h) - s.gamma(t - h)) / (2.0 * h);
            prop_assert!(rel_close(gp, fd, 1e-5, 1e-6), "γ'({t}) = {gp}, central difference {fd}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn fixed_linear_schedule(g0 in -20.0..0.0f64, span in 0.1..40.0f64) {
        check_schedule(&FixedLinear::new(g0, g0 + span), Some((g0, g0 + span)))?;
    }

    #[test]
    fn learned_scalar_schedule_is_monotone_for_any_sign(b in -20.0..5.0f64, w in -30.0..30.0f64) {
        check_schedule(&LearnedScalar { b, w }, Some((b, b + w.abs())))?;
    }

    #[test]
    fn cosine_schedule(g0 in -12.0..0.0f64, span in 0.5..25.0f64, s in 0.001..0.1f64) {
        check_schedule(&Cosine::new(g0, g0 + span, s), Some((g0, g0 + span)))?;
    }

    #[test]
    fn monotone_net_schedule(seed in any::<u64>(), width in 1usize..64, g0 in -15.0..0.0f64, span in 1.0..30.0f64) {
        let raw = MonotoneNet::init(width, -13.3, 5.0, seed);
        check_schedule(&raw, None)?;
        check_schedule(&raw.with_endpoints(g0, g0 + span), Some((g0, g0 + span)))?;
    }

    /// `q(z_s | z_t, x)` marginalised over `z_t ~ q(z_t | x)` is `q(z_s | x)`; it matches DDPM's
    /// coefficients; the VDM step with the true ε is a draw from it; DDIM with η = 1 is that step.
    #[test]
    fn posterior_is_consistent(x in -1.0..1.0f64, eps in -3.0..3.0f64, noise in -3.0..3.0f64,
                               gs in -15.0..12.0f64, delta in 0.01..15.0f64) {
        let gt = gs + delta;
        let z_t = diffuse(x, eps, gt);
        let q = posterior(x, z_t, gs, gt);
        // Marginal: the mean is affine in ε with slope k; E over ε gives α_s x, variance k² + σ_Q² = σ_s².
        let slope = posterior(x, z_t + 1.0, gs, gt).mean - q.mean; // ∂μ/∂z_t
        let mean_at_zero_noise = posterior(x, alpha(gt) * x, gs, gt).mean;
        prop_assert!(rel_close(mean_at_zero_noise, alpha(gs) * x, 1e-9, 1e-12));
        let k = slope * sigma(gt);
        prop_assert!(rel_close(k * k + q.variance, sigma_sq(gs), 1e-9, 1e-12));
        // DDPM (Ho et al. eq. 7) with ᾱ = α².
        let (ab_s, ab_t) = (alpha_sq(gs), alpha_sq(gt));
        let beta = 1.0 - ab_t / ab_s;
        let ddpm_mean = beta * ab_s.sqrt() / (1.0 - ab_t) * x + (1.0 - ab_s) * (1.0 - beta).sqrt() / (1.0 - ab_t) * z_t;
        let ddpm_var = beta * (1.0 - ab_s) / (1.0 - ab_t);
        prop_assert!(rel_close(q.mean, ddpm_mean, 1e-6, 1e-9), "mean {} vs DDPM {}", q.mean, ddpm_mean);
        prop_assert!(rel_close(q.variance, ddpm_var, 1e-6, 1e-12), "variance {} vs DDPM {}", q.variance, ddpm_var);
        // Sampling steps with the true noise.
        let step = ancestral_step(z_t, eps, noise, gs, gt);
        prop_assert!(rel_close(step, q.mean + q.variance.sqrt() * noise, 1e-9, 1e-9));
        let tilde = ddpm_step(z_t, eps, noise, gs, gt, DdpmVariance::BetaTilde);
        prop_assert!(rel_close(step, tilde, 1e-12, 1e-12));
        let ddim = ddim_step(z_t, eps, noise, gs, gt, 1.0);
        prop_assert!(rel_close(step, ddim, 1e-7, 1e-9), "VDM step {step} vs DDIM(η=1) {ddim}");
        let beta_step = ddpm_step(z_t, eps, noise, gs, gt, DdpmVariance::Beta);
        prop_assert!(rel_close(beta_step, q.mean + beta.sqrt() * noise, 1e-6, 1e-9));
    }

    /// Every VLB term computed in f32 agrees with f64 to 1e-4 relative (1e-3 nats absolute).
    #[test]
    fn f32_agrees_with_f64(data in prop::collection::vec((-1.0..1.0f64, -3.0..3.0f64, -3.0..3.0f64), 1..8),
                           g0 in -13.0..-2.0f64, g1 in 2.0..10.0f64, gs in -10.0..8.0f64, delta in 0.01..2.0f64) {
        let d = data.len();
        let col = |f: &dyn Fn(&(f64, f64, f64)) -> f64| data.iter().map(f).collect::<Vec<f64>>();
        let (x, eps, eps_hat) = (col(&|v| v.0), col(&|v| v.1), col(&|v| v.2));
        fn terms<F: vdm_core::Real>(x: &[f64], eps: &[f64], eps_hat: &[f64], d: usize, g: [f64; 4]) -> Vec<f64> {
            let b = |v: &[f64]| Batch::new(v.iter().map(|&a| F::of(a)).collect(), 1);
            let pe = |v: f64| Batch::per_example(vec![F::of(v)]);
            let (x, eps, eps_hat) = (b(x), b(eps), b(eps_hat));
            let [g0, g1, gs, gt] = g;
            let z0 = diffuse(x.clone(), eps.clone(), pe(g0));
            let zt = diffuse(x.clone(), eps.clone(), pe(gt));
            let q = posterior(x.clone(), zt.clone(), pe(gs), pe(gt));
            let mut out = vec![
                prior_kl(x.clone(), pe(g1)),
                reconstruction_nll(x.clone(), z0, pe(g0), PIXEL_VALUES),
                diffusion_loss_continuous(eps.clone(), eps_hat.clone(), pe(g1 - g0)),
                diffusion_loss_discrete(eps.clone(), eps_hat.clone(), pe(gs), pe(gt), 100),
                discretized_gaussian_nll(x.clone(), eps_hat.clone().mul_scalar(F::of(0.3)), pe(-3.0)),
            ].into_iter().map(|t| t.as_slice()[0].as_f64()).collect::<Vec<_>>();
            let step = ancestral_step(zt, eps_hat, eps, pe(gs), pe(gt));
            out.extend(q.mean.as_slice().iter().chain(q.variance.as_slice()).chain(step.as_slice()).map(|v| v.as_f64()));
            assert_eq!(out.len(), 5 + 2 * d + 1); // the posterior variance is per example
            out
        }
        let g = [g0, g1, gs, gs + delta];
        let (a, b) = (terms::<f32>(&x, &eps, &eps_hat, d, g), terms::<f64>(&x, &eps, &eps_hat, d, g));
        for (i, (&va, &vb)) in a.iter().zip(&b).enumerate() {
            prop_assert!(rel_close(va, vb, 1e-4, 1e-3), "quantity {i}: f32 {va} vs f64 {vb}");
        }
    }
}
