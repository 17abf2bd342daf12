//! The skips' channel concatenation, and its inverse, as one copy per image.

use rayon::prelude::*;

/// `[a, b]` along the channels, image by image: `a` has `a_len` values per image, `b` `b_len`.
pub(super) fn concat_images(a: &[f32], a_len: usize, b: &[f32], b_len: usize) -> Vec<f32> {
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
pub(super) fn split_images(x: &[f32], image: usize, a_len: usize) -> (Vec<f32>, Vec<f32>) {
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
