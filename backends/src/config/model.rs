//! `[model]`: the family and its settings, as plain data. The models they build are in
//! [`crate::model`].

use serde::{Deserialize, Deserializer, Serialize};
use vdm_core::ddpm::{BetaSchedule, NormalCdf};
use vdm_core::process::{DdpmVariance, Target};
use vdm_core::weighting::Weighting;

use crate::error::{Error, Result};
use crate::nn::ddpm_unet::UNetConfig;
use crate::nn::score_unet::ScoreNetConfig;
use crate::schedule::ScheduleConfig;

/// A run's model: its family and that family's settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum ModelConfig {
    /// A variational diffusion model (Kingma et al. 2021).
    Vdm(VdmConfig),
    /// A denoising diffusion probabilistic model (Ho et al. 2020).
    Ddpm(DdpmConfig),
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self::Vdm(VdmConfig::default())
    }
}

/// `family` is optional and defaults to `"vdm"`, so configurations and checkpoints written before
/// DDPM existed still load.
impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Value::deserialize(deserializer)?;
        let family = match table.as_table_mut().map(|t| t.remove("family")) {
            None => return Err(D::Error::custom("[model] must be a table")),
            Some(None) => "vdm".to_string(),
            Some(Some(toml::Value::String(name))) => name,
            Some(Some(other)) => {
                return Err(D::Error::custom(format!("model.family must be \"vdm\" or \"ddpm\", got {other}")))
            }
        };
        match family.as_str() {
            "vdm" => VdmConfig::deserialize(table).map(Self::Vdm),
            "ddpm" => DdpmConfig::deserialize(table).map(Self::Ddpm),
            other => {
                return Err(D::Error::custom(format!("model.family must be \"vdm\" or \"ddpm\", got \"{other}\"")))
            }
        }
        .map_err(|e| D::Error::custom(format!("[model] ({family}): {e}")))
    }
}

impl ModelConfig {
    /// `"vdm"` or `"ddpm"`.
    pub fn family(&self) -> &'static str {
        match self {
            Self::Vdm(_) => "vdm",
            Self::Ddpm(_) => "ddpm",
        }
    }

    /// The VDM settings, or an error naming `what` needs a VDM.
    pub fn vdm(&self, what: &str) -> Result<&VdmConfig> {
        match self {
            Self::Vdm(c) => Ok(c),
            Self::Ddpm(_) => Err(Error::Mismatch(format!("{what} works on VDM models only; this run is a DDPM"))),
        }
    }

    /// Checks every part.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Vdm(c) => c.validate(),
            Self::Ddpm(c) => c.validate(),
        }
    }

    /// The unit of the training loss the trainer reports.
    pub fn loss_unit(&self) -> &'static str {
        match self {
            Self::Vdm(c) if c.weighting == WeightingConfig::Elbo => "bpd",
            Self::Vdm(_) => "bpd (weighted)",
            Self::Ddpm(c) => loss_unit(c.loss),
        }
    }
}

/// The architecture of a [`Vdm`](crate::model::Vdm) (`[model]` with `family = "vdm"`, the default).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VdmConfig {
    /// The noise-prediction network.
    pub score: ScoreNetConfig,
    /// The noise schedule.
    pub schedule: ScheduleConfig,
    /// What the network's output estimates (`"eps"`, `"x"` or `"v"`).
    pub prediction: VdmPrediction,
    /// The weighting `w(λ)` of the diffusion loss in training (`[model.weighting]`); evaluation
    /// always reports the bound.
    pub weighting: WeightingConfig,
}

/// What a VDM's network predicts; the loss is taken on the `ε̂` it implies whichever it is, so it
/// has the same units ([`Target`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VdmPrediction {
    /// The noise `ε` (VDM).
    #[default]
    Eps,
    /// The data `x`.
    X,
    /// The velocity `v = α ε − σ x` (Salimans & Ho 2022).
    V,
}

impl From<VdmPrediction> for Target {
    fn from(p: VdmPrediction) -> Self {
        match p {
            VdmPrediction::Eps => Target::Eps,
            VdmPrediction::X => Target::X,
            VdmPrediction::V => Target::V,
        }
    }
}

/// The weighting `w(λ)`, `λ = log SNR`, of a VDM's continuous-time diffusion loss
/// `½ ∫ w(λ) ‖ε − ε̂‖² dλ` ([`vdm_core::weighting`]; Kingma & Gao 2023). With `T` training steps
/// the `T`-step loss's term at `t` is weighted by `w(λ_t)`. The schedule's endpoints always follow
/// the bound, so that `vdm eval` reports a bound the schedule was trained for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WeightingConfig {
    /// `w = 1`: the variational bound itself (VDM).
    #[default]
    Elbo,
    /// `w(λ) = σ(−λ)/√(β₀² + 2(β₁ − β₀) softplus(−λ))`, `β₀ = 0.1`, `β₁ = 20`: DDPM's `L_simple`
    /// in continuous time (the density of `λ` under DDPM's linear-β schedule).
    EpsMse,
    /// `w(λ) = σ(bias − λ)`: the bound at high noise, decaying at low noise (Kingma & Gao 2023 §5).
    Sigmoid {
        /// The shift `b` (default 2).
        #[serde(default = "default_sigmoid_bias")]
        bias: f64,
    },
    /// EDM's loss (Karras et al. 2022): `w(λ) = N(λ; −2 P_mean, (2 P_std)²) (e^{−λ} + σ_data²)/σ_data²`.
    Edm {
        /// `P_mean` (default −1.2).
        #[serde(default = "default_p_mean")]
        p_mean: f64,
        /// `P_std` (default 1.2).
        #[serde(default = "default_p_std")]
        p_std: f64,
        /// `σ_data` (default 0.5).
        #[serde(default = "default_sigma_data")]
        sigma_data: f64,
    },
}

/// Commented examples of every weighting, for `vdm config`.
pub const WEIGHTING_EXAMPLES: &[&str] = &[
    r#"
## The diffusion loss (1/2) * integral of w(lambda) * E|eps - eps_hat|^2 over lambda = log SNR = -gamma
## (Kingma & Gao 2023); the schedule's endpoints follow the bound whatever w is, and `vdm eval`
## reports the bound. "elbo": w = 1, the bound itself (the default).
[model.weighting]
kind = "elbo"
"#,
    r#"
## DDPM's L_simple in continuous time: w(lambda) = sigmoid(-lambda) / sqrt(0.1^2 + 2 * 19.9 * softplus(-lambda)),
## the density of lambda when t ~ U(0, 1) on DDPM's linear-beta process.
[model.weighting]
kind = "eps_mse"
"#,
    r#"
## w(lambda) = sigmoid(bias - lambda): the bound at high noise, decaying at low noise (Kingma & Gao 2023).
[model.weighting]
kind = "sigmoid"
bias = 2.0
"#,
    r#"
## EDM's loss (Karras et al. 2022): w(lambda) = N(lambda; -2 p_mean, (2 p_std)^2) * (exp(-lambda) + sigma_data^2) / sigma_data^2.
[model.weighting]
kind = "edm"
p_mean = -1.2
p_std = 1.2
sigma_data = 0.5
"#,
];

fn default_sigmoid_bias() -> f64 {
    2.0
}
fn default_p_mean() -> f64 {
    -1.2
}
fn default_p_std() -> f64 {
    1.2
}
fn default_sigma_data() -> f64 {
    0.5
}

impl WeightingConfig {
    /// Checks the parameters, naming the offending field.
    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, value: f64, positive: bool| {
            if !value.is_finite() || (positive && value <= 0.0) {
                let what = if positive { "positive and finite" } else { "finite" };
                return Err(Error::setting(
                    format!("model.weighting.{name}"),
                    format!("model.weighting.{name} must be {what}, got {value}"),
                ));
            }
            Ok(())
        };
        match *self {
            Self::Elbo | Self::EpsMse => Ok(()),
            Self::Sigmoid { bias } => check("bias", bias, false),
            Self::Edm { p_mean, p_std, sigma_data } => {
                check("p_mean", p_mean, false)?;
                check("p_std", p_std, true)?;
                check("sigma_data", sigma_data, true)
            }
        }
    }
}

impl From<WeightingConfig> for Weighting {
    fn from(w: WeightingConfig) -> Self {
        match w {
            WeightingConfig::Elbo => Weighting::Elbo,
            WeightingConfig::EpsMse => Weighting::EpsMse,
            WeightingConfig::Sigmoid { bias } => Weighting::Sigmoid { bias },
            WeightingConfig::Edm { p_mean, p_std, sigma_data } => Weighting::Edm { p_mean, p_std, sigma_data },
        }
    }
}

impl VdmConfig {
    /// The default run's model: a small VDM for the 8×8 digits (222k parameters, learned linear
    /// schedule).
    pub fn digits() -> Self {
        Self {
            score: ScoreNetConfig {
                n_embd: 32,
                n_layer: 2,
                groups: 8,
                dropout: 0.0,
                fourier_exponents: vec![3, 4, 5, 6, 7, 8],
                gamma_min: -13.3,
                gamma_max: 5.0,
            },
            schedule: ScheduleConfig::Scalar { gamma_min: -13.3, gamma_max: 5.0 },
            prediction: VdmPrediction::Eps,
            weighting: WeightingConfig::Elbo,
        }
    }

    /// Checks every part.
    pub fn validate(&self) -> Result<()> {
        self.score.validate()?;
        self.schedule.validate()?;
        self.weighting.validate()
    }
}

/// The largest `T` of a DDPM (DDPM uses 1000; every step is one network evaluation).
pub const MAX_DDPM_STEPS: usize = 100_000;

/// What the network predicts (DDPM §3.2 and Table 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The noise `ε` (DDPM's choice).
    Eps,
    /// The data `x_0`.
    X0,
    /// The posterior mean `μ̃_t(x_t, x_0)` directly.
    Mean,
}

/// The reverse process's fixed variance `σ_t²` (DDPM §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variance {
    /// `σ_t² = β_t` (DDPM's "fixedlarge").
    Beta,
    /// `σ_t² = β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t)` (DDPM's "fixedsmall").
    BetaTilde,
}

impl From<Variance> for DdpmVariance {
    fn from(v: Variance) -> Self {
        match v {
            Variance::Beta => DdpmVariance::Beta,
            Variance::BetaTilde => DdpmVariance::BetaTilde,
        }
    }
}

/// The normal CDF of the decoder term `L_0` (its bin masses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum L0Cdf {
    /// The exact `Φ` (through `erfc`): the default.
    #[default]
    Exact,
    /// The tanh approximation of DDPM's and improved-diffusion's code, to reproduce the bounds they
    /// publish (they differ from the exact ones in the 2nd–3rd decimal when the `t = 1` predictions
    /// are poor).
    Tanh,
}

impl From<L0Cdf> for NormalCdf {
    fn from(c: L0Cdf) -> Self {
        match c {
            L0Cdf::Exact => NormalCdf::Exact,
            L0Cdf::Tanh => NormalCdf::Tanh,
        }
    }
}

/// The training objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// `L_simple` (DDPM eq. 14): the mean squared error of the prediction against its target
    /// (`ε`, `x_0` or `μ̃`), unweighted, at a uniformly drawn `t`.
    Simple,
    /// The variational bound `L_vlb = L_T + Σ_{t>1} L_{t−1} + L_0` in bits per dimension,
    /// estimated as `L_T + T · L_{t−1}` at a uniformly drawn `t` (unbiased).
    Vlb,
    /// `L_simple + λ L_vlb` (Nichol & Dhariwal 2021), `λ = hybrid_lambda`.
    Hybrid,
}

/// A β schedule in a config file.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BetasConfig {
    /// `β_t` linear from `start` to `end` (DDPM: `1e-4 … 0.02`).
    Linear {
        /// `β_1`.
        start: f64,
        /// `β_T`.
        end: f64,
    },
    /// Nichol & Dhariwal's cosine schedule (`s = 0.008`, `max_beta = 0.999`).
    Cosine {
        /// Offset `s`.
        s: f64,
        /// Clip on `β`.
        max_beta: f64,
    },
}

impl From<BetasConfig> for BetaSchedule {
    fn from(c: BetasConfig) -> Self {
        match c {
            BetasConfig::Linear { start, end } => BetaSchedule::Linear { start, end },
            BetasConfig::Cosine { s, max_beta } => BetaSchedule::Cosine { s, max_beta },
        }
    }
}

/// The β schedules and the DDPM settings as documented `[model]` lines (`vdm config --family ddpm`
/// prints them).
pub const DDPM_EXAMPLES: &[&str] = &[
    r#"
# DDPM's linear schedule, beta_1 = 1e-4 ... beta_T = 0.02 (with T = model.time_steps = 1000)
[model.betas]
kind = "linear"
start = 0.0001
end = 0.02
"#,
    r#"
# Nichol & Dhariwal's cosine schedule
[model.betas]
kind = "cosine"
s = 0.008
max_beta = 0.999
"#,
];

/// A DDPM: network, β schedule, parametrisation, variance and loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdpmConfig {
    /// The U-Net.
    pub unet: UNetConfig,
    /// The β schedule.
    pub betas: BetasConfig,
    /// Diffusion steps `T`.
    pub time_steps: usize,
    /// What the network predicts.
    pub prediction: Prediction,
    /// The reverse process's variance.
    pub variance: Variance,
    /// The training objective.
    pub loss: Loss,
    /// `λ` of the hybrid loss.
    pub hybrid_lambda: f64,
    /// Clip the predicted `x_0` to `[−1, 1]` when sampling and evaluating the bound (DDPM's
    /// `clip_denoised`; never in training). As in DDPM's code it touches `x̂_0` only: a
    /// μ-predicting network's output is its reverse mean, clipped or not.
    pub clip_denoised: bool,
    /// The normal CDF of `L_0`'s bin masses: `exact` (default) or DDPM's `tanh` approximation.
    pub l0_cdf: L0Cdf,
}

impl Default for DdpmConfig {
    /// DDPM's CIFAR-10 model: linear β `1e-4 … 0.02`, `T = 1000`, ε prediction, `σ² = β`, `L_simple`.
    fn default() -> Self {
        Self {
            unet: UNetConfig::default(),
            betas: BetasConfig::Linear { start: 1e-4, end: 0.02 },
            time_steps: 1000,
            prediction: Prediction::Eps,
            variance: Variance::Beta,
            loss: Loss::Simple,
            hybrid_lambda: 0.001,
            clip_denoised: true,
            l0_cdf: L0Cdf::Exact,
        }
    }
}

impl DdpmConfig {
    /// Checks every setting, naming the offending field.
    pub fn validate(&self) -> Result<()> {
        self.unet.validate()?;
        if !(2..=MAX_DDPM_STEPS).contains(&self.time_steps) {
            return Err(Error::setting(
                "model.time_steps",
                format!("model.time_steps must be between 2 and {MAX_DDPM_STEPS}, got {}", self.time_steps),
            ));
        }
        match self.betas {
            BetasConfig::Linear { start, end } => {
                if !(start > 0.0 && start <= end && end < 1.0) {
                    return Err(Error::setting(
                        "model.betas",
                        format!("model.betas needs 0 < start ≤ end < 1, got start = {start}, end = {end}"),
                    ));
                }
            }
            BetasConfig::Cosine { s, max_beta } => {
                if !(s > 0.0 && s.is_finite() && max_beta > 0.0 && max_beta < 1.0) {
                    return Err(Error::setting(
                        "model.betas",
                        format!(
                            "model.betas (cosine) needs s > 0 and 0 < max_beta < 1, got s = {s}, max_beta = {max_beta}"
                        ),
                    ));
                }
            }
        }
        let betas = BetaSchedule::from(self.betas).betas(self.time_steps);
        if let Some((i, b)) = betas.iter().enumerate().find(|(_, b)| !(**b > 0.0 && **b < 1.0)) {
            return Err(Error::setting(
                "model.betas",
                format!("model.betas gives β_{} = {b}; every β must lie in (0, 1)", i + 1),
            ));
        }
        if !(self.hybrid_lambda >= 0.0 && self.hybrid_lambda.is_finite()) {
            return Err(Error::setting(
                "model.hybrid_lambda",
                format!("model.hybrid_lambda must be non-negative and finite, got {}", self.hybrid_lambda),
            ));
        }
        Ok(())
    }
}

/// The unit of a training loss's value.
pub fn loss_unit(loss: Loss) -> &'static str {
    match loss {
        Loss::Simple => "mse",
        Loss::Vlb => "bpd",
        Loss::Hybrid => "mse + λ bpd",
    }
}
