#![warn(missing_docs)]
//! vdm-rs: Variational Diffusion Models and DDPM with exact likelihoods.
//!
//! This umbrella crate re-exports the backend-free math ([`core`], the `vdm-core` crate), the
//! burn backends ([`backends`], the `vdm-backends` crate), and at its root what a program that
//! trains, evaluates and samples needs:
//!
//! ```no_run
//! use vdm::{evaluate, sample, Autodiff, Cpu, EvalOptions, RunConfig, SampleOptions, TimeMode, Trainer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let run = RunConfig::digits();
//! let device = Default::default();
//! let (train, test) = run.data.load(run.train.seed)?;
//! let mut trainer = Trainer::<Autodiff<Cpu>>::new(&run, train.shape(), &device)?;
//! while trainer.step() < run.train.steps {
//!     trainer.train_step(&train)?;
//! }
//! let report = evaluate(trainer.ema(), &test, TimeMode::Continuous, &EvalOptions::default(), &device, |_| {})?;
//! let images = sample(trainer.ema(), [8, 8], &SampleOptions::default(), &device, &mut || {})?;
//! # Ok(())
//! # }
//! ```
pub use vdm_backends as backends;
pub use vdm_core as core;

#[cfg(feature = "ndarray")]
pub use vdm_backends::Cpu;
pub use vdm_backends::{
    evaluate, load_ema, sample, Autodiff, Checkpoint, DataConfig, Ddpm, DdpmConfig, Denoiser, EvalConfig, EvalOptions,
    EvalReport, Generative, ImageSet, Likelihood, ModelConfig, RunConfig, SampleOptions, Sampler, SamplerKind,
    TimeMode, TrainConfig, Trainer, Vdm, VdmConfig,
};
