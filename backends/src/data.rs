//! Datasets of 8-bit images: the bundled digits, pixel CSV files, and synthetic discretised
//! Gaussians whose exact NLL is known.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vdm_core::rng::SplitMix64;

/// scikit-learn's 8×8 digits (see `data/README.md`), gzipped CSV.
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

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

impl ImageSet {
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
                "test_size must be between 1 and {} (the set has {} images), got {test_size}",
                self.len() - 1,
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

/// The layout of a pixel CSV: one image per line, `C·H·W` integers in `0..=max_value`
/// (channel-major, then row-major), optionally followed by a label column that is ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvLayout {
    /// Channels `C`.
    pub channels: usize,
    /// Height `H`.
    pub height: usize,
    /// Width `W`.
    pub width: usize,
    /// The largest grey level; values are rescaled to `round(255 v / max_value)`.
    pub max_value: u32,
    /// Whether each line ends with one extra (label) column.
    #[serde(default)]
    pub label_column: bool,
}

impl CsvLayout {
    /// The digits layout: 1×8×8, grey levels 0–16, a label column.
    pub const DIGITS: Self = Self { channels: 1, height: 8, width: 8, max_value: 16, label_column: true };
}

/// The bundled digits: 1797 images of 1×8×8.
pub fn digits() -> ImageSet {
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .expect("the bundled digits.csv.gz is valid gzip");
    parse_csv(&text, &CsvLayout::DIGITS, Path::new("<bundled digits.csv.gz>")).expect("the bundled digits parse")
}

/// Reads a pixel CSV (gzipped if the name ends in `.gz`).
pub fn load_csv(path: &Path, layout: &CsvLayout) -> Result<ImageSet, DataError> {
    let io = |source| DataError::Io { path: path.to_owned(), source };
    let bytes = std::fs::read(path).map_err(io)?;
    let mut text = String::new();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(bytes.as_slice()).read_to_string(&mut text).map_err(io)?;
    } else {
        text = String::from_utf8(bytes).map_err(|e| DataError::Malformed {
            path: path.to_owned(),
            line: 0,
            message: format!("not UTF-8 text ({e})"),
        })?;
    }
    parse_csv(&text, layout, path)
}

fn parse_csv(text: &str, layout: &CsvLayout, path: &Path) -> Result<ImageSet, DataError> {
    if layout.channels == 0 || layout.height == 0 || layout.width == 0 || layout.max_value == 0 {
        return Err(DataError::Invalid(format!("{}: channels, height, width and max_value must be positive", path.display())));
    }
    let d = layout.channels * layout.height * layout.width;
    let columns = d + usize::from(layout.label_column);
    let mut pixels = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |message: String| DataError::Malformed { path: path.to_owned(), line: i + 1, message };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != columns {
            return Err(bad(format!("expected {columns} comma-separated values, found {}", fields.len())));
        }
        for (col, field) in fields[..d].iter().enumerate() {
            let v: u32 = field.parse().map_err(|_| bad(format!("column {}: `{field}` is not a non-negative integer", col + 1)))?;
            if v > layout.max_value {
                return Err(bad(format!("column {}: value {v} exceeds max_value {}", col + 1, layout.max_value)));
            }
            pixels.push(((255 * v + layout.max_value / 2) / layout.max_value) as u8);
        }
    }
    if pixels.is_empty() {
        return Err(DataError::Malformed { path: path.to_owned(), line: 0, message: "no images".into() });
    }
    Ok(ImageSet { pixels, channels: layout.channels, height: layout.height, width: layout.width })
}

/// Images whose pixels are independent discretised Gaussians: pixel `d` is
/// `clamp(round(μ_d + s_d n), 0, 255)`, `n ~ N(0, 1)`, with `μ_d`, `s_d` a smooth pattern.
/// Its exact NLL is [`DiscretisedGaussianImages::entropy_bits`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscretisedGaussianImages {
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// Standard deviation of every pixel, in pixel units.
    pub std: f64,
}

impl DiscretisedGaussianImages {
    /// Per-pixel means: a diagonal ramp from 64 to 192.
    pub fn means(&self) -> Vec<f64> {
        let (h, w) = (self.height as f64, self.width as f64);
        let mut m = Vec::with_capacity(self.channels * self.height * self.width);
        for c in 0..self.channels {
            for y in 0..self.height {
                for x in 0..self.width {
                    let ramp = (y as f64 + x as f64 + c as f64) / (h + w + self.channels as f64 - 3.0).max(1.0);
                    m.push(64.0 + 128.0 * ramp);
                }
            }
        }
        m
    }

    /// The probability of each value `0..=255` for a pixel with mean `mu`.
    fn pmf(&self, mu: f64) -> Vec<f64> {
        let cdf = |x: f64| 0.5 * libm::erfc(-(x - mu) / (self.std * std::f64::consts::SQRT_2));
        (0..256)
            .map(|k| {
                let lo = if k == 0 { 0.0 } else { cdf(k as f64 - 0.5) };
                let hi = if k == 255 { 1.0 } else { cdf(k as f64 + 0.5) };
                hi - lo
            })
            .collect()
    }

    /// The exact expected NLL in bits per dimension: the mean over pixels of `−Σ_k P(k) log₂ P(k)`.
    pub fn entropy_bits(&self) -> f64 {
        let means = self.means();
        let total: f64 = means
            .iter()
            .map(|&mu| self.pmf(mu).iter().filter(|&&p| p > 0.0).map(|&p| -p * p.log2()).sum::<f64>())
            .sum();
        total / means.len() as f64
    }

    /// `n` images drawn with `seed`.
    pub fn sample(&self, n: usize, seed: u64) -> ImageSet {
        let mut rng = SplitMix64::new(seed);
        let means = self.means();
        let pixels = (0..n)
            .flat_map(|_| means.iter().map(|&mu| (mu + self.std * rng.normal::<f64>()).round().clamp(0.0, 255.0) as u8).collect::<Vec<_>>())
            .collect();
        ImageSet { pixels, channels: self.channels, height: self.height, width: self.width }
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
