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

/// [`gemm`] into the columns `..n` of a row-major `c` with rows of `c_rs` values.
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

pub(super) type Scratch = std::cell::RefCell<Vec<f32>>;

/// Runs `f` with the first `len` values of this thread's buffer `scratch`, grown as needed.
pub(super) fn with_scratch<R>(
    scratch: &'static std::thread::LocalKey<Scratch>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    scratch.with_borrow_mut(|buffer| {
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
        f(&mut buffer[..len])
    })
}
