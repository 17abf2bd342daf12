//! Writing images as PNG.

use std::path::Path;

use vdm_backends::data::ImageSet;
use vdm_backends::error::describe_io;
use vdm_backends::files::write_atomically;
use vdm_backends::memory::{self, Bytes};

/// The pixel layout of a grid of `n` images of `[c, h, w]`: `columns` columns (at most `n`) of
/// cells `scale` times the image size with a 1-pixel gap. `(width, height)` of the whole grid.
fn grid_size(n: usize, [_, h, w]: [usize; 3], columns: usize, scale: usize) -> (u128, u128) {
    let columns = columns.clamp(1, n.max(1)) as u128;
    let rows = (n as u128).div_ceil(columns);
    let (cell_h, cell_w) = ((h * scale) as u128 + 1, (w * scale) as u128 + 1);
    (columns * cell_w + 1, rows * cell_h + 1)
}

/// Refuses a grid that PNG cannot hold or that does not fit in memory, before any work.
pub fn check_grid(n: usize, shape: [usize; 3], columns: usize, scale: usize) -> Result<(), String> {
    let [c, ..] = shape;
    if c != 1 && c != 3 {
        return Err(format!("can only write 1- or 3-channel images as PNG, these have {c}"));
    }
    let (width, height) = grid_size(n, shape, columns, scale);
    if width > i32::MAX as u128 || height > i32::MAX as u128 {
        return Err(format!("a grid of {n} images at --scale {scale} would be {width}x{height} pixels, beyond PNG's limit of 2^31 − 1 per side; lower --scale or --n"));
    }
    let bytes = u64::try_from(width * height * c as u128 * 2).unwrap_or(u64::MAX); // the grid and its encoding
    memory::check(
        &format!("a {width}x{height} PNG grid ({})", Bytes(bytes / 2)),
        bytes,
        "lower --scale or --n, or write single images with --out-dir",
    )?;
    Ok(())
}

/// Writes `images` as a grid of `columns` columns with a 1-pixel gap, each image scaled up by
/// `scale`. One channel is written as grey, three as RGB. Call [`check_grid`] first.
pub fn write_grid(images: &ImageSet, columns: usize, scale: usize, path: &Path) -> Result<(), String> {
    let [c, h, w] = images.shape();
    let (width, height) = grid_size(images.len(), images.shape(), columns, scale);
    let (width, height) = (width as usize, height as usize);
    let columns = columns.clamp(1, images.len().max(1));
    let (cell_h, cell_w) = (h * scale + 1, w * scale + 1);
    let mut buf = vec![255u8; height * width * c];
    for i in 0..images.len() {
        let img = images.image(i);
        let (oy, ox) = ((i / columns) * cell_h + 1, (i % columns) * cell_w + 1);
        for y in 0..h * scale {
            for x in 0..w * scale {
                for ch in 0..c {
                    buf[((oy + y) * width + ox + x) * c + ch] = img[ch * h * w + (y / scale) * w + x / scale];
                }
            }
        }
    }
    write_png(&buf, width, height, c, path)
}

/// One image (`[C, H, W]` planes) as PNG file contents.
pub fn image_png(pixels: &[u8], [c, h, w]: [usize; 3]) -> Result<Vec<u8>, String> {
    let interleaved: Vec<u8> = (0..h * w).flat_map(|p| (0..c).map(move |ch| pixels[ch * h * w + p])).collect();
    encode_png(&interleaved, w, h, c)
}

/// Writes one image (`[C, H, W]` planes) as a PNG.
pub fn write_image(pixels: &[u8], shape: [usize; 3], path: &Path) -> Result<(), String> {
    let bytes = image_png(pixels, shape).map_err(|e| format!("writing {}: {e}", path.display()))?;
    write_atomically(path, &bytes).map_err(|e| format!("writing {}: {}", path.display(), describe_io(&e)))
}

/// Raw 8-bit grey (`channels = 1`) or RGB (`channels = 3`) pixels as PNG file contents.
fn encode_png(pixels: &[u8], width: usize, height: usize, channels: usize) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width as u32, height as u32);
    encoder.set_color(if channels == 1 { png::ColorType::Grayscale } else { png::ColorType::Rgb });
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(pixels).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Writes raw 8-bit grey (`channels = 1`) or RGB (`channels = 3`) pixels, atomically.
pub fn write_png(pixels: &[u8], width: usize, height: usize, channels: usize, path: &Path) -> Result<(), String> {
    let bytes = encode_png(pixels, width, height, channels).map_err(|e| format!("writing {}: {e}", path.display()))?;
    write_atomically(path, &bytes).map_err(|e| format!("writing {}: {}", path.display(), describe_io(&e)))
}
