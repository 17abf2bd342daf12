//! The variance objective's gradient against finite differences in `f64`. Alone in its test
//! binary: burn-ndarray's f32 and f64 backends share one device, whose default float type the
//! first test to create a tensor sets, and an f32 test in the same process would round this
//! test's `f64` tensors to `f32`.

mod common;

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use common::{gradients, net_schedule, tiny_score};
use vdm_backends::config::VdmConfig;
use vdm_backends::model::{Noise, TimeMode, Vdm};
use vdm_backends::ops::FastOps;
use vdm_backends::schedule::{HostSchedule, ShapeObjective};
use vdm_backends::tensor::{host_tensor, pixels_tensor};
use vdm_backends::Autodiff;
use vdm_core::rng::SplitMix64;
use vdm_core::schedule::NoiseSchedule;
use vdm_core::time::antithetic_times;
use vdm_core::vlb;
use vdm_core::weighting::Weighting;

/// `mean_i L_i²` of a batch in bpd², with the diffusion term's `γ_t` and `γ'(t)` taken from `host`.
fn mean_square<B: FastOps>(model: &Vdm<B>, pixels: Tensor<B, 4>, noise: &Noise, host: &HostSchedule) -> f64 {
    let [n, c, h, w] = pixels.dims();
    let times: Vec<f64> = antithetic_times(noise.u0(), n).collect();
    let device = pixels.device();
    let g: Vec<f64> = times.iter().map(|&t| host.gamma(t)).collect();
    let gp: Vec<f64> = times.iter().map(|&t| host.gamma_prime(t)).collect();
    let terms = model.vlb_terms_at(host, pixels, noise, host_tensor(&g, &device), host_tensor(&gp, &device));
    let l: Vec<f64> = vlb::nats_to_bpd(terms.total(), c * h * w).0.into_data().iter::<f64>().collect();
    l.iter().map(|v| v * v).sum::<f64>() / n as f64
}

/// With the variance objective, the shape parameters' gradient is `∇_η mean_i L_i²`: central
/// finite differences of the batch's mean squared VLB, with the schedule's shape perturbed on the
/// host (vdm-core's `f64` monotone network), agree to 1e-4 relative in `f64`. The endpoints and
/// the network keep the VLB's gradient, exactly as under the VLB objective.
#[test]
fn the_variance_gradient_matches_finite_differences() {
    type Inner = burn::backend::NdArray<f64>;
    type B = Autodiff<Inner>;
    let device = Default::default();
    let images = vdm_backends::data::digits().select(&[10, 11, 12, 13, 14, 15, 16, 17]);
    let model: Vdm<B> =
        VdmConfig { score: tiny_score(), schedule: net_schedule(ShapeObjective::Variance), ..VdmConfig::digits() }
            .init(1, &device);
    let noise = Noise::draw(&mut SplitMix64::new(8), images.len(), images.features());
    let pixels = pixels_tensor::<B>(&images, &device);
    let (_, grads) = model
        .loss_and_gradients(pixels.clone(), &noise, TimeMode::Continuous, Weighting::Elbo, ShapeObjective::Variance)
        .unwrap();
    let variance = gradients(&model.schedule, &grads);
    let (_, grads) =
        model.loss_and_gradients(pixels, &noise, TimeMode::Continuous, Weighting::Elbo, ShapeObjective::Vlb).unwrap();
    let vlb = gradients(&model.schedule, &grads);
    // Visiting order: b, w (the endpoints), then l1_w, l2_w, l2_b, l3_w (the shape).
    assert_eq!(variance[..2], vlb[..2], "the endpoints follow the VLB under either objective");
    assert_ne!(variance[2..], vlb[2..], "the shape's gradient must change with the objective");

    let inner = model.valid();
    let pixels = pixels_tensor::<Inner>(&images, &device);
    let HostSchedule::Net(net) = inner.schedule.to_host() else { panic!("a network schedule") };
    let h = 1e-6;
    let mut checked = 0;
    for (param, index) in [(2, 0), (3, 0), (3, 5), (4, 1), (4, 7), (5, 2), (5, 6)] {
        let finite_difference = {
            let at = |delta: f64| {
                let mut p = net.clone();
                let value = match param {
                    2 => &mut p.l1_w,
                    3 => &mut p.l2_w[index],
                    4 => &mut p.l2_b[index],
                    _ => &mut p.l3_w[index],
                };
                *value += delta;
                mean_square(&inner, pixels.clone(), &noise, &HostSchedule::Net(p))
            };
            (at(h) - at(-h)) / (2.0 * h)
        };
        let got = variance[param][if param == 2 { 0 } else { index }];
        assert!(
            (got - finite_difference).abs() <= 1e-4 * finite_difference.abs() + 1e-9,
            "parameter {param}[{index}]: gradient {got:e}, finite difference {finite_difference:e}"
        );
        checked += usize::from(finite_difference.abs() > 1e-9);
    }
    assert!(checked >= 5, "most checked derivatives must be non-zero for the test to mean anything");
}
