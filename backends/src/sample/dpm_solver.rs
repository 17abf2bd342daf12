//! DPM-Solver++ (Lu et al. 2022), multistep, data prediction: orders 1 to 3 of the
//! probability-flow ODE in log-SNR ([`vdm_core::solver`]); order 1 is DDIM at `η = 0`.

use std::collections::VecDeque;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use vdm_core::solver::dpm_solver_pp;

use super::{Denoised, GridPoint, Sampler, StepContext};

use crate::error::{Error, Result};

/// DPM-Solver++ of order `k`: each step uses the predictions `x̂` at the last `k` grid points
/// (fewer at the start of a chain, where there are fewer).
#[derive(Clone, Debug)]
pub struct DpmSolverPp<B: Backend> {
    order: usize,
    /// `(γ, x̂)` at the last grid points, newest first.
    history: VecDeque<(f64, Tensor<B, 4>)>,
}

impl<B: Backend> DpmSolverPp<B> {
    /// The solver of order `order`, 1 to 3.
    pub fn new(order: usize) -> Result<Self> {
        if !(1..=3).contains(&order) {
            return Err(Error::setting("order", format!("DPM-Solver++ has orders 1 to 3, got {order}")));
        }
        Ok(Self { order, history: VecDeque::with_capacity(order) })
    }
}

impl<B: Backend> Sampler<B> for DpmSolverPp<B> {
    fn step(
        &mut self,
        z: Tensor<B, 4>,
        prediction: Denoised<B>,
        t: GridPoint,
        s: GridPoint,
        _context: &mut StepContext<B>,
    ) -> Tensor<B, 4> {
        self.history.push_front((t.gamma, prediction.x));
        self.history.truncate(self.order);
        let gammas: Vec<f64> = self.history.iter().map(|(gamma, _)| *gamma).collect();
        let weights = dpm_solver_pp(s.gamma, &gammas);
        self.history
            .iter()
            .zip(weights.x_hat)
            .fold(z.mul_scalar(weights.z), |sum, ((_, x), w)| sum + x.clone().mul_scalar(w))
    }
}
