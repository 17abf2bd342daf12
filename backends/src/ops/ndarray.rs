//! [`FastOps`] kernels for burn-ndarray (`f32`): convolution as im2col and a matrix product per
//! image and chunk of output rows, in the tensors' own `[N, C, H, W]` layout; group normalisation
//! with swish in one pass over each group; attention as two matrix products per image around a
//! softmax; the skips' channel concatenation as one copy per image; dropout's mask from a
//! counter-based generator.
//!
//! Every loop is split across threads by output (images, groups), and each output value is
//! summed in a fixed order, so the results do not depend on the number of threads.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::ops::Range;

use burn::backend::ndarray::{NdArrayDevice, NdArrayTensor};
use burn::tensor::{Distribution, Int, Shape, Tensor};
use ndarray::{ArcArray, IxDyn};
use rayon::prelude::*;
use vdm_core::rng::derive_seed;

use super::{generic, AttentionGrads, ConvGrads, ConvSpec, DecoderGrads, FastOps, NormGrads, NormSpec};
use crate::Cpu;

/// Images whose weight gradients one task accumulates, in order, before the groups' sums are
/// added in order: fixed, so that the result does not depend on the number of threads.
const IMAGES_PER_GROUP: usize = 4;

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
fn zeros(len: usize) -> Vec<f32> {
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

/// The shape of one convolution, and where each kernel tap reads the input.
struct Geometry {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    ho: usize,
    wo: usize,
    spec: ConvSpec,
    /// Tap `(dy, dx)` at index `dy·k + dx`.
    taps: Vec<Tap>,
}

/// The output pixels at which one kernel tap reads inside the image (elsewhere it reads the
/// zero padding): rows × columns, and the input pixel read at the first of them.
struct Tap {
    rows: Range<usize>,
    cols: Range<usize>,
    first: usize,
}

impl Tap {
    /// Where the tap reads inside the image for the output rows `out_rows`: those rows, counted
    /// from `out_rows.start`, and the input pixel read at the first of them (at column
    /// `cols.start`); `None` where it reads only padding.
    fn within(&self, out_rows: &Range<usize>, g: &Geometry) -> Option<(Range<usize>, usize)> {
        let (lo, hi) = (self.rows.start.max(out_rows.start), self.rows.end.min(out_rows.end));
        (lo < hi && !self.cols.is_empty()).then(|| {
            (lo - out_rows.start..hi - out_rows.start, self.first + (lo - self.rows.start) * g.spec.stride * g.w)
        })
    }
}

impl Geometry {
    fn new(x: &[usize], weight: &[usize], spec: ConvSpec) -> Self {
        let (c, h, w, o, k) = (x[1], x[2], x[3], weight[0], weight[2]);
        let [ho, wo] = spec.output_size([h, w], k);
        let [top, _, left, _] = spec.padding;
        // The outputs `i` (of `n`) that read inside `0..size` under offset `d`: `i·stride + d − pad`.
        let inside = |d: usize, pad: usize, size: usize, n: usize| {
            let lo = pad.saturating_sub(d).div_ceil(spec.stride).min(n);
            lo..(size + pad).saturating_sub(d).div_ceil(spec.stride).clamp(lo, n)
        };
        let taps = (0..k * k)
            .map(|t| {
                let (dy, dx) = (t / k, t % k);
                let (rows, cols) = (inside(dy, top, h, ho), inside(dx, left, w, wo));
                let first = if rows.is_empty() || cols.is_empty() {
                    0
                } else {
                    (rows.start * spec.stride + dy - top) * w + cols.start * spec.stride + dx - left
                };
                Tap { rows, cols, first }
            })
            .collect();
        Self { c, h, w, o, k, ho, wo, spec, taps }
    }
    /// Values under the kernel at one output pixel: `C·k·k`, ordered `(c, dy, dx)` like the
    /// weight's `[O, C, k, k]`.
    fn rows(&self) -> usize {
        self.c * self.k * self.k
    }
    fn in_pixels(&self) -> usize {
        self.h * self.w
    }
    fn out_pixels(&self) -> usize {
        self.ho * self.wo
    }
    /// A 1×1, stride-1, unpadded convolution: its im2col matrix is the image itself.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.spec == ConvSpec::same(1)
    }

    /// Output rows per chunk: few enough that a chunk's im2col matrix stays in a core's cache
    /// (about 512 KB) between its writing and the matrix product reading it (12% less sampling
    /// time for the small model than whole images); all of them when pointwise.
    fn chunk_rows(&self) -> usize {
        if self.pointwise() {
            self.ho
        } else {
            ((1 << 17) / (self.rows() * self.wo)).clamp(1, self.ho)
        }
    }

    /// The output rows in chunks of [`Geometry::chunk_rows`].
    fn row_chunks(&self) -> impl Iterator<Item = Range<usize>> {
        let (per_chunk, ho) = (self.chunk_rows(), self.ho);
        (0..ho).step_by(per_chunk).map(move |start| start..(start + per_chunk).min(ho))
    }
}

/// `cols[(c, dy, dx), q]` = pixel `q`'s input under kernel tap `(dy, dx)` in channel `c` of one
/// `[C, H, W]` image (zero in the padding), for the output pixels `q` of the rows `out_rows`: its
/// im2col matrix `[C·k·k, |out_rows|·Wo]`.
fn im2col(image: &[f32], g: &Geometry, out_rows: Range<usize>, cols: &mut [f32]) {
    let (stride, wo) = (g.spec.stride, g.wo);
    let pixels = out_rows.len() * wo;
    for (channel, block) in image.chunks_exact(g.in_pixels()).zip(cols.chunks_exact_mut(g.k * g.k * pixels)) {
        for (tap, row) in g.taps.iter().zip(block.chunks_exact_mut(pixels)) {
            let Some((rows, first)) = tap.within(&out_rows, g) else {
                row.fill(0.0);
                continue;
            };
            let cols = &tap.cols;
            row[..rows.start * wo].fill(0.0);
            row[rows.end * wo..].fill(0.0);
            let reading = &mut row[rows.start * wo..rows.end * wo];
            if stride == 1 && wo == g.w {
                // Row by row the input is the output shifted by a constant: one block copy,
                // then the few columns that wrapped around from the neighbouring rows are zeroed.
                let len = reading.len() - cols.start - (wo - cols.end);
                reading[cols.start..][..len].copy_from_slice(&channel[first..][..len]);
                for x in (0..cols.start).chain(cols.end..wo) {
                    reading[x..].iter_mut().step_by(wo).for_each(|v| *v = 0.0);
                }
            } else {
                for (out, line) in reading.chunks_exact_mut(wo).zip(channel[first..].chunks(stride * g.w)) {
                    out[..cols.start].fill(0.0);
                    out[cols.end..].fill(0.0);
                    out[cols.clone()].iter_mut().zip(line.iter().step_by(stride)).for_each(|(d, &v)| *d = v);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every column value onto the pixel of `image` it came from.
/// The values at padding are dropped; `cols` is left with them zeroed.
fn col2im(cols: &mut [f32], g: &Geometry, out_rows: Range<usize>, image: &mut [f32]) {
    let (stride, wo) = (g.spec.stride, g.wo);
    let pixels = out_rows.len() * wo;
    for (channel, block) in image.chunks_exact_mut(g.in_pixels()).zip(cols.chunks_exact_mut(g.k * g.k * pixels)) {
        for (tap, row) in g.taps.iter().zip(block.chunks_exact_mut(pixels)) {
            let Some((rows, first)) = tap.within(&out_rows, g) else { continue };
            let cols = &tap.cols;
            let reading = &mut row[rows.start * wo..rows.end * wo];
            if stride == 1 && wo == g.w {
                // As in `im2col`: one block, once the columns that wrap around onto the
                // neighbouring rows are zeroed (adding zero leaves a pixel exactly as it was).
                for x in (0..cols.start).chain(cols.end..wo) {
                    reading[x..].iter_mut().step_by(wo).for_each(|v| *v = 0.0);
                }
                let len = reading.len() - cols.start - (wo - cols.end);
                channel[first..][..len].iter_mut().zip(&reading[cols.start..]).for_each(|(d, &v)| *d += v); // vectorises
                continue;
            }
            for (out, line) in reading.chunks_exact(wo).zip(channel[first..].chunks_mut(stride * g.w)) {
                if stride == 1 {
                    line.iter_mut().zip(&out[cols.clone()]).for_each(|(d, &v)| *d += v);
                // vectorises
                } else {
                    line.iter_mut().step_by(stride).zip(&out[cols.clone()]).for_each(|(d, &v)| *d += v);
                }
            }
        }
    }
}

/// `c = a b + β c` for `a` `[m, k]` (row and column strides `a_rs`, `a_cs`), `b` `[k, n]`, and
/// row-major `c` `[m, n]`; `β` is 0 or 1. Threaded only when `threaded` (the kernels thread over
/// images instead when there are enough of them).
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
    beta: f32,
    c: &mut [f32],
    threaded: bool,
) {
    gemm_into(m, k, n, a, a_rs, a_cs, b, b_rs, b_cs, beta, c, n, threaded);
}

/// [`gemm`] into the columns `..n` of a row-major `c` with rows of `c_rs` values.
#[allow(clippy::too_many_arguments)]
fn gemm_into(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
    beta: f32,
    c: &mut [f32],
    c_rs: usize,
    threaded: bool,
) {
    assert!(
        a.len() >= (m - 1) * a_rs + (k - 1) * a_cs + 1
            && b.len() >= (k - 1) * b_rs + (n - 1) * b_cs + 1
            && c.len() >= (m - 1) * c_rs + n
    );
    static UNPACKED: std::sync::Once = std::sync::Once::new();
    UNPACKED.call_once(|| {
        // `gemm` copies a column-major operand into packed panels when the other has more
        // than 8·6 columns (16·6 threaded). A convolution's im2col matrix, a chunk small enough
        // to stay in cache, is such an operand against the O columns of the weight: read in
        // place up to 12·6 = 72 columns instead, the small model (O = 64) samples 5% faster.
        // Wider products (attention's L columns) still pack. A process-wide setting of `gemm`,
        // whose only caller in the workspace is this module.
        ::gemm::set_lhs_packing_threshold_single_thread(12);
        ::gemm::set_lhs_packing_threshold_multi_thread(12);
    });
    let threads = rayon::current_num_threads();
    let parallelism =
        if threaded && threads > 1 { ::gemm::Parallelism::Rayon(threads) } else { ::gemm::Parallelism::None };
    // SAFETY: the assertion above keeps every index the strides reach inside the slices.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_rs as isize,
            beta != 0.0,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            beta,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

type Scratch = std::cell::RefCell<Vec<f32>>;

thread_local! {
    /// Each thread's im2col buffer, kept between calls.
    static COLUMNS: Scratch = const { std::cell::RefCell::new(Vec::new()) };
    /// Each thread's attention weights (and their gradient), kept between calls.
    static SCORES: Scratch = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with the first `len` values of this thread's buffer `scratch`, grown as needed.
fn with_scratch<R>(scratch: &'static std::thread::LocalKey<Scratch>, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    scratch.with_borrow_mut(|buffer| {
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
        f(&mut buffer[..len])
    })
}

/// Runs `f` with the im2col matrix of `image` for the output rows `out_rows`: the image itself
/// for a pointwise convolution (all rows), else built in this thread's buffer.
fn with_columns<R>(image: &[f32], g: &Geometry, out_rows: Range<usize>, f: impl FnOnce(&[f32]) -> R) -> R {
    if g.pointwise() {
        return f(image);
    }
    with_scratch(&COLUMNS, g.rows() * out_rows.len() * g.wo, |cols| {
        im2col(image, g, out_rows, cols);
        f(cols)
    })
}

/// Runs `each(index, item, threaded)` over `items`: across threads when there are at least as
/// many items as threads (each then runs single-threaded matrix products), else one after
/// another with `threaded` matrix products.
fn for_each_part<T: Send>(items: Vec<T>, each: impl Fn(usize, T, bool) + Sync) {
    if items.len() >= rayon::current_num_threads() {
        items.into_par_iter().enumerate().for_each(|(i, item)| each(i, item, false));
    } else {
        items.into_iter().enumerate().for_each(|(i, item)| each(i, item, true));
    }
}

/// `y = conv(x, W) + b (+ r)`, image by image in `[C, H, W]` layout: `Y = W · cols` (`[O, Ho·Wo]`)
/// added onto the bias `b` `[N, O]` and the residual `r`, if any.
fn conv_forward(x: &[f32], n: usize, weight: &[f32], bias: &[f32], residual: Option<&[f32]>, g: &Geometry) -> Vec<f32> {
    let (rows, op) = (g.rows(), g.out_pixels());
    // Every output value is written below only if the shapes agree.
    assert!(
        bias.len() == n * g.o && residual.is_none_or(|r| r.len() == n * g.o * op),
        "conv: bias or residual of the wrong shape"
    );
    let mut out = Vec::with_capacity(n * g.o * op);
    let images: Vec<_> = out
        .spare_capacity_mut()
        .chunks_mut(g.o * op)
        .zip(x.chunks(g.c * g.in_pixels()))
        .zip(bias.chunks(g.o))
        .collect();
    for_each_part(images, |i, ((y, image), bias), threaded| {
        let planes = y.chunks_exact_mut(op).zip(bias);
        match residual {
            Some(r) => planes.zip(r[i * g.o * op..].chunks_exact(op)).for_each(|((plane, &b), r)| {
                plane.iter_mut().zip(r).for_each(|(y, &r)| _ = y.write(r + b));
            }),
            None => planes.for_each(|(plane, &b)| plane.fill(MaybeUninit::new(b))),
        }
        // SAFETY: every value of the image was just written, the image being `O` planes.
        let y = unsafe { y.assume_init_mut() };
        for out_rows in g.row_chunks() {
            let (first, pixels) = (out_rows.start * g.wo, out_rows.len() * g.wo);
            with_columns(image, g, out_rows, |cols| {
                gemm_into(g.o, rows, pixels, weight, rows, 1, cols, pixels, 1, 1.0, &mut y[first..], op, threaded)
            });
        }
    });
    // SAFETY: every image was written in full above.
    unsafe { out.set_len(n * g.o * op) };
    out
}

/// The gradients of [`conv_forward`]: per image and chunk of output rows `dW += dY · colsᵀ`,
/// `dcols = Wᵀ · dY`, `dx += col2im(dcols)`, the weight gradient summed by fixed groups of images;
/// the bias's per image.
fn conv_backward(x: &[f32], n: usize, weight: &[f32], grad: &[f32], g: &Geometry) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (rows, op) = (g.rows(), g.out_pixels());
    let (in_image, out_image) = (g.c * g.in_pixels(), g.o * op);
    let mut dx = zeros(n * in_image);
    let groups = n.div_ceil(IMAGES_PER_GROUP);
    let mut dw_parts = vec![0f32; groups * g.o * rows];
    let group_size = IMAGES_PER_GROUP * in_image;
    let items: Vec<_> = dx.chunks_mut(group_size).zip(dw_parts.chunks_mut(g.o * rows)).collect();
    for_each_part(items, |group, (dx_group, dw), threaded| {
        let mut dcols = if g.pointwise() { Vec::new() } else { vec![0f32; rows * g.chunk_rows() * g.wo] };
        for (j, dx_image) in dx_group.chunks_mut(in_image).enumerate() {
            let i = group * IMAGES_PER_GROUP + j;
            let (image, dy) = (&x[i * in_image..][..in_image], &grad[i * out_image..][..out_image]);
            // Output rows a chunk at a time, as in the forward pass.
            for out_rows in g.row_chunks() {
                let (dy, pixels) = (&dy[out_rows.start * g.wo..], out_rows.len() * g.wo);
                with_columns(image, g, out_rows.clone(), |cols| {
                    gemm(g.o, pixels, rows, dy, op, 1, cols, 1, pixels, 1.0, dw, threaded)
                });
                if g.pointwise() {
                    gemm(rows, g.o, op, weight, 1, rows, dy, op, 1, 0.0, dx_image, threaded);
                } else {
                    let dcols = &mut dcols[..rows * pixels];
                    gemm(rows, g.o, pixels, weight, 1, rows, dy, op, 1, 0.0, dcols, threaded);
                    col2im(dcols, g, out_rows, dx_image);
                }
            }
        }
    });
    let mut dw = vec![0f32; g.o * rows];
    for part in dw_parts.chunks_exact(g.o * rows) {
        dw.iter_mut().zip(part).for_each(|(acc, v)| *acc += v);
    }
    let db = grad.chunks_exact(op).map(|plane| sum(plane, |v| v) as f32).collect();
    (dx, dw, db)
}

/// The shape of one attention: `C` channels over `L` positions per image.
#[derive(Clone, Copy)]
struct AttentionShape {
    c: usize,
    l: usize,
}

impl AttentionShape {
    fn new(shape: &[usize]) -> Self {
        Self { c: shape[1], l: shape[2] }
    }

    /// `p = softmax(qᵀk/√C)` row by row, `[L, L]`, for one image's `q`, `k` `[C, L]`.
    fn weights(self, q: &[f32], k: &[f32], p: &mut [f32], threaded: bool) {
        let Self { c, l } = self;
        gemm(l, c, l, q, 1, l, k, l, 1, 0.0, p, threaded);
        let scale = 1.0 / (c as f32).sqrt();
        p.chunks_exact_mut(l).for_each(|row| softmax(row, scale));
    }

    /// Runs `f` with `count` scratch matrices `[L, L]` from this thread's buffer.
    fn with_scores<R>(self, count: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
        with_scratch(&SCORES, count * self.l * self.l, f)
    }
}

/// `row = softmax(scale · row)` (`scale > 0`), with [`exp`] and the total summed in `f64`.
fn softmax(row: &mut [f32], scale: f32) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    wide(
        #[inline(always)]
        || row.iter_mut().for_each(|v| *v = exp(scale * (*v - max))),
    );
    let inv_total = (1.0 / sum(row, |v| v)) as f32;
    row.iter_mut().for_each(|v| *v *= inv_total);
}

/// Runs `f` compiled for AVX-512 where the CPU has it, else for AVX2, so that the loops in it
/// that vectorise use 512- or 256-bit vectors: the same operations lane by lane (Rust contracts
/// nothing into FMAs), so the same values as without.
#[inline(always)]
fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// Per image `o = v pᵀ` (`[C, L]`), the weights `p` in this thread's buffer.
fn attention_forward(q: &[f32], k: &[f32], v: &[f32], shape: AttentionShape, n: usize) -> Vec<f32> {
    let AttentionShape { c, l } = shape;
    let mut out = zeros(n * c * l);
    for_each_part(out.chunks_mut(c * l).collect(), |i, o, threaded| {
        let image = i * c * l..(i + 1) * c * l;
        let (q, k, v) = (&q[image.clone()], &k[image.clone()], &v[image]);
        shape.with_scores(1, |p| {
            shape.weights(q, k, p, threaded);
            gemm(c, l, l, v, l, 1, p, 1, l, 0.0, o, threaded);
        });
    });
    out
}

/// The gradients of [`attention_forward`], per image with the weights recomputed (see
/// [`generic::dot_product_attention_backward`] for the formulas).
fn attention_backward(q: &[f32], k: &[f32], v: &[f32], grad: &[f32], shape: AttentionShape, n: usize) -> [Vec<f32>; 3] {
    let AttentionShape { c, l } = shape;
    let (mut dq, mut dk, mut dv) = (zeros(n * c * l), zeros(n * c * l), zeros(n * c * l));
    let images: Vec<_> = dq.chunks_mut(c * l).zip(dk.chunks_mut(c * l)).zip(dv.chunks_mut(c * l)).collect();
    for_each_part(images, |i, ((dq, dk), dv), threaded| {
        let image = i * c * l..(i + 1) * c * l;
        let (q, k, v, grad) = (&q[image.clone()], &k[image.clone()], &v[image.clone()], &grad[image]);
        shape.with_scores(2, |scratch| {
            let (p, ds) = scratch.split_at_mut(l * l);
            shape.weights(q, k, p, threaded);
            gemm(c, l, l, grad, l, 1, p, l, 1, 0.0, dv, threaded);
            gemm(l, c, l, grad, 1, l, v, l, 1, 0.0, ds, threaded);
            let scale = 1.0 / (c as f32).sqrt();
            for (p, ds) in p.chunks_exact(l).zip(ds.chunks_exact_mut(l)) {
                let mean = dot(p, ds) as f32;
                ds.iter_mut().zip(p).for_each(|(d, &p)| *d = scale * p * (*d - mean));
            }
            gemm(c, l, l, k, l, 1, ds, 1, l, 0.0, dq, threaded);
            gemm(c, l, l, q, l, 1, ds, l, 1, 0.0, dk, threaded);
        });
    });
    [dq, dk, dv]
}

/// `[a, b]` along the channels, image by image: `a` has `a_len` values per image, `b` `b_len`.
fn concat_images(a: &[f32], a_len: usize, b: &[f32], b_len: usize) -> Vec<f32> {
    let len = a.len() + b.len();
    assert!(a.len() / a_len == b.len() / b_len, "concatenation of batches of different sizes");
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(a_len + b_len)
        .zip(a.par_chunks(a_len).zip(b.par_chunks(b_len)))
        .for_each(|(out, (a, b))| {
            out[..a_len].write_copy_of_slice(a);
            out[a_len..].write_copy_of_slice(b);
        });
    // SAFETY: every image was written in full just above.
    unsafe { out.set_len(len) };
    out
}

/// The inverse of [`concat_images`]: each image's first `a_len` values, and the rest.
fn split_images(x: &[f32], image: usize, a_len: usize) -> (Vec<f32>, Vec<f32>) {
    let n = x.len() / image;
    let (mut a, mut b) = (Vec::with_capacity(n * a_len), Vec::with_capacity(n * (image - a_len)));
    let (a_parts, b_parts) = (
        a.spare_capacity_mut()[..n * a_len].par_chunks_mut(a_len),
        b.spare_capacity_mut()[..n * (image - a_len)].par_chunks_mut(image - a_len),
    );
    a_parts.zip(b_parts).zip(x.par_chunks(image)).for_each(|((a, b), x)| {
        a.write_copy_of_slice(&x[..a_len]);
        b.write_copy_of_slice(&x[a_len..]);
    });
    // SAFETY: every image's values were written just above, into one or the other.
    unsafe {
        a.set_len(n * a_len);
        b.set_len(n * (image - a_len));
    }
    (a, b)
}

/// `len` values, each `1/keep` with probability `keep`, else 0: value `i` from the random bits
/// [`derive_seed`]`(seed, 0, i)` (below `keep·2³²` in their top 32), each computed on its own so
/// that any split across threads gives the same mask.
fn dropout_mask(len: usize, keep: f64, seed: u64) -> Vec<f32> {
    const PART: usize = 1 << 16;
    let threshold = (keep * 2f64.powi(32)) as u64;
    let scale = (1.0 / keep) as f32;
    let mut mask = zeros(len);
    mask.par_chunks_mut(PART).enumerate().for_each(|(p, part)| {
        for (j, v) in part.iter_mut().enumerate() {
            *v = if derive_seed(seed, 0, (p * PART + j) as u64) >> 32 < threshold { scale } else { 0.0 };
        }
    });
    mask
}

/// `y σ(y)`, with [`exp`].
#[inline(always)]
fn swish(y: f32) -> f32 {
    y / (1.0 + exp(-y))
}

/// `eˣ` in `f32` within 2 ulp (Cephes' `expf`: `x = n ln 2 + r`, a degree-6 polynomial in `r`,
/// times `2ⁿ`), without branches or calls so that loops over it vectorise; the argument is
/// clamped to `[−87.3, 88.3]`, where `eˣ` is a normal `f32`.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    // Round to nearest by adding and subtracting 1.5·2²³ (no call to `roundf`).
    const ROUND: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * 0.693_359_375 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // 2ⁿ from the bits of the float n + 127 + 1.5·2²³, whose last mantissa bits hold n + 127
    // (integer operations only, so this vectorises too).
    e * f32::from_bits(((n + 127.0 + ROUND).to_bits() - ROUND.to_bits()) << 23)
}

/// `Σ f(v)` over `values` in `f64`, in eight interleaved partial sums (so it vectorises) added
/// in a fixed order.
#[inline(always)]
fn sum(values: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&v| f(f64::from(v))).sum();
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(acc, &v)| *acc += f(f64::from(v)));
    }
    lanes.iter().sum::<f64>() + rest
}

/// `Σ a_i b_i` in `f64`, in eight interleaved partial sums like [`sum`].
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let (a, b) = (a.chunks_exact(8), b.chunks_exact(8));
    let rest: f64 = a.remainder().iter().zip(b.remainder()).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
    for (x, y) in a.zip(b) {
        for (acc, (&x, &y)) in lanes.iter_mut().zip(x.iter().zip(y)) {
            *acc += f64::from(x) * f64::from(y);
        }
    }
    lanes.iter().sum::<f64>() + rest
}

/// Mean and `1/√(var + ε)` of one group, accumulated in `f64`.
#[inline(always)]
fn group_stats(values: &[f32], epsilon: f64) -> (f64, f64) {
    let m = values.len() as f64;
    let mean = sum(values, |v| v) / m;
    let var = sum(values, |v| (v - mean).powi(2)) / m;
    (mean, 1.0 / (var + epsilon).sqrt())
}

fn norm_forward(x: &[f32], shape: &[usize], gamma: &[f32], beta: &[f32], spec: NormSpec) -> Vec<f32> {
    let (c, hw) = (shape[1], shape[2] * shape[3]);
    let per_group = c / spec.groups;
    let mut out = Vec::with_capacity(x.len());
    let groups = out.spare_capacity_mut()[..x.len()].par_chunks_mut(per_group * hw);
    groups.zip(x.par_chunks(per_group * hw)).enumerate().for_each(|(i, (dst, src))| {
        wide(
            #[inline(always)]
            || {
                let (mean, inv_std) = group_stats(src, spec.epsilon);
                for (cc, (dst, src)) in dst.chunks_exact_mut(hw).zip(src.chunks_exact(hw)).enumerate() {
                    let ch = (i % spec.groups) * per_group + cc;
                    let scale = (f64::from(gamma[ch]) * inv_std) as f32;
                    let shift = (f64::from(beta[ch]) - mean * f64::from(gamma[ch]) * inv_std) as f32;
                    for (d, &v) in dst.iter_mut().zip(src) {
                        let y = v * scale + shift;
                        d.write(if spec.swish { swish(y) } else { y });
                    }
                }
            },
        )
    });
    // SAFETY: every group's channels were written in full just above.
    unsafe { out.set_len(x.len()) };
    out
}

/// The gradients of [`norm_forward`]. Per group of `m` values, with `u` the gradient at the
/// normalisation's output `γ x̂ + β` (through the swish, if any): `dx = (γ u − Σ γu / m −
/// x̂ Σ γu x̂ / m) / σ`, and per channel `dγ = Σ u x̂`, `dβ = Σ u`. Element-wise in `f32`, the
/// sums in `f64`.
fn norm_backward(
    x: &[f32],
    shape: &[usize],
    gamma: &[f32],
    beta: &[f32],
    grad: &[f32],
    spec: NormSpec,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (c, hw) = (shape[1], shape[2] * shape[3]);
    let per_group = c / spec.groups;
    let mut dx = Vec::with_capacity(x.len());
    // Per image and channel: Σ u x̂ and Σ u, summed over images afterwards in order.
    let mut partial = vec![(0f64, 0f64); shape[0] * c];
    let groups = dx.spare_capacity_mut()[..x.len()].par_chunks_mut(per_group * hw);
    groups.zip(partial.par_chunks_mut(per_group)).enumerate().for_each(|(i, (d, sums))| {
        let base = i * per_group * hw;
        let (src, up) = (&x[base..][..per_group * hw], &grad[base..][..per_group * hw]);
        let channels = (i % spec.groups) * per_group..;
        wide(
            #[inline(always)]
            || {
                let (mean, inv_std) = group_stats(src, spec.epsilon);
                let x_hat = |v: f32| (v - mean as f32) * inv_std as f32;
                for ((d, src), (up, ch)) in
                    d.chunks_exact_mut(hw).zip(src.chunks_exact(hw)).zip(up.chunks_exact(hw).zip(channels.clone()))
                {
                    let (gm, bt) = (gamma[ch], beta[ch]);
                    for ((d, &v), &dy) in d.iter_mut().zip(src).zip(up) {
                        d.write(if spec.swish {
                            let y = x_hat(v) * gm + bt;
                            let s = 1.0 / (1.0 + exp(-y));
                            dy * (s * (1.0 + y * (1.0 - s)))
                        } else {
                            dy
                        });
                    }
                }
                // SAFETY: every value of the group was just written.
                let u = unsafe { d.assume_init_mut() };
                let (mut s1, mut s2) = (0f64, 0f64); // Σ γu and Σ γu x̂ over the group
                for ((u, src), (sums, ch)) in
                    u.chunks_exact(hw).zip(src.chunks_exact(hw)).zip(sums.iter_mut().zip(channels.clone()))
                {
                    let sum_u = sum(u, |v| v);
                    let sum_u_x_hat = (dot(u, src) - mean * sum_u) * inv_std;
                    *sums = (sum_u_x_hat, sum_u);
                    s1 += f64::from(gamma[ch]) * sum_u;
                    s2 += f64::from(gamma[ch]) * sum_u_x_hat;
                }
                let m = (per_group * hw) as f64;
                let (c1, c2) = ((inv_std * s1 / m) as f32, (inv_std * s2 / m) as f32);
                for ((u, src), ch) in u.chunks_exact_mut(hw).zip(src.chunks_exact(hw)).zip(channels) {
                    let scale = (f64::from(gamma[ch]) * inv_std) as f32;
                    u.iter_mut().zip(src).for_each(|(u, &v)| *u = scale * *u - c1 - c2 * x_hat(v));
                }
            },
        )
    });
    // SAFETY: every group was written in full above.
    unsafe { dx.set_len(x.len()) };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The polynomial `exp` stays within 2 ulp of the exact value over the whole clamped range,
    /// and saturates outside it.
    #[test]
    fn exp_is_within_two_ulp() {
        for i in 0..=200_000 {
            let x = -87.3 + 175.6 * i as f32 / 200_000.0;
            let (got, want) = (f64::from(exp(x)), f64::from(x).exp());
            assert!(((got - want) / want).abs() <= 2.0 * f64::from(f32::EPSILON), "exp({x}) = {got}, want {want}");
        }
        assert_eq!(exp(-1000.0), exp(-87.3));
        assert_eq!(exp(1000.0), exp(88.3));
        assert!(exp(88.3).is_finite() && exp(-87.3) > 0.0);
    }

    /// The number of threads changes nothing, bit for bit: forward and backward of a strided,
    /// asymmetrically padded kernel and of a pointwise one, on a batch of several image groups.
    #[test]
    fn convolution_does_not_depend_on_the_thread_count() {
        let (n, c, h, w, o) = (11, 3, 7, 6, 4);
        let x: Vec<f32> = (0..n * c * h * w).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
        let bias: Vec<f32> = (0..n * o).map(|i| ((i * 5 % 7) as f32 - 3.0) / 4.0).collect();
        let residual: Vec<f32> = (0..n * o * h * w).map(|i| ((i * 3 % 11) as f32 - 5.0) / 5.0).collect();
        for (k, spec) in [(3, ConvSpec { stride: 2, padding: [0, 1, 1, 0] }), (1, ConvSpec::same(1))] {
            let weight: Vec<f32> = (0..o * c * k * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
            let g = Geometry::new(&[n, c, h, w], &[o, c, k, k], spec);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    let r = (k == 1).then_some(&residual[..]);
                    let y = conv_forward(&x, n, &weight, &bias, r, &g);
                    let grad: Vec<f32> = (0..y.len()).map(|i| (i % 5) as f32 - 2.0).collect();
                    (y, conv_backward(&x, n, &weight, &grad, &g))
                })
            };
            let one = run(1);
            for threads in [2, 3, 16] {
                assert!(run(threads) == one, "k = {k}: {threads} threads differ from one");
            }
        }
    }

    /// The dropout mask takes only the values 0 and 1/keep, zero at the rate 1 − keep (within five
    /// standard errors over 2²⁰ values), without correlation between neighbours, and is the same
    /// under any number of threads.
    #[test]
    fn dropout_mask_has_the_rate_and_does_not_depend_on_the_thread_count() {
        let (len, keep) = (1 << 20, 0.9);
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| dropout_mask(len, keep, 42))
        };
        let mask = run(1);
        let scale = (1.0 / keep) as f32;
        assert!(mask.iter().all(|&v| v == 0.0 || v == scale), "values other than 0 and 1/keep");
        let dropped = mask.iter().filter(|&&v| v == 0.0).count() as f64 / len as f64;
        let se = (keep * (1.0 - keep) / len as f64).sqrt();
        assert!((dropped - (1.0 - keep)).abs() < 5.0 * se, "dropped {dropped}, want {}", 1.0 - keep);
        let both = mask.windows(2).filter(|w| w[0] == 0.0 && w[1] == 0.0).count() as f64 / (len - 1) as f64;
        assert!(
            (both - (1.0 - keep).powi(2)).abs() < 5.0 * (0.01f64 * 0.99 / len as f64).sqrt(),
            "neighbours dropped together at {both}"
        );
        assert!(run(3) == mask, "3 threads differ from one");
        assert!(dropout_mask(len, keep, 43) != mask, "another seed gives the same mask");
    }

    /// The same for attention, forward and backward, with fewer and more images than threads.
    #[test]
    fn attention_does_not_depend_on_the_thread_count() {
        let shape = AttentionShape { c: 3, l: 10 };
        for n in [1, 5] {
            let len = n * shape.c * shape.l;
            let data =
                |seed: usize| -> Vec<f32> { (0..len).map(|i| (((i + seed) * 31 % 17) as f32 - 8.0) / 4.0).collect() };
            let (q, k, v, grad) = (data(0), data(5), data(9), data(14));
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    (attention_forward(&q, &k, &v, shape, n), attention_backward(&q, &k, &v, &grad, shape, n))
                })
            };
            let one = run(1);
            for threads in [2, 3, 16] {
                assert!(run(threads) == one, "{n} images: {threads} threads differ from one");
            }
        }
    }
}
