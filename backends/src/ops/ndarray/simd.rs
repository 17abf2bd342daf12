//! Element-wise math that vectorises: the wide-vector dispatch, `exp` and swish without calls,
//! and sums in `f64` lanes.

/// Runs `f` compiled for AVX-512 where the CPU has it, else for AVX2, so that the loops in it
/// that vectorise use 512- or 256-bit vectors: the same operations lane by lane (Rust contracts
/// nothing into FMAs), so the same values as without.
#[inline(always)]
pub(super) fn wide<R>(f: impl FnOnce() -> R) -> R {
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

/// [`wide`] for an expression, inlined whole into each vector version: a closure that LLVM chose
/// not to inline there (a long kernel's body) would run as the baseline's code.
macro_rules! wide_inlined {
    ($body:expr) => {
        $crate::ops::ndarray::simd::wide(
            #[inline(always)]
            || $body,
        )
    };
}
pub(super) use wide_inlined;

/// `y σ(y)`, with [`exp`].
#[inline(always)]
pub(super) fn swish(y: f32) -> f32 {
    y / (1.0 + exp(-y))
}

/// `eˣ` in `f32` within 2 ulp (Cephes' `expf`: `x = n ln 2 + r`, a degree-6 polynomial in `r`,
/// times `2ⁿ`), without branches or calls so that loops over it vectorise; the argument is
/// clamped to `[−87.3, 88.3]`, where `eˣ` is a normal `f32`.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    // Round to nearest by adding and subtracting 1.5·2²³ (no call to `roundf`).
    const ROUND: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    // Cody–Waite: ln 2 = 355/512 − 2.1219444e-4, the first part exact in f32 (Cephes' expf).
    #[allow(clippy::excessive_precision)]
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
pub(super) fn sum(values: &[f32], f: impl Fn(f64) -> f64) -> f64 {
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
pub(super) fn dot(a: &[f32], b: &[f32]) -> f64 {
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
}
