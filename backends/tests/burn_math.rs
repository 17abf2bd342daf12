//! The burn implementation of the math agrees with vdm-core's reference implementation.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use vdm_backends::model::{Noise, TimeMode};
use vdm_backends::nn::score_unet::ScoreNetConfig;
use vdm_backends::schedule::{ScheduleConfig, ShapeObjective};
use vdm_backends::tensor::pixels_tensor;
use vdm_backends::tensor::BurnBatch;
use vdm_backends::{Autodiff, Cpu};
use vdm_core::ddpm::discretized_gaussian_nll;
use vdm_core::process::{ancestral_step, diffuse, posterior};
use vdm_core::rng::SplitMix64;
use vdm_core::schedule::{LearnedScalar, MonotoneNet, NoiseSchedule};
use vdm_core::vlb::{diffusion_loss_continuous, diffusion_loss_discrete, prior_kl, reconstruction_nll, PIXEL_VALUES};
use vdm_core::{Batch, BatchTensor};

type B = Cpu;

fn burn4(values: &[f64], rows: usize, device: &burn::tensor::Device<B>) -> BurnBatch<B, 4> {
    let d = values.len() / rows;
    let data: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    BurnBatch(Tensor::from_data(TensorData::new(data, [rows, 1, 1, d]), device))
}

fn host(t: BurnBatch<B, 4>) -> Vec<f64> {
    t.0.into_data().convert::<f64>().to_vec().unwrap()
}

fn assert_close(what: &str, burn: &[f64], reference: &[f64], rel: f64) {
    assert_eq!(burn.len(), reference.len(), "{what}: lengths");
    for (i, (a, b)) in burn.iter().zip(reference).enumerate() {
        assert!((a - b).abs() <= rel * b.abs().max(1.0), "{what}[{i}]: burn {a} vs reference {b}");
    }
}

/// Every VLB term and step, on burn f32 and on the f64 reference, for extreme and typical γ.
#[test]
fn vlb_terms_match_the_reference_implementation() {
    let device = Default::default();
    let mut rng = SplitMix64::new(3);
    let (rows, d) = (4, 6);
    let mut vec = |scale: f64| (0..rows * d).map(|_| scale * rng.normal::<f64>()).collect::<Vec<_>>();
    let x: Vec<f64> = vec(0.4).iter().map(|v: &f64| v.clamp(-0.99, 0.99)).collect();
    let (eps, eps_hat) = (vec(1.0), vec(1.0));
    let gammas = [(-13.3, 5.0), (-25.0, 25.0), (-2.0, 1e-3), (3.0, 3.5)];
    for &(g_lo, g_hi) in &gammas {
        let pe = |g: f64| (Batch::per_example(vec![g; rows]), burn4(&vec![g; rows], rows, &device));
        let (lo_ref, lo_b) = pe(g_lo);
        let (hi_ref, hi_b) = pe(g_hi);
        let (x_ref, x_b) = (Batch::new(x.clone(), rows), burn4(&x, rows, &device));
        let (e_ref, e_b) = (Batch::new(eps.clone(), rows), burn4(&eps, rows, &device));
        let (h_ref, h_b) = (Batch::new(eps_hat.clone(), rows), burn4(&eps_hat, rows, &device));
        let tag = |name: &str| format!("{name} at γ = ({g_lo}, {g_hi})");

        let prior = (prior_kl(x_b.clone(), hi_b.clone()), prior_kl(x_ref.clone(), hi_ref.clone()));
        assert_close(&tag("prior"), &host(prior.0), prior.1.as_slice(), 1e-4);
        let z0 =
            (diffuse(x_b.clone(), e_b.clone(), lo_b.clone()), diffuse(x_ref.clone(), e_ref.clone(), lo_ref.clone()));
        let recon = (
            reconstruction_nll(x_b.clone(), z0.0.clone(), lo_b.clone(), PIXEL_VALUES),
            reconstruction_nll(x_ref.clone(), z0.1.clone(), lo_ref.clone(), PIXEL_VALUES),
        );
        assert_close(&tag("reconstruction"), &host(recon.0), recon.1.as_slice(), 1e-3);
        let cont = (
            diffusion_loss_continuous(e_b.clone(), h_b.clone(), hi_b.clone()),
            diffusion_loss_continuous(e_ref.clone(), h_ref.clone(), hi_ref.clone()),
        );
        assert_close(&tag("continuous loss"), &host(cont.0), cont.1.as_slice(), 1e-4);
        let disc = (
            diffusion_loss_discrete(e_b.clone(), h_b.clone(), lo_b.clone(), hi_b.clone(), 1000),
            diffusion_loss_discrete(e_ref.clone(), h_ref.clone(), lo_ref.clone(), hi_ref.clone(), 1000),
        );
        assert_close(&tag("discrete loss"), &host(disc.0), disc.1.as_slice(), 1e-4);
        let q = (
            posterior(x_b.clone(), z0.0.clone(), lo_b.clone(), hi_b.clone()),
            posterior(x_ref.clone(), z0.1.clone(), lo_ref.clone(), hi_ref.clone()),
        );
        assert_close(&tag("posterior mean"), &host(q.0.mean), q.1.mean.as_slice(), 1e-4);
        assert_close(&tag("posterior variance"), &host(q.0.variance), q.1.variance.as_slice(), 1e-4);
        let step = (
            ancestral_step(z0.0.clone(), h_b.clone(), e_b.clone(), lo_b.clone(), hi_b.clone()),
            ancestral_step(z0.1.clone(), h_ref.clone(), e_ref.clone(), lo_ref.clone(), hi_ref.clone()),
        );
        assert_close(&tag("ancestral step"), &host(step.0), step.1.as_slice(), 1e-4);
        // The DDPM decoder near its mean (burn's f32 `1 − erf` tail is documented as inexact).
        let ddpm = (
            discretized_gaussian_nll(
                x_b.clone(),
                x_b.clone().add(h_b.clone().mul_scalar(0.01)),
                hi_b.clone().mul_scalar(0.0).add_scalar(-4.0),
            ),
            discretized_gaussian_nll(
                x_ref.clone(),
                x_ref.clone().add(h_ref.clone().mul_scalar(0.01)),
                hi_ref.clone().mul_scalar(0.0).add_scalar(-4.0),
            ),
        );
        assert_close(&tag("DDPM decoder"), &host(ddpm.0), ddpm.1.as_slice(), 2e-3);
    }
}

#[test]
fn stable_primitives_match_the_reference_at_extremes() {
    let device = Default::default();
    let xs = [-80.0, -30.0, -1e-6, 0.0, 1e-7, 0.5, 30.0, 80.0];
    let (b, r) = (burn4(&xs, 1, &device), Batch::new(xs.to_vec(), 1));
    assert_close("softplus", &host(b.clone().softplus()), r.clone().softplus().as_slice(), 1e-5);
    assert_close("sigmoid", &host(b.clone().sigmoid()), r.clone().sigmoid().as_slice(), 1e-5);
    let small = [-1e-6, -1e-3, 1e-7, 1e-3, 0.5, -3.0];
    let (b, r) = (burn4(&small, 1, &device), Batch::new(small.to_vec(), 1));
    let (got, want) = (host(b.expm1()), r.expm1());
    for (g, w) in got.iter().zip(want.as_slice()) {
        assert!((g - w).abs() <= 1e-5 * w.abs(), "expm1: {g} vs {w} (relative accuracy near 0)");
    }
}

/// burn's schedule modules compute the same γ and γ' as vdm-core's scalar schedules.
#[test]
fn schedule_modules_match_core() {
    let device = Default::default();
    let times: Vec<f64> = (0..=20).map(|i| i as f64 / 20.0).collect();
    let t = Tensor::<B, 1>::from_floats(times.iter().map(|&t| t as f32).collect::<Vec<_>>().as_slice(), &device);
    let cases: Vec<(ScheduleConfig, Box<dyn NoiseSchedule<f64>>)> = vec![
        (ScheduleConfig::Scalar { gamma_min: -13.3, gamma_max: 5.0 }, Box::new(LearnedScalar::init(-13.3, 5.0))),
        (ScheduleConfig::Fixed { gamma_min: -10.0, gamma_max: 8.0 }, Box::new(LearnedScalar::init(-10.0, 8.0))),
        (
            ScheduleConfig::Net {
                gamma_min: -13.3,
                gamma_max: 5.0,
                width: 64,
                seed: 9,
                shape_objective: ShapeObjective::Vlb,
                learn_endpoints: true,
            },
            Box::new(MonotoneNet::init_shape(64, 9).with_endpoints(-13.3, 5.0)),
        ),
    ];
    for (config, reference) in cases {
        let (g, gp) = config.init::<B>(&device).gamma_and_prime(t.clone());
        let g: Vec<f64> = g.into_data().convert::<f64>().to_vec().unwrap();
        let gp: Vec<f64> = gp.into_data().convert::<f64>().to_vec().unwrap();
        let want_g: Vec<f64> = times.iter().map(|&t| reference.gamma(t)).collect();
        let want_gp: Vec<f64> = times.iter().map(|&t| reference.gamma_prime(t)).collect();
        assert_close(&format!("{config:?} γ"), &g, &want_g, 1e-5);
        assert_close(&format!("{config:?} γ'"), &gp, &want_gp, 1e-4);
    }
}

fn tiny_score() -> ScoreNetConfig {
    ScoreNetConfig {
        n_embd: 8,
        n_layer: 1,
        groups: 4,
        dropout: 0.0,
        fourier_exponents: vec![4],
        ..ScoreNetConfig::default()
    }
}

#[test]
fn a_fresh_score_network_predicts_eps_hat_equal_to_z() {
    let device = Default::default();
    let net = tiny_score().init::<B>(1, &device);
    let z = Tensor::<B, 4>::from_floats([[[[0.3, -1.2], [2.0, 0.0]]]], &device);
    let out = net.forward(z.clone(), Tensor::from_floats([-3.0], &device));
    let (a, b): (Vec<f32>, Vec<f32>) = (out.into_data().to_vec().unwrap(), z.into_data().to_vec().unwrap());
    assert_eq!(a, b, "the zero-initialised output convolution must make ε̂ = z");
}

/// Which schedule parameters have a non-zero gradient, in visiting order.
struct NonZeroGrads<'a> {
    grads: &'a GradientsParams,
    nonzero: Vec<bool>,
}

impl ModuleVisitor<Autodiff<B>> for NonZeroGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Autodiff<B>, D>>) {
        let g = self.grads.get::<B, D>(param.id);
        self.nonzero.push(g.is_some_and(|g| g.abs().sum().into_scalar() > 0.0));
    }
}

/// Training signal reaches every parameter of the learned schedules, endpoints included, in
/// continuous and in discrete time; frozen endpoints get none.
#[test]
fn vlb_gradients_reach_the_learned_schedules() {
    let device = Default::default();
    let images = vdm_backends::data::digits().select(&[0, 1, 2, 3]);
    let schedules = [
        ScheduleConfig::Scalar { gamma_min: -13.3, gamma_max: 5.0 },
        ScheduleConfig::Net {
            gamma_min: -13.3,
            gamma_max: 5.0,
            width: 16,
            seed: 1,
            shape_objective: ShapeObjective::Vlb,
            learn_endpoints: true,
        },
        ScheduleConfig::Net {
            gamma_min: -13.3,
            gamma_max: 5.0,
            width: 16,
            seed: 1,
            shape_objective: ShapeObjective::Vlb,
            learn_endpoints: false,
        },
    ];
    for (schedule, time) in schedules.iter().flat_map(|s| [(s, TimeMode::Continuous), (s, TimeMode::Discrete(10))]) {
        let model = vdm_backends::config::VdmConfig {
            score: tiny_score(),
            schedule: schedule.clone(),
            ..vdm_backends::config::VdmConfig::digits()
        }
        .init::<Autodiff<B>>(1, &device);
        let noise = Noise::draw(&mut SplitMix64::new(0), images.len(), images.features());
        let terms = model.vlb_terms(pixels_tensor(&images, &device), &noise, time);
        let loss = terms.total().0.mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut visitor = NonZeroGrads { grads: &grads, nonzero: Vec::new() };
        model.schedule.visit(&mut visitor);
        let want = match schedule {
            // b, w, l1_w, l2_w, l2_b, l3_w
            ScheduleConfig::Net { learn_endpoints, .. } => [[*learn_endpoints; 2].as_slice(), &[true; 4]].concat(),
            _ => vec![true; 2],
        };
        assert_eq!(visitor.nonzero, want, "{schedule:?} {time}: which schedule parameters got a gradient");
    }
}
