//! The deterministic samplers' order of convergence, on Gaussian data whose Bayes-optimal
//! denoiser is known in closed form: the probability-flow ODE then maps `z_1` to `z_0` exactly by
//! `(z_0 − α_0 μ)/s_0 = (z_1 − α_1 μ)/s_1`, `s_t² = α_t² v + σ_t²` (the monotone map between the
//! two Gaussian marginals), and a solver's error against it must fall as `steps^−order`.
//! Computed in `f64` (burn's ndarray backend), so that rounding stays far below the errors.

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use vdm_backends::sample::{chain, Denoised, Denoiser, GridPoint, SamplerKind, Spacing};
use vdm_backends::tensor::BurnBatch;
use vdm_backends::Result;
use vdm_core::analytic::optimal_eps;
use vdm_core::process::{alpha, sigma, DdpmVariance};
use vdm_core::rng::SplitMix64;

type B = NdArray<f64>;

const MEAN: f64 = 0.3;
const VAR: f64 = 0.05;
const GAMMA: [f64; 2] = [-6.0, 6.0];

/// Gaussian data, a grid of `steps` steps uniform in `γ` (and so in `λ = −γ/2`), and the
/// optimal denoiser.
struct Gaussian {
    grid: Vec<GridPoint>,
}

impl Gaussian {
    fn new(steps: usize) -> Self {
        let grid = (0..=steps)
            .map(|i| GAMMA[0] + (GAMMA[1] - GAMMA[0]) * i as f64 / steps as f64)
            .map(|gamma| GridPoint { gamma, net_input: gamma })
            .collect();
        Self { grid }
    }
}

impl Denoiser<B> for Gaussian {
    fn channels(&self) -> usize {
        1
    }

    fn grid(&self, _steps: usize, _spacing: Spacing) -> Result<Vec<GridPoint>> {
        Ok(self.grid.clone())
    }

    fn predict(&self, z: Tensor<B, 4>, at: GridPoint) -> Denoised<B> {
        let device = z.device();
        let full = |v: f64| BurnBatch(Tensor::<B, 4>::full(z.dims(), v, &device));
        let eps = optimal_eps(BurnBatch(z.clone()), full(MEAN), full(VAR), full(at.gamma)).0;
        let x = (z - eps.clone().mul_scalar(sigma(at.gamma))).div_scalar(alpha(at.gamma));
        Denoised { eps, x, reverse_mean_eps: None }
    }

    fn decode(&self, _z: Tensor<B, 4>) -> Vec<u8> {
        unreachable!("the test reads z_0 itself")
    }

    fn ancestral_variance(&self, _steps: usize) -> Result<DdpmVariance> {
        Ok(DdpmVariance::BetaTilde)
    }
}

/// 64 starting values `z_1 ~ N(0, 1)`.
fn start() -> Vec<f64> {
    let mut rng = SplitMix64::new(11);
    (0..64).map(|_| rng.normal::<f64>()).collect()
}

/// `z_0` of `sampler`'s chain of `steps` steps from [`start`].
fn solve(sampler: SamplerKind, steps: usize) -> Vec<f64> {
    let g = Gaussian::new(steps);
    let device = Default::default();
    let z = Tensor::<B, 4>::from_data(TensorData::new(start(), [64, 1, 1, 1]), &device);
    let mut state = sampler.build(&g, steps).unwrap();
    let mut no_noise = || -> Tensor<B, 4> { unreachable!("deterministic samplers draw no noise") };
    chain(&g, state.as_mut(), &g.grid, z, &mut no_noise, &mut || {}).into_data().iter::<f64>().collect()
}

/// The exact solution of the probability-flow ODE at `γ₀` from [`start`] at `γ₁`.
fn exact() -> Vec<f64> {
    let s = |gamma: f64| (alpha(gamma).powi(2) * VAR + sigma(gamma).powi(2)).sqrt();
    let (g0, g1) = (GAMMA[0], GAMMA[1]);
    start().iter().map(|z1| alpha(g0) * MEAN + s(g0) * (z1 - alpha(g1) * MEAN) / s(g1)).collect()
}

/// The largest error against [`exact`].
fn error(sampler: SamplerKind, steps: usize) -> f64 {
    solve(sampler, steps).iter().zip(exact()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}

/// The step counts of the fit. Below 32 steps (`h ≥ 0.19` in `λ`) 2M is pre-asymptotic: at 8
/// steps its `h²` and `h³` terms nearly cancel, so that 8 steps err less than 16 and a fit over
/// 8 … 128 says 1.4; 16 → 32 gains 2.9×, 32 → 64 3.7×, then 3.9× and 3.95×.
const STEPS: [usize; 5] = [32, 64, 128, 256, 512];

/// The least-squares slope of `−log error` against `log steps` over [`STEPS`].
fn order(sampler: SamplerKind) -> f64 {
    let points: Vec<(f64, f64)> = STEPS.iter().map(|&n| ((n as f64).ln(), -error(sampler, n).ln())).collect();
    let (mx, my) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x / 5.0, b + y / 5.0));
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    sxy / sxx
}

/// First-order DPM-Solver++ is DDIM at `η = 0`, step for step.
#[test]
fn first_order_dpm_solver_is_ddim() {
    for steps in [3, 8, 50] {
        let (ours, ddim) =
            (solve(SamplerKind::DpmSolverPp { order: 1 }, steps), solve(SamplerKind::Ddim { eta: 0.0 }, steps));
        let gap = ours.iter().zip(&ddim).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(gap < 1e-12, "{steps} steps: DPM-Solver++(1) and DDIM differ by {gap}");
    }
}

/// The measured orders (`cargo test -p vdm-backends --test solver_order -- --nocapture` prints
/// them): DDIM 0.99, 2M 1.96, 3M 3.24, Heun 2.02. 3M's first step is first order (there are no earlier
/// predictions) and would cap its global order at 2 for small enough steps, but it starts at
/// `γ₁ = 6`, where `x̂` barely moves with `λ` (`α₁ ≈ 0.05`), so that term stays below the
/// third-order one throughout this range. A wrong coefficient anywhere shows as a slope near 1
/// or an error floor.
#[test]
fn each_solver_converges_at_its_order() {
    for (sampler, low, high) in [
        (SamplerKind::Ddim { eta: 0.0 }, 0.95, 1.05),
        (SamplerKind::DpmSolverPp { order: 2 }, 1.9, 2.1),
        (SamplerKind::DpmSolverPp { order: 3 }, 2.9, 3.5),
        (SamplerKind::Heun, 1.9, 2.1),
    ] {
        let p = order(sampler);
        eprintln!(
            "{sampler}: order {p:.3} over {STEPS:?} steps; max error {:.2e} at 8 steps, {:.2e} at 128",
            error(sampler, 8),
            error(sampler, 128)
        );
        assert!((low..=high).contains(&p), "{sampler}: measured order {p}, expected {low}..{high}");
    }
    let at = |order, steps| error(SamplerKind::DpmSolverPp { order }, steps);
    assert!(at(3, 128) < at(2, 128) / 10.0 && at(2, 128) < error(SamplerKind::Ddim { eta: 0.0 }, 128) / 10.0);
}

/// The chain counts every network evaluation, Heun's corrections included, as
/// `SamplerKind::evaluations` says: `2 × steps`, one fewer when the chain ends at the data.
#[test]
fn every_network_evaluation_is_counted() {
    for data_end in [false, true] {
        let mut g = Gaussian::new(6);
        if data_end {
            g.grid[0] = GridPoint::DATA;
        }
        for sampler in [SamplerKind::Ddim { eta: 0.0 }, SamplerKind::DpmSolverPp { order: 3 }, SamplerKind::Heun] {
            let z = Tensor::<B, 4>::from_data(TensorData::new(start(), [64, 1, 1, 1]), &Default::default());
            let mut state = sampler.build(&g, 6).unwrap();
            let mut count = 0;
            let mut no_noise = || -> Tensor<B, 4> { unreachable!() };
            chain(&g, state.as_mut(), &g.grid, z, &mut no_noise, &mut || count += 1);
            let expected = if sampler == SamplerKind::Heun { 12 - usize::from(data_end) } else { 6 };
            assert_eq!((count, sampler.evaluations(&g.grid)), (expected, expected), "{sampler}, data end {data_end}");
        }
    }
}
