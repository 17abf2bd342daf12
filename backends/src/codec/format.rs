//! The compressed file: a small header, the stack's words, a checksum.
//!
//! Format 4 (written by this build; integers as LEB128 varints):
//!
//! `magic (8) · version (u32) · weights SHA-256 (32) · checkpoint path (length, bytes) ·
//! step + 1 (0: none) · T · images · batch size · C · H · W · latent bits · untouched seed words ·
//! stored words · images checksum (8) · words (u64 each) · file checksum (8)`,
//!
//! the checksums being the first 8 bytes of SHA-256 (of the pixels; of everything before). Older
//! formats are refused with the last commit that decodes them: 1 and 2 (one message coded level by
//! level, before Bit-Swap), 3 (Bit-Swap on a stack of 32-bit words at 32-bit precision, whose ANS
//! overhead grew with `T`).

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The version of the compressed format this build writes and reads.
pub const FORMAT_VERSION: u32 = 4;
/// The last commit of vdm-rs that decodes formats 1 and 2.
const LAST_LEGACY_COMMIT: &str = "f32efff";
/// The last commit of vdm-rs that decodes format 3.
const LAST_FORMAT_3_COMMIT: &str = "e417b4c";
/// The longest checkpoint path a header holds, in bytes.
pub(crate) const MAX_PATH_BYTES: usize = 4096;
const MAGIC: &[u8; 8] = b"VDM-BBAN";
/// Bytes of the truncated SHA-256 checksums.
pub const CHECKSUM_BYTES: usize = 8;

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
    /// `log₂` of the bins per standard deviation of a latent's narrower distribution.
    pub latent_bits: u32,
    /// Images per network evaluation (the batches must match between encoder and decoder).
    pub batch_size: u64,
    /// The first 8 bytes of the SHA-256 of the images' pixels, checked after decoding.
    pub images_checksum: [u8; CHECKSUM_BYTES],
}

/// A file's parts: its header, how many bottom seed words the coder never reached (the decoder
/// regenerates them), and the stack's stored words above them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The header.
    pub header: Header,
    /// Seed words below the stored ones.
    pub untouched: u64,
    /// The stored words.
    pub words: Vec<u64>,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes a format-4 file.
pub(crate) fn write_file(message: &Message) -> Vec<u8> {
    let Message { header, untouched, words } = message;
    let mut out = Vec::with_capacity(128 + 8 * words.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let hash = hex_to_bytes(&header.model.sha256);
    out.extend_from_slice(&hash);
    let path = header.model.checkpoint.as_deref().unwrap_or_default();
    put_varint(&mut out, path.len() as u64);
    out.extend_from_slice(path.as_bytes());
    put_varint(&mut out, header.model.step.map_or(0, |s| s + 1));
    let [c, h, w] = header.shape.map(u64::from);
    for v in [header.steps, header.count, header.batch_size, c, h, w, u64::from(header.latent_bits)] {
        put_varint(&mut out, v);
    }
    put_varint(&mut out, *untouched);
    put_varint(&mut out, words.len() as u64);
    out.extend_from_slice(&header.images_checksum);
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest[..CHECKSUM_BYTES]);
    out
}

/// 32 bytes from a 64-digit hex SHA-256 (anything else, e.g. a test's name for a model, is
/// hashed again so that the header stays 32 bytes and still tells models apart).
fn hex_to_bytes(hex: &str) -> [u8; 32] {
    let parsed: Option<Vec<u8>> = (hex.len() == 64)
        .then(|| (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect())
        .flatten();
    match parsed {
        Some(bytes) => bytes.try_into().expect("32 bytes"),
        None => Sha256::digest(hex.as_bytes()).into(),
    }
}

fn bytes_to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 the header records for a model known by `sha256` (itself when it is a hex
/// SHA-256).
pub(crate) fn recorded_hash(sha256: &str) -> String {
    bytes_to_hex(&hex_to_bytes(sha256))
}

/// A cursor over a file's bytes that reports truncation.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let part = self.bytes.get(self.at..self.at.saturating_add(n)).ok_or_else(|| {
            Error::Corrupt(format!(
                "the file is truncated: {} bytes, ends inside its header at byte {}",
                self.bytes.len(),
                self.at
            ))
        })?;
        self.at += n;
        Ok(part)
    }
    fn varint(&mut self, what: &str) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Error::Corrupt(format!("the file's header is corrupt ({what})")))
    }
    fn text(&mut self, len: u64, what: &str) -> Result<String> {
        if len > MAX_PATH_BYTES as u64 {
            return Err(Error::Corrupt(format!("the file's header is corrupt ({what} length)")));
        }
        String::from_utf8(self.take(len as usize)?.to_vec())
            .map_err(|_| Error::Corrupt(format!("the file's header is corrupt ({what})")))
    }
}

/// Reads a compressed file, refusing one that is not a vdm file,
/// has another version, or is truncated or corrupt.
pub fn read_file(bytes: &[u8]) -> Result<Message> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Error::Corrupt("not a vdm compressed file (wrong magic bytes)".into()));
    }
    let mut r = Reader { bytes, at: MAGIC.len() };
    let version = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
    match version {
        FORMAT_VERSION => read_v4(r),
        1 | 2 => Err(Error::Mismatch(format!(
            "the file has format version {version}, written before Bit-Swap coding; this build reads version {FORMAT_VERSION} only: decode it with vdm-rs at commit {LAST_LEGACY_COMMIT} or earlier"
        ))),
        3 => Err(Error::Mismatch(format!(
            "the file has format version 3 (32-bit stack words); this build reads version {FORMAT_VERSION} only: decode it with vdm-rs at commit {LAST_FORMAT_3_COMMIT}"
        ))),
        _ => Err(Error::Corrupt(format!(
            "the file has format version {version}; this build reads version {FORMAT_VERSION}"
        ))),
    }
}

/// Checks the length and the checksum of a file whose header ends at `header_end` and holds
/// `word_count` words, and returns the words.
fn body(bytes: &[u8], header_end: usize, word_count: u64) -> Result<Vec<u64>> {
    let checksum_bytes = CHECKSUM_BYTES;
    let expected = (word_count as u128) * 8 + checksum_bytes as u128 + header_end as u128;
    if bytes.len() as u128 != expected {
        return Err(Error::Corrupt(format!(
            "the file is truncated or has trailing data: {} bytes, its header says {expected}",
            bytes.len()
        )));
    }
    let body_end = bytes.len() - checksum_bytes;
    if Sha256::digest(&bytes[..body_end])[..checksum_bytes] != bytes[body_end..] {
        return Err(Error::Corrupt("the file is corrupt: its checksum does not match its contents".into()));
    }
    Ok(bytes[header_end..body_end]
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect())
}

fn read_v4(mut r: Reader) -> Result<Message> {
    let sha256 = bytes_to_hex(r.take(32)?);
    let path_len = r.varint("checkpoint path length")?;
    let checkpoint = Some(r.text(path_len, "checkpoint path")?).filter(|p| !p.is_empty());
    let step = r.varint("step")?.checked_sub(1);
    let mut fields = [0u64; 9];
    for (v, what) in fields.iter_mut().zip(["T", "images", "batch size", "C", "H", "W", "latent bits", "seed", "words"])
    {
        *v = r.varint(what)?;
    }
    let [steps, count, batch_size, c, h, w, latent_bits, untouched, word_count] = fields;
    let narrow = |v: u64, what: &str| {
        u32::try_from(v).map_err(|_| Error::Corrupt(format!("the file's header is corrupt ({what})")))
    };
    let shape = [narrow(c, "C")?, narrow(h, "H")?, narrow(w, "W")?];
    let latent_bits = narrow(latent_bits, "latent bits")?;
    let images_checksum = r.take(CHECKSUM_BYTES)?.try_into().expect("8 bytes");
    let words = body(r.bytes, r.at, word_count)?;
    let model = ModelId { sha256, step, checkpoint };
    let header = Header { model, steps, shape, count, latent_bits, batch_size, images_checksum };
    Ok(Message { header, untouched, words })
}
