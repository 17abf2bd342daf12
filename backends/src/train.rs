//! Training: AdamW with warmup, optional global-norm gradient clipping, an EMA of the weights,
//! antithetic times, and checkpoints written atomically and resumable bit-for-bit.
//!
//! Every step's randomness (batch, noise, times, dropout) is derived from `(seed, step)`, so a
//! run resumed from a checkpoint continues exactly as if it had never stopped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use vdm_core::rng::{derive_seed, SplitMix64};

use crate::checkpoint::{self, encode_module, encode_record, Checkpoint};
use crate::config::RunConfig;
use crate::config::TrainConfig;
use crate::data::{epoch_batch, ImageSet};
use crate::error::{Error, Result};
use crate::model::{Family, Trainable, Vdm};
use crate::nn::materialise;
use crate::ops::TrainBackend;
use crate::parallel::{Replica, Shard};
use crate::tensor::pixels_tensor;
use crate::transfer::download_values;

/// AdamW with `config`'s settings.
fn optimizer<B: AutodiffBackend, M: AutodiffModule<B>>(config: &TrainConfig) -> OptimizerAdaptor<AdamW, M, B> {
    AdamWConfig::new()
        .with_beta_1(config.beta1 as f32)
        .with_beta_2(config.beta2 as f32)
        .with_epsilon(config.epsilon as f32)
        .with_weight_decay(config.weight_decay as f32)
        .init()
}

const STREAM_EPOCH: u64 = 1;
const STREAM_STEP: u64 = 2;
const STREAM_FLIP: u64 = 4;

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// The batch's loss (for VDM the mean VLB in bits per dimension; see
    /// [`ModelConfig::loss_unit`](crate::config::ModelConfig::loss_unit)).
    pub loss: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate used.
    pub lr: f64,
}

/// The training state of a model of family `M` (a [`Vdm`] or a [`Ddpm`](crate::model::ddpm::Ddpm)):
/// model, EMA, optimiser and step counter.
pub struct Trainer<B: TrainBackend, M: Trainable<B> = Vdm<B>> {
    model: M,
    ema: M::InnerModule,
    optim: OptimizerAdaptor<AdamW, M, B>,
    step: usize,
    run: RunConfig,
    image_shape: [usize; 3],
    device: B::Device,
    /// Its place in a data-parallel run ([`Trainer::join`]); `None` on one device.
    replica: Option<Replica<B::InnerBackend>>,
}

/// A checkpoint's weight files.
const MODEL_FILE: &str = "model.mpk";
const EMA_FILE: &str = "ema.mpk";
const OPTIM_FILE: &str = "optim.mpk";

impl<B: TrainBackend, M: Trainable<B>> Trainer<B, M> {
    /// A new model for `run` on images of `image_shape` (`[C, H, W]`), initialised with
    /// `run.train.seed`. Refuses an invalid configuration and a batch that cannot fit in memory.
    pub fn new(run: &RunConfig, image_shape: [usize; 3], device: &B::Device) -> Result<Self> {
        run.validate()?;
        run.model.check_training_memory::<B>(image_shape, run.train.batch_size, device)?;
        B::seed(device, derive_seed(run.train.seed, 0, 0));
        let model = materialise(M::build(&run.model, image_shape, device)?);
        Self::from_model(run, image_shape, model, device)
    }

    /// A run at step 0 whose model and EMA are `model` (freshly initialised by [`Trainer::new`],
    /// or weights made elsewhere: imported with [`crate::diffusers::import_unet`] or
    /// [`crate::pytorch_layout::import_vdm`]), with a fresh optimiser. Refuses what
    /// [`Trainer::new`] refuses.
    pub fn from_model(run: &RunConfig, image_shape: [usize; 3], model: M, device: &B::Device) -> Result<Self> {
        run.validate()?;
        run.model.check_training_memory::<B>(image_shape, run.train.batch_size, device)?;
        let ema = model.valid();
        Ok(Self {
            model,
            ema,
            optim: optimizer(&run.train),
            step: 0,
            run: run.clone(),
            image_shape,
            device: device.clone(),
            replica: None,
        })
    }

    /// Continues from `checkpoint` with the run configuration saved in it.
    pub fn resume(checkpoint: &Checkpoint, device: &B::Device) -> Result<Self> {
        let state = &checkpoint.state;
        let (run, shape) = (state.run.clone(), state.image_shape);
        run.model.check_training_memory::<B>(shape, run.train.batch_size, device)?;
        let model = checkpoint.load_module(MODEL_FILE, M::build(&run.model, shape, device)?, device)?;
        let ema = checkpoint.load_module(EMA_FILE, M::build(&run.model, shape, device)?.valid(), device)?;
        let optim = optimizer(&run.train).load_record(checkpoint.load_record::<B, _>(OPTIM_FILE, device)?);
        Ok(Self { model, ema, optim, step: state.step, run, image_shape: shape, device: device.clone(), replica: None })
    }

    /// A copy of this trainer on `device`: the model, its EMA and the optimiser's state, to be
    /// another replica of a data-parallel run ([`Trainer::join`]).
    pub fn replicate(&self, device: &B::Device) -> Self {
        Self {
            model: self.model.clone().fork(device),
            ema: self.ema.clone().fork(device),
            optim: optimizer(&self.run.train).load_record(self.optim.to_record()),
            step: self.step,
            run: self.run.clone(),
            image_shape: self.image_shape,
            device: device.clone(),
            replica: None,
        }
    }

    /// Makes this trainer `replica` of a data-parallel run: from now on each step computes the
    /// gradient of the replica's share of the batch, and the replicas' gradients and losses are
    /// summed before the optimiser's step, which is then the same on every replica. Refuses, on
    /// every replica alike, replicas that do not hold the same run: another step or other weights
    /// (compared by an all-reduce of their sums), as when processes were started from different
    /// checkpoints; a refused replica leaves the collective.
    pub fn join(&mut self, replica: Replica<B::InnerBackend>) -> Result<()> {
        let step = Tensor::<B::InnerBackend, 1>::from_floats([self.step as f32], &self.device);
        let own = Tensor::cat(vec![step, absolute_sum(&self.model, &self.device)], 0);
        let total = replica.sum(own.clone())?;
        let [own, total] = download_values([own, total]);
        let mean = total.iter().map(|t| t / replica.count() as f64).collect::<Vec<_>>();
        if own.iter().zip(&mean).any(|(o, m)| (o - m).abs() > 1e-5 * o.abs().max(1.0)) {
            let (rank, count) = (replica.rank(), replica.count());
            replica.leave()?;
            return Err(Error::Collective(format!(
                "data-parallel training: the {} replicas do not hold the same run: replica {} is at step {} with \
                 Σ|θ| = {:.6}, their mean is step {:.2} with Σ|θ| = {:.6}; start every process from the same checkpoint or configuration",
                count,
                rank,
                self.step,
                own[1],
                mean[0],
                mean[1]
            )));
        }
        self.replica = Some(replica);
        Ok(())
    }

    /// Leaves the data-parallel run this trainer joined, if any.
    pub fn leave(&mut self) -> Result<()> {
        self.replica.take().map_or(Ok(()), Replica::leave)
    }

    /// The model being optimised.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The exponential moving average of its weights: the model to evaluate and sample from.
    pub fn ema(&self) -> &M::InnerModule {
        &self.ema
    }

    /// Steps taken so far.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The run's configuration.
    pub fn run_config(&self) -> &RunConfig {
        &self.run
    }

    /// `[C, H, W]` of the images the model takes.
    pub fn image_shape(&self) -> [usize; 3] {
        self.image_shape
    }

    /// Extends the run to `steps` steps in all; they must lie beyond the steps already taken.
    pub fn extend_to(&mut self, steps: usize) -> Result<()> {
        if steps <= self.step {
            return Err(Error::setting("steps", format!("the run has already taken {} steps; --steps must exceed that to train further (it sets the total, not the number of new steps)", self.step)));
        }
        self.run.train.steps = steps;
        Ok(())
    }

    /// The batch of the next step ([`Trainer::batch_at`] the current step).
    pub fn next_batch(&self, train: &ImageSet) -> Result<ImageSet> {
        self.batch_at(self.step, train)
    }

    /// The batch of step `step` (0-based): consecutive slices of a per-epoch permutation of `train`, each
    /// image mirrored left to right with probability ½ when `train.hflip` is set (from the stream
    /// `(seed, flip, step)`).
    pub fn batch_at(&self, step: usize, train: &ImageSet) -> Result<ImageSet> {
        if train.shape() != self.image_shape || train.is_empty() {
            return Err(Error::Mismatch(format!(
                "the model takes images of {:?}; the training set holds {} of {:?}",
                self.image_shape,
                train.len(),
                train.shape()
            )));
        }
        let mut batch =
            train.select(&epoch_batch(train.len(), self.run.train.batch_size, step, self.run.train.seed, STREAM_EPOCH));
        if self.run.train.hflip {
            let mut coin = SplitMix64::new(derive_seed(self.run.train.seed, STREAM_FLIP, step as u64));
            for i in 0..batch.len() {
                if coin.next_u64() & 1 == 1 {
                    batch.flip_horizontally(i);
                }
            }
        }
        Ok(batch)
    }
    /// One optimisation step on the next batch drawn from `train` ([`Trainer::next_batch`]); in a
    /// data-parallel run, on this replica's share of it, with the replicas' gradients summed.
    pub fn train_step(&mut self, train: &ImageSet) -> Result<StepStats> {
        let batch = self.next_batch(train)?;
        let shard = self.replica.as_ref().map_or(Shard::whole(batch.len()), |r| r.shard(batch.len()));
        let images = if shard.len == shard.of { batch } else { batch.select(&shard.range().collect::<Vec<_>>()) };
        let step_seed = derive_seed(self.run.train.seed, STREAM_STEP, self.step as u64);
        B::seed(&self.device, step_seed);
        let mut rng = SplitMix64::new(step_seed);
        let (mut loss, mut grads) = self.model.loss_and_gradients(
            pixels_tensor::<B>(&images, &self.device),
            shard,
            &mut rng,
            &self.run.model,
            &self.run.train,
        )?;
        if let Some(replica) = &self.replica {
            grads = replica.sum_gradients(&self.model, grads)?;
            loss = replica.sum(loss)?;
        }
        let lr = self.run.train.lr_at(self.step);
        let grad_norm = self.apply_gradients(grads);
        // Its statistics in one read, after all of its work is queued.
        let [loss, grad_norm] = download_values([loss, grad_norm]).map(|v| v[0]);
        Ok(StepStats { loss, grad_norm, lr })
    }

    /// The optimiser's share of a step, given the gradients of the model's parameters: they are
    /// scaled to the global norm `clip_grad_norm` where it is exceeded, AdamW (decoupled weight
    /// decay) steps at `lr_at(step)`, the EMA follows with `ema_decay_at(step)`, and the step count
    /// advances. Returns the gradients' global norm before clipping, `[1]`, left on the device
    /// (the clipping factor is computed there too: nothing waits for the device).
    pub fn apply_gradients(&mut self, mut grads: GradientsParams) -> Tensor<B::InnerBackend, 1> {
        let grad_norm = global_grad_norm(&self.model, &grads, &self.device);
        if let Some(max) = self.run.train.clip_grad_norm {
            // min(1, max/‖g‖): 1 (no change) within the bound, 0 for an infinite norm.
            let factor = grad_norm.clone().recip().mul_scalar(max).clamp_max(1.0);
            scale_grads(&self.model, &mut grads, factor);
        }
        let lr = self.run.train.lr_at(self.step);
        self.model = self.optim.step(lr, self.model.clone(), grads);
        let decay = self.run.train.ema_decay_at(self.step);
        self.ema = ema_update(self.ema.clone(), &self.model.valid(), decay);
        self.step += 1;
        grad_norm
    }

    /// Writes a checkpoint of the current state into the run directory `run_dir`, crash-safely
    /// (see [`checkpoint::save`]), keeping the newest `run.keep_checkpoints`.
    pub fn save(&self, run_dir: &Path) -> Result<PathBuf> {
        let files = [
            (MODEL_FILE, encode_module(self.model.clone())?),
            (EMA_FILE, encode_module(self.ema.clone())?),
            (OPTIM_FILE, encode_record::<B, _>(self.optim.to_record())?),
        ];
        checkpoint::save(run_dir, self.step, self.image_shape, &self.run, &files, self.run.keep_checkpoints)
    }
}

/// Loads a checkpoint's EMA weights (what evaluation and sampling use) onto any backend, as a
/// model of family `M` (an error if the checkpoint holds another family).
pub fn load_ema<B: Backend, M: Family<B>>(checkpoint: &Checkpoint, device: &B::Device) -> Result<M> {
    let state = &checkpoint.state;
    checkpoint.load_module(EMA_FILE, M::build(&state.run.model, state.image_shape, device)?, device)
}

/// `‖g‖₂` over all parameters' gradients together, `[1]` on the device.
fn global_grad_norm<B: AutodiffBackend, M: Module<B>>(
    model: &M,
    grads: &GradientsParams,
    device: &B::Device,
) -> Tensor<B::InnerBackend, 1> {
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
    visitor.total.unwrap_or_else(|| Tensor::<B, 1>::zeros([1], device).inner()).sqrt()
}

/// `Σ|θ|` over all parameters, `[1]` on the device: tells replicas with other weights apart.
fn absolute_sum<B: AutodiffBackend, M: Module<B>>(model: &M, device: &B::Device) -> Tensor<B::InnerBackend, 1> {
    struct Sum<B: AutodiffBackend>(Tensor<B::InnerBackend, 1>);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Sum<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0 = self.0.clone() + param.val().inner().abs().sum();
        }
    }
    let mut visitor = Sum::<B>(Tensor::zeros([1], device));
    model.visit(&mut visitor);
    visitor.0
}

/// Multiplies every gradient by `factor` (`[1]`, on the device).
fn scale_grads<B: AutodiffBackend, M: Module<B>>(
    model: &M,
    grads: &mut GradientsParams,
    factor: Tensor<B::InnerBackend, 1>,
) {
    struct Scale<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        factor: Tensor<B::InnerBackend, 1>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                let factor = self.factor.clone().reshape([1; D]);
                self.grads.register::<B::InnerBackend, D>(param.id, g * factor);
            }
        }
    }
    model.visit(&mut Scale::<B> { grads, factor });
}

/// `ema ← decay · ema + (1 − decay) · current`, parameter by parameter (matched by id).
fn ema_update<B: Backend, M: Module<B>>(ema: M, current: &M, decay: f64) -> M {
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
