//! 3×3 convolutions by Winograd's minimal filtering F(2×2, 3×3) (Lavin and Gray, "Fast Algorithms
//! for Convolutional Neural Networks", CVPR 2016, §4): with stride 1 and one zero of padding on
//! each side, each 2×2 block of the output (a tile) comes from the 4×4 block of input around it as
//!
//! ```text
//! Y = Aᵀ [ Σ_c (G g_oc Gᵀ) ⊙ (Bᵀ d_c B) ] A                  (Lavin and Gray, eq. 8)
//!
//!      ⎡ 1  0 −1  0 ⎤         ⎡ 1    0    0  ⎤
//! Bᵀ = ⎢ 0  1  1  0 ⎥     G = ⎢ 1/2  1/2  1/2⎥     Aᵀ = ⎡ 1  1  1  0 ⎤
//!      ⎢ 0 −1  1  0 ⎥         ⎢ 1/2 −1/2  1/2⎥          ⎣ 0  1 −1 −1 ⎦
//!      ⎣ 0  1  0 −1 ⎦         ⎣ 0    0    1  ⎦
//! ```
//!
//! Over all tiles this is 16 matrix products, one per position ξ of the 4×4 transformed tile:
//! `M_ξ = U_ξ · V_ξ`, `U_ξ` `[O, C]` the transformed kernels, `V_ξ` `[C, tiles]` the transformed
//! input; 16 multiply-adds per tile and channel pair where im2col's product takes 36.
//!
//! The backward pass is two more of the same size. The input's gradient is the same convolution
//! of the output's gradient with each kernel turned by 180° and the channels' roles swapped. The
//! weight's is the adjoint of the factorisation: with `dM = A dY Aᵀ` per tile,
//! `dg_oc = Gᵀ [ Σ_tiles dM_o ⊙ (Bᵀ d_c B) ] G`, the sum over tiles 16 products `dM_ξ · V_ξᵀ`.
//! Both equal the direct convolution's gradients in exact arithmetic: the factorisation computes
//! the same linear map.
//!
//! The transforms are additions (and halvings of the kernels) in `f32`; the tests hold the results
//! to burn's direct convolution at the same tolerance as im2col's.

use std::ops::Range;

use rayon::prelude::*;

use super::gemm::{gemm, gemm_into, with_scratch, Scratch};
use super::simd::wide_inlined;
use crate::ops::ConvSpec;

thread_local! {
    /// Each thread's transformed input `V` and transformed products `M` (or `dM`), kept between calls.
    static INPUT: Scratch = const { std::cell::Cell::new(Vec::new()) };
    static PRODUCTS: Scratch = const { std::cell::Cell::new(Vec::new()) };
}

/// Positions in a transformed tile.
const XI: usize = 16;

/// Values of a chunk's transformed input or products, `16 × channels × tiles` (2 MB; 0.5 and 8 MB
/// measured no faster on the DDPM U-Net's convolutions).
const CHUNK_VALUES: usize = 1 << 19;

/// Tiles whose weight gradients a group sums into its own transformed gradient `[O, 16, C]`.
const GROUP_TILES: usize = 256;

/// Kernels (input channels of one output channel) transformed together, a vector lane each.
const PAIRS: usize = 64;

/// Whether a convolution of kernel size `k` and geometry `spec`, on images of `[h, w]` pixels from
/// `c` channels to `o`, is one this module computes: 3×3 "same" ones of at least 8×8 pixels and
/// 64 channels in and out. Below that the transforms, which cost per tile and channel where the
/// products cost per tile and channel pair, and the kernels' transform, which does not shrink
/// with the image, outweigh the multiply-adds saved. Measured while choosing, with these bounds
/// switched by a temporary environment variable and a per-convolution timing harness, neither
/// kept (`vdm bench`, 2 threads, alternating runs): ddpm-small's U-Net (32 channels at 8×8) sampled at 40–45 ms per
/// evaluation with this module against 33–34 without; VDM's small network (64 channels at
/// 32×32) at 496–551 ms against 607–624 (and trained 7–22% faster); DDPM's CIFAR-10 U-Net's 4×4
/// convolutions of 512 channels to 256 took 1.2–1.7 times im2col's time.
pub(super) fn applies(k: usize, spec: ConvSpec, [h, w]: [usize; 2], [c, o]: [usize; 2]) -> bool {
    k == 3 && spec == ConvSpec::same(3) && h * w >= 64 && c.min(o) >= 64
}

/// The tiles of one convolution's images: `C` channels in, `O` out, `H × W` pixels in both.
///
/// The images of a batch are taken a few at a time (a part), and a part's rows of tiles, one image
/// after another, a chunk at a time: a chunk's transformed input and products stay in cache
/// between their writing and their reading, and small images still give the matrix products
/// enough tiles.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tiling {
    c: usize,
    o: usize,
    h: usize,
    w: usize,
    /// Tiles per row of tiles, `⌈W/2⌉`, and rows of tiles per image, `⌈H/2⌉`.
    tw: usize,
    th: usize,
}

impl Tiling {
    pub(super) fn new(c: usize, o: usize, [h, w]: [usize; 2]) -> Self {
        Self { c, o, h, w, tw: w.div_ceil(2), th: h.div_ceil(2) }
    }

    /// Rows of tiles per chunk: as many as keep a chunk's transformed input and products at most
    /// [`CHUNK_VALUES`] values each (at least one).
    fn chunk_rows(&self) -> usize {
        (CHUNK_VALUES / (XI * self.c.max(self.o) * self.tw)).max(1)
    }

    /// Images per part: as many as fill a chunk (at least one).
    pub(super) fn images_per_part(&self) -> usize {
        (self.chunk_rows() / self.th).max(1)
    }

    /// The rows of tiles of `images` consecutive images (image `r / th`, row `r % th` of it) in
    /// chunks of [`Tiling::chunk_rows`].
    fn chunks(&self, images: usize) -> impl Iterator<Item = Range<usize>> {
        let (rows, per_chunk) = (images * self.th, self.chunk_rows());
        (0..rows).step_by(per_chunk).map(move |start| start..(start + per_chunk).min(rows))
    }

    /// Images enough for [`GROUP_TILES`] tiles (at least one).
    pub(super) fn images_per_group(&self) -> usize {
        (GROUP_TILES / (self.th * self.tw)).max(1)
    }

    /// Where the row `row` of tiles of consecutive images lies: its row within its image, and the
    /// values of that image's plane `channel` among images of `channels` planes.
    fn locate(&self, row: usize, channel: usize, channels: usize) -> (usize, Range<usize>) {
        let plane = self.h * self.w;
        let start = ((row / self.th) * channels + channel) * plane;
        (row % self.th, start..start + plane)
    }

    fn input_image(&self) -> usize {
        self.c * self.h * self.w
    }
}

/// A convolution's kernels, transformed: `U_ξ = (G g Gᵀ)_ξ`, stored `[O, 16, C]` (so that each
/// output channel's are transformed on their own, across threads); `U_ξ` is `[O, C]` with rows
/// `16·C` apart.
pub(super) struct Kernels {
    tiling: Tiling,
    u: Vec<f32>,
}

impl Kernels {
    /// The kernels `weight` `[O, C, 3, 3]` for images of `size` pixels.
    pub(super) fn new(weight: &[f32], [o, c]: [usize; 2], size: [usize; 2]) -> Self {
        Self::transformed(Tiling::new(c, o, size), |o, ci, tap| weight[(o * c + ci) * 9 + tap])
    }

    /// The kernels of the convolution that carries an output gradient back to the input (its
    /// adjoint): `g'_co = rot180(g_oc)`, from `O` channels to `C` of the forward convolution.
    pub(super) fn adjoint(weight: &[f32], [o, c]: [usize; 2], size: [usize; 2]) -> Self {
        Self::transformed(Tiling::new(o, c, size), |ci, oi, tap| weight[(oi * c + ci) * 9 + 8 - tap])
    }

    /// `U` for the kernel values `g(o, c, dy·3 + dx)`, [`PAIRS`] input channels at a time so that
    /// the arithmetic runs in vectors.
    fn transformed(tiling: Tiling, g: impl Fn(usize, usize, usize) -> f32 + Sync) -> Self {
        let channels = tiling.c;
        let mut u = vec![0f32; tiling.o * XI * channels];
        u.par_chunks_mut(XI * channels).enumerate().for_each(|(o, u)| {
            // The 9 taps of a block of kernels, then G g (4 rows of 3), each a vector over the block.
            let (mut taps, mut gg) = ([[0f32; PAIRS]; 9], [[0f32; PAIRS]; 12]);
            for start in (0..channels).step_by(PAIRS) {
                let len = PAIRS.min(channels - start);
                for (p, c) in (start..start + len).enumerate() {
                    taps.iter_mut().enumerate().for_each(|(tap, values)| values[p] = g(o, c, tap));
                }
                wide_inlined!({
                    for x in 0..3 {
                        let (g0, g1, g2) = (&taps[x], &taps[3 + x], &taps[6 + x]);
                        for p in 0..PAIRS {
                            gg[x][p] = g0[p];
                            gg[3 + x][p] = (g0[p] + g1[p] + g2[p]) * 0.5;
                            gg[6 + x][p] = (g0[p] - g1[p] + g2[p]) * 0.5;
                            gg[9 + x][p] = g2[p];
                        }
                    }
                    // (G g) Gᵀ along each row a.
                    for a in 0..4 {
                        let (r0, r1, r2) = (&gg[3 * a][..len], &gg[3 * a + 1][..len], &gg[3 * a + 2][..len]);
                        let at = |b: usize| (4 * a + b) * channels + start;
                        u[at(0)..][..len].copy_from_slice(r0);
                        for (o, ((&p, &q), &r)) in u[at(1)..][..len].iter_mut().zip(r0.iter().zip(r1).zip(r2)) {
                            *o = (p + q + r) * 0.5;
                        }
                        for (o, ((&p, &q), &r)) in u[at(2)..][..len].iter_mut().zip(r0.iter().zip(r1).zip(r2)) {
                            *o = (p - q + r) * 0.5;
                        }
                        u[at(3)..][..len].copy_from_slice(r2);
                    }
                });
            }
        });
        Self { tiling, u }
    }

    /// Images per call of [`Kernels::add`] that fill its matrix products.
    pub(super) fn images_per_part(&self) -> usize {
        self.tiling.images_per_part()
    }

    /// `y += conv(x, g)` for consecutive `[C, H, W]` images `x` into their `[O, H, W]` outputs `y`.
    pub(super) fn add(&self, x: &[f32], y: &mut [f32], threaded: bool) {
        let t = &self.tiling;
        for rows in t.chunks(x.len() / t.input_image()) {
            let tiles = rows.len() * t.tw;
            with_scratch(&INPUT, XI * t.c * tiles, |v| {
                wide_inlined!(transform_input(x, t, rows.clone(), v));
                with_scratch(&PRODUCTS, XI * t.o * tiles, |m| {
                    for (xi, (v, m)) in v.chunks_exact(t.c * tiles).zip(m.chunks_exact_mut(t.o * tiles)).enumerate() {
                        gemm(t.o, t.c, tiles, &self.u[xi * t.c..], XI * t.c, 1, v, tiles, 1, 0.0, m, threaded);
                    }
                    wide_inlined!(add_output(m, t, rows.clone(), y));
                });
            });
        }
    }
}

/// `dU += Σ_tiles dM_ξ ⊙ V_ξ` for consecutive images `x` `[C, H, W]` and their outputs' gradients
/// `dy` `[O, H, W]`, into `du` `[O, 16, C]` (see [`weight_gradient`]).
pub(super) fn add_weight_gradient(x: &[f32], dy: &[f32], t: &Tiling, du: &mut [f32], threaded: bool) {
    for rows in t.chunks(x.len() / t.input_image()) {
        let tiles = rows.len() * t.tw;
        with_scratch(&INPUT, XI * t.c * tiles, |v| {
            wide_inlined!(transform_input(x, t, rows.clone(), v));
            with_scratch(&PRODUCTS, XI * t.o * tiles, |dm| {
                wide_inlined!(transform_output_gradient(dy, t, rows.clone(), dm));
                for (xi, (dm, v)) in dm.chunks_exact(t.o * tiles).zip(v.chunks_exact(t.c * tiles)).enumerate() {
                    gemm_into(t.o, tiles, t.c, dm, tiles, 1, v, 1, tiles, 1.0, &mut du[xi * t.c..], XI * t.c, threaded);
                }
            });
        });
    }
}

/// The kernels' gradient `[O, C, 3, 3]` from its transform `dU` `[O, 16, C]`: `Gᵀ dU G`, each
/// output channel's on its own (across threads).
pub(super) fn weight_gradient(du: &[f32], t: &Tiling) -> Vec<f32> {
    let mut dw = vec![0f32; t.o * t.c * 9];
    dw.par_chunks_mut(t.c * 9).zip(du.par_chunks(XI * t.c)).for_each(|(dw, du)| {
        // Gᵀ dU (3 rows of 4), then (Gᵀ dU) G (3 × 3), each a vector over a block of kernels.
        let (mut left, mut out) = ([[0f32; PAIRS]; 12], [[0f32; PAIRS]; 9]);
        for start in (0..t.c).step_by(PAIRS) {
            let len = PAIRS.min(t.c - start);
            let du = |a: usize, b: usize| &du[(4 * a + b) * t.c + start..][..len];
            wide_inlined!({
                // Gᵀ u for a 4-vector u: u0 + (u1 + u2)/2, (u1 − u2)/2, (u1 + u2)/2 + u3.
                for b in 0..4 {
                    let (u0, u1, u2, u3) = (du(0, b), du(1, b), du(2, b), du(3, b));
                    for p in 0..len {
                        left[b][p] = u0[p] + (u1[p] + u2[p]) * 0.5;
                        left[4 + b][p] = (u1[p] - u2[p]) * 0.5;
                        left[8 + b][p] = (u1[p] + u2[p]) * 0.5 + u3[p];
                    }
                }
                for y in 0..3 {
                    let (u0, u1, u2, u3) = (&left[4 * y], &left[4 * y + 1], &left[4 * y + 2], &left[4 * y + 3]);
                    for p in 0..PAIRS {
                        out[3 * y][p] = u0[p] + (u1[p] + u2[p]) * 0.5;
                        out[3 * y + 1][p] = (u1[p] - u2[p]) * 0.5;
                        out[3 * y + 2][p] = (u1[p] + u2[p]) * 0.5 + u3[p];
                    }
                }
            });
            for (p, kernel) in dw[start * 9..][..len * 9].chunks_exact_mut(9).enumerate() {
                kernel.iter_mut().zip(&out).for_each(|(v, tap)| *v = tap[p]);
            }
        }
    });
    dw
}

/// `V_ξ[c, tile] = (Bᵀ d B)_ξ` for the tiles of the rows `rows` of tiles of consecutive `[C, H, W]`
/// images `x`, `d` the 4×4 block of input (zero in the padding) around the tile: `v` `[16, C, tiles]`.
#[inline(always)] // into `wide`'s vector code
fn transform_input(x: &[f32], t: &Tiling, rows: Range<usize>, v: &mut [f32]) {
    let (tw, tiles, plane) = (t.tw, rows.len() * t.tw, t.h * t.w);
    // The rows of one channel padded with a zero on each side, each split into its even and odd
    // columns `[even (tw + 1) | odd (tw + 1)]`: row `y + 1` holds input row `y`, rows −1 and from
    // H on are zeros. Then Bᵀ d for one row of tiles: 4 rows, split the same way.
    let n = 2 * (tw + 1);
    let (mut split, mut down) = (vec![0f32; (2 * t.th + 2) * n], vec![0f32; 4 * n]);
    let mut r = 0;
    for (image, image_rows) in by_image(rows, t.th) {
        for c in 0..t.c {
            let channel = &x[(image * t.c + c) * plane..][..plane];
            for y in 2 * image_rows.start..2 * image_rows.end + 2 {
                let (even, odd) = split[y * n..][..n].split_at_mut(tw + 1);
                match (y.checked_sub(1)).filter(|&y| y < t.h) {
                    Some(y) => {
                        // Padded column 2j + 1 is input column 2j, padded column 2j + 2 input column 2j + 1.
                        deinterleave(&channel[y * t.w..][..t.w], &mut odd[..tw], &mut even[1..]);
                        (even[0], odd[tw]) = (0.0, 0.0);
                    }
                    None => {
                        even.fill(0.0);
                        odd.fill(0.0);
                    }
                }
            }
            for (k, i) in image_rows.clone().enumerate() {
                let d = |q: usize| &split[(2 * i + q) * n..][..n];
                let (d0, d1, d2, d3) = (d(0), d(1), d(2), d(3));
                let (b0, rest) = down.split_at_mut(n);
                let (b1, rest) = rest.split_at_mut(n);
                let (b2, b3) = rest.split_at_mut(n);
                store(b0, d0, d2, |p, q| p - q);
                store(b1, d1, d2, |p, q| p + q);
                store(b2, d2, d1, |p, q| p - q);
                store(b3, d1, d3, |p, q| p - q);
                // (Bᵀ d) B along each row: columns 2j … 2j + 3 of the padded row are
                // even[j], odd[j], even[j + 1], odd[j + 1].
                for (a, halves) in down.chunks_exact(n).enumerate() {
                    let (even, odd) = halves.split_at(tw + 1);
                    let at = |b: usize| ((a * 4 + b) * t.c + c) * tiles + (r + k) * tw;
                    let (e0, e1, o0, o1) = (&even[..tw], &even[1..], &odd[..tw], &odd[1..]);
                    store(&mut v[at(0)..][..tw], e0, e1, |p, q| p - q);
                    store(&mut v[at(1)..][..tw], o0, e1, |p, q| p + q);
                    store(&mut v[at(2)..][..tw], e1, o0, |p, q| p - q);
                    store(&mut v[at(3)..][..tw], o0, o1, |p, q| p - q);
                }
            }
        }
        r += image_rows.len();
    }
}

/// The rows `rows` of tiles of consecutive images (`th` rows each) as runs within one image:
/// the image, and its rows.
fn by_image(rows: Range<usize>, th: usize) -> impl Iterator<Item = (usize, Range<usize>)> {
    let mut row = rows.start;
    std::iter::from_fn(move || {
        (row < rows.end).then(|| {
            let (image, end) = (row / th, rows.end.min((row / th + 1) * th));
            let run = (image, row % th..row % th + (end - row));
            row = end;
            run
        })
    })
}

/// `first[j] = line[2j]`, `second[j] = line[2j + 1]` (zero past the end of `line`): both of
/// `⌈len / 2⌉` values.
#[inline(always)]
fn deinterleave(line: &[f32], first: &mut [f32], second: &mut [f32]) {
    let pairs = line.chunks_exact(2);
    if let Some(&last) = pairs.remainder().first() {
        (first[line.len() / 2], second[line.len() / 2]) = (last, 0.0);
    }
    for ((pair, a), b) in pairs.zip(first.iter_mut()).zip(second.iter_mut()) {
        (*a, *b) = (pair[0], pair[1]);
    }
}

/// `line[2j] += first[j]`, `line[2j + 1] += second[j]` (within `line`).
#[inline(always)]
fn add_interleaved(line: &mut [f32], first: &[f32], second: &[f32]) {
    let len = line.len();
    let mut pairs = line.chunks_exact_mut(2);
    for ((pair, &a), &b) in pairs.by_ref().zip(first).zip(second) {
        pair[0] += a;
        pair[1] += b;
    }
    if let Some(last) = pairs.into_remainder().first_mut() {
        *last += first[len / 2];
    }
}

/// `out[j] = f(p[j], q[j])`.
#[inline(always)]
fn store(out: &mut [f32], p: &[f32], q: &[f32], f: impl Fn(f32, f32) -> f32) {
    out.iter_mut().zip(p.iter().zip(q)).for_each(|(o, (&p, &q))| *o = f(p, q));
}

/// `y += Aᵀ M A` for the tiles of the rows `rows` of tiles, from their products `m` `[16, O,
/// tiles]`, into consecutive `[O, H, W]` outputs (the parts of tiles beyond an image dropped).
#[inline(always)] // into `wide`'s vector code
fn add_output(m: &[f32], t: &Tiling, rows: Range<usize>, y: &mut [f32]) {
    let (tw, tiles) = (t.tw, rows.len() * t.tw);
    // Aᵀ M: 2 rows of 4 columns, each column a vector over the row's tiles.
    let (mut s, mut out) = (vec![0f32; 8 * tw], vec![0f32; 2 * tw]);
    for o in 0..t.o {
        for (r, row) in rows.clone().enumerate() {
            let (i, plane) = t.locate(row, o, t.o);
            let plane = &mut y[plane];
            let row = |xi: usize| &m[(xi * t.o + o) * tiles + r * tw..][..tw];
            for (b, (s0, s1)) in s.chunks_exact_mut(2 * tw).map(|s| s.split_at_mut(tw)).enumerate() {
                let (m0, m1, m2, m3) = (row(b), row(4 + b), row(8 + b), row(12 + b));
                for (((s0, s1), (&m0, &m1)), (&m2, &m3)) in
                    s0.iter_mut().zip(s1).zip(m0.iter().zip(m1)).zip(m2.iter().zip(m3))
                {
                    *s0 = m0 + m1 + m2;
                    *s1 = m1 - m2 - m3;
                }
            }
            // (Aᵀ M) A along each of the two rows: output columns 2j and 2j + 1.
            for half in 0..2.min(t.h - 2 * i) {
                let column = |b: usize| &s[b * 2 * tw + half * tw..][..tw];
                let (c0, c1, c2, c3) = (column(0), column(1), column(2), column(3));
                let (left, right) = out.split_at_mut(tw);
                for (((l, r), (&c0, &c1)), (&c2, &c3)) in
                    left.iter_mut().zip(right.iter_mut()).zip(c0.iter().zip(c1)).zip(c2.iter().zip(c3))
                {
                    (*l, *r) = (c0 + c1 + c2, c1 - c2 - c3);
                }
                add_interleaved(&mut plane[(2 * i + half) * t.w..][..t.w], left, right);
            }
        }
    }
}

/// `dM_ξ[o, tile] = (A dY Aᵀ)_ξ` for the tiles of the rows `rows` of tiles, `dY` the tile's 2×2
/// block of the outputs' gradients `dy` (consecutive `[O, H, W]`, zero beyond an image): `dm`
/// `[16, O, tiles]`.
#[inline(always)] // into `wide`'s vector code
fn transform_output_gradient(dy: &[f32], t: &Tiling, rows: Range<usize>, dm: &mut [f32]) {
    let (tw, tiles) = (t.tw, rows.len() * t.tw);
    // The tile row's two gradient rows, split into even and odd columns.
    let (mut split, mut down) = (vec![0f32; 4 * tw], vec![0f32; 2 * tw]);
    for o in 0..t.o {
        for (r, row) in rows.clone().enumerate() {
            let (i, plane) = t.locate(row, o, t.o);
            let plane = &dy[plane];
            for (half, halves) in split.chunks_exact_mut(2 * tw).enumerate() {
                let (even, odd) = halves.split_at_mut(tw);
                if 2 * i + half < t.h {
                    deinterleave(&plane[(2 * i + half) * t.w..][..t.w], even, odd);
                } else {
                    even.fill(0.0);
                    odd.fill(0.0);
                }
            }
            // A dY: rows y0, y0 + y1, y0 − y1, −y1 (each as its even and odd columns x0, x1);
            // then · Aᵀ along each: x0, x0 + x1, x0 − x1, −x1.
            let (y0, y1) = split.split_at(2 * tw);
            for a in 0..4 {
                match a {
                    0 => down.copy_from_slice(y0),
                    1 => store(&mut down, y0, y1, |p, q| p + q),
                    2 => store(&mut down, y0, y1, |p, q| p - q),
                    _ => store(&mut down, y0, y1, |_, q| -q),
                }
                let (x0, x1) = down.split_at(tw);
                let at = |b: usize| ((a * 4 + b) * t.o + o) * tiles + r * tw;
                dm[at(0)..][..tw].copy_from_slice(x0);
                store(&mut dm[at(1)..][..tw], x0, x1, |p, q| p + q);
                store(&mut dm[at(2)..][..tw], x0, x1, |p, q| p - q);
                store(&mut dm[at(3)..][..tw], x0, x1, |_, q| -q);
            }
        }
    }
}
