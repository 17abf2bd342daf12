//! Scalar floating-point types the math is generic over (`f32`, `f64`).
//!
//! [`Real`] adds to [`num_traits::Float`] the few functions the diffusion math needs that
//! `Float` lacks (the error function) and the numerically stable logistic functions every
//! other module builds on.

use core::fmt::Debug;
use num_traits::{Float, FloatConst};

/// A real scalar: `f32` or `f64`.
///
/// Everything here is computed in a form that neither overflows nor cancels catastrophically
/// for any finite input.
pub trait Real: Float + FloatConst + Debug + Default + Send + Sync + 'static {
    /// Converts an `f64` constant to `Self` (rounding for `f32`).
    fn of(x: f64) -> Self;

    /// Converts `self` to `f64` exactly (for `f32` and `f64`).
    fn as_f64(self) -> f64;

    /// The complementary error function `erfc(x) = 1 - erf(x)`, accurate in the right tail.
    fn erfc(self) -> Self;

    /// The logistic sigmoid `σ(x) = 1 / (1 + e^{-x})`.
    ///
    /// Evaluated as `1/(1+e^{-x})` for `x ≥ 0` and `e^{x}/(1+e^{x})` for `x < 0`, so that the
    /// exponential never overflows.
    fn sigmoid(self) -> Self {
        if self >= Self::zero() {
            Self::one() / (Self::one() + (-self).exp())
        } else {
            let e = self.exp();
            e / (Self::one() + e)
        }
    }

    /// The softplus `log(1 + e^{x})`, evaluated as `max(x, 0) + log1p(e^{-|x|})`.
    fn softplus(self) -> Self {
        self.max(Self::zero()) + (-self.abs()).exp().ln_1p()
    }
}

impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn as_f64(self) -> f64 {
        self
    }
    fn erfc(self) -> Self {
        libm::erfc(self)
    }
}

impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
    fn erfc(self) -> Self {
        libm::erfcf(self)
    }
}
