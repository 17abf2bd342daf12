//! Writing images as PNG.

use std::io::BufWriter;
use std::path::Path;

use vdm_backends::data::ImageSet;

/// Writes `images` as a grid of `columns` columns with a 1-pixel gap, each image scaled up by
/// `scale`. One channel is written as grey, three as RGB.
pub fn write_grid(images: &ImageSet, columns: usize, scale: usize, path: &Path) -> Result<(), String> {
    let (c, h, w) = (images.channels, images.height, images.width);
    if c != 1 && c != 3 {
        return Err(format!("can only write 1- or 3-channel images as PNG, these have {c}"));
    }
    let columns = columns.clamp(1, images.len().max(1));
    let rows = images.len().div_ceil(columns);
    let (cell_h, cell_w) = (h * scale + 1, w * scale + 1);
    let (height, width) = (rows * cell_h + 1, columns * cell_w + 1);
    let mut buf = vec![255u8; height * width * c];
    for i in 0..images.len() {
        let img = images.image(i);
        let (oy, ox) = ((i / columns) * cell_h + 1, (i % columns) * cell_w + 1);
        for y in 0..h * scale {
            for x in 0..w * scale {
                for ch in 0..c {
                    let v = img[ch * h * w + (y / scale) * w + x / scale];
                    buf[((oy + y) * width + ox + x) * c + ch] = v;
                }
            }
        }
    }
    write_png(&buf, width, height, c, path)
}

/// Writes raw 8-bit grey (`channels = 1`) or RGB (`channels = 3`) pixels.
pub fn write_png(pixels: &[u8], width: usize, height: usize, channels: usize, path: &Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("writing {}: {e}", path.display());
    let file = std::fs::File::create(path).map_err(|e| err(&e))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), width as u32, height as u32);
    encoder.set_color(if channels == 1 { png::ColorType::Grayscale } else { png::ColorType::Rgb });
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| err(&e))?;
    writer.write_image_data(pixels).map_err(|e| err(&e))
}
