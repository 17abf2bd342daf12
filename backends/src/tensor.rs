//! [`vdm_core::BatchTensor`] for burn tensors: the same diffusion math on every burn backend.
//!
//! The orphan rule keeps us from implementing vdm-core's trait on burn's `Tensor` directly, so
//! [`BurnBatch`] wraps one. A `Tensor<B, D>` is a batch along axis 0; per-example values have shape `[B, 1, …, 1]` and
//! broadcast against `[B, C, H, W]` through burn's own broadcasting. Functions burn lacks or
//! computes in a form that can overflow are built here from stable pieces:
//! - `softplus(x) = relu(x) + log1p(e^{−|x|})` (burn's `ln(1 + e^x)` overflows for large `x`);
//! - `sigmoid(x) = e^{−softplus(−x)}`;
//! - `expm1(x) = tanh(x/2) (e^x + 1)`, exact in exact arithmetic and accurate for small `|x|`
//!   (burn has no `expm1`);
//! - `erfc(x) = 1 − erf(x)`, which loses relative accuracy in the far right tail (only the
//!   DDPM decoder uses it, and it floors bin masses at `1e-12`).

use burn::tensor::{activation, backend::Backend, Tensor, TensorData};
use vdm_core::rng::SplitMix64;
use vdm_core::BatchTensor;

use crate::data::ImageSet;
use crate::transfer::upload;

/// A burn tensor seen as a batch of examples along axis 0 (see the module docs).
#[derive(Clone, Debug)]
pub struct BurnBatch<B: Backend, const D: usize>(pub Tensor<B, D>);

impl<B: Backend, const D: usize> BurnBatch<B, D> {
    /// The wrapped tensor.
    pub fn into_inner(self) -> Tensor<B, D> {
        self.0
    }
}

impl<B: Backend, const D: usize> From<Tensor<B, D>> for BurnBatch<B, D> {
    fn from(t: Tensor<B, D>) -> Self {
        Self(t)
    }
}

impl<B: Backend, const D: usize> BatchTensor for BurnBatch<B, D> {
    type Scalar = f64;

    fn full_like(&self, value: f64) -> Self {
        Self(self.0.full_like(value))
    }
    fn features(&self) -> usize {
        self.0.dims()[1..].iter().product()
    }
    fn sum_example(self) -> Self {
        let axes: Vec<usize> = (1..D).collect();
        Self(self.0.sum_dims(&axes))
    }
    fn add(self, rhs: Self) -> Self {
        Self(self.0 + rhs.0)
    }
    fn sub(self, rhs: Self) -> Self {
        Self(self.0 - rhs.0)
    }
    fn mul(self, rhs: Self) -> Self {
        Self(self.0 * rhs.0)
    }
    fn div(self, rhs: Self) -> Self {
        Self(self.0 / rhs.0)
    }
    fn add_scalar(self, s: f64) -> Self {
        Self(self.0.add_scalar(s))
    }
    fn mul_scalar(self, s: f64) -> Self {
        Self(self.0.mul_scalar(s))
    }
    fn exp(self) -> Self {
        Self(self.0.exp())
    }
    fn ln(self) -> Self {
        Self(self.0.log())
    }
    fn expm1(self) -> Self {
        let x = self.0;
        Self(x.clone().mul_scalar(0.5).tanh() * x.exp().add_scalar(1.0))
    }
    fn ln1p(self) -> Self {
        Self(self.0.log1p())
    }
    fn sqrt(self) -> Self {
        Self(self.0.sqrt())
    }
    fn sigmoid(self) -> Self {
        Self(softplus(self.0.neg()).neg().exp())
    }
    fn softplus(self) -> Self {
        Self(softplus(self.0))
    }
    fn erfc(self) -> Self {
        Self(self.0.erf().neg().add_scalar(1.0))
    }
    fn clamp_min(self, min: f64) -> Self {
        Self(self.0.clamp_min(min))
    }
    fn clamp_max(self, max: f64) -> Self {
        Self(self.0.clamp_max(max))
    }
    fn floor(self) -> Self {
        Self(self.0.floor())
    }
    fn where_lt(self, threshold: f64, then: Self, otherwise: Self) -> Self {
        let shape = self.0.shape();
        let mask = self.0.lower_elem(threshold);
        // Broadcast per-example operands to the condition's shape before selecting.
        Self(otherwise.0.expand(shape.clone()).mask_where(mask, then.0.expand(shape)))
    }
}

/// `softplus(x) = relu(x) + log1p(e^{−|x|})`: finite for every finite `x`, unlike `ln(1 + e^x)`.
pub fn softplus<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let tail = x.clone().abs().neg().exp().log1p();
    activation::relu(x) + tail
}

/// `count` standard normal values, in order from `rng`.
pub(crate) fn normal_values(rng: &mut SplitMix64, count: usize) -> Vec<f32> {
    (0..count).map(|_| rng.normal::<f32>()).collect()
}

/// Standard normal noise of `shape`, image `i`'s from `streams[i]` (one stream per image).
pub(crate) fn normals<B: Backend>(streams: &mut [SplitMix64], shape: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
    let d = shape[1] * shape[2] * shape[3];
    let values: Vec<f32> = streams.iter_mut().flat_map(|rng| normal_values(rng, d)).collect();
    upload(TensorData::new(values, shape), device)
}

/// `[N, C, H, W]` pixel values as floats on `device`.
pub fn pixels_tensor<B: Backend>(images: &ImageSet, device: &B::Device) -> Tensor<B, 4> {
    let data: Vec<f32> = images.pixels.iter().map(|&p| f32::from(p)).collect();
    upload(TensorData::new(data, [images.len(), images.channels, images.height, images.width]), device)
}

/// `values` on `device`, rounded once to the backend's float type (`Tensor::from_floats` would
/// round them to `f32` first).
pub fn host_tensor<B: Backend>(values: &[f64], device: &B::Device) -> Tensor<B, 1> {
    upload(TensorData::new(values.to_vec(), [values.len()]), device)
}
