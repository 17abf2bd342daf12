//! Synthetic images with independent discretised-Gaussian pixels and a known exact NLL.

use serde::{Deserialize, Serialize};
use vdm_core::rng::SplitMix64;

use super::{check_image_shape, DataError, ImageSet};

/// Images whose pixels are independent discretised Gaussians: pixel `d` is
/// `clamp(round(μ_d + s_d n), 0, 255)`, `n ~ N(0, 1)`, with `μ_d`, `s_d` a smooth pattern.
/// Its exact NLL is [`DiscretisedGaussianImages::entropy_bits`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscretisedGaussianImages {
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// Standard deviation of every pixel, in pixel units.
    pub std: f64,
}

impl DiscretisedGaussianImages {
    /// Checks the shape and the standard deviation.
    pub fn validate(&self) -> Result<(), DataError> {
        check_image_shape([self.channels, self.height, self.width])?;
        if !(self.std.is_finite() && self.std > 0.0) {
            return Err(DataError::Invalid(format!("data.std must be positive and finite, got {}", self.std)));
        }
        Ok(())
    }

    /// Values per image.
    pub fn features(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Per-pixel means: a diagonal ramp from 64 to 192.
    pub fn means(&self) -> Vec<f64> {
        let (h, w) = (self.height as f64, self.width as f64);
        let mut m = Vec::with_capacity(self.channels * self.height * self.width);
        for c in 0..self.channels {
            for y in 0..self.height {
                for x in 0..self.width {
                    let ramp = (y as f64 + x as f64 + c as f64) / (h + w + self.channels as f64 - 3.0).max(1.0);
                    m.push(64.0 + 128.0 * ramp);
                }
            }
        }
        m
    }

    /// The probability of each value `0..=255` for a pixel with mean `mu`.
    fn pmf(&self, mu: f64) -> Vec<f64> {
        let cdf = |x: f64| 0.5 * libm::erfc(-(x - mu) / (self.std * std::f64::consts::SQRT_2));
        (0..256)
            .map(|k| {
                let lo = if k == 0 { 0.0 } else { cdf(k as f64 - 0.5) };
                let hi = if k == 255 { 1.0 } else { cdf(k as f64 + 0.5) };
                hi - lo
            })
            .collect()
    }

    /// The exact expected NLL in bits per dimension: the mean over pixels of `−Σ_k P(k) log₂ P(k)`.
    pub fn entropy_bits(&self) -> f64 {
        let means = self.means();
        let total: f64 = means
            .iter()
            .map(|&mu| self.pmf(mu).iter().filter(|&&p| p > 0.0).map(|&p| -p * p.log2()).sum::<f64>())
            .sum();
        total / means.len() as f64
    }

    /// `n` images drawn with `seed`.
    pub fn sample(&self, n: usize, seed: u64) -> ImageSet {
        let mut rng = SplitMix64::new(seed);
        let means = self.means();
        let pixels = (0..n)
            .flat_map(|_| {
                means
                    .iter()
                    .map(|&mu| (mu + self.std * rng.normal::<f64>()).round().clamp(0.0, 255.0) as u8)
                    .collect::<Vec<_>>()
            })
            .collect();
        ImageSet::new(pixels, [self.channels, self.height, self.width])
    }
}
