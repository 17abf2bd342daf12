//! [`FastOps`] kernels for burn-ndarray (`f32`): convolution as im2col and one matrix product per
//! chunk of images, and group normalisation with swish in one pass over each group.
//!
//! Every loop is split across threads by output (images, rows, groups), and each output value is
//! summed in a fixed order, so the results do not depend on the number of threads.

use std::borrow::Cow;

use burn::backend::ndarray::NdArrayTensor;
use ndarray::{ArcArray, IxDyn};
use rayon::prelude::*;

use super::{generic, ConvGrads, ConvSpec, DecoderGrads, FastOps, NormGrads, NormSpec};
use crate::Cpu;

/// At most this many `f32` values of im2col columns are held at once (32 MB): large batches are
/// convolved a chunk of images at a time.
const COLUMNS_LIMIT: usize = 1 << 23;

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

fn from_values(data: Vec<f32>, shape: &[usize]) -> NdArrayTensor {
    let array = ndarray::Array::from_shape_vec(IxDyn(shape), data).expect("a kernel's output matches its shape");
    NdArrayTensor::from(ArcArray::from(array))
}

/// The shape of one convolution.
#[derive(Clone, Copy)]
struct Geometry {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    ho: usize,
    wo: usize,
    spec: ConvSpec,
}

impl Geometry {
    fn new(x: &[usize], weight: &[usize], spec: ConvSpec) -> Self {
        let (c, h, w, o, k) = (x[1], x[2], x[3], weight[0], weight[2]);
        let [ho, wo] = spec.output_size([h, w], k);
        Self { c, h, w, o, k, ho, wo, spec }
    }
    /// Values under the kernel at one output pixel: `k·k·C`, ordered `(dy, dx, c)`.
    fn rows(&self) -> usize {
        self.c * self.k * self.k
    }
    fn in_pixels(&self) -> usize {
        self.h * self.w
    }
    fn out_pixels(&self) -> usize {
        self.ho * self.wo
    }
    /// A 1×1, stride-1, unpadded convolution: its im2col matrix is the input itself.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.spec == ConvSpec::same(1)
    }
    /// Images per chunk so that the columns stay within [`COLUMNS_LIMIT`].
    fn chunk(&self, n: usize) -> usize {
        (COLUMNS_LIMIT / (self.rows() * self.out_pixels()).max(1)).clamp(1, n.max(1))
    }
}

/// `[N, C, P] → [N, P, C]` (channels first to channels last), or back with `c` and `p` swapped.
fn transpose_images(x: &[f32], n: usize, c: usize, p: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * c * p];
    out.par_chunks_mut(c * p).zip(x.par_chunks(c * p)).take(n).for_each(|(dst, src)| {
        for (ci, channel) in src.chunks_exact(p).enumerate() {
            for (pi, &v) in channel.iter().enumerate() {
                dst[pi * c + ci] = v;
            }
        }
    });
    out
}

/// The input position under output position `out` and kernel offset `tap`, if inside `0..size`.
fn source(out: usize, tap: usize, stride: usize, pad: usize, size: usize) -> Option<usize> {
    (out * stride + tap).checked_sub(pad).filter(|&i| i < size)
}

/// The input pixels under each kernel tap at output pixel `q` of an image, or `None` for padding:
/// `(tap index, input pixel)`.
fn taps(q: usize, g: &Geometry) -> impl Iterator<Item = (usize, Option<usize>)> + '_ {
    let (oy, ox) = (q / g.wo, q % g.wo);
    let [top, _, left, _] = g.spec.padding;
    (0..g.k * g.k).map(move |t| {
        let (dy, dx) = (t / g.k, t % g.k);
        let pixel = source(oy, dy, g.spec.stride, top, g.h).zip(source(ox, dx, g.spec.stride, left, g.w)).map(|(iy, ix)| iy * g.w + ix);
        (t, pixel)
    })
}

/// `cols[b·HoWo + q, (dy, dx, c)]` = the channels-last input `x` under kernel tap `(dy, dx)` at
/// output pixel `q` of image `b` (zero in the padding): the im2col matrix of `nb` images.
fn im2col(x: &[f32], nb: usize, g: &Geometry, cols: &mut [f32]) {
    let (c, rows) = (g.c, g.rows());
    cols[..nb * g.out_pixels() * rows].par_chunks_mut(rows).enumerate().for_each(|(j, row)| {
        let (b, q) = (j / g.out_pixels(), j % g.out_pixels());
        let image = &x[b * g.in_pixels() * c..];
        for (t, pixel) in taps(q, g) {
            let dst = &mut row[t * c..][..c];
            match pixel {
                Some(p) => dst.copy_from_slice(&image[p * c..][..c]),
                None => dst.fill(0.0),
            }
        }
    });
}

/// The adjoint of [`im2col`]: adds every column value back onto the channels-last pixel it came from.
fn col2im(cols: &[f32], nb: usize, g: &Geometry, dx: &mut [f32]) {
    let (c, rows) = (g.c, g.rows());
    dx[..nb * g.in_pixels() * c].par_chunks_mut(g.in_pixels() * c).enumerate().for_each(|(b, image)| {
        for q in 0..g.out_pixels() {
            let row = &cols[(b * g.out_pixels() + q) * rows..][..rows];
            for (t, pixel) in taps(q, g) {
                if let Some(p) = pixel {
                    for (d, v) in image[p * c..][..c].iter_mut().zip(&row[t * c..][..c]) {
                        *d += v;
                    }
                }
            }
        }
    });
}

/// `c = a b + β c` for `a` `[m, k]` (row and column strides `a_rs`, `a_cs`), `b` `[k, n]`, and
/// row-major `c` `[m, n]`; `β` is 0 or 1.
#[allow(clippy::too_many_arguments)]
fn gemm(m: usize, k: usize, n: usize, a: &[f32], a_rs: usize, a_cs: usize, b: &[f32], b_rs: usize, b_cs: usize, beta: f32, c: &mut [f32]) {
    assert!(a.len() >= (m - 1) * a_rs + (k - 1) * a_cs + 1 && b.len() >= (k - 1) * b_rs + (n - 1) * b_cs + 1 && c.len() >= m * n);
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 { ::gemm::Parallelism::Rayon(threads) } else { ::gemm::Parallelism::None };
    // SAFETY: the assertion above keeps every index the strides reach inside the slices.
    unsafe {
        ::gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, beta != 0.0, a.as_ptr(), a_cs as isize, a_rs as isize, b.as_ptr(), b_cs as isize, b_rs as isize, beta, 1.0, false, false, false, parallelism);
    }
}

/// The weight `[O, C, k, k]` as `[O, (dy, dx, c)]`, the order of the im2col rows.
fn taps_last(weight: &[f32], g: &Geometry) -> Vec<f32> {
    let (kk, rows) = (g.k * g.k, g.rows());
    let mut out = vec![0f32; g.o * rows];
    for (oc, dst) in out.chunks_exact_mut(rows).enumerate() {
        for ci in 0..g.c {
            for t in 0..kk {
                dst[t * g.c + ci] = weight[(oc * g.c + ci) * kk + t];
            }
        }
    }
    out
}

/// The im2col matrix of images `start..start + nb` of the channels-last input: borrowed for a
/// pointwise convolution, built into `buffer` otherwise.
fn columns<'a>(x: &'a [f32], start: usize, nb: usize, g: &Geometry, buffer: &'a mut [f32]) -> &'a [f32] {
    let image = g.in_pixels() * g.c;
    if g.pointwise() {
        &x[start * image..(start + nb) * image]
    } else {
        im2col(&x[start * image..], nb, g, buffer);
        &buffer[..nb * g.out_pixels() * g.rows()]
    }
}

/// `y = conv(x, W) + b` as `Z = cols · Wᵀ` (`[N·HoWo, O]`) per chunk of images.
fn conv_forward(x: &[f32], n: usize, weight: &[f32], bias: &[f32], g: &Geometry, chunk: usize) -> Vec<f32> {
    let (rows, op) = (g.rows(), g.out_pixels());
    let x = transpose_images(x, n, g.c, g.in_pixels());
    let w = taps_last(weight, g);
    let mut z = vec![0f32; n * op * g.o];
    let mut buffer = vec![0f32; if g.pointwise() { 0 } else { chunk * op * rows }];
    for start in (0..n).step_by(chunk) {
        let nb = chunk.min(n - start);
        let cols = columns(&x, start, nb, g, &mut buffer);
        gemm(nb * op, rows, g.o, cols, rows, 1, &w, 1, rows, 0.0, &mut z[start * op * g.o..(start + nb) * op * g.o]);
    }
    let mut out = transpose_images(&z, n, op, g.o);
    out.par_chunks_mut(op).enumerate().for_each(|(i, plane)| plane.iter_mut().for_each(|v| *v += bias[i % g.o]));
    out
}

/// The gradients of [`conv_forward`]: `dWᵀ = colsᵀ · dZ`, `dcols = dZ · W`, `dx = col2im(dcols)`.
fn conv_backward(x: &[f32], n: usize, weight: &[f32], grad: &[f32], g: &Geometry, chunk: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (rows, op, kk) = (g.rows(), g.out_pixels(), g.k * g.k);
    let x = transpose_images(x, n, g.c, g.in_pixels());
    let dz = transpose_images(grad, n, g.o, op);
    let w = taps_last(weight, g);
    let mut dx = vec![0f32; n * g.in_pixels() * g.c];
    let mut dw_t = vec![0f32; rows * g.o];
    let mut buffer = vec![0f32; if g.pointwise() { 0 } else { chunk * op * rows }];
    let mut dcols = vec![0f32; chunk * op * rows];
    for start in (0..n).step_by(chunk) {
        let nb = chunk.min(n - start);
        let np = nb * op;
        let dz_chunk = &dz[start * op * g.o..(start + nb) * op * g.o];
        let cols = columns(&x, start, nb, g, &mut buffer);
        gemm(rows, np, g.o, cols, 1, rows, dz_chunk, g.o, 1, 1.0, &mut dw_t);
        let image = g.in_pixels() * g.c;
        if g.pointwise() {
            gemm(np, g.o, rows, dz_chunk, g.o, 1, &w, rows, 1, 0.0, &mut dx[start * image..(start + nb) * image]);
        } else {
            gemm(np, g.o, rows, dz_chunk, g.o, 1, &w, rows, 1, 0.0, &mut dcols[..np * rows]);
            col2im(&dcols, nb, g, &mut dx[start * image..]);
        }
    }
    let mut db = vec![0f64; g.o];
    for row in dz.chunks_exact(g.o) {
        db.iter_mut().zip(row).for_each(|(acc, &v)| *acc += f64::from(v));
    }
    let mut dw = vec![0f32; g.o * rows];
    for oc in 0..g.o {
        for ci in 0..g.c {
            for t in 0..kk {
                dw[(oc * g.c + ci) * kk + t] = dw_t[(t * g.c + ci) * g.o + oc];
            }
        }
    }
    (transpose_images(&dx, n, g.in_pixels(), g.c), dw, db.into_iter().map(|v| v as f32).collect())
}

fn swish(y: f32) -> f32 {
    y / (1.0 + (-y).exp())
}

/// Mean and `1/√(var + ε)` of one group, accumulated in `f64`.
fn group_stats(values: &[f32], epsilon: f64) -> (f64, f64) {
    let m = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / m;
    let var = values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / m;
    (mean, 1.0 / (var + epsilon).sqrt())
}

fn norm_forward(x: &[f32], shape: &[usize], gamma: &[f32], beta: &[f32], spec: NormSpec) -> Vec<f32> {
    let (c, hw) = (shape[1], shape[2] * shape[3]);
    let per_group = c / spec.groups;
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(per_group * hw).zip(x.par_chunks(per_group * hw)).enumerate().for_each(|(i, (dst, src))| {
        let (mean, inv_std) = group_stats(src, spec.epsilon);
        for cc in 0..per_group {
            let ch = (i % spec.groups) * per_group + cc;
            let scale = (f64::from(gamma[ch]) * inv_std) as f32;
            let shift = (f64::from(beta[ch]) - mean * f64::from(gamma[ch]) * inv_std) as f32;
            for (d, &v) in dst[cc * hw..][..hw].iter_mut().zip(&src[cc * hw..][..hw]) {
                let y = v * scale + shift;
                *d = if spec.swish { swish(y) } else { y };
            }
        }
    });
    out
}

fn norm_backward(x: &[f32], shape: &[usize], gamma: &[f32], beta: &[f32], grad: &[f32], spec: NormSpec) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (c, hw) = (shape[1], shape[2] * shape[3]);
    let per_group = c / spec.groups;
    let mut dx = vec![0f32; x.len()];
    // Per image and channel: Σ dy x̂ and Σ dy, summed over images afterwards in order.
    let mut partial = vec![(0f64, 0f64); shape[0] * c];
    dx.par_chunks_mut(per_group * hw)
        .zip(partial.par_chunks_mut(per_group))
        .enumerate()
        .for_each(|(i, (d, sums))| {
            let base = i * per_group * hw;
            let (src, up) = (&x[base..][..per_group * hw], &grad[base..][..per_group * hw]);
            let (mean, inv_std) = group_stats(src, spec.epsilon);
            let (mut s1, mut s2) = (0f64, 0f64);
            for cc in 0..per_group {
                let ch = (i % spec.groups) * per_group + cc;
                let (gm, bt) = (f64::from(gamma[ch]), f64::from(beta[ch]));
                for p in cc * hw..(cc + 1) * hw {
                    let x_hat = (f64::from(src[p]) - mean) * inv_std;
                    let mut dy = f64::from(up[p]);
                    if spec.swish {
                        let y = x_hat * gm + bt;
                        let s = 1.0 / (1.0 + (-y).exp());
                        dy *= s * (1.0 + y * (1.0 - s));
                    }
                    sums[cc].0 += dy * x_hat;
                    sums[cc].1 += dy;
                    let d_hat = dy * gm;
                    s1 += d_hat;
                    s2 += d_hat * x_hat;
                    d[p] = d_hat as f32;
                }
            }
            let m = (per_group * hw) as f64;
            for (v, &xv) in d.iter_mut().zip(src) {
                let x_hat = (f64::from(xv) - mean) * inv_std;
                *v = (inv_std * (f64::from(*v) - s1 / m - x_hat * s2 / m)) as f32;
            }
        });
    let mut d_gamma = vec![0f64; c];
    let mut d_beta = vec![0f64; c];
    for image in partial.chunks(c) {
        for (ch, &(a, b)) in image.iter().enumerate() {
            d_gamma[ch] += a;
            d_beta[ch] += b;
        }
    }
    (dx, d_gamma.into_iter().map(|v| v as f32).collect(), d_beta.into_iter().map(|v| v as f32).collect())
}

/// One value of VDM's decoder ([`vdm_core::vlb::decoder_nll`]) in `f64`: the NLL, and under the
/// softmax `π` over the bins, `E_π[f_k]` and `E_π[(z − f_k)²]`. The bins are visited outward from
/// the nearest, where the weights `e^{ℓ_k − ℓ_{k*}}` only shrink, and dropped below `e^{−50}`.
fn decoder_value(z: f64, f: f64, precision: f64, vocab: usize) -> (f64, f64, f64) {
    let step = 2.0 / vocab as f64;
    let centre = |k: usize| (k as f64 + 0.5) * step - 1.0;
    let nearest = ((z + 1.0) / step).floor().clamp(0.0, (vocab - 1) as f64) as usize;
    let delta = z - centre(nearest);
    let gap = |d: f64| 0.5 * precision * d * (2.0 * delta + d);
    let (mut total, mut sum_f, mut sum_sq) = (1.0, centre(nearest), delta * delta);
    for direction in [-1isize, 1] {
        let mut k = nearest as isize + direction;
        while (0..vocab as isize).contains(&k) {
            let g = gap((nearest as isize - k) as f64 * step);
            if g > 50.0 {
                break;
            }
            let (w, f_k) = ((-g).exp(), centre(k as usize));
            total += w;
            sum_f += w * f_k;
            sum_sq += w * (z - f_k) * (z - f_k);
            k += direction;
        }
    }
    (gap(centre(nearest) - f) + total.ln(), sum_f / total, sum_sq / total)
}

/// Applies `each(i, z, f, P)` to every value, with `P` broadcast per image (or one for all).
fn decoder_map<T: Send>(z: &[f32], f: &[f32], precision: &[f32], each: impl Fn(f64, f64, f64) -> T + Sync) -> Vec<T> {
    let per_image = z.len() / precision.len();
    z.par_iter()
        .zip(f.par_iter())
        .enumerate()
        .map(|(i, (&zv, &fv))| each(f64::from(zv), f64::from(fv), f64::from(precision[i / per_image])))
        .collect()
}

impl FastOps for Cpu {
    fn decoder_nll(z: NdArrayTensor, f: NdArrayTensor, precision: NdArrayTensor, vocab: usize) -> NdArrayTensor {
        let (Some((zv, zs)), Some((fv, _)), Some((pv, _))) = (values(&z), values(&f), values(&precision)) else {
            return generic::decoder_nll::<Self>(z, f, precision, vocab);
        };
        let nll = decoder_map(&zv, &fv, &pv, |z, f, p| decoder_value(z, f, p, vocab).0 as f32);
        from_values(nll, &zs)
    }

    fn decoder_nll_backward(z: NdArrayTensor, f: NdArrayTensor, precision: NdArrayTensor, grad: NdArrayTensor, vocab: usize) -> DecoderGrads<Self> {
        let (Some((zv, zs)), Some((fv, _)), Some((pv, ps)), Some((gv, _))) = (values(&z), values(&f), values(&precision), values(&grad)) else {
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

    fn conv(x: NdArrayTensor, weight: NdArrayTensor, bias: NdArrayTensor, spec: ConvSpec) -> NdArrayTensor {
        let (Some((xv, xs)), Some((wv, ws)), Some((bv, _))) = (values(&x), values(&weight), values(&bias)) else {
            return generic::conv2d::<Self>(x, weight, bias, spec);
        };
        let g = Geometry::new(&xs, &ws, spec);
        from_values(conv_forward(&xv, xs[0], &wv, &bv, &g, g.chunk(xs[0])), &[xs[0], g.o, g.ho, g.wo])
    }

    fn conv_backward(x: NdArrayTensor, weight: NdArrayTensor, grad: NdArrayTensor, spec: ConvSpec) -> ConvGrads<Self> {
        let (Some((xv, xs)), Some((wv, ws)), Some((gv, _))) = (values(&x), values(&weight), values(&grad)) else {
            return generic::conv2d_backward::<Self>(x, weight, grad, spec);
        };
        let g = Geometry::new(&xs, &ws, spec);
        let (dx, dw, db) = conv_backward(&xv, xs[0], &wv, &gv, &g, g.chunk(xs[0]));
        (from_values(dx, &xs), from_values(dw, &ws), from_values(db, &[g.o]))
    }

    fn group_norm(x: NdArrayTensor, gamma: NdArrayTensor, beta: NdArrayTensor, spec: NormSpec) -> NdArrayTensor {
        let (Some((xv, xs)), Some((gv, _)), Some((bv, _))) = (values(&x), values(&gamma), values(&beta)) else {
            return generic::group_norm::<Self>(x, gamma, beta, spec);
        };
        from_values(norm_forward(&xv, &xs, &gv, &bv, spec), &xs)
    }

    fn group_norm_backward(x: NdArrayTensor, gamma: NdArrayTensor, beta: NdArrayTensor, grad: NdArrayTensor, spec: NormSpec) -> NormGrads<Self> {
        let (Some((xv, xs)), Some((gv, gs)), Some((bv, _)), Some((dv, _))) = (values(&x), values(&gamma), values(&beta), values(&grad)) else {
            return generic::group_norm_backward::<Self>(x, gamma, beta, grad, spec);
        };
        let (dx, dg, db) = norm_backward(&xv, &xs, &gv, &bv, &dv, spec);
        (from_values(dx, &xs), from_values(dg, &gs), from_values(db, &gs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunking the batch changes nothing: forward and backward with one image per chunk equal
    /// one chunk for all, for a strided, asymmetrically padded kernel.
    #[test]
    fn chunked_convolution_equals_one_chunk() {
        let spec = ConvSpec { stride: 2, padding: [0, 1, 1, 0] };
        let (n, c, h, w, o, k) = (5, 3, 7, 6, 4, 3);
        let x: Vec<f32> = (0..n * c * h * w).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
        let weight: Vec<f32> = (0..o * c * k * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
        let bias = vec![0.5, -0.25, 0.0, 1.0];
        let g = Geometry::new(&[n, c, h, w], &[o, c, k, k], spec);
        let whole = conv_forward(&x, n, &weight, &bias, &g, n);
        assert_eq!(whole, conv_forward(&x, n, &weight, &bias, &g, 1));
        assert_eq!(whole, conv_forward(&x, n, &weight, &bias, &g, 2));
        let grad: Vec<f32> = (0..whole.len()).map(|i| (i % 5) as f32 - 2.0).collect();
        let (a, b) = (conv_backward(&x, n, &weight, &grad, &g, n), conv_backward(&x, n, &weight, &grad, &g, 2));
        assert_eq!(a.0, b.0, "dx");
        assert_eq!(a.2, b.2, "db");
        for (u, v) in a.1.iter().zip(&b.1) {
            assert!((u - v).abs() <= 1e-5 * u.abs().max(1.0), "dW {u} vs {v}");
        }
    }
}
