//! `vdm bench`: training and sampling throughput for named model sizes.

use std::time::Instant;

use burn::module::Module;
use vdm_backends::ops::TrainBackend;
use clap::ValueEnum;
use vdm_backends::config::{DataConfig, RunConfig};
use vdm_backends::data::GaussianSource;
use vdm_backends::nn::score_unet::ScoreNetConfig;
use vdm_backends::train::{TrainConfig, Trainer};

use crate::device::{dispatch, BackendJob, Device};

/// Named model sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Size {
    /// The default digits model: n_embd 32, n_layer 2, on 1×8×8 images, batch 64.
    Tiny,
    /// n_embd 64, n_layer 4, on 3×32×32 images, batch 32.
    Small,
    /// VDM's CIFAR-10 model: n_embd 128, n_layer 32, dropout 0.1, on 3×32×32 images, batch 128.
    Cifar,
}

impl Size {
    fn run_config(self, batch_size: Option<usize>) -> RunConfig {
        let mut run = RunConfig::digits();
        let (score, images, batch) = match self {
            Size::Tiny => (run.model.score.clone(), (1, 8), 64),
            Size::Small => (ScoreNetConfig { n_embd: 64, n_layer: 4, groups: 32, dropout: 0.1, ..ScoreNetConfig::default() }, (3, 32), 32),
            Size::Cifar => (ScoreNetConfig::default(), (3, 32), 128),
        };
        let batch = batch_size.unwrap_or(batch);
        run.model.score = score;
        run.data = DataConfig::Gaussian(GaussianSource { channels: images.0, height: images.1, width: images.1, std: 20.0, train_size: batch, test_size: 1 });
        run.train = TrainConfig { batch_size: batch, warmup_steps: 1, ..run.train };
        run
    }
}

struct BenchJob {
    size: Size,
    batch_size: Option<usize>,
    steps: usize,
    sample_steps: usize,
}

pub fn run(size: Size, batch_size: Option<usize>, steps: usize, sample_steps: usize, device: Device) -> Result<(), String> {
    if steps == 0 || sample_steps == 0 || batch_size == Some(0) {
        return Err("--steps, --sample-steps and --batch-size must be at least 1".into());
    }
    dispatch(device, BenchJob { size, batch_size, steps, sample_steps })
}

impl BackendJob for BenchJob {
    type Output = ();

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<(), String> {
        let run = self.size.run_config(self.batch_size);
        let (train, _) = run.data.load(0).map_err(|e| e.to_string())?;
        let batch = run.train.batch_size;
        let mut trainer = Trainer::<B>::new(&run, train.shape(), &device)?;
        println!("size {:?}: {} parameters, images {}x{}x{}, batch {batch}", self.size, trainer.model.num_params(), train.channels, train.height, train.width);
        for _ in 0..2 {
            trainer.train_step(&train)?; // warm-up: allocation, autotuning
        }
        let start = Instant::now();
        for _ in 0..self.steps {
            trainer.train_step(&train)?; // reads the loss back, so each step is synchronised
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "training: {:.1} images/s ({:.1} ms/step over {} steps)",
            (self.steps * batch) as f64 / secs,
            1e3 * secs / self.steps as f64,
            self.steps
        );
        let start = Instant::now();
        trainer.ema.sample(batch, [train.height, train.width], self.sample_steps, 0, batch, &device, || {});
        let secs = start.elapsed().as_secs_f64();
        println!(
            "sampling: {:.2} images/s at T={} ({:.1} ms per network evaluation of {batch} images)",
            batch as f64 / secs,
            self.sample_steps,
            1e3 * secs / self.sample_steps as f64
        );
        Ok(())
    }
}
