//! Pixel CSV files: one image per line.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{check_image_shape, DataError, ImageSet};

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

    /// Checks the sizes, naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        check_image_shape([self.channels, self.height, self.width])?;
        if self.max_value == 0 {
            return Err("data.max_value must be at least 1".into());
        }
        Ok(())
    }
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

pub(super) fn parse_csv(text: &str, layout: &CsvLayout, path: &Path) -> Result<ImageSet, DataError> {
    layout.validate().map_err(|e| DataError::Invalid(format!("{}: {e}", path.display())))?;
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
            // round(255 v / max), in u64 so that no max_value up to u32::MAX overflows.
            let (v, max) = (u64::from(v), u64::from(layout.max_value));
            pixels.push(((255 * v + max / 2) / max) as u8);
        }
    }
    if pixels.is_empty() {
        return Err(DataError::Malformed { path: path.to_owned(), line: 0, message: "no images".into() });
    }
    Ok(ImageSet { pixels, channels: layout.channels, height: layout.height, width: layout.width })
}
