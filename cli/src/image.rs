//! Writing images as PNG.

use std::fs;
use std::path::Path;

use vdm_backends::data::ImageSet;
use vdm_backends::error::describe_io;
use vdm_backends::files::write_atomically;
use vdm_backends::memory::{self, Bytes};

/// The white margin around and between the images of a grid, in image pixels (each `scale` PNG
/// pixels wide), so that tiles never touch.
const MARGIN: usize = 2;

/// The pixel layout of a grid of `n` images of `[c, h, w]`: `columns` columns (at most `n`) of
/// images scaled `scale` times, separated and surrounded by `MARGIN · scale` white pixels.
/// `(width, height)` of the whole grid.
fn grid_size(n: usize, [_, h, w]: [usize; 3], columns: usize, scale: usize) -> (u128, u128) {
    let columns = columns.clamp(1, n.max(1)) as u128;
    let rows = (n as u128).div_ceil(columns);
    let gap = (MARGIN * scale) as u128;
    let (cell_h, cell_w) = ((h * scale) as u128 + gap, (w * scale) as u128 + gap);
    (columns * cell_w + gap, rows * cell_h + gap)
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

/// Writes `images` as a grid of `columns` columns with white margins, each image scaled up by
/// `scale`. One channel is written as grey, three as RGB. Call [`check_grid`] first.
pub fn write_grid(images: &ImageSet, columns: usize, scale: usize, path: &Path) -> Result<(), String> {
    let (buf, width, height) = grid_pixels(images, columns, scale);
    write_png(&buf, width, height, images.shape()[0], path)
}

/// The interleaved pixels of [`write_grid`]'s grid, with its width and height.
fn grid_pixels(images: &ImageSet, columns: usize, scale: usize) -> (Vec<u8>, usize, usize) {
    let [c, h, w] = images.shape();
    let (width, height) = grid_size(images.len(), images.shape(), columns, scale);
    let (width, height) = (width as usize, height as usize);
    let columns = columns.clamp(1, images.len().max(1));
    let gap = MARGIN * scale;
    let (cell_h, cell_w) = (h * scale + gap, w * scale + gap);
    let mut buf = vec![255u8; height * width * c];
    for i in 0..images.len() {
        let img = images.image(i);
        let (oy, ox) = ((i / columns) * cell_h + gap, (i % columns) * cell_w + gap);
        for y in 0..h * scale {
            for x in 0..w * scale {
                for ch in 0..c {
                    buf[((oy + y) * width + ox + x) * c + ch] = img[ch * h * w + (y / scale) * w + x / scale];
                }
            }
        }
    }
    (buf, width, height)
}

/// One image (`[C, H, W]` planes) as PNG file contents.
pub fn image_png(pixels: &[u8], [c, h, w]: [usize; 3]) -> Result<Vec<u8>, String> {
    let interleaved: Vec<u8> = (0..h * w).flat_map(|p| (0..c).map(move |ch| pixels[ch * h * w + p])).collect();
    encode_png(&interleaved, w, h, c)
}

/// Writes one image (`[C, H, W]` planes) as a PNG.
fn write_image(pixels: &[u8], shape: [usize; 3], path: &Path) -> Result<(), String> {
    let bytes = image_png(pixels, shape).map_err(|e| format!("writing {}: {e}", path.display()))?;
    write_atomically(path, &bytes).map_err(|e| format!("writing {}: {}", path.display(), describe_io(&e)))
}

/// Writes every image of `images` into `dir`, image `i` as `name(i)`. On a failure (a full disk,
/// say) it removes the files it wrote, so that a retry finds `dir` as it was.
pub fn write_images(images: &ImageSet, dir: &Path, name: impl Fn(usize) -> String) -> Result<(), String> {
    let mut written = Vec::with_capacity(images.len());
    for i in 0..images.len() {
        let path = dir.join(name(i));
        if let Err(e) = write_image(images.image(i), images.shape(), &path) {
            for path in &written {
                let _ = fs::remove_file(path);
            }
            return Err(format!("{e}; the {} images written before it were removed", written.len()));
        }
        written.push(path);
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Black 2×3 images in a grid of 2 columns at scale 2: each image's pixels are where the layout
    /// says, and every other pixel (the margins, 4 wide) is white, so no two tiles touch.
    #[test]
    fn grid_tiles_are_separated_by_white_margins() {
        let (n, [h, w], columns, scale) = (3, [2, 3], 2, 2);
        let images = ImageSet::new(vec![0; n * h * w], [1, h, w]);
        let (buf, width, height) = grid_pixels(&images, columns, scale);
        let gap = MARGIN * scale;
        assert_eq!((width, height), (2 * (w * scale + gap) + gap, 2 * (h * scale + gap) + gap));
        let inside = |i: usize, y: usize, x: usize| {
            let (oy, ox) = ((i / columns) * (h * scale + gap) + gap, (i % columns) * (w * scale + gap) + gap);
            (oy..oy + h * scale).contains(&y) && (ox..ox + w * scale).contains(&x)
        };
        for y in 0..height {
            for x in 0..width {
                let tile = (0..n).find(|&i| inside(i, y, x));
                assert_eq!(buf[y * width + x], if tile.is_some() { 0 } else { 255 }, "pixel ({y}, {x})");
            }
        }
        assert_eq!(buf.iter().filter(|&&p| p == 0).count(), n * h * w * scale * scale);
    }

    /// A write that fails part-way (here image 2's name is taken by a directory) leaves none of
    /// the images behind.
    #[test]
    fn a_failed_write_of_many_images_removes_those_written() {
        let dir = tempfile::tempdir().unwrap();
        let images = ImageSet::new((0..4 * 4).map(|i| i as u8).collect(), [1, 2, 2]);
        fs::create_dir(dir.path().join("2.png")).unwrap();
        let err = write_images(&images, dir.path(), |i| format!("{i}.png")).unwrap_err();
        assert!(err.contains("2.png") && err.contains("the 2 images written before it were removed"), "{err}");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["2.png"], "only the obstacle is left");
        fs::remove_dir(dir.path().join("2.png")).unwrap();
        write_images(&images, dir.path(), |i| format!("{i}.png")).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 4);
    }
}
