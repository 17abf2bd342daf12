//! Pixel CSV files: one image per line.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{check_image_shape, read_maybe_gz, DataError, ImageSet, Location};

/// The layout of a pixel CSV: one image per line, `C·H·W` integers in `0..=max_value`
/// (channel-major, then row-major), optionally followed by an integer class label.
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
    pub fn validate(&self) -> Result<(), DataError> {
        check_image_shape([self.channels, self.height, self.width])?;
        if self.max_value == 0 {
            return Err(DataError::Invalid("data.max_value must be at least 1".into()));
        }
        Ok(())
    }
}

/// Reads a pixel CSV (gzipped if the name ends in `.gz`).
pub fn load_csv(path: &Path, layout: &CsvLayout) -> Result<ImageSet, DataError> {
    let bytes = read_maybe_gz(path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| DataError::malformed(path, Location::File, format!("not UTF-8 text ({e})")))?;
    parse_csv(text, layout, path)
}

pub(super) fn parse_csv(text: &str, layout: &CsvLayout, path: &Path) -> Result<ImageSet, DataError> {
    layout.validate().map_err(|e| DataError::Invalid(format!("{}: {e}", path.display())))?;
    let d = layout.channels * layout.height * layout.width;
    let columns = d + usize::from(layout.label_column);
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |message: String| DataError::malformed(path, Location::Line(i + 1), message);
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != columns {
            return Err(bad(format!("expected {columns} comma-separated values, found {}", fields.len())));
        }
        let number = |col: usize| {
            fields[col]
                .parse::<u32>()
                .map_err(|_| bad(format!("column {}: `{}` is not a non-negative integer", col + 1, fields[col])))
        };
        for col in 0..d {
            let v = number(col)?;
            if v > layout.max_value {
                return Err(bad(format!("column {}: value {v} exceeds max_value {}", col + 1, layout.max_value)));
            }
            // round(255 v / max), in u64 so that no max_value up to u32::MAX overflows.
            let (v, max) = (u64::from(v), u64::from(layout.max_value));
            pixels.push(((255 * v + max / 2) / max) as u8);
        }
        if layout.label_column {
            labels.push(number(d)?);
        }
    }
    if pixels.is_empty() {
        return Err(DataError::malformed(path, Location::File, "no images"));
    }
    let images = ImageSet::new(pixels, [layout.channels, layout.height, layout.width]);
    Ok(if layout.label_column { images.with_labels(labels, Vec::new()) } else { images })
}
