//! What the codec needs of a model: its latent chain at `T` steps ([`ChainSpec`]) and its network
//! ([`Denoiser::predict`]). Both families code the same way; they differ in where the chain starts,
//! the reverse step's variance and the decoder `p(x | z_0)`.

use vdm_core::ddpm::{self as ddpm_math, NormalCdf};
use vdm_core::process::DdpmVariance;
use vdm_core::vlb::{self, PIXEL_VALUES};

use crate::error::{Error, Result};
use crate::model::ddpm::Ddpm;
use crate::model::Vdm;
use crate::ops::FastOps;
use crate::sample::{Denoiser, GridPoint, Spacing};

/// A model's latent chain `z_0 … z_top` at `T` steps.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainSpec {
    /// The levels, from the data up: their `γ` and the network's input there.
    pub levels: Vec<GridPoint>,
    /// The variance of the reverse step `p(z_{i−1} | z_i)`.
    pub variance: DdpmVariance,
    /// How the data is encoded and decoded at the bottom of the chain.
    pub decoder: Decoder,
}

impl ChainSpec {
    /// The network evaluations coding one batch takes: one per level above the bottom, and one at
    /// the bottom where the decoder needs it.
    pub fn evaluations(&self) -> usize {
        self.levels.len() - 1 + usize::from(self.decoder.needs_network())
    }
}

/// The bottom of a chain: `q(z_0 | x) = N(α_0 f(x), σ_0²)` for the data encoding `f`, and the
/// decoder `p(x | z_0)` over the 256 pixel values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decoder {
    /// VDM's (VDM eq. 28): `f(x) = 2(x + ½)/256 − 1`, `p(x | z_0) ∝ exp(−½ e^{−γ_0} (z_0/α_0 − f(x))²)`;
    /// no network evaluation.
    Vdm,
    /// DDPM's discretised Gaussian (DDPM §3.3, eq. 13): `f(x) = x/127.5 − 1`, bins of `f` around
    /// the network's `x̂(z_0)` with variance `variance`, open-ended at ±1, bin masses through `cdf`.
    Discretized {
        /// The decoder's variance `σ_1²`.
        variance: f64,
        /// The normal CDF of the bin masses.
        cdf: NormalCdf,
    },
}

impl Decoder {
    /// The data encoding `f(x)` of pixel value `x`.
    pub fn encode(&self, pixel: u8) -> f64 {
        match self {
            Self::Vdm => vlb::encode(f64::from(pixel), PIXEL_VALUES),
            Self::Discretized { .. } => ddpm_math::encode(f64::from(pixel)),
        }
    }

    /// Whether the decoder needs the network at `z_0`.
    pub fn needs_network(&self) -> bool {
        matches!(self, Self::Discretized { .. })
    }

    /// `p(x | z_0)` for the 256 pixel values at `z_0` of level `γ_0`, with the network's `x̂(z_0)`
    /// where the decoder takes it ([`Decoder::needs_network`]). Unnormalised for DDPM's floored
    /// bin masses; the entropy model normalises.
    ///
    /// # Panics
    /// If the decoder takes the network and `x_hat` is `None`.
    pub(crate) fn probabilities(&self, z_0: f64, gamma_0: f64, x_hat: Option<f64>) -> Vec<f64> {
        match *self {
            Self::Vdm => {
                let (x, precision) = (z_0 / vdm_core::process::alpha(gamma_0), (-gamma_0).exp());
                let logits: Vec<f64> =
                    (0..PIXEL_VALUES).map(|k| -0.5 * precision * (x - self.encode(k as u8)).powi(2)).collect();
                let top = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                logits.iter().map(|l| (l - top).exp()).collect()
            }
            Self::Discretized { variance, cdf } => {
                let x_hat = x_hat.expect("the discretised decoder's mean is the network's x̂(z_0)");
                let log_scale = 0.5 * variance.ln();
                (0..PIXEL_VALUES)
                    .map(|k| {
                        (-ddpm_math::discretized_gaussian_nll_with(self.encode(k as u8), x_hat, log_scale, cdf)).exp()
                    })
                    .collect()
            }
        }
    }
}

/// A model the codec can code with.
pub trait Codable<B: FastOps>: Denoiser<B> {
    /// The chain at `steps` steps.
    fn chain(&self, steps: usize) -> Result<ChainSpec>;
}

impl<B: FastOps> Codable<B> for Vdm<B> {
    /// `z_0 … z_T` at `t_i = i/T` (VDM eq. 13's discretisation), the posterior variance `β̃`
    /// (VDM eq. 29–30), VDM's decoder.
    fn chain(&self, steps: usize) -> Result<ChainSpec> {
        Ok(ChainSpec {
            levels: self.grid(steps, Spacing::Time)?,
            variance: DdpmVariance::BetaTilde,
            decoder: Decoder::Vdm,
        })
    }
}

impl<B: FastOps> Codable<B> for Ddpm<B> {
    /// `x_1 … x_T` (all `T` steps: the bound is DDPM's, eq. 5), the model's reverse variance, the
    /// discretised Gaussian decoder with `σ_1²` and the `L_0` CDF the model is evaluated with.
    fn chain(&self, steps: usize) -> Result<ChainSpec> {
        let big_t = self.process.steps();
        if steps != big_t {
            return Err(Error::setting(
                "steps",
                format!("a DDPM codes over all its T = {big_t} steps (the chain its bound is defined on), got {steps}"),
            ));
        }
        let variance = self.ancestral_variance(steps)?;
        let mut levels = self.grid(steps, Spacing::Time)?;
        levels.remove(0); // the data end: x itself is coded by the decoder
        Ok(ChainSpec {
            levels,
            variance,
            decoder: Decoder::Discretized { variance: self.process.reverse_variance(1), cdf: self.process.l0_cdf() },
        })
    }
}
