//! Datasets of 8-bit images, held in memory as bytes (`[N, C, H, W]`, one copy) with their class
//! labels where the source has them: the bundled digits, IDX files (MNIST family), CIFAR-10's
//! binary batches, folders of PNG images, NumPy arrays, pixel CSV files, and synthetic
//! discretised Gaussians whose exact NLL is known. [`DataConfig`] is a run's `[data]` table.

pub mod cifar;
mod csv;
mod digits;
mod gaussian;
pub mod idx;
pub mod npy;
pub mod png;
mod source;

use std::io::Read;
use std::path::Path;

use vdm_core::rng::{derive_seed, SplitMix64};

pub use crate::error::{DataError, Location};

pub use csv::{load_csv, CsvLayout};
pub use digits::{digits, DIGITS_COUNT};
pub use gaussian::DiscretisedGaussianImages;
pub use source::{CsvSource, DataConfig, GaussianSource, DATA_EXAMPLES, FASHION_MNIST_DIR};

/// A set of images with 8-bit pixel values, stored `[N, C, H, W]` row-major, with class labels
/// where the source has them.
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
    /// One class label per image, where the source has labels.
    pub labels: Option<Vec<u32>>,
    /// The names of the classes, where known (label `k` is `class_names[k]`).
    pub class_names: Vec<String>,
}

/// The largest accepted number of values per image (a 4096×4096 RGB image has 50M).
pub const MAX_FEATURES: usize = 1 << 26;

/// Checks that an image shape `[C, H, W]` is non-empty and of a sane size.
pub fn check_image_shape([c, h, w]: [usize; 3]) -> Result<(), DataError> {
    if c == 0 || h == 0 || w == 0 {
        return Err(DataError::Invalid(format!(
            "images must have at least one channel, row and column, got {c}x{h}x{w}"
        )));
    }
    if c.checked_mul(h).and_then(|v| v.checked_mul(w)).is_none_or(|v| v > MAX_FEATURES) {
        return Err(DataError::Invalid(format!(
            "images of {c}x{h}x{w} values are beyond the supported {MAX_FEATURES} values per image"
        )));
    }
    Ok(())
}

impl ImageSet {
    /// Unlabelled images of `[C, H, W]` from their pixels.
    pub fn new(pixels: Vec<u8>, [channels, height, width]: [usize; 3]) -> Self {
        Self { pixels, channels, height, width, labels: None, class_names: Vec::new() }
    }

    /// The same images with one label per image.
    pub fn with_labels(mut self, labels: Vec<u32>, class_names: Vec<String>) -> Self {
        debug_assert_eq!(labels.len(), self.len());
        self.labels = Some(labels);
        self.class_names = class_names;
        self
    }

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
    /// The number of classes: the named ones, or one more than the largest label.
    pub fn num_classes(&self) -> usize {
        let largest = self.labels.as_ref().and_then(|l| l.iter().max()).map_or(0, |&m| m as usize + 1);
        largest.max(self.class_names.len())
    }
    /// The images at `indices`, in order, with their labels.
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let pixels = indices.iter().flat_map(|&i| self.image(i).iter().copied()).collect();
        let labels = self.labels.as_ref().map(|l| indices.iter().map(|&i| l[i]).collect());
        ImageSet {
            pixels,
            channels: self.channels,
            height: self.height,
            width: self.width,
            labels,
            class_names: self.class_names.clone(),
        }
    }

    /// Appends `other`'s images (of the same shape, labelled alike).
    pub fn append(&mut self, other: ImageSet) {
        debug_assert_eq!(self.shape(), other.shape());
        self.pixels.extend_from_slice(&other.pixels);
        match (&mut self.labels, other.labels) {
            (Some(a), Some(b)) => a.extend(b),
            (labels, _) => *labels = None,
        }
    }

    /// A random split into `(train, test)` with `test_size` test images, reproducible from
    /// `seed`. The training images keep their order and their memory (no second copy of the
    /// set is made: only the test images are copied out).
    pub fn split(mut self, test_size: usize, seed: u64) -> Result<(ImageSet, ImageSet), DataError> {
        let n = self.len();
        if test_size == 0 || test_size >= n {
            return Err(DataError::Invalid(format!(
                "data.test_size must be at least 1 and leave at least one training image (the set has {n} images), got {test_size}"
            )));
        }
        let mut is_test = vec![false; n];
        let mut test_indices = permutation(n, seed)[..test_size].to_vec();
        test_indices.iter().for_each(|&i| is_test[i] = true);
        test_indices.sort_unstable();
        let test = self.select(&test_indices);
        // Compact the training images to the front, in place.
        let d = self.features();
        let mut kept = 0;
        for i in 0..n {
            if !is_test[i] {
                self.pixels.copy_within(i * d..(i + 1) * d, kept * d);
                if let Some(labels) = &mut self.labels {
                    labels[kept] = labels[i];
                }
                kept += 1;
            }
        }
        self.pixels.truncate(kept * d);
        self.pixels.shrink_to_fit();
        if let Some(labels) = &mut self.labels {
            labels.truncate(kept);
        }
        Ok((self, test))
    }

    /// Mirrors image `i` left to right, in place.
    pub fn flip_horizontally(&mut self, i: usize) {
        let (w, d) = (self.width, self.features());
        for row in self.pixels[i * d..(i + 1) * d].chunks_exact_mut(w) {
            row.reverse();
        }
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

/// The images of batch `step` (`batch_size` of them, 0-based step) when every epoch visits all `n`
/// images once: consecutive slices of epoch `e`'s permutation, drawn from
/// `derive_seed(seed, stream, e)`; a batch that straddles two epochs takes the end of one and the
/// start of the next.
pub fn epoch_batch(n: usize, batch_size: usize, step: usize, seed: u64, stream: u64) -> Vec<usize> {
    let mut order: Option<(usize, Vec<usize>)> = None; // the current epoch's permutation
    (step * batch_size..(step + 1) * batch_size)
        .map(|position| {
            let (epoch, offset) = (position / n, position % n);
            let permuted = match &order {
                Some((e, p)) if *e == epoch => p,
                _ => &order.insert((epoch, permutation(n, derive_seed(seed, stream, epoch as u64)))).1,
            };
            permuted[offset]
        })
        .collect()
}

/// A file's bytes, gunzipped when its name ends in `.gz`.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DataError::malformed(path, Location::File, format!("not a valid gzip file ({e})")))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

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
