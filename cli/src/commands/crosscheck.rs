//! `vdm crosscheck`: one checkpoint on the CPU reference (burn-ndarray) and on another backend
//! (CUDA or wgpu), with the same seeds: the bound per image, seeded samples, and a few training
//! steps from the checkpoint's state, each against a stated tolerance.

use std::path::PathBuf;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use vdm_backends::checkpoint::Checkpoint;
use vdm_backends::config::ModelConfig;
use vdm_backends::eval::{EvalOptions, Likelihood};
use vdm_backends::model::ddpm::Ddpm;
use vdm_backends::model::{Generative, TimeMode, Trainable, Vdm};
use vdm_backends::ops::TrainBackend;
use vdm_backends::sample::{SampleOptions, SamplerKind, Spacing};
use vdm_backends::train::load_ema;
use vdm_backends::{ImageSet, Trainer};

use super::{evaluate_with_progress, load_checkpoint_data, open_checkpoint, report_line, sample_with_progress};
use crate::device::{dispatch, BackendJob, Device};

/// What `vdm crosscheck` was asked for.
#[derive(clap::Args)]
pub struct CrosscheckArgs {
    /// A checkpoint or run directory.
    #[arg(long, default_value = "runs/digits")]
    pub checkpoint: PathBuf,
    /// Test images to evaluate.
    #[arg(long, default_value_t = 256)]
    pub images: usize,
    /// A VDM's bound to compare: 0 continuous, T > 0 discrete (default: the run's `[eval]` bound).
    #[arg(long = "time-steps")]
    pub time_steps: Option<usize>,
    /// Largest accepted |bpd_cpu − bpd_other| for any image.
    #[arg(long, default_value_t = 1e-3)]
    pub tolerance: f64,
    /// Images to draw on both backends (DDIM, η = 0, the same starting noise); 0 skips.
    #[arg(long, default_value_t = 16)]
    pub samples: usize,
    /// DDIM steps of those samples (at most a DDPM's T).
    #[arg(long = "sample-steps", default_value_t = 50)]
    pub sample_steps: usize,
    /// Largest accepted share of the samples' pixel values that differ.
    #[arg(long = "sample-tolerance", default_value_t = 0.01)]
    pub sample_tolerance: f64,
    /// Training steps from the checkpoint's state (model, optimiser, step) on both; 0 skips.
    #[arg(long = "train-steps", default_value_t = 3)]
    pub train_steps: usize,
    /// Largest accepted relative difference of each step's loss and of the parameters after
    /// the steps (‖θ_cpu − θ_other‖ / ‖θ_cpu‖).
    #[arg(long = "train-tolerance", default_value_t = 1e-4)]
    pub train_tolerance: f64,
    /// Seed of the evaluation noise and of the samples.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
}

pub fn crosscheck(args: CrosscheckArgs, device: Device) -> Result<(), String> {
    if device == Device::Cpu {
        return Err("--device cpu: crosscheck compares another backend (cuda or wgpu) with the CPU's".into());
    }
    if args.images == 0 {
        return Err("--images must be at least 1".into());
    }
    if args.samples > 0 && args.sample_steps == 0 {
        return Err("--sample-steps must be at least 1".into());
    }
    for (flag, value) in [
        ("--tolerance", args.tolerance),
        ("--sample-tolerance", args.sample_tolerance),
        ("--train-tolerance", args.train_tolerance),
    ] {
        if !(value >= 0.0 && value.is_finite()) {
            return Err(format!("{flag} must be a non-negative number, got {value}"));
        }
    }
    if let Some(t) = args.time_steps {
        TimeMode::from_steps(t).map_err(|e| format!("--time-steps: {e}"))?;
    }
    dispatch(device, CrosscheckJob { args, name: device.name() })
}

struct CrosscheckJob {
    args: CrosscheckArgs,
    name: &'static str,
}

impl BackendJob for CrosscheckJob {
    type Output = ();

    fn run<G: TrainBackend>(self, device: G::Device) -> Result<(), String> {
        cpu::compare::<G>(self, device)
    }
}

#[cfg(feature = "ndarray")]
mod cpu {
    use super::*;
    use vdm_backends::{Autodiff, Cpu};

    pub fn compare<G: TrainBackend>(job: CrosscheckJob, device: G::Device) -> Result<(), String> {
        let checkpoint = open_checkpoint(&job.args.checkpoint)?;
        println!(
            "checkpoint {} (step {}): the CPU (burn-ndarray) against {}",
            checkpoint.dir.display(),
            checkpoint.state.step,
            job.name
        );
        let eval = &checkpoint.state.run.eval;
        match (&checkpoint.state.run.model, job.args.time_steps) {
            (ModelConfig::Vdm(_), steps) => {
                let bound = match steps {
                    Some(t) => TimeMode::from_steps(t).map_err(|e| format!("--time-steps: {e}"))?,
                    None => Vdm::<Cpu>::reported_bound(eval)?,
                };
                job.families::<Vdm<Autodiff<Cpu>>, Vdm<G>, G>(&checkpoint, bound, job.args.sample_steps, &device)
            }
            (ModelConfig::Ddpm(c), Some(_)) => Err(format!(
                "--time-steps applies to VDM runs; this DDPM's T is its model.time_steps = {}",
                c.time_steps
            )),
            (ModelConfig::Ddpm(c), None) => {
                let bound = Ddpm::<Cpu>::reported_bound(eval)?;
                let sample_steps = job.args.sample_steps.min(c.time_steps);
                job.families::<Ddpm<Autodiff<Cpu>>, Ddpm<G>, G>(&checkpoint, bound, sample_steps, &device)
            }
        }
    }

    impl CrosscheckJob {
        /// The three checks for a model of family `C` on the CPU and `M` (the same family) on `G`;
        /// an error naming every check out of its tolerance.
        fn families<C, M, G>(
            &self,
            checkpoint: &Checkpoint,
            bound: <C::InnerModule as Likelihood<Cpu>>::Bound,
            sample_steps: usize,
            device: &G::Device,
        ) -> Result<(), String>
        where
            G: TrainBackend,
            C: Trainable<Autodiff<Cpu>, InnerModule: Generative<Cpu>>,
            M: Trainable<
                G,
                InnerModule: Generative<G::InnerBackend, Bound = <C::InnerModule as Likelihood<Cpu>>::Bound>,
            >,
        {
            let args = &self.args;
            let cpu_device = Default::default();
            let (train, test) = load_checkpoint_data(checkpoint)?;
            let mut failures = Vec::new();

            // 1. The bound per image, with the same draws of time and noise.
            let test = test.select(&(0..args.images.min(test.len())).collect::<Vec<_>>());
            let options = EvalOptions { batch_size: checkpoint.state.run.eval.batch_size, draws: 1, seed: args.seed };
            let cpu_model: C::InnerModule = load_ema(checkpoint, &cpu_device)?;
            let gpu_model: M::InnerModule = load_ema(checkpoint, device)?;
            let cpu = evaluate_with_progress(&cpu_model, &test, bound, &options, &cpu_device)?;
            let gpu = evaluate_with_progress(&gpu_model, &test, bound, &options, device)?;
            let name = cpu_model.bound_name(bound, 1);
            println!("bound, cpu : {}", report_line(&name, &cpu));
            println!("bound, {:<4}: {}", self.name, report_line(&name, &gpu));
            let largest = cpu.per_image.iter().zip(&gpu.per_image).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            println!(
                "  largest per-image difference {largest:.2e} bpd over {} images (tolerance {:.0e})",
                test.len(),
                args.tolerance
            );
            if !within(largest, args.tolerance) {
                failures.push(format!("the bound differs by {largest:.2e} bpd on one image"));
            }

            // 2. Seeded samples: DDIM (η = 0) from the same starting noise.
            if args.samples > 0 {
                let options = SampleOptions {
                    n: args.samples,
                    steps: sample_steps,
                    sampler: SamplerKind::Ddim { eta: 0.0 },
                    spacing: Spacing::Time,
                    seed: args.seed,
                    batch_size: args.samples,
                };
                let (cpu, _) = sample_with_progress(&cpu_model, checkpoint, &options, &cpu_device)?;
                let (gpu, _) = sample_with_progress(&gpu_model, checkpoint, &options, device)?;
                let (share, largest) = pixel_differences(&cpu, &gpu);
                println!(
                    "samples ({} images, DDIM {} steps): {:.3}% of pixel values differ, by at most {largest} levels (tolerance {:.3}%)",
                    args.samples,
                    sample_steps,
                    100.0 * share,
                    100.0 * args.sample_tolerance
                );
                if !within(share, args.sample_tolerance) {
                    failures.push(format!("{:.3}% of the samples' pixel values differ", 100.0 * share));
                }
            }

            // 3. Training steps from the checkpoint's state: the same batches and noise.
            if args.train_steps > 0 {
                let mut cpu = Trainer::<Autodiff<Cpu>, C>::resume(checkpoint, &cpu_device)?;
                let mut gpu = Trainer::<G, M>::resume(checkpoint, device)?;
                let mut largest = 0.0f64;
                for _ in 0..args.train_steps {
                    let (a, b) = (cpu.train_step(&train)?, gpu.train_step(&train)?);
                    let relative = (a.loss - b.loss).abs() / a.loss.abs().max(f64::MIN_POSITIVE);
                    println!(
                        "train step {}: loss {:.6} (cpu) {:.6} ({}), relative difference {relative:.2e}",
                        cpu.step(),
                        a.loss,
                        b.loss,
                        self.name
                    );
                    largest = largest.max(relative);
                }
                let (p, q) = (parameters(cpu.model()), parameters(gpu.model()));
                let distance = relative_distance(&p, &q);
                println!(
                    "  parameters after {} steps: checksum (sum) {:.6} (cpu) {:.6} ({}), ‖Δθ‖/‖θ‖ = {distance:.2e} (tolerance {:.0e})",
                    args.train_steps,
                    p.iter().map(|&v| v as f64).sum::<f64>(),
                    q.iter().map(|&v| v as f64).sum::<f64>(),
                    self.name,
                    args.train_tolerance
                );
                if !within(largest, args.train_tolerance) {
                    failures.push(format!("a training loss differs by {largest:.2e} (relative)"));
                }
                if !within(distance, args.train_tolerance) {
                    failures.push(format!("the trained parameters differ by {distance:.2e} (relative)"));
                }
            }

            match failures.is_empty() {
                true => {
                    println!("{} agrees with the CPU within every tolerance", self.name);
                    Ok(())
                }
                false => Err(format!("{} and the CPU disagree: {}", self.name, failures.join("; "))),
            }
        }
    }
}

#[cfg(not(feature = "ndarray"))]
mod cpu {
    use super::*;

    pub fn compare<G: TrainBackend>(_: CrosscheckJob, _: G::Device) -> Result<(), String> {
        Err("crosscheck compares a backend with the CPU's, and this binary was built without it \
             (the `ndarray` feature)"
            .into())
    }
}

/// `difference ≤ tolerance`; false for a NaN difference, which fails the check.
fn within(difference: f64, tolerance: f64) -> bool {
    difference <= tolerance
}

/// The share of pixel values that differ between two sets of images of one shape, and the largest
/// difference in levels.
fn pixel_differences(a: &ImageSet, b: &ImageSet) -> (f64, u8) {
    let (a, b) = (&a.pixels, &b.pixels);
    let differing = a.iter().zip(b).filter(|(x, y)| x != y).count();
    let largest = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0);
    (differing as f64 / a.len().max(1) as f64, largest)
}

/// Every float parameter of `model`, flattened in the module's visiting order.
fn parameters<B: Backend, M: Module<B>>(model: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let values = param.val().into_data().convert::<f32>();
            self.0.extend(values.as_slice::<f32>().expect("converted to f32"));
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

/// `‖p − q‖ / ‖p‖` (Euclidean norms, in f64).
fn relative_distance(p: &[f32], q: &[f32]) -> f64 {
    let squared = |it: &mut dyn Iterator<Item = f64>| it.map(|v| v * v).sum::<f64>().sqrt();
    let difference = squared(&mut p.iter().zip(q).map(|(&a, &b)| a as f64 - b as f64));
    difference / squared(&mut p.iter().map(|&a| a as f64)).max(f64::MIN_POSITIVE)
}
