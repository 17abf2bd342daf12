//! [`FastOps`] kernels for burn-ndarray (`f32`): convolution in the tensors' own `[N, C, H, W]`
//! layout, 3×3 ones by Winograd's F(2×2, 3×3) and every other as im2col and a matrix product per
//! image and chunk of output rows; group normalisation
//! with swish in one pass over each group; attention as two matrix products per image around a
//! softmax; the skips' channel concatenation as one copy per image; dropout's mask from a
//! counter-based generator.
//!
//! Every loop is split across threads by output (images, groups), and each output value is
//! summed in a fixed order, so the results do not depend on the number of threads.

mod attention;
mod channels;
mod conv;
mod decoder;
mod dropout;
mod gemm;
mod norm;
mod simd;
mod winograd;

use std::borrow::Cow;
use std::mem::MaybeUninit;

use burn::backend::ndarray::{NdArrayDevice, NdArrayTensor};
use burn::tensor::{Distribution, Int, Shape, Tensor};
use ndarray::{ArcArray, IxDyn};
use rayon::prelude::*;

use super::{generic, AttentionGrads, ConvGrads, ConvSpec, DecoderGrads, FastOps, NormGrads, NormSpec};
use crate::Cpu;
use attention::{attention_backward, attention_forward, AttentionShape};
use channels::{concat_images, split_images};
use conv::{conv_backward, conv_forward, Geometry};
use decoder::{decoder_map, decoder_value};
use dropout::dropout_mask;
use norm::{norm_backward, norm_forward};

/// A tensor's `f32` values in row-major order, and its shape (`None` for another dtype).
fn values(t: &NdArrayTensor) -> Option<(Cow<'_, [f32]>, Vec<usize>)> {
    let NdArrayTensor::F32(storage) = t else { return None };
    let view = storage.view();
    let shape = view.shape().to_vec();
    Some(match view.to_slice() {
        Some(slice) => (Cow::Borrowed(slice), shape),
        None => (Cow::Owned(view.iter().copied().collect()), shape),
    })
}

/// `len` zeros, written across threads: for the kernels' outputs, whose serial zeroing (and the
/// page faults of fresh memory) would otherwise hold up the other threads.
pub(super) fn zeros(len: usize) -> Vec<f32> {
    let mut values = Vec::with_capacity(len);
    values.spare_capacity_mut().par_chunks_mut(1 << 16).for_each(|part| part.fill(MaybeUninit::new(0.0)));
    // SAFETY: every element of the first `len` was just initialised.
    unsafe { values.set_len(len) };
    values
}

fn from_values(data: Vec<f32>, shape: &[usize]) -> NdArrayTensor {
    let array = ndarray::Array::from_shape_vec(IxDyn(shape), data).expect("a kernel's output matches its shape");
    NdArrayTensor::from(ArcArray::from(array))
}

/// Runs `each(index, item, threaded)` over `items`: across threads when there are at least as
/// many items as threads (each then runs single-threaded matrix products), else one after
/// another with `threaded` matrix products.
pub(super) fn for_each_part<T: Send>(items: Vec<T>, each: impl Fn(usize, T, bool) + Sync) {
    if items.len() >= rayon::current_num_threads() {
        items.into_par_iter().enumerate().for_each(|(i, item)| each(i, item, false));
    } else {
        items.into_iter().enumerate().for_each(|(i, item)| each(i, item, true));
    }
}

impl FastOps for Cpu {
    fn decoder_nll(z: NdArrayTensor, f: NdArrayTensor, precision: NdArrayTensor, vocab: usize) -> NdArrayTensor {
        let (Some((zv, zs)), Some((fv, _)), Some((pv, _))) = (values(&z), values(&f), values(&precision)) else {
            return generic::decoder_nll::<Self>(z, f, precision, vocab);
        };
        let nll = decoder_map(&zv, &fv, &pv, |z, f, p| decoder_value(z, f, p, vocab).0 as f32);
        from_values(nll, &zs)
    }

    fn decoder_nll_backward(
        z: NdArrayTensor,
        f: NdArrayTensor,
        precision: NdArrayTensor,
        grad: NdArrayTensor,
        vocab: usize,
    ) -> DecoderGrads<Self> {
        let (Some((zv, zs)), Some((fv, _)), Some((pv, ps)), Some((gv, _))) =
            (values(&z), values(&f), values(&precision), values(&grad))
        else {
            return generic::decoder_nll_backward::<Self>(z, f, precision, grad, vocab);
        };
        let parts = decoder_map(&zv, &fv, &pv, |z, f, p| {
            let (_, mean_f, mean_sq) = decoder_value(z, f, p, vocab);
            (p * (mean_f - f), -p * (z - f), 0.5 * ((z - f) * (z - f) - mean_sq))
        });
        let per_precision = zv.len() / pv.len();
        let mut dp = vec![0f64; pv.len()];
        let (mut dz, mut df) = (Vec::with_capacity(zv.len()), Vec::with_capacity(zv.len()));
        for (i, ((a, b, c), g)) in parts.into_iter().zip(gv.iter()).enumerate() {
            let g = f64::from(*g);
            dz.push((g * a) as f32);
            df.push((g * b) as f32);
            dp[i / per_precision] += g * c;
        }
        (from_values(dz, &zs), from_values(df, &zs), from_values(dp.into_iter().map(|v| v as f32).collect(), &ps))
    }

    fn conv(
        x: NdArrayTensor,
        weight: NdArrayTensor,
        bias: NdArrayTensor,
        residual: Option<NdArrayTensor>,
        spec: ConvSpec,
    ) -> NdArrayTensor {
        // `Some(None)`: no residual; `None`: a residual of another dtype.
        let rv = match &residual {
            Some(r) => values(r).map(|(v, _)| Some(v)),
            None => Some(None),
        };
        let (Some((xv, xs)), Some((wv, ws)), Some((bv, _)), Some(rv)) =
            (values(&x), values(&weight), values(&bias), rv)
        else {
            return generic::conv2d::<Self>(x, weight, bias, residual, spec);
        };
        let g = Geometry::new(&xs, &ws, spec);
        from_values(conv_forward(&xv, xs[0], &wv, &bv, rv.as_deref(), &g), &[xs[0], g.o, g.ho, g.wo])
    }

    fn conv_backward(x: NdArrayTensor, weight: NdArrayTensor, grad: NdArrayTensor, spec: ConvSpec) -> ConvGrads<Self> {
        let (Some((xv, xs)), Some((wv, ws)), Some((gv, _))) = (values(&x), values(&weight), values(&grad)) else {
            return generic::conv2d_backward::<Self>(x, weight, grad, spec);
        };
        let g = Geometry::new(&xs, &ws, spec);
        let (dx, dw, db) = conv_backward(&xv, xs[0], &wv, &gv, &g);
        (from_values(dx, &xs), from_values(dw, &ws), from_values(db, &[xs[0], g.o]))
    }

    fn dot_product_attention(q: NdArrayTensor, k: NdArrayTensor, v: NdArrayTensor) -> NdArrayTensor {
        let (Some((qv, qs)), Some((kv, _)), Some((vv, _))) = (values(&q), values(&k), values(&v)) else {
            return generic::dot_product_attention::<Self>(q, k, v);
        };
        from_values(attention_forward(&qv, &kv, &vv, AttentionShape::new(&qs), qs[0]), &qs)
    }

    fn dot_product_attention_backward(
        q: NdArrayTensor,
        k: NdArrayTensor,
        v: NdArrayTensor,
        grad: NdArrayTensor,
    ) -> AttentionGrads<Self> {
        let (Some((qv, qs)), Some((kv, _)), Some((vv, _)), Some((gv, _))) =
            (values(&q), values(&k), values(&v), values(&grad))
        else {
            return generic::dot_product_attention_backward::<Self>(q, k, v, grad);
        };
        let [dq, dk, dv] = attention_backward(&qv, &kv, &vv, &gv, AttentionShape::new(&qs), qs[0]);
        (from_values(dq, &qs), from_values(dk, &qs), from_values(dv, &qs))
    }

    fn concat_channels(a: NdArrayTensor, b: NdArrayTensor) -> NdArrayTensor {
        let (Some((av, as_)), Some((bv, bs))) = (values(&a), values(&b)) else {
            return generic::concat_channels::<Self>(a, b);
        };
        let plane = as_[2] * as_[3];
        from_values(concat_images(&av, as_[1] * plane, &bv, bs[1] * plane), &[as_[0], as_[1] + bs[1], as_[2], as_[3]])
    }

    fn split_channels(x: NdArrayTensor, channels: usize) -> (NdArrayTensor, NdArrayTensor) {
        let Some((xv, xs)) = values(&x) else {
            return generic::split_channels::<Self>(x, channels);
        };
        let plane = xs[2] * xs[3];
        let (a, b) = split_images(&xv, xs[1] * plane, channels * plane);
        (from_values(a, &[xs[0], channels, xs[2], xs[3]]), from_values(b, &[xs[0], xs[1] - channels, xs[2], xs[3]]))
    }

    fn dropout_mask(shape: Shape, keep: f64, device: &NdArrayDevice) -> NdArrayTensor {
        // The seed from burn's generator, so that `Backend::seed` makes training reproducible.
        let draws = Tensor::<Self, 1, Int>::random([2], Distribution::Uniform(0.0, 2f64.powi(32)), device).into_data();
        let seed = draws.iter::<i64>().fold(0u64, |acc, v| (acc << 32) ^ v as u64);
        from_values(dropout_mask(shape.num_elements(), keep, seed), shape.as_slice())
    }

    fn evaluation_batch(activation_bytes: usize) -> usize {
        // About 1 MiB of each activation per thread, half a core's L2 cache here: for the small
        // model (256 KB per image) 4 images per thread, which samples 9% faster than 32.
        rayon::current_num_threads() * ((1 << 20) / activation_bytes.max(1)).max(1)
    }

    fn group_norm(x: NdArrayTensor, gamma: NdArrayTensor, beta: NdArrayTensor, spec: NormSpec) -> NdArrayTensor {
        let (Some((xv, xs)), Some((gv, _)), Some((bv, _))) = (values(&x), values(&gamma), values(&beta)) else {
            return generic::group_norm::<Self>(x, gamma, beta, spec);
        };
        from_values(norm_forward(&xv, &xs, &gv, &bv, spec), &xs)
    }

    fn group_norm_backward(
        x: NdArrayTensor,
        gamma: NdArrayTensor,
        beta: NdArrayTensor,
        grad: NdArrayTensor,
        spec: NormSpec,
    ) -> NormGrads<Self> {
        let (Some((xv, xs)), Some((gv, gs)), Some((bv, _)), Some((dv, _))) =
            (values(&x), values(&gamma), values(&beta), values(&grad))
        else {
            return generic::group_norm_backward::<Self>(x, gamma, beta, grad, spec);
        };
        let (dx, dg, db) = norm_backward(&xv, &xs, &gv, &bv, &dv, spec);
        (from_values(dx, &xs), from_values(dg, &gs), from_values(db, &gs))
    }
}
