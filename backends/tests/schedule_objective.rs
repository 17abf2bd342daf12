//! The training gradients of [`Vdm::loss_and_gradients`]: the VLB objective gives what plain
//! backpropagation gives, and the variance objective changes only the shape's gradient (checked
//! against finite differences in `variance_gradient.rs`).
//!
//! In `f64`: the schedule's gradients are small sums of large terms of both signs, and in `f32`
//! burn's autodiff, which adds a node's gradient contributions in an order that changes from run
//! to run, gives them to only 1e-3 relative. Every test of this binary uses `f64`: burn-ndarray's
//! f32 and f64 backends share one device, whose default float type the first tensor sets.

mod common;

use burn::optim::GradientsParams;
use common::{gradients, net_schedule, tiny_score, vdm_of};
use vdm_backends::config::RunConfig;
use vdm_backends::config::VdmConfig;
use vdm_backends::model::{Noise, TimeMode, Vdm};
use vdm_backends::schedule::{ScheduleConfig, ShapeObjective};
use vdm_backends::tensor::pixels_tensor;
use vdm_backends::Autodiff;
use vdm_core::rng::SplitMix64;
use vdm_core::vlb;
use vdm_core::weighting::Weighting;

type B = Autodiff<burn::backend::NdArray<f64>>;

fn assert_all_close(what: &str, got: &[Vec<f64>], want: &[Vec<f64>], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: parameter count");
    let scale = want.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: parameter {i} has a gradient in one and not the other");
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() <= rel * (b.abs() + 1e-3 * scale), "{what}: parameter {i}: {a:e} vs {b:e}");
        }
    }
}

/// With the VLB objective, the two-pass gradient (detached `γ_t` and weight, then a backward pass
/// through the schedule) equals the gradient of plain backpropagation through the whole model,
/// for every parameter, both schedules and both time modes.
#[test]
fn the_vlb_objective_equals_plain_backpropagation() {
    let device = Default::default();
    let images = vdm_backends::data::digits().select(&[0, 1, 2, 3, 4, 5]);
    let schedules = [ScheduleConfig::Scalar { gamma_min: -13.3, gamma_max: 5.0 }, net_schedule(ShapeObjective::Vlb)];
    for (schedule, time) in schedules.iter().flat_map(|s| [(s, TimeMode::Continuous), (s, TimeMode::Discrete(10))]) {
        let model: Vdm<B> =
            VdmConfig { score: tiny_score(), schedule: schedule.clone(), ..VdmConfig::digits() }.init(1, &device);
        let noise = Noise::draw(&mut SplitMix64::new(5), images.len(), images.features());
        let pixels = pixels_tensor::<B>(&images, &device);
        assert_eq!(pixels.dtype(), burn::tensor::DType::F64, "an f32 tensor was made first in this process");

        let loss = vlb::nats_to_bpd(model.vlb_terms(pixels.clone(), &noise, time).total(), images.features()).0.mean();
        let want = gradients(&model, &GradientsParams::from_grads(loss.backward(), &model));
        let (_, grads) = model.loss_and_gradients(pixels, &noise, time, Weighting::Elbo, ShapeObjective::Vlb).unwrap();
        let got = gradients(&model, &grads);
        assert!(want.iter().all(|g| !g.is_empty()), "{schedule:?}: every parameter has a gradient");
        assert_all_close(&format!("{schedule:?} {time}"), &got, &want, 1e-9);
    }
}

/// The variance objective is refused where the bound depends on the shape: discrete-time training.
#[test]
fn the_variance_objective_needs_continuous_time() {
    let mut run = RunConfig::digits();
    vdm_of(&mut run).schedule = net_schedule(ShapeObjective::Variance);
    assert!(run.validate().is_ok());
    run.train.time_steps = 100;
    let err = run.validate().unwrap_err().to_string();
    assert!(err.contains("continuous-time") && err.contains("time_steps"), "{err}");
}

/// Frozen endpoints (`learn_endpoints = false`) take no gradient under the variance objective,
/// and every other parameter's gradient is what it is with learned endpoints.
#[test]
fn frozen_endpoints_change_only_the_endpoints_gradients() {
    let device = Default::default();
    let images = vdm_backends::data::digits().select(&[0, 1, 2, 3]);
    let noise = Noise::draw(&mut SplitMix64::new(2), images.len(), images.features());
    let mut frozen_schedule = net_schedule(ShapeObjective::Variance);
    if let ScheduleConfig::Net { learn_endpoints, .. } = &mut frozen_schedule {
        *learn_endpoints = false;
    }
    let learned: Vdm<B> =
        VdmConfig { score: tiny_score(), schedule: net_schedule(ShapeObjective::Variance), ..VdmConfig::digits() }
            .init(1, &device);
    // The same score network (its initialisation is random) with frozen endpoints.
    let frozen = Vdm { score: learned.score.clone(), schedule: frozen_schedule.init(&device), target: learned.target };
    let grads = |model: &Vdm<B>| {
        let (_, grads) = model
            .loss_and_gradients(
                pixels_tensor::<B>(&images, &device),
                &noise,
                TimeMode::Continuous,
                Weighting::Elbo,
                ShapeObjective::Variance,
            )
            .unwrap();
        gradients(model, &grads)
    };
    let (learned, frozen) = (grads(&learned), grads(&frozen));
    let endpoints = |g: &[Vec<f64>]| g.len() - 6..g.len() - 4; // the schedule's b, w come after the score network
    assert!(
        learned[endpoints(&learned)].iter().all(|g| g.len() == 1 && g[0] != 0.0),
        "learned endpoints get a gradient"
    );
    assert!(frozen[endpoints(&frozen)].iter().all(Vec::is_empty), "frozen endpoints get none");
    let rest = |g: &[Vec<f64>]| [&g[..g.len() - 6], &g[g.len() - 4..]].concat();
    assert_all_close("the other parameters", &rest(&frozen), &rest(&learned), 1e-9);
}
