//! DPM-Solver++ (Lu, Zhou, Bao, Chen, Li & Zhu 2022, "DPM-Solver++: Fast Solver for Guided
//! Sampling of Diffusion Probabilistic Models"): multistep solvers of the probability-flow ODE in
//! `λ = −γ/2`, half the log-SNR, with the data prediction `x̂`.
//!
//! From `t` to `s` (`λ_s > λ_t`, `h = λ_s − λ_t`) the ODE's solution is exactly (their eq. 9)
//!
//! `z_s = (σ_s/σ_t) z_t + α_s ∫_{λ_t}^{λ_s} e^{λ − λ_s} x̂(λ) dλ`;
//!
//! an order-`k` multistep solver replaces `x̂(λ)` by a polynomial through the predictions at the
//! last `k` grid points. Order 1 is DDIM (`η = 0`). Order 2 is their Algorithm 2 ("2M", the
//! midpoint form diffusers' `DPMSolverMultistepScheduler` uses by default). Order 3 ("3M")
//! integrates the quadratic through the last three predictions exactly; the form in diffusers
//! (and DPM-Solver's code) weighs that quadratic's second difference by `φ₃` where the exact
//! integral has `2φ₃`, which left a local error of order `h³` (global order 2) on our test
//! function, against `h⁴` here (see the tests). Every step is a linear combination of `z_t` and
//! the stored predictions; this module computes its weights in `f64`, with `expm1` so that small
//! steps stay exact.

use crate::process::{alpha, sigma};

/// The weights of one multistep update: `z_s = z z_t + Σ_j x_hat[j] x̂_j`, where `x̂_0` is the
/// prediction at `t`, `x̂_1` at the grid point before it, `x̂_2` at the one before that.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Multistep {
    /// The weight of `z_t`, `σ_s/σ_t`.
    pub z: f64,
    /// The weights of the predictions, newest first; unused ones are zero.
    pub x_hat: [f64; 3],
}

/// The DPM-Solver++ update from `γ_t = gammas[0]` to `gamma_s`, of order `gammas.len()` (1 to 3),
/// using the predictions at `gammas` (newest first, so `γ` increases along it). `gamma_s` must
/// be finite and below `γ_t`: a chain that ends at the data (`γ = −∞`) takes `x̂` there instead.
///
/// # Panics
/// If `gammas` holds no value or more than 3.
pub fn dpm_solver_pp(gamma_s: f64, gammas: &[f64]) -> Multistep {
    assert!((1..=3).contains(&gammas.len()), "DPM-Solver++ has orders 1 to 3, not {}", gammas.len());
    let lambda = |gamma: f64| -gamma / 2.0;
    let h = lambda(gamma_s) - lambda(gammas[0]);
    let alpha_s = alpha(gamma_s);
    // α_s ∫ e^{λ − λ_s} (u/h)^k dλ over the step (u = λ − λ_t) for k = 0, 1, 2 is a, b, −2c:
    // a = −α_s φ₁, b = α_s φ₂, c = α_s φ₃ with φ₁ = e^{−h} − 1, φ₂ = φ₁/h + 1, φ₃ = φ₂/h − ½.
    let em1 = libm::expm1(-h); // e^{−h} − 1
    let a = -alpha_s * em1;
    let b = alpha_s * (em1 / h + 1.0);
    let c = alpha_s * ((em1 + h) / (h * h) - 0.5);
    // r_j: the earlier steps' lengths in units of h.
    let r = |j: usize| (lambda(gammas[j]) - lambda(gammas[j + 1])) / h;
    let x_hat = match gammas.len() {
        1 => [a, 0.0, 0.0],
        // D = x̂_0 + (x̂_0 − x̂_1)/(2 r_0): the midpoint form of Algorithm 2.
        2 => {
            let d = a / (2.0 * r(0));
            [a + d, -d, 0.0]
        }
        // The quadratic's Newton form in u = λ − λ_t: x̂_0 + (D_1/h) u + (D_2/h²) u(u + r_0 h), with
        // D₁₀ = (x̂_0 − x̂_1)/r_0, D₁₁ = (x̂_1 − x̂_2)/r_1, D_2 = (D₁₀ − D₁₁)/(r_0 + r_1),
        // D_1 = D₁₀ + r_0 D_2; integrated: a x̂_0 + b D_1 − 2c D_2, collected by prediction below.
        _ => {
            let (r0, r1) = (r(0), r(1));
            let p = b * (1.0 + r0 / (r0 + r1)) - 2.0 * c / (r0 + r1); // the weight of D₁₀
            let q = -b * r0 / (r0 + r1) + 2.0 * c / (r0 + r1); // the weight of D₁₁
            [a + p / r0, -p / r0 + q / r1, -q / r1]
        }
    };
    Multistep { z: sigma(gamma_s) / sigma(gammas[0]), x_hat }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ddim;

    /// Order 1 is DDIM at `η = 0`, written in `ε̂`: with `x̂ = (z − σ_t ε̂)/α_t` both give the
    /// same `z_s`.
    #[test]
    fn order_one_is_ddim() {
        for (gs, gt) in [(-5.0, -3.0), (2.0, 7.5), (-13.0, -12.99)] {
            let step = dpm_solver_pp(gs, &[gt]);
            let ddim = ddim(gs, gt, 0.0);
            let (z, eps) = (0.7, -1.3);
            let x = (z - sigma(gt) * eps) / alpha(gt);
            let ours = step.z * z + step.x_hat[0] * x;
            let theirs = ddim.z * z + ddim.eps_hat * eps;
            assert!((ours - theirs).abs() < 1e-12, "γ {gs} ← {gt}: {ours} vs {theirs}");
        }
    }

    /// Orders 1 and 3 integrate polynomials of degree below the order exactly (the update equals
    /// `α_s ∫ e^{λ − λ_s} x̂(λ) dλ`, here by a fine Simpson rule, on an uneven grid); 2M's
    /// midpoint form constants only. The local error of a step on a smooth `x̂` falls as
    /// `h^{k+1}` for order `k`: the 3M of diffusers' form (`φ₃` for `2φ₃`) would show `h³`.
    #[test]
    fn each_order_integrates_its_polynomials_and_has_its_local_order() {
        let (gs, gammas) = (-4.0, [-3.1, -2.0, -0.4]);
        let lambda = |g: f64| -g / 2.0;
        let integral = |gs: f64, gt: f64, f: &dyn Fn(f64) -> f64| {
            let (ls, lt) = (lambda(gs), lambda(gt));
            let n = 2000;
            let dx = (ls - lt) / n as f64;
            let g = |k: usize| {
                let l = lt + k as f64 * dx;
                (l - ls).exp() * f(l)
            };
            let inner: f64 = (1..n).map(|k| if k % 2 == 1 { 4.0 } else { 2.0 } * g(k)).sum();
            alpha(gs) * dx / 3.0 * (g(0) + inner + g(n))
        };
        let polys: [&dyn Fn(f64) -> f64; 3] = [&|_| 0.8, &|l| 0.3 - 1.7 * l, &|l| 0.2 + 0.5 * l - 0.9 * l * l];
        let update = |gs: f64, gammas: &[f64], f: &dyn Fn(f64) -> f64| {
            let step = dpm_solver_pp(gs, gammas);
            (0..gammas.len()).map(|j| step.x_hat[j] * f(lambda(gammas[j]))).sum::<f64>()
        };
        for (order, exact_degrees) in [(1, 1), (2, 1), (3, 3)] {
            for (degree, f) in polys.iter().enumerate().take(exact_degrees) {
                let (ours, exact) = (update(gs, &gammas[..order], *f), integral(gs, gammas[0], *f));
                assert!((ours - exact).abs() < 1e-10, "order {order}, degree {degree}: {ours} vs {exact}");
            }
            assert_eq!(dpm_solver_pp(gs, &gammas[..order]).z, sigma(gs) / sigma(gammas[0]));
        }
        // Local errors at h and h/2 on x̂ = sin(1.3 λ) + λ²/2, equal steps: ratio 2^{k+1}.
        let f = |l: f64| libm::sin(1.3 * l) + 0.5 * l * l;
        let error = |order: usize, h: f64| {
            let lt = 1.1;
            let gammas: [f64; 3] = core::array::from_fn(|j| -2.0 * (lt - j as f64 * h));
            let gs = -2.0 * (lt + h);
            (update(gs, &gammas[..order], &f) - integral(gs, gammas[0], &f)).abs()
        };
        for order in 1..=3 {
            let slope = libm::log2(error(order, 0.02) / error(order, 0.01));
            assert!((slope - (order + 1) as f64).abs() < 0.15, "order {order}: local error slope {slope}");
        }
    }
}
