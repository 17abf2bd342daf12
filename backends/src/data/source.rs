//! The `[data]` table of a run: where the images come from, and how they are split.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::npy::{self, NpySource};
use super::{cifar, digits, idx, png, CsvLayout, DataError, DiscretisedGaussianImages, ImageSet, DIGITS_COUNT};
use crate::memory;

/// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Where the images come from. Sources with an official split (IDX, CIFAR-10) keep it; the
/// others hold out `test_size` images chosen at random with the run's seed, or read a separate
/// test file or folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataConfig {
    /// The bundled 8×8 digits (1797 images, labelled 0–9).
    Digits {
        /// Images held out for testing.
        test_size: usize,
    },
    /// A pixel CSV file.
    Csv(CsvSource),
    /// Synthetic images with independent discretised-Gaussian pixels and a known exact NLL.
    Gaussian(GaussianSource),
    /// IDX files (MNIST, Fashion-MNIST, EMNIST, KMNIST): `{prefix}train-images-idx3-ubyte[.gz]`
    /// and `{prefix}t10k-images-idx3-ubyte[.gz]`, with `…-labels-idx1-ubyte[.gz]` where present.
    Idx {
        /// The directory.
        dir: PathBuf,
        /// Prefix of the file names (EMNIST: `emnist-balanced-`).
        #[serde(default)]
        prefix: String,
        /// Transpose every image (EMNIST stores them column by column).
        #[serde(default)]
        transpose: bool,
    },
    /// Fashion-MNIST as installed by Debian's `dataset-fashion-mnist` (IDX, 28×28 grey).
    FashionMnist {
        /// The directory (default: where the Debian package puts it).
        #[serde(default = "fashion_mnist_dir")]
        dir: PathBuf,
    },
    /// CIFAR-10's binary version: `data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`.
    Cifar10 {
        /// The directory.
        dir: PathBuf,
    },
    /// A folder of PNG images, optionally one subfolder per class (see [`super::png`]).
    Png {
        /// The folder.
        dir: PathBuf,
        /// Images held out for testing (or give `test_dir`).
        #[serde(default)]
        test_size: Option<usize>,
        /// A second folder holding the test images.
        #[serde(default)]
        test_dir: Option<PathBuf>,
    },
    /// `uint8` NumPy arrays in a `.npy` file or `.npz` archive (see [`super::npy`]).
    Npy(NpySource),
}

/// A pixel CSV file (see [`CsvLayout`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSource {
    /// The file (`.gz` is decompressed).
    pub path: PathBuf,
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// The largest value; values are rescaled to `0..=255`.
    pub max_value: u32,
    /// Whether each line ends with an integer class label.
    #[serde(default)]
    pub label_column: bool,
    /// Images held out for testing.
    pub test_size: usize,
}

impl CsvSource {
    /// The file's layout.
    pub fn layout(&self) -> CsvLayout {
        CsvLayout {
            channels: self.channels,
            height: self.height,
            width: self.width,
            max_value: self.max_value,
            label_column: self.label_column,
        }
    }
}

/// Synthetic images (see [`DiscretisedGaussianImages`]) and how many to draw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaussianSource {
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// Standard deviation of every pixel, in pixel units.
    pub std: f64,
    /// Training images drawn.
    pub train_size: usize,
    /// Test images drawn.
    pub test_size: usize,
}

impl GaussianSource {
    /// The image distribution.
    pub fn images(&self) -> DiscretisedGaussianImages {
        DiscretisedGaussianImages { channels: self.channels, height: self.height, width: self.width, std: self.std }
    }
}

fn fashion_mnist_dir() -> PathBuf {
    PathBuf::from(FASHION_MNIST_DIR)
}

/// A documented `[data]` table for every source (`vdm config` prints them; a test parses each).
pub const DATA_EXAMPLES: &[&str] = &[
    r#"
## The bundled 8x8 digits (1797 images, 17 grey levels, labels 0-9); test_size are held out.
[data]
kind = "digits"
test_size = 297
"#,
    r#"
## Fashion-MNIST (60,000 + 10,000 images of 28x28 grey, labelled), official split, from Debian's
## package: `apt-get install dataset-fashion-mnist` (dir is optional; this is the default).
[data]
kind = "fashion_mnist"
dir = "/usr/share/datasets/fashion-mnist"
"#,
    r#"
## IDX files (MNIST, EMNIST, KMNIST): dir holds {prefix}train-images-idx3-ubyte[.gz] and
## {prefix}t10k-images-idx3-ubyte[.gz], and the -labels-idx1-ubyte files where present.
## EMNIST: prefix = "emnist-balanced-", transpose = true (it stores images column by column).
[data]
kind = "idx"
dir = "mnist"
prefix = ""
transpose = false
"#,
    r#"
## CIFAR-10, binary version: dir holds data_batch_1.bin ... data_batch_5.bin and test_batch.bin
## (records of 1 label byte + 3072 bytes of R, G, B planes; any number per file).
[data]
kind = "cifar10"
dir = "cifar-10-batches-bin"
"#,
    r#"
## A folder of PNG images of one size, grey or RGB: PNG files directly in dir (unlabelled), or
## one subfolder per class (labels in name order). Hold out test_size at random, or give test_dir.
[data]
kind = "png"
dir = "my-images"
test_size = 500
"#,
    r#"
## NumPy uint8 arrays in a .npy or .npz: [N, H, W, C] (layout = "nhwc") or [N, C, H, W]
## ("nchw"); flat [N, D] rows with shape = [C, H, W] (ImageNet 32x32: Imagenet32_train_npz,
## key "data", rows of three planes: layout = "nchw", shape = [3, 32, 32], labels = "labels").
## images/labels: the keys in a .npz. Give test_path (read the same way) or test_size.
[data]
kind = "npy"
path = "train_data_batch_1.npz"
layout = "nchw"
images = "data"
labels = "labels"
shape = [3, 32, 32]
test_path = "val_data.npz"
"#,
    r#"
## A pixel CSV file, one image per line: channels*height*width integers in 0..=max_value,
## channel-major then row-major, rescaled to 0..255; label_column: each line ends with a label.
## A `.gz` file is decompressed. test_size images are held out (a seeded random split).
[data]
kind = "csv"
path = "images.csv.gz"
channels = 1
height = 8
width = 8
max_value = 16
label_column = true
test_size = 297
"#,
    r#"
## Synthetic images with independent discretised-Gaussian pixels of standard deviation `std`
## (pixel units) around a diagonal ramp: their exact NLL is known and printed as a baseline.
[data]
kind = "gaussian"
channels = 1
height = 4
width = 4
std = 24.0
train_size = 1024
test_size = 256
"#,
];

fn positive(name: &str, v: usize) -> Result<(), DataError> {
    if v == 0 {
        Err(DataError::Invalid(format!("data.{name} must be at least 1")))
    } else {
        Ok(())
    }
}

/// Exactly one of a held-out count and a separate test source.
fn one_test_source(size: Option<usize>, separate: Option<&Path>, name: &str) -> Result<(), DataError> {
    match (size, separate) {
        (Some(n), None) => positive("test_size", n),
        (None, Some(_)) => Ok(()),
        (Some(_), Some(_)) => Err(DataError::Invalid(format!("give data.test_size or data.{name}, not both"))),
        (None, None) => Err(DataError::Invalid(format!(
            "give data.test_size (images held out at random) or data.{name} (a separate test set)"
        ))),
    }
}

impl DataConfig {
    /// Checks the sizes and numbers, naming the offending field.
    pub fn validate(&self) -> Result<(), DataError> {
        match self {
            Self::Digits { test_size } if *test_size >= DIGITS_COUNT => Err(DataError::Invalid(format!(
                "data.test_size must leave at least one of the {DIGITS_COUNT} digits for training, got {test_size}"
            ))),
            Self::Digits { test_size } => positive("test_size", *test_size),
            Self::Csv(csv) => {
                positive("test_size", csv.test_size)?;
                csv.layout().validate()
            }
            Self::Gaussian(g) => {
                positive("train_size", g.train_size)?;
                positive("test_size", g.test_size)?;
                g.images().validate()
            }
            Self::Idx { .. } | Self::FashionMnist { .. } | Self::Cifar10 { .. } => Ok(()),
            Self::Png { test_size, test_dir, .. } => one_test_source(*test_size, test_dir.as_deref(), "test_dir"),
            Self::Npy(source) => {
                if let Some(shape) = source.shape {
                    super::check_image_shape(shape)
                        .map_err(|e| DataError::Invalid(format!("data.shape: {}", e.into_message())))?;
                }
                one_test_source(source.test_size, source.test_path.as_deref(), "test_path")
            }
        }
    }

    /// `(train, test)` images.
    pub fn load(&self, seed: u64) -> Result<(ImageSet, ImageSet), DataError> {
        self.validate()?;
        let split = |images: ImageSet, test_size: usize| images.split(test_size, seed);
        let (train, test) = match self {
            Self::Digits { test_size } => split(digits(), *test_size)?,
            Self::Csv(csv) => split(super::load_csv(&csv.path, &csv.layout())?, csv.test_size)?,
            Self::Gaussian(g) => {
                let images = g.images();
                let bytes = (g.train_size as u128 + g.test_size as u128) * images.features() as u128;
                memory::check(
                    "drawing the Gaussian images",
                    u64::try_from(bytes).unwrap_or(u64::MAX),
                    "lower data.train_size or data.test_size",
                )
                .map_err(|e| DataError::Invalid(e.to_string()))?;
                (images.sample(g.train_size, seed), images.sample(g.test_size, !seed))
            }
            Self::Idx { dir, prefix, transpose } => idx::load_dir(dir, prefix, *transpose, "")?,
            Self::FashionMnist { dir } => {
                let hint = if dir == Path::new(FASHION_MNIST_DIR) {
                    "; install Fashion-MNIST with `apt-get install dataset-fashion-mnist`"
                } else {
                    ""
                };
                let (train, test) = idx::load_dir(dir, "", false, hint)?;
                let names = [
                    "T-shirt/top",
                    "Trouser",
                    "Pullover",
                    "Dress",
                    "Coat",
                    "Sandal",
                    "Shirt",
                    "Sneaker",
                    "Bag",
                    "Ankle boot",
                ];
                let named = |set: ImageSet| match set.labels.clone() {
                    Some(labels) => set.with_labels(labels, names.iter().map(|n| n.to_string()).collect()),
                    None => set,
                };
                (named(train), named(test))
            }
            Self::Cifar10 { dir } => cifar::load_dir(dir)?,
            Self::Png { dir, test_size, test_dir } => match (test_size, test_dir) {
                (_, Some(test_dir)) => (png::load_dir(dir)?, png::load_dir(test_dir)?),
                (Some(n), None) => split(png::load_dir(dir)?, *n)?,
                (None, None) => return Err(DataError::Invalid("give data.test_size or data.test_dir".into())),
            },
            Self::Npy(source) => match (source.test_size, &source.test_path) {
                (_, Some(test_path)) => (npy::load(&source.path, source)?, npy::load(test_path, source)?),
                (Some(n), None) => split(npy::load(&source.path, source)?, n)?,
                (None, None) => return Err(DataError::Invalid("give data.test_size or data.test_path".into())),
            },
        };
        if train.shape() != test.shape() {
            return Err(DataError::Invalid(format!(
                "the training images are {:?} but the test images {:?}",
                train.shape(),
                test.shape()
            )));
        }
        if train.labels.is_some() != test.labels.is_some() {
            return Err(DataError::Invalid(
                "the training images have labels and the test images none, or the other way round".into(),
            ));
        }
        Ok((train, test))
    }

    /// Whether `self` and `other` read the same images, however many of them each holds out for
    /// testing: whether a classifier trained on one is a fair judge of a model of the other.
    pub fn same_images(&self, other: &Self) -> bool {
        fn unsplit(data: &DataConfig) -> DataConfig {
            let mut data = data.clone();
            match &mut data {
                DataConfig::Digits { test_size } => *test_size = 0,
                DataConfig::Csv(csv) => csv.test_size = 0,
                DataConfig::Gaussian(g) => (g.train_size, g.test_size) = (0, 0),
                DataConfig::Png { test_size, .. } => *test_size = None,
                DataConfig::Npy(npy) => npy.test_size = None,
                DataConfig::Idx { .. } | DataConfig::FashionMnist { .. } | DataConfig::Cifar10 { .. } => {}
            }
            data
        }
        unsplit(self) == unsplit(other)
    }

    /// The exact NLL in bits per dimension, where the source has one.
    pub fn exact_bpd(&self) -> Option<f64> {
        match self {
            Self::Gaussian(g) => Some(g.images().entropy_bits()),
            _ => None,
        }
    }
}
