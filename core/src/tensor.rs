//! The tensor abstraction the diffusion math is written against.
//!
//! A [`BatchTensor`] is a batch of examples: its first axis indexes examples, the remaining
//! axes (pixels, channels, …) are an example's *features*. Binary operations broadcast a
//! **per-example** tensor (one value per example, as returned by [`BatchTensor::sum_example`])
//! against a full one, exactly like a `[B, 1, 1, 1]` tensor broadcasts against `[B, C, H, W]`.
//!
//! Two reference implementations need no backend at all:
//! - `f32` and `f64`: one example with one feature;
//! - [`Batch<F>`]: a `Vec<F>` of `rows × features` values in row-major order.
//!
//! Backends (burn, in `vdm-backends`) implement the same trait for their own tensors, so the
//! schedules, losses and sampling steps in this crate run unchanged on CPU and GPU.

use alloc::vec::Vec;

use crate::real::Real;

/// The minimal set of elementwise operations and reductions that the diffusion math needs.
///
/// Operations take `self` by value: backends whose tensors are reference-counted handles
/// (burn) clone cheaply, and the reference [`Batch`] reuses its buffer where it can.
pub trait BatchTensor: Clone {
    /// The scalar element type.
    type Scalar: Real;

    /// A tensor of `self`'s shape filled with `value`.
    fn full_like(&self, value: Self::Scalar) -> Self;
    /// Number of features per example (`D`, the divisor in bits per dimension).
    fn features(&self) -> usize;
    /// Sum over every axis but the batch axis: one value per example.
    fn sum_example(self) -> Self;

    /// Elementwise `self + rhs` (with per-example broadcasting).
    fn add(self, rhs: Self) -> Self;
    /// Elementwise `self - rhs` (with per-example broadcasting).
    fn sub(self, rhs: Self) -> Self;
    /// Elementwise `self * rhs` (with per-example broadcasting).
    fn mul(self, rhs: Self) -> Self;
    /// Elementwise `self / rhs` (with per-example broadcasting).
    fn div(self, rhs: Self) -> Self;
    /// Elementwise `self + s`.
    fn add_scalar(self, s: Self::Scalar) -> Self;
    /// Elementwise `self * s`.
    fn mul_scalar(self, s: Self::Scalar) -> Self;

    /// Elementwise `e^x`.
    fn exp(self) -> Self;
    /// Elementwise natural logarithm.
    fn ln(self) -> Self;
    /// Elementwise `e^x - 1`, accurate for small `|x|`.
    fn expm1(self) -> Self;
    /// Elementwise `ln(1 + x)`, accurate for small `|x|`.
    fn ln1p(self) -> Self;
    /// Elementwise square root.
    fn sqrt(self) -> Self;
    /// Elementwise logistic sigmoid; must not overflow for any finite input (see [`Real::sigmoid`]).
    fn sigmoid(self) -> Self;
    /// Elementwise softplus `ln(1 + e^x)`; must not overflow for any finite input (see [`Real::softplus`]).
    fn softplus(self) -> Self;
    /// Elementwise complementary error function.
    fn erfc(self) -> Self;
    /// Elementwise `max(self, min)`.
    fn clamp_min(self, min: Self::Scalar) -> Self;
    /// Elementwise `min(self, max)`.
    fn clamp_max(self, max: Self::Scalar) -> Self;
    /// Elementwise `⌊x⌋`.
    fn floor(self) -> Self;
    /// Elementwise selection: `then` where `self < threshold`, `otherwise` elsewhere.
    fn where_lt(self, threshold: Self::Scalar, then: Self, otherwise: Self) -> Self;

    /// Elementwise `-x`.
    fn neg(self) -> Self {
        self.mul_scalar(-Self::Scalar::one())
    }
    /// Elementwise `x²`.
    fn square(self) -> Self {
        self.clone().mul(self)
    }
    /// Elementwise `ln σ(x) = -softplus(-x)`.
    fn log_sigmoid(self) -> Self {
        self.neg().softplus().neg()
    }
}

use num_traits::One;

macro_rules! scalar_tensor {
    ($f:ty) => {
        /// A single example with a single feature.
        impl BatchTensor for $f {
            type Scalar = $f;
            fn full_like(&self, value: $f) -> $f {
                value
            }
            fn features(&self) -> usize {
                1
            }
            fn sum_example(self) -> $f {
                self
            }
            fn add(self, rhs: $f) -> $f {
                self + rhs
            }
            fn sub(self, rhs: $f) -> $f {
                self - rhs
            }
            fn mul(self, rhs: $f) -> $f {
                self * rhs
            }
            fn div(self, rhs: $f) -> $f {
                self / rhs
            }
            fn add_scalar(self, s: $f) -> $f {
                self + s
            }
            fn mul_scalar(self, s: $f) -> $f {
                self * s
            }
            fn exp(self) -> $f {
                num_traits::Float::exp(self)
            }
            fn ln(self) -> $f {
                num_traits::Float::ln(self)
            }
            fn expm1(self) -> $f {
                num_traits::Float::exp_m1(self)
            }
            fn ln1p(self) -> $f {
                num_traits::Float::ln_1p(self)
            }
            fn sqrt(self) -> $f {
                num_traits::Float::sqrt(self)
            }
            fn sigmoid(self) -> $f {
                Real::sigmoid(self)
            }
            fn softplus(self) -> $f {
                Real::softplus(self)
            }
            fn erfc(self) -> $f {
                Real::erfc(self)
            }
            fn clamp_min(self, min: $f) -> $f {
                num_traits::Float::max(self, min)
            }
            fn clamp_max(self, max: $f) -> $f {
                num_traits::Float::min(self, max)
            }
            fn floor(self) -> $f {
                num_traits::Float::floor(self)
            }
            fn where_lt(self, threshold: $f, then: $f, otherwise: $f) -> $f {
                if self < threshold {
                    then
                } else {
                    otherwise
                }
            }
        }
    };
}
scalar_tensor!(f32);
scalar_tensor!(f64);

/// The reference batch tensor: `rows` examples of `features` values each, row-major in a `Vec`.
///
/// A `Batch` with one feature per row is *per-example* and broadcasts against any batch with
/// the same number of rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<F> {
    data: Vec<F>,
    rows: usize,
}

impl<F: Real> Batch<F> {
    /// `rows` examples laid out row-major in `data`.
    ///
    /// # Panics
    /// If `rows` is zero or does not divide `data.len()`.
    pub fn new(data: Vec<F>, rows: usize) -> Self {
        assert!(rows > 0, "Batch::new: a batch needs at least one row");
        assert!(
            data.len().is_multiple_of(rows) && !data.is_empty(),
            "Batch::new: {} values do not split into {rows} non-empty rows",
            data.len()
        );
        Self { data, rows }
    }

    /// One scalar per example (a per-example tensor).
    pub fn per_example(values: Vec<F>) -> Self {
        let rows = values.len();
        Self::new(values, rows)
    }

    /// Number of examples.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The values, row-major.
    pub fn as_slice(&self) -> &[F] {
        &self.data
    }

    /// Consumes the batch, returning its values row-major.
    pub fn into_vec(self) -> Vec<F> {
        self.data
    }

    /// Example `i`'s features.
    pub fn row(&self, i: usize) -> &[F] {
        let d = self.features();
        &self.data[i * d..(i + 1) * d]
    }

    fn map(mut self, f: impl Fn(F) -> F) -> Self {
        self.data.iter_mut().for_each(|v| *v = f(*v));
        self
    }

    /// The common feature count of broadcast-compatible batches (equal, or per-example).
    fn broadcast_features(batches: &[&Self]) -> usize {
        let rows = batches[0].rows;
        let d = batches.iter().map(|b| b.features()).max().unwrap_or(1);
        for b in batches {
            assert_eq!(b.rows, rows, "Batch: cannot combine a batch of {} rows with one of {rows} rows", b.rows);
            let db = b.features();
            assert!(db == d || db == 1, "Batch: cannot broadcast {db} features against {d} features");
        }
        d
    }

    /// Element `i` of `self` broadcast to a layout of `d` features per row.
    fn at(&self, i: usize, d: usize) -> F {
        if self.features() == d {
            self.data[i]
        } else {
            self.data[i / d]
        }
    }

    /// Elementwise `f(a, b)` with per-example broadcasting.
    fn zip(self, rhs: Self, f: impl Fn(F, F) -> F) -> Self {
        let d = Self::broadcast_features(&[&self, &rhs]);
        let data = (0..self.rows * d).map(|i| f(self.at(i, d), rhs.at(i, d))).collect();
        Self { data, rows: self.rows }
    }
}

impl<F: Real> BatchTensor for Batch<F> {
    type Scalar = F;

    fn full_like(&self, value: F) -> Self {
        Self { data: alloc::vec![value; self.data.len()], rows: self.rows }
    }
    fn features(&self) -> usize {
        self.data.len() / self.rows
    }
    fn sum_example(self) -> Self {
        let d = self.features();
        let data = self.data.chunks_exact(d).map(|row| row.iter().fold(F::zero(), |s, &v| s + v)).collect();
        Self { data, rows: self.rows }
    }
    fn add(self, rhs: Self) -> Self {
        self.zip(rhs, |a, b| a + b)
    }
    fn sub(self, rhs: Self) -> Self {
        self.zip(rhs, |a, b| a - b)
    }
    fn mul(self, rhs: Self) -> Self {
        self.zip(rhs, |a, b| a * b)
    }
    fn div(self, rhs: Self) -> Self {
        self.zip(rhs, |a, b| a / b)
    }
    fn add_scalar(self, s: F) -> Self {
        self.map(|v| v + s)
    }
    fn mul_scalar(self, s: F) -> Self {
        self.map(|v| v * s)
    }
    fn exp(self) -> Self {
        self.map(F::exp)
    }
    fn ln(self) -> Self {
        self.map(F::ln)
    }
    fn expm1(self) -> Self {
        self.map(F::exp_m1)
    }
    fn ln1p(self) -> Self {
        self.map(F::ln_1p)
    }
    fn sqrt(self) -> Self {
        self.map(F::sqrt)
    }
    fn sigmoid(self) -> Self {
        self.map(Real::sigmoid)
    }
    fn softplus(self) -> Self {
        self.map(Real::softplus)
    }
    fn erfc(self) -> Self {
        self.map(Real::erfc)
    }
    fn clamp_min(self, min: F) -> Self {
        self.map(|v| v.max(min))
    }
    fn clamp_max(self, max: F) -> Self {
        self.map(|v| v.min(max))
    }
    fn floor(self) -> Self {
        self.map(F::floor)
    }
    fn where_lt(self, threshold: F, then: Self, otherwise: Self) -> Self {
        let d = Self::broadcast_features(&[&self, &then, &otherwise]);
        let data = (0..self.rows * d)
            .map(|i| if self.at(i, d) < threshold { then.at(i, d) } else { otherwise.at(i, d) })
            .collect();
        Self { data, rows: self.rows }
    }
}
