//! Bit-Swap coding of images with a diffusion model (Kingma, Abbeel & Ho 2019, Algorithm 1), batch
//! after batch on one ANS stack.
//!
//! The forward process is Markov, `q(z_{0..top} | x) = q(z_0 | x) ∏_i q(z_i | z_{i−1})`, so a batch
//! is encoded level by level from the data up ([`ChainSpec`]: VDM's `z_0 … z_T`, DDPM's
//! `x_1 … x_T`):
//!
//! 1. pop `z_0` from `q(z_0 | x) = N(α_0 f(x), σ_0²)`, push `x` under the decoder `p(x | z_0)`;
//! 2. for `i = 1 … top`: pop `z_i` from `q(z_i | z_{i−1})` (VDM eq. 2–3), evaluate `ε̂(z_i)` and
//!    push `z_{i−1}` under `p(z_{i−1} | z_i)` (the reverse step, VDM eq. 29–30, DDPM Algorithm 2);
//! 3. push `z_top` under `N(0, I)`.
//!
//! Within a batch every pop after the first two levels is paid by the push before it, and what a
//! batch leaves on the stack pays for the next batch's pops; batches start at one image and grow
//! ([`batches`]), so that only the first takes seed bits. Decoding runs the same operations in
//! reverse, batches last to first, and returns the stack to its seed.
//!
//! Latents are coded on a uniform grid per level, of width `δ_i = s_i / 2^latent_bits` where `s_i`
//! is the narrower of the two distributions the level is coded under (popped from, pushed under):
//! the bins are fixed before the level above is known, as Bit-Swap needs, and fine enough that the
//! net codelength of a value is `log q/p` of its densities (the bin width cancels).
//!
//! A pop reads the bits at the top of the stack, which the level below has just pushed: popped
//! as they are, a latent's noise at level `i + 1` would be a function of the code of level `i − 1`
//! (ANS hands the next decode the position of the last encoded symbol within its interval; with
//! `q` near `p` it gives back nearly the same quantile), and the chain's path would not be a draw
//! of `q`: its codelength was 5% above the bound at T = 10 on the digits. So before a level's pops
//! the bits they will read are *whitened*: XORed with pseudo-random words of `(level, position)`
//! ([`whiten`]), which the decoder undoes after pushing the level back. The stack's length, and so
//! the codelength, is unchanged; the popped latents are as good as fresh draws of `q`.
//!
//! Every symbol of a quantised distribution keeps a minimum probability (`constriction`'s leaky
//! quantiser), which a pop draws with that total mass: a pop from a support of millions of bins
//! would now and then draw a latent far out in the tail and spoil every level above it. So pops
//! from `q` use a support of ±16 standard deviations about `q`'s mean (known to both sides), while
//! the prior's pushes, which must be able to code any latent, use the level's whole range; both at
//! 32 bits of precision on a stack of 64-bit words, where the minimum masses cost a negligible
//! fraction of a bit.

use constriction::stream::model::{DefaultContiguousCategoricalEntropyModel, LeakyQuantizer};
use constriction::stream::stack::AnsCoder;
use constriction::stream::{Decode, Encode};
use probability::distribution::Gaussian;
use vdm_core::process::{self, alpha, alpha_sq, sigma, sigma_sq, snr_loss_fraction};
use vdm_core::rng::{derive_seed, SplitMix64};

use super::model::ChainSpec;
use crate::error::{Error, Result};
use crate::sample::GridPoint;

/// The most symbols a level's range may have: the prior's minimum masses then take at most
/// `2^24/2^32` of its probability, `0.0056` bits a push.
const MAX_SYMBOLS: f64 = (1u64 << 24) as f64;
/// Precision of the latents' entropy models, in bits: 32 bits below the coder's 64-bit words, so
/// that ANS codes each symbol within a negligible fraction of a bit of its information content.
/// (On 32-bit words, this precision cost about 0.002 bits a symbol, 0.41 bpd at T = 100 and 4.2
/// at T = 1000 on the digits; a precision of 24 there leaves the prior's minimum masses too large.)
const PRECISION: usize = 32;
/// Half-width of a pop's support, in standard deviations of `q`.
const POP_REACH: f64 = 16.0;

type Quantizer = LeakyQuantizer<f64, i32, u32, PRECISION>;

/// The stack: 64-bit words, a 128-bit head.
pub type Coder = AnsCoder<u64, u128>;

/// The batches images are coded in: each holds a fifth as many images as all the batches before
/// it (at least one, at most `batch_size`), so the first is one image.
///
/// A batch borrows bits from the stack before it pays them back: its latents are popped before
/// they are pushed, and the stack stays below where the batch started until the top level's push,
/// by about 9 bits a value on the digits at T = 1000; a batch leaves behind its net rate, about 2
/// bits a value there. Growing by a fifth of what came before lets the earlier batches' net bits
/// pay for the next one's borrowing, so that only the first image dips into the seed (growing by a
/// quarter of the last batch took 3 times the seed bits there, in 18 batches instead of 30).
pub fn batches(count: usize, batch_size: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < count {
        let n = next_batch(start, batch_size).min(count - start);
        out.push(start..start + n);
        start += n;
    }
    out
}

/// The size of the batch after `coded` images.
fn next_batch(coded: usize, batch_size: usize) -> usize {
    (coded / 5).clamp(1, batch_size.max(1))
}

/// `batches(count, batch_size).len()`, without listing them.
pub fn batch_count(count: usize, batch_size: usize) -> usize {
    let (mut batches, mut start) = (0, 0usize);
    while start < count && next_batch(start, batch_size) < batch_size {
        start += next_batch(start, batch_size).min(count - start);
        batches += 1;
    }
    batches + (count - start).div_ceil(batch_size.max(1))
}

/// The seed words a message whose largest batch has `batch_values` values can borrow: its first two
/// levels popped before any push, each pop at most 32 bits a value (the latents' precision), and 8
/// bits a value for the walk of the later levels' net costs: 72 bits, 9/8 words. (Unused seed
/// words cost nothing: the file leaves them out.)
pub fn seed_len(batch_values: usize) -> usize {
    batch_values * 9 / 8 + 32
}

/// The seed of the whitening words' streams (fixed: the decoder regenerates them).
const WHITENING_SEED: u64 = 0x5eed_0fb1_75ed;

/// The grid of one level: symbols `−reach ..= reach`, value `symbol × delta`.
struct Grid {
    delta: f64,
    reach: i32,
    quantizer: Quantizer,
    /// Bits a pop from `q` reads, with a margin: the entropy of `q` on the grid,
    /// `log₂(sd/δ) + log₂ √(2πe)`, plus 8.
    pop_bits: f64,
}

/// The `γ` of each level and everything that coding a value at it needs.
pub struct Chain {
    spec: ChainSpec,
    grids: Vec<Grid>,
}

impl Chain {
    /// The chain `spec` with `2^latent_bits` bins per standard deviation of each level's narrower
    /// distribution.
    pub fn new(spec: ChainSpec, latent_bits: u32) -> Result<Self> {
        let gammas: Vec<f64> = spec.levels.iter().map(|p| p.gamma).collect();
        let top = gammas.len() - 1;
        let transition_sd = |s: f64, t: f64| (sigma_sq(t) * snr_loss_fraction(s, t)).sqrt(); // q(z_t | z_s)
        let mut grids = Vec::with_capacity(top + 1);
        for i in 0..=top {
            let popped = if i == 0 { sigma(gammas[0]) } else { transition_sd(gammas[i - 1], gammas[i]) };
            let pushed = if i == top { 1.0 } else { process::ddpm(gammas[i], gammas[i + 1], spec.variance).noise };
            let delta = popped.min(pushed) / f64::from(1u32 << latent_bits);
            // |z_i| = |α_i x + σ_i ε| ≤ α_i + 12 σ_i but with probability below 1e-32.
            let reach = (alpha(gammas[i]) + 12.0 * sigma(gammas[i])) / delta;
            if !(delta > 0.0 && 2.0 * reach.ceil() < MAX_SYMBOLS) {
                return Err(Error::setting(
                    "latent_bits",
                    format!(
                        "level {i} of {top}'s grid would need {:.0} symbols (more than 2^24); use fewer latent bits or fewer steps",
                        2.0 * reach.ceil() + 1.0
                    ),
                ));
            }
            let reach = reach.ceil() as i32;
            let pop_bits = (popped / delta).log2() + 2.05 + 8.0;
            grids.push(Grid { delta, reach, quantizer: Quantizer::new(-reach..=reach), pop_bits });
        }
        Ok(Self { spec, grids })
    }

    /// The top level's index.
    pub fn top(&self) -> usize {
        self.grids.len() - 1
    }

    /// Level `i`'s point: its `γ` and the network's input there.
    pub fn level(&self, i: usize) -> GridPoint {
        self.spec.levels[i]
    }

    fn gamma(&self, i: usize) -> f64 {
        self.spec.levels[i].gamma
    }

    /// The value of `symbol` at level `i`.
    pub fn value(&self, i: usize, symbol: i32) -> f64 {
        f64::from(symbol) * self.grids[i].delta
    }

    /// The quantiser of a pop at level `i` from `N(mean, sd²)`: ±[`POP_REACH`] standard deviations
    /// about the mean, within the level's range.
    fn pop_quantizer(&self, i: usize, mean: f64, sd: f64) -> Result<Quantizer> {
        let grid = &self.grids[i];
        let (centre, half) = ((mean / grid.delta).round(), (POP_REACH * sd / grid.delta).ceil() + 1.0);
        let low = (centre - half).max(-f64::from(grid.reach));
        let high = (centre + half).min(f64::from(grid.reach));
        if high <= low {
            return Err(Error::Corrupt(format!("a latent at level {i} left its range")));
        }
        Ok(Quantizer::new(low as i32..=high as i32))
    }

    /// Pops level `i`'s symbol from `q = N(mean, sd²)` (a posterior: a narrow support).
    fn pop_posterior(&self, coder: &mut Coder, i: usize, mean: f64, sd: f64) -> Result<i32> {
        let delta = self.grids[i].delta;
        coder
            .decode_symbol(self.pop_quantizer(i, mean, sd)?.quantize(Gaussian::new(mean / delta, sd / delta)))
            .map_err(|e| Error::Corrupt(format!("the compressed data is malformed: {e:?}")))
    }

    /// Pushes level `i`'s `symbol` back under `q = N(mean, sd²)`, undoing [`Chain::pop_posterior`].
    fn push_posterior(&self, coder: &mut Coder, i: usize, symbol: i32, mean: f64, sd: f64) -> Result<()> {
        let delta = self.grids[i].delta;
        coder
            .encode_symbol(symbol, self.pop_quantizer(i, mean, sd)?.quantize(Gaussian::new(mean / delta, sd / delta)))
            .map_err(|e| Error::Corrupt(format!("the compressed data is malformed: {e:?}")))
    }

    /// Pushes level `i`'s `symbol` under the prior `p = N(mean, sd²)` on the level's whole range.
    fn push_prior(&self, coder: &mut Coder, i: usize, symbol: i32, mean: f64, sd: f64) -> Result<()> {
        let grid = &self.grids[i];
        coder
            .encode_symbol(symbol, grid.quantizer.quantize(Gaussian::new(mean / grid.delta, sd / grid.delta)))
            .map_err(|e| Error::Corrupt(format!("a value could not be coded: {e:?}")))
    }

    /// Pops level `i`'s symbol under the prior, undoing [`Chain::push_prior`].
    fn pop_prior(&self, coder: &mut Coder, i: usize, mean: f64, sd: f64) -> Result<i32> {
        let grid = &self.grids[i];
        coder
            .decode_symbol(grid.quantizer.quantize(Gaussian::new(mean / grid.delta, sd / grid.delta)))
            .map_err(|e| Error::Corrupt(format!("the compressed data is malformed: {e:?}")))
    }

    /// `q(z_0 | x) = N(α_0 f(x), σ_0²)` at pixel value `x`.
    fn bottom(&self, pixel: u8) -> (f64, f64) {
        let g0 = self.gamma(0);
        (alpha(g0) * self.spec.decoder.encode(pixel), sigma(g0))
    }

    /// `q(z_i | z_{i−1}) = N(α_{i|i−1} z_{i−1}, σ²_{i|i−1})`, `σ²_{t|s} = σ_t² c` (VDM eq. 2–3).
    fn forward(&self, i: usize, z_below: f64) -> (f64, f64) {
        let (s, t) = (self.gamma(i - 1), self.gamma(i));
        ((alpha_sq(t) / alpha_sq(s)).sqrt() * z_below, (sigma_sq(t) * snr_loss_fraction(s, t)).sqrt())
    }

    /// `p(z_{i−1} | z_i)`: the reverse step at the network's `ε̂` with the chain's variance (VDM
    /// eq. 29–30; DDPM Algorithm 2).
    fn prior(&self, i: usize, z: f64, eps_hat: f32) -> (f64, f64) {
        let step = process::ddpm(self.gamma(i - 1), self.gamma(i), self.spec.variance);
        (step.z * z + step.eps_hat * f64::from(eps_hat), step.noise)
    }

    /// The decoder `p(x | z_0)` of one pixel as an entropy model over the 256 values, given the
    /// network's `ε̂(z_0)` where the decoder takes it.
    fn decoder(&self, z_0: f64, eps_hat: Option<f32>) -> Result<DefaultContiguousCategoricalEntropyModel> {
        let g0 = self.gamma(0);
        let x_hat = eps_hat.map(|e| (z_0 - sigma(g0) * f64::from(e)) / alpha(g0));
        let weights = self.spec.decoder.probabilities(z_0, g0, x_hat);
        let total: f64 = weights.iter().sum();
        let probabilities: Vec<f64> = weights.iter().map(|w| w / total).collect();
        DefaultContiguousCategoricalEntropyModel::from_floating_point_probabilities_fast(&probabilities, None)
            .map_err(|()| Error::Corrupt("the decoder's distribution is not normalisable".into()))
    }
}

/// XORs the bits that popping level `i`'s `m` values will read with pseudo-random words of
/// `(level, position)`: the low word of the coder's head and its top bulk words, down to word
/// `floor` (the seed words below it are pseudo-random already, and leaving them alone keeps
/// unused seed words out of the file). Its own inverse: the decoder calls it again once the
/// level is pushed back, when the stack is as the encoder left it here.
fn whiten(chain: &Chain, coder: &mut Coder, i: usize, m: usize, floor: usize) {
    let words = (m as f64 * chain.grids[i].pop_bits / 64.0).ceil() as usize;
    let (mut bulk, head) = std::mem::take(coder).into_raw_parts();
    let start = bulk.len().saturating_sub(words).max(floor);
    let mut keys = SplitMix64::new(derive_seed(WHITENING_SEED, i as u64, start as u64));
    let head = head ^ u128::from(keys.next_u64()); // the low word: the first pop's quantile
    for word in bulk.iter_mut().skip(start) {
        *word ^= keys.next_u64();
    }
    *coder = Coder::from_raw_parts(bulk, head);
}

/// Encodes one batch (`pixels`, `[N, C, H, W]` flattened) onto `coder`, whose bottom `seed_len`
/// bulk words are the seed. `eps_hat(z, i)` evaluates the network on the batch's latents `z` at
/// level `i` (the `ε̂` of the model's reverse mean); `on_pop` is told the stack's bulk length after
/// each level's pops.
pub fn encode_batch(
    chain: &Chain,
    coder: &mut Coder,
    seed_len: usize,
    pixels: &[u8],
    mut eps_hat: impl FnMut(&[f64], usize) -> Vec<f32>,
    mut on_pop: impl FnMut(&Coder),
) -> Result<()> {
    let m = pixels.len();
    // 1. z_0 ~ q(z_0 | x), then x under p(x | z_0). Pops go in order, pushes in reverse, so that
    // the decoder pops each level in order.
    whiten(chain, coder, 0, m, seed_len);
    let mut symbols = Vec::with_capacity(m);
    for &pixel in pixels {
        let (mean, sd) = chain.bottom(pixel);
        symbols.push(chain.pop_posterior(coder, 0, mean, sd)?);
    }
    on_pop(coder);
    let mut z: Vec<f64> = symbols.iter().map(|&s| chain.value(0, s)).collect();
    let eps_0 = chain.spec.decoder.needs_network().then(|| eps_hat(&z, 0));
    for j in (0..m).rev() {
        coder
            .encode_symbol(usize::from(pixels[j]), chain.decoder(z[j], eps_0.as_ref().map(|e| e[j]))?)
            .map_err(|e| Error::Corrupt(format!("a pixel could not be coded: {e:?}")))?;
    }
    // 2. z_i ~ q(z_i | z_{i−1}), then z_{i−1} under p(z_{i−1} | z_i).
    for i in 1..=chain.top() {
        whiten(chain, coder, i, m, seed_len);
        let mut above = Vec::with_capacity(m);
        for &zj in &z {
            let (mean, sd) = chain.forward(i, zj);
            above.push(chain.pop_posterior(coder, i, mean, sd)?);
        }
        on_pop(coder);
        let z_above: Vec<f64> = above.iter().map(|&s| chain.value(i, s)).collect();
        let eps = eps_hat(&z_above, i);
        for j in (0..m).rev() {
            let (mean, sd) = chain.prior(i, z_above[j], eps[j]);
            chain.push_prior(coder, i - 1, symbols[j], mean, sd)?;
        }
        symbols = above;
        z = z_above;
    }
    // 3. z_top under N(0, I).
    for j in (0..m).rev() {
        chain.push_prior(coder, chain.top(), symbols[j], 0.0, 1.0)?;
    }
    Ok(())
}

/// Decodes one batch of `m` values from `coder`, undoing [`encode_batch`] (with the same
/// `seed_len`): returns the pixels and leaves the stack as it was before the batch was encoded.
pub fn decode_batch(
    chain: &Chain,
    coder: &mut Coder,
    seed_len: usize,
    m: usize,
    mut eps_hat: impl FnMut(&[f64], usize) -> Vec<f32>,
) -> Result<Vec<u8>> {
    let top = chain.top();
    let mut symbols = (0..m).map(|_| chain.pop_prior(coder, top, 0.0, 1.0)).collect::<Result<Vec<i32>>>()?;
    let mut z: Vec<f64> = symbols.iter().map(|&s| chain.value(top, s)).collect();
    for i in (1..=top).rev() {
        let eps = eps_hat(&z, i);
        let mut below = Vec::with_capacity(m);
        for j in 0..m {
            let (mean, sd) = chain.prior(i, z[j], eps[j]);
            below.push(chain.pop_prior(coder, i - 1, mean, sd)?);
        }
        let z_below: Vec<f64> = below.iter().map(|&s| chain.value(i - 1, s)).collect();
        for j in (0..m).rev() {
            let (mean, sd) = chain.forward(i, z_below[j]);
            chain.push_posterior(coder, i, symbols[j], mean, sd)?;
        }
        whiten(chain, coder, i, m, seed_len);
        symbols = below;
        z = z_below;
    }
    let eps_0 = chain.spec.decoder.needs_network().then(|| eps_hat(&z, 0));
    let mut pixels = Vec::with_capacity(m);
    for (j, &zj) in z.iter().enumerate() {
        let p = coder
            .decode_symbol(chain.decoder(zj, eps_0.as_ref().map(|e| e[j]))?)
            .map_err(|e| Error::Corrupt(format!("the compressed data is malformed: {e:?}")))?;
        pixels.push(p as u8);
    }
    for j in (0..m).rev() {
        let (mean, sd) = chain.bottom(pixels[j]);
        chain.push_posterior(coder, 0, symbols[j], mean, sd)?;
    }
    whiten(chain, coder, 0, m, seed_len);
    Ok(pixels)
}
