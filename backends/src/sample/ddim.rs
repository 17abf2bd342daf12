//! DDIM (Song, Meng & Ermon 2021): the first-order solver of the probability-flow ODE at `η = 0`,
//! the posterior (`β̃`) step at `η = 1`.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use vdm_core::process;

use super::{linear_step, Denoised, GridPoint, Sampler, StepContext};

use crate::error::{Error, Result};

/// DDIM's step (eq. 12) in `γ` form, [`process::ddim`]:
/// `z_s = α_s x̂ + √(σ_s² − σ_η²) ε̂ + σ_η ε`, `σ_η² = η² c σ_s²`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ddim {
    eta: f64,
}

impl Ddim {
    /// DDIM with stochasticity `eta`, which must lie in `[0, 1]`.
    pub fn new(eta: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&eta) {
            return Err(Error::setting("eta", format!("DDIM's η must be between 0 and 1, got {eta}")));
        }
        Ok(Self { eta })
    }
}

impl<B: Backend> Sampler<B> for Ddim {
    fn step(
        &mut self,
        z: Tensor<B, 4>,
        prediction: Denoised<B>,
        t: GridPoint,
        s: GridPoint,
        context: &mut StepContext<B>,
    ) -> Tensor<B, 4> {
        linear_step(process::ddim(s.gamma, t.gamma, self.eta), z, prediction.eps, self.eta > 0.0, context.noise)
    }
}
