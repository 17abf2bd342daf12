//! CIFAR-10 in its binary version: `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`,
//! each a sequence of 3073-byte records — one label byte (0–9), then 3072 pixel bytes as three
//! 32×32 planes (red, green, blue), row-major. Any number of records per file is accepted.

use std::path::Path;

use super::{DataError, ImageSet, Location};

/// The shape of a CIFAR-10 image.
pub const SHAPE: [usize; 3] = [3, 32, 32];
const RECORD: usize = 1 + 3 * 32 * 32;

/// The ten classes, in label order.
pub const CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Reads one batch file.
pub fn load_batch(path: &Path) -> Result<ImageSet, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let whole = bytes.len() / RECORD * RECORD;
    if whole != bytes.len() {
        return Err(DataError::malformed(
            path,
            Location::Offset(whole as u64),
            format!("a partial record of {} bytes at the end (records are {RECORD} bytes: 1 label byte and 3072 pixel bytes)", bytes.len() - whole),
        ));
    }
    if bytes.is_empty() {
        return Err(DataError::malformed(path, Location::File, "holds no records"));
    }
    let mut pixels = Vec::with_capacity(bytes.len() / RECORD * (RECORD - 1));
    let mut labels = Vec::with_capacity(bytes.len() / RECORD);
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        if record[0] as usize >= CLASSES.len() {
            return Err(DataError::malformed(
                path,
                Location::Offset((i * RECORD) as u64),
                format!("record {i} has label {}; CIFAR-10 labels are 0..=9 (is this CIFAR-100, which has two label bytes?)", record[0]),
            ));
        }
        labels.push(u32::from(record[0]));
        pixels.extend_from_slice(&record[1..]);
    }
    Ok(ImageSet::new(pixels, SHAPE).with_labels(labels, CLASSES.iter().map(|c| c.to_string()).collect()))
}

/// The training batches (all five) and the test batch of a CIFAR-10 directory.
pub fn load_dir(dir: &Path) -> Result<(ImageSet, ImageSet), DataError> {
    let names: Vec<String> =
        (1..=5).map(|i| format!("data_batch_{i}.bin")).chain(["test_batch.bin".to_string()]).collect();
    let missing: Vec<&str> = names.iter().filter(|n| !dir.join(n).is_file()).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(DataError::Invalid(format!(
            "{} lacks {} (a CIFAR-10 binary directory holds data_batch_1.bin … data_batch_5.bin and test_batch.bin)",
            dir.display(),
            missing.join(", ")
        )));
    }
    let mut train = load_batch(&dir.join(&names[0]))?;
    // Reserve the whole training set once, so that appending never holds two copies of it.
    let rest: u64 =
        names[1..5].iter().filter_map(|n| std::fs::metadata(dir.join(n)).ok()).map(|m| m.len() / RECORD as u64).sum();
    train.pixels.reserve_exact(rest as usize * (RECORD - 1));
    if let Some(labels) = &mut train.labels {
        labels.reserve_exact(rest as usize);
    }
    for name in &names[1..5] {
        train.append(load_batch(&dir.join(name))?);
    }
    let test = load_batch(&dir.join(&names[5]))?;
    Ok((train, test))
}
