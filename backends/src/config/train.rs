//! `[train]`: optimisation settings, and the learning-rate and EMA schedules they define.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::MAX_TIME_STEPS;

use crate::error::{Error, Result};

/// Optimisation settings. `Default` is VDM's; a file's omitted fields take the default run's instead
/// ([`RunConfig::from_toml`](super::RunConfig::from_toml)).
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
    /// Clip the global gradient norm to this value; `false` in a file for no clipping.
    #[serde(with = "clip_norm")]
    pub clip_grad_norm: Option<f64>,
    /// EMA decay of the weights (VDM: 0.9999), warmed up as `min(decay, (1 + k)/(10 + k))`.
    pub ema_decay: f64,
    /// Diffusion steps `T` of the training loss; 0 trains the continuous-time loss.
    pub time_steps: usize,
    /// Mirror each training image left to right with probability ½ (CIFAR-10 practice in DDPM);
    /// never applied at evaluation.
    pub hflip: bool,
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
            hflip: false,
        }
    }
}

impl TrainConfig {
    /// Checks the settings, naming the offending field.
    pub fn validate(&self) -> Result<()> {
        let positive = [("batch_size", self.batch_size), ("steps", self.steps)];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::setting(format!("train.{name}"), format!("train.{name} must be at least 1")));
        }
        let positive = [("lr", self.lr), ("epsilon", self.epsilon)]
            .into_iter()
            .chain(self.clip_grad_norm.map(|c| ("clip_grad_norm", c)));
        for (name, v) in positive {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::setting(
                    format!("train.{name}"),
                    format!("train.{name} must be positive and finite, got {v}"),
                ));
            }
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::setting(
                "train.weight_decay",
                format!("train.weight_decay must be non-negative and finite, got {}", self.weight_decay),
            ));
        }
        for (name, v) in [("beta1", self.beta1), ("beta2", self.beta2), ("ema_decay", self.ema_decay)] {
            if !(0.0..1.0).contains(&v) {
                return Err(Error::setting(
                    format!("train.{name}"),
                    format!("train.{name} must be in [0, 1), got {v}"),
                ));
            }
        }
        if self.time_steps > MAX_TIME_STEPS {
            return Err(Error::setting(
                "train.time_steps",
                format!(
                    "train.time_steps must be at most {MAX_TIME_STEPS} (0 is continuous time), got {}",
                    self.time_steps
                ),
            ));
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
}

/// `clip_grad_norm` in a file: a positive number, or `false` for none (TOML has no null, and an
/// absent value means the default run's). Checkpoints written before `false` hold `null`.
mod clip_norm {
    use super::*;

    pub fn serialize<S: Serializer>(norm: &Option<f64>, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match norm {
            Some(norm) => serializer.serialize_f64(*norm),
            None => serializer.serialize_bool(false),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Clip {
            Norm(f64),
            Off(bool),
        }
        match Option::<Clip>::deserialize(deserializer) {
            Ok(None | Some(Clip::Off(false))) => Ok(None),
            Ok(Some(Clip::Norm(norm))) => Ok(Some(norm)),
            _ => Err(serde::de::Error::custom("train.clip_grad_norm must be a positive number, or false for none")),
        }
    }
}
