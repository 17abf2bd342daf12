//! A folder of PNG images, the way people keep their own data: either PNG files directly in the
//! folder (unlabelled), or one subfolder per class holding that class's PNG files (labels are the
//! subfolders in name order). All images must have one size and be all grey or all colour;
//! palette and low-bit-depth images are expanded to 8 bits, 16-bit ones reduced to 8, and an
//! alpha channel is accepted only where every pixel is opaque. Hidden files (`.name`) are
//! skipped; any other file that is not a `.png` is an error.

use std::fs;
use std::path::{Path, PathBuf};

use super::{check_image_shape, DataError, ImageSet, Location};

/// Reads one PNG as `[C, H, W]` planes, `C` = 1 (grey) or 3 (RGB).
pub fn decode(path: &Path) -> Result<(Vec<u8>, [usize; 3]), DataError> {
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    let bad = |message: String| DataError::malformed(path, Location::File, message);
    let mut decoder = png::Decoder::new(bytes.as_slice());
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| bad(format!("not a readable PNG ({e})")))?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(|e| bad(format!("not a readable PNG ({e})")))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let (stored, kept) = match info.color_type {
        png::ColorType::Grayscale => (1, 1),
        png::ColorType::GrayscaleAlpha => (2, 1),
        png::ColorType::Rgb => (3, 3),
        png::ColorType::Rgba => (4, 3),
        other => return Err(bad(format!("unsupported colour type {other:?}"))),
    };
    check_image_shape([kept, h, w]).map_err(|e| bad(e.into_message()))?;
    let rows = &buf[..h * info.line_size];
    let mut planes = vec![0u8; kept * h * w];
    for (y, row) in rows.chunks_exact(info.line_size).enumerate() {
        for (x, px) in row[..w * stored].chunks_exact(stored).enumerate() {
            if stored > kept && px[stored - 1] != 255 {
                return Err(bad(format!(
                    "pixel ({x}, {y}) is not opaque (alpha {}); vdm reads grey or RGB images",
                    px[stored - 1]
                )));
            }
            for c in 0..kept {
                planes[c * h * w + y * w + x] = px[c];
            }
        }
    }
    Ok((planes, [kept, h, w]))
}

/// Reads one PNG for lossless compression: only an image whose pixel values the codec gives back
/// exactly as they were stored, that is 8-bit grey or 8-bit RGB without palette, alpha or
/// transparency chunk. What is reproduced is the pixel values and the colour type, not the file's
/// bytes (compression level, interlacing and ancillary chunks such as text or gamma are not kept).
pub fn decode_lossless(path: &Path) -> Result<(Vec<u8>, [usize; 3]), DataError> {
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    let reader = png::Decoder::new(bytes.as_slice())
        .read_info()
        .map_err(|e| DataError::malformed(path, Location::File, format!("not a readable PNG ({e})")))?;
    let info = reader.info();
    let problem = match (info.color_type, info.bit_depth) {
        (png::ColorType::Grayscale | png::ColorType::Rgb, png::BitDepth::Eight) if info.trns.is_none() => None,
        (png::ColorType::Grayscale | png::ColorType::Rgb, png::BitDepth::Eight) => {
            Some("has a transparency chunk (tRNS)".to_string())
        }
        (png::ColorType::Grayscale | png::ColorType::Rgb, depth) => {
            Some(format!("has {} bits per sample", depth as u8))
        }
        (png::ColorType::Indexed, _) => Some("is a palette image".to_string()),
        (other, _) => Some(format!("has an alpha channel ({other:?})")),
    };
    if let Some(problem) = problem {
        let message = format!(
            "{problem}; the codec gives back 8-bit grey or RGB pixel values exactly, so it would not return this image (convert it to 8-bit grey or RGB first)"
        );
        return Err(DataError::malformed(path, Location::File, message));
    }
    decode(path)
}

/// The PNG files of `dir` in name order; errors for other (non-hidden) files.
fn png_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if !path.is_file() || !name.to_ascii_lowercase().ends_with(".png") {
            return Err(DataError::malformed(
                dir,
                Location::Entry(name),
                "is not a .png file (a folder of images holds PNG files, or one subfolder of PNG files per class)",
            ));
        }
        files.push(path);
    }
    files.sort();
    Ok(files)
}

/// Reads a folder of PNG images (see the module docs).
pub fn load_dir(dir: &Path) -> Result<ImageSet, DataError> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    entries.sort();
    let class_dirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
    let (files, labels, class_names): (Vec<PathBuf>, Option<Vec<u32>>, Vec<String>) = if class_dirs.is_empty() {
        (png_files(dir)?, None, Vec::new())
    } else {
        if let Some(stray) = entries.iter().find(|p| !p.is_dir()) {
            let name = stray.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            return Err(DataError::malformed(
                dir,
                Location::Entry(name),
                "is a file beside class subfolders; put every image in its class's subfolder",
            ));
        }
        let (mut files, mut labels, mut names) = (Vec::new(), Vec::new(), Vec::new());
        for (k, class) in class_dirs.iter().enumerate() {
            let in_class = png_files(class)?;
            labels.extend(std::iter::repeat_n(k as u32, in_class.len()));
            files.extend(in_class);
            names.push(class.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        }
        (files, Some(labels), names)
    };
    let Some(first) = files.first() else {
        return Err(DataError::malformed(dir, Location::File, "holds no PNG images"));
    };
    let (mut pixels, shape) = decode(first)?;
    pixels.reserve(pixels.len() * (files.len() - 1));
    for path in &files[1..] {
        let (image, other) = decode(path)?;
        if other != shape {
            return Err(DataError::malformed(
                path,
                Location::File,
                format!("is {}x{}x{} (channels x height x width), but {} is {}x{}x{}; all images must have one size and colour type", other[0], other[1], other[2], first.display(), shape[0], shape[1], shape[2]),
            ));
        }
        pixels.extend_from_slice(&image);
    }
    let images = ImageSet::new(pixels, shape);
    Ok(match labels {
        Some(labels) => images.with_labels(labels, class_names),
        None => images,
    })
}
