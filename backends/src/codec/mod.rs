//! Lossless compression with a trained diffusion model (VDM or DDPM): bits-back ANS over the
//! `T`-step latent chain in Bit-Swap order (Kingma, Abbeel & Ho 2019; `bitswap.rs`), with
//! `constriction`'s stack coder.
//!
//! Images are coded in batches one after another on one stack, each batch level by level with one
//! batched network evaluation per level. The net codelength of a batch is
//! `−log p(x, z) + log q(z | x)`, whose expectation is the `T`-step negative VLB; the file adds the
//! seed bits the first batch's first pops consumed and a header of about 100 bytes
//! ([`format`]), and both are reported ([`CodecStats`]).
//!
//! The stack starts on pseudo-random seed words that the decoder regenerates; the file stores the
//! stack without the seed words no pop reached. Batches are coded from the last images to the
//! first, so that the decoder, which pops the last batch first, hands the images over in order, a
//! batch at a time ([`decompress_into`]). Encoder and decoder must compute every distribution bit
//! for bit alike: the network runs on the same batches in the same order on both sides, all other
//! arithmetic is `f64` on the host, and the file carries a checksum of the images, so a decoder
//! that computed differently (another binary or backend) reports it instead of returning wrong
//! images.

mod bitswap;
mod format;
mod images;
mod model;

use std::ops::Range;

use burn::tensor::{Tensor, TensorData};
use sha2::{Digest, Sha256};
use vdm_core::rng::SplitMix64;

pub use bitswap::{batch_count, batches};
pub use format::{read_file, Header, Message, ModelId, FORMAT_VERSION};
pub use images::{Images, PngFiles};
pub use model::{ChainSpec, Codable, Decoder};

use crate::config::MAX_TIME_STEPS;
use crate::data::ImageSet;
use crate::error::{Error, Result};
use crate::memory;
use crate::ops::FastOps;
use crate::sample::GridPoint;
use crate::transfer::{download, upload};
use bitswap::{Chain, Coder};
use format::{recorded_hash, write_file, CHECKSUM_BYTES, MAX_PATH_BYTES};

/// Latent precisions accepted: `2^bits` bins per standard deviation of each level's narrower
/// distribution.
pub const LATENT_BITS: std::ops::RangeInclusive<u32> = 1..=12;
/// The latent precision `vdm compress` uses unless told otherwise: 2 bins per standard deviation
/// gave the smallest files on the digits at T = 10, 100 and 1000 (docs/results.md).
pub const DEFAULT_LATENT_BITS: u32 = 1;
/// The seed of the initial stack's pseudo-random words (fixed: the decoder regenerates them).
const SEED: u64 = 0x5eed_b175_bac4;

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

    /// The file's size per dimension, the initial bits and the header included.
    pub fn used_bpd(&self) -> f64 {
        self.file_bits / self.dims as f64
    }
}

/// The network evaluations coding `count` images with `model` over `steps` steps takes (encoding
/// and decoding alike): [`ChainSpec::evaluations`] per batch ([`batches`]).
pub fn network_evaluations<B: FastOps, M: Codable<B>>(
    model: &M,
    count: usize,
    steps: usize,
    batch_size: usize,
) -> Result<usize> {
    Ok(bitswap::batch_count(count, batch_size).saturating_mul(model.chain(steps)?.evaluations()))
}

/// The images of coding batch `range` (batches are coded from the last images to the first).
fn images_of(range: Range<usize>, count: usize) -> Range<usize> {
    count - range.end..count - range.start
}

/// The `ε̂` of `model`'s reverse mean for latents `z` (images of `shape`, flattened) at `at`, in
/// batches of `batch_size`.
fn reverse_eps<B: FastOps, M: Codable<B>>(
    model: &M,
    z: &[f64],
    shape: [usize; 3],
    at: GridPoint,
    batch_size: usize,
    device: &B::Device,
) -> Vec<f32> {
    let d = shape.iter().product::<usize>();
    let mut out = Vec::with_capacity(z.len());
    for chunk in z.chunks(batch_size * d) {
        let n = chunk.len() / d;
        let values: Vec<f32> = chunk.iter().map(|&v| v as f32).collect();
        let input: Tensor<B, 4> = upload(TensorData::new(values, [n, shape[0], shape[1], shape[2]]), device);
        let prediction = model.predict(input, at);
        out.extend(download(prediction.reverse_mean_eps.unwrap_or(prediction.eps)).iter::<f32>());
    }
    out
}

fn seed_words(count: usize) -> Vec<u64> {
    let mut rng = SplitMix64::new(SEED);
    (0..count).map(|_| rng.next_u64()).collect()
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
/// records) over `steps` steps, `batch_size` images per network evaluation, reading the images a
/// batch at a time (twice: once for their checksum, in order, then as they are coded);
/// `on_step(images)` is called after each network evaluation with the images it evaluated
/// ([`network_evaluations`] calls, `count ×` [`ChainSpec::evaluations`] images in all: batches
/// differ in size, so progress is measured in images).
#[allow(clippy::too_many_arguments)]
pub fn compress<B: FastOps, M: Codable<B>>(
    model: &M,
    model_id: &ModelId,
    images: &(impl Images + ?Sized),
    steps: usize,
    latent_bits: u32,
    batch_size: usize,
    device: &B::Device,
    mut on_step: impl FnMut(usize),
) -> Result<(Vec<u8>, CodecStats)> {
    check_settings(steps, latent_bits, batch_size)?;
    if model_id.checkpoint.as_ref().is_some_and(|p| p.len() > MAX_PATH_BYTES) {
        return Err(Error::setting(
            "checkpoint",
            format!("the checkpoint's path is longer than {MAX_PATH_BYTES} bytes"),
        ));
    }
    let (count, shape) = (images.count(), images.shape());
    if count == 0 {
        return Err(Error::Mismatch("there are no images to compress".into()));
    }
    let chain = Chain::new(model.chain(steps)?, latent_bits)?;
    let d = shape.iter().product::<usize>();
    let mut checksum = Sha256::new();
    for start in (0..count).step_by(batch_size) {
        checksum.update(images.read(start..(start + batch_size).min(count))?);
    }
    let seed = seed_words(bitswap::seed_len(batch_size.min(count) * d));
    let mut coder = Coder::from_binary(seed.clone()).map_err(|e| Error::Corrupt(format!("{e:?}")))?;
    let start_bits = coder.num_valid_bits() as f64;
    let mut lowest = seed.len();
    for range in batches(count, batch_size) {
        let pixels = images.read(images_of(range, count))?;
        bitswap::encode_batch(
            &chain,
            &mut coder,
            seed.len(),
            &pixels,
            |z, i| {
                let eps = reverse_eps(model, z, shape, chain.level(i), batch_size, device);
                on_step(z.len() / d);
                eps
            },
            |coder| lowest = lowest.min(coder.bulk().len()),
        )?;
        if lowest == 0 {
            return Err(Error::Corrupt("internal error: a batch's pops exhausted the seed".into()));
        }
    }
    let net_bits = coder.num_valid_bits() as f64 - start_bits;

    // The stack without the bottom seed words no pop reached (the decoder regenerates them).
    let words = coder.into_compressed().map_err(|e| Error::Corrupt(format!("{e:?}")))?;
    if words[..lowest] != seed[..lowest] {
        return Err(Error::Corrupt("internal error: the coder changed seed words that no pop reached".into()));
    }
    let header = Header {
        model: ModelId { sha256: recorded_hash(&model_id.sha256), ..model_id.clone() },
        steps: steps as u64,
        shape: shape.map(|v| v as u32),
        count: count as u64,
        latent_bits,
        batch_size: batch_size as u64,
        images_checksum: checksum.finalize()[..CHECKSUM_BYTES].try_into().expect("8 bytes"),
    };
    let bytes = write_file(&Message { header, untouched: lowest as u64, words: words[lowest..].to_vec() });
    let stats = CodecStats {
        net_bits,
        seed_bits: 64.0 * (seed.len() - lowest) as f64,
        file_bits: 8.0 * bytes.len() as f64,
        dims: count * d,
    };
    Ok((bytes, stats))
}

/// Decompresses a file written by [`compress`] with the same `model` (weight file SHA-256
/// `model_hash`) into memory: [`decompress_into`], collected.
pub fn decompress<B: FastOps, M: Codable<B>>(
    model: &M,
    model_hash: &str,
    bytes: &[u8],
    expected_steps: Option<usize>,
    device: &B::Device,
    on_step: impl FnMut(usize),
) -> Result<ImageSet> {
    let header = read_file(bytes)?.header;
    let (count, shape) = (header.count as u128, header.shape.map(u128::from));
    memory::check(
        &format!("decoding {count} images of {}x{}x{}", shape[0], shape[1], shape[2]),
        (count * shape.iter().product::<u128>()).min(u128::from(u64::MAX)) as u64,
        "the file's header claims more images than this machine can hold",
    )?;
    let mut pixels = Vec::new();
    let header = decompress_into(model, model_hash, bytes, expected_steps, device, on_step, |_, batch| {
        pixels.extend_from_slice(batch);
        Ok(())
    })?;
    Ok(ImageSet::new(pixels, header.shape.map(|v| v as usize)))
}

/// Decompresses a file written by [`compress`] with the same `model` (weight file SHA-256
/// `model_hash`), checking that it was written for this model (and for `expected_steps`, if
/// given), and hands the images to `on_images(first, pixels)` a batch at a time, in order, holding
/// no more than one batch. The images' checksum is verified once all are decoded: on an error,
/// discard what was handed over. `on_step(images)` is called after each network evaluation, as
/// by [`compress`].
#[allow(clippy::too_many_arguments)]
pub fn decompress_into<B: FastOps, M: Codable<B>>(
    model: &M,
    model_hash: &str,
    bytes: &[u8],
    expected_steps: Option<usize>,
    device: &B::Device,
    mut on_step: impl FnMut(usize),
    mut on_images: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<Header> {
    let Message { header, untouched, words: stored } = read_file(bytes)?;
    if let Some(t) = expected_steps.filter(|&t| t as u64 != header.steps) {
        return Err(Error::Mismatch(format!("the file was compressed with T = {} steps, not {t}", header.steps)));
    }
    if header.model.sha256 != recorded_hash(model_hash) {
        return Err(Error::Mismatch(format!(
            "the file was compressed with another model, {}, not this one (weights SHA-256 {model_hash}); decompress with the checkpoint it was written with",
            header.model
        )));
    }
    let invalid = |e: &dyn std::fmt::Display| Error::Corrupt(format!("the file's header is invalid: {e}"));
    let steps =
        usize::try_from(header.steps).map_err(|_| Error::Corrupt("the file's T does not fit this machine".into()))?;
    let batch_size = usize::try_from(header.batch_size)
        .map_err(|_| Error::Corrupt("the file's batch size does not fit this machine".into()))?;
    if !(1..=MAX_TIME_STEPS).contains(&steps) || batch_size == 0 {
        return Err(invalid(&format!("T = {steps}, batch size {batch_size}")));
    }
    let shape = header.shape.map(|v| v as usize);
    crate::data::check_image_shape(shape).map_err(|e| invalid(&e))?;
    if shape[0] != model.channels() {
        return Err(Error::Mismatch(format!(
            "the file holds {}-channel images; this model takes {}",
            shape[0],
            model.channels()
        )));
    }
    check_settings(steps, header.latent_bits, batch_size).map_err(|e| invalid(&e))?;
    let d = shape.iter().product::<usize>();
    let count = usize::try_from(header.count)
        .ok()
        .filter(|n| n.checked_mul(d).is_some() && *n > 0)
        .ok_or_else(|| Error::Corrupt("the file's image count is invalid".into()))?;
    let seed_len = bitswap::seed_len(batch_size.min(count) * d);
    if untouched > seed_len as u64 {
        return Err(Error::Corrupt("the file's header is corrupt (seed length)".into()));
    }
    let chain = Chain::new(model.chain(steps)?, header.latent_bits)?;
    let mut words = seed_words(untouched as usize);
    words.extend_from_slice(&stored);
    let mut coder = Coder::from_compressed(words)
        .map_err(|_| Error::Corrupt("the compressed data is malformed (its last word is zero)".into()))?;
    let mut checksum = Sha256::new();
    for range in batches(count, batch_size).into_iter().rev() {
        let range = images_of(range, count);
        let pixels = bitswap::decode_batch(&chain, &mut coder, seed_len, range.len() * d, |z, i| {
            let eps = reverse_eps(model, z, shape, chain.level(i), batch_size, device);
            on_step(z.len() / d);
            eps
        })?;
        checksum.update(&pixels);
        on_images(range.start, &pixels)?;
    }
    if checksum.finalize()[..CHECKSUM_BYTES] != header.images_checksum {
        return Err(Error::Mismatch("the decoded images do not match the file's checksum: the file was written by a build or backend that evaluates the network differently".into()));
    }
    let rest =
        coder.into_binary().map_err(|_| Error::Corrupt("decoding did not return the stack to its seed".into()))?;
    if rest.len() != seed_len || rest != seed_words(seed_len) {
        return Err(Error::Corrupt("decoding did not return the stack to its seed: the file is corrupt".into()));
    }
    Ok(header)
}
