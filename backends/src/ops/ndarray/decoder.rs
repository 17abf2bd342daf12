//! VDM's discretised decoder, value by value in `f64`.

use rayon::prelude::*;

/// One value of VDM's decoder ([`vdm_core::vlb::decoder_nll`]) in `f64`: the NLL, and under the
/// softmax `π` over the bins, `E_π[f_k]` and `E_π[(z − f_k)²]`. The bins are visited outward from
/// the nearest, where the weights `e^{ℓ_k − ℓ_{k*}}` only shrink, and dropped below `e^{−50}`.
pub(super) fn decoder_value(z: f64, f: f64, precision: f64, vocab: usize) -> (f64, f64, f64) {
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
pub(super) fn decoder_map<T: Send>(
    z: &[f32],
    f: &[f32],
    precision: &[f32],
    each: impl Fn(f64, f64, f64) -> T + Sync,
) -> Vec<T> {
    let per_image = z.len() / precision.len();
    z.par_iter()
        .zip(f.par_iter())
        .enumerate()
        .map(|(i, (&zv, &fv))| each(f64::from(zv), f64::from(fv), f64::from(precision[i / per_image])))
        .collect()
}
