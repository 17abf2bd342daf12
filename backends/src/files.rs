//! Files: writing them so that a crash leaves the old contents or the new, their digests, and
//! I/O errors in plain words. A leaf: every module that touches the disk uses it.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The size and SHA-256 of a file, as recorded in `state.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Length in bytes.
    pub bytes: u64,
    /// Lower-case hexadecimal SHA-256.
    pub sha256: String,
}

impl FileDigest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self { bytes: data.len() as u64, sha256: hex(&Sha256::digest(data)) }
    }
}

/// The bytes of the file at `path`, checked against `expected`, the digest recorded in `record`
/// (named in the errors): a file of another size is truncated or replaced, one of another SHA-256
/// corrupt or replaced.
pub fn read_verified(path: &Path, expected: &FileDigest, record: &str) -> Result<Vec<u8>> {
    let data = fs::read(path).map_err(|e| Error::io(path, &e))?;
    let found = FileDigest::of(&data);
    if found.bytes != expected.bytes {
        return Err(Error::file(
            path,
            format!(
                "{} bytes, but {record} records {}: the file is truncated or was replaced",
                found.bytes, expected.bytes
            ),
        ));
    }
    if found.sha256 != expected.sha256 {
        return Err(Error::file(
            path,
            format!("contents differ from the SHA-256 in {record}: the file is corrupt or was replaced"),
        ));
    }
    Ok(data)
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to a new file at `path` and flushes it to disk.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Flushes a directory's entries (new names, renames) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` via a flushed temporary file and a rename, so that readers see the
/// old contents or the new, never a mixture, even after a crash.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    if let Err(e) = write_durably(&tmp, bytes).and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::describe_io;

    #[test]
    fn a_full_disk_is_reported_in_plain_words() {
        // Writing to /dev/full fails with ENOSPC, as a full disk does.
        let e = write_durably(Path::new("/dev/full"), &[0u8; 4096]).unwrap_err();
        assert!(describe_io(&e).contains("disk is full"), "{}", describe_io(&e));
    }

    /// A write whose rename fails (a directory has the name) leaves no temporary file behind.
    #[test]
    fn a_failed_atomic_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("taken")).unwrap();
        assert!(write_atomically(&dir.path().join("taken"), b"x").is_err());
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["taken"]);
    }
}
