//! The library's one error type: what went wrong, with the file, field or step it concerns. The
//! CLI prints it as one line (`Display`); a program can match on its kind.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Everything the library refuses or fails at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of range or inconsistent with another. `field` names it as a run's
    /// configuration does (`train.lr`, `model.betas`) or as the argument of the call (`steps`).
    #[error("{message}")]
    Setting {
        /// The setting.
        field: String,
        /// What is wrong with it, in a sentence that names it.
        message: String,
    },
    /// A file or directory could not be read, written or decoded, or does not hold what it should.
    #[error("{}: {message}", path.display())]
    File {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A dataset could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Bytes that are not what they claim to be (a compressed stream, an encoded record).
    #[error("{0}")]
    Corrupt(String),
    /// The inputs do not fit together: a model of the other family, images of another shape, a
    /// sampler the model cannot run.
    #[error("{0}")]
    Mismatch(String),
    /// The work would not fit in memory (the message gives the estimate and what is available).
    #[error("{0}")]
    Memory(String),
    /// A collective operation of data-parallel training failed: a replica or process was lost
    /// or registered differently, or the replicas do not hold the same run.
    #[error("{0}")]
    Collective(String),
    /// A loss or bound became NaN or infinite.
    #[error("{message}")]
    NonFinite {
        /// The step at which it happened.
        step: usize,
        /// What became non-finite, and what to try.
        message: String,
    },
}

/// `Result` with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A [`Error::Setting`] of `field`.
    pub fn setting(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Setting { field: field.into(), message: message.into() }
    }

    /// A [`Error::File`] at `path`.
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        Self::File { path: path.to_owned(), message: message.into() }
    }

    /// An I/O error at `path`, in plain words ([`describe_io`]).
    pub fn io(path: &Path, e: &io::Error) -> Self {
        Self::file(path, describe_io(e))
    }

    /// The same error, about `path` (a setting or corrupt contents read from that file).
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            Self::File { .. } | Self::Data(_) => self,
            other => Self::file(path, other.to_string()),
        }
    }
}

/// The CLI reports errors as text.
impl From<Error> for String {
    fn from(e: Error) -> Self {
        e.to_string()
    }
}

/// Where in a file a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The file as a whole.
    File,
    /// A line of a text file (1-based).
    Line(usize),
    /// A byte offset.
    Offset(u64),
    /// An entry of an archive or a directory.
    Entry(String),
}

/// What went wrong reading data.
#[derive(Debug)]
pub enum DataError {
    /// A file or directory could not be read.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file was read but its contents are malformed.
    Malformed {
        /// The file.
        path: PathBuf,
        /// Where in it.
        at: Location,
        /// What is wrong.
        message: String,
    },
    /// The data specification is inconsistent.
    Invalid(String),
}

impl DataError {
    /// A malformed-file error.
    pub fn malformed(path: &Path, at: Location, message: impl Into<String>) -> Self {
        Self::Malformed { path: path.to_owned(), at, message: message.into() }
    }

    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }

    /// The message alone, to be placed in a file's context (the whole text for a file error).
    pub fn into_message(self) -> String {
        match self {
            Self::Invalid(message) => message,
            other => other.to_string(),
        }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {}", path.display(), describe_io(source)),
            Self::Malformed { path, at, message } => match at {
                Location::File => write!(f, "{}: {message}", path.display()),
                Location::Line(line) => write!(f, "{}: line {line}: {message}", path.display()),
                Location::Offset(offset) => write!(f, "{}: at byte {offset}: {message}", path.display()),
                Location::Entry(entry) => write!(f, "{}: {entry}: {message}", path.display()),
            },
            Self::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for DataError {}

/// An I/O error in plain words: a full disk says so.
pub fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::StorageFull => "the disk is full (no space left on the device)".into(),
        io::ErrorKind::QuotaExceeded => "the disk quota is exceeded".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::NotFound => "no such file or directory".into(),
        _ => e.to_string(),
    }
}
