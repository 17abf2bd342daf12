//! Where a chain's points lie between the model's two ends: uniform in its time, in log-SNR, or
//! on Karras et al.'s grid.

use serde::{Deserialize, Serialize};

/// How a chain's points are spaced between the model's two ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spacing {
    /// Uniform in the model's time: VDM's `t = i/T`, a DDPM's strided steps (DDIM's).
    #[default]
    Time,
    /// Uniform in the log-SNR `λ = −γ/2`, DPM-Solver's choice (a DDPM's points are the steps
    /// nearest to it).
    LogSnr,
    /// The ρ = 7 grid of Karras et al. (EDM) in `σ/α = e^{γ/2}`: dense near the data.
    Karras,
}

impl std::fmt::Display for Spacing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Time => "time",
            Self::LogSnr => "log-snr",
            Self::Karras => "karras",
        })
    }
}

impl Spacing {
    /// `points` values of `γ` from `low` to `high`, both included (one point: `high`),
    /// increasing, spaced uniformly in `λ` ([`Spacing::LogSnr`]) or in `(σ/α)^{1/ρ}`
    /// ([`Spacing::Karras`]); `None` for [`Spacing::Time`], which only the model can place.
    pub fn gammas(self, low: f64, high: f64, points: usize) -> Option<Vec<f64>> {
        const RHO: f64 = 7.0;
        if points < 2 {
            return (self != Self::Time).then(|| vec![high; points]);
        }
        let fraction = |i: usize| i as f64 / (points - 1) as f64;
        let mut gammas: Vec<f64> = match self {
            Self::Time => return None,
            Self::LogSnr => (0..points).map(|i| low + (high - low) * fraction(i)).collect(),
            // σ/α = e^{γ/2}, so (σ/α)^{1/ρ} = e^{γ/(2ρ)}.
            Self::Karras => {
                let (a, b) = ((low / (2.0 * RHO)).exp(), (high / (2.0 * RHO)).exp());
                (0..points).map(|i| 2.0 * RHO * (a + (b - a) * fraction(i)).ln()).collect()
            }
        };
        (gammas[0], gammas[points - 1]) = (low, high);
        Some(gammas)
    }
}
