//! The trainer's step against its formulas on a tiny model: global-norm clipping, AdamW with
//! decoupled weight decay (Loshchilov & Hutter 2019, Algorithm 2), linear warmup, the EMA and its
//! ramp, and the batches with random flips.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use common::{gradients, tiny_run, B};
use vdm_backends::config::TrainConfig;
use vdm_backends::model::Trainable;
use vdm_backends::parallel::Shard;
use vdm_backends::tensor::pixels_tensor;
use vdm_backends::train::Trainer;
use vdm_core::rng::SplitMix64;

/// Every parameter's values, one vector per parameter in visiting order.
fn parameter_values<Bk: Backend, M: Module<Bk>>(module: &M) -> Vec<Vec<f64>> {
    struct Collect(Vec<Vec<f64>>);
    impl<Bk: Backend> ModuleVisitor<Bk> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
            self.0.push(param.val().into_data().iter::<f64>().collect());
        }
    }
    let mut c = Collect(Vec::new());
    module.visit(&mut c);
    c.0
}

/// The largest difference between `got` and `want`, relative to `1 + |want|`.
fn max_error(got: &[Vec<f64>], want: &[Vec<f64>]) -> f64 {
    got.iter().flatten().zip(want.iter().flatten()).map(|(g, w)| (g - w).abs() / (1.0 + w.abs())).fold(0.0, f64::max)
}

/// Four steps with the optimiser replayed by hand in `f64`:
/// `g ← g · min(1, c/‖g‖)`, `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `θ ← θ(1 − η_t λ) − η_t m̂/(√v̂ + ε)` with `m̂ = m/(1−β₁ᵗ)`, `v̂ = v/(1−β₂ᵗ)`,
/// `η_t = η min(1, (t+1)/warmup)`, then `θ̄ ← d θ̄ + (1−d) θ` with `d = min(decay, (1+t)/(10+t))`.
/// It fails on clipping after the update, coupled (L2) weight decay, a warmup or ramp off by one step.
#[test]
fn a_step_is_clipping_then_adamw_with_warmup_then_the_ema() {
    let device = Default::default();
    for clip in [Some(1e-3), None] {
        let mut run = tiny_run(10);
        run.train = TrainConfig {
            lr: 2e-3,
            warmup_steps: 3,
            weight_decay: 0.1,
            clip_grad_norm: clip,
            ema_decay: 0.95,
            beta1: 0.9,
            beta2: 0.99,
            epsilon: 1e-8,
            ..run.train
        };
        let t = run.train.clone();
        let (train, _) = run.data.load(0).unwrap();
        let mut trainer = Trainer::<B>::new(&run, train.shape(), &device).unwrap();
        let mut theta = parameter_values(trainer.model());
        let mut ema = parameter_values(trainer.ema());
        assert_eq!(max_error(&theta, &ema), 0.0, "the EMA starts at the model's weights");
        let (mut m, mut v): (Vec<Vec<f64>>, Vec<Vec<f64>>) =
            (theta.iter().map(|p| vec![0.0; p.len()]).collect(), theta.iter().map(|p| vec![0.0; p.len()]).collect());
        for step in 0..4 {
            let batch = trainer.next_batch(&train).unwrap();
            let (_, grads) = Trainable::loss_and_gradients(
                trainer.model(),
                pixels_tensor::<B>(&batch, &device),
                Shard::whole(batch.len()),
                &mut SplitMix64::new(step as u64),
                &run.model,
                &run.train,
            )
            .unwrap();
            let g = gradients(trainer.model(), &grads);
            let norm = g.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
            let scale = clip.map_or(1.0, |c| (c / norm).min(1.0));
            let lr = t.lr * ((step + 1) as f64 / t.warmup_steps as f64).min(1.0);
            let decay = t.ema_decay.min((1.0 + step as f64) / (10.0 + step as f64));
            let seen_norm = f64::from(trainer.apply_gradients(grads).into_scalar());
            assert!((seen_norm - norm).abs() < 1e-6 * norm, "step {step}: norm {seen_norm} vs {norm}");
            assert!(clip.is_none_or(|c| norm > c), "the clipping case must clip");
            let time = step + 1;
            for (p, grad) in g.iter().enumerate() {
                if grad.is_empty() {
                    continue; // no gradient: AdamW leaves the parameter alone
                }
                for i in 0..grad.len() {
                    let gi = grad[i] * scale;
                    m[p][i] = t.beta1 * m[p][i] + (1.0 - t.beta1) * gi;
                    v[p][i] = t.beta2 * v[p][i] + (1.0 - t.beta2) * gi * gi;
                    let (m_hat, v_hat) = (m[p][i] / (1.0 - t.beta1.powi(time)), v[p][i] / (1.0 - t.beta2.powi(time)));
                    theta[p][i] = theta[p][i] * (1.0 - lr * t.weight_decay) - lr * m_hat / (v_hat.sqrt() + t.epsilon);
                }
            }
            for (e, th) in ema.iter_mut().flatten().zip(theta.iter().flatten()) {
                *e = decay * *e + (1.0 - decay) * th;
            }
            let (model_error, ema_error) = (
                max_error(&parameter_values(trainer.model()), &theta),
                max_error(&parameter_values(trainer.ema()), &ema),
            );
            assert!(
                model_error < 2e-6 && ema_error < 2e-6,
                "clip {clip:?}, step {step}: model off by {model_error:e}, EMA by {ema_error:e}"
            );
        }
        assert_eq!(trainer.step(), 4);
    }
}

/// With `hflip`, each image of a batch is the same image or its mirror, about half of them
/// mirrored, the same way for the same seed, and other images for another seed; without it,
/// none is.
#[test]
fn random_flips_mirror_about_half_of_each_batch_reproducibly() {
    let device = Default::default();
    let mut run = tiny_run(10);
    run.train.batch_size = 64;
    let (train, _) = run.data.load(0).unwrap();
    let batches = |hflip: bool, seed: u64| {
        let mut run = run.clone();
        run.train.hflip = hflip;
        run.train.seed = seed;
        let trainer = Trainer::<B>::new(&run, train.shape(), &device).unwrap();
        (0..4).map(|step| trainer.batch_at(step, &train).unwrap()).collect::<Vec<_>>()
    };
    let (plain, flipped) = (batches(false, 7), batches(true, 7));
    assert_eq!(flipped, batches(true, 7), "flips depend on the seed and step alone");
    assert_ne!(flipped, batches(true, 8));
    let mut mirrored = 0;
    for (p, f) in plain.iter().zip(&flipped) {
        for i in 0..p.len() {
            let mut mirror = p.select(&[i]);
            mirror.flip_horizontally(0);
            let (same, is_mirror) = (f.image(i) == p.image(i), f.image(i) == mirror.image(0));
            assert!(same || is_mirror, "image {i} of a flipped batch is neither the image nor its mirror");
            mirrored += usize::from(is_mirror && !same);
        }
    }
    // 256 images, each mirrored with probability ½ (a symmetric image counts as not mirrored).
    assert!((96..=160).contains(&mirrored), "{mirrored} of 256 images mirrored");
}
