//! Data loading: bundled digits, CSV errors that name the file and the problem, Gaussian images.

use std::path::Path;

use vdm_backends::data::{categorical_baseline_bpd, digits, load_csv, CsvLayout, DataError, DiscretisedGaussianImages};

#[test]
fn the_bundled_digits_have_17_grey_levels_on_the_8_bit_scale() {
    let d = digits();
    assert_eq!((d.len(), d.channels, d.height, d.width), (1797, 1, 8, 8));
    let mut levels: Vec<u8> = d.pixels.clone();
    levels.sort_unstable();
    levels.dedup();
    assert_eq!(levels.len(), 17);
    assert_eq!((levels[0], levels[16]), (0, 255));
    let (train, test) = d.clone().split(297, 0).unwrap();
    assert_eq!((train.len(), test.len()), (1500, 297));
    assert_eq!(d.split(297, 0).unwrap().1, test, "the split is reproducible");
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn malformed_csv_files_are_reported_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let layout = CsvLayout { channels: 1, height: 1, width: 3, max_value: 16, label_column: false };
    let cases = [
        ("short.csv", "1,2,3\n4,5\n", "line 2: expected 3 comma-separated values, found 2"),
        ("word.csv", "1,2,x\n", "line 1: column 3: `x` is not a non-negative integer"),
        ("big.csv", "1,2,3\n1,17,0\n", "line 2: column 2: value 17 exceeds max_value 16"),
        ("empty.csv", "\n\n", "no images"),
    ];
    for (name, text, expected) in cases {
        let path = write(dir.path(), name, text);
        let err = load_csv(&path, &layout).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, DataError::Malformed { .. }));
        assert!(message.contains(name) && message.contains(expected), "{name}: got `{message}`");
    }
    let missing = load_csv(&dir.path().join("absent.csv"), &layout).unwrap_err().to_string();
    assert!(missing.contains("absent.csv"), "{missing}");
    let ok = load_csv(&write(dir.path(), "ok.csv", "0,8,16\n16,0,8\n"), &layout).unwrap();
    assert_eq!(ok.pixels, vec![0, 128, 255, 255, 0, 128]);
    // The rescaling to 0..255 must not overflow for any 32-bit max_value.
    let wide = CsvLayout { max_value: u32::MAX, ..layout.clone() };
    let ok = load_csv(&write(dir.path(), "wide.csv", "0,2147483648,4294967295\n"), &wide).unwrap();
    assert_eq!(ok.pixels, vec![0, 128, 255]);
    for (bad, expected) in [
        (CsvLayout { max_value: 0, ..layout.clone() }, "max_value"),
        (CsvLayout { channels: 0, ..layout.clone() }, "at least one channel"),
    ] {
        let err = load_csv(&write(dir.path(), "any.csv", "1,2,3\n"), &bad).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
    }
    let garbage = load_csv(&write(dir.path(), "bin.csv", "\u{0}\u{ff}\u{1}"), &layout).unwrap_err().to_string();
    assert!(garbage.contains("bin.csv"), "{garbage}");
    std::fs::write(dir.path().join("bad.csv.gz"), b"not gzip").unwrap();
    let gz = load_csv(&dir.path().join("bad.csv.gz"), &layout).unwrap_err().to_string();
    assert!(gz.contains("bad.csv.gz"), "{gz}");
}

#[test]
fn gaussian_images_have_the_stated_exact_entropy() {
    let spec = DiscretisedGaussianImages { channels: 1, height: 2, width: 2, std: 3.0 };
    let (train, test) = (spec.sample(40_000, 1), spec.sample(40_000, 2));
    // A per-pixel categorical fit on many samples converges to the per-pixel entropy.
    let empirical = categorical_baseline_bpd(&train, &test, 1e-3);
    let exact = spec.entropy_bits();
    assert!((empirical - exact).abs() < 0.02, "empirical {empirical:.4} vs exact {exact:.4} bits");
    // Discretised N(μ, 3²): ≈ ½ log₂(2πe·9) ≈ 3.63 bits.
    assert!((exact - 3.63).abs() < 0.02, "{exact}");
}
