//! DDPM: the U-Net's size and shapes, the T-term bound against an independent closed form in
//! DDPM's own β notation, the sampled estimate against the full bound, and the samplers.

mod common;

use burn::module::Module;
use common::{alpha_bar_products, linear_alpha_bars, tiny_run, tiny_score, tiny_unet, B};
use vdm_backends::config::ModelConfig;
use vdm_backends::config::RunConfig;
use vdm_backends::config::{BetasConfig, DdpmConfig, Prediction, Variance, VdmConfig};
use vdm_backends::data::ImageSet;
use vdm_backends::eval::{evaluate, EvalOptions};
use vdm_backends::model::ddpm::{Bound, Ddpm};
use vdm_backends::model::{TimeMode, Vdm};
use vdm_backends::nn::ddpm_unet::UNetConfig;
use vdm_backends::sample::{sample, SampleOptions, SamplerKind, Spacing};
use vdm_backends::train::Trainer;
use vdm_backends::Cpu;

/// A DDPM with `T` steps and a U-Net small enough for 4×4 images.
fn tiny_ddpm(time_steps: usize, variance: Variance) -> DdpmConfig {
    DdpmConfig { unet: tiny_unet(), time_steps, variance, ..DdpmConfig::default() }
}

fn tiny_ddpm_run(steps: usize, variance: Variance) -> RunConfig {
    RunConfig { model: ModelConfig::Ddpm(tiny_ddpm(20, variance)), ..tiny_run(steps) }
}

/// The library's `evaluate` refuses images the network cannot take, with an error naming the
/// shapes (it panicked in the GEMM kernel on another channel count).
#[test]
fn evaluate_refuses_images_the_network_cannot_take() {
    let device = Default::default();
    let options = EvalOptions { batch_size: 8, draws: 1, seed: 1 };
    let rgb = ImageSet::new(vec![128; 2 * 3 * 4 * 4], [3, 4, 4]);
    let odd = ImageSet::new(vec![128; 2 * 5 * 5], [1, 5, 5]);
    let vdm: Vdm<Cpu> = VdmConfig { score: tiny_score(), ..VdmConfig::digits() }.init(1, &device);
    let err = evaluate(&vdm, &rgb, TimeMode::Continuous, &options, &device, |_| {}).unwrap_err().to_string();
    assert!(err.contains("3 channels") && err.contains("takes 1"), "{err}");
    let ddpm: Ddpm<Cpu> = tiny_ddpm(20, Variance::Beta).build([1, 4, 4], &device).unwrap();
    let err = evaluate(&ddpm, &rgb, Bound::Sampled, &options, &device, |_| {}).unwrap_err().to_string();
    assert!(err.contains("3 channels") && err.contains("takes 1"), "{err}");
    let err = evaluate(&ddpm, &odd, Bound::Sampled, &options, &device, |_| {}).unwrap_err().to_string();
    assert!(err.contains("multiples of 2") && err.contains("5x5"), "{err}");
}

/// DDPM's CIFAR-10 network has 35.7M parameters (35,746,307 in the original code).
#[test]
fn unet_has_ddpm_cifar10_parameter_count() {
    let net = UNetConfig::default().init::<Cpu>([3, 32, 32], &Default::default());
    assert_eq!(net.num_params(), 35_746_307);
}

#[test]
fn unet_keeps_the_image_shape_and_refuses_sizes_it_cannot_halve() {
    let device = Default::default();
    for (config, shape) in [
        (UNetConfig::digits(), [1, 8, 8]),
        (UNetConfig::mnist(), [1, 28, 28]),
        (tiny_ddpm(10, Variance::Beta).unet, [3, 4, 6]),
    ] {
        let net = config.init::<Cpu>(shape, &device);
        let x = burn::tensor::Tensor::<Cpu, 4>::ones([2, shape[0], shape[1], shape[2]], &device);
        let t = burn::tensor::Tensor::<Cpu, 1>::from_floats([0.0, 999.0], &device);
        assert_eq!(net.forward(x, t).dims(), [2, shape[0], shape[1], shape[2]]);
    }
    let err = UNetConfig::default().check_image_shape([3, 30, 30]).unwrap_err().to_string();
    assert!(err.contains("multiples of 8"), "{err}");
    let lost = UNetConfig { attn_resolutions: vec![3], ..UNetConfig::digits() };
    let err = lost.check_image_shape([1, 8, 8]).unwrap_err().to_string();
    assert!(err.contains("attn_resolutions holds 3") && err.contains("[8, 4]"), "{err}");
}

/// `ᾱ_t` of Nichol & Dhariwal's cosine schedule (their eq. 17, `s = 0.008`, `β ≤ 0.999`).
fn cosine_alpha_bars(t: usize) -> Vec<f64> {
    let f = |i: usize| (((i as f64 / t as f64) + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
    alpha_bar_products(&(1..=t).map(|i| (1.0 - f(i) / f(i - 1)).min(0.999)).collect::<Vec<f64>>())
}

/// With a network that outputs zero (DDPM's zero-initialised `conv_out`, so `ε̂ = 0`), the
/// expected `L_{t−1}` has a closed form. In DDPM's notation (eq. 7, 11):
/// `μ̃ = √ᾱ_{t−1} β_t/(1−ᾱ_t) x_0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) x_t` and `μ_θ = x_t/√α_t`, so with
/// `x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε` the difference is `k_t ε`, and
/// `E L_{t−1} = D/2 [r − 1 − ln r + k_t²/σ_t²]`, `r = β̃_t/σ_t²`, for the linear and the cosine β.
/// The prior is exact per image.
#[test]
fn full_bound_of_a_zero_network_matches_the_closed_form_in_beta_notation() {
    let device = Default::default();
    let big_t = 20;
    let (d, n) = (16usize, 96usize);
    let images = ImageSet::new((0..n * d).map(|i| ((i * 37) % 256) as u8).collect(), [1, 4, 4]);
    let cosine = BetasConfig::Cosine { s: 0.008, max_beta: 0.999 };
    for (betas, variance) in [
        (None, Variance::Beta),
        (None, Variance::BetaTilde),
        (Some(cosine), Variance::Beta),
        (Some(cosine), Variance::BetaTilde),
    ] {
        // Unclipped: clipping x̂_0 to [−1, 1] (DDPM's evaluation default) is a different model.
        let tiny = tiny_ddpm(big_t, variance);
        let config = DdpmConfig { clip_denoised: false, betas: betas.unwrap_or(tiny.betas), ..tiny };
        let model: Ddpm<Cpu> = config.build(images.shape(), &device).unwrap();
        let report =
            evaluate(&model, &images, Bound::Full, &EvalOptions { batch_size: 32, draws: 1, seed: 7 }, &device, |_| {})
                .unwrap();
        let ab = if betas.is_some() { cosine_alpha_bars(big_t) } else { linear_alpha_bars(big_t) };
        let label = format!("{variance:?}{}", if betas.is_some() { ", cosine β" } else { "" });
        let mut expected = 0.0;
        for t in 2..=big_t {
            let (ab_t, ab_s) = (ab[t - 1], ab[t - 2]);
            let beta = 1.0 - ab_t / ab_s;
            let beta_tilde = beta * (1.0 - ab_s) / (1.0 - ab_t);
            let var_p = if variance == Variance::Beta { beta } else { beta_tilde };
            let (c0, c1) = (ab_s.sqrt() * beta / (1.0 - ab_t), (1.0 - beta).sqrt() * (1.0 - ab_s) / (1.0 - ab_t));
            let c_x0 = c0 + (c1 - 1.0 / (1.0 - beta).sqrt()) * ab_t.sqrt();
            assert!(c_x0.abs() < 1e-12, "x_0 cancels from μ̃ − μ_θ");
            let k = (c1 - 1.0 / (1.0 - beta).sqrt()) * (1.0 - ab_t).sqrt();
            let r = beta_tilde / var_p;
            expected += 0.5 * d as f64 * (r - 1.0 - r.ln() + k * k / var_p);
        }
        let expected_bpd = expected / (d as f64 * std::f64::consts::LN_2);
        let sd = (report.per_image.iter().map(|v| v * v).sum::<f64>() / n as f64 - report.bpd.mean.powi(2)).sqrt();
        assert!(
            (report.diffusion - expected_bpd).abs() < 4.0 * sd / (n as f64).sqrt() + 1e-4,
            "{label}: Σ L_(t−1) {} bpd vs closed form {expected_bpd}",
            report.diffusion
        );
        let prior: f64 = (0..n)
            .map(|i| {
                images
                    .image(i)
                    .iter()
                    .map(|&p| {
                        let (x, a, s2) = (f64::from(p) / 127.5 - 1.0, ab[big_t - 1].sqrt(), 1.0 - ab[big_t - 1]);
                        0.5 * (a * a * x * x + s2 - s2.ln() - 1.0)
                    })
                    .sum::<f64>()
            })
            .sum::<f64>()
            / (n * d) as f64
            / std::f64::consts::LN_2;
        assert!((report.prior - prior).abs() < 1e-6 * prior.max(1e-3), "prior {} vs {prior}", report.prior);
    }
}

/// A briefly trained tiny DDPM and the 4×4 test images.
fn trained(variance: Variance) -> (Ddpm<Cpu>, ImageSet) {
    let device = Default::default();
    let run = tiny_ddpm_run(30, variance);
    let (train, test) = run.data.load(0).unwrap();
    let mut trainer = Trainer::<B, Ddpm<B>>::new(&run, train.shape(), &device).unwrap();
    for _ in 0..30 {
        let stats = trainer.train_step(&train).unwrap();
        assert!(stats.loss.is_finite());
    }
    (trainer.ema().clone(), test)
}

/// The sampled estimate (exact `L_0` and prior, `(T − 1) L_{t−1}` at random `t`) is unbiased:
/// with many draws it agrees with the full `T`-term bound.
#[test]
fn sampled_estimate_agrees_with_the_full_bound() {
    let device = Default::default();
    let (model, test) = trained(Variance::Beta);
    let full =
        evaluate(&model, &test, Bound::Full, &EvalOptions { batch_size: 64, draws: 1, seed: 3 }, &device, |_| {})
            .unwrap();
    let sampled =
        evaluate(&model, &test, Bound::Sampled, &EvalOptions { batch_size: 64, draws: 40, seed: 4 }, &device, |_| {})
            .unwrap();
    let paired: Vec<f64> = full.per_image.iter().zip(&sampled.per_image).map(|(a, b)| a - b).collect();
    let diff = vdm_backends::eval::Estimate::of(&paired);
    assert!(
        diff.mean.abs() < 4.0 * diff.se + 1e-3,
        "full {} vs sampled {} bpd (difference {} ± {})",
        full.bpd.mean,
        sampled.bpd.mean,
        diff.mean,
        diff.se
    );
    assert!(
        (full.prior - sampled.prior).abs() < 1e-6
            && (full.reconstruction - sampled.reconstruction).abs() < 0.05 * full.reconstruction.abs().max(0.01)
    );
}

#[test]
fn samplers_are_deterministic_and_ddim_at_eta_one_is_the_beta_tilde_step() {
    let device = Default::default();
    let (model, _) = trained(Variance::BetaTilde);
    let draw = |sampler, steps, batch_size| {
        sample(
            &model,
            [4, 4],
            &SampleOptions { n: 6, steps, sampler, spacing: Spacing::Time, seed: 11, batch_size },
            &device,
            &mut || {},
        )
        .unwrap()
    };
    let ancestral = draw(SamplerKind::Ancestral, 20, 6);
    assert_eq!(ancestral.pixels, draw(SamplerKind::Ancestral, 20, 4).pixels, "the batch size changes the samples");
    let ddim_one = draw(SamplerKind::Ddim { eta: 1.0 }, 20, 6);
    let off = ancestral
        .pixels
        .iter()
        .zip(&ddim_one.pixels)
        .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
        .max()
        .unwrap();
    assert!(off <= 1, "DDIM with η = 1 differs from the β̃ ancestral step by {off} levels");
    let ddim = draw(SamplerKind::Ddim { eta: 0.0 }, 5, 6);
    assert_eq!(ddim.pixels, draw(SamplerKind::Ddim { eta: 0.0 }, 5, 2).pixels);
    assert_ne!(ddim.pixels, ddim_one.pixels);
    assert!(sample(
        &model,
        [4, 4],
        &SampleOptions { n: 2, steps: 10, ..SampleOptions::default() },
        &device,
        &mut || {}
    )
    .unwrap_err()
    .to_string()
    .contains("all T = 20 steps"));
}

/// Every parametrisation and loss trains without diverging and lowers its loss.
#[test]
fn every_prediction_and_loss_trains() {
    let device = Default::default();
    for (prediction, loss) in [(Prediction::Eps, "vlb"), (Prediction::X0, "simple"), (Prediction::Mean, "hybrid")] {
        let mut run = tiny_ddpm_run(40, Variance::Beta);
        let text = format!("[model]\nfamily = \"ddpm\"\nprediction = \"{}\"\nloss = \"{loss}\"\ntime_steps = 20\n[model.unet]\nch = 8\nch_mult = [1, 2]\nnum_res_blocks = 1\nattn_resolutions = []\ngroups = 4\n", match prediction {
            Prediction::Eps => "eps",
            Prediction::X0 => "x0",
            Prediction::Mean => "mean",
        });
        #[derive(serde::Deserialize)]
        struct Only {
            model: ModelConfig,
        }
        run.model = toml::from_str::<Only>(&text).unwrap().model;
        let (train, _) = run.data.load(0).unwrap();
        let mut trainer = Trainer::<B, Ddpm<B>>::new(&run, train.shape(), &device).unwrap();
        let losses: Vec<f64> = (0..40).map(|_| trainer.train_step(&train).unwrap().loss).collect();
        let (first, last) = (losses[..10].iter().sum::<f64>(), losses[30..].iter().sum::<f64>());
        assert!(losses.iter().all(|l| l.is_finite()) && last < first, "{prediction:?}/{loss}: {losses:?}");
    }
}

/// `Φ(u)` from `erfc`, independently of the crate's decoder.
fn normal_cdf(u: f64) -> f64 {
    0.5 * libm::erfc(-u / std::f64::consts::SQRT_2)
}

/// Zero x₀- and μ-predicting networks (`conv_out` starts at zero) have closed-form bounds, with
/// clipping on and off, and so does a zero ε-network with clipping (`Σ L_{t−1}`), written here in DDPM's β notation (eq. 7):
/// - x₀: `x̂_0 = 0`, so `μ̃ − μ_θ = c₀ x_0` (`c₀ = √ᾱ_{t−1} β_t/(1−ᾱ_t)`), the same for every `ε`;
/// - μ: `μ_θ = 0` is the network's output (DDPM keeps it; `clip_denoised` only touches `x̂_0`), so
///   `μ̃ − μ_θ = c₀ x_0 + c₁ x_t` and `E(μ̃ − μ_θ)² = (c₀ + c₁√ᾱ_t)² x_0² + c₁²(1−ᾱ_t)`;
/// - `L_0` in both: the discretised Gaussian around `0` with `σ_1² = β̃_2`, by `Φ` from `erfc`.
///
/// Before clipping kept the μ-network's mean, clipping on changed its bound.
///
/// A zero ε-network with clipping (the evaluation default) has `x̂_0 = clip(x_0 + k ε)`,
/// `k = √((1−ᾱ_t)/ᾱ_t)`, and `E(x_0 − x̂_0)²` in closed form with `y = x_0 + kε`:
/// `k²[Φ(u) − uφ(u)]_{u_−}^{u_+} + (x_0+1)² Φ(u_−) + (x_0−1)² (1 − Φ(u_+))`, `u_± = (±1 − x_0)/k`;
/// `μ̃ − μ_θ = c₀ (x_0 − x̂_0)`.
#[test]
fn zero_networks_of_every_prediction_have_closed_form_bounds_with_clipping() {
    let device = Default::default();
    let big_t = 20;
    let (d, n) = (16usize, 64usize);
    // Grey levels within 2.5 σ_1 of the middle: L_0's bins around 0 hold mass that f32 resolves
    // (the backend's erfc is 1 − erf, inexact in the far tail).
    let images = ImageSet::new((0..n * d).map(|i| (125 + (i * 7) % 6) as u8).collect(), [1, 4, 4]);
    let ab = linear_alpha_bars(big_t);
    let x0 = |p: u8| f64::from(p) / 127.5 - 1.0;
    let var_p = |t: usize| 1.0 - ab[t - 1] / ab[t - 2]; // σ_t² = β_t
    let beta_tilde = |t: usize| var_p(t) * (1.0 - ab[t - 2]) / (1.0 - ab[t - 1]);
    let sigma_1 = beta_tilde(2).sqrt();
    let l0: f64 = images
        .pixels
        .iter()
        .map(|&p| {
            let (x, h) = (x0(p), 1.0 / 255.0);
            let mass = if x < -0.999 {
                normal_cdf((x + h) / sigma_1)
            } else if x > 0.999 {
                1.0 - normal_cdf((x - h) / sigma_1)
            } else {
                normal_cdf((x + h) / sigma_1) - normal_cdf((x - h) / sigma_1)
            };
            -mass.ln()
        })
        .sum::<f64>()
        / (n * d) as f64
        / std::f64::consts::LN_2;
    let clipped_error_sq = |x: f64, k: f64| {
        let (lo, hi) = ((-1.0 - x) / k, (1.0 - x) / k);
        let partial = |u: f64| normal_cdf(u) - u * (-0.5 * u * u).exp() / (2.0 * std::f64::consts::PI).sqrt();
        k * k * (partial(hi) - partial(lo))
            + (x + 1.0).powi(2) * normal_cdf(lo)
            + (x - 1.0).powi(2) * (1.0 - normal_cdf(hi))
    };
    for prediction in [Prediction::X0, Prediction::Mean, Prediction::Eps] {
        let mut expected = 0.0;
        for t in 2..=big_t {
            let (ab_t, ab_s, beta) = (ab[t - 1], ab[t - 2], var_p(t));
            let (c0, c1) = (ab_s.sqrt() * beta / (1.0 - ab_t), (1.0 - beta).sqrt() * (1.0 - ab_s) / (1.0 - ab_t));
            let r = beta_tilde(t) / beta;
            for &p in &images.pixels {
                let diff_sq = match prediction {
                    Prediction::X0 => (c0 * x0(p)).powi(2),
                    Prediction::Mean => (c0 + c1 * ab_t.sqrt()).powi(2) * x0(p).powi(2) + c1 * c1 * (1.0 - ab_t),
                    Prediction::Eps => c0 * c0 * clipped_error_sq(x0(p), ((1.0 - ab_t) / ab_t).sqrt()),
                };
                expected += 0.5 * (r - 1.0 - r.ln() + diff_sq / beta);
            }
        }
        let expected_bpd = expected / (n * d) as f64 / std::f64::consts::LN_2;
        // The unclipped ε-network is the test above; its L_0 here is random (x̂_0 = x_0 + k ε).
        let clips: &[bool] = if prediction == Prediction::Eps { &[true] } else { &[false, true] };
        for &clip in clips {
            let config = DdpmConfig { prediction, clip_denoised: clip, ..tiny_ddpm(big_t, Variance::Beta) };
            let model: Ddpm<Cpu> = config.build(images.shape(), &device).unwrap();
            let report = evaluate(
                &model,
                &images,
                Bound::Full,
                &EvalOptions { batch_size: 32, draws: 1, seed: 7 },
                &device,
                |_| {},
            )
            .unwrap();
            let sd = (report.per_image.iter().map(|v| v * v).sum::<f64>() / n as f64 - report.bpd.mean.powi(2)).sqrt();
            let tolerance = if prediction == Prediction::X0 {
                1e-3 * expected_bpd
            } else {
                4.0 * sd / (n as f64).sqrt() + 1e-3 * expected_bpd
            };
            let what = format!("{prediction:?}, clip {clip}");
            assert!(
                (report.diffusion - expected_bpd).abs() < tolerance,
                "{what}: Σ L_(t−1) {} bpd vs closed form {expected_bpd}",
                report.diffusion
            );
            if prediction != Prediction::Eps {
                assert!(
                    (report.reconstruction - l0).abs() < 1e-3 * l0,
                    "{what}: L_0 {} bpd vs closed form {l0}",
                    report.reconstruction
                );
            }
        }
    }
}

/// A μ-predicting DDPM's ancestral step draws around the network's output with clipping on (a
/// zero network: `z_s = 0 + σ ε`), where the posterior mean at the clipped `x̂_0` would not be 0.
#[test]
fn the_ancestral_step_of_a_mean_network_keeps_its_mean_under_clipping() {
    use vdm_backends::sample::Denoiser;
    let device = Default::default();
    let model: Ddpm<Cpu> =
        DdpmConfig { prediction: Prediction::Mean, clip_denoised: true, ..tiny_ddpm(20, Variance::Beta) }
            .build([1, 4, 4], &device)
            .unwrap();
    let grid = model.grid(20, vdm_backends::sample::Spacing::Time).unwrap();
    let z = burn::tensor::Tensor::<Cpu, 4>::from_floats([[[[3.0, -2.5, 0.5, 1.0]; 4]]], &device);
    let mut sampler = SamplerKind::Ancestral.build(&model, 20).unwrap();
    let zeros = z.zeros_like();
    let mut no_noise = || zeros.clone();
    let mut predict = |z, at| model.predict(z, at);
    let mut context = vdm_backends::sample::StepContext { predict: &mut predict, noise: &mut no_noise };
    let next: Vec<f32> = sampler
        .step(z.clone(), model.predict(z.clone(), grid[15]), grid[15], grid[14], &mut context)
        .into_data()
        .to_vec()
        .unwrap();
    assert!(next.iter().all(|v| v.abs() < 1e-4), "the zero network's mean is 0, the step gave {next:?}");
    let ddim: Vec<f32> = SamplerKind::Ddim { eta: 0.0 }
        .build(&model, 20)
        .unwrap()
        .step(z.clone(), model.predict(z, grid[15]), grid[15], grid[14], &mut context)
        .into_data()
        .to_vec()
        .unwrap();
    assert!(ddim.iter().any(|v| v.abs() > 0.1), "DDIM uses the clipped x̂_0, which is not the network's mean");
}
