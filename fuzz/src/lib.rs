//! Invariants of vdm-core's numerically delicate functions, checked on arbitrary inputs.
//!
//! Each `check_*` function decodes its inputs from raw bytes (so libFuzzer can explore them),
//! maps them into the documented domain, and panics if an invariant fails. The fuzz targets in
//! `fuzz_targets/` are one-line wrappers; the test at the bottom runs every check on a
//! deterministic sweep so `cargo test` exercises them without libFuzzer.

use vdm_core::ddpm::{discretized_gaussian_nll, DiscreteSchedule};
use vdm_core::process::{alpha_sq, ancestral_step, ddim_step, ddpm_step, posterior, sigma_sq, DdpmVariance};
use vdm_core::schedule::{Cosine, MonotoneNet, NoiseSchedule};
use vdm_core::vlb::{prior_kl, reconstruction_nll, PIXEL_VALUES};
use vdm_core::Real;

/// Reads `f64`s from fuzzer bytes, 8 at a time (missing bytes read as zero).
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    /// Wraps the fuzzer's bytes.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn raw(&mut self) -> f64 {
        let mut b = [0u8; 8];
        let n = self.bytes.len().min(8);
        b[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        f64::from_le_bytes(b)
    }

    /// Any finite `f64` (non-finite bit patterns map to 0).
    pub fn finite(&mut self) -> f64 {
        let v = self.raw();
        if v.is_finite() {
            v
        } else {
            0.0
        }
    }

    /// A value in `[lo, hi]`: finite inputs are folded into the interval.
    pub fn within(&mut self, lo: f64, hi: f64) -> f64 {
        let v = self.finite();
        let frac = (v.abs() % 1.0e6) / 1.0e6; // in [0, 1)
        lo + (hi - lo) * frac
    }
}

/// `σ(x) ∈ [0, 1]`, `σ(x) + σ(−x) = 1`, `softplus(x) ≥ max(x, 0)` and finite, for every finite `x`.
pub fn check_logistic(bytes: &[u8]) {
    let x = Input::new(bytes).finite();
    let x32 = x as f32;
    let representable = if x32.is_finite() { Some(f64::from(x32)) } else { None };
    for v in core::iter::once(x).chain(representable) {
        let (s, s_neg) = (Real::sigmoid(v), Real::sigmoid(-v));
        assert!((0.0..=1.0).contains(&s), "sigmoid({v}) = {s}");
        assert!((s + s_neg - 1.0).abs() <= 1e-15, "sigmoid({v}) + sigmoid(−{v}) = {}", s + s_neg);
        let sp = Real::softplus(v);
        assert!(sp.is_finite() && sp >= v.max(0.0), "softplus({v}) = {sp}");
        let sf = Real::sigmoid(v as f32);
        assert!((0.0..=1.0).contains(&sf));
        assert!(Real::softplus(v as f32) >= 0.0);
        assert!((alpha_sq(v) + sigma_sq(v) - 1.0).abs() <= 1e-15);
    }
}

/// The prior KL is finite and non-negative for `f ∈ [−10, 10]`, `γ₁ ∈ [−50, 50]`.
pub fn check_prior_kl(bytes: &[u8]) {
    let mut input = Input::new(bytes);
    let (f, g1) = (input.within(-10.0, 10.0), input.within(-50.0, 50.0));
    let kl = prior_kl(f, g1);
    assert!(kl.is_finite() && kl >= -1e-15, "KL({f}, γ₁ = {g1}) = {kl}");
    let kl32 = prior_kl(f as f32, g1 as f32);
    assert!(kl32.is_finite() && kl32 >= -1e-6, "f32 KL({f}, γ₁ = {g1}) = {kl32}");
}

/// VDM's decoder NLL is finite and non-negative for `z ∈ [−1e3, 1e3]`, `γ₀ ∈ [−30, 30]`.
pub fn check_vdm_decoder(bytes: &[u8]) {
    let mut input = Input::new(bytes);
    let (k, z, g0) = (input.within(0.0, 255.999).floor(), input.within(-1e3, 1e3), input.within(-30.0, 30.0));
    let f = vdm_core::vlb::encode(k, PIXEL_VALUES);
    let nll = reconstruction_nll(f, z, g0, PIXEL_VALUES);
    assert!(nll.is_finite() && nll >= -1e-12, "decoder NLL at k = {k}, z = {z}, γ₀ = {g0}: {nll}");
    let nll32 = reconstruction_nll(f as f32, z as f32, g0 as f32, PIXEL_VALUES);
    assert!(nll32.is_finite() && nll32 >= -1e-4, "f32 decoder NLL at k = {k}, z = {z}, γ₀ = {g0}: {nll32}");
}

/// DDPM's discretised Gaussian NLL lies in `[0, −ln 1e-12]` for any mean and `log σ ∈ [−20, 5]`.
pub fn check_ddpm_decoder(bytes: &[u8]) {
    let mut input = Input::new(bytes);
    let k = input.within(0.0, 255.999).floor();
    let (mean, log_scale) = (input.within(-5.0, 5.0), input.within(-20.0, 5.0));
    let x = vdm_core::ddpm::encode(k);
    let nll = discretized_gaussian_nll(x, mean, log_scale);
    let ceiling = -(1e-12f64).ln() + 1e-9;
    assert!(
        nll.is_finite() && (-1e-12..=ceiling).contains(&nll),
        "DDPM NLL at x = {x}, μ = {mean}, log σ = {log_scale}: {nll}"
    );
}

/// Posterior and every sampling step are finite for `γ_s < γ_t` in `[−30, 30]`, with the
/// posterior variance in `[0, σ_s²]`.
pub fn check_sampling_steps(bytes: &[u8]) {
    let mut input = Input::new(bytes);
    let (x, z, eps_hat, noise) =
        (input.within(-1.0, 1.0), input.within(-50.0, 50.0), input.within(-50.0, 50.0), input.within(-6.0, 6.0));
    let gs = input.within(-30.0, 29.99);
    let gt = gs + input.within(1e-6, 30.0 - gs);
    let q = posterior(x, z, gs, gt);
    assert!(q.mean.is_finite(), "posterior mean at γ = ({gs}, {gt})");
    assert!(q.variance >= 0.0 && q.variance <= sigma_sq(gs) * (1.0 + 1e-12), "posterior variance {}", q.variance);
    for v in [
        ancestral_step(z, eps_hat, noise, gs, gt),
        ddpm_step(z, eps_hat, noise, gs, gt, DdpmVariance::Beta),
        ddpm_step(z, eps_hat, noise, gs, gt, DdpmVariance::BetaTilde),
        ddim_step(z, eps_hat, noise, gs, gt, 0.0),
        ddim_step(z, eps_hat, noise, gs, gt, 1.0),
    ] {
        assert!(v.is_finite(), "a sampling step is not finite at γ = ({gs}, {gt}), z = {z}, ε̂ = {eps_hat}");
    }
}

/// Schedules built from arbitrary parameters are finite and non-decreasing on `[0, 1]`.
pub fn check_schedules(bytes: &[u8]) {
    let mut input = Input::new(bytes);
    let width = 1 + input.within(0.0, 15.99) as usize;
    let net = MonotoneNet {
        l1_w: input.within(-50.0, 50.0),
        l1_b: input.within(-20.0, 20.0),
        l2_w: (0..width).map(|_| input.within(-50.0, 50.0)).collect(),
        l2_b: (0..width).map(|_| input.within(-50.0, 50.0)).collect(),
        l3_w: (0..width).map(|_| input.within(-50.0, 50.0)).collect(),
        endpoints: None,
    };
    let g0 = input.within(-25.0, 10.0);
    let cosine = Cosine::new(g0, g0 + input.within(0.1, 30.0), input.within(1e-4, 0.5));
    let betas: Vec<f64> = (0..2 + width).map(|_| input.within(1e-6, 0.999)).collect();
    let discrete = DiscreteSchedule::from_betas(betas);
    let schedules: [&dyn NoiseSchedule<f64>; 3] = [&net, &cosine, &discrete];
    for s in schedules {
        let mut previous = f64::NEG_INFINITY;
        for i in 0..=64 {
            let t = i as f64 / 64.0;
            let (g, gp) = (s.gamma(t), s.gamma_prime(t));
            assert!(g.is_finite() && gp.is_finite() && gp >= 0.0, "γ({t}) = {g}, γ'({t}) = {gp}");
            assert!(g >= previous - 1e-9 * g.abs().max(1.0), "γ decreases at t = {t}");
            previous = g;
        }
    }
}

#[cfg(test)]
mod tests {
    use vdm_core::rng::SplitMix64;

    /// Every check on 20,000 deterministic random inputs.
    #[test]
    fn checks_hold_on_a_deterministic_sweep() {
        let checks: [(&str, fn(&[u8])); 6] = [
            ("logistic", super::check_logistic),
            ("prior_kl", super::check_prior_kl),
            ("vdm_decoder", super::check_vdm_decoder),
            ("ddpm_decoder", super::check_ddpm_decoder),
            ("sampling_steps", super::check_sampling_steps),
            ("schedules", super::check_schedules),
        ];
        let mut rng = SplitMix64::new(42);
        for (name, check) in checks {
            for _ in 0..20_000 {
                let bytes: Vec<u8> = (0..64).flat_map(|_| rng.next_u64().to_le_bytes()).collect();
                check(&bytes);
            }
            eprintln!("{name}: ok");
        }
    }
}
