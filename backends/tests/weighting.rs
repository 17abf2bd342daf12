//! VDM's weighted diffusion losses and prediction targets in training and sampling: the network
//! follows plain backpropagation of the weighted loss, the schedule the bound's gradient, and every
//! target reads its output back consistently (the weightings themselves are checked against
//! integrals over log-SNR in `core/tests/analytic.rs`).

mod common;

use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use common::{gradients, net_schedule, tiny_score};
use vdm_backends::config::{VdmConfig, VdmPrediction};
use vdm_backends::model::{Noise, TimeMode, Vdm};
use vdm_backends::sample::{Denoiser, GridPoint};
use vdm_backends::schedule::{ScheduleConfig, ShapeObjective};
use vdm_backends::tensor::{host_tensor, pixels_tensor, BurnBatch};
use vdm_backends::{Autodiff, Cpu};
use vdm_core::process;
use vdm_core::rng::SplitMix64;
use vdm_core::schedule::NoiseSchedule;
use vdm_core::time::{antithetic_times, discretize};
use vdm_core::vlb;
use vdm_core::weighting::Weighting;

type B = Autodiff<Cpu>;

/// Equal to `1e-4` relative, or `1e-5` of the largest gradient: a gradient summed from terms of
/// that size carries their `f32` rounding, and the weighted run's terms are rounded at other scales.
fn assert_all_close(what: &str, got: &[Vec<f64>], want: &[Vec<f64>]) {
    assert_eq!(got.len(), want.len(), "{what}: parameter count");
    let scale = want.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: parameter {i} has a gradient in one and not the other");
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() <= 1e-4 * b.abs() + 1e-5 * scale, "{what}: parameter {i}: {a:e} vs {b:e}");
        }
    }
}

/// For each weighting, time mode and learned schedule: the reported loss is the mean of
/// `prior + reconstruction + w(−γ_t) × diffusion` in bpd, the score network's gradient is plain
/// backpropagation of that, and the schedule's gradient is plain backpropagation of the bound
/// (so `elbo` is exactly today's objective). The weights come from the host schedule at the
/// noise's antithetic times, independently of the model's own path.
#[test]
fn the_network_follows_the_weighted_loss_and_the_schedule_the_bound() {
    let device = Default::default();
    let images = vdm_backends::data::digits().select(&[0, 1, 2, 3, 4, 5]);
    let n = images.len();
    let weightings = [
        Weighting::Elbo,
        Weighting::EpsMse,
        Weighting::Sigmoid { bias: 2.0 },
        Weighting::Edm { p_mean: -1.2, p_std: 1.2, sigma_data: 0.5 },
    ];
    let schedules = [ScheduleConfig::Scalar { gamma_min: -13.3, gamma_max: 5.0 }, net_schedule(ShapeObjective::Vlb)];
    for schedule in &schedules {
        for time in [TimeMode::Continuous, TimeMode::Discrete(10)] {
            let model: Vdm<B> =
                VdmConfig { score: tiny_score(), schedule: schedule.clone(), ..VdmConfig::digits() }.init(1, &device);
            let noise = Noise::draw(&mut SplitMix64::new(5), n, images.features());
            let pixels = pixels_tensor::<B>(&images, &device);
            let bpd = |t: BurnBatch<B, 4>| vlb::nats_to_bpd(t, images.features()).0.reshape([n]);

            let bound = bpd(model.vlb_terms(pixels.clone(), &noise, time).total()).mean();
            let bound_grads = GradientsParams::from_grads(bound.backward(), &model);
            for weighting in weightings {
                let what = format!("{weighting:?} {schedule:?} {time}");
                let host = model.schedule.to_host();
                let weights: Vec<f64> = antithetic_times(noise.u0(), n)
                    .map(|t| match time {
                        TimeMode::Continuous => t,
                        TimeMode::Discrete(steps) => discretize(t, steps).1,
                    })
                    .map(|t| weighting.weight(-host.gamma(t)))
                    .collect();
                let terms = model.vlb_terms(pixels.clone(), &noise, time);
                let weighted = terms.prior.0.clone()
                    + terms.reconstruction.0.clone()
                    + terms.diffusion.0.clone() * host_tensor::<B>(&weights, &device).reshape([n, 1, 1, 1]);
                let want_loss = bpd(BurnBatch(weighted)).mean();
                let want_value: f64 = want_loss.clone().into_scalar().into();
                let want = GradientsParams::from_grads(want_loss.backward(), &model);

                let (value, got) =
                    model.loss_and_gradients(pixels.clone(), &noise, time, weighting, ShapeObjective::Vlb).unwrap();
                let value: f64 = value.into_scalar().into();
                assert!((value - want_value).abs() < 1e-5 * want_value.abs(), "{what}: loss {value} vs {want_value}");
                assert_all_close(
                    &format!("{what}: score network"),
                    &gradients(&model.score, &got),
                    &gradients(&model.score, &want),
                );
                assert_all_close(
                    &format!("{what}: schedule"),
                    &gradients(&model.schedule, &got),
                    &gradients(&model.schedule, &bound_grads),
                );
            }
        }
    }
}

/// What `predict` hands the samplers is the network's output read as the configured target:
/// `ε̂` itself, `x̂` itself, or `v̂` with `x̂ = α z − σ v̂` and `ε̂ = σ z + α v̂`.
#[test]
fn predictions_read_the_network_output_as_their_target() {
    let device = Default::default();
    for prediction in [VdmPrediction::Eps, VdmPrediction::X, VdmPrediction::V] {
        let model: Vdm<Cpu> = VdmConfig { score: tiny_score(), prediction, ..VdmConfig::digits() }.init(1, &device);
        let z = Tensor::<Cpu, 4>::random([2, 1, 8, 8], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        for gamma in [-8.0, 0.5, 4.0] {
            let out = model.score.forward(z.clone(), Tensor::full([2], gamma as f32, &device));
            let denoised = model.predict(z.clone(), GridPoint { gamma, net_input: gamma });
            let (a, s) = (process::alpha(gamma) as f32, process::sigma(gamma) as f32);
            let (want_eps, want_x) = match prediction {
                VdmPrediction::Eps => (out.clone(), (z.clone() - out.clone() * s) / a),
                VdmPrediction::X => ((z.clone() - out.clone() * a) / s, out.clone()),
                VdmPrediction::V => (z.clone() * s + out.clone() * a, z.clone() * a - out.clone() * s),
            };
            for (name, got, want) in [("ε̂", denoised.eps, want_eps), ("x̂", denoised.x, want_x)] {
                let diff = (got - want.clone()).abs().max().into_scalar();
                let scale = want.abs().max().into_scalar().max(1.0);
                assert!(diff <= 1e-4 * scale, "{prediction:?} at γ = {gamma}: {name} off by {diff}");
            }
        }
    }
}
