//! Group normalisation, with swish, in one pass over each group.

use rayon::prelude::*;

use super::simd::{dot, exp, sum, swish, wide};
use crate::ops::NormSpec;

/// Mean and `1/√(var + ε)` of one group, accumulated in `f64`.
#[inline(always)]
fn group_stats(values: &[f32], epsilon: f64) -> (f64, f64) {
    let m = values.len() as f64;
    let mean = sum(values, |v| v) / m;
    let var = sum(values, |v| (v - mean).powi(2)) / m;
    (mean, 1.0 / (var + epsilon).sqrt())
}

pub(super) fn norm_forward(x: &[f32], shape: &[usize], gamma: &[f32], beta: &[f32], spec: NormSpec) -> Vec<f32> {
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
pub(super) fn norm_backward(
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
