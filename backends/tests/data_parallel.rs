//! Data-parallel training (`vdm_backends::parallel`): replicas that split every batch and sum
//! their gradients with burn-collective's all-reduce train the same run as one device, to `f32`
//! rounding: the same losses and gradient norms at every step and the same weights after them.

mod common;

use std::sync::Mutex;

use common::{net_schedule, parameters, tiny_run, tiny_score, tiny_unet, vdm_of, B};
use vdm_backends::config::{DdpmConfig, ModelConfig, RunConfig};
use vdm_backends::data::ImageSet;
use vdm_backends::model::ddpm::Ddpm;
use vdm_backends::model::{Trainable, Vdm};
use vdm_backends::ops::TrainBackend;
use vdm_backends::parallel::{Layout, Replica, Shard};
use vdm_backends::schedule::ShapeObjective;
use vdm_backends::train::Trainer;
use vdm_backends::Error;

/// burn-collective serves one collective per backend and process: the tests take turns.
static COLLECTIVE: Mutex<()> = Mutex::new(());

const STEPS: usize = 4;

/// What a replica saw: every step's (loss, gradient norm), then the weights and the EMA's.
struct Trace {
    stats: Vec<(f64, f64)>,
    weights: Vec<f32>,
    ema: Vec<f32>,
}

fn trace<Bk: TrainBackend, M: Trainable<Bk>>(mut trainer: Trainer<Bk, M>, train: &ImageSet) -> Trace {
    let stats = (0..STEPS)
        .map(|_| {
            let s = trainer.train_step(train).unwrap();
            (s.loss, s.grad_norm)
        })
        .collect();
    trainer.leave().unwrap();
    Trace { stats, weights: parameters(trainer.model()), ema: parameters(trainer.ema()) }
}

/// `run` trained for [`STEPS`] steps on one device, and by `replicas` replicas (threads on the
/// backend's default device, one trainer each, made by [`Trainer::replicate`]).
fn one_and_many<Bk: TrainBackend, M: Trainable<Bk> + Send>(run: &RunConfig, replicas: usize) -> (Trace, Vec<Trace>) {
    let (train, _) = run.data.load(0).unwrap();
    let device = Default::default();
    let first = Trainer::<Bk, M>::new(run, train.shape(), &device).unwrap();
    let copies: Vec<_> = (1..replicas).map(|_| first.replicate(&device)).collect();
    let alone = trace(first.replicate(&device), &train);
    let layout = Layout { local: replicas, nodes: None };
    let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let together = std::thread::scope(|scope| {
        let handles: Vec<_> = std::iter::once(first)
            .chain(copies)
            .enumerate()
            .map(|(rank, mut trainer)| {
                let (layout, train, device) = (&layout, &train, &device);
                scope.spawn(move || {
                    trainer.join(Replica::join(rank, layout, device).unwrap()).unwrap();
                    trace(trainer, train)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    (alone, together)
}

/// The largest difference relative to the largest magnitude.
fn relative(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().map(|v| v.abs()).fold(0.0f32, f32::max) as f64;
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max) / scale
}

/// Each replica equals the others exactly (the same summed gradients, the same step) and the
/// one-device run to `f32` rounding.
fn assert_same_run(what: &str, alone: &Trace, together: &[Trace]) {
    for (rank, t) in together.iter().enumerate() {
        assert!(
            t.weights == together[0].weights && t.ema == together[0].ema,
            "{what}: replica {rank} drifted from replica 0"
        );
        for (step, (&(loss, norm), &(want_loss, want_norm))) in t.stats.iter().zip(&alone.stats).enumerate() {
            assert!(
                (loss - want_loss).abs() <= 1e-5 * want_loss.abs(),
                "{what}: step {step}: loss {loss} vs {want_loss} on one device"
            );
            assert!(
                (norm - want_norm).abs() <= 1e-4 * want_norm,
                "{what}: step {step}: gradient norm {norm} vs {want_norm}"
            );
        }
    }
    let (weights, ema) = (relative(&together[0].weights, &alone.weights), relative(&together[0].ema, &alone.ema));
    eprintln!(
        "{what}: {} replicas against one device: weights {weights:.2e}, EMA {ema:.2e} (relative)",
        together.len()
    );
    assert!(weights < 1e-5 && ema < 1e-5, "{what}: weights differ by {weights:.2e}, EMA by {ema:.2e} of their largest");
}

/// VDM with a learned monotone-network schedule under the variance objective (the two-pass
/// gradient) and under the bound, split 2 ways, and 3 ways (shares of 5, 5 and 6 images: the
/// weighting of unequal shares).
#[test]
fn vdm_replicas_train_the_one_device_run() {
    for (objective, replicas) in [(ShapeObjective::Variance, 2), (ShapeObjective::Vlb, 3)] {
        let mut run = tiny_run(STEPS);
        vdm_of(&mut run).score = tiny_score();
        vdm_of(&mut run).schedule = net_schedule(objective);
        let (alone, together) = one_and_many::<B, Vdm<B>>(&run, replicas);
        assert_same_run(&format!("VDM, {objective:?} shape, {replicas} replicas"), &alone, &together);
    }
}

/// A DDPM (`L_simple`, antithetic discrete times), split 2 ways.
#[test]
fn ddpm_replicas_train_the_one_device_run() {
    let run = RunConfig {
        model: ModelConfig::Ddpm(DdpmConfig { unet: tiny_unet(), time_steps: 20, ..DdpmConfig::default() }),
        ..tiny_run(STEPS)
    };
    let (alone, together) = one_and_many::<B, Ddpm<B>>(&run, 2);
    assert_same_run("DDPM, 2 replicas", &alone, &together);
}

/// The same on the Vulkan backend (burn-collective on CubeCL's kernels, as on CUDA): two replicas
/// on the one device lavapipe offers (`cargo test -p vdm-backends --features wgpu --test
/// data_parallel`; `.ci/run` does).
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_replicas_train_the_one_device_run() {
    type W = vdm_backends::Autodiff<vdm_backends::Wgpu>;
    let mut run = tiny_run(STEPS);
    vdm_of(&mut run).schedule = net_schedule(ShapeObjective::Variance);
    let (alone, together) = one_and_many::<W, Vdm<W>>(&run, 2);
    assert_same_run("wgpu: VDM, Variance shape, 2 replicas", &alone, &together);
}

/// Shares cover the batch once, in order, and differ in size by at most one image.
#[test]
fn shares_cover_the_batch() {
    for (n, replicas) in [(16, 2), (16, 3), (7, 7), (100, 8)] {
        let shards: Vec<Shard> = (0..replicas).map(|r| Shard::of_replica(r, replicas, n)).collect();
        let indices: Vec<usize> = shards.iter().flat_map(|s| s.range()).collect();
        assert_eq!(indices, (0..n).collect::<Vec<_>>(), "{n} images among {replicas}");
        let sizes: Vec<usize> = shards.iter().map(|s| s.len).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        assert!((shards.iter().map(Shard::weight).sum::<f64>() - 1.0).abs() < 1e-12);
    }
}

/// Replicas that do not hold the same run (here, one a step ahead) are refused by every replica,
/// and a batch smaller than the replica count is refused before any work.
#[test]
fn replicas_of_different_runs_are_refused() {
    let run = tiny_run(STEPS);
    let (train, _) = run.data.load(0).unwrap();
    let device = Default::default();
    let first = Trainer::<B>::new(&run, train.shape(), &device).unwrap();
    let mut ahead = first.replicate(&device);
    ahead.train_step(&train).unwrap();
    let layout = Layout { local: 2, nodes: None };
    let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let refusals = std::thread::scope(|scope| {
        let handles: Vec<_> = [first, ahead]
            .into_iter()
            .enumerate()
            .map(|(rank, mut trainer)| {
                let (layout, device) = (&layout, &device);
                scope.spawn(move || trainer.join(Replica::join(rank, layout, device).unwrap()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    for refused in refusals {
        match refused {
            Err(Error::Collective(message)) => assert!(message.contains("do not hold the same run"), "{message}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    let small = Layout { local: 17, nodes: None }.check(run.train.batch_size).unwrap_err();
    assert!(small.to_string().contains("smaller than the 17 replicas"), "{small}");
}
