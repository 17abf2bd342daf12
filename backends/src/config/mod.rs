//! A whole run, as read from a TOML file by `vdm train --config`: every setting as plain data,
//! checked by `validate` with the offending field named. The modules that act on a setting
//! (building a model, training) import it from here; nothing here imports them.

use serde::{Deserialize, Serialize};

mod model;
mod train;

pub use crate::data::{DataConfig, DATA_EXAMPLES};
pub use model::*;
pub use train::TrainConfig;

use crate::error::{Error, Result};
use crate::nn::ddpm_unet::UNetConfig;
use crate::schedule::ShapeObjective;

/// The largest `T` of a discrete-time bound or sampler. Times `i/T` and the differences
/// `γ(i/T) − γ((i−1)/T)` are computed in `f64` on the host; beyond `10⁹` steps their rounding
/// would start to show in the bound, which by then equals the continuous one (`T = 0`) anyway.
pub const MAX_TIME_STEPS: usize = 1_000_000_000;

impl EvalConfig {
    /// Checks the settings, naming the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::setting("eval.batch_size", "eval.batch_size must be at least 1"));
        }
        if self.limit == Some(0) {
            return Err(Error::setting("eval.limit", "eval.limit must be at least 1"));
        }
        if self.time_steps > MAX_TIME_STEPS {
            return Err(Error::setting(
                "eval.time_steps",
                format!(
                    "eval.time_steps must be at most {MAX_TIME_STEPS} (0 is continuous time), got {}",
                    self.time_steps
                ),
            ));
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
    /// Evaluate only the first this many test images (all when absent).
    pub limit: Option<usize>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { every: 500, time_steps: 0, batch_size: 256, seed: 1234, limit: None }
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
            model: ModelConfig::Vdm(VdmConfig::digits()),
            train: TrainConfig {
                batch_size: 32,
                steps: 1500,
                lr: 2e-3,
                warmup_steps: 100,
                ema_decay: 0.999,
                clip_grad_norm: Some(1.0),
                ..TrainConfig::default()
            },
            eval: EvalConfig { every: 500, ..EvalConfig::default() },
            checkpoint_every: 500,
            keep_checkpoints: 1,
        }
    }

    /// A DDPM on the bundled digits (`vdm config --family ddpm`): DDPM's process and `L_simple`
    /// with a small U-Net ([`UNetConfig::digits`]).
    pub fn ddpm_digits() -> Self {
        let digits = Self::digits();
        Self {
            model: ModelConfig::Ddpm(DdpmConfig { unet: UNetConfig::digits(), ..DdpmConfig::default() }),
            train: TrainConfig { lr: 1e-3, ..digits.train },
            ..digits
        }
    }

    /// Reads and checks a run configuration file's text. Only `[data]` is required: every field
    /// left out takes the value of the family's default run, the one `vdm config` prints
    /// ([`RunConfig::digits`], or [`RunConfig::ddpm_digits`] for `family = "ddpm"`). A table with
    /// a `kind` other than the default's (another schedule, say) replaces it whole, its own
    /// omitted fields taking that kind's defaults.
    pub fn from_toml(text: &str) -> Result<Self> {
        // Parsed as written first, so that a wrong type or name is reported at its line.
        let written: Self = toml::from_str(text).map_err(|e| Error::setting("config", e.to_string()))?;
        let table: toml::Table = toml::from_str(text).map_err(|e| Error::setting("config", e.to_string()))?;
        let base = match written.model {
            ModelConfig::Vdm(_) => Self::digits(),
            ModelConfig::Ddpm(_) => Self::ddpm_digits(),
        };
        let mut merged = toml::Table::try_from(&base).map_err(|e| Error::setting("config", e.to_string()))?;
        merged.remove("data");
        fill_in(&mut merged, table);
        let run: Self = merged.try_into().map_err(|e: toml::de::Error| Error::setting("config", e.to_string()))?;
        run.validate()?;
        Ok(run)
    }

    /// Checks every part, naming the offending field.
    pub fn validate(&self) -> Result<()> {
        self.data.validate()?;
        self.model.validate()?;
        self.train.validate()?;
        self.eval.validate()?;
        if self.checkpoint_every == 0 {
            return Err(Error::setting("checkpoint_every", "checkpoint_every must be at least 1"));
        }
        if self.keep_checkpoints == 0 {
            return Err(Error::setting("keep_checkpoints", "keep_checkpoints must be at least 1"));
        }
        let variance_objective =
            matches!(&self.model, ModelConfig::Vdm(m) if m.schedule.shape_objective() == ShapeObjective::Variance);
        if variance_objective && self.train.time_steps != 0 {
            return Err(Error::setting("model.schedule.shape_objective", format!(
                "model.schedule.shape_objective = \"variance\" needs continuous-time training (train.time_steps = 0, got {}): with T steps the bound depends on the shape",
                self.train.time_steps
            )));
        }
        Ok(())
    }
}

/// Overwrites `base` with what `written` holds, table by table; a table whose `kind` differs from
/// `base`'s replaces it whole.
fn fill_in(base: &mut toml::Table, written: toml::Table) {
    for (key, value) in written {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(below)), toml::Value::Table(over))
                if over.get("kind").is_none_or(|kind| below.get("kind") == Some(kind)) =>
            {
                fill_in(below, over)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}
