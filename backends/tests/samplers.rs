//! The samplers and the one sampling loop, checked where a closed form exists.
//!
//! For Gaussian data `x ~ N(μ, s²)` the optimal denoiser is linear in `z_t`
//! (`vdm_core::analytic::optimal_eps`), so every reverse chain maps Gaussians to Gaussians and the
//! mean and variance of its output follow by a short recursion, written here again from the
//! papers' own formulas (DDPM eq. 6–7 and Algorithm 2, DDIM eq. 12 and 16), not from vdm-core's.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::{linear_alpha_bars, tiny_run, tiny_unet, vdm_of};
use vdm_backends::config::ModelConfig;
use vdm_backends::config::{DdpmConfig, Variance};
use vdm_backends::sample::{
    chain, sample, Denoised, Denoiser, GridPoint, SampleOptions, SamplerKind, Spacing, StepContext,
};
use vdm_backends::tensor::BurnBatch;
use vdm_backends::Cpu;
use vdm_backends::Result;
use vdm_core::analytic::optimal_eps;
use vdm_core::process::DdpmVariance;
use vdm_core::rng::SplitMix64;

type B = Cpu;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `ᾱ = α² = sigmoid(−γ)` (`1` at the data end).
fn alpha_bar(gamma: f64) -> f64 {
    sigmoid(-gamma)
}

/// Gaussian data `N(mean, var)` in every value, its Bayes-optimal denoiser and a fixed grid.
struct Gaussian {
    mean: f64,
    var: f64,
    grid: Vec<GridPoint>,
    variance: DdpmVariance,
}

impl Gaussian {
    /// `steps` steps uniform in `γ` from `γ₀` to `γ₁`; with `data_end`, the first point is the
    /// data (`γ = −∞`) as in a DDPM's chain.
    fn new(steps: usize, data_end: bool, variance: DdpmVariance) -> Self {
        let (g0, g1) = (-8.0, 8.0);
        let mut grid: Vec<GridPoint> = (0..=steps)
            .map(|i| g0 + (g1 - g0) * i as f64 / steps as f64)
            .map(|gamma| GridPoint { gamma, net_input: gamma })
            .collect();
        if data_end {
            grid[0] = GridPoint::DATA;
        }
        Self { mean: 0.3, var: 0.25, grid, variance }
    }
}

impl Denoiser<B> for Gaussian {
    fn channels(&self) -> usize {
        1
    }

    fn grid(&self, steps: usize, _spacing: Spacing) -> Result<Vec<GridPoint>> {
        assert_eq!(steps + 1, self.grid.len());
        Ok(self.grid.clone())
    }

    fn predict(&self, z: Tensor<B, 4>, at: GridPoint) -> Denoised<B> {
        let device = z.device();
        let full = |v: f64| BurnBatch(Tensor::<B, 4>::full(z.dims(), v, &device));
        let eps = optimal_eps(BurnBatch(z.clone()), full(self.mean), full(self.var), full(at.gamma)).0;
        let (a, s) = (alpha_bar(at.gamma).sqrt(), sigmoid(at.gamma).sqrt());
        let x = (z - eps.clone().mul_scalar(s)).div_scalar(a);
        Denoised { eps, x, reverse_mean_eps: None }
    }

    fn decode(&self, z: Tensor<B, 4>) -> Vec<u8> {
        z.into_data().iter::<f32>().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect()
    }

    fn ancestral_variance(&self, _steps: usize) -> Result<DdpmVariance> {
        Ok(self.variance)
    }
}

/// The chain's output mean and variance, exactly, by the papers' formulas in `ᾱ` notation.
///
/// With `v_t = ᾱ_t s² + 1 − ᾱ_t`, the optimal `ε̂ = √(1−ᾱ_t)(z − √ᾱ_t μ)/v_t` and
/// `x̂ = (z − √(1−ᾱ_t) ε̂)/√ᾱ_t` are affine in `z`, and so is each step:
/// - ancestral (DDPM Algorithm 2 with eq. 7's posterior mean): `z_s = μ̃(z_t, x̂) + σ ε`,
///   `μ̃ = √ᾱ_s β_t/(1−ᾱ_t) x̂ + √(ᾱ_t/ᾱ_s)(1−ᾱ_s)/(1−ᾱ_t) z_t`, `β_t = 1 − ᾱ_t/ᾱ_s`,
///   `σ² = β_t` or `β̃_t = β_t (1−ᾱ_s)/(1−ᾱ_t)`;
/// - DDIM (eq. 12, 16): `z_s = √ᾱ_s x̂ + √(1−ᾱ_s−σ²) ε̂ + σ ε`, `σ = η √β̃_t`.
///
/// The chain starts at `N(0, 1)` and ends at `x̂` (data end) or at `z_0/√ᾱ_0`.
fn exact_moments(g: &Gaussian, sampler: SamplerKind) -> (f64, f64) {
    let (mut m, mut v) = (0.0, 1.0);
    for i in (1..g.grid.len()).rev() {
        let (at, as_) = (alpha_bar(g.grid[i].gamma), alpha_bar(g.grid[i - 1].gamma));
        let vt = at * g.var + 1.0 - at;
        // ε̂ = k z + k0; x̂ = p z + p0.
        let (k, k0) = ((1.0 - at).sqrt() / vt, -(1.0 - at).sqrt() * at.sqrt() * g.mean / vt);
        let (p, p0) = ((1.0 - (1.0 - at).sqrt() * k) / at.sqrt(), -(1.0 - at).sqrt() * k0 / at.sqrt());
        if g.grid[i - 1].is_data() {
            return (p * m + p0, p * p * v);
        }
        let beta = 1.0 - at / as_;
        let beta_tilde = beta * (1.0 - as_) / (1.0 - at);
        // z_s = A z + A0 + σ ε.
        let (a, a0, noise_var) = match sampler {
            SamplerKind::Ancestral => {
                let (cx, cz) = (as_.sqrt() * beta / (1.0 - at), (at / as_).sqrt() * (1.0 - as_) / (1.0 - at));
                let var = match g.variance {
                    DdpmVariance::Beta => beta,
                    DdpmVariance::BetaTilde => beta_tilde,
                };
                (cx * p + cz, cx * p0, var)
            }
            SamplerKind::Ddim { eta } => {
                let var = eta * eta * beta_tilde;
                let d = (1.0 - as_ - var).sqrt();
                (as_.sqrt() * p + d * k, as_.sqrt() * p0 + d * k0, var)
            }
            other => unreachable!("{other} is checked by tests/solver_order.rs"),
        };
        m = a * m + a0;
        v = a * a * v + noise_var;
    }
    let a0 = alpha_bar(g.grid[0].gamma).sqrt();
    (m / a0, v / (a0 * a0))
}

/// `n` chains of 16×16 values of `g`, run by the library's [`chain`]: the output's mean and variance.
fn sampled_moments(g: &Gaussian, sampler: SamplerKind, n: usize, seed: u64) -> (f64, f64) {
    let device = Default::default();
    let steps = g.grid.len() - 1;
    let shape = [n, 1, 16, 16];
    let mut rng = SplitMix64::new(seed);
    let mut normals = || {
        Tensor::<B, 4>::from_data(
            TensorData::new((0..n * 256).map(|_| rng.normal::<f32>()).collect::<Vec<f32>>(), shape),
            &device,
        )
    };
    let start = normals();
    let mut sampler_state = sampler.build(g, steps).unwrap();
    let z = chain(g, sampler_state.as_mut(), &g.grid, start, &mut normals, &mut || {});
    // A chain that ends at z_0 rather than at the data is read out as z_0/α_0, as VDM decodes.
    let z = if g.grid[0].is_data() { z } else { z.div_scalar(alpha_bar(g.grid[0].gamma).sqrt()) };
    let x: Vec<f64> = z.into_data().iter::<f64>().collect();
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (x.len() - 1) as f64;
    (mean, var)
}

const SAMPLERS: [(SamplerKind, DdpmVariance); 5] = [
    (SamplerKind::Ancestral, DdpmVariance::BetaTilde),
    (SamplerKind::Ancestral, DdpmVariance::Beta),
    (SamplerKind::Ddim { eta: 0.0 }, DdpmVariance::BetaTilde),
    (SamplerKind::Ddim { eta: 0.5 }, DdpmVariance::BetaTilde),
    (SamplerKind::Ddim { eta: 1.0 }, DdpmVariance::BetaTilde),
];

/// With many steps every chain draws the data's distribution: mean and variance of 16,384 values
/// within 5 standard errors plus the chain's own discretisation bias (under 1% at 1000 steps).
#[test]
fn every_sampler_draws_the_data_distribution_of_gaussian_data() {
    for data_end in [false, true] {
        for (sampler, variance) in SAMPLERS {
            let g = Gaussian::new(1000, data_end, variance);
            let (mean, var) = sampled_moments(&g, sampler, 64, 1);
            let n = 64.0 * 256.0;
            let (mean_se, var_se) = ((g.var / n).sqrt(), g.var * (2.0 / n).sqrt());
            let what = format!("{sampler} ({variance:?}), data end {data_end}: mean {mean:.4} var {var:.4}");
            assert!((mean - g.mean).abs() < 5.0 * mean_se + 0.004, "{what}; the data's mean is {}", g.mean);
            assert!((var - g.var).abs() < 5.0 * var_se + 0.01 * g.var, "{what}; the data's variance is {}", g.var);
        }
    }
}

/// With 10 steps the chains are far from the data (variance 0.12–0.17 against 0.25) and differ
/// from each other; each must match its own exact moments, so a wrong coefficient in any step
/// (a swapped β/β̃, DDIM's direction term, the noise's scale) shows.
#[test]
fn each_sampler_has_the_exact_moments_of_its_chain_with_few_steps() {
    for data_end in [false, true] {
        for (sampler, variance) in SAMPLERS {
            let g = Gaussian::new(10, data_end, variance);
            let (mean, var) = sampled_moments(&g, sampler, 64, 2);
            let (exact_mean, exact_var) = exact_moments(&g, sampler);
            let n = 64.0 * 256.0;
            let what = format!("{sampler} ({variance:?}), data end {data_end}: sampled {mean:.4}/{var:.4}, exact {exact_mean:.4}/{exact_var:.4}");
            assert!((mean - exact_mean).abs() < 5.0 * (exact_var / n).sqrt() + 1e-5, "{what}");
            assert!((var - exact_var).abs() < 5.0 * exact_var * (2.0 / n).sqrt() + 1e-5, "{what}");
        }
    }
    // The two ancestral variances and DDIM's η = 0 and ½ are different chains: the check can tell them apart.
    let moments = |s, v| exact_moments(&Gaussian::new(10, true, v), s).1;
    let vars = SAMPLERS[..4].iter().map(|&(s, v)| moments(s, v)).collect::<Vec<f64>>();
    for i in 0..vars.len() {
        for j in 0..i {
            assert!((vars[i] - vars[j]).abs() > 0.005, "chains {i} and {j} have variances {} and {}", vars[i], vars[j]);
        }
    }
}

/// One DDIM step against eq. 12 by value, at `η = 0` and `η = ½`, with a given noise.
#[test]
fn a_ddim_step_is_equation_12() {
    let device = Default::default();
    let g = Gaussian::new(4, false, DdpmVariance::BetaTilde);
    let (t, s) = (g.grid[3], g.grid[2]);
    let values: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin() * 1.3).collect();
    let z = Tensor::<B, 4>::from_data(TensorData::new(values.clone(), [2, 1, 4, 4]), &device);
    let noise: Vec<f32> = (0..32).map(|i| (i as f32 * 0.91).cos()).collect();
    for eta in [0.0, 0.5] {
        let mut sampler = SamplerKind::Ddim { eta }.build(&g, 4).unwrap();
        let prediction = g.predict(z.clone(), t);
        let (eps, x): (Vec<f64>, Vec<f64>) = (
            prediction.eps.clone().into_data().iter::<f64>().collect(),
            prediction.x.clone().into_data().iter::<f64>().collect(),
        );
        let mut draw = || Tensor::<B, 4>::from_data(TensorData::new(noise.clone(), [2, 1, 4, 4]), &device);
        let mut predict = |z, at| g.predict(z, at);
        let mut context = StepContext { predict: &mut predict, noise: &mut draw };
        let out: Vec<f64> = sampler.step(z.clone(), prediction, t, s, &mut context).into_data().iter::<f64>().collect();
        let (at, as_) = (alpha_bar(t.gamma), alpha_bar(s.gamma));
        let sigma = eta * ((1.0 - as_) / (1.0 - at)).sqrt() * (1.0 - at / as_).sqrt();
        for i in 0..32 {
            let expected =
                as_.sqrt() * x[i] + (1.0 - as_ - sigma * sigma).sqrt() * eps[i] + sigma * f64::from(noise[i]);
            assert!(
                (out[i] - expected).abs() < 2e-5 * (1.0 + expected.abs()),
                "η = {eta}, value {i}: {} against eq. 12's {expected}",
                out[i]
            );
        }
    }
}

/// A tiny DDPM with `T = 20`.
fn tiny_ddpm() -> vdm_backends::model::ddpm::Ddpm<B> {
    DdpmConfig { unet: tiny_unet(), time_steps: 20, variance: Variance::Beta, ..DdpmConfig::default() }
        .build([1, 4, 4], &Default::default())
        .unwrap()
}

/// A DDPM's strided grid is DDIM's (and diffusers' "leading" spacing): `τ_k = k T/S` 0-based,
/// with `ᾱ_τ` from the βs themselves; VDM's is `γ(i/T)` of its schedule.
#[test]
fn the_grids_are_ddim_strided_times_and_vdm_uniform_times() {
    let model = tiny_ddpm();
    let alpha_bars = linear_alpha_bars(20);
    for steps in [1, 4, 5, 10, 20] {
        let grid = model.grid(steps, Spacing::Time).unwrap();
        assert_eq!(grid.len(), steps + 1);
        assert!(grid[0].is_data());
        for (k, point) in grid[1..].iter().enumerate() {
            let index = k * (20 / steps);
            assert_eq!(point.net_input, index as f64, "{steps} steps, point {k}");
            let gamma = ((1.0 - alpha_bars[index]) / alpha_bars[index]).ln();
            assert!(
                (point.gamma - gamma).abs() < 1e-9 * gamma.abs().max(1.0),
                "{steps} steps, point {k}: γ {} against {gamma}",
                point.gamma
            );
        }
    }
    let device = Default::default();
    let mut run = tiny_run(1);
    let vdm = vdm_of(&mut run).init::<B>(1, &device);
    let host = vdm.schedule.to_host();
    for (i, point) in vdm.grid(8, Spacing::Time).unwrap().iter().enumerate() {
        use vdm_core::schedule::NoiseSchedule;
        assert_eq!((point.gamma, point.net_input), (host.gamma(i as f64 / 8.0), host.gamma(i as f64 / 8.0)));
    }
}

/// The other spacings: log-SNR points uniform in `γ`, Karras points uniform in `e^{γ/14}`, both
/// from the data-side end to the start; a DDPM takes the steps nearest to them (every point within
/// half a step's `γ` of its target), moving points apart where two would share a step.
#[test]
fn log_snr_and_karras_grids_are_spaced_as_defined() {
    let (low, high) = (-9.0, 7.0);
    let uniform = |v: &[f64]| v.windows(3).all(|w| ((w[2] - w[1]) - (w[1] - w[0])).abs() < 1e-12);
    let log_snr = Spacing::LogSnr.gammas(low, high, 9).unwrap();
    assert!(uniform(&log_snr) && log_snr[0] == low && log_snr[8] == high, "{log_snr:?}");
    let karras = Spacing::Karras.gammas(low, high, 9).unwrap();
    let roots: Vec<f64> = karras.iter().map(|g| (g / 14.0).exp()).collect();
    assert!(uniform(&roots) && karras[0] == low && karras[8] == high, "{karras:?}");
    assert!(karras.windows(2).all(|w| w[0] < w[1]) && karras[1] - karras[0] > log_snr[1] - log_snr[0]);
    assert_eq!(Spacing::Time.gammas(low, high, 9), None);

    let model = tiny_ddpm();
    for spacing in [Spacing::LogSnr, Spacing::Karras] {
        let grid = model.grid(6, spacing).unwrap();
        let targets = spacing.gammas(grid[1].gamma, grid[6].gamma, 6).unwrap();
        assert_eq!((grid[1].net_input, grid[6].net_input), (0.0, 19.0), "{spacing}: steps 1 and T");
        for (point, target) in grid[1..].iter().zip(targets) {
            let t = point.net_input as usize + 1;
            let half_step = |u: usize| (model.process.gamma(u) - model.process.gamma(u - 1)) / 2.0;
            let slack = half_step(t.max(2)).max(half_step((t + 1).min(20)));
            assert!(
                (point.gamma - target).abs() <= slack + 1e-12,
                "{spacing}: step {t}, γ {} vs {target}",
                point.gamma
            );
        }
        // 20 points on T = 20 steps: every step once, where the targets would share some.
        let all: Vec<f64> = model.grid(20, spacing).unwrap()[1..].iter().map(|p| p.net_input).collect();
        assert_eq!(all, (0..20).map(f64::from).collect::<Vec<_>>(), "{spacing}");
        let nineteen = model.grid(19, spacing).unwrap();
        assert!(nineteen[1..].windows(2).all(|w| w[0].net_input < w[1].net_input), "{spacing}: {nineteen:?}");
    }
    let device = Default::default();
    let vdm = vdm_of(&mut tiny_run(1)).init::<B>(1, &device);
    let host = vdm.schedule.to_host();
    let gammas: Vec<f64> = vdm.grid(8, Spacing::LogSnr).unwrap().iter().map(|p| p.gamma).collect();
    use vdm_core::schedule::NoiseSchedule;
    assert_eq!(gammas, Spacing::LogSnr.gammas(host.gamma_0(), host.gamma_1(), 9).unwrap());
}

/// `steps = 0` is refused by every sampler on either family (it once gave all-zero images), and so
/// are more steps than a DDPM has, an ancestral DDPM chain of fewer than `T` steps and `η ∉ [0, 1]`.
#[test]
fn samplers_refuse_zero_steps_and_impossible_settings() {
    let device = Default::default();
    let mut run = tiny_run(1);
    let vdm = vdm_of(&mut run).init::<B>(1, &device);
    let ddpm = tiny_ddpm();
    assert!(matches!(run.model, ModelConfig::Vdm(_)));
    for sampler in [SamplerKind::Ancestral, SamplerKind::Ddim { eta: 0.0 }, SamplerKind::Ddim { eta: 0.5 }] {
        let options = SampleOptions { n: 2, steps: 0, sampler, spacing: Spacing::Time, seed: 0, batch_size: 2 };
        let err = sample(&vdm, [4, 4], &options, &device, &mut || {}).unwrap_err().to_string();
        assert!(err.contains("at least 1 step"), "VDM, {sampler}: {err}");
        let err = sample(&ddpm, [4, 4], &options, &device, &mut || {}).unwrap_err().to_string();
        assert!(err.contains("1 to 20 steps"), "DDPM, {sampler}: {err}");
        let err = sample(&ddpm, [4, 4], &SampleOptions { steps: 21, ..options }, &device, &mut || {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 to 20 steps"), "DDPM, {sampler}: {err}");
    }
    let options = SampleOptions {
        n: 2,
        steps: 10,
        sampler: SamplerKind::Ancestral,
        spacing: Spacing::Time,
        seed: 0,
        batch_size: 2,
    };
    assert!(sample(&ddpm, [4, 4], &options, &device, &mut || {}).unwrap_err().to_string().contains("all T = 20 steps"));
    for eta in [-0.5, 1.5, f64::NAN] {
        let options = SampleOptions { sampler: SamplerKind::Ddim { eta }, ..options };
        assert!(
            sample(&vdm, [4, 4], &options, &device, &mut || {}).unwrap_err().to_string().contains("between 0 and 1"),
            "η = {eta}"
        );
    }
    assert!(sample(&vdm, [4, 4], &SampleOptions { batch_size: 0, ..options }, &device, &mut || {}).is_err());
}

/// Samplers print with their names, as the CLI and its JSON reports show them.
#[test]
fn samplers_print_with_their_names() {
    assert_eq!(SamplerKind::Ancestral.to_string(), "ancestral");
    assert_eq!(SamplerKind::Ddim { eta: 0.5 }.to_string(), "ddim η=0.5");
    assert_eq!(SamplerKind::DpmSolverPp { order: 2 }.to_string(), "dpm-solver++ 2M");
    assert_eq!(SamplerKind::Heun.to_string(), "heun");
    assert_eq!(serde_json::to_string(&SamplerKind::Ddim { eta: 0.0 }).unwrap(), r#"{"name":"ddim","eta":0.0}"#);
}
