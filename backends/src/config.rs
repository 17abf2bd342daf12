//! A whole run, as read from a TOML file by `vdm train --config`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::{self, CsvLayout, DataError, DiscretisedGaussianImages, ImageSet};
use crate::memory;
use crate::model::{ModelConfig, MAX_TIME_STEPS};
use crate::schedule::ScheduleConfig;
use crate::nn::blocks::ConvMethod;
use crate::nn::score_unet::ScoreNetConfig;
use crate::train::TrainConfig;

/// A documented `[data]` table for every source (`vdm config` prints them; a test parses each).
pub const DATA_EXAMPLES: &[&str] = &[
    r#"
## The bundled 8x8 digits (1797 images, 17 grey levels); test_size images are held out.
[data]
kind = "digits"
test_size = 297
"#,
    r#"
## A pixel CSV file, one image per line: channels*height*width integers in 0..=max_value,
## channel-major then row-major, rescaled to 0..255; label_column: each line ends with a label.
## A `.gz` file is decompressed. test_size images are held out (a seeded random split).
[data]
kind = "csv"
path = "images.csv.gz"
channels = 1
height = 8
width = 8
max_value = 16
label_column = true
test_size = 297
"#,
    r#"
## Synthetic images with independent discretised-Gaussian pixels of standard deviation `std`
## (pixel units) around a diagonal ramp: their exact NLL is known and printed as a baseline.
[data]
kind = "gaussian"
channels = 1
height = 4
width = 4
std = 24.0
train_size = 1024
test_size = 256
"#,
];

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
    /// Checks the sizes and numbers, naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: usize| if v == 0 { Err(format!("data.{name} must be at least 1")) } else { Ok(()) };
        match self {
            Self::Digits { test_size } | Self::Csv { test_size, .. } => positive("test_size", *test_size)?,
            Self::Gaussian { train_size, test_size, .. } => {
                positive("train_size", *train_size)?;
                positive("test_size", *test_size)?;
            }
        }
        match self {
            Self::Digits { test_size } if *test_size >= data::DIGITS_COUNT => {
                Err(format!("data.test_size must leave at least one of the {} digits for training, got {test_size}", data::DIGITS_COUNT))
            }
            Self::Digits { .. } => Ok(()),
            Self::Csv { layout, .. } => layout.validate(),
            Self::Gaussian { images, .. } => images.validate(),
        }
    }

    /// `(train, test)` images.
    pub fn load(&self, seed: u64) -> Result<(ImageSet, ImageSet), DataError> {
        self.validate().map_err(DataError::Invalid)?;
        match self {
            Self::Digits { test_size } => data::digits().split(*test_size, seed),
            Self::Csv { path, layout, test_size } => data::load_csv(path, layout)?.split(*test_size, seed),
            Self::Gaussian { images, train_size, test_size } => {
                let bytes = (*train_size as u128 + *test_size as u128) * images.features() as u128;
                memory::check("drawing the Gaussian images", u64::try_from(bytes).unwrap_or(u64::MAX), "lower data.train_size or data.test_size")
                    .map_err(DataError::Invalid)?;
                Ok((images.sample(*train_size, seed), images.sample(*test_size, !seed)))
            }
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

impl EvalConfig {
    /// Checks the settings, naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 {
            return Err("eval.batch_size must be at least 1".into());
        }
        if self.time_steps > MAX_TIME_STEPS {
            return Err(format!("eval.time_steps must be at most {MAX_TIME_STEPS} (0 is continuous time), got {}", self.time_steps));
        }
        Ok(())
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
    /// How many of the newest checkpoints to keep (older ones are removed after each save).
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: usize,
}

fn default_checkpoint_every() -> usize {
    500
}

fn default_keep_checkpoints() -> usize {
    1
}

impl RunConfig {
    /// The embedded default: a small VDM on the bundled digits, sized to train on a laptop CPU.
    pub fn digits() -> Self {
        Self {
            data: DataConfig::Digits { test_size: 297 },
            model: ModelConfig {
                score: ScoreNetConfig {
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
            keep_checkpoints: 1,
        }
    }

    /// Checks every part, naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        self.data.validate()?;
        self.model.validate()?;
        self.train.validate()?;
        self.eval.validate()?;
        if self.checkpoint_every == 0 {
            return Err("checkpoint_every must be at least 1".into());
        }
        if self.keep_checkpoints == 0 {
            return Err("keep_checkpoints must be at least 1".into());
        }
        Ok(())
    }
}
