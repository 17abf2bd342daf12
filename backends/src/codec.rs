//! Lossless compression with a trained VDM: bits-back ANS over the `T`-step latent chain
//! (Townsend, Bird & Barber 2019; VDM §F), with `constriction`'s stack coder.
//!
//! To encode images `x` (all of them as one message, one batched network evaluation per step):
//!
//! 1. pop `z_1` from `q(z_1 | x)`, then `z_s` from `q(z_s | z_t, x)` for `t = i/T`, `s = (i−1)/T`,
//!    `i = T … 1` (these pops take bits off the stack: the "bits back");
//! 2. push `x` under the decoder `p(x | z_0)`;
//! 3. push `z_0 … z_{(T−1)/T}` under `p(z_s | z_t)`, then `z_1` under `N(0, I)`.
//!
//! Decoding runs the same operations in reverse order, each inverted: pop `z_1`, the `z_s` and `x`
//! under the model, then push the latents back under the posterior, which returns the stack to
//! where the encoder started. The net codelength is `−log p(x, z) + log q(z | x)` per message,
//! whose expectation is the `T`-step negative VLB.
//!
//! Latents are coded on `2^latent_bits` bins of equal mass under the prior at their step
//! ([`vdm_core::bits_back`]), so a latent pushed under the prior costs exactly `latent_bits` bits.
//! The first pops need bits that are not there yet (the initial-bits problem): the stack starts
//! on pseudo-random seed words that the decoder regenerates. The pops consume part of them; the
//! file stores the stack without the untouched part, so the file holds the net codelength plus
//! the seed bits consumed, and both are reported ([`CodecStats`]).
//!
//! Encoder and decoder must compute every bin bit for bit alike: the network runs on the same
//! batches in the same order on both sides, all other arithmetic is `f64` on the host, and the
//! file carries a checksum of the images, so a decoder that computed differently (another binary
//! or backend) reports it instead of returning wrong images.

use burn::tensor::{Tensor, TensorData};
use constriction::stream::model::{
    DefaultContiguousCategoricalEntropyModel, DefaultLeakyQuantizer, DefaultUniformModel,
};
use constriction::stream::stack::DefaultAnsCoder;
use constriction::stream::{Decode, Encode};
use probability::distribution::{Distribution, Inverse};
use sha2::{Digest, Sha256};
use vdm_core::bits_back::{bin_value, BinPosterior};
use vdm_core::process::{self, alpha, sigma};
use vdm_core::rng::SplitMix64;
use vdm_core::vlb::{self, PIXEL_VALUES};

use crate::config::MAX_TIME_STEPS;
use crate::data::ImageSet;
use crate::error::{Error, Result};
use crate::memory;
use crate::model::Vdm;
use crate::ops::FastOps;
use crate::sample::{Denoiser, Spacing};

/// The version of the compressed format this build writes; it also reads version 1, which did not
/// record the checkpoint's step and directory.
pub const FORMAT_VERSION: u32 = 2;
/// The longest checkpoint path a header holds, in bytes.
const MAX_PATH_BYTES: usize = 4096;
const MAGIC: &[u8; 8] = b"VDM-BBAN";
/// Latent precisions accepted: `2^bits` bins per latent value.
pub const LATENT_BITS: std::ops::RangeInclusive<u32> = 4..=20;
/// The seed of the initial stack's pseudo-random words (fixed: the decoder regenerates them).
const SEED: u64 = 0x5eed_b175_bac4;

/// The checkpoint a message was coded with, as its header records it: decoding needs exactly
/// these weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelId {
    /// SHA-256 (hex) of the model's weight file.
    pub sha256: String,
    /// The checkpoint's training step (not recorded by format 1).
    pub step: Option<u64>,
    /// The checkpoint directory the encoder loaded (not recorded by format 1).
    pub checkpoint: Option<String>,
}

impl ModelId {
    /// A model known by its weight file's SHA-256 only (no checkpoint on disk).
    pub fn weights(sha256: impl Into<String>) -> Self {
        Self { sha256: sha256.into(), step: None, checkpoint: None }
    }
}

impl std::fmt::Display for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.step, &self.checkpoint) {
            (Some(step), Some(dir)) => {
                write!(f, "the checkpoint of step {step}, {dir} (weights SHA-256 {})", self.sha256)
            }
            _ => write!(f, "the checkpoint whose weights have SHA-256 {}", self.sha256),
        }
    }
}

/// What a message holds and how it was coded: everything decoding needs besides the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The checkpoint it was coded with.
    pub model: ModelId,
    /// Steps `T` of the latent chain.
    pub steps: u64,
    /// `[C, H, W]` of every image.
    pub shape: [u32; 3],
    /// Number of images.
    pub count: u64,
    /// `log₂` of the bins per latent value.
    pub latent_bits: u32,
    /// Images per network evaluation (the batches must match between encoder and decoder).
    pub batch_size: u64,
    /// SHA-256 of the images' pixels, checked after decoding.
    pub images_sha256: [u8; 32],
}

/// Sizes of a message, in bits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CodecStats {
    /// The coded stack's growth: `−log₂ p(x, z) + log₂ q(z | x)` summed, as coded.
    pub net_bits: f64,
    /// The seed bits the pops consumed (stored in the file, besides the net codelength).
    pub seed_bits: f64,
    /// The whole file.
    pub file_bits: f64,
    /// Values coded (images × features).
    pub dims: usize,
}

impl CodecStats {
    /// The net codelength per dimension: the rate once the initial bits are amortised.
    pub fn effective_bpd(&self) -> f64 {
        self.net_bits / self.dims as f64
    }

    /// The file's size per dimension, the initial bits included.
    pub fn used_bpd(&self) -> f64 {
        self.file_bits / self.dims as f64
    }
}

/// The posterior over a latent's prior bins, as the continuous distribution `constriction`'s
/// quantizer takes: bin `i` is `[i − ½, i + ½)`.
struct Bins(BinPosterior);

impl Distribution for Bins {
    type Value = f64;
    fn distribution(&self, x: f64) -> f64 {
        self.0.cdf(x + 0.5)
    }
}

impl Inverse for Bins {
    fn inverse(&self, p: f64) -> f64 {
        self.0.inverse(p) - 0.5
    }
}

/// The `γ` of the sampling grid ([`Denoiser::grid`]: `γ(i/T)`, `i = 0 … T`), and what each step needs.
struct Chain {
    gammas: Vec<f64>,
    bins: usize,
}

impl Chain {
    fn new<B: FastOps>(model: &Vdm<B>, steps: usize, latent_bits: u32) -> Result<Self> {
        Ok(Self {
            gammas: model.grid(steps, Spacing::Time)?.iter().map(|point| point.gamma).collect(),
            bins: 1 << latent_bits,
        })
    }

    fn steps(&self) -> usize {
        self.gammas.len() - 1
    }

    /// The prior `p(z_s | z_t)` of one value: mean and standard deviation (VDM eq. 29–30).
    fn prior(&self, i: usize, z_t: f64, eps_hat: f32) -> (f64, f64) {
        let step = process::ancestral(self.gammas[i - 1], self.gammas[i]);
        (step.z * z_t + step.eps_hat * f64::from(eps_hat), step.noise)
    }

    /// The posterior `q(z_s | z_t, x)` of one value at the feature `f` of `x`.
    fn posterior(&self, i: usize, f: f64, z_t: f64) -> (f64, f64) {
        let q = process::posterior(f, z_t, self.gammas[i - 1], self.gammas[i]);
        (q.mean, q.variance.sqrt())
    }

    /// The top posterior `q(z_1 | x) = N(α₁ f, σ₁²)` against the prior `N(0, 1)`.
    fn top(&self, f: f64) -> BinPosterior {
        let g1 = self.gammas[self.steps()];
        BinPosterior::new(self.bins, 0.0, 1.0, alpha(g1) * f, sigma(g1))
    }

    /// The decoder `p(x | z_0)` of one pixel (VDM eq. 28): a softmax over the 256 values.
    fn decoder(&self, z_0: f64) -> Vec<f64> {
        let g0 = self.gammas[0];
        let (x, precision) = (z_0 / alpha(g0), (-g0).exp());
        let logits: Vec<f64> =
            (0..PIXEL_VALUES).map(|k| -0.5 * precision * (x - vlb::encode(k as f64, PIXEL_VALUES)).powi(2)).collect();
        let top = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = logits.iter().map(|l| (l - top).exp()).collect();
        let total: f64 = weights.iter().sum();
        weights.iter().map(|w| w / total).collect()
    }
}

fn decoder_model(probabilities: &[f64]) -> Result<DefaultContiguousCategoricalEntropyModel> {
    DefaultContiguousCategoricalEntropyModel::from_floating_point_probabilities_fast(probabilities, None)
        .map_err(|()| Error::Corrupt("the decoder's pixel distribution could not be quantised".into()))
}

/// `ε̂(z_t)` for all images at step `i`, in batches of `batch_size`.
fn eps_hat<B: FastOps>(
    model: &Vdm<B>,
    z: &[f64],
    shape: [usize; 3],
    gamma: f64,
    batch_size: usize,
    device: &B::Device,
) -> Vec<f32> {
    let d = shape.iter().product::<usize>();
    let mut out = Vec::with_capacity(z.len());
    for chunk in z.chunks(batch_size * d) {
        let n = chunk.len() / d;
        let values: Vec<f32> = chunk.iter().map(|&v| v as f32).collect();
        let input = Tensor::<B, 4>::from_data(TensorData::new(values, [n, shape[0], shape[1], shape[2]]), device);
        let output = model.eps_hat(input, Tensor::full([n], gamma as f32, device));
        out.extend(output.into_data().iter::<f32>());
    }
    out
}

/// The seed words of a message of `values` values over `steps` steps: enough for every pop, each
/// of which takes at most the entropy models' 24-bit precision.
fn seed_len(values: usize, steps: usize) -> Option<usize> {
    let words = values.checked_mul(steps.checked_add(1)?)?.checked_mul(24)? / 32 + 4;
    (words as u64 <= MAX_SEED_WORDS).then_some(words)
}

/// Refuses a message whose coding state cannot fit in memory: the seed, and per value and step a
/// symbol (both sides), the latent and the network's prediction (the decoder keeps them).
fn check_memory(values: usize, steps: usize, seed_words: usize) -> Result<()> {
    let per_value_step = 4 + 8 + 4;
    let need =
        (values as u128 * (steps as u128 + 1) * per_value_step + 4 * seed_words as u128).min(u64::MAX as u128) as u64;
    memory::check(
        &format!("coding {values} values over T = {steps} steps"),
        need,
        "code fewer images per message or use fewer steps",
    )
}

fn seed_words(count: usize) -> Vec<u32> {
    let mut rng = SplitMix64::new(SEED);
    (0..count).map(|_| rng.next_u64() as u32).collect()
}

fn check_settings(steps: usize, latent_bits: u32, batch_size: usize) -> Result<()> {
    if !(1..=MAX_TIME_STEPS).contains(&steps) {
        return Err(Error::setting(
            "steps",
            format!("the number of steps T must be between 1 and {MAX_TIME_STEPS}, got {steps}"),
        ));
    }
    if !LATENT_BITS.contains(&latent_bits) {
        return Err(Error::setting(
            "latent_bits",
            format!("latent bits must be between {} and {}, got {latent_bits}", LATENT_BITS.start(), LATENT_BITS.end()),
        ));
    }
    if batch_size == 0 {
        return Err(Error::setting("batch_size", "the batch size must be at least 1"));
    }
    Ok(())
}

/// Compresses `images` losslessly with `model` (the checkpoint `model_id`, which the header
/// records) over `steps` steps; `on_step` is called after each of the `T` network evaluations.
#[allow(clippy::too_many_arguments)]
pub fn compress<B: FastOps>(
    model: &Vdm<B>,
    model_id: &ModelId,
    images: &ImageSet,
    steps: usize,
    latent_bits: u32,
    batch_size: usize,
    device: &B::Device,
    mut on_step: impl FnMut(),
) -> Result<(Vec<u8>, CodecStats)> {
    check_settings(steps, latent_bits, batch_size)?;
    if model_id.checkpoint.as_ref().is_some_and(|p| p.len() > MAX_PATH_BYTES) {
        return Err(Error::setting(
            "checkpoint",
            format!("the checkpoint's path is longer than {MAX_PATH_BYTES} bytes"),
        ));
    }
    if images.is_empty() {
        return Err(Error::Mismatch("there are no images to compress".into()));
    }
    let chain = Chain::new(model, steps, latent_bits)?;
    let shape = images.shape();
    let f: Vec<f64> = images.pixels.iter().map(|&p| vlb::encode(f64::from(p), PIXEL_VALUES)).collect();
    let m = f.len();
    let quantizer = DefaultLeakyQuantizer::new(0..=(chain.bins as i32 - 1));
    let uniform = DefaultUniformModel::new(chain.bins);

    let seed_len = seed_len(m, steps).ok_or_else(|| {
        Error::setting(
            "images",
            format!(
                "{} images over T = {steps} steps are too many for one message; compress fewer at a time",
                images.len()
            ),
        )
    })?;
    check_memory(m, steps, seed_len)?;
    let seed = seed_words(seed_len);
    let mut coder = DefaultAnsCoder::from_binary(seed.clone()).map_err(|e| Error::Corrupt(format!("{e:?}")))?;
    let start_bits = coder.num_valid_bits() as f64;
    let pop = |coder: &mut DefaultAnsCoder, q: BinPosterior| -> Result<u32> {
        coder.decode_symbol(quantizer.quantize(Bins(q))).map(|s| s as u32).map_err(|e| Error::Corrupt(format!("{e:?}")))
    };

    // 1. Pop z_1 ~ q(z_1 | x), then z_s ~ q(z_s | z_t, x) down to z_0 (level i holds z_{i/T}).
    let mut symbols: Vec<Vec<u32>> = vec![Vec::new(); steps + 1];
    let mut z = Vec::with_capacity(m);
    for &fj in &f {
        let s = pop(&mut coder, chain.top(fj))?;
        z.push(bin_value(s, chain.bins, 0.0, 1.0));
        symbols[steps].push(s);
    }
    for i in (1..=steps).rev() {
        let eps = eps_hat(model, &z, shape, chain.gammas[i], batch_size, device);
        for j in 0..m {
            let (mean_p, sd_p) = chain.prior(i, z[j], eps[j]);
            let (mean_q, sd_q) = chain.posterior(i, f[j], z[j]);
            let s = pop(&mut coder, BinPosterior::new(chain.bins, mean_p, sd_p, mean_q, sd_q))?;
            z[j] = bin_value(s, chain.bins, mean_p, sd_p);
            symbols[i - 1].push(s);
        }
        on_step();
    }
    let consumed_seed_words = seed.len() - coder.bulk().len();

    // 2. Push x under p(x | z_0); 3. push the latents under the prior, z_0 first, z_1 last.
    // Within a level, values go in reverse so that the decoder pops them in order.
    let err = |e| Error::Corrupt(format!("{e:?}"));
    for j in (0..m).rev() {
        coder.encode_symbol(images.pixels[j] as usize, decoder_model(&chain.decoder(z[j]))?).map_err(err)?;
    }
    for level in &symbols {
        for &s in level.iter().rev() {
            coder.encode_symbol(s as usize, uniform).map_err(err)?;
        }
    }
    let net_bits = coder.num_valid_bits() as f64 - start_bits;

    // The stack without the bottom seed words no pop reached (the decoder regenerates them).
    let words = coder.into_compressed().map_err(|e| Error::Corrupt(format!("{e:?}")))?;
    let untouched = seed.len() - consumed_seed_words;
    if words[..untouched] != seed[..untouched] {
        return Err(Error::Corrupt("internal error: the coder changed seed words that no pop reached".into()));
    }
    let header = Header {
        model: model_id.clone(),
        steps: steps as u64,
        shape: shape.map(|v| v as u32),
        count: images.len() as u64,
        latent_bits,
        batch_size: batch_size as u64,
        images_sha256: Sha256::digest(&images.pixels).into(),
    };
    let bytes = write_file(&header, untouched as u64, &words[untouched..]);
    let stats = CodecStats {
        net_bits,
        seed_bits: 32.0 * consumed_seed_words as f64,
        file_bits: 8.0 * bytes.len() as f64,
        dims: m,
    };
    Ok((bytes, stats))
}

/// Decompresses a file written by [`compress`] with the same `model` (weight file SHA-256
/// `model_hash`), checking that it was written for this model (and for `expected_steps`, if
/// given) and that the images come back bit-identical. `on_step` is called after each network
/// evaluation.
pub fn decompress<B: FastOps>(
    model: &Vdm<B>,
    model_hash: &str,
    bytes: &[u8],
    expected_steps: Option<usize>,
    device: &B::Device,
    mut on_step: impl FnMut(),
) -> Result<ImageSet> {
    let (header, untouched, stored) = read_file(bytes)?;
    if let Some(t) = expected_steps.filter(|&t| t as u64 != header.steps) {
        return Err(Error::Mismatch(format!("the file was compressed with T = {} steps, not {t}", header.steps)));
    }
    if header.model.sha256 != model_hash {
        return Err(Error::Mismatch(format!(
            "the file was compressed with another model, {}, not this one (weights SHA-256 {model_hash}); decompress with the checkpoint it was written with",
            header.model
        )));
    }
    let steps =
        usize::try_from(header.steps).map_err(|_| Error::Corrupt("the file's T does not fit this machine".into()))?;
    let batch_size = usize::try_from(header.batch_size)
        .map_err(|_| Error::Corrupt("the file's batch size does not fit this machine".into()))?;
    check_settings(steps, header.latent_bits, batch_size)
        .map_err(|e| Error::Corrupt(format!("the file's header is invalid: {e}")))?;
    let shape = header.shape.map(|v| v as usize);
    crate::data::check_image_shape(shape).map_err(|e| Error::Corrupt(format!("the file's header is invalid: {e}")))?;
    if shape[0] != model.channels() {
        return Err(Error::Mismatch(format!(
            "the file holds {}-channel images; this model takes {}",
            shape[0],
            model.channels()
        )));
    }
    let d = shape.iter().product::<usize>();
    let m = usize::try_from(header.count)
        .ok()
        .and_then(|n| n.checked_mul(d))
        .ok_or_else(|| Error::Corrupt("the file's image count is invalid".into()))?;
    let seed_len = seed_len(m, steps)
        .filter(|&n| untouched <= n as u64)
        .ok_or_else(|| Error::Corrupt("the file's header is corrupt (image count, steps or seed length)".into()))?;
    check_memory(m, steps, seed_len)?;
    let mut words = seed_words(untouched as usize);
    words.extend_from_slice(&stored);
    let mut coder = DefaultAnsCoder::from_compressed(words)
        .map_err(|_| Error::Corrupt("the compressed data is malformed (its last word is zero)".into()))?;

    let chain = Chain::new(model, steps, header.latent_bits)?;
    let quantizer = DefaultLeakyQuantizer::new(0..=(chain.bins as i32 - 1));
    let uniform = DefaultUniformModel::new(chain.bins);
    let err = |e| Error::Corrupt(format!("the compressed data is malformed: {e:?}"));

    // Pop z_1 and the z_s under the prior, keeping ε̂ for the posterior pushes.
    let mut symbols: Vec<Vec<u32>> = vec![Vec::with_capacity(m); steps + 1];
    for _ in 0..m {
        symbols[steps].push(coder.decode_symbol(uniform).map_err(err)? as u32);
    }
    let mut z: Vec<f64> = symbols[steps].iter().map(|&s| bin_value(s, chain.bins, 0.0, 1.0)).collect();
    let mut latents = vec![Vec::new(); steps + 1]; // z at each level, for the posterior pushes
    let mut predictions = vec![Vec::new(); steps + 1];
    for i in (1..=steps).rev() {
        let eps = eps_hat(model, &z, shape, chain.gammas[i], batch_size, device);
        let mut below = Vec::with_capacity(m);
        for j in 0..m {
            let s = coder.decode_symbol(uniform).map_err(err)? as u32;
            let (mean_p, sd_p) = chain.prior(i, z[j], eps[j]);
            below.push(bin_value(s, chain.bins, mean_p, sd_p));
            symbols[i - 1].push(s);
        }
        latents[i] = std::mem::replace(&mut z, below);
        predictions[i] = eps;
        on_step();
    }
    let mut pixels = Vec::with_capacity(m);
    for &zj in &z {
        pixels.push(coder.decode_symbol(decoder_model(&chain.decoder(zj))?).map_err(err)? as u8);
    }
    if <[u8; 32]>::from(Sha256::digest(&pixels)) != header.images_sha256 {
        return Err(Error::Mismatch("the decoded images do not match the file's checksum: the file was written by a build or backend that evaluates the network differently".into()));
    }

    // Push the latents back under the posterior, z_0 first, in the reverse of the encoder's pops.
    let f: Vec<f64> = pixels.iter().map(|&p| vlb::encode(f64::from(p), PIXEL_VALUES)).collect();
    let push = |coder: &mut DefaultAnsCoder, s: u32, q: BinPosterior| {
        coder.encode_symbol(s as i32, quantizer.quantize(Bins(q))).map_err(|e| Error::Corrupt(format!("{e:?}")))
    };
    for i in 1..=steps {
        for j in (0..m).rev() {
            let (mean_p, sd_p) = chain.prior(i, latents[i][j], predictions[i][j]);
            let (mean_q, sd_q) = chain.posterior(i, f[j], latents[i][j]);
            push(&mut coder, symbols[i - 1][j], BinPosterior::new(chain.bins, mean_p, sd_p, mean_q, sd_q))?;
        }
        latents[i] = Vec::new();
        predictions[i] = Vec::new();
    }
    for j in (0..m).rev() {
        push(&mut coder, symbols[steps][j], chain.top(f[j]))?;
    }
    let rest =
        coder.into_binary().map_err(|_| Error::Corrupt("decoding did not return the stack to its seed".into()))?;
    if rest.len() != seed_len || rest != seed_words(seed_len) {
        return Err(Error::Corrupt("decoding did not return the stack to its seed: the file is corrupt".into()));
    }
    Ok(ImageSet::new(pixels, shape))
}

/// `magic, version, header, untouched seed words, stored words, SHA-256 of all before it`.
fn write_file(header: &Header, untouched: u64, words: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + 4 * words.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let ModelId { sha256, step, checkpoint } = &header.model;
    for text in [sha256, checkpoint.as_deref().unwrap_or_default()] {
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(&step.unwrap_or(u64::MAX).to_le_bytes());
    for v in [header.steps, header.count, header.batch_size, untouched, words.len() as u64] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in header.shape.iter().chain([&header.latent_bits]) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&header.images_sha256);
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// Reads what `write_file` wrote (the format [`compress`] writes), refusing a file that is not one, has another version, or is
/// truncated or corrupt.
pub fn read_file(bytes: &[u8]) -> Result<(Header, u64, Vec<u32>)> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Error::Corrupt("not a vdm compressed file (wrong magic bytes)".into()));
    }
    let mut at = MAGIC.len();
    let mut take = |n: usize| -> Result<&[u8]> {
        let part = bytes.get(at..at + n).ok_or_else(|| {
            Error::Corrupt(format!("the file is truncated: {} bytes, ends inside its header at byte {at}", bytes.len()))
        })?;
        at += n;
        Ok(part)
    };
    let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    let u64_at = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let version = u32_at(take(4)?);
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(Error::Corrupt(format!(
            "the file has format version {version}; this build reads versions 1 to {FORMAT_VERSION}"
        )));
    }
    let mut text = |what: &str, max: usize| -> Result<String> {
        let len = u32_at(take(4)?) as usize;
        if len > max {
            return Err(Error::Corrupt(format!("the file's header is corrupt ({what} length)")));
        }
        String::from_utf8(take(len)?.to_vec())
            .map_err(|_| Error::Corrupt(format!("the file's header is corrupt ({what})")))
    };
    let sha256 = text("model hash", 128)?;
    let model = match version {
        1 => ModelId::weights(sha256),
        _ => {
            let checkpoint = Some(text("checkpoint path", MAX_PATH_BYTES)?).filter(|p| !p.is_empty());
            let step = Some(u64_at(take(8)?)).filter(|&s| s != u64::MAX);
            ModelId { sha256, step, checkpoint }
        }
    };
    let [steps, count, batch_size, untouched, word_count] = [(); 5].map(|()| take(8).map(u64_at));
    let (steps, count, batch_size, untouched, word_count) = (steps?, count?, batch_size?, untouched?, word_count?);
    let [c, h, w, latent_bits] = [(); 4].map(|()| take(4).map(u32_at));
    let shape = [c?, h?, w?];
    let latent_bits = latent_bits?;
    let images_sha256: [u8; 32] = take(32)?.try_into().expect("32 bytes");
    let header_end = at;
    let expected = (word_count as u128) * 4 + 32 + header_end as u128;
    if bytes.len() as u128 != expected {
        return Err(Error::Corrupt(format!(
            "the file is truncated or has trailing data: {} bytes, its header says {expected}",
            bytes.len()
        )));
    }
    let body_end = bytes.len() - 32;
    if Sha256::digest(&bytes[..body_end])[..] != bytes[body_end..] {
        return Err(Error::Corrupt("the file is corrupt: its checksum does not match its contents".into()));
    }
    let words = bytes[header_end..body_end].chunks_exact(4).map(u32_at).collect();
    Ok((Header { model, steps, shape, count, latent_bits, batch_size, images_sha256 }, untouched, words))
}

/// The most seed words one message may use (4 GiB): bounds what a file can make the decoder allocate.
const MAX_SEED_WORDS: u64 = 1 << 30;
