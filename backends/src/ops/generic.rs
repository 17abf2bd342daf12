//! [`FastOps`](super::FastOps) composed from burn's own operations: what every backend without
//! kernels of its own runs, and the reference the kernels are tested against.

use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::module;
use burn::tensor::ops::{ConvOptions, FloatTensor};
use burn::tensor::{Distribution, Shape, Tensor};

use vdm_core::vlb;

use super::{primitive, tensor, AttentionGrads, ConvGrads, ConvSpec, DecoderGrads, NormGrads, NormSpec};
use crate::tensor::BurnBatch;

/// burn's convolution options for `spec` when its padding is symmetric; otherwise the padding
/// to apply to the input first (`[left, right, top, bottom]`) and options without padding.
fn options(spec: ConvSpec) -> (Option<[usize; 4]>, ConvOptions<2>) {
    let [t, b, l, r] = spec.padding;
    let symmetric = t == b && l == r;
    let padding = if symmetric { [t, l] } else { [0, 0] };
    let options = ConvOptions::new([spec.stride; 2], padding, [1, 1], 1);
    ((!symmetric).then_some([l, r, t, b]), options)
}

fn pad<B: Backend>(x: Tensor<B, 4>, explicit: Option<[usize; 4]>) -> Tensor<B, 4> {
    match explicit {
        Some([l, r, t, b]) => x.pad((l, r, t, b), burn::tensor::ops::PadMode::Constant(0.0)),
        None => x,
    }
}

/// [`FastOps::conv`](super::FastOps::conv) composed from burn's operations.
pub fn conv2d<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    residual: Option<FloatTensor<B>>,
    spec: ConvSpec,
) -> FloatTensor<B> {
    let (explicit, options) = options(spec);
    let x = pad(tensor::<B, 4>(x), explicit);
    let y = module::conv2d(x, tensor(weight), None, options) + tensor::<B, 2>(bias).unsqueeze_dims::<4>(&[2, 3]);
    primitive(match residual {
        Some(r) => y + tensor(r),
        None => y,
    })
}

/// [`FastOps::conv_backward`](super::FastOps::conv_backward) composed from burn's operations.
pub fn conv2d_backward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
    spec: ConvSpec,
) -> ConvGrads<B> {
    let (explicit, options) = options(spec);
    let x = tensor::<B, 4>(x);
    let [_, _, h, w] = x.dims();
    let padded = primitive(pad(x, explicit));
    let dx = tensor::<B, 4>(B::conv2d_x_backward(padded.clone(), weight.clone(), grad.clone(), options.clone()));
    let dx = match explicit {
        Some([l, _, t, _]) => {
            let [n, c, _, _] = dx.dims();
            dx.slice([0..n, 0..c, t..t + h, l..l + w])
        }
        None => dx,
    };
    let dw = B::conv2d_weight_backward(padded, weight, grad.clone(), options);
    let db = tensor::<B, 4>(grad).sum_dims(&[2, 3]).flatten::<2>(1, 3);
    (primitive(dx), dw, primitive(db))
}

/// [`FastOps::concat_channels`](super::FastOps::concat_channels) composed from burn's operations.
pub fn concat_channels<B: Backend>(a: FloatTensor<B>, b: FloatTensor<B>) -> FloatTensor<B> {
    primitive(Tensor::cat(vec![tensor::<B, 4>(a), tensor(b)], 1))
}

/// [`FastOps::split_channels`](super::FastOps::split_channels) composed from burn's operations.
pub fn split_channels<B: Backend>(x: FloatTensor<B>, channels: usize) -> (FloatTensor<B>, FloatTensor<B>) {
    let x = tensor::<B, 4>(x);
    let [n, c, h, w] = x.dims();
    (primitive(x.clone().slice([0..n, 0..channels, 0..h, 0..w])), primitive(x.slice([0..n, channels..c, 0..h, 0..w])))
}

/// [`FastOps::dropout_mask`](super::FastOps::dropout_mask) composed from burn's operations.
pub fn dropout_mask<B: Backend>(shape: Shape, keep: f64, device: &B::Device) -> FloatTensor<B> {
    let mask = Tensor::<B, 1>::random([shape.num_elements()], Distribution::Bernoulli(keep), device).div_scalar(keep);
    B::float_reshape(primitive(mask), shape)
}

/// `x` normalised per group: `(x̂ [N, C, H, W], 1/σ per group [N, G, 1])`.
fn normalise<B: Backend>(x: Tensor<B, 4>, spec: NormSpec) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let [n, c, h, w] = x.dims();
    let grouped = x.reshape([n, spec.groups, c / spec.groups * h * w]);
    let centred = grouped.clone() - grouped.mean_dim(2);
    let inv_std = centred.clone().square().mean_dim(2).add_scalar(spec.epsilon).sqrt().recip();
    ((centred * inv_std.clone()).reshape([n, c, h, w]), inv_std)
}

fn per_channel<B: Backend>(v: Tensor<B, 1>) -> Tensor<B, 4> {
    let c = v.dims()[0];
    v.reshape([1, c, 1, 1])
}

/// [`FastOps::group_norm`](super::FastOps::group_norm) composed from burn's operations.
pub fn group_norm<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    spec: NormSpec,
) -> FloatTensor<B> {
    let (x_hat, _) = normalise(tensor::<B, 4>(x), spec);
    let y = x_hat * per_channel(tensor(gamma)) + per_channel(tensor(beta));
    primitive(if spec.swish { y.clone() * sigmoid(y) } else { y })
}

/// [`FastOps::group_norm_backward`](super::FastOps::group_norm_backward) composed from burn's operations.
pub fn group_norm_backward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    grad: FloatTensor<B>,
    spec: NormSpec,
) -> NormGrads<B> {
    let x = tensor::<B, 4>(x);
    let [n, c, h, w] = x.dims();
    let (x_hat, inv_std) = normalise(x, spec);
    let gamma = per_channel(tensor::<B, 1>(gamma));
    let mut dy = tensor::<B, 4>(grad);
    if spec.swish {
        // d/dy [y σ(y)] = σ(y) (1 + y (1 − σ(y))).
        let y = x_hat.clone() * gamma.clone() + per_channel(tensor(beta));
        let s = sigmoid(y.clone());
        dy = dy * s.clone() * (y * s.neg().add_scalar(1.0)).add_scalar(1.0);
    }
    let flat = |t: Tensor<B, 4>| t.sum_dims(&[0, 2, 3]).flatten::<1>(0, 3);
    let d_gamma = flat(dy.clone() * x_hat.clone());
    let d_beta = flat(dy.clone());
    // dx = (1/σ)(dx̂ − mean(dx̂) − x̂ mean(dx̂ x̂)), means over each group.
    let grouped = |t: Tensor<B, 4>| t.reshape([n, spec.groups, c / spec.groups * h * w]);
    let (d_hat, x_hat) = (grouped(dy * gamma), grouped(x_hat));
    let dx = (d_hat.clone() - d_hat.clone().mean_dim(2) - x_hat.clone() * (d_hat * x_hat).mean_dim(2)) * inv_std;
    (primitive(dx.reshape([n, c, h, w])), primitive(d_gamma), primitive(d_beta))
}

/// The attention weights `p[n, i, j] = softmax_j(q_i · k_j / √C)` of `q`, `k` `[N, C, L]`.
fn attention_weights<B: Backend>(q: Tensor<B, 3>, k: Tensor<B, 3>) -> Tensor<B, 3> {
    let c = q.dims()[1];
    softmax(q.swap_dims(1, 2).matmul(k).div_scalar((c as f64).sqrt()), 2)
}

/// [`FastOps::dot_product_attention`](super::FastOps::dot_product_attention) composed from burn's operations.
pub fn dot_product_attention<B: Backend>(q: FloatTensor<B>, k: FloatTensor<B>, v: FloatTensor<B>) -> FloatTensor<B> {
    let p = attention_weights(tensor::<B, 3>(q), tensor(k));
    primitive(tensor::<B, 3>(v).matmul(p.swap_dims(1, 2)))
}

/// With `o = v pᵀ` and `s = qᵀk/√C`: `dv = do p`, `dp = doᵀ v`, `ds_ij = p_ij (dp_ij − Σ_j' p_ij' dp_ij')`,
/// `dq = k dsᵀ/√C`, `dk = q ds/√C`.
pub fn dot_product_attention_backward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> AttentionGrads<B> {
    let (q, k, v, grad) = (tensor::<B, 3>(q), tensor::<B, 3>(k), tensor::<B, 3>(v), tensor::<B, 3>(grad));
    let c = q.dims()[1];
    let p = attention_weights(q.clone(), k.clone());
    let dv = grad.clone().matmul(p.clone());
    let dp = grad.swap_dims(1, 2).matmul(v);
    let ds = (p.clone() * (dp.clone() - (dp * p).sum_dim(2))).div_scalar((c as f64).sqrt());
    let dq = k.matmul(ds.clone().swap_dims(1, 2));
    let dk = q.matmul(ds);
    (primitive(dq), primitive(dk), primitive(dv))
}

/// [`FastOps::decoder_nll`](super::FastOps::decoder_nll) composed from burn's operations.
pub fn decoder_nll<B: Backend>(
    z: FloatTensor<B>,
    f: FloatTensor<B>,
    precision: FloatTensor<B>,
    vocab: usize,
) -> FloatTensor<B> {
    let nll = vlb::decoder_nll(
        BurnBatch(tensor::<B, 4>(f)),
        BurnBatch(tensor::<B, 4>(z)),
        BurnBatch(tensor::<B, 4>(precision)),
        vocab,
    );
    primitive(nll.0)
}

/// With `π` the decoder's softmax over the bins: `∂/∂z = P (E_π[f_k] − f)`, `∂/∂f = −P (z − f)`,
/// `∂/∂P = ½ ((z − f)² − E_π[(z − f_k)²])`, the last summed over each image's values.
pub fn decoder_nll_backward<B: Backend>(
    z: FloatTensor<B>,
    f: FloatTensor<B>,
    precision: FloatTensor<B>,
    grad: FloatTensor<B>,
    vocab: usize,
) -> DecoderGrads<B> {
    let (z, f, p, g) = (tensor::<B, 4>(z), tensor::<B, 4>(f), tensor::<B, 4>(precision), tensor::<B, 4>(grad));
    // Unnormalised softmax weights relative to the largest logit, as in the forward pass.
    let nearest = z.clone().add_scalar(1.0).mul_scalar(vocab as f64 / 2.0).floor().clamp(0.0, (vocab - 1) as f64);
    let centre = |k: Tensor<B, 4>| k.add_scalar(0.5).mul_scalar(2.0 / vocab as f64).sub_scalar(1.0);
    let two_delta = (z.clone() - centre(nearest.clone())).mul_scalar(2.0);
    let (mut total, mut mean_f, mut mean_sq) = (z.zeros_like(), z.zeros_like(), z.zeros_like());
    for k in 0..vocab {
        let delta = nearest.clone().sub_scalar(k as f64).mul_scalar(2.0 / vocab as f64);
        let weight = (delta.clone() * (two_delta.clone() + delta) * p.clone()).mul_scalar(-0.5).exp();
        let f_k = 2.0 * (k as f64 + 0.5) / vocab as f64 - 1.0;
        total = total + weight.clone();
        mean_f = mean_f + weight.clone().mul_scalar(f_k);
        mean_sq = mean_sq + weight * z.clone().sub_scalar(f_k).powi_scalar(2);
    }
    let (mean_f, mean_sq) = (mean_f / total.clone(), mean_sq / total);
    let residual = z - f.clone();
    let dz = g.clone() * p.clone() * (mean_f - f);
    let df = -(g.clone() * p.clone() * residual.clone());
    let dp = (g * (residual.powi_scalar(2) - mean_sq)).mul_scalar(0.5).sum_dims(&[1, 2, 3]);
    // One precision for the whole batch: its gradient sums over the images too.
    let dp = if p.dims()[0] == 1 { dp.sum_dim(0) } else { dp };
    (primitive(dz), primitive(df), primitive(dp))
}
