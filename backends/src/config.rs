//! A whole run, as read from a TOML file by `vdm train --config`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::{self, CsvLayout, DataError, DiscretisedGaussianImages, ImageSet};
use crate::model::ModelConfig;
use crate::schedule::ScheduleConfig;
use crate::nn::blocks::ConvMethod;
use crate::nn::score_unet::ScoreNetConfig;
use crate::train::TrainConfig;

/// Where the images come from. Every source is split into train and test with the run's seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataConfig {
    /// The bundled 8×8 digits (1797 images).
    Digits {
        /// Images held out for testing.
        test_size: usize,
    },
    /// A pixel CSV file (see [`CsvLayout`]).
    Csv {
        /// The file (`.gz` is decompressed).
        path: PathBuf,
        /// Its layout.
        #[serde(flatten)]
        layout: CsvLayout,
        /// Images held out for testing.
        test_size: usize,
    },
    /// Synthetic images with independent discretised-Gaussian pixels and a known exact NLL.
    Gaussian {
        /// The image distribution.
        #[serde(flatten)]
        images: DiscretisedGaussianImages,
        /// Training images drawn.
        train_size: usize,
        /// Test images drawn.
        test_size: usize,
    },
}

impl DataConfig {
    /// `(train, test)` images.
    pub fn load(&self, seed: u64) -> Result<(ImageSet, ImageSet), DataError> {
        match self {
            Self::Digits { test_size } => data::digits().split(*test_size, seed),
            Self::Csv { path, layout, test_size } => data::load_csv(path, layout)?.split(*test_size, seed),
            Self::Gaussian { images, train_size, test_size } => {
                if *train_size == 0 || *test_size == 0 {
                    return Err(DataError::Invalid("data.train_size and data.test_size must be positive".into()));
                }
                Ok((images.sample(*train_size, seed), images.sample(*test_size, !seed)))
            }
        }
    }

    /// `(channels, height, width)` of the images.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        match self {
            Self::Digits { .. } => (CsvLayout::DIGITS.channels, CsvLayout::DIGITS.height, CsvLayout::DIGITS.width),
            Self::Csv { layout, .. } => (layout.channels, layout.height, layout.width),
            Self::Gaussian { images, .. } => (images.channels, images.height, images.width),
        }
    }

    /// The exact NLL in bits per dimension, where the source has one.
    pub fn exact_bpd(&self) -> Option<f64> {
        match self {
            Self::Gaussian { images, .. } => Some(images.entropy_bits()),
            _ => None,
        }
    }
}

/// Periodic evaluation during training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate the EMA model on the test set every this many steps (0: only at the end).
    pub every: usize,
    /// `T` of the evaluated bound; 0 for continuous time.
    pub time_steps: usize,
    /// Images per evaluation batch.
    pub batch_size: usize,
    /// Seed of the evaluation noise.
    pub seed: u64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { every: 500, time_steps: 0, batch_size: 256, seed: 1234 }
    }
}

/// Everything a training run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The images.
    pub data: DataConfig,
    /// The model.
    #[serde(default)]
    pub model: ModelConfig,
    /// Optimisation.
    #[serde(default)]
    pub train: TrainConfig,
    /// Evaluation during training.
    #[serde(default)]
    pub eval: EvalConfig,
    /// Write a checkpoint every this many steps (and always at the end).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
}

fn default_checkpoint_every() -> usize {
    500
}

impl RunConfig {
    /// The embedded default: a small VDM on the bundled digits, sized to train on a laptop CPU.
    pub fn digits() -> Self {
        Self {
            data: DataConfig::Digits { test_size: 297 },
            model: ModelConfig {
                score: ScoreNetConfig {
                    channels: 1,
                    n_embd: 32,
                    n_layer: 2,
                    groups: 8,
                    dropout: 0.0,
                    fourier_exponents: vec![3, 4, 5, 6, 7, 8],
                    gamma_min: -13.3,
                    gamma_max: 5.0,
                    conv: ConvMethod::Taps,
                },
                schedule: ScheduleConfig::Scalar { gamma_min: -13.3, gamma_max: 5.0 },
            },
            train: TrainConfig { batch_size: 32, steps: 1500, lr: 2e-3, warmup_steps: 100, ema_decay: 0.999, clip_grad_norm: Some(1.0), ..TrainConfig::default() },
            eval: EvalConfig { every: 500, ..EvalConfig::default() },
            checkpoint_every: 500,
        }
    }

    /// Checks every part, naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        self.model.validate()?;
        self.train.validate()?;
        if self.eval.batch_size == 0 {
            return Err("eval.batch_size must be at least 1".into());
        }
        if self.checkpoint_every == 0 {
            return Err("checkpoint_every must be at least 1".into());
        }
        Ok(())
    }
}
