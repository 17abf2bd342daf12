//! Heun's second-order method on the probability-flow ODE (Karras, Aittala, Aila & Laine 2022,
//! "Elucidating the Design Space of Diffusion-Based Generative Models", Algorithm 1 without
//! churn).
//!
//! In their variables `x = z/α` and `σ = e^{γ/2}` (the noise-to-signal ratio) the ODE reads
//! `dx/dσ = (x − x̂)/σ = ε̂`. An Euler step is DDIM's (`η = 0`); Heun's method re-evaluates `ε̂`
//! where the Euler step lands and takes the mean of the two slopes.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use vdm_core::process::alpha;

use super::{Denoised, GridPoint, Sampler, StepContext};

/// `x_s = x_t + (σ_s − σ_t)(ε̂_t + ε̂(x_e, s))/2` with the Euler point
/// `x_e = x_t + (σ_s − σ_t) ε̂_t`: two network evaluations per step. (A step to the data end,
/// `σ = 0`, would be the Euler step alone, which lands on `x̂`: [`super::chain`] takes `x̂` there.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heun;

impl<B: Backend> Sampler<B> for Heun {
    fn step(
        &mut self,
        z: Tensor<B, 4>,
        prediction: Denoised<B>,
        t: GridPoint,
        s: GridPoint,
        context: &mut StepContext<B>,
    ) -> Tensor<B, 4> {
        // σ_s − σ_t = e^{γ_s/2} − e^{γ_t/2}, in the form that keeps close points exact.
        let delta = (t.gamma / 2.0).exp() * ((s.gamma - t.gamma) / 2.0).exp_m1();
        let (alpha_t, alpha_s) = (alpha(t.gamma), alpha(s.gamma));
        let x_t = z.div_scalar(alpha_t);
        let euler = x_t.clone() + prediction.eps.clone().mul_scalar(delta);
        let corrected = (context.predict)(euler.mul_scalar(alpha_s), s);
        let slope = (prediction.eps + corrected.eps).mul_scalar(0.5);
        (x_t + slope.mul_scalar(delta)).mul_scalar(alpha_s)
    }
}
