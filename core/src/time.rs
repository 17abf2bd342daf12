//! Sampling the diffusion time `t`.

use crate::real::Real;

/// Low-discrepancy ("antithetic") times for a batch of `n` (VDM Appendix I.1, eq. 52):
/// `t_i = (u₀ + i/n) mod 1`, `u₀ ~ U(0, 1)`.
///
/// Each `t_i` is marginally uniform, but together they cover `[0, 1)` evenly, which lowers the
/// variance of the batch's diffusion-loss estimate.
pub fn antithetic_times<F: Real>(u0: F, n: usize) -> impl Iterator<Item = F> {
    let n_f = F::of(n as f64);
    (0..n).map(move |i| {
        let t = u0 + F::of(i as f64) / n_f;
        if t >= F::one() {
            t - F::one()
        } else {
            t
        }
    })
}

/// The step `(s, t) = ((i − 1)/T, i/T)` of a `T`-step discrete-time model containing `t`
/// (VDM code: `t = ceil(t T)/T`), with `i` clamped to `1..=T` so that `t = 0` maps to the first step.
pub fn discretize<F: Real>(t: F, steps: usize) -> (F, F) {
    assert!(steps > 0, "discretize: a discrete-time model needs at least one step");
    let i = (t * F::of(steps as f64)).ceil().max(F::one()).min(F::of(steps as f64));
    let n = F::of(steps as f64);
    ((i - F::one()) / n, i / n)
}
