//! The ancestral sampler: a draw from `p(z_s | z_t) = q(z_s | z_t, x = x̂(z_t))` with a chosen
//! variance (VDM Appendix A.4; DDPM Algorithm 2).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use vdm_core::process::{self, DdpmVariance};

use super::{linear_step, Denoised, GridPoint, Sampler, StepContext};

/// `z_s = (α_s/α_t)(z_t − σ_t c ε̂) + σ ε` ([`process::ddpm`]), the model's reverse mean `μ_θ`
/// plus noise, with `σ² = β̃ = c σ_s²` (VDM's step, [`process::ancestral`]) or `β = c σ_t²`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ancestral {
    variance: DdpmVariance,
}

impl Ancestral {
    /// The step with reverse variance `variance`.
    pub fn new(variance: DdpmVariance) -> Self {
        Self { variance }
    }
}

impl<B: Backend> Sampler<B> for Ancestral {
    fn step(
        &mut self,
        z: Tensor<B, 4>,
        prediction: Denoised<B>,
        t: GridPoint,
        s: GridPoint,
        context: &mut StepContext<B>,
    ) -> Tensor<B, 4> {
        let eps = prediction.reverse_mean_eps.unwrap_or(prediction.eps);
        linear_step(process::ddpm(s.gamma, t.gamma, self.variance), z, eps, true, context.noise)
    }
}
