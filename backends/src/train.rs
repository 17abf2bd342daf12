//! Training: AdamW with warmup, optional global-norm gradient clipping, an EMA of the weights,
//! antithetic times, and checkpoints written atomically and resumable bit-for-bit.
//!
//! Every step's randomness (batch, noise, times, dropout) is derived from `(seed, step)`, so a
//! run resumed from a checkpoint continues exactly as if it had never stopped.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::Recorder;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use serde::{Deserialize, Serialize};
use vdm_core::rng::SplitMix64;
use vdm_core::vlb;

use crate::checkpoint::{read_state, write_atomically, CheckpointState, Rec};
use crate::config::RunConfig;
use crate::data::{permutation, ImageSet};
use crate::model::{pixels_tensor, Noise, TimeMode, Vdm};

/// Optimisation settings (defaults: VDM's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Seed of everything random in training.
    pub seed: u64,
    /// Images per step.
    pub batch_size: usize,
    /// Total optimisation steps.
    pub steps: usize,
    /// Peak learning rate (VDM: 2e-4).
    pub lr: f64,
    /// Steps of linear learning-rate warmup (VDM: 100).
    pub warmup_steps: usize,
    /// AdamW `β₁` (0.9).
    pub beta1: f64,
    /// AdamW `β₂` (VDM: 0.99).
    pub beta2: f64,
    /// AdamW `ε` (1e-8).
    pub epsilon: f64,
    /// Decoupled weight decay (VDM: 0.01).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value (off when absent).
    pub clip_grad_norm: Option<f64>,
    /// EMA decay of the weights (VDM: 0.9999), warmed up as `min(decay, (1 + k)/(10 + k))`.
    pub ema_decay: f64,
    /// Diffusion steps `T` of the training loss; 0 trains the continuous-time loss.
    pub time_steps: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            batch_size: 64,
            steps: 2000,
            lr: 2e-4,
            warmup_steps: 100,
            beta1: 0.9,
            beta2: 0.99,
            epsilon: 1e-8,
            weight_decay: 0.01,
            clip_grad_norm: None,
            ema_decay: 0.9999,
            time_steps: 0,
        }
    }
}

impl TrainConfig {
    /// Checks the settings, naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [("batch_size", self.batch_size), ("steps", self.steps)];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("train.{name} must be at least 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("train.lr must be positive, got {}", self.lr));
        }
        for (name, v) in [("beta1", self.beta1), ("beta2", self.beta2), ("ema_decay", self.ema_decay)] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("train.{name} must be in [0, 1), got {v}"));
            }
        }
        if let Some(c) = self.clip_grad_norm {
            if !(c > 0.0) {
                return Err(format!("train.clip_grad_norm must be positive, got {c}"));
            }
        }
        Ok(())
    }

    /// The learning rate at `step` (0-based): linear warmup, then constant.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            self.lr * (step + 1) as f64 / self.warmup_steps as f64
        } else {
            self.lr
        }
    }

    /// The EMA decay used after `step` updates.
    pub fn ema_decay_at(&self, step: usize) -> f64 {
        self.ema_decay.min((1.0 + step as f64) / (10.0 + step as f64))
    }

    fn optimizer<B: AutodiffBackend>(&self) -> OptimizerAdaptor<AdamW, Vdm<B>, B> {
        AdamWConfig::new()
            .with_beta_1(self.beta1 as f32)
            .with_beta_2(self.beta2 as f32)
            .with_epsilon(self.epsilon as f32)
            .with_weight_decay(self.weight_decay as f32)
            .init()
    }
}

/// A seed for `(seed, stream, index)`: SplitMix64 of a mix of the three.
pub fn derive_seed(seed: u64, stream: u64, index: u64) -> u64 {
    let mut rng = SplitMix64::new(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
    rng.next_u64()
}

const STREAM_EPOCH: u64 = 1;
const STREAM_STEP: u64 = 2;

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// The batch's mean VLB in bits per dimension (the loss).
    pub bpd: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate used.
    pub lr: f64,
}

/// The training state: model, EMA, optimiser and step counter.
pub struct Trainer<B: AutodiffBackend> {
    /// The model being optimised.
    pub model: Vdm<B>,
    /// The exponential moving average of its weights (use it for evaluation and sampling).
    pub ema: Vdm<B::InnerBackend>,
    optim: OptimizerAdaptor<AdamW, Vdm<B>, B>,
    /// Steps taken so far.
    pub step: usize,
    run: RunConfig,
    device: B::Device,
}


impl<B: AutodiffBackend> Trainer<B> {
    /// A new model for `run`, initialised with `run.train.seed`.
    pub fn new(run: &RunConfig, device: &B::Device) -> Self {
        B::seed(device, derive_seed(run.train.seed, 0, 0));
        let model = run.model.init::<B>(device);
        let ema = model.valid();
        Self { model, ema, optim: run.train.optimizer(), step: 0, run: run.clone(), device: device.clone() }
    }

    /// Continues from the checkpoint at `path` (a checkpoint, or a run directory: see
    /// [`checkpoint_dir`]) with the run configuration saved in it.
    pub fn resume(path: &Path, device: &B::Device) -> Result<Self, String> {
        let (ckpt, state) = read_state(path)?;
        let rec = Rec::new();
        let load_err = |what: &str, e: &dyn std::fmt::Display| format!("{}: loading {what}: {e}", ckpt.display());
        let run = state.run;
        let model = run.model.init::<B>(device).load_file(ckpt.join("model"), &rec, device).map_err(|e| load_err("model", &e))?;
        let ema = run.model.init::<B::InnerBackend>(device).load_file(ckpt.join("ema"), &rec, device).map_err(|e| load_err("ema", &e))?;
        let optim_record = Recorder::<B>::load(&rec, ckpt.join("optim"), device).map_err(|e| load_err("optimiser", &e))?;
        let optim = run.train.optimizer().load_record(optim_record);
        Ok(Self { model, ema, optim, step: state.step, run, device: device.clone() })
    }

    /// The run's configuration.
    pub fn run_config(&self) -> &RunConfig {
        &self.run
    }

    /// Changes the total number of steps (to extend a resumed run).
    pub fn set_total_steps(&mut self, steps: usize) {
        self.run.train.steps = steps;
    }

    /// The image indices of step `step`'s batch: consecutive slices of a per-epoch permutation.
    fn batch_indices(&self, step: usize, n: usize) -> Vec<usize> {
        let b = self.run.train.batch_size;
        let mut order: Option<(usize, Vec<usize>)> = None; // the current epoch's permutation
        (step * b..(step + 1) * b)
            .map(|position| {
                let (epoch, offset) = (position / n, position % n);
                if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    order = Some((epoch, permutation(n, derive_seed(self.run.train.seed, STREAM_EPOCH, epoch as u64))));
                }
                order.as_ref().expect("just set").1[offset]
            })
            .collect()
    }

    /// One optimisation step on a batch drawn from `train`.
    pub fn train_step(&mut self, train: &ImageSet) -> StepStats {
        let step_seed = derive_seed(self.run.train.seed, STREAM_STEP, self.step as u64);
        B::seed(&self.device, step_seed);
        let mut rng = SplitMix64::new(step_seed);
        let batch = train.select(&self.batch_indices(self.step, train.len()));
        let noise = Noise::draw(&mut rng, batch.len(), batch.features());
        let time = TimeMode::from_steps(self.run.train.time_steps);

        let terms = self.model.vlb_terms(pixels_tensor::<B>(&batch, &self.device), &noise, time);
        let loss = vlb::nats_to_bpd(terms.total(), batch.features()).0.mean();
        let bpd = loss.clone().into_scalar().elem::<f64>();
        let mut grads = GradientsParams::from_grads(loss.backward(), &self.model);
        let grad_norm = global_grad_norm(&self.model, &grads);
        if let Some(max) = self.run.train.clip_grad_norm {
            if grad_norm > max {
                scale_grads(&self.model, &mut grads, max / grad_norm);
            }
        }
        let lr = self.run.train.lr_at(self.step);
        self.model = self.optim.step(lr, self.model.clone(), grads);
        let decay = self.run.train.ema_decay_at(self.step);
        self.ema = ema_update(self.ema.clone(), &self.model.valid(), decay);
        self.step += 1;
        StepStats { bpd, grad_norm, lr }
    }

    /// Writes a checkpoint `dir/step-NNNNNNN/` atomically (written under a temporary name,
    /// then renamed), points `dir/latest` at it, and removes older checkpoints.
    pub fn save(&self, dir: &Path) -> Result<PathBuf, String> {
        let name = format!("step-{:07}", self.step);
        let final_dir = dir.join(&name);
        let tmp_dir = dir.join(format!(".{name}.tmp"));
        let err = |what: &str, e: &dyn std::fmt::Display| format!("writing checkpoint {}: {what}: {e}", final_dir.display());
        if tmp_dir.exists() {
            fs::remove_dir_all(&tmp_dir).map_err(|e| err("clearing a stale temporary directory", &e))?;
        }
        fs::create_dir_all(&tmp_dir).map_err(|e| err("creating the directory", &e))?;
        let rec = Rec::new();
        self.model.clone().save_file(tmp_dir.join("model"), &rec).map_err(|e| err("model", &e))?;
        self.ema.clone().save_file(tmp_dir.join("ema"), &rec).map_err(|e| err("ema", &e))?;
        Recorder::<B>::record(&rec, self.optim.to_record(), tmp_dir.join("optim")).map_err(|e| err("optimiser", &e))?;
        let state = CheckpointState { step: self.step, run: self.run.clone() };
        let json = serde_json::to_string_pretty(&state).map_err(|e| err("state", &e))?;
        fs::write(tmp_dir.join("state.json"), json).map_err(|e| err("state", &e))?;
        if final_dir.exists() {
            fs::remove_dir_all(&final_dir).map_err(|e| err("replacing an older copy", &e))?;
        }
        fs::rename(&tmp_dir, &final_dir).map_err(|e| err("renaming into place", &e))?;
        write_atomically(&dir.join("latest"), name.as_bytes()).map_err(|e| err("latest", &e))?;
        for entry in fs::read_dir(dir).map_err(|e| err("listing", &e))?.flatten() {
            let other = entry.file_name().to_string_lossy().into_owned();
            if other.starts_with("step-") && other != name {
                fs::remove_dir_all(entry.path()).map_err(|e| err("removing an older checkpoint", &e))?;
            }
        }
        Ok(final_dir)
    }
}

/// `‖g‖₂` over all parameters' gradients together.
fn global_grad_norm<B: AutodiffBackend>(model: &Vdm<B>, grads: &GradientsParams) -> f64 {
    struct SumSquares<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        total: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for SumSquares<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                let s = g.square().sum();
                self.total = Some(match self.total.take() {
                    Some(acc) => acc + s,
                    None => s,
                });
            }
        }
    }
    let mut visitor = SumSquares::<B> { grads, total: None };
    model.visit(&mut visitor);
    visitor.total.map_or(0.0, |s| s.into_scalar().elem::<f64>().sqrt())
}

/// Multiplies every gradient by `factor`.
fn scale_grads<B: AutodiffBackend>(model: &Vdm<B>, grads: &mut GradientsParams, factor: f64) {
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                self.grads.register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    model.visit(&mut Scale { grads, factor });
}

/// `ema ← decay · ema + (1 − decay) · current`, parameter by parameter (matched by id).
fn ema_update<B: Backend>(ema: Vdm<B>, current: &Vdm<B>, decay: f64) -> Vdm<B> {
    struct Collect<B: Backend>(HashMap<ParamId, Tensor<B, 1>>);
    impl<B: Backend> ModuleVisitor<B> for Collect<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.insert(param.id, param.val().flatten::<1>(0, D - 1));
        }
    }
    struct Blend<B: Backend> {
        current: HashMap<ParamId, Tensor<B, 1>>,
        decay: f64,
    }
    impl<B: Backend> ModuleMapper<B> for Blend<B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, old, mapper) = param.consume();
            let new = match self.current.remove(&id) {
                Some(cur) => old.clone().mul_scalar(self.decay) + cur.reshape(old.shape()).mul_scalar(1.0 - self.decay),
                None => old,
            };
            Param::from_mapped_value(id, new, mapper)
        }
    }
    let mut collect = Collect(HashMap::new());
    current.visit(&mut collect);
    ema.map(&mut Blend { current: collect.0, decay })
}
