//! Dropout's mask from a counter-based generator.

use rayon::prelude::*;
use vdm_core::rng::derive_seed;

use super::zeros;

/// `len` values, each `1/keep` with probability `keep`, else 0: value `i` from the random bits
/// [`derive_seed`]`(seed, 0, i)` (below `keep·2³²` in their top 32), each computed on its own so
/// that any split across threads gives the same mask.
pub(super) fn dropout_mask(len: usize, keep: f64, seed: u64) -> Vec<f32> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
