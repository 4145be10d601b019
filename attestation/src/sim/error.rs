//! The simulator's errors.

use std::path::PathBuf;

/// What went wrong creating, loading or using a simulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A file or directory could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The output directory exists and is not empty.
    #[error("{0}: the directory exists and is not empty; choose a new or empty directory")]
    NotEmpty(PathBuf),
    /// A sim directory file does not hold what the simulator wrote there.
    #[error("invalid sim directory: {0}")]
    Invalid(String),
    /// A request cannot be served (a wrong field length, an unsupported version).
    #[error("{0}")]
    Request(String),
    /// RSA key generation or signing failed.
    #[error(transparent)]
    Rsa(#[from] super::rsa::RsaError),
    /// An ECDSA key could not be made or used, or a certificate could not be built.
    #[error("{0}")]
    Crypto(String),
}

impl SimError {
    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        SimError::Io {
            path: path.to_owned(),
            message: e.to_string(),
        }
    }
}
