//! NumPy arrays of `uint8` images in `.npy` files or `.npz` archives (how ImageNet 32×32 and
//! 64×64 are distributed), with optional integer labels from the same archive.
//!
//! Images are `[N, H, W, C]` or `[N, C, H, W]` as stated by [`Layout`], or flat `[N, D]` rows
//! (ImageNet 32×32's `data` is `[N, 3072]`, each row three planes) when [`NpySource::shape`] is
//! given; `[N, H, W]` is read as grey.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, Axis, Ix2};
use ndarray_npy::{NpzReader, ReadNpyExt};
use serde::{Deserialize, Serialize};

use super::{check_image_shape, DataError, ImageSet, Location};

/// The axis order of a 4-D image array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[N, H, W, C]` (channels last).
    Nhwc,
    /// `[N, C, H, W]` (channels first).
    Nchw,
}

/// NumPy files of images: where they are, how to read them, and how to split them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NpySource {
    /// The file (the training images, or all of them with `test_size`).
    pub path: PathBuf,
    /// Axis order of 4-D arrays, and of each flat row (as `[H, W, C]` or `[C, H, W]`).
    pub layout: Layout,
    /// The images' key in a `.npz` archive.
    #[serde(default = "default_images_key")]
    pub images: String,
    /// The labels' key in a `.npz` archive (none: unlabelled).
    #[serde(default)]
    pub labels: Option<String>,
    /// `[C, H, W]` of each row of a flat `[N, D]` array.
    #[serde(default)]
    pub shape: Option<[usize; 3]>,
    /// Images held out for testing (or give `test_path`).
    #[serde(default)]
    pub test_size: Option<usize>,
    /// A second file, read the same way, holding the test images.
    #[serde(default)]
    pub test_path: Option<PathBuf>,
}

fn default_images_key() -> String {
    "data".into()
}

/// Reads images (and labels, if configured) from a `.npy` or `.npz` file.
pub fn load(path: &Path, spec: &NpySource) -> Result<ImageSet, DataError> {
    let bad = |at: Location, message: String| DataError::malformed(path, at, message);
    let is_npz = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz"));
    let open = || File::open(path).map(BufReader::new).map_err(|e| DataError::io(path, e));
    let (array, labels) = if is_npz {
        let mut npz =
            NpzReader::new(open()?).map_err(|e| bad(Location::File, format!("not a readable .npz archive ({e})")))?;
        let names = npz.names().unwrap_or_default();
        let mut read = |key: &str| -> Result<ArrayD<u8>, DataError> {
            if !names.iter().any(|n| n == key) {
                return Err(bad(Location::File, format!("has no array `{key}` (it has: {})", names.join(", "))));
            }
            npz.by_name(key).map_err(|e| bad(Location::Entry(key.into()), format!("is not a uint8 array ({e})")))
        };
        let images = read(&spec.images)?;
        let labels = match &spec.labels {
            Some(key) if !names.iter().any(|n| n == key) => {
                return Err(bad(Location::File, format!("has no array `{key}` (it has: {})", names.join(", "))))
            }
            Some(key) => {
                Some(read_labels(&mut npz, key).map_err(|e| bad(Location::Entry(key.clone()), e.into_message()))?)
            }
            None => None,
        };
        (images, labels)
    } else {
        if spec.labels.is_some() {
            return Err(DataError::Invalid(format!("{}: labels can only be read from a .npz archive", path.display())));
        }
        (
            ArrayD::<u8>::read_npy(open()?)
                .map_err(|e| bad(Location::File, format!("is not a .npy file of uint8 ({e})")))?,
            None,
        )
    };
    let images = to_image_set(array, spec).map_err(|e| bad(Location::Entry(spec.images.clone()), e.into_message()))?;
    match labels {
        Some(labels) if labels.len() != images.len() => {
            Err(bad(Location::File, format!("{} labels for {} images", labels.len(), images.len())))
        }
        Some(labels) => Ok(images.with_labels(labels, Vec::new())),
        None => Ok(images),
    }
}

/// Labels of any integer type, as `u32` (negative ones are an error).
fn read_labels<R: std::io::Read + std::io::Seek>(npz: &mut NpzReader<R>, key: &str) -> Result<Vec<u32>, DataError> {
    macro_rules! try_as {
        ($($t:ty),*) => {$(
            if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<$t>, ndarray::IxDyn>(key) {
                return a.iter().map(|&v| u32::try_from(v).map_err(|_| DataError::Invalid(format!("holds the label {v}, not a class number")))).collect();
            }
        )*};
    }
    try_as!(i64, i32, u8, u16, u32, u64, i16, i8);
    Err(DataError::Invalid("is not an array of integers".into()))
}

/// `[N, C, H, W]` bytes from an array in `spec`'s layout.
fn to_image_set(array: ArrayD<u8>, spec: &NpySource) -> Result<ImageSet, DataError> {
    let dims = array.shape().to_vec();
    let array = match (dims.len(), spec.shape) {
        (2, Some([c, h, w])) => {
            if dims[1] != c * h * w {
                return Err(DataError::Invalid(format!(
                    "rows of {} values do not make images of {c}x{h}x{w}",
                    dims[1]
                )));
            }
            let shape = match spec.layout {
                Layout::Nchw => vec![dims[0], c, h, w],
                Layout::Nhwc => vec![dims[0], h, w, c],
            };
            let invalid = |e: ndarray::ShapeError| DataError::Invalid(e.to_string());
            let flat = array.into_dimensionality::<Ix2>().map_err(invalid)?.as_standard_layout().into_owned();
            flat.into_shape_with_order(shape).map_err(invalid)?.into_dyn()
        }
        (2, None) => {
            return Err(DataError::Invalid(format!("is a flat array {dims:?}: give `shape = [C, H, W]` for its rows")))
        }
        (3, _) => array.insert_axis(Axis(match spec.layout {
            Layout::Nchw => 1,
            Layout::Nhwc => 3,
        })),
        (4, _) => array,
        _ => {
            return Err(DataError::Invalid(format!(
                "has shape {dims:?}; images are [N, H, W, C], [N, C, H, W], [N, H, W] or flat [N, D]"
            )))
        }
    };
    let nchw = match spec.layout {
        Layout::Nchw => array,
        Layout::Nhwc => array.permuted_axes(vec![0, 3, 1, 2]),
    };
    let s = nchw.shape().to_vec();
    let shape = [s[1], s[2], s[3]];
    check_image_shape(shape)?;
    if s[0] == 0 {
        return Err(DataError::Invalid("holds no images".into()));
    }
    let pixels = if nchw.is_standard_layout() {
        let (data, offset) = nchw.into_raw_vec_and_offset();
        match offset {
            Some(0) | None => data,
            Some(o) => data[o..].to_vec(),
        }
    } else {
        nchw.iter().copied().collect()
    };
    Ok(ImageSet::new(pixels, shape))
}
