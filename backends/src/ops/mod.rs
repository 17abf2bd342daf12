//! The few operations training spends its time in, as one backend extension ([`FastOps`]): a 2-D
//! convolution (with a bias per image and a residual, so that a ResNet block's conditioning and
//! skip cost no pass of their own), group normalisation fused with the swish that follows it,
//! single-head attention, the channel concatenation of a U-Net's skips, dropout's mask, and VDM's
//! discretised decoder (a softmax over 256 bins per pixel).
//!
//! Every backend gets them composed from burn's own operations ([`generic`]); the CPU reference
//! backend (burn-ndarray) overrides them with kernels of its own ([`ndarray`]): 3×3 convolutions by
//! Winograd's minimal filtering and others as an im2col and a matrix product per image and chunk of
//! output rows, a single pass for normalisation and swish, and
//! attention whose `L × L` weights live only in a per-thread buffer (the backward pass recomputes
//! them), instead of dozens of small burn operations with their allocations and autodiff bookkeeping.
//! [`autodiff`] gives every `FastOps` backend its backward pass through these operations. A
//! backend also says how many images a network evaluation without gradients should take at a
//! time ([`FastOps::evaluation_batch`]; see [`evaluate_in_parts`]).
//!
//! The kernels are tested against the generic composition (values and gradients) and against
//! finite differences.

pub mod autodiff;
pub mod generic;
#[cfg(feature = "ndarray")]
pub mod ndarray;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, Tensor, TensorPrimitive};

/// The geometry of a convolution: stride and zero padding `[top, bottom, left, right]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    /// The stride in both directions.
    pub stride: usize,
    /// Zero padding: top, bottom, left, right.
    pub padding: [usize; 4],
}

impl ConvSpec {
    /// Stride 1 with `k/2` zeros on every side: output size = input size for odd `k`.
    pub fn same(kernel: usize) -> Self {
        let p = kernel / 2;
        Self { stride: 1, padding: [p; 4] }
    }

    /// `(height, width)` of the output for an input of `(h, w)` and a `k×k` kernel.
    pub fn output_size(&self, [h, w]: [usize; 2], k: usize) -> [usize; 2] {
        let [t, b, l, r] = self.padding;
        [(h + t + b - k) / self.stride + 1, (w + l + r - k) / self.stride + 1]
    }
}

/// Group normalisation's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormSpec {
    /// Number of groups (divides the channels).
    pub groups: usize,
    /// Added to the variance.
    pub epsilon: f64,
    /// Whether swish `y σ(y)` follows the normalisation.
    pub swish: bool,
}

/// The gradients of a convolution with respect to its input, weight and per-image bias.
pub type ConvGrads<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

/// The gradients of group normalisation with respect to its input, scale and shift.
pub type NormGrads<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

/// The gradients of attention with respect to its queries, keys and values.
pub type AttentionGrads<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

/// The gradients of the decoder's NLL with respect to `z`, the data and the precision.
pub type DecoderGrads<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

/// A backend with the fused operations of the networks (see the module docs).
pub trait FastOps: Backend {
    /// `y = conv(x, weight) + bias (+ residual)`: `x` `[N, C, H, W]`, `weight` `[O, C, k, k]`,
    /// `bias` `[N, O]` (one per image and output channel: a ResNet block's conditioning folds in
    /// here), `residual` `[N, O, H', W']` (a ResNet block's skip connection).
    fn conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: Option<FloatTensor<Self>>,
        spec: ConvSpec,
    ) -> FloatTensor<Self> {
        generic::conv2d::<Self>(x, weight, bias, residual, spec)
    }

    /// The gradients of [`FastOps::conv`] given the gradient of its output, the bias's `[N, O]`
    /// (the residual's is the output's own).
    fn conv_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        spec: ConvSpec,
    ) -> ConvGrads<Self> {
        generic::conv2d_backward::<Self>(x, weight, grad, spec)
    }

    /// `[a, b]` along the channels: `a` `[N, C_a, H, W]`, `b` `[N, C_b, H, W]` → `[N, C_a + C_b, H, W]`
    /// (a U-Net's skip connection).
    fn concat_channels(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        generic::concat_channels::<Self>(a, b)
    }

    /// The inverse of [`FastOps::concat_channels`]: `x` split after its first `channels` channels.
    fn split_channels(x: FloatTensor<Self>, channels: usize) -> (FloatTensor<Self>, FloatTensor<Self>) {
        generic::split_channels::<Self>(x, channels)
    }

    /// Inverted dropout's mask for a tensor of `shape`: each value independently `1/keep` with
    /// probability `keep`, else zero. Not tracked by autodiff (a constant of the graph).
    fn dropout_mask(shape: Shape, keep: f64, device: &Self::Device) -> FloatTensor<Self> {
        generic::dropout_mask::<Self>(shape, keep, device)
    }

    /// Group normalisation of `x` `[N, C, H, W]` with per-channel `gamma`, `beta`, optionally
    /// followed by swish.
    fn group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        spec: NormSpec,
    ) -> FloatTensor<Self> {
        generic::group_norm::<Self>(x, gamma, beta, spec)
    }

    /// The gradients of [`FastOps::group_norm`] given the gradient of its output.
    fn group_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        spec: NormSpec,
    ) -> NormGrads<Self> {
        generic::group_norm_backward::<Self>(x, gamma, beta, grad, spec)
    }

    /// Single-head attention in channels-first layout: `q`, `k`, `v` `[N, C, L]` over `L`
    /// positions → `[N, C, L]`, `out[:, i] = Σ_j p_ij v[:, j]` with `p_i = softmax_j(q_i · k_j / √C)`.
    fn dot_product_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>) -> FloatTensor<Self> {
        generic::dot_product_attention::<Self>(q, k, v)
    }

    /// The gradients of [`FastOps::dot_product_attention`] given the gradient of its output.
    fn dot_product_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> AttentionGrads<Self> {
        generic::dot_product_attention_backward::<Self>(q, k, v, grad)
    }

    /// How many images of a batch a network evaluation without gradients takes at a time, given
    /// the bytes of one image's activation (one `[C, H, W]` feature map): all of them unless a
    /// backend runs faster on fewer (see [`evaluate_in_parts`]).
    fn evaluation_batch(activation_bytes: usize) -> usize {
        let _ = activation_bytes;
        usize::MAX
    }

    /// VDM's decoder NLL per value ([`vdm_core::vlb::decoder_nll`]): `z` and the encoded data `f`
    /// `[N, C, H, W]`, the precision `e^{−γ₀}` per image `[N, 1, 1, 1]`, `vocab` bins.
    fn decoder_nll(
        z: FloatTensor<Self>,
        f: FloatTensor<Self>,
        precision: FloatTensor<Self>,
        vocab: usize,
    ) -> FloatTensor<Self> {
        generic::decoder_nll::<Self>(z, f, precision, vocab)
    }

    /// The gradients of [`FastOps::decoder_nll`] given the gradient of its output.
    fn decoder_nll_backward(
        z: FloatTensor<Self>,
        f: FloatTensor<Self>,
        precision: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        vocab: usize,
    ) -> DecoderGrads<Self> {
        generic::decoder_nll_backward::<Self>(z, f, precision, grad, vocab)
    }
}

/// A training backend: autodiff over a [`FastOps`] backend, itself with [`FastOps`].
pub trait TrainBackend: AutodiffBackend<InnerBackend: FastOps> + FastOps {}
impl<B: AutodiffBackend<InnerBackend: FastOps> + FastOps> TrainBackend for B {}

#[cfg(feature = "cuda")]
impl FastOps for crate::Cuda {}

#[cfg(feature = "wgpu")]
impl FastOps for crate::Wgpu {}

/// `f64` on the CPU, through burn's generic operations: for checks that need the precision
/// (finite differences). Beware that burn 0.21's `NdArray<f32>` and `NdArray<f64>` share one
/// device, whose default float type the first tensor made in the process fixes: after any `f32`
/// tensor, `NdArray<f64>` creates `f32` tensors (check `Tensor::dtype`; the `f64` tests run alone
/// in their test binaries).
impl FastOps for burn::backend::NdArray<f64> {}

/// The primitive of a float tensor.
pub fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// A float tensor of a primitive.
pub fn tensor<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// `conv(x, weight) + bias` with one bias per output channel `[O]` ([`FastOps::conv`]).
pub fn conv<B: FastOps>(x: Tensor<B, 4>, weight: Tensor<B, 4>, bias: Tensor<B, 1>, spec: ConvSpec) -> Tensor<B, 4> {
    let n = x.dims()[0];
    conv_with(x, weight, per_image(bias.unsqueeze_dim(0), n), None, spec)
}

/// `row` `[1, O]` repeated for `n` images, `[N, O]`, as a new tensor (a broadcast sum), not an
/// `expand`ed view: burn-cubecl 0.21 (the CUDA and wgpu backends) loses the broadcast when it
/// reshapes an expanded or `repeat_dim`med `[N, 1]` tensor, and the convolution reshapes its bias
/// (a 0.5% error with one output channel, found by `backends/tests/wgpu.rs`).
pub fn per_image<B: Backend>(row: Tensor<B, 2>, n: usize) -> Tensor<B, 2> {
    let o = row.dims()[1];
    Tensor::zeros([n, o], &row.device()) + row
}

/// [`FastOps::conv`] on tensors: a bias per image and output channel `[N, O]`, and a residual.
pub fn conv_with<B: FastOps>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Tensor<B, 2>,
    residual: Option<Tensor<B, 4>>,
    spec: ConvSpec,
) -> Tensor<B, 4> {
    tensor(B::conv(primitive(x), primitive(weight), primitive(bias), residual.map(primitive), spec))
}

/// `net(x, t)` for a batch `x` `[N, C, H, W]` with one `t` per image, evaluated
/// [`FastOps::evaluation_batch`] images at a time, the outputs concatenated: the same values as
/// one evaluation (every operation of the networks treats each image on its own), with each
/// part's activations small enough to stay in cache on the CPU backend.
pub fn evaluate_in_parts<B: FastOps>(
    x: Tensor<B, 4>,
    t: Tensor<B, 1>,
    activation_bytes: usize,
    net: impl Fn(Tensor<B, 4>, Tensor<B, 1>) -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    let (n, part) = (x.dims()[0], B::evaluation_batch(activation_bytes).max(1));
    if n <= part {
        return net(x, t);
    }
    let parts = (0..n).step_by(part).map(|first| {
        let images = first..(first + part).min(n);
        net(x.clone().slice(images.clone()), t.clone().slice(images))
    });
    Tensor::cat(parts.collect(), 0)
}

/// [`FastOps::dot_product_attention`] on tensors.
pub fn dot_product_attention<B: FastOps>(q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>) -> Tensor<B, 3> {
    tensor(B::dot_product_attention(primitive(q), primitive(k), primitive(v)))
}

/// [`FastOps::concat_channels`] on tensors.
pub fn concat_channels<B: FastOps>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 4> {
    tensor(B::concat_channels(primitive(a), primitive(b)))
}

/// Inverted dropout while training (on an autodiff backend, as burn's `Dropout`): `x` times a
/// [`FastOps::dropout_mask`] that zeroes each value with probability `prob`.
pub fn dropout<B: FastOps, const D: usize>(x: Tensor<B, D>, prob: f64) -> Tensor<B, D> {
    if prob == 0.0 || !B::ad_enabled(&x.device()) {
        return x;
    }
    let mask = tensor(B::dropout_mask(x.shape(), 1.0 - prob, &x.device()));
    x * mask
}

/// [`FastOps::decoder_nll`] on tensors.
pub fn decoder_nll<B: FastOps>(
    z: Tensor<B, 4>,
    f: Tensor<B, 4>,
    precision: Tensor<B, 4>,
    vocab: usize,
) -> Tensor<B, 4> {
    tensor(B::decoder_nll(primitive(z), primitive(f), primitive(precision), vocab))
}

/// [`FastOps::group_norm`] on tensors.
pub fn group_norm<B: FastOps>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    spec: NormSpec,
) -> Tensor<B, 4> {
    tensor(B::group_norm(primitive(x), primitive(gamma), primitive(beta), spec))
}
