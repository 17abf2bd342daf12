//! The matrix product every kernel is built on (`gemm`, with strides), and the per-thread
//! scratch buffers the kernels reuse between calls.

/// `c = a b + β c` for `a` `[m, k]` (row and column strides `a_rs`, `a_cs`), `b` `[k, n]`, and
/// row-major `c` `[m, n]`; `β` is 0 or 1. Threaded only when `threaded` (the kernels thread over
/// images instead when there are enough of them).
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
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

/// [`gemm`] into the columns `..n` of a row-major `c` with rows of `c_rs ≥ n` values (so that no
/// two rows of the product overlap).
///
/// # Panics
/// If `c_rs < n`, or if a slice is shorter than the strides reach.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_into(
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
    assert!(c_rs >= n, "gemm: rows of {c_rs} values cannot hold {n} columns without overlapping");
    assert!(
        a.len() >= extent(m, k, a_rs, a_cs) && b.len() >= extent(k, n, b_rs, b_cs) && c.len() >= extent(m, n, c_rs, 1),
        "gemm: an operand is shorter than its shape and strides"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: `c = β c`, with β 0 or 1.
        if beta == 0.0 {
            c.chunks_mut(c_rs).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
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
    // SAFETY: `gemm` reads `a[i·a_rs + l·a_cs]`, `b[l·b_rs + j·b_cs]` and writes `c[i·c_rs + j]`
    // for i < m, l < k, j < n, all positive: the assertions above keep each index inside its
    // slice (the extents are those of the last elements), `c`, borrowed mutably, aliases neither
    // operand, and with `c_rs ≥ n` no element of `c` is written by two threads.
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

/// One past the last element of a `[rows, cols]` matrix with strides `rs`, `cs`; 0 when empty.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// A thread's scratch buffer (a `thread_local!` of the kernel that uses it).
pub(super) type Scratch = std::cell::Cell<Vec<f32>>;

/// Runs `f` with the first `len` values of this thread's buffer `scratch`, grown as needed.
///
/// The buffer is taken out of its cell while `f` runs: a threaded matrix product inside `f` waits
/// for its tasks by running others on this thread (rayon's work stealing), and such a task may
/// be another call of the same kernel. That call finds the cell empty and allocates a buffer of
/// its own, instead of sharing (or failing to borrow) the one in use.
pub(super) fn with_scratch<R>(
    scratch: &'static std::thread::LocalKey<Scratch>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let mut buffer = scratch.take();
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    let result = f(&mut buffer[..len]);
    scratch.set(buffer);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Σ_l a[i, l] b[l, j]` by the definition, in `f64`.
    fn naive(
        m: usize,
        k: usize,
        n: usize,
        a: impl Fn(usize, usize) -> f32,
        b: impl Fn(usize, usize) -> f32,
    ) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|l| f64::from(a(i, l)) * f64::from(b(l, j))).sum();
            }
        }
        c
    }

    /// Strided operands (`a` transposed, `b` row-major) into the columns `..n` of wider rows,
    /// with β = 0 and 1, against the definition; the columns beyond `n` are left alone.
    #[test]
    fn strided_product_into_wider_rows_matches_the_definition() {
        let (m, k, n, c_rs) = (5, 7, 3, 4);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect(); // stored [k, m]
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 13) as f32 - 6.0) / 3.0).collect(); // stored [k, n]
        let want = naive(m, k, n, |i, l| a[l * m + i], |l, j| b[l * n + j]);
        for (beta, threaded) in [(0.0, false), (1.0, false), (1.0, true)] {
            let mut c = vec![2.0f32; m * c_rs];
            gemm_into(m, k, n, &a, 1, m, &b, n, 1, beta, &mut c, c_rs, threaded);
            for i in 0..m {
                for j in 0..n {
                    let expected = want[i * n + j] + f64::from(beta) * 2.0;
                    assert!((f64::from(c[i * c_rs + j]) - expected).abs() < 1e-4, "β {beta}: c[{i},{j}]");
                }
                assert_eq!(c[i * c_rs + n], 2.0, "column {n} beyond the product was written");
            }
        }
    }

    /// Empty shapes neither panic nor read: `m` or `n` zero leaves `c` alone; `k` zero is the
    /// empty sum, `c = β c`.
    #[test]
    fn empty_dimensions_are_the_empty_product() {
        let mut c = vec![3.0f32; 6];
        gemm(0, 4, 2, &[], 4, 1, &[0.0; 8], 2, 1, 0.0, &mut c, false);
        gemm(2, 4, 0, &[0.0; 8], 4, 1, &[], 0, 1, 0.0, &mut c, false);
        assert_eq!(c, [3.0; 6]);
        gemm(2, 0, 3, &[], 0, 1, &[], 3, 1, 1.0, &mut c, false);
        assert_eq!(c, [3.0; 6]);
        gemm(2, 0, 3, &[], 0, 1, &[], 3, 1, 0.0, &mut c, false);
        assert_eq!(c, [0.0; 6]);
    }

    #[test]
    #[should_panic(expected = "overlapping")]
    fn overlapping_rows_are_refused() {
        gemm_into(2, 1, 3, &[1.0; 2], 1, 1, &[1.0; 3], 3, 1, 0.0, &mut [0.0; 8], 2, false);
    }

    thread_local! {
        static TEST_SCRATCH: Scratch = const { std::cell::Cell::new(Vec::new()) };
    }

    /// A call nested inside another on the same thread, as a stolen task runs, gets a buffer of
    /// its own: neither sees the other's values, and the outer one's buffer is kept afterwards.
    #[test]
    fn nested_scratch_buffers_are_distinct() {
        with_scratch(&TEST_SCRATCH, 4, |outer| {
            outer.fill(1.0);
            with_scratch(&TEST_SCRATCH, 4, |inner| {
                assert_eq!(inner, [0.0; 4], "the nested call shares the buffer in use");
                inner.fill(2.0);
            });
            assert_eq!(outer, [1.0; 4], "the nested call wrote into the buffer in use");
        });
        with_scratch(&TEST_SCRATCH, 4, |again| assert_eq!(again, [1.0; 4], "the outer buffer was not kept"));
    }
}
