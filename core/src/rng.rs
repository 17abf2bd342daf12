//! A tiny, dependency-free, seedable random number generator.
//!
//! Used for reproducible parameter initialisation (the monotone schedule network) and by the
//! tests and fuzz targets; backends bring their own, faster generators for tensors.

use crate::real::Real;

/// SplitMix64 (Steele, Lea & Flood 2014): a 64-bit state, full period, passes BigCrush.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform on `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal draw (Box–Muller).
    pub fn normal<F: Real>(&mut self) -> F {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let r = libm::sqrt(-2.0 * libm::log(1.0 - self.uniform()));
        let theta = 2.0 * core::f64::consts::PI * self.uniform();
        F::of(r * libm::cos(theta))
    }
}

/// A seed for the random stream `(seed, stream, index)`: SplitMix64 of a mix of the three.
///
/// Every random draw of the project comes from such a stream (a training step's noise, an
/// image's sampling noise), so results do not depend on the order or grouping of the work.
pub fn derive_seed(seed: u64, stream: u64, index: u64) -> u64 {
    SplitMix64::new(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03))
        .next_u64()
}
