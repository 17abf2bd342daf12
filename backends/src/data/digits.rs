//! scikit-learn's 8×8 handwritten digits, bundled with the crate.

use std::io::Read;
use std::path::Path;

use super::csv::{parse_csv, CsvLayout};
use super::ImageSet;

/// scikit-learn's 8×8 digits (see `data/README.md`), gzipped CSV.
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../../data/digits.csv.gz");

/// The number of bundled digits.
pub const DIGITS_COUNT: usize = 1797;

/// The bundled digits: 1797 images of 1×8×8.
pub fn digits() -> ImageSet {
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .expect("the bundled digits.csv.gz is valid gzip");
    parse_csv(&text, &CsvLayout::DIGITS, Path::new("<bundled digits.csv.gz>")).expect("the bundled digits parse")
}
