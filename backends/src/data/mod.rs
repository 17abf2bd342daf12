//! Datasets of 8-bit images: the bundled digits, pixel CSV files, and synthetic discretised
//! Gaussians whose exact NLL is known.

mod csv;
mod digits;
mod gaussian;

use std::fmt;
use std::path::PathBuf;

use vdm_core::rng::SplitMix64;

pub use csv::{load_csv, CsvLayout};
pub use digits::{digits, DIGITS_COUNT};
pub use gaussian::DiscretisedGaussianImages;

/// A set of images with 8-bit pixel values, stored `[N, C, H, W]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    /// Pixel values `0..=255`.
    pub pixels: Vec<u8>,
    /// Channels `C`.
    pub channels: usize,
    /// Height `H`.
    pub height: usize,
    /// Width `W`.
    pub width: usize,
}

/// The largest accepted number of values per image (a 4096×4096 RGB image has 50M).
pub const MAX_FEATURES: usize = 1 << 26;

/// Checks that an image shape `[C, H, W]` is non-empty and of a sane size.
pub fn check_image_shape([c, h, w]: [usize; 3]) -> Result<(), String> {
    if c == 0 || h == 0 || w == 0 {
        return Err(format!("images must have at least one channel, row and column, got {c}x{h}x{w}"));
    }
    if c.checked_mul(h).and_then(|v| v.checked_mul(w)).is_none_or(|v| v > MAX_FEATURES) {
        return Err(format!("images of {c}x{h}x{w} values are beyond the supported {MAX_FEATURES} values per image"));
    }
    Ok(())
}

impl ImageSet {
    /// `[C, H, W]`.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }
    /// Values per image, `C · H · W`.
    pub fn features(&self) -> usize {
        self.channels * self.height * self.width
    }
    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len() / self.features()
    }
    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }
    /// Image `i`'s pixels.
    pub fn image(&self, i: usize) -> &[u8] {
        let d = self.features();
        &self.pixels[i * d..(i + 1) * d]
    }
    /// The images at `indices`, in order.
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let pixels = indices.iter().flat_map(|&i| self.image(i).iter().copied()).collect();
        ImageSet { pixels, ..self.clone_shape() }
    }
    fn clone_shape(&self) -> ImageSet {
        ImageSet { pixels: Vec::new(), channels: self.channels, height: self.height, width: self.width }
    }

    /// A shuffled split into `(train, test)` with `test_size` test images, reproducible from `seed`.
    pub fn split(&self, test_size: usize, seed: u64) -> Result<(ImageSet, ImageSet), DataError> {
        if test_size == 0 || test_size >= self.len() {
            return Err(DataError::Invalid(format!(
                "data.test_size must be at least 1 and leave at least one training image (the set has {} images), got {test_size}",
                self.len()
            )));
        }
        let order = permutation(self.len(), seed);
        let (test, train) = order.split_at(test_size);
        Ok((self.select(train), self.select(test)))
    }
}

/// A Fisher–Yates permutation of `0..n` from `seed`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// What went wrong reading data.
#[derive(Debug)]
pub enum DataError {
    /// The file could not be read.
    Io { path: PathBuf, source: std::io::Error },
    /// The file was read but its contents are malformed.
    Malformed { path: PathBuf, line: usize, message: String },
    /// The data specification is inconsistent.
    Invalid(String),
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Malformed { path, line, message } => write!(f, "{}: line {line}: {message}", path.display()),
            Self::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for DataError {}

/// Per-pixel independent categorical model fit on `train` with add-`alpha` smoothing over all
/// 256 values: the test set's NLL in bits per dimension. A baseline every image model should beat.
pub fn categorical_baseline_bpd(train: &ImageSet, test: &ImageSet, alpha: f64) -> f64 {
    let d = train.features();
    let mut counts = vec![alpha; d * 256];
    for i in 0..train.len() {
        for (j, &v) in train.image(i).iter().enumerate() {
            counts[j * 256 + v as usize] += 1.0;
        }
    }
    let total = train.len() as f64 + 256.0 * alpha;
    let mut bits = 0.0;
    for i in 0..test.len() {
        for (j, &v) in test.image(i).iter().enumerate() {
            bits -= (counts[j * 256 + v as usize] / total).log2();
        }
    }
    bits / (test.len() * d) as f64
}
