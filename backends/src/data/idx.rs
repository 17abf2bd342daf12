//! IDX files (LeCun's MNIST format; also Fashion-MNIST, EMNIST, KMNIST), optionally gzipped.
//!
//! An IDX file is a big-endian header — two zero bytes, a type code (`0x08`: unsigned bytes), the
//! number of dimensions `k` — then `k` dimension sizes as `u32`, then the data. Image files are
//! `N × H × W` (magic `0x00000803` = 2051), label files `N` (magic `0x00000801` = 2049).

use std::path::{Path, PathBuf};

use super::{check_image_shape, read_maybe_gz, DataError, ImageSet, Location};

const IMAGES_MAGIC: u32 = 0x0803;
const LABELS_MAGIC: u32 = 0x0801;

/// The dimensions and the data of an IDX file of unsigned bytes with `dims` dimensions.
fn parse(path: &Path, bytes: &[u8], magic: u32, what: &str) -> Result<(Vec<usize>, usize), DataError> {
    let dims = (magic & 0xff) as usize;
    let header = 4 + 4 * dims;
    if bytes.len() < 4 {
        return Err(DataError::malformed(
            path,
            Location::File,
            format!("{} bytes: too short for an IDX header", bytes.len()),
        ));
    }
    let found = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found != magic {
        return Err(DataError::malformed(
            path,
            Location::Offset(0),
            format!("magic number {found} (0x{found:08x}), expected {magic} (0x{magic:08x}) for IDX {what} of unsigned bytes"),
        ));
    }
    if bytes.len() < header {
        return Err(DataError::malformed(
            path,
            Location::Offset(bytes.len() as u64),
            format!("truncated header: {} bytes, the header of {what} has {header}", bytes.len()),
        ));
    }
    let sizes: Vec<usize> = (0..dims)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap_or_default()) as usize)
        .collect();
    let expected = sizes.iter().try_fold(1usize, |acc, &s| acc.checked_mul(s));
    let data = bytes.len() - header;
    if expected != Some(data) {
        let dims_text: Vec<String> = sizes.iter().map(usize::to_string).collect();
        return Err(DataError::malformed(
            path,
            Location::Offset(header as u64),
            format!(
                "the header gives {} = {} bytes of data, but the file has {data} after the header",
                dims_text.join(" x "),
                expected.map_or("too many".into(), |e| e.to_string())
            ),
        ));
    }
    Ok((sizes, header))
}

/// Reads an IDX image file (`N × H × W`), transposing each image if `transpose` (EMNIST stores
/// images column by column).
pub fn load_images(path: &Path, transpose: bool) -> Result<ImageSet, DataError> {
    let bytes = read_maybe_gz(path)?;
    let (sizes, header) = parse(path, &bytes, IMAGES_MAGIC, "images")?;
    let (n, h, w) = (sizes[0], sizes[1], sizes[2]);
    check_image_shape([1, h, w]).map_err(|e| DataError::malformed(path, Location::Offset(4), e.into_message()))?;
    if n == 0 {
        return Err(DataError::malformed(path, Location::Offset(4), "holds no images"));
    }
    let mut pixels = bytes;
    pixels.drain(..header);
    if transpose {
        let d = h * w;
        let mut out = vec![0u8; pixels.len()];
        for (src, dst) in pixels.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            // The stored h×w matrix S becomes the w×h image T with T[y][x] = S[x][y].
            for y in 0..w {
                for x in 0..h {
                    dst[y * h + x] = src[x * w + y];
                }
            }
        }
        pixels = out;
    }
    let [h, w] = if transpose { [w, h] } else { [h, w] };
    Ok(ImageSet::new(pixels, [1, h, w]))
}

/// Reads an IDX label file (`N` bytes).
pub fn load_labels(path: &Path) -> Result<Vec<u32>, DataError> {
    let bytes = read_maybe_gz(path)?;
    let (_, header) = parse(path, &bytes, LABELS_MAGIC, "labels")?;
    Ok(bytes[header..].iter().map(|&b| u32::from(b)).collect())
}

/// The file `dir/{prefix}{stem}`, or its `.gz`, whichever exists (`None` if neither).
fn find(dir: &Path, prefix: &str, stem: &str) -> Option<PathBuf> {
    let plain = dir.join(format!("{prefix}{stem}"));
    let gz = dir.join(format!("{prefix}{stem}.gz"));
    [plain, gz].into_iter().find(|p| p.is_file())
}

/// One split (`train` or `t10k`) of an IDX directory, with labels when their file exists.
fn load_split(dir: &Path, prefix: &str, split: &str, transpose: bool, hint: &str) -> Result<ImageSet, DataError> {
    let stem = format!("{split}-images-idx3-ubyte");
    let images_path = find(dir, prefix, &stem).ok_or_else(|| {
        DataError::Invalid(format!("{}: no {prefix}{stem} or {prefix}{stem}.gz{hint}", dir.display()))
    })?;
    let images = load_images(&images_path, transpose)?;
    let Some(labels_path) = find(dir, prefix, &format!("{split}-labels-idx1-ubyte")) else { return Ok(images) };
    let labels = load_labels(&labels_path)?;
    if labels.len() != images.len() {
        return Err(DataError::malformed(
            &labels_path,
            Location::Offset(4),
            format!("{} labels for the {} images of {}", labels.len(), images.len(), images_path.display()),
        ));
    }
    Ok(images.with_labels(labels, Vec::new()))
}

/// The official train (`train-*`) and test (`t10k-*`) splits of an IDX directory. `hint` is added
/// to the message when a file is missing.
pub fn load_dir(dir: &Path, prefix: &str, transpose: bool, hint: &str) -> Result<(ImageSet, ImageSet), DataError> {
    if !dir.is_dir() {
        return Err(DataError::Invalid(format!("{} is not a directory{hint}", dir.display())));
    }
    let train = load_split(dir, prefix, "train", transpose, hint)?;
    let test = load_split(dir, prefix, "t10k", transpose, hint)?;
    if train.shape() != test.shape() {
        return Err(DataError::Invalid(format!(
            "{}: train images are {:?}, test images {:?}",
            dir.display(),
            train.shape(),
            test.shape()
        )));
    }
    Ok((train, test))
}
