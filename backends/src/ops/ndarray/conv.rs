//! Convolution per image in the tensors' own `[N, C, H, W]` layout: 3×3 "same" convolutions of
//! enough channels and pixels by Winograd's F(2×2, 3×3) ([`winograd`](super::winograd)), every
//! other as im2col and a matrix product per chunk of output rows.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::gemm::{gemm, gemm_into, with_scratch, Scratch};
use super::simd::sum;
use super::winograd::{self, Kernels, Tiling};
use super::{for_each_part, zeros};
use crate::ops::ConvSpec;

thread_local! {
    /// Each thread's im2col buffer, kept between calls.
    static COLUMNS: Scratch = const { std::cell::Cell::new(Vec::new()) };
}

/// Images whose weight gradients one task accumulates, in order, before the groups' sums are
/// added in order: fixed, so that the result does not depend on the number of threads.
const IMAGES_PER_GROUP: usize = 4;

/// The shape of one convolution, and where each kernel tap reads the input.
pub(super) struct Geometry {
    c: usize,
    h: usize,
    w: usize,
    pub(super) o: usize,
    k: usize,
    pub(super) ho: usize,
    pub(super) wo: usize,
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
    pub(super) fn new(x: &[usize], weight: &[usize], spec: ConvSpec) -> Self {
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
    /// The tiles of a convolution [`winograd`] computes, `None` for any other.
    fn winograd(&self) -> Option<Tiling> {
        winograd::applies(self.k, self.spec, [self.h, self.w], [self.c, self.o])
            .then(|| Tiling::new(self.c, self.o, [self.h, self.w]))
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

/// `y = conv(x, W) + b (+ r)`, image by image in `[C, H, W]` layout: `Y = W · cols` (`[O, Ho·Wo]`),
/// or Winograd's tiles, added onto the bias `b` `[N, O]` and the residual `r`, if any.
pub(super) fn conv_forward(
    x: &[f32],
    n: usize,
    weight: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    g: &Geometry,
) -> Vec<f32> {
    let (rows, op) = (g.rows(), g.out_pixels());
    // Every output value is written below only if the shapes agree.
    assert!(
        bias.len() == n * g.o && residual.is_none_or(|r| r.len() == n * g.o * op),
        "conv: bias or residual of the wrong shape"
    );
    let kernels = g.winograd().map(|_| Kernels::new(weight, [g.o, g.c], [g.h, g.w]));
    // Images a task: one, or as many as fill Winograd's matrix products while every thread has some.
    let per_part = kernels.as_ref().map_or(1, |k| k.images_per_part().min(n.div_ceil(rayon::current_num_threads())));
    let mut out = Vec::with_capacity(n * g.o * op);
    let parts: Vec<_> = out
        .spare_capacity_mut()
        .chunks_mut(per_part * g.o * op)
        .zip(x.chunks(per_part * g.c * g.in_pixels()))
        .zip(bias.chunks(per_part * g.o))
        .collect();
    for_each_part(parts, |part, ((y, images), bias), threaded| {
        let planes = y.chunks_exact_mut(op).zip(bias);
        match residual {
            Some(r) => planes.zip(r[part * per_part * g.o * op..].chunks_exact(op)).for_each(|((plane, &b), r)| {
                plane.iter_mut().zip(r).for_each(|(y, &r)| _ = y.write(r + b));
            }),
            None => planes.for_each(|(plane, &b)| plane.fill(MaybeUninit::new(b))),
        }
        // SAFETY: every value of the part was just written, each image being `O` planes.
        let y = unsafe { y.assume_init_mut() };
        if let Some(kernels) = &kernels {
            return kernels.add(images, y, threaded);
        }
        for out_rows in g.row_chunks() {
            let (first, pixels) = (out_rows.start * g.wo, out_rows.len() * g.wo);
            with_columns(images, g, out_rows, |cols| {
                gemm_into(g.o, rows, pixels, weight, rows, 1, cols, pixels, 1, 1.0, &mut y[first..], op, threaded)
            });
        }
    });
    // SAFETY: every image was written in full above.
    unsafe { out.set_len(n * g.o * op) };
    out
}

/// The gradients of [`conv_forward`]: per image and chunk of output rows `dW += dY · colsᵀ`,
/// `dcols = Wᵀ · dY`, `dx += col2im(dcols)` (or Winograd's: the adjoint convolution, and the
/// transformed kernels' gradient), the weight gradient summed by fixed groups of images; the
/// bias's per image.
pub(super) fn conv_backward(
    x: &[f32],
    n: usize,
    weight: &[f32],
    grad: &[f32],
    g: &Geometry,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (rows, op) = (g.rows(), g.out_pixels());
    let (in_image, out_image) = (g.c * g.in_pixels(), g.o * op);
    let mut dx = zeros(n * in_image);
    let winograd = g.winograd().map(|tiling| (tiling, Kernels::adjoint(weight, [g.o, g.c], [g.h, g.w])));
    // A group's weight gradient: `dW` `[O, C·k·k]`, or Winograd's `dU` `[O, 16, C]`, for more
    // images when they are small (fixed by the shape, not the number of threads).
    let (part, per_group) = match &winograd {
        Some((tiling, _)) => (16 * g.o * g.c, IMAGES_PER_GROUP.max(tiling.images_per_group())),
        None => (g.o * rows, IMAGES_PER_GROUP),
    };
    // Written (not calloc's zero pages, which the products' first reads would map and their
    // writes then copy, a page fault and TLB flush each).
    let mut dw_parts = zeros(n.div_ceil(per_group) * part);
    let items: Vec<_> = dx.chunks_mut(per_group * in_image).zip(dw_parts.chunks_mut(part)).collect();
    for_each_part(items, |group, (dx_group, dw), threaded| {
        if let Some((tiling, adjoint)) = &winograd {
            let (first, images) = (group * per_group, dx_group.len() / in_image);
            let x = &x[first * in_image..][..images * in_image];
            let dy = &grad[first * out_image..][..images * out_image];
            adjoint.add(dy, dx_group, threaded);
            return winograd::add_weight_gradient(x, dy, tiling, dw, threaded);
        }
        let mut dcols = if g.pointwise() { Vec::new() } else { vec![0f32; rows * g.chunk_rows() * g.wo] };
        for (j, dx_image) in dx_group.chunks_mut(in_image).enumerate() {
            let i = group * per_group + j;
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
    let mut dw = vec![0f32; part];
    for group in dw_parts.chunks_exact(part) {
        dw.iter_mut().zip(group).for_each(|(acc, v)| *acc += v);
    }
    if let Some((tiling, _)) = &winograd {
        dw = winograd::weight_gradient(&dw, tiling);
    }
    let db = grad.chunks_exact(op).map(|plane| sum(plane, |v| v) as f32).collect();
    (dx, dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The number of threads changes nothing, bit for bit: forward and backward of a strided,
    /// asymmetrically padded kernel, of a pointwise one, and of a 3×3 "same" one (Winograd's, whose
    /// weight gradient groups many small images), on batches of several image groups.
    #[test]
    fn convolution_does_not_depend_on_the_thread_count() {
        let cases = [
            (3, ConvSpec { stride: 2, padding: [0, 1, 1, 0] }, [11, 3, 7, 6, 4]),
            (1, ConvSpec::same(1), [11, 3, 7, 6, 4]),
            (3, ConvSpec::same(3), [40, 64, 8, 9, 64]),
        ];
        for (k, spec, [n, c, h, w, o]) in cases {
            let x: Vec<f32> = (0..n * c * h * w).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
            let bias: Vec<f32> = (0..n * o).map(|i| ((i * 5 % 7) as f32 - 3.0) / 4.0).collect();
            let residual: Vec<f32> = (0..n * o * h * w).map(|i| ((i * 3 % 11) as f32 - 5.0) / 5.0).collect();
            let weight: Vec<f32> = (0..o * c * k * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
            let g = Geometry::new(&[n, c, h, w], &[o, c, k, k], spec);
            assert_eq!(g.winograd().is_some(), spec == ConvSpec::same(3), "k = {k}: which algorithm");
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    let r = (spec.stride == 1).then_some(&residual[..]);
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
}
