//! The library's one error type. Every variant that concerns a file names it.

use std::path::{Path, PathBuf};

/// Errors of the `covid_cxr` library. Messages name the file, folder or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed on `path`.
    #[error("{path}: {op}: {source}")]
    Io {
        /// What was being done ("read", "create folder", ...).
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An image file could not be decoded.
    #[error("{path}: cannot decode image: {reason}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// An image could not be encoded or written.
    #[error("{path}: cannot write image: {reason}")]
    Encode {
        /// The output file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// A dataset folder is not usable as given.
    #[error("{path}: {reason}")]
    Dataset {
        /// The folder.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// Writing would overwrite or mix with existing user files.
    #[error("{path}: {reason} (refusing to overwrite or mix with existing files)")]
    WouldOverwrite {
        /// The file or folder that exists.
        path: PathBuf,
        /// What exists there.
        reason: String,
    },
    /// A parameter is out of its domain.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A weights or checkpoint file does not fit the model.
    #[error("{path}: {reason}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// The first tensor that does not fit, and how.
        reason: String,
    },
    /// An error from libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A JSON (de)serialisation error on a file.
    #[error("{path}: JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A figure could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
    /// A table could not be built.
    #[error("table: {0}")]
    Table(String),
    /// A linear-algebra routine failed.
    #[error("linear algebra: {0}")]
    Linalg(String),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(op: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { op, path: path.as_ref().to_path_buf(), source }
    }
    /// An [`Error::Decode`] for `path`.
    pub fn decode(path: impl AsRef<Path>, reason: impl ToString) -> Self {
        Error::Decode { path: path.as_ref().to_path_buf(), reason: reason.to_string() }
    }
    /// An [`Error::Dataset`] for `path`.
    pub fn dataset(path: impl AsRef<Path>, reason: impl ToString) -> Self {
        Error::Dataset { path: path.as_ref().to_path_buf(), reason: reason.to_string() }
    }
    /// An [`Error::InvalidArgument`].
    pub fn invalid(reason: impl ToString) -> Self {
        Error::InvalidArgument(reason.to_string())
    }
}

/// Extension to attach a path to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    fn at(self, op: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}
