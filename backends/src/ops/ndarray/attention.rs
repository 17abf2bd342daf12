//! Attention as two matrix products per image around a softmax.

use super::gemm::{gemm, with_scratch, Scratch};
use super::simd::{dot, exp, sum, wide};
use super::{for_each_part, zeros};

thread_local! {
    /// Each thread's attention weights (and their gradient), kept between calls.
    static SCORES: Scratch = const { std::cell::Cell::new(Vec::new()) };
}

/// The shape of one attention: `C` channels over `L` positions per image.
#[derive(Clone, Copy)]
pub(super) struct AttentionShape {
    c: usize,
    l: usize,
}

impl AttentionShape {
    pub(super) fn new(shape: &[usize]) -> Self {
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

/// Per image `o = v pᵀ` (`[C, L]`), the weights `p` in this thread's buffer.
pub(super) fn attention_forward(q: &[f32], k: &[f32], v: &[f32], shape: AttentionShape, n: usize) -> Vec<f32> {
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
pub(super) fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    grad: &[f32],
    shape: AttentionShape,
    n: usize,
) -> [Vec<f32>; 3] {
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

#[cfg(test)]
mod tests {
    use super::*;

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
